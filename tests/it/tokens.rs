//! Trusted identity propagation through the token service: RFC 8693 exchanges by a notebook service and the
//! next hop, actor chains in decisions and audit events, narrowing, replicas sharing keys.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::{Lakegate, decisions, eventually, http, replace_policy};

const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

fn clients_env() -> String {
    let hash = |s: &str| hex::encode(Sha256::digest(s.as_bytes()));
    format!(
        "[{{id = \"notebook\", secret_sha256 = \"{}\"}}, {{id = \"spark\", secret_sha256 = \"{}\"}}, {{id = \"hr-portal\", secret_sha256 = \"{}\"}}]",
        hash("notebook-secret"),
        hash("spark-secret"),
        hash("hr-portal-secret")
    )
}

fn start(extra: &[(&str, &str)]) -> Lakegate {
    let clients = clients_env();
    let mut env = vec![("LAKEGATE__TOKEN_SERVICE__CLIENTS", clients.as_str())];
    env.extend_from_slice(extra);
    Lakegate::start(&env)
}

fn exchange(lg: &Lakegate, client: (&str, &str), subject: &str, extra: &[(&str, &str)]) -> (u16, Value) {
    let mut form = vec![("grant_type", GRANT), ("subject_token", subject), ("subject_token_type", JWT)];
    form.extend_from_slice(extra);
    let resp = http()
        .post(format!("{}/oauth2/token", lg.control_url()))
        .basic_auth(client.0, Some(client.1))
        .form(&form)
        .send()
        .expect("token request");
    (resp.status().as_u16(), resp.json().expect("json"))
}

fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("payload part");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64")).expect("json")
}

fn authorize(lg: &Lakegate, token: &str, action: &str, resource: &str) -> Value {
    http()
        .post(format!("{}/v1/authorize", lg.control_url()))
        .bearer_auth(token)
        .json(&json!({"action": action, "resource": resource}))
        .send()
        .expect("authorize")
        .json()
        .expect("json")
}

#[test]
fn a_notebook_exchanges_alices_token_and_every_decision_names_both() {
    let lg = start(&[]);
    let alice = lg.token("alice", &["analysts"], &[("region", "EU")]);
    let (status, body) = exchange(&lg, ("notebook", "notebook-secret"), &alice, &[]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["issued_token_type"], JWT);
    assert_eq!(body["token_type"], "Bearer");
    let token = body["access_token"].as_str().expect("token");
    let claims = payload(token);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["act"]["sub"], "notebook");
    assert_eq!(claims["groups"], json!(["analysts"]));

    let decision = authorize(&lg, token, "s3:GetObject", "s3://lake/sales/a.parquet");
    assert_eq!(decision["decision"], "allow");
    let rid = decision["request_id"].as_str().expect("id").to_owned();
    let event =
        eventually("the audit event", || lg.audit_events().into_iter().find(|e| e["request_id"] == rid.as_str()));
    assert_eq!(event["principal"]["subject"], "alice");
    assert_eq!(event["principal"]["issuer"], "lakegate-dev", "the user's original issuer");
    assert_eq!(event["actors"][0]["subject"], "notebook");
}

#[test]
fn the_next_hop_exchanges_again_and_the_chain_grows_outermost_first() {
    let lg = start(&[]);
    let alice = lg.token("alice", &["analysts"], &[("region", "EU")]);
    let (_, first) = exchange(&lg, ("notebook", "notebook-secret"), &alice, &[]);
    let (status, second) =
        exchange(&lg, ("spark", "spark-secret"), first["access_token"].as_str().expect("token"), &[]);
    assert_eq!(status, 200, "{second}");
    let claims = payload(second["access_token"].as_str().expect("token"));
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["act"]["sub"], "spark");
    assert_eq!(claims["act"]["act"]["sub"], "notebook");
    assert_eq!(claims["attrs"]["region"], "EU");
}

#[test]
fn a_chain_longer_than_the_configured_depth_is_refused() {
    let lg = start(&[("LAKEGATE__TOKEN_SERVICE__MAX_DEPTH", "1")]);
    let alice = lg.token("alice", &["analysts"], &[]);
    let (_, first) = exchange(&lg, ("notebook", "notebook-secret"), &alice, &[]);
    let (status, body) = exchange(&lg, ("spark", "spark-secret"), first["access_token"].as_str().expect("t"), &[]);
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_request");
}

#[test]
fn an_exchange_never_widens_lifetime_audience_or_scope() {
    let lg = start(&[]);
    let short = crate::support::dev_token(lg.data(), "alice", &["analysts"], &[], std::time::Duration::from_secs(120));
    let (status, body) = exchange(&lg, ("notebook", "notebook-secret"), &short, &[]);
    assert_eq!(status, 200);
    assert!(body["expires_in"].as_i64().expect("expires_in") <= 120, "never outlives the subject token: {body}");

    let (status, body) = exchange(&lg, ("notebook", "notebook-secret"), &short, &[("audience", "https://elsewhere")]);
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_target")));

    let (_, scoped) = exchange(&lg, ("notebook", "notebook-secret"), &short, &[("scope", "read")]);
    let (status, body) = exchange(
        &lg,
        ("spark", "spark-secret"),
        scoped["access_token"].as_str().expect("t"),
        &[("scope", "read write")],
    );
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_scope")));
}

#[test]
fn bad_client_credentials_and_forged_subject_tokens_are_refused_and_audited() {
    let lg = start(&[]);
    let alice = lg.token("alice", &["analysts"], &[]);
    let (status, body) = exchange(&lg, ("notebook", "wrong"), &alice, &[]);
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")));
    let (status, _) = exchange(&lg, ("nobody", "notebook-secret"), &alice, &[]);
    assert_eq!(status, 401);
    let mut forged = alice.clone();
    forged.insert(forged.len() - 3, 'x');
    let (status, body) = exchange(&lg, ("notebook", "notebook-secret"), &forged, &[]);
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
    eventually("three denials on record", || {
        (lg.audit_events().iter().filter(|e| e["action"] == "token:Exchange" && e["decision"] == "deny").count() >= 3)
            .then_some(())
    });
}

#[test]
fn an_application_may_authenticate_with_its_own_token_as_actor_token() {
    let lg = start(&[]);
    let alice = lg.token("alice", &["analysts"], &[]);
    let service = lg.token("etl-service", &[], &[]);
    let resp = http()
        .post(format!("{}/oauth2/token", lg.control_url()))
        .form(&[
            ("grant_type", GRANT),
            ("subject_token", alice.as_str()),
            ("subject_token_type", JWT),
            ("actor_token", service.as_str()),
            ("actor_token_type", JWT),
        ])
        .send()
        .expect("request");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().expect("json");
    assert_eq!(payload(body["access_token"].as_str().expect("t"))["act"]["sub"], "etl-service");
}

#[test]
fn policies_can_require_a_particular_actor() {
    let lg = start(&[]);
    std::fs::write(
        lg.policy_dir().join("hr-portal.cedar"),
        r#"@id("hr-only-through-the-portal")
           forbid (principal, action, resource in Prefix::"lake/hr/")
           unless { context has actor && context.actor == "hr-portal" };"#,
    )
    .expect("policy");
    let carol = lg.token("carol", &["hr"], &[]);
    eventually("the new policy in force", || {
        (authorize(&lg, &carol, "s3:GetObject", "s3://lake/hr/x.csv")["decision"] == "deny").then_some(())
    });
    let (_, via_portal) = exchange(&lg, ("hr-portal", "hr-portal-secret"), &carol, &[]);
    let (_, via_notebook) = exchange(&lg, ("notebook", "notebook-secret"), &carol, &[]);
    let portal = via_portal["access_token"].as_str().expect("t");
    let notebook = via_notebook["access_token"].as_str().expect("t");
    assert_eq!(authorize(&lg, portal, "s3:GetObject", "s3://lake/hr/x.csv")["decision"], "allow");
    assert_eq!(authorize(&lg, notebook, "s3:GetObject", "s3://lake/hr/x.csv")["decision"], "deny");
}

#[test]
fn replicas_sharing_the_signing_keys_accept_each_others_tokens_and_rotate_without_restart() {
    // In production the keys come from one Secret; here the directory is prepared before either replica starts.
    let keys = tempfile::tempdir().expect("keys");
    lakegate_core::identity::signer::generate_key_file(keys.path()).expect("first key");
    let key_dir = keys.path().display().to_string();
    let shared = [
        ("LAKEGATE__TOKEN_SERVICE__KEY_DIR", key_dir.as_str()),
        ("LAKEGATE__TOKEN_SERVICE__ISSUER", "https://lakegate.test"),
    ];
    let a = start(&shared);
    let b = start(&shared);
    let alice = a.token("alice", &["analysts"], &[]);
    // Each replica has its own data dir (and dev issuer): the token is exchanged at a and used at b.
    let (status, body) = exchange(&a, ("notebook", "notebook-secret"), &alice, &[]);
    assert_eq!(status, 200, "{body}");
    let from_a = body["access_token"].as_str().expect("t").to_owned();
    assert_eq!(authorize(&b, &from_a, "s3:GetObject", "s3://lake/sales/x")["decision"], "allow");

    let jwks: Value =
        http().get(format!("{}/.well-known/jwks.json", b.control_url())).send().expect("jwks").json().expect("json");
    assert_eq!(jwks["keys"].as_array().expect("keys").len(), 1);
    let discovery: Value = http()
        .get(format!("{}/.well-known/openid-configuration", b.control_url()))
        .send()
        .expect("disc")
        .json()
        .expect("json");
    assert_eq!(discovery["issuer"], "https://lakegate.test");

    // Rotation: a new key is added to the shared directory; a signs with it, b learns it on first sight.
    let new_kid = lakegate_core::identity::signer::generate_key_file(keys.path()).expect("new key");
    let (_, body) = exchange(&a, ("notebook", "notebook-secret"), &alice, &[]);
    let rotated = body["access_token"].as_str().expect("t").to_owned();
    assert_eq!(header_kid(&rotated), new_kid);
    assert_eq!(authorize(&b, &rotated, "s3:GetObject", "s3://lake/sales/x")["decision"], "allow");
    assert_eq!(
        authorize(&b, &from_a, "s3:GetObject", "s3://lake/sales/x")["decision"],
        "allow",
        "old key still accepted"
    );

    // The old key is withdrawn: no token names a kid either replica does not know, yet within a few seconds
    // (their periodic re-read of the directory) neither accepts the tokens it signed, cached or not.
    let old_kid = header_kid(&from_a);
    std::fs::remove_file(keys.path().join(&old_kid)).expect("remove the old key");
    for replica in [&a, &b] {
        eventually("the withdrawn key's token refused", || {
            (authorize(replica, &from_a, "s3:GetObject", "s3://lake/sales/x")["decision"] != "allow").then_some(())
        });
        assert_eq!(authorize(replica, &rotated, "s3:GetObject", "s3://lake/sales/x")["decision"], "allow");
    }
}

#[test]
fn an_exchanged_token_stops_once_the_issuer_of_its_user_is_no_longer_trusted() {
    // Lakegate's own issuer is named, not taken from the control endpoint's address, which moves at a restart.
    let ours = ("LAKEGATE__TOKEN_SERVICE__ISSUER", "https://lakegate.test");
    let lg = start(&[ours]);
    let alice = lg.token("alice", &["analysts"], &[]);
    let (status, body) = exchange(&lg, ("notebook", "notebook-secret"), &alice, &[]);
    assert_eq!(status, 200, "{body}");
    let exchanged = body["access_token"].as_str().expect("access_token").to_owned();
    assert_eq!(authorize(&lg, &exchanged, "s3:GetObject", "s3://lake/sales/x")["decision"], "allow");

    // The dev issuer is taken out of the configuration. Lakegate's own issuer, which signed the exchanged token
    // with a key it still holds, is trusted as before; the user's original issuer is not.
    let clients = clients_env();
    let lg = Lakegate::start_in(
        lg.stop(),
        &[("LAKEGATE__TOKEN_SERVICE__CLIENTS", clients.as_str()), ours, ("LAKEGATE__IDENTITY__DEV_ISSUER", "false")],
    );
    let refused = authorize(&lg, &exchanged, "s3:GetObject", "s3://lake/sales/x");
    assert_ne!(refused["decision"], "allow", "{refused}");
    let record = eventually("the refusal in the audit log", || {
        lg.audit_events()
            .into_iter()
            .find(|e| e["decision"] == "deny" && e["reason"].as_str().is_some_and(|r| r.contains("is not trusted")))
    });
    assert!(record["reason"].as_str().is_some_and(|r| r.contains("\"lakegate-dev\" is not trusted")), "{record}");

    let lg = Lakegate::start_in(lg.stop(), &[("LAKEGATE__TOKEN_SERVICE__CLIENTS", clients.as_str()), ours]);
    assert_eq!(authorize(&lg, &exchanged, "s3:GetObject", "s3://lake/sales/x")["decision"], "allow");
}

/// The `kid` in a token's header.
fn header_kid(token: &str) -> String {
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').next().expect("header")).expect("b64"))
            .expect("json");
    header["kid"].as_str().expect("kid").to_owned()
}

/// The audit record of a token exchange for `sub` by `actor` with `decision`.
fn exchange_record(lg: &Lakegate, sub: &str, actor: &str, decision: &str) -> Value {
    eventually(&format!("the exchange record of {actor} for {sub}"), || {
        lg.audit_events().into_iter().find(|e| {
            e["action"] == "token:Exchange"
                && e["decision"] == decision
                && e["principal"]["subject"] == sub
                && e["actors"][0]["subject"] == actor
        })
    })
}

#[test]
fn an_exchange_is_a_policy_decision_the_record_names_and_the_metrics_count() {
    let lg = start(&[]);
    let before = decisions(&lg, "token", "allow");
    let alice = lg.token("alice", &["analysts"], &[]);
    let (status, body) = exchange(&lg, ("notebook", "notebook-secret"), &alice, &[]);
    assert_eq!(status, 200, "{body}");
    let record = exchange_record(&lg, "alice", "notebook", "allow");
    assert_eq!(record["resource"], r#"Audience::"lakegate""#);
    assert_eq!(record["policies"], json!(["token-exchange-any-actor"]));
    assert_eq!(decisions(&lg, "token", "allow"), before + 1);
}

/// Only the notebook may act for users, and never for HR staff.
const NOTEBOOK_ONLY: &str = r#"
@id("sts-any-role")
permit (principal, action == Action::"sts:AssumeRoleWithWebIdentity", resource is Role);

@id("exchange-notebook-only")
permit (principal, action == Action::"token:Exchange", resource is Audience)
when { context has actor && context.actor == "notebook" };

@id("no-delegation-for-hr")
forbid (principal in Group::"hr", action == Action::"token:Exchange", resource);
"#;

#[test]
fn an_application_no_policy_lets_act_for_the_user_is_refused_and_the_refusal_is_recorded() {
    let lg = start(&[]);
    let alice = lg.token("alice", &["analysts"], &[]);
    replace_policy(&lg, "identity.cedar", NOTEBOOK_ONLY, || {
        exchange(&lg, ("spark", "spark-secret"), &alice, &[]).0 != 200
    });
    let before = decisions(&lg, "token", "deny");
    let (status, body) = exchange(&lg, ("spark", "spark-secret"), &alice, &[]);
    assert_eq!((status, body["error"].as_str()), (400, Some("unauthorized_client")), "{body}");
    let record = exchange_record(&lg, "alice", "spark", "deny");
    assert_eq!(record["policies"], json!([]));
    assert!(record["reason"].as_str().is_some_and(|r| r.starts_with("default deny")), "{record}");
    assert_eq!(decisions(&lg, "token", "deny"), before + 1);

    let (status, _) = exchange(&lg, ("notebook", "notebook-secret"), &alice, &[]);
    assert_eq!(status, 200, "the notebook still may");
    assert_eq!(exchange_record(&lg, "alice", "notebook", "allow")["policies"], json!(["exchange-notebook-only"]));
}

#[test]
fn a_forbid_on_delegation_refuses_even_the_permitted_application_and_the_record_names_it() {
    let lg = start(&[]);
    let carol = lg.token("carol", &["hr"], &[]);
    replace_policy(&lg, "identity.cedar", NOTEBOOK_ONLY, || {
        exchange(&lg, ("notebook", "notebook-secret"), &carol, &[]).0 != 200
    });
    let (status, body) = exchange(&lg, ("notebook", "notebook-secret"), &carol, &[]);
    assert_eq!((status, body["error"].as_str()), (400, Some("unauthorized_client")), "{body}");
    let record = exchange_record(&lg, "carol", "notebook", "deny");
    assert_eq!(record["policies"], json!(["no-delegation-for-hr"]));
}
