//! Core costs on the request path: a Cedar decision as the policy set grows, JWT validation with a cold and a
//! warm key cache, an audit append, an audit record's serialisation, and a cache lookup by one thread and by two at once. Run with `cargo bench -p lakegate-core --bench core`; results in docs/benchmarks.md.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark set-up: a failed step ends the run"
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use lakegate_core::audit::{AuditConfig, AuditEvent, Auditor, Front, SqlAudit};
use lakegate_core::identity::{DevIssuer, IdentityConfig, Principal, Verifier};
use lakegate_core::per_cpu_cache::PerCpuCache;
use lakegate_core::policy::{PolicyEngine, RequestContext, Resource};

/// The allocator `lakegate serve` runs on, so that a figure here is the cost the server pays.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn alice() -> Principal {
    Principal {
        issuer: "bench".into(),
        subject: "alice".into(),
        groups: vec!["analysts".into()],
        attributes: BTreeMap::from([("region".to_owned(), "EU".to_owned())]),
        token_id: None,
        expires_at: i64::MAX,
        actors: Vec::new(),
    }
}

/// A policy directory with the shipped schema and `n` policies: one that grants alice's request, the rest
/// per-user grants on other prefixes that Cedar must still evaluate.
fn policies(n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("dir");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    std::fs::copy(shipped.join("lakegate.cedarschema"), dir.path().join("lakegate.cedarschema")).expect("schema");
    let mut text = String::from(
        "@id(\"sales\") permit(principal in Group::\"analysts\", action in Action::\"Read\", resource in Prefix::\"lake/sales/\");\n",
    );
    for i in 1..n {
        text.push_str(&format!(
            "@id(\"user-{i}\") permit(principal == User::\"user{i}\", action in [Action::\"Read\", Action::\"Write\"], resource in Prefix::\"lake/home/user{i}/\");\n"
        ));
    }
    std::fs::write(dir.path().join("bench.cedar"), text).expect("policies");
    dir
}

/// The same request again and again (served by the decision cache after the first); a new object each time in
/// one prefix; a new object in a new prefix each time (below the named `lake/sales/`, so the decision its
/// cousins got); a new user each time with alice's groups and attributes (no policy names either, so alice's
/// decision); and a user with an attribute value never seen before each time, whom no decision was made for
/// (Cedar's evaluation over the policies the index leaves).
fn decisions(c: &mut Criterion) {
    let mut group = c.benchmark_group("decision_repeated");
    let resource = Resource::parse("s3://lake/sales/2024/q1.parquet").expect("resource");
    let context = RequestContext { front: "bench", ..Default::default() };
    for n in [10usize, 1_000, 10_000] {
        let dir = policies(n);
        let engine = PolicyEngine::load(dir.path()).expect("load");
        let p = alice();
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let d = engine.decide(&p, "s3:GetObject", &resource, &context).expect("decide");
                assert!(d.allowed);
            })
        });
    }
    // The same on two threads at once, as on a server's two connection threads: what the decision's shared
    // state (the policy set in force, the cache) costs when both cores read it.
    let dir = policies(10);
    let engine = PolicyEngine::load(dir.path()).expect("load");
    let p = alice();
    group.bench_function("10_on_two_threads", |b| {
        b.iter_custom(|n| {
            concurrently(2, n, || engine.decide(&p, "s3:GetObject", &resource, &context).expect("decide").allowed)
        })
    });
    group.finish();

    let same_user = |_: u64| alice();
    decide_new(c, "decision_new_object", &context, same_user, |i| format!("s3://lake/sales/2024/{i}.parquet"));
    decide_new(c, "decision_new_prefix", &context, same_user, |i| format!("s3://lake/sales/{i}/q1.parquet"));
    let object = |_: u64| "s3://lake/sales/2024/q1.parquet".to_owned();
    let new_user = |i: u64| Principal { subject: format!("analyst-{i}"), ..alice() };
    decide_new(c, "decision_new_user", &context, new_user, object);
    let new_facts = |i: u64| {
        let mut p = Principal { subject: format!("analyst-{i}"), ..alice() };
        p.attributes.insert("team".into(), format!("team-{i}"));
        p
    };
    decide_new(c, "decision_new_facts", &context, new_facts, object);
}

/// A group deciding GetObject by the `i`-th principal on the `i`-th resource at each iteration, for each
/// policy-set size.
fn decide_new(
    c: &mut Criterion,
    name: &str,
    context: &RequestContext,
    principal: impl Fn(u64) -> Principal,
    resource: impl Fn(u64) -> String,
) {
    let mut group = c.benchmark_group(name);
    for n in [10usize, 1_000, 10_000] {
        let dir = policies(n);
        let engine = PolicyEngine::load(dir.path()).expect("load");
        let mut i = 0u64;
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_batched(
                || {
                    i += 1;
                    (principal(i), Resource::parse(&resource(i)).expect("resource"))
                },
                |(p, resource)| {
                    let d = engine.decide(&p, "s3:GetObject", &resource, context).expect("decide");
                    assert!(d.allowed);
                },
                criterion::BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn jwt_validation(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let data = tempfile::tempdir().expect("dir");
    let dev = DevIssuer::load_or_create(data.path()).expect("dev issuer");
    let token = dev
        .mint(
            "alice",
            &["analysts".into()],
            &BTreeMap::from([("region".into(), "EU".into())]),
            Duration::from_secs(3600),
        )
        .expect("mint");
    // The issuer's keys in a JWKS file: a cold verifier must read and parse them before its first validation.
    let jwks = data.path().join("jwks.json");
    std::fs::write(&jwks, serde_json::to_string(&dev.jwks()).expect("json")).expect("write jwks");
    let config: IdentityConfig = toml::from_str(&format!(
        "[[issuers]]\nissuer = \"lakegate-dev\"\njwks_file = \"{}\"\naudiences = [\"lakegate\"]\nalgorithms = [\"EdDSA\"]",
        jwks.display()
    ))
    .expect("config");

    let mut group = c.benchmark_group("jwt_validation");
    let warm = Verifier::new(&config, None).expect("verifier");
    runtime.block_on(warm.verify(&token)).expect("warm-up");
    group.bench_function("warm_cache", |b| b.iter(|| runtime.block_on(warm.verify(&token)).expect("valid")));
    group.bench_function("cold_cache", |b| {
        b.iter(|| {
            let cold = Verifier::new(&config, None).expect("verifier");
            runtime.block_on(cold.verify(&token)).expect("valid")
        })
    });
    group.finish();
}

fn audit_append(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("rt");
    let dir = tempfile::tempdir().expect("dir");
    let auditor =
        Auditor::start(AuditConfig { dir: dir.path().to_owned(), ..AuditConfig::default() }).expect("auditor");
    let p = alice();
    let mut group = c.benchmark_group("audit_append");
    // Sustained throughput: enqueue n events, then wait until all are hashed, written and synced.
    group.bench_function("record_and_flush", |b| {
        b.iter_custom(|n| {
            runtime.block_on(async {
                let start = Instant::now();
                for i in 0..n {
                    let event = AuditEvent::new(
                        Front::S3,
                        format!("req-{i}"),
                        "s3:GetObject",
                        "s3://lake/sales/2024/q1.parquet",
                    )
                    .principal(&p)
                    .allow(["lake-sales-analysts"]);
                    while auditor.record(event.clone()).await.is_err() {
                        // Queue full: the writer is behind; wait for it rather than measure refusals.
                        auditor.flush().await.expect("flush");
                    }
                }
                auditor.flush().await.expect("flush");
                start.elapsed()
            })
        })
    });
    group.finish();
}

/// What the audit writer's thread spends turning one record into its JSON (before the hash and the write), for a
/// `pgbench -S` query through the PostgreSQL wire front and a 4 KiB GET with a bearer token: the records the
/// benchmarks of docs/benchmarks.md write, field for field.
fn audit_serialise(c: &mut Criterion) {
    let bench = Principal { subject: "bench".into(), ..alice() };
    let mut query =
        AuditEvent::new(Front::Sql, "019aef2c-7d41-7c3a-9b1e-5f0c2d8a6e31", "sql:Select", "public.pgbench_accounts")
            .principal(&bench)
            .source("127.0.0.1:51234")
            .allow(["bench-all"])
            .sql(SqlAudit {
                original: "SELECT abalance FROM pgbench_accounts WHERE aid = 123456;".into(),
                rewritten: Some("SELECT abalance FROM public.pgbench_accounts WHERE aid = 123456".into()),
                tables: ["public.pgbench_accounts".to_owned()].into(),
                rows: Some(1),
                ..SqlAudit::default()
            });
    query.outcome_mut().bytes_out = 58;
    let mut get = AuditEvent::new(
        Front::S3,
        "019aef2c-7d41-7c3a-9b1e-5f0c2d8a6e32",
        "s3:GetObject",
        "lake/sales/bench/small.bin",
    )
    .principal(&alice())
    .source("127.0.0.1:51236")
    .allow(["sales"]);
    let outcome = get.outcome_mut();
    outcome.status = Some(200);
    outcome.bytes_out = 4096;
    let mut group = c.benchmark_group("audit_serialise");
    let mut line = Vec::with_capacity(1024);
    for (name, event) in [("sql_select", &query), ("s3_get", &get)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                line.clear();
                serde_json::to_writer(&mut line, event).expect("serialises");
                line.len()
            })
        });
    }
    group.finish();
}

/// What a lookup costs when every thread reads the same key, as every request of one bearer token or of one
/// decision does: a `quick_cache::sync::Cache` shared by the threads against the [`PerCpuCache`] the request path
/// uses. The key is an attribute file's path (130 bytes), the value an `Arc`, cloned out as the caches do. Each
/// figure is the wall time of one lookup on one thread while the others look up the same key; a miss inserts, as
/// on the request path (each CPU's part fills on its first lookup there).
fn cache_lookup(c: &mut Criterion) {
    let key: Box<[u8]> =
        format!("/var/lib/lakegate/store/lake/{}.lakegate-meta.json", "k".repeat(78)).into_bytes().into();
    let shared = quick_cache::sync::Cache::<Box<[u8]>, Arc<String>>::new(16 * 1024);
    let per_cpu = PerCpuCache::<Box<[u8]>, Arc<String>>::new(16 * 1024);
    // A miss makes the value anew, as the request path does (it verifies the token, decides, parses the file):
    // each CPU's part then holds a value of its own, whose reference count no other core writes.
    let made = || Arc::new(String::from("{\"content_type\":\"application/octet-stream\"}"));
    let shared_get = || match shared.get(&key[..]) {
        Some(v) => v,
        None => {
            let v = made();
            shared.insert(key.clone(), v.clone());
            v
        }
    };
    let per_cpu_get = || match per_cpu.get(&key[..]) {
        Some(v) => v,
        None => {
            let v = made();
            per_cpu.insert(key.clone(), v.clone());
            v
        }
    };
    let mut group = c.benchmark_group("cache_lookup");
    for threads in [1usize, 2] {
        group.bench_function(format!("shared/{threads}_threads"), |b| {
            b.iter_custom(|n| concurrently(threads, n, shared_get))
        });
        group.bench_function(format!("per_cpu/{threads}_threads"), |b| {
            b.iter_custom(|n| concurrently(threads, n, per_cpu_get))
        });
    }
    group.finish();
}

/// Runs `lookup` `n` times on each of `threads` threads started together; the slowest thread's time.
fn concurrently<V>(threads: usize, n: u64, lookup: impl Fn() -> V + Sync) -> Duration {
    let start = Barrier::new(threads);
    std::thread::scope(|s| {
        let running: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    let began = Instant::now();
                    for _ in 0..n {
                        std::hint::black_box(lookup());
                    }
                    began.elapsed()
                })
            })
            .collect();
        running.into_iter().map(|t| t.join().expect("lookup thread")).max().unwrap_or_default()
    })
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1)).sample_size(30);
    targets = decisions, jwt_validation, audit_append, audit_serialise, cache_lookup
}
criterion_main!(benches);
