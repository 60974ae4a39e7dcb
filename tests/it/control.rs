//! The control endpoint end to end, as a client calls it over HTTP: the decision API, health, metrics,
//! problem responses, and the audit trail each call leaves (verified with `lakegate audit verify`).

use std::process::Command;

use serde_json::{Value, json};

use crate::support::{Lakegate, eventually, http};

fn authorize(lg: &Lakegate, token: Option<&str>, body: &Value) -> (u16, Value, Option<String>) {
    let mut req = http().post(format!("{}/v1/authorize", lg.control_url())).json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().expect("request");
    let status = resp.status().as_u16();
    let rid = resp.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    (status, resp.json().expect("json body"), rid)
}

fn alice(lg: &Lakegate) -> String {
    lg.token("alice", &["analysts"], &[("region", "EU")])
}

#[test]
fn the_decision_api_allows_and_denies_as_the_demo_policies_say() {
    let lg = Lakegate::start(&[]);
    let t = alice(&lg);
    let (status, body, rid) =
        authorize(&lg, Some(&t), &json!({"action": "s3:GetObject", "resource": "s3://lake/sales/2024/q1.parquet"}));
    assert_eq!(status, 200);
    assert_eq!(body["decision"], "allow");
    assert_eq!(body["policies"], json!(["lake-sales-analysts"]));
    assert_eq!(Some(body["request_id"].as_str().expect("id").to_owned()), rid);

    let (status, body, _) =
        authorize(&lg, Some(&t), &json!({"action": "s3:GetObject", "resource": "s3://lake/hr/salaries.csv"}));
    assert_eq!(status, 200);
    assert_eq!(body["decision"], "deny");
}

#[test]
fn every_decision_is_audited_with_principal_and_policies() {
    let lg = Lakegate::start(&[]);
    let t = alice(&lg);
    let (_, _, rid) = authorize(&lg, Some(&t), &json!({"action": "s3:GetObject", "resource": "s3://lake/sales/a"}));
    let rid = rid.expect("request id header");
    let event =
        eventually("the audit event", || lg.audit_events().into_iter().find(|e| e["request_id"] == rid.as_str()));
    assert_eq!(event["decision"], "allow");
    assert_eq!(event["principal"]["subject"], "alice");
    assert_eq!(event["principal"]["groups"], json!(["analysts"]));
    assert_eq!(event["action"], "s3:GetObject");
    assert_eq!(event["policies"], json!(["lake-sales-analysts"]));
}

#[test]
fn a_missing_or_forged_token_gets_a_401_problem_and_an_audit_event() {
    let lg = Lakegate::start(&[]);
    let body = json!({"action": "s3:GetObject", "resource": "s3://lake/public/a"});
    let (status, problem, rid) = authorize(&lg, None, &body);
    assert_eq!(status, 401);
    assert_eq!(problem["type"], "https://lakegate.dev/problems/invalid-token");
    assert_eq!(problem["status"], 401);
    assert_eq!(Some(problem["instance"].as_str().expect("instance").to_owned()), rid);

    let other = tempfile::tempdir().expect("dir");
    let foreign = crate::support::dev_token(other.path(), "alice", &["hr"], &[], std::time::Duration::from_secs(60));
    let (status, problem, rid) = authorize(&lg, Some(&foreign), &body);
    assert_eq!(status, 401, "a token signed by another dev key is forged: {problem}");
    let rid = rid.expect("id");
    let event = eventually("the denial", || lg.audit_events().into_iter().find(|e| e["request_id"] == rid.as_str()));
    assert_eq!(event["decision"], "deny");
    assert!(event["principal"].is_null());
}

#[test]
fn malformed_requests_get_problem_json_in_the_protocols_form() {
    let lg = Lakegate::start(&[]);
    let t = alice(&lg);
    let url = format!("{}/v1/authorize", lg.control_url());
    let cases: Vec<(reqwest::blocking::RequestBuilder, u16, &str)> = vec![
        (
            http().post(&url).bearer_auth(&t).header("content-type", "application/json").body("{not json"),
            400,
            "invalid-request",
        ),
        (
            http().post(&url).bearer_auth(&t).json(&json!({"action": "s3:Nope", "resource": "s3://lake/a/b"})),
            400,
            "invalid-request",
        ),
        (
            http()
                .post(&url)
                .bearer_auth(&t)
                .json(&json!({"action": "s3:GetObject", "resource": "s3://lake/a/../hr/x"})),
            400,
            "invalid-resource",
        ),
        (
            http()
                .post(&url)
                .bearer_auth(&t)
                .json(&json!({"action": "s3:GetObject", "resource": "s3://lake/a", "context": {"actor": "hr-portal"}})),
            400,
            "invalid-request",
        ),
        (
            http().post(&url).bearer_auth(&t).header("content-type", "text/plain").body("x"),
            415,
            "unsupported-media-type",
        ),
        (
            http().post(&url).bearer_auth(&t).header("content-type", "application/json").body(vec![b' '; 70 * 1024]),
            413,
            "body-too-large",
        ),
        (http().get(&url), 405, "method-not-allowed"),
        (http().get(format!("{}/nope", lg.control_url())), 404, "not-found"),
    ];
    for (req, status, kind) in cases {
        let resp = req.send().expect("request");
        assert_eq!(resp.status().as_u16(), status);
        assert!(resp.headers().contains_key("x-request-id"));
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        let problem: Value = resp.json().expect("problem json");
        assert_eq!(problem["type"], format!("https://lakegate.dev/problems/{kind}"), "{problem}");
    }
}

#[test]
fn health_readiness_and_metrics_answer() {
    let lg = Lakegate::start(&[]);
    let resp = http().get(format!("{}/healthz", lg.control_url())).send().expect("healthz");
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-request-id"));
    assert_eq!(http().get(format!("{}/readyz", lg.control_url())).send().expect("readyz").status(), 200);
    let t = alice(&lg);
    authorize(&lg, Some(&t), &json!({"action": "s3:GetObject", "resource": "s3://lake/sales/a"}));
    let metrics = http().get(format!("{}/metrics", lg.control_url())).send().expect("metrics").text().expect("text");
    assert!(metrics.contains("lakegate_decisions_total{front=\"control\",decision=\"allow\"} 1"), "{metrics}");
}

#[test]
fn audit_verify_passes_on_the_written_log_and_fails_after_one_byte_changes() {
    let lg = Lakegate::start(&[]);
    let t = alice(&lg);
    for resource in ["s3://lake/sales/a", "s3://lake/hr/b", "s3://lake/public/c"] {
        authorize(&lg, Some(&t), &json!({"action": "s3:GetObject", "resource": resource}));
    }
    eventually("three events on disk", || (lg.audit_events().len() >= 3).then_some(()));
    let data = lg.stop();
    let file = data.path().join("audit").join("audit-00000001.jsonl");
    let verify = |path: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_lakegate")).args(["audit", "verify"]).arg(path).output().expect("run verify")
    };
    let ok = verify(&file);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));

    let text = std::fs::read_to_string(&file).expect("log");
    let second = text.lines().nth(1).expect("a middle event");
    let edited = second.replacen("lake/hr/b", "lake/hr/c", 1);
    assert_ne!(second, edited);
    std::fs::write(&file, text.replacen(second, &edited, 1)).expect("tamper");
    let broken = verify(&file);
    assert!(!broken.status.success());
    let message = String::from_utf8_lossy(&broken.stderr);
    assert!(message.contains("seq 1"), "names the first broken event: {message}");
}

#[test]
fn requests_are_refused_when_the_audit_log_cannot_be_written() {
    let lg = Lakegate::start(&[]);
    let t = alice(&lg);
    let body = json!({"action": "s3:GetObject", "resource": "s3://lake/sales/a"});
    assert_eq!(authorize(&lg, Some(&t), &body).0, 200);
    // A directory where the writer must create its checkpoint file makes every write fail, even for root.
    // (Retried: the writer's own temporary file may exist for an instant.)
    let blocker = lg.data().join("audit").join("audit.head.tmp");
    eventually("the checkpoint blocked", || std::fs::create_dir(&blocker).ok());
    let (status, problem, _) = eventually("fail closed", || {
        let r = authorize(&lg, Some(&t), &body);
        (r.0 == 503).then_some(r)
    });
    assert_eq!(status, 503);
    assert_eq!(problem["type"], "https://lakegate.dev/problems/audit-unavailable");
    assert_eq!(http().get(format!("{}/readyz", lg.control_url())).send().expect("readyz").status(), 503);
}

#[test]
fn the_control_endpoint_serves_tls_with_the_dev_certificates() {
    let certs = tempfile::tempdir().expect("dir");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("certs/gen-dev.sh");
    let out = Command::new("bash").arg(script).arg(certs.path()).output().expect("run gen-dev.sh");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tls = format!(
        "{{cert = \"{}\", key = \"{}\"}}",
        certs.path().join("server.crt").display(),
        certs.path().join("server.key").display()
    );
    let lg = Lakegate::start(&[("LAKEGATE__CONTROL__TLS", tls.as_str())]);
    let ca = reqwest::Certificate::from_pem(&std::fs::read(certs.path().join("ca.crt")).expect("ca")).expect("pem");
    let client = reqwest::blocking::Client::builder().add_root_certificate(ca).build().expect("client");
    let resp = client.get(format!("https://localhost:{}/healthz", lg.control.port())).send().expect("https");
    assert_eq!(resp.status(), 200);
    assert!(
        http().get(format!("http://{}/healthz", lg.control)).send().is_err(),
        "plain HTTP is not served on a TLS listener"
    );
}
