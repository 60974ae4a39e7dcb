//! An in-process OIDC test issuer: discovery document and JWKS over HTTP on loopback, RSA and EC keys,
//! rotation, and a counter of JWKS fetches. Not a mock of Lakegate: a small but real IdP for it to talk to.

#![allow(dead_code)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_lc_rs::encoding::AsDer;
use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// A key the issuer signs with.
#[derive(Clone)]
pub struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    pub encoding: EncodingKey,
    pub jwk: Jwk,
    /// The public key in PEM, for the "HMAC with the RSA public key" attack.
    pub public_pem: String,
}

fn pem(tag: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).expect("ascii")).collect();
    format!("-----BEGIN {tag}-----\n{}\n-----END {tag}-----\n", lines.join("\n"))
}

impl TestKey {
    pub fn rsa(kid: &str) -> Self {
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("rsa keygen");
        let der = pair.as_der().expect("pkcs8");
        let public = aws_lc_rs::signature::KeyPair::public_key(&pair).as_der().expect("spki");
        Self::from_pem(
            kid,
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(pem("PRIVATE KEY", der.as_ref()).as_bytes()),
            pem("PUBLIC KEY", public.as_ref()),
        )
    }

    pub fn ec(kid: &str) -> Self {
        let pair = aws_lc_rs::signature::EcdsaKeyPair::generate(&aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING)
            .expect("ec keygen");
        let der = pair.to_pkcs8v1().expect("pkcs8");
        Self::from_pem(
            kid,
            Algorithm::ES256,
            EncodingKey::from_ec_pem(pem("PRIVATE KEY", der.as_ref()).as_bytes()),
            String::new(),
        )
    }

    fn from_pem(kid: &str, alg: Algorithm, key: jsonwebtoken::errors::Result<EncodingKey>, public_pem: String) -> Self {
        let encoding = key.expect("encoding key");
        let mut jwk = Jwk::from_encoding_key(&encoding, alg).expect("jwk");
        jwk.common.key_id = Some(kid.to_owned());
        TestKey { kid: kid.to_owned(), alg, encoding, jwk, public_pem }
    }
}

struct State {
    published: Vec<TestKey>,
}

/// A running test issuer.
pub struct TestIssuer {
    pub url: String,
    state: Arc<Mutex<State>>,
    available: Arc<AtomicBool>,
    fetches: Arc<AtomicUsize>,
    /// Dropping it stops the server thread.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl TestIssuer {
    /// Starts an issuer publishing one RSA key (`rsa-1`) and one EC key (`ec-1`).
    pub fn start() -> Self {
        Self::with_keys(vec![TestKey::rsa("rsa-1"), TestKey::ec("ec-1")])
    }

    pub fn with_keys(keys: Vec<TestKey>) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(Mutex::new(State { published: keys }));
        let available = Arc::new(AtomicBool::new(true));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (s, a, f, u) = (state.clone(), available.clone(), fetches.clone(), url.clone());
        // Its own thread and runtime, so tests may use it from sync or async code alike.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let serve = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else { continue };
                        let (s, a, f, u) = (s.clone(), a.clone(), f.clone(), u.clone());
                        tokio::spawn(async move {
                            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                                let (s, a, f, u) = (s.clone(), a.clone(), f.clone(), u.clone());
                                async move { Ok::<_, Infallible>(respond(req.uri().path(), &s, &a, &f, &u)) }
                            });
                            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = stopped => {}
                }
            });
        });
        TestIssuer { url, state, available, fetches, _stop: stop }
    }

    /// The key published under `kid`.
    pub fn key(&self, kid: &str) -> TestKey {
        self.state.lock().expect("state").published.iter().find(|k| k.kid == kid).cloned().expect("known kid")
    }

    /// Publishes `key` in addition to the current keys (rotation step 1) or instead of them.
    pub fn publish(&self, key: TestKey, replace: bool) {
        let mut s = self.state.lock().expect("state");
        if replace {
            s.published.clear();
        }
        s.published.push(key);
    }

    /// Makes the IdP answer 503 to everything (down), or serve again.
    pub fn set_available(&self, up: bool) {
        self.available.store(up, Ordering::SeqCst);
    }

    /// How many times the JWKS has been served.
    pub fn jwks_fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// Standard claims for `sub`, valid for an hour, audience `lakegate`.
    pub fn claims(&self, sub: &str) -> serde_json::Map<String, Value> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        json!({"iss": self.url, "sub": sub, "aud": "lakegate", "iat": now, "nbf": now, "exp": now + 3600,
               "groups": ["analysts"], "region": "EU"})
        .as_object()
        .cloned()
        .expect("object")
    }

    /// Signs `claims` with `key`, naming `kid` in the header (which may differ from the key's, for attacks).
    pub fn sign(&self, key: &TestKey, kid: Option<&str>, claims: &serde_json::Map<String, Value>) -> String {
        let mut header = Header::new(key.alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &key.encoding).expect("sign")
    }

    /// A valid token for `sub` signed with the key `kid`.
    pub fn token(&self, kid: &str, sub: &str) -> String {
        let key = self.key(kid);
        self.sign(&key, Some(kid), &self.claims(sub))
    }
}

fn respond(
    path: &str,
    state: &Mutex<State>,
    available: &AtomicBool,
    fetches: &AtomicUsize,
    url: &str,
) -> hyper::Response<Full<Bytes>> {
    let ok = |v: Value| {
        hyper::Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(v.to_string())))
            .expect("response")
    };
    if !available.load(Ordering::SeqCst) {
        return hyper::Response::builder().status(503).body(Full::new(Bytes::new())).expect("response");
    }
    match path {
        "/.well-known/openid-configuration" => ok(json!({
            "issuer": url,
            "authorization_endpoint": format!("{url}/authorize"),
            "token_endpoint": format!("{url}/token"),
            "jwks_uri": format!("{url}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        })),
        "/jwks" => {
            fetches.fetch_add(1, Ordering::SeqCst);
            let keys: Vec<Jwk> = state.lock().expect("state").published.iter().map(|k| k.jwk.clone()).collect();
            ok(serde_json::to_value(JwkSet { keys }).expect("jwks"))
        }
        _ => hyper::Response::builder().status(404).body(Full::new(Bytes::new())).expect("response"),
    }
}
