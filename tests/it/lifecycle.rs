//! Shutdown and audit durability: `lakegate serve` under load, ended by SIGTERM (a Kubernetes rollout), by a
//! second signal, or by `kill -9`. The rule in every case: a response that carried data has its audit record.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use serde_json::Value;
use tokio_postgres::{NoTls, SimpleQueryMessage};

use crate::support::{Lakegate, eventually, http, read_audit, verify_audit_dir};

/// Concurrent S3 readers.
const READERS: usize = 16;
/// Size of the objects they read.
const SMALL: usize = 4096;
/// An object large enough that a client that stops reading holds its response in flight.
const LARGE: usize = 32 * 1024 * 1024;
/// SQL users and what each reads (every statement returns rows).
const SQL_USERS: &[(&str, &[&str], &str)] = &[
    ("alice", &["analysts"], "select order_id, region from sales.orders"),
    ("bob", &["analysts"], "select order_id, region from sales.orders"),
    ("carol", &["hr"], "select id, name from hr.employees"),
];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// S3 as alice (analysts: read and write `lake/sales/`), with credentials from `lakegate credentials`.
struct S3 {
    rt: tokio::runtime::Runtime,
    client: aws_sdk_s3::Client,
}

impl S3 {
    fn new(lg: &Lakegate) -> Self {
        let out = Command::new(env!("CARGO_BIN_EXE_lakegate"))
            .args(["credentials", "--sub", "alice", "--groups", "analysts", "--data-dir"])
            .arg(lg.data())
            .output()
            .expect("run lakegate credentials");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let c: Value = serde_json::from_slice(&out.stdout).expect("credentials JSON");
        let text = |k: &str| c[k].as_str().expect(k).to_owned();
        let credentials =
            Credentials::new(text("AccessKeyId"), text("SecretAccessKey"), Some(text("SessionToken")), None, "cli");
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(format!("http://{}", lg.s3))
            .force_path_style(true)
            .credentials_provider(credentials)
            .build();
        S3 { rt: runtime(), client: aws_sdk_s3::Client::from_conf(config) }
    }

    fn put(&self, key: &str, data: Vec<u8>) {
        self.rt
            .block_on(self.client.put_object().bucket("lake").key(key).body(ByteStream::from(data)).send())
            .expect("put");
    }

    /// A presigned GET URL: plain HTTP clients can then read with alice's authority and see every header.
    fn presigned_get(&self, key: &str) -> String {
        let config = PresigningConfig::expires_in(Duration::from_secs(3600)).expect("presigning config");
        let request =
            self.rt.block_on(self.client.get_object().bucket("lake").key(key).presigned(config)).expect("presign");
        request.uri().to_owned()
    }
}

fn content(n: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + n * 7) % 251) as u8).collect()
}

/// What the readers and SQL users saw.
#[derive(Debug, Default)]
struct Seen {
    /// Request ids (`x-request-id`) of the 200 responses, and whether each carried the whole object (a kill
    /// can cut one short after it has sent some of its data).
    s3: Vec<(String, bool)>,
    /// Per user: statements that returned rows.
    sql_rows: BTreeMap<String, usize>,
}

/// S3 readers and SQL users running until [`Load::stop`].
struct Load {
    stop: Arc<AtomicBool>,
    progress: Vec<Arc<AtomicUsize>>,
    readers: Vec<JoinHandle<Vec<(String, bool)>>>,
    sql: JoinHandle<BTreeMap<String, usize>>,
}

impl Load {
    fn start(lg: &Lakegate, s3: &S3) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut progress = Vec::new();
        let mut readers = Vec::new();
        for n in 0..READERS {
            let key = format!("sales/drain-{n}.bin");
            s3.put(&key, content(n, SMALL));
            let url = s3.presigned_get(&key);
            let (stop, done) = (stop.clone(), Arc::new(AtomicUsize::new(0)));
            progress.push(done.clone());
            readers.push(std::thread::spawn(move || read_until_stopped(&url, &content(n, SMALL), &stop, &done)));
        }
        let sql_port = lg.sql.port();
        let users: Vec<(String, String, Arc<AtomicUsize>)> = SQL_USERS
            .iter()
            .map(|(user, groups, sql)| {
                let token = lg.token(user, groups, &[("region", "EU")]);
                let done = Arc::new(AtomicUsize::new(0));
                progress.push(done.clone());
                (format!("{user}\n{token}"), (*sql).to_owned(), done)
            })
            .collect();
        let sql_stop = stop.clone();
        let sql = std::thread::spawn(move || {
            runtime().block_on(async move {
                let runs: Vec<_> = users
                    .into_iter()
                    .map(|(who, sql, done)| {
                        let stop = sql_stop.clone();
                        tokio::spawn(async move {
                            let (user, token) = who.split_once('\n').expect("user and token");
                            let n = query_until_refused(sql_port, user, token, &sql, &stop, &done).await;
                            (user.to_owned(), n)
                        })
                    })
                    .collect();
                let mut counts = BTreeMap::new();
                for run in runs {
                    let (user, n) = run.await.expect("SQL user task");
                    counts.insert(user, n);
                }
                counts
            })
        });
        Load { stop, progress, readers, sql }
    }

    /// Waits until every reader and SQL user has been served a few times.
    fn wait_for_traffic(&self) {
        eventually("every client served", || {
            self.progress.iter().all(|p| p.load(Ordering::Relaxed) >= 3).then_some(())
        });
    }

    fn stop(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        let s3 = self.readers.into_iter().flat_map(|r| r.join().expect("reader")).collect();
        Seen { s3, sql_rows: self.sql.join().expect("sql users") }
    }
}

/// GETs `url` until stopped; returns the request id of every 200 response and whether it carried the whole
/// object.
fn read_until_stopped(url: &str, expected: &[u8], stop: &AtomicBool, done: &AtomicUsize) -> Vec<(String, bool)> {
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    let mut seen = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let response = match client.get(url).send() {
            Ok(r) if r.status() == 200 => r,
            // Refused or 503 once the drain started: wait for the test to stop us.
            _ => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        let id = response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let id = id.unwrap_or_else(|| panic!("a 200 without x-request-id: {:?}", response.headers()));
        let whole = match response.bytes() {
            Ok(body) => {
                assert!(body.as_ref() == expected, "{id}: the object's bytes changed");
                done.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(_) => false,
        };
        seen.push((id, whole));
    }
    seen
}

/// Runs `sql` as `user` until the server ends the session; returns how many statements returned rows.
async fn query_until_refused(
    port: u16,
    user: &str,
    token: &str,
    sql: &str,
    stop: &AtomicBool,
    done: &AtomicUsize,
) -> usize {
    let config = format!("host=127.0.0.1 port={port} user={user} password={token} dbname=lakegate sslmode=disable");
    let (client, connection) = tokio_postgres::connect(&config, NoTls).await.expect("connect to the SQL gateway");
    tokio::spawn(connection);
    let mut with_rows = 0;
    while !stop.load(Ordering::Relaxed) {
        match client.simple_query(sql).await {
            Ok(messages) => {
                if messages.iter().any(|m| matches!(m, SimpleQueryMessage::Row(_))) {
                    with_rows += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(_) => break,
        }
    }
    with_rows
}

/// A GET of a large object whose reader stops after the first bytes, holding the response in flight.
struct SlowGet {
    response: reqwest::blocking::Response,
    id: String,
    read: Vec<u8>,
}

impl SlowGet {
    fn start(url: &str) -> Self {
        let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build().expect("client");
        let mut response = client.get(url).send().expect("slow GET");
        assert_eq!(response.status(), 200);
        let id = response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).expect("request id").to_owned();
        let mut read = vec![0u8; 64 * 1024];
        response.read_exact(&mut read).expect("the first bytes");
        SlowGet { response, id, read }
    }

    /// Reads the rest; the body as far as the server sent it.
    fn finish(mut self) -> Vec<u8> {
        let _ = self.response.read_to_end(&mut self.read);
        self.read
    }
}

/// The audit events of a request id.
fn events_of<'a>(events: &'a [Value], request_id: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["request_id"] == request_id).collect()
}

/// `/readyz` while it answers 503: its body.
fn readyz_not_ready(lg: &Lakegate) -> Value {
    eventually("/readyz to report the drain", || {
        let r = http().get(format!("{}/readyz", lg.control_url())).send().ok()?;
        (r.status() == 503).then(|| r.json::<Value>().expect("readyz JSON"))
    })
}

/// Whether a request that starts now on a fresh connection is served (a 503 or a refused connection: not).
fn served_now(url: &str) -> bool {
    let fresh = reqwest::blocking::Client::builder().pool_max_idle_per_host(0).build().expect("client");
    fresh.get(url).send().is_ok_and(|r| r.status().is_success())
}

fn sql_connects(lg: &Lakegate, user: &str, token: &str) -> bool {
    let config =
        format!("host=127.0.0.1 port={} user={user} password={token} dbname=lakegate sslmode=disable", lg.sql.port());
    runtime().block_on(async { tokio_postgres::connect(&config, NoTls).await.is_ok() })
}

/// Statements with rows audited per user: records of `stage` (`None`: the only record of a statement).
fn audited_sql(events: &[Value], user: &str, stage: Option<&str>) -> usize {
    events
        .iter()
        .filter(|e| e["front"] == "sql" && e["action"] == "sql:Select" && e["decision"] == "allow")
        .filter(|e| e["principal"]["subject"] == user)
        .filter(|e| e["stage"].as_str() == stage)
        .count()
}

#[test]
fn on_sigterm_requests_in_flight_finish_nothing_new_starts_and_every_response_with_data_is_audited() {
    let mut lg = Lakegate::start(&[]);
    let s3 = S3::new(&lg);
    s3.put("sales/large.bin", content(99, LARGE));
    let large = s3.presigned_get("sales/large.bin");
    let small = s3.presigned_get("sales/drain-0.bin");
    let load = Load::start(&lg, &s3);
    load.wait_for_traffic();
    let slow = SlowGet::start(&large);
    let carol = lg.token("carol", &["hr"], &[]);
    let rt = runtime();
    let idle = rt.block_on(async {
        let config = format!(
            "host=127.0.0.1 port={} user=carol password={carol} dbname=lakegate sslmode=disable",
            lg.sql.port()
        );
        let (client, connection) = tokio_postgres::connect(&config, NoTls).await.expect("idle session");
        (client, tokio::spawn(connection))
    });

    lg.signal("TERM");

    // The drain has started and the large response is still in flight.
    assert_eq!(readyz_not_ready(&lg)["status"], "draining");
    assert!(!served_now(&small), "an S3 request that starts after SIGTERM must not be served");
    assert!(!sql_connects(&lg, "carol", &carol), "a SQL connection after SIGTERM must not be accepted");
    let (_client, connection) = idle;
    let ended = rt.block_on(connection).expect("connection task");
    let code = ended.as_ref().err().and_then(|e| e.as_db_error()).map(|e| e.code().code().to_owned());
    assert_eq!(code.as_deref(), Some("57P01"), "an idle session is closed with admin_shutdown: {ended:?}");
    let (slow_id, body) = (slow.id.clone(), slow.finish());
    assert!(body == content(99, LARGE), "the response in flight is served to its end ({} bytes)", body.len());

    let status = lg.wait_exit();
    assert!(status.success(), "exit status {status:?}");
    let seen = load.stop();
    let (ok, report) = lg.verify_audit();
    assert!(ok, "{report}");
    let events = read_audit(&lg.data().join("audit"));
    assert!(seen.s3.len() >= READERS * 3);
    let cut: Vec<&(String, bool)> = seen.s3.iter().filter(|(_, whole)| !whole).collect();
    assert!(cut.is_empty(), "a graceful shutdown cuts no response: {cut:?}");
    for id in seen.s3.iter().map(|(id, _)| id).chain([&slow_id]) {
        let records = events_of(&events, id);
        assert_eq!(records.len(), 1, "one record for response {id}: {records:?}");
        let e = records[0];
        assert_eq!((e["action"].as_str(), e["decision"].as_str()), (Some("s3:GetObject"), Some("allow")), "{e}");
        assert_eq!(e["outcome"]["incomplete"], false, "{e}");
    }
    let slow_record = events_of(&events, &slow_id)[0];
    assert_eq!(slow_record["outcome"]["bytes_out"], LARGE);
    for (user, with_rows) in &seen.sql_rows {
        assert!(*with_rows >= 3, "{user} ran statements");
        assert!(audited_sql(&events, user, None) >= *with_rows, "every statement of {user} that returned rows");
    }
}

#[test]
fn with_sync_durability_kill_9_leaves_no_response_with_data_unaudited() {
    let mut lg = Lakegate::start(&[("LAKEGATE__AUDIT__DURABILITY", "sync")]);
    let s3 = S3::new(&lg);
    let load = Load::start(&lg, &s3);
    load.wait_for_traffic();

    lg.signal("KILL");
    assert!(!lg.wait_exit().success());
    let seen = load.stop();

    // The files as the crash left them: every response that carried data has its decision record.
    let events = read_audit(&lg.data().join("audit"));
    assert!(seen.s3.len() >= READERS * 3);
    for (id, _) in &seen.s3 {
        let records = events_of(&events, id);
        let e = records.first().unwrap_or_else(|| panic!("response {id} carried data but has no record on disk"));
        assert_eq!((e["action"].as_str(), e["decision"].as_str()), (Some("s3:GetObject"), Some("allow")), "{e}");
    }
    for (user, with_rows) in &seen.sql_rows {
        assert!(*with_rows >= 3, "{user} ran statements");
        // One per statement: the decision record (sync), or the only record (batch).
        let audited = audited_sql(&events, user, Some("decision")) + audited_sql(&events, user, None);
        assert!(audited >= *with_rows, "every statement of {user} with rows: {audited} < {with_rows}");
    }
    // A restart continues the chain (dropping a line the kill may have cut), and the whole log verifies.
    let data = lg.stop();
    let mut again = Lakegate::start_in(data, &[("LAKEGATE__AUDIT__DURABILITY", "sync")]);
    again.signal("TERM");
    assert!(again.wait_exit().success());
    let (ok, report) = verify_audit_dir(&again.data().join("audit"));
    assert!(ok, "{report}");
}

#[test]
fn a_second_signal_ends_the_process_without_waiting_for_requests_in_flight() {
    let mut lg = Lakegate::start(&[]);
    let s3 = S3::new(&lg);
    s3.put("sales/large.bin", content(1, LARGE));
    let slow = SlowGet::start(&s3.presigned_get("sales/large.bin"));

    lg.signal("TERM");
    readyz_not_ready(&lg);
    lg.signal("TERM");

    let status = lg.wait_exit();
    assert!(!status.success(), "a forced exit is not a clean one: {status:?}");
    assert!(slow.finish().len() < LARGE, "the response in flight was cut");
    let (ok, report) = lg.verify_audit();
    assert!(ok, "{report}");
}

#[test]
fn a_request_still_in_flight_when_the_grace_ends_is_cut_and_audited_as_incomplete() {
    let mut lg = Lakegate::start(&[("LAKEGATE__SHUTDOWN__GRACE", "1s")]);
    let s3 = S3::new(&lg);
    s3.put("sales/large.bin", content(2, LARGE));
    let slow = SlowGet::start(&s3.presigned_get("sales/large.bin"));

    lg.signal("TERM");

    let status = lg.wait_exit();
    assert!(status.success(), "the grace ending is part of a clean shutdown: {status:?}");
    let id = slow.id.clone();
    assert!(slow.finish().len() < LARGE, "the response was cut");
    let events = read_audit(&lg.data().join("audit"));
    let records = events_of(&events, &id);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["outcome"]["incomplete"], true, "{}", records[0]);
    let (ok, report) = lg.verify_audit();
    assert!(ok, "{report}");
}

#[test]
fn an_open_trino_query_can_be_fetched_to_its_end_during_the_drain() {
    let mut lg = Lakegate::start(&[("LAKEGATE__SQL__TRINO_PAGE_ROWS", "1")]);
    let token = lg.token("alice", &["analysts"], &[("region", "EU")]);
    let client = http();
    let post = |sql: &str| {
        client
            .post(format!("{}/v1/statement", lg.control_url()))
            .bearer_auth(&token)
            .body(sql.to_owned())
            .send()
            .expect("POST /v1/statement")
    };
    let fetch_all = |mut page: Value| {
        assert!(page.get("error").is_none(), "{page}");
        let mut rows = page["data"].as_array().map_or(0, Vec::len);
        while let Some(next) = page["nextUri"].as_str() {
            let r = client.get(next).bearer_auth(&token).send().expect("next page");
            assert_eq!(r.status(), 200);
            page = r.json().expect("page JSON");
            assert!(page.get("error").is_none(), "{page}");
            rows += page["data"].as_array().map_or(0, Vec::len);
        }
        rows
    };
    let sql = "select order_id from sales.orders";
    let expected = fetch_all(post(sql).json().expect("first page"));
    assert!(expected > 1, "the query spans pages");
    let open: Value = post(sql).json().expect("first page");
    assert!(open["nextUri"].is_string());

    lg.signal("TERM");

    readyz_not_ready(&lg);
    assert_eq!(post(sql).status(), 503, "a new query is refused during the drain");
    assert_eq!(fetch_all(open), expected, "the open query is served to its end");
    assert!(lg.wait_exit().success());
    let events = read_audit(&lg.data().join("audit"));
    let queries: Vec<&Value> = events.iter().filter(|e| e["action"] == "sql:Select").collect();
    assert_eq!(queries.len(), 2, "{queries:?}");
    assert!(queries.iter().all(|e| e["sql"]["rows"] == expected && e["outcome"]["incomplete"] != true), "{queries:?}");
}
