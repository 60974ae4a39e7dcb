//! The addresses of an upstream host: the system's answer, except for the names under `localhost`, which are the
//! loopback addresses without asking anyone (RFC 6761, section 6.3).
//!
//! Why not the system's answer for those too: a store addressed virtual-hosted (`bucket.endpoint`) whose endpoint
//! is local (`localhost:9000`, as MinIO and moto run for development) is reached at hosts like `lake.localhost`.
//! The RFC asks resolvers to answer such names with loopback, and curl, browsers and systemd-resolved do; glibc
//! without systemd's module asks DNS, which has no answer, so the store could not be reached. `localhost` itself
//! is left to the system: its hosts file may give it only one of the two addresses.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};

/// Resolves upstream host names for [`super::Connections`] (see the module's text).
#[derive(Clone)]
pub struct Resolver {
    system: GaiResolver,
}

impl Default for Resolver {
    fn default() -> Self {
        Self { system: GaiResolver::new() }
    }
}

impl tower_service::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.system.poll_ready(cx)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        if is_under_localhost(name.as_str()) {
            // IPv4 first: a development server is more often bound to 127.0.0.1 than to ::1. The connector
            // tries the other when the first refuses. Port 0 is replaced by the connector with the URI's.
            let loopback = vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), SocketAddr::from((Ipv6Addr::LOCALHOST, 0))];
            return Box::pin(std::future::ready(Ok(loopback.into_iter())));
        }
        let lookup = self.system.call(name);
        Box::pin(async move { Ok(lookup.await?.collect::<Vec<_>>().into_iter()) })
    }
}

/// Whether `name` is a name under `localhost.` (`lake.localhost`, `a.b.localhost.`), not `localhost` itself.
fn is_under_localhost(name: &str) -> bool {
    const SUFFIX: &str = ".localhost";
    let name = name.strip_suffix('.').unwrap_or(name);
    name.len() > SUFFIX.len()
        && name.get(name.len() - SUFFIX.len()..).is_some_and(|tail| tail.eq_ignore_ascii_case(SUFFIX))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::str::FromStr;

    use tower_service::Service;

    use super::*;

    async fn resolve(name: &str) -> Vec<SocketAddr> {
        Resolver::default().call(Name::from_str(name).unwrap()).await.unwrap().collect()
    }

    #[test]
    fn only_names_under_localhost_are_answered_without_asking() {
        for name in ["lake.localhost", "a.b.localhost", "Lake.LocalHost", "lake.localhost."] {
            assert!(is_under_localhost(name), "{name}");
        }
        for name in
            ["localhost", "localhost.", ".localhost", "lakelocalhost", "localhost.example.com", "lake.localhost.com"]
        {
            assert!(!is_under_localhost(name), "{name}");
        }
    }

    #[tokio::test]
    async fn a_name_under_localhost_is_the_loopback_addresses() {
        let addresses = resolve("lake.localhost").await;
        assert_eq!(addresses, [SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), SocketAddr::from((Ipv6Addr::LOCALHOST, 0))]);
    }

    #[tokio::test]
    async fn localhost_itself_is_the_systems_answer() {
        // The hosts file names it on every system this runs on; whatever it says, it is loopback.
        let addresses = resolve("localhost").await;
        assert!(!addresses.is_empty());
        assert!(addresses.iter().all(|a| a.ip().is_loopback()), "{addresses:?}");
    }
}
