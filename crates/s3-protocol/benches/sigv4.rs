//! The cost of checking one request's SigV4 signature on the S3 front's road: parse the head, then verify with a
//! signing key already derived (the front keeps them per secret and scope). A presigned GET carrying a session
//! token of Lakegate's size, and the same GET signed in headers. Then the cost of signing a GET that a remote
//! store's backend forwards (with the store's static keys, its signing key kept as the backend keeps it). Run with
//! `cargo bench -p lakegate-s3-protocol --bench sigv4`; figures in docs/benchmarks.md.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark set-up: a failed step ends the run")]

use criterion::{Criterion, criterion_group, criterion_main};
use http::HeaderMap;
use lakegate_s3_protocol::sigv4::{
    RequestHead, SecretKey, SignedRequest, SigningKey, StoreCredentials, UNSIGNED_PAYLOAD, VerifyOptions,
    derive_signing_key, sign_request,
};
use time::OffsetDateTime;

/// The allocator `lakegate serve` runs on, so that a figure here is the cost the server pays.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PATH: &str = "/lake/sales/bench/small.bin";
const HOST: &str = "127.0.0.1:9000";

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_796_083_200).expect("2026-12-01")
}

/// A session token as long as the ones `lakegate credentials` vends (390 characters of base64url).
fn token() -> String {
    "ARUyMDI2MTIwMVQwNzUzMTZaLTg1NTYQMUz9M3q0PPEggy80EMb6q7G_7g8RNoTnc9sEEn54jtQZwvkd".repeat(5)[..390].to_owned()
}

fn key() -> SigningKey {
    derive_signing_key(&SecretKey::new("bench-secret"), "20261201", "us-east-1", "s3")
}

fn verify(head: &RequestHead<'_>, key: &SigningKey) {
    let signed = SignedRequest::parse(head, &VerifyOptions::s3(now())).expect("parses");
    signed.verify_with_key(key).expect("verifies");
}

/// A presigned GET's query, signed with `key`.
fn presigned_query(key: &SigningKey, headers: &HeaderMap) -> String {
    let unsigned = format!(
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=LKBENCHKEY%2F20261201%2Fus-east-1%2Fs3%2Faws4_request\
         &X-Amz-Date=20261201T000000Z&X-Amz-Expires=7200&X-Amz-SignedHeaders=host&X-Amz-Security-Token={}",
        token()
    );
    // The signature covers the query without itself: parse the URL with a placeholder to get what to sign.
    let placeholder = format!("{unsigned}&X-Amz-Signature={}", "0".repeat(64));
    let head = RequestHead { method: "GET", path: PATH, query: Some(&placeholder), headers, authority: None };
    let string_to_sign = SignedRequest::parse(&head, &VerifyOptions::s3(now())).expect("parses").string_to_sign();
    format!("{unsigned}&X-Amz-Signature={}", hex::encode(key.sign(&string_to_sign)))
}

fn sigv4(c: &mut Criterion) {
    let key = key();
    let mut group = c.benchmark_group("sigv4_verify");

    let mut headers = HeaderMap::new();
    headers.insert(http::header::HOST, HOST.parse().expect("host"));
    let query = presigned_query(&key, &headers);
    let head = RequestHead { method: "GET", path: PATH, query: Some(&query), headers: &headers, authority: None };
    verify(&head, &key);
    group.bench_function("presigned_get", |b| b.iter(|| verify(&head, &key)));

    let mut signed_headers = HeaderMap::new();
    let credentials = StoreCredentials {
        access_key_id: "LKBENCHKEY".into(),
        secret: SecretKey::new("bench-secret"),
        session_token: Some(token()),
    };
    sign_request(
        "GET",
        PATH,
        None,
        HOST,
        &mut signed_headers,
        &credentials,
        "us-east-1",
        "s3",
        UNSIGNED_PAYLOAD,
        now(),
    )
    .expect("signs");
    let head = RequestHead { method: "GET", path: PATH, query: None, headers: &signed_headers, authority: None };
    verify(&head, &key);
    group.bench_function("header_signed_get", |b| b.iter(|| verify(&head, &key)));
    group.finish();
}

/// Signing a GET on its way to a remote store, as the remote backend does for every request it forwards.
fn sign(c: &mut Criterion) {
    let credentials = StoreCredentials {
        access_key_id: "STOREKEY".into(),
        secret: SecretKey::new("store-secret"),
        session_token: None,
    };
    let forward = || {
        let mut headers = HeaderMap::new();
        sign_request("GET", PATH, None, HOST, &mut headers, &credentials, "us-east-1", "s3", UNSIGNED_PAYLOAD, now())
            .expect("signs");
        headers
    };
    let mut group = c.benchmark_group("sigv4_sign");
    group.bench_function("forwarded_get", |b| b.iter(forward));
    group.finish();
}

criterion_group!(benches, sigv4, sign);
criterion_main!(benches);
