//! The S3 front driven by the AWS Rust SDK, as s3s drives its own service: credentials from Lakegate's STS,
//! then S3 calls against `lakegate serve` with the embedded store.

use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;

use crate::support::{Lakegate, decisions, eventually, replace_policy};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

fn endpoint(lg: &Lakegate) -> String {
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
fn credentials_stop_once_the_issuer_of_the_user_they_were_vended_to_is_no_longer_trusted() {
    let lg = Lakegate::start(&[]);
    let credentials = runtime().block_on(assume(&lg, "alice", &["analysts"], "lakegate"));
    assert!(runtime().block_on(lists_sales(&lg, &credentials)));

    // The operator takes the issuer out of the configuration (here the dev issuer, the only one) and restarts.
    // The credentials still open under the same keys and have not expired, but the user they name is no longer
    // vouched for.
    let lg = Lakegate::start_in(lg.stop(), &[("LAKEGATE__IDENTITY__DEV_ISSUER", "false")]);
    let refused = runtime().block_on(async {
        s3(&lg, credentials.clone()).list_objects_v2().bucket("lake").prefix("sales/").send().await
    });
    assert_eq!(code_and_status(refused.expect_err("refused")), (Some("InvalidToken".to_owned()), Some(400)));
    let record = eventually("the refusal in the audit log", || {
        lg.audit_events().into_iter().find(|e| e["action"] == "s3:Authenticate" && e["decision"] == "deny")
    });
    assert!(record["reason"].as_str().is_some_and(|r| r.contains("no longer trusted")), "{record}");

    // Trusted again, the same credentials work: the refusal was the issuer's alone.
    let lg = Lakegate::start_in(lg.stop(), &[]);
    assert!(runtime().block_on(lists_sales(&lg, &credentials)));
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

/// CreateBucket creates nothing: a bucket the caller may see into is `409 BucketAlreadyOwnedByYou` (tools such as
/// rclone go on), one they may not `403 AccessDenied`; both decided and recorded as `s3:CreateBucket`.
#[test]
fn creating_a_bucket_the_caller_sees_is_already_owned_and_any_other_is_access_denied() {
    let lg = Lakegate::start(&[]);
    let answers = runtime().block_on(async {
        let client = s3(&lg, assume(&lg, "alice", &["analysts"], "lakegate").await);
        let mut answers = Vec::new();
        for bucket in ["lake", "elsewhere"] {
            let err = client.create_bucket().bucket(bucket).send().await.expect_err("no bucket is created");
            answers.push(code_and_status(err));
        }
        answers
    });
    assert_eq!(
        answers,
        vec![(Some("BucketAlreadyOwnedByYou".to_owned()), Some(409)), (Some("AccessDenied".to_owned()), Some(403))]
    );
    let records = eventually("both CreateBucket records", || {
        let found: Vec<_> = lg.audit_events().into_iter().filter(|e| e["action"] == "s3:CreateBucket").collect();
        (found.len() == 2).then_some(found)
    });
    let seen = records.iter().find(|e| e["resource"] == "s3://lake/").expect("the record of lake");
    assert_eq!((seen["decision"].as_str(), seen["outcome"]["status"].as_u64()), (Some("allow"), Some(409)));
    assert_eq!(seen["reason"], "the bucket exists; nothing was created");
    let hidden = records.iter().find(|e| e["resource"] == "s3://elsewhere/").expect("the record of elsewhere");
    assert_eq!((hidden["decision"].as_str(), hidden["outcome"]["status"].as_u64()), (Some("deny"), Some(403)));
    assert!(hidden["reason"].as_str().is_some_and(|r| r.starts_with("default deny")), "{hidden}");
}

/// The S3 error code and HTTP status of a failed SDK call.
fn code_and_status<E>(
    err: aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> (Option<String>, Option<u16>)
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::fmt::Debug,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = match err {
        aws_sdk_s3::error::SdkError::ServiceError(e) => e.err().code().map(str::to_owned),
        other => panic!("not an S3 error answer: {other:?}"),
    };
    (code, status)
}

#[test]
fn a_suffix_range_longer_than_the_object_is_the_whole_object_as_on_s3() {
    // What object_store readers (polars, DataFusion) ask first for a Parquet footer: the last 8 KiB or so.
    let lg = Lakegate::start(&[]);
    runtime().block_on(async {
        let client = s3(&lg, assume(&lg, "alice", &["analysts"], "lakegate").await);
        client
            .put_object()
            .bucket("lake")
            .key("sales/small.bin")
            .body(ByteStream::from_static(b"0123456789"))
            .send()
            .await
            .expect("put");
        let get = |range: &'static str| client.get_object().bucket("lake").key("sales/small.bin").range(range).send();

        let whole = get("bytes=-8192").await.expect("a suffix longer than the object");
        assert_eq!(whole.content_range(), Some("bytes 0-9/10"));
        assert_eq!(whole.body.collect().await.expect("body").into_bytes().as_ref(), b"0123456789");
        let tail = get("bytes=-4").await.expect("a suffix shorter than the object");
        assert_eq!(tail.content_range(), Some("bytes 6-9/10"));
        assert_eq!(tail.body.collect().await.expect("body").into_bytes().as_ref(), b"6789");

        client
            .put_object()
            .bucket("lake")
            .key("sales/empty.bin")
            .body(ByteStream::from_static(b""))
            .send()
            .await
            .expect("put");
        let err = client.get_object().bucket("lake").key("sales/empty.bin").range("bytes=-8192").send().await;
        let err = err.expect_err("an empty object has no suffix");
        assert_eq!(code_and_status(err), (Some("InvalidRange".into()), Some(416)));
    });
}

/// A stand-in for an S3 store on a free port that handles every connection with `serve` (on its own thread,
/// for the life of the test process).
fn fake_store(serve: fn(std::net::TcpStream)) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve(stream));
        }
    });
    addr
}

/// Reads a request head and the first 64 KiB of its body at most, as a store does before it gives up on it.
fn read_head_and_some_body(stream: &mut std::net::TcpStream) {
    use std::io::Read;
    let mut seen = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while seen.len() < 64 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// Answers `412 PreconditionFailed` from the request head and closes with the body unread, as a store that checks
/// `If-Match` before taking the upload does; the unread body makes the kernel reset the connection.
fn refuse_early(mut stream: std::net::TcpStream) {
    use std::io::Write;
    read_head_and_some_body(&mut stream);
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>PreconditionFailed</Code>\
                <Message>At least one of the pre-conditions you specified did not hold</Message></Error>";
    let head = format!(
        "HTTP/1.1 412 Precondition Failed\r\ncontent-type: application/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body.as_bytes()));
}

/// Reads part of the upload and goes away without answering (a crashed or overloaded store).
fn vanish(mut stream: std::net::TcpStream) {
    read_head_and_some_body(&mut stream);
}

fn remote_store_env(store: std::net::SocketAddr) -> [(&'static str, String); 4] {
    [
        ("LAKEGATE__S3__BACKEND__KIND", "remote".to_owned()),
        ("LAKEGATE__S3__BACKEND__ENDPOINT", format!("http://{store}")),
        ("LAKEGATE__S3__BACKEND__ACCESS_KEY_ID", "store-key".to_owned()),
        ("LAKEGATE__S3__BACKEND__SECRET_ACCESS_KEY", "store-secret".to_owned()),
    ]
}

fn start_in_front_of(store: std::net::SocketAddr) -> Lakegate {
    let env = remote_store_env(store);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Lakegate::start(&env)
}

/// An S3 client that reports the first answer instead of retrying.
fn s3_once(lg: &Lakegate, credentials: Credentials) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint(lg))
        .force_path_style(true)
        .credentials_provider(credentials)
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// The audit event of the PutObject that got `status`, once it is written.
fn put_event(lg: &Lakegate, status: u16) -> serde_json::Value {
    eventually("the upload's audit event", || {
        lg.audit_events().into_iter().find(|e| e["action"] == "s3:PutObject" && e["outcome"]["status"] == status)
    })
}

#[test]
fn a_store_that_refuses_a_large_upload_early_is_heard_by_the_client_and_the_audit_log() {
    let lg = start_in_front_of(fake_store(refuse_early));
    runtime().block_on(async {
        let client = s3_once(&lg, assume(&lg, "alice", &["analysts"], "lakegate").await);
        let data = vec![b'x'; 16 * 1024 * 1024];
        // The store's answer races the upload on every attempt: each one must come back as the store's answer.
        for _ in 0..5 {
            let err = client
                .put_object()
                .bucket("lake")
                .key("sales/big.bin")
                .if_match("\"not-the-etag\"")
                .body(ByteStream::from(data.clone()))
                .send()
                .await
                .expect_err("the store refuses the upload");
            assert_eq!(code_and_status(err), (Some("PreconditionFailed".into()), Some(412)));
        }
    });
    let event = put_event(&lg, 412);
    assert_eq!(event["decision"], "allow", "Lakegate allowed it; the store refused it");
    assert_eq!(event["outcome"]["error_code"], "PreconditionFailed");
    assert!(event["reason"].as_str().is_some_and(|r| r.contains("PreconditionFailed")), "{event}");
}

#[test]
fn the_embedded_store_refuses_a_large_upload_with_a_failed_if_match_and_the_client_hears_it() {
    // s3s-fs checks If-Match before it reads the body, as a remote store may.
    let lg = Lakegate::start(&[]);
    runtime().block_on(async {
        let client = s3_once(&lg, assume(&lg, "alice", &["analysts"], "lakegate").await);
        client
            .put_object()
            .bucket("lake")
            .key("sales/cas.bin")
            .body(ByteStream::from_static(b"v1"))
            .send()
            .await
            .expect("put");
        let data = vec![b'x'; 16 * 1024 * 1024];
        for _ in 0..5 {
            let err = client
                .put_object()
                .bucket("lake")
                .key("sales/cas.bin")
                .if_match("\"not-the-etag\"")
                .body(ByteStream::from(data.clone()))
                .send()
                .await
                .expect_err("the ETag does not match");
            assert_eq!(code_and_status(err), (Some("PreconditionFailed".into()), Some(412)));
        }
        let kept = client.get_object().bucket("lake").key("sales/cas.bin").send().await.expect("get");
        assert_eq!(kept.body.collect().await.expect("body").into_bytes().as_ref(), b"v1");
    });
}

#[test]
fn a_store_that_goes_away_mid_upload_is_a_clean_s3_error_and_the_audit_log_says_so() {
    let lg = start_in_front_of(fake_store(vanish));
    runtime().block_on(async {
        let client = s3_once(&lg, assume(&lg, "alice", &["analysts"], "lakegate").await);
        let err = client
            .put_object()
            .bucket("lake")
            .key("sales/big.bin")
            .body(ByteStream::from(vec![b'x'; 4 * 1024 * 1024]))
            .send()
            .await
            .expect_err("the store never answers");
        let message = match &err {
            aws_sdk_s3::error::SdkError::ServiceError(e) => e.err().meta().message().unwrap_or_default().to_owned(),
            other => panic!("not an S3 error answer: {other:?}"),
        };
        assert_eq!(code_and_status(err), (Some("ServiceUnavailable".into()), Some(503)));
        // The client learns what happened, not how Lakegate's HTTP client words it.
        assert!(message.contains("closed the connection"), "{message}");
        for internal in ["client error", "os error", "SendRequest", "hyper", "connection reset"] {
            assert!(!message.to_lowercase().contains(&internal.to_lowercase()), "{message}");
        }
    });
    let event = put_event(&lg, 503);
    assert_eq!(event["outcome"]["error_code"], "ServiceUnavailable");
    let reason = event["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("the store closed the connection without answering"), "{event}");
}
