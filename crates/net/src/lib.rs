//! Networking shared by every front and the sidecar: listener settings, TLS (rustls), serving HTTP, graceful
//! shutdown (the drain), connections to upstream servers, request ids, small HTTP helpers and RFC 7807 problem
//! responses.
//!
//! Knows nothing of Lakegate's policy or audit; fronts build on it.

pub mod client;
pub mod config;
pub mod drain;
pub mod http;
pub mod listener;
pub mod threads;
pub mod tls;

pub use config::{ListenerConfig, TlsConfig};
pub use listener::{ListenError, OnDrain, serve_http};
pub use threads::Threads;

/// An error with its chain of causes (hyper's own text is only "client error (Connect)").
pub fn describe_error(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
