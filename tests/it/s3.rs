//! The S3 front driven by the AWS Rust SDK, as s3s drives its own service: credentials from Lakegate's STS,
//! then S3 calls against `lakegate serve` with the embedded store.

use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;

use crate::support::{Lakegate, decisions, eventually, replace_policy, wait_for_port};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

fn endpoint(lg: &Lakegate) -> String {
    wait_for_port(lg.s3, Duration::from_secs(30));
    format!("http://{}", lg.s3)
}

/// Credentials from AssumeRoleWithWebIdentity for `role`.
async fn assume(lg: &Lakegate, sub: &str, groups: &[&str], role: &str) -> Credentials {
    try_assume(lg, sub, groups, role).await.expect("AssumeRoleWithWebIdentity")
}

/// AssumeRoleWithWebIdentity for `role`: the credentials, or the STS error code.
async fn try_assume(lg: &Lakegate, sub: &str, groups: &[&str], role: &str) -> Result<Credentials, String> {
    let config = aws_sdk_sts::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint(lg))
        .build();
    let sts = aws_sdk_sts::Client::from_conf(config);
    let out = sts
        .assume_role_with_web_identity()
        .role_arn(format!("arn:aws:iam::000000000000:role/{role}"))
        .role_session_name(format!("{sub}-sdk"))
        .web_identity_token(lg.token(sub, groups, &[]))
        .send()
        .await
        .map_err(|e| {
            let service = e.into_service_error();
            aws_sdk_sts::error::ProvideErrorMetadata::code(&service).unwrap_or("no code").to_owned()
        })?;
    let c = out.credentials().ok_or("no credentials")?;
    Ok(Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_owned()),
        None,
        "lakegate-sts",
    ))
}

/// The audit record of an STS call of `sub`'s (their role session name) with `decision`.
fn sts_record(lg: &Lakegate, sub: &str, decision: &str) -> serde_json::Value {
    let session = format!("{sub}-sdk");
    eventually(&format!("the STS record of {sub}"), || {
        lg.audit_events().into_iter().find(|e| {
            e["action"] == "sts:AssumeRoleWithWebIdentity"
                && e["decision"] == decision
                && e["extra"]["role_session_name"] == session.as_str()
        })
    })
}

fn s3(lg: &Lakegate, credentials: Credentials) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint(lg))
        .force_path_style(true)
        .credentials_provider(credentials)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

#[test]
fn the_rust_sdk_puts_gets_lists_and_deletes_with_sts_credentials() {
    let lg = Lakegate::start(&[]);
    runtime().block_on(async {
        let client = s3(&lg, assume(&lg, "alice", &["analysts"], "lakegate").await);
        let data = vec![7u8; 3 * 1024 * 1024 + 17];
        client
            .put_object()
            .bucket("lake")
            .key("sales/sdk.bin")
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .expect("put");
        let got = client.get_object().bucket("lake").key("sales/sdk.bin").send().await.expect("get");
        assert_eq!(got.body.collect().await.expect("body").into_bytes().as_ref(), data.as_slice());
        let listed = client.list_objects_v2().bucket("lake").prefix("sales/").send().await.expect("list");
        let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
        assert!(keys.contains(&"sales/sdk.bin"), "{keys:?}");
        client.delete_object().bucket("lake").key("sales/sdk.bin").send().await.expect("delete");
        assert!(client.head_object().bucket("lake").key("sales/sdk.bin").send().await.is_err());
    });
}

#[test]
fn the_rust_sdk_gets_access_denied_outside_policy_and_it_is_audited() {
    let lg = Lakegate::start(&[]);
    runtime().block_on(async {
        let client = s3(&lg, assume(&lg, "alice", &["analysts"], "lakegate").await);
        let err = client.get_object().bucket("lake").key("hr/salaries.csv").send().await.expect_err("denied");
        let service = err.into_service_error();
        let meta = aws_sdk_s3::error::ProvideErrorMetadata::meta(&service);
        assert_eq!(meta.code(), Some("AccessDenied"));
    });
    let event = eventually("the denial in the audit log", || {
        lg.audit_events().into_iter().find(|e| e["resource"] == "s3://lake/hr/salaries.csv" && e["decision"] == "deny")
    });
    assert_eq!(event["principal"]["subject"], "alice");
    assert_eq!(event["action"], "s3:GetObject");
    assert_eq!(event["extra"]["role_session_name"], "alice-sdk");
}

#[test]
fn a_prefix_limited_role_cannot_leave_its_prefix_even_where_policy_allows() {
    let lg = Lakegate::start(&[]);
    runtime().block_on(async {
        let client = s3(&lg, assume(&lg, "alice", &["analysts"], "lakegate-sales").await);
        client.get_object().bucket("lake").key("sales/2024/q1.csv").send().await.expect("inside the role");
        let err = client.get_object().bucket("lake").key("public/cities.csv").send().await.expect_err("outside");
        let service = err.into_service_error();
        assert_eq!(aws_sdk_s3::error::ProvideErrorMetadata::meta(&service).code(), Some("AccessDenied"));
    });
}

/// Whether `credentials` may list `lake/sales/` on `lg` (false on an S3 error such as InvalidToken).
async fn lists_sales(lg: &Lakegate, credentials: &Credentials) -> bool {
    s3(lg, credentials.clone()).list_objects_v2().bucket("lake").prefix("sales/").send().await.is_ok()
}

#[test]
fn replicas_sharing_the_credentials_keys_accept_each_others_credentials_and_rotate_without_restart() {
    // In production the directory is one mounted Secret; here it is prepared before either replica starts.
    let keys = tempfile::tempdir().expect("keys");
    let first = lakegate_core::credentials::KeyRing::generate_key_file(keys.path()).expect("first key");
    let key_dir = keys.path().display().to_string();
    let shared = [("LAKEGATE__CREDENTIALS__KEY_DIR", key_dir.as_str())];
    let (a, b) = (Lakegate::start(&shared), Lakegate::start(&shared));
    runtime().block_on(async {
        let old = assume(&a, "alice", &["analysts"], "lakegate").await;
        assert!(lists_sales(&b, &old).await, "credentials vended by replica a work on replica b");

        // Rotation, step 1: a new key appears in the shared directory; both replicas pick it up on their own.
        let second = lakegate_core::credentials::KeyRing::generate_key_file(keys.path()).expect("second key");
        // As an operator would once every replica has the new key: name it current (kids generated in the same
        // second would otherwise sort by their random suffix).
        std::fs::write(keys.path().join("current"), second.as_str()).expect("current");
        std::thread::sleep(Duration::from_millis(2500));
        let new = assume(&a, "alice", &["analysts"], "lakegate").await;
        assert!(lists_sales(&b, &new).await, "b verifies what a minted under the new key");
        assert!(lists_sales(&b, &old).await, "the old key is still accepted until it is removed");

        // Step 2: the old key is removed; its credentials stop working everywhere, the new ones keep working.
        std::fs::remove_file(keys.path().join(first.as_str())).expect("remove old key");
        let start = std::time::Instant::now();
        while lists_sales(&b, &old).await || lists_sales(&a, &old).await {
            assert!(start.elapsed() < Duration::from_secs(20), "the removed key is still accepted");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(lists_sales(&b, &new).await && lists_sales(&a, &new).await);
    });
}

#[test]
fn assuming_a_role_is_a_policy_decision_the_record_names_and_the_metrics_count() {
    let lg = Lakegate::start(&[]);
    let before = decisions(&lg, "sts", "allow");
    runtime().block_on(assume(&lg, "alice", &["analysts"], "lakegate-sales"));
    let record = sts_record(&lg, "alice", "allow");
    assert_eq!(record["resource"], r#"Role::"lakegate-sales""#);
    assert_eq!(record["policies"], serde_json::json!(["sts-any-role"]));
    assert_eq!(record["principal"]["subject"], "alice");
    assert!(record["extra"]["access_key_id"].is_string(), "the record names the credentials it vended: {record}");
    assert_eq!(decisions(&lg, "sts", "allow"), before + 1);
}

#[test]
fn a_user_no_policy_lets_assume_a_role_gets_access_denied_and_the_refusal_is_recorded() {
    let lg = Lakegate::start(&[]);
    let rt = runtime();
    replace_policy(
        &lg,
        "identity.cedar",
        r#"@id("sts-analysts-only")
           permit (principal in Group::"analysts", action == Action::"sts:AssumeRoleWithWebIdentity", resource is Role);"#,
        || rt.block_on(try_assume(&lg, "dave", &[], "lakegate")).is_err(),
    );
    let before = decisions(&lg, "sts", "deny");
    assert_eq!(rt.block_on(try_assume(&lg, "dave", &[], "lakegate")).err().as_deref(), Some("AccessDenied"));
    let record = sts_record(&lg, "dave", "deny");
    assert_eq!(record["policies"], serde_json::json!([]));
    assert!(record["reason"].as_str().is_some_and(|r| r.starts_with("default deny")), "{record}");
    assert_eq!(decisions(&lg, "sts", "deny"), before + 1);
    // The policy still lets analysts in, and says so.
    rt.block_on(assume(&lg, "alice", &["analysts"], "lakegate"));
    assert_eq!(sts_record(&lg, "alice", "allow")["policies"], serde_json::json!(["sts-analysts-only"]));
}

#[test]
fn list_buckets_is_recorded_with_the_permits_behind_the_buckets_it_shows() {
    let lg = Lakegate::start(&[]);
    let before = decisions(&lg, "s3", "allow");
    let buckets = runtime().block_on(async {
        let client = s3(&lg, assume(&lg, "alice", &["analysts"], "lakegate").await);
        let out = client.list_buckets().send().await.expect("ListBuckets");
        out.buckets().iter().filter_map(|b| b.name().map(str::to_owned)).collect::<Vec<_>>()
    });
    assert_eq!(buckets, vec!["lake".to_owned()]);
    let record = eventually("the ListBuckets record", || {
        lg.audit_events().into_iter().find(|e| e["action"] == "s3:ListAllMyBuckets")
    });
    assert_eq!(record["decision"], "allow");
    assert_eq!(record["extra"]["buckets"], serde_json::json!(["lake"]));
    // Alice may list nothing at the bucket's root; lake/public/ is the first place she may list.
    assert_eq!(record["policies"], serde_json::json!(["lake-public-read"]));
    assert_eq!(decisions(&lg, "s3", "allow"), before + 1);
}
