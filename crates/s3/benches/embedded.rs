//! The embedded store's answer to a plain 4 KiB GET, without the HTTP server, the front's checks or the load tool
//! around it: finding the object and its two attribute files, reading the bytes and building the response head.
//! On a two-core machine a server's rate under load moves by a sixth between runs; a change of a microsecond
//! to the store's share shows here. The store lies at `<temporary directory>/lakegate/store`, the depth of
//! `lakegate serve`'s default store below its data directory. Run with
//! `cargo bench -p lakegate-s3 --bench embedded`; figures in docs/benchmarks.md.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark set-up: a failed step ends the run")]

use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Full};
use lakegate_s3::backend::{Backend, Embedded, ForwardRequest};

/// The allocator `lakegate serve` runs on, so that a figure here is the cost the server pays.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn request(method: http::Method, key: Option<&str>, body: Bytes) -> ForwardRequest {
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(body.len()));
    ForwardRequest {
        method,
        bucket: Some("lake".into()),
        key: key.map(str::to_owned),
        query: Vec::new(),
        headers,
        body: Full::new(body).map_err(|never| match never {}).boxed_unsync(),
    }
}

async fn answer(store: &Embedded, request: ForwardRequest) -> (u16, Bytes) {
    let response = store.forward(request).await.expect("the store answers");
    let status = response.status().as_u16();
    (status, response.into_body().collect().await.expect("the body").to_bytes())
}

fn get_4k(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let root = dir.path().join("lakegate").join("store");
    let store = Embedded::open(&root).expect("the store");
    let key = "sales/bench/small.bin";
    let object = Bytes::from((0..4096u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    runtime.block_on(async {
        assert_eq!(answer(&store, request(http::Method::PUT, None, Bytes::new())).await.0, 200);
        assert_eq!(answer(&store, request(http::Method::PUT, Some(key), object.clone())).await.0, 200);
    });
    // The attribute files are kept parsed only once they have not changed for a second (backend/kept_json.rs), as
    // they are for any object not just written.
    std::thread::sleep(Duration::from_millis(1100));
    let (status, body) = runtime.block_on(answer(&store, request(http::Method::GET, Some(key), Bytes::new())));
    assert_eq!((status, body), (200, object));

    c.bench_function("embedded_get/4k", |b| {
        b.iter(|| runtime.block_on(answer(&store, request(http::Method::GET, Some(key), Bytes::new()))));
    });
}

criterion_group!(benches, get_4k);
criterion_main!(benches);
