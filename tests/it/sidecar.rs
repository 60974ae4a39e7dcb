//! The `lakegate-sidecar` binary in front of a central `lakegate serve`: S3 clients with dummy credentials act as the user
//! whose token the pod holds; the central Lakegate decides and audits, naming the user, the workload's session
//! and (after an exchange) the workload as actor.

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use sha2::{Digest, Sha256};

use crate::support::{
    Lakegate, START_ATTEMPTS, eventually, free_port, http, send_signal, spawn_until_running, wait_exit,
};

/// A running `lakegate-sidecar`; killed on drop.
struct Sidecar {
    child: Child,
    addr: SocketAddr,
}

impl Sidecar {
    fn start(upstream: &str, token_file: &Path, extra: &[&str]) -> Self {
        for _attempt in 0..START_ATTEMPTS {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let mut cmd = Command::new(sidecar_binary());
            cmd.arg("--token-file")
                .arg(token_file)
                .args(["--upstream", upstream, "--listen", &addr.to_string(), "--session-name", "spark-exec-1"])
                .args(extra)
                .env("LAKEGATE_LOG", "warn")
                .stderr(Stdio::inherit());
            if let Some(child) = spawn_until_running(&mut cmd, "lakegate-sidecar") {
                return Self { child, addr };
            }
        }
        panic!("lakegate-sidecar exited before it was running, {START_ATTEMPTS} times (its stderr is above)");
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The slim sidecar binary, built beside `lakegate` by the sidecar crate (whose own integration test makes
/// `cargo test` build it).
fn sidecar_binary() -> std::path::PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_lakegate")).with_file_name("lakegate-sidecar");
    assert!(path.exists(), "{} is not built: run the workspace's tests (cargo test --workspace)", path.display());
    path
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// An S3 client as Spark's S3A is configured for the sidecar: endpoint override, path style, static dummy keys.
fn client(sidecar: &Sidecar) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(sidecar.url())
        .force_path_style(true)
        .credentials_provider(Credentials::new("x", "x", None, None, "dummy"))
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

fn central(lg: &Lakegate) -> String {
    format!("http://{}", lg.s3)
}

fn write_token(dir: &Path, name: &str, token: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, token).expect("token file");
    path
}

#[test]
fn s3_clients_with_dummy_keys_act_as_the_token_holder_and_the_central_lakegate_decides() {
    let lg = Lakegate::start(&[]);
    let token = write_token(lg.data(), "alice.jwt", &lg.token("alice", &["analysts"], &[("region", "EU")]));
    let sidecar = Sidecar::start(&central(&lg), &token, &[]);
    runtime().block_on(async {
        let s3 = client(&sidecar);
        let data = vec![42u8; 6 * 1024 * 1024 + 3];
        s3.put_object()
            .bucket("lake")
            .key("sales/sidecar.bin")
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .expect("put in lake/sales/");
        let got = s3.get_object().bucket("lake").key("sales/sidecar.bin").send().await.expect("get");
        assert_eq!(got.body.collect().await.expect("body").into_bytes().as_ref(), data.as_slice());
        let listed = s3.list_objects_v2().bucket("lake").prefix("sales/").send().await.expect("list");
        assert!(listed.contents().iter().any(|o| o.key() == Some("sales/sidecar.bin")));

        let denied = s3.list_objects_v2().bucket("lake").prefix("hr/").send().await.expect_err("hr is not alice's");
        assert_eq!(denied.into_service_error().meta().code(), Some("AccessDenied"));
    });
    let event = eventually("the sidecar's PUT in the central audit log", || {
        lg.audit_events().into_iter().find(|e| e["action"] == "s3:PutObject" && e["decision"] == "allow")
    });
    assert_eq!(event["principal"]["subject"], "alice");
    assert_eq!(event["resource"], "s3://lake/sales/sidecar.bin");
    assert_eq!(event["extra"]["role_session_name"], "spark-exec-1", "the workload's session is on record");
    let denied = eventually("the denied listing", || {
        lg.audit_events().into_iter().find(|e| e["action"] == "s3:ListBucket" && e["decision"] == "deny")
    });
    assert_eq!(denied["principal"]["subject"], "alice");
}

#[test]
fn a_rotated_token_file_is_picked_up_without_a_restart() {
    let lg = Lakegate::start(&[]);
    let token = write_token(lg.data(), "pod.jwt", &lg.token("bob", &["hr"], &[]));
    let sidecar = Sidecar::start(&central(&lg), &token, &[]);
    let rt = runtime();
    let can_list = |prefix: &'static str| {
        rt.block_on(async { client(&sidecar).list_objects_v2().bucket("lake").prefix(prefix).send().await.is_ok() })
    };
    assert!(can_list("hr/") && !can_list("sales/"), "bob (hr) reads hr, not sales");
    // The projected token is replaced (here by alice's, to make the switch visible).
    write_token(lg.data(), "pod.jwt", &lg.token("alice", &["analysts"], &[]));
    eventually("the sidecar acting with the new token", || (can_list("sales/") && !can_list("hr/")).then_some(()));
}

#[test]
fn with_a_token_exchange_the_central_audit_names_the_workload_as_actor() {
    let secret_hash = hex::encode(Sha256::digest(b"spark-secret"));
    let clients = format!("[{{id = \"spark-job\", secret_sha256 = \"{secret_hash}\"}}]");
    let lg = Lakegate::start(&[("LAKEGATE__TOKEN_SERVICE__CLIENTS", clients.as_str())]);
    let token = write_token(lg.data(), "alice.jwt", &lg.token("alice", &["analysts"], &[]));
    let secret = write_token(lg.data(), "client-secret", "spark-secret\n");
    let endpoint = format!("{}/oauth2/token", lg.control_url());
    let args = ["--token-endpoint", &endpoint, "--client-id", "spark-job", "--client-secret-file"];
    let mut args: Vec<&str> = args.to_vec();
    let secret = secret.display().to_string();
    args.push(&secret);
    let sidecar = Sidecar::start(&central(&lg), &token, &args);
    runtime().block_on(async {
        client(&sidecar)
            .put_object()
            .bucket("lake")
            .key("sales/by-spark.txt")
            .body(ByteStream::from_static(b"written by a spark job for alice"))
            .send()
            .await
            .expect("put");
    });
    let event = eventually("the PUT in the audit log", || {
        lg.audit_events()
            .into_iter()
            .find(|e| e["action"] == "s3:PutObject" && e["resource"] == "s3://lake/sales/by-spark.txt")
    });
    assert_eq!(event["principal"]["subject"], "alice");
    assert_eq!(event["actors"][0]["subject"], "spark-job", "{event}");
}

#[test]
fn with_the_workloads_own_token_as_actor_token_no_client_secret_is_needed() {
    let lg = Lakegate::start(&[]);
    let token = write_token(lg.data(), "alice.jwt", &lg.token("alice", &["analysts"], &[]));
    // The pod's own identity (in Kubernetes its projected service-account token; here a dev token).
    let workload = write_token(lg.data(), "workload.jwt", &lg.token("spark-sa", &[], &[]));
    let endpoint = format!("{}/oauth2/token", lg.control_url());
    let workload = workload.display().to_string();
    let sidecar =
        Sidecar::start(&central(&lg), &token, &["--token-endpoint", &endpoint, "--actor-token-file", &workload]);
    let resp = http().get(format!("{}/lake?list-type=2&prefix=sales/", sidecar.url())).send().expect("list");
    assert_eq!(resp.status(), 200, "{}", resp.text().unwrap_or_default());
    let event = eventually("the listing in the audit log", || {
        lg.audit_events().into_iter().find(|e| e["action"] == "s3:ListBucket" && e["decision"] == "allow")
    });
    assert_eq!(event["principal"]["subject"], "alice");
    assert_eq!(event["actors"][0]["subject"], "spark-sa", "{event}");
}

#[test]
fn a_token_the_central_lakegate_refuses_gives_the_client_an_s3_access_denied() {
    let lg = Lakegate::start(&[]);
    let token = write_token(lg.data(), "forged.jwt", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.");
    let sidecar = Sidecar::start(&central(&lg), &token, &[]);
    let resp = http().get(format!("{}/lake?list-type=2&prefix=sales/", sidecar.url())).send().expect("request");
    assert_eq!(resp.status(), 403);
    let body = resp.text().expect("body");
    assert!(body.contains("<Code>AccessDenied</Code>") && body.contains("InvalidIdentityToken"), "{body}");
    eventually("the refused STS call in the central audit log", || {
        lg.audit_events()
            .into_iter()
            .find(|e| e["action"] == "sts:AssumeRoleWithWebIdentity" && e["decision"] != "allow")
    });
}

/// The S3 documentation's chunked-upload example body (64 KiB + 1 KiB of 'a'), with signatures the sidecar
/// cannot check and does not need to: its client signed with dummy keys.
fn chunked_body(lengths: &[usize]) -> Vec<u8> {
    let mut body = Vec::new();
    for len in lengths.iter().copied().chain([0]) {
        body.extend(format!("{len:x};chunk-signature={}\r\n", "0".repeat(64)).into_bytes());
        body.extend(std::iter::repeat_n(b'a', len));
        body.extend_from_slice(b"\r\n");
    }
    body
}

fn put_chunked(sidecar: &Sidecar, key: &str, body: Vec<u8>, decoded_length: usize) -> reqwest::blocking::Response {
    http()
        .put(format!("{}/lake/{key}", sidecar.url()))
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=x/20261124/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00",
        )
        .header("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
        .header("content-encoding", "aws-chunked")
        .header("x-amz-decoded-content-length", decoded_length.to_string())
        .body(body)
        .send()
        .expect("chunked PUT")
}

#[test]
fn an_aws_chunked_upload_is_decoded_and_stored_and_a_broken_one_stores_nothing() {
    let lg = Lakegate::start(&[]);
    let token = write_token(lg.data(), "alice.jwt", &lg.token("alice", &["analysts"], &[]));
    let sidecar = Sidecar::start(&central(&lg), &token, &[]);

    let resp = put_chunked(&sidecar, "sales/chunked.txt", chunked_body(&[65536, 1024]), 66560);
    assert_eq!(resp.status(), 200, "{}", resp.text().unwrap_or_default());
    let got = http().get(format!("{}/lake/sales/chunked.txt", sidecar.url())).send().expect("get");
    let bytes = got.bytes().expect("body");
    assert_eq!(bytes.len(), 66560);
    assert!(bytes.iter().all(|b| *b == b'a'));

    // Declares more data than it carries: refused in S3's terms, and no object appears.
    let resp = put_chunked(&sidecar, "sales/short.txt", chunked_body(&[65536, 1024]), 70000);
    assert_eq!(resp.status(), 400);
    assert!(resp.text().expect("body").contains("<Code>IncompleteBody</Code>"));
    let head = http().head(format!("{}/lake/sales/short.txt", sidecar.url())).send().expect("head");
    assert_eq!(head.status(), 404, "no partial object");
}

#[test]
fn lakegate_sidecar_is_the_same_sidecar_and_refuses_to_listen_beyond_loopback() {
    let out = Command::new(env!("CARGO_BIN_EXE_lakegate"))
        .args(["sidecar", "--token-file", "/nonexistent", "--upstream", "http://127.0.0.1:9", "--listen", "0.0.0.0:0"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback only"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn over_mutual_tls_the_sidecar_is_served_and_a_client_without_a_certificate_is_not() {
    let certs = tempfile::tempdir().expect("dir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs/gen-dev.sh");
    let out = Command::new("bash").arg(script).arg(certs.path()).output().expect("run gen-dev.sh");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let file = |name: &str| certs.path().join(name).display().to_string();
    let tls = format!(
        "{{cert = \"{}\", key = \"{}\", client_ca = \"{}\"}}",
        file("server.crt"),
        file("server.key"),
        file("ca.crt")
    );
    let lg = Lakegate::start(&[("LAKEGATE__S3__TLS", tls.as_str())]);
    let upstream = format!("https://localhost:{}", lg.s3.port());
    let token = write_token(lg.data(), "alice.jwt", &lg.token("alice", &["analysts"], &[]));

    let (ca, cert, key) = (file("ca.crt"), file("client.crt"), file("client.key"));
    let with_cert =
        Sidecar::start(&upstream, &token, &["--ca-file", &ca, "--client-cert", &cert, "--client-key", &key]);
    let ok = http().get(format!("{}/lake?list-type=2&prefix=sales/", with_cert.url())).send().expect("list");
    assert_eq!(ok.status(), 200, "{}", ok.text().unwrap_or_default());

    let without = Sidecar::start(&upstream, &token, &["--ca-file", &ca]);
    let refused = http().get(format!("{}/lake?list-type=2&prefix=sales/", without.url())).send().expect("list");
    assert_eq!(refused.status(), 503, "the central Lakegate refuses the handshake");
    assert!(refused.text().expect("body").contains("ServiceUnavailable"));
}

#[test]
fn on_sigterm_the_sidecar_finishes_the_request_in_flight_refuses_new_ones_and_exits_0() {
    let lg = Lakegate::start(&[]);
    let token = write_token(lg.data(), "alice.jwt", &lg.token("alice", &["analysts"], &[]));
    let mut sidecar = Sidecar::start(&central(&lg), &token, &[]);
    let data: Vec<u8> = (0..32 * 1024 * 1024).map(|i: usize| (i % 251) as u8).collect();
    let url = format!("{}/lake/sales/large.bin", sidecar.url());
    let put = http().put(&url).body(data.clone()).send().expect("put through the sidecar");
    assert_eq!(put.status(), 200, "{}", put.text().unwrap_or_default());
    // A reader that stops after the first bytes keeps the response in flight.
    let mut in_flight = http().get(&url).send().expect("get through the sidecar");
    assert_eq!(in_flight.status(), 200);
    let mut body = vec![0u8; 64 * 1024];
    in_flight.read_exact(&mut body).expect("the first bytes");

    send_signal(&sidecar.child, "TERM");

    eventually("the sidecar to stop accepting", || {
        let fresh = reqwest::blocking::Client::builder().pool_max_idle_per_host(0).build().expect("client");
        fresh.get(format!("{}/lake/sales/other.bin", sidecar.url())).send().is_err().then_some(())
    });
    in_flight.read_to_end(&mut body).expect("the rest of the body");
    assert!(body == data, "the request in flight is served to its end ({} bytes)", body.len());
    let status = wait_exit(&mut sidecar.child);
    assert!(status.success(), "exit status {status:?}");
}
