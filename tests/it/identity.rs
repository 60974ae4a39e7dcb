//! Token validation against a real (in-process) OIDC issuer: what is accepted, and every attack refused with
//! its reason.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lakegate_core::identity::{IdentityConfig, IdentityError, Verifier};

use crate::oidc::{TestIssuer, TestKey};

fn config(issuer: &TestIssuer, extra: &str) -> IdentityConfig {
    let text = format!(
        "[[issuers]]\nissuer = \"{}\"\ndiscovery = true\naudiences = [\"lakegate\"]\n\
         attribute_claims = {{ region = \"region\" }}\n{extra}",
        issuer.url
    );
    toml::from_str(&text).expect("identity config")
}

fn verifier(issuer: &TestIssuer, extra: &str) -> Verifier {
    Verifier::new(&config(issuer, extra), None).expect("verifier")
}

fn b64(v: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn rsa_and_ec_tokens_found_through_discovery_become_principals() {
    let idp = TestIssuer::start();
    let v = verifier(&idp, "");
    for kid in ["rsa-1", "ec-1"] {
        let p = v.verify(&idp.token(kid, "alice")).await.expect("valid token");
        assert_eq!(p.subject, "alice");
        assert_eq!(p.issuer, idp.url);
        assert_eq!(p.groups, vec!["analysts"]);
        assert_eq!(p.attributes.get("region").map(String::as_str), Some("EU"));
        assert!(p.actors.is_empty());
    }
}

#[tokio::test]
async fn a_static_jwks_file_works_without_discovery() {
    let idp = TestIssuer::start();
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("jwks.json");
    let jwks = jsonwebtoken::jwk::JwkSet { keys: vec![idp.key("rsa-1").jwk] };
    std::fs::write(&path, serde_json::to_string(&jwks).expect("json")).expect("write");
    let cfg: IdentityConfig = toml::from_str(&format!(
        "[[issuers]]\nissuer = \"{}\"\njwks_file = \"{}\"\naudiences = [\"lakegate\"]",
        idp.url,
        path.display()
    ))
    .expect("config");
    let v = Verifier::new(&cfg, None).expect("verifier");
    assert_eq!(v.verify(&idp.token("rsa-1", "bob")).await.expect("valid").subject, "bob");
    assert_eq!(idp.jwks_fetches(), 0, "a file issuer never calls the IdP");
}

#[tokio::test]
async fn alg_none_is_refused() {
    let idp = TestIssuer::start();
    let token = format!(
        "{}.{}.",
        b64(&serde_json::json!({"alg": "none"})),
        b64(&serde_json::Value::Object(idp.claims("alice")))
    );
    let err = verifier(&idp, "").verify(&token).await.unwrap_err();
    assert_eq!(err, IdentityError::UnsupportedAlgorithm("none".into()));
}

#[tokio::test]
async fn hs256_signed_with_the_issuers_rsa_public_key_is_refused() {
    let idp = TestIssuer::start();
    let key = idp.key("rsa-1");
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("rsa-1".into());
    let forged = jsonwebtoken::encode(
        &header,
        &idp.claims("mallory"),
        &jsonwebtoken::EncodingKey::from_secret(key.public_pem.as_bytes()),
    )
    .expect("sign");
    let err = verifier(&idp, "").verify(&forged).await.unwrap_err();
    assert_eq!(err, IdentityError::UnsupportedAlgorithm("HS256".into()));
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let idp = TestIssuer::start();
    let mut claims = idp.claims("alice");
    let past = time::OffsetDateTime::now_utc().unix_timestamp() - 3600;
    claims.insert("exp".into(), past.into());
    claims.insert("nbf".into(), (past - 60).into());
    let token = idp.sign(&idp.key("rsa-1"), Some("rsa-1"), &claims);
    assert_eq!(verifier(&idp, "").verify(&token).await.unwrap_err(), IdentityError::Expired);
}

#[tokio::test]
async fn a_token_not_valid_yet_is_refused() {
    let idp = TestIssuer::start();
    let mut claims = idp.claims("alice");
    let future = time::OffsetDateTime::now_utc().unix_timestamp() + 600;
    claims.insert("nbf".into(), future.into());
    let token = idp.sign(&idp.key("rsa-1"), Some("rsa-1"), &claims);
    assert_eq!(verifier(&idp, "").verify(&token).await.unwrap_err(), IdentityError::NotYetValid);
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused() {
    let idp = TestIssuer::start();
    let mut claims = idp.claims("alice");
    claims.insert("aud".into(), "some-other-service".into());
    let token = idp.sign(&idp.key("rsa-1"), Some("rsa-1"), &claims);
    assert_eq!(verifier(&idp, "").verify(&token).await.unwrap_err(), IdentityError::WrongAudience);
}

#[tokio::test]
async fn a_token_from_an_untrusted_issuer_is_refused() {
    let idp = TestIssuer::start();
    let other = TestIssuer::start();
    let token = other.token("rsa-1", "alice");
    assert_eq!(verifier(&idp, "").verify(&token).await.unwrap_err(), IdentityError::UntrustedIssuer(other.url.clone()));
}

#[tokio::test]
async fn a_token_claiming_another_trusted_issuer_is_refused() {
    // Both issuers are trusted; a token signed by `a` that claims to come from `b` must not verify with a's key.
    let a = TestIssuer::start();
    let b = TestIssuer::with_keys(vec![TestKey::rsa("b-1")]);
    let cfg: IdentityConfig = toml::from_str(&format!(
        "[[issuers]]\nissuer = \"{}\"\ndiscovery = true\naudiences = [\"lakegate\"]\n\
         [[issuers]]\nissuer = \"{}\"\ndiscovery = true\naudiences = [\"lakegate\"]",
        a.url, b.url
    ))
    .expect("config");
    let v = Verifier::new(&cfg, None).expect("verifier");
    let mut claims = a.claims("alice");
    claims.insert("iss".into(), b.url.clone().into());
    let token = a.sign(&a.key("rsa-1"), Some("rsa-1"), &claims);
    assert!(matches!(v.verify(&token).await.unwrap_err(), IdentityError::UnknownKey { .. }));
}

#[tokio::test]
async fn a_tampered_payload_is_refused() {
    let idp = TestIssuer::start();
    let token = idp.token("rsa-1", "alice");
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut claims = idp.claims("alice");
    claims.insert("groups".into(), serde_json::json!(["hr"]));
    parts[1] = b64(&serde_json::Value::Object(claims));
    let tampered = parts.join(".");
    assert_eq!(verifier(&idp, "").verify(&tampered).await.unwrap_err(), IdentityError::BadSignature);
}

#[tokio::test]
async fn a_token_over_the_size_limit_is_refused_before_parsing() {
    let idp = TestIssuer::start();
    let mut claims = idp.claims("alice");
    claims.insert("padding".into(), "x".repeat(20_000).into());
    let token = idp.sign(&idp.key("rsa-1"), Some("rsa-1"), &claims);
    let err = verifier(&idp, "").verify(&token).await.unwrap_err();
    assert!(matches!(err, IdentityError::TooLarge { max: 16384, .. }), "{err:?}");
    assert_eq!(idp.jwks_fetches(), 0, "refused before any key lookup");
}

#[tokio::test]
async fn an_unknown_kid_triggers_one_refresh_then_is_refused() {
    let idp = TestIssuer::start();
    let v = verifier(&idp, "jwks_min_refresh_seconds = 0");
    v.verify(&idp.token("rsa-1", "alice")).await.expect("warm the cache");
    assert_eq!(idp.jwks_fetches(), 1);
    let stranger = TestKey::rsa("nobody-knows-me");
    let token = idp.sign(&stranger, Some("nobody-knows-me"), &idp.claims("alice"));
    assert!(matches!(v.verify(&token).await.unwrap_err(), IdentityError::UnknownKey { .. }));
    assert_eq!(idp.jwks_fetches(), 2, "exactly one refresh for the unknown kid");
}

#[tokio::test]
async fn a_storm_of_unknown_kids_fetches_the_jwks_at_most_once_per_interval() {
    let idp = TestIssuer::start();
    let v = Arc::new(verifier(&idp, ""));
    let stranger = TestKey::rsa("storm");
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let token = idp.sign(&stranger, Some(&format!("bad-kid-{i}")), &idp.claims("alice"));
        let v = v.clone();
        tasks.push(tokio::spawn(async move { v.verify(&token).await }));
    }
    for t in tasks {
        assert!(matches!(t.await.expect("task"), Err(IdentityError::UnknownKey { .. })));
    }
    assert_eq!(idp.jwks_fetches(), 1, "1,000 bad kids cost the IdP a single JWKS fetch");
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_and_a_removed_key_stops_working() {
    let idp = TestIssuer::start();
    let v = verifier(&idp, "jwks_min_refresh_seconds = 0");
    let old = idp.token("rsa-1", "alice");
    v.verify(&old).await.expect("old key works");
    assert_eq!(v.cached_tokens(), 1, "the verified token is cached");
    idp.publish(TestKey::rsa("rsa-2"), true);
    let new = idp.token("rsa-2", "alice");
    v.verify(&new).await.expect("new key is fetched on first sight");
    assert!(matches!(v.verify(&old).await.unwrap_err(), IdentityError::UnknownKey { .. }));
}

#[tokio::test]
async fn a_key_the_issuer_withdraws_stops_its_tokens_though_none_names_an_unknown_kid() {
    // Rotation as IdPs do it: the new key is published beside the old one, tokens move to it, the old one is
    // withdrawn. No token then names a kid the verifier does not know, so only its periodic refresh sees the
    // withdrawal.
    let idp = TestIssuer::with_keys(vec![TestKey::rsa("rsa-1"), TestKey::rsa("rsa-2")]);
    let v = verifier(&idp, "jwks_refresh_seconds = 1");
    let (old, new) = (idp.token("rsa-1", "alice"), idp.token("rsa-2", "alice"));
    v.verify(&old).await.expect("the old key works");
    v.verify(&new).await.expect("the new key works");
    v.verify(&old).await.expect("again, from the cache");
    let fetches = idp.jwks_fetches();
    idp.publish(idp.key("rsa-2"), true);
    let start = std::time::Instant::now();
    while v.verify(&old).await.is_ok() {
        assert!(start.elapsed() < std::time::Duration::from_secs(10), "the withdrawn key still verifies");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(matches!(v.verify(&old).await.unwrap_err(), IdentityError::UnknownKey { .. }));
    v.verify(&new).await.expect("the new key still works");
    assert!(idp.jwks_fetches() > fetches, "the keys were fetched again");
}

#[tokio::test]
async fn a_cached_token_never_serves_past_its_expiry() {
    // Verified tokens are kept per CPU: count them on one.
    lakegate_core::per_cpu_cache::stay_on_this_cpu();
    let idp = TestIssuer::start();
    let v = verifier(&idp, "leeway_seconds = 0");
    let mut claims = idp.claims("alice");
    let exp = time::OffsetDateTime::now_utc().unix_timestamp() + 2;
    claims.insert("exp".into(), exp.into());
    let token = idp.sign(&idp.key("rsa-1"), Some("rsa-1"), &claims);
    v.verify(&token).await.expect("valid now");
    v.verify(&token).await.expect("valid again, from the cache");
    assert_eq!(v.cached_tokens(), 1);
    while time::OffsetDateTime::now_utc().unix_timestamp() <= exp {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(v.verify(&token).await.unwrap_err(), IdentityError::Expired);
    assert_eq!(v.cached_tokens(), 0, "the stale entry is dropped");
}

#[tokio::test]
async fn the_token_cache_is_bounded_and_keeps_no_refused_token() {
    let idp = TestIssuer::start();
    let small = Verifier::new(&IdentityConfig { token_cache_entries: 16, ..config(&idp, "") }, None).expect("verifier");
    for i in 0..200 {
        small.verify(&idp.token("rsa-1", &format!("user{i}"))).await.expect("valid");
    }
    assert!(small.cached_tokens() <= 16, "{} cached", small.cached_tokens());

    let v = verifier(&idp, "");
    let stranger = TestKey::rsa("rsa-1");
    for i in 0..50 {
        let forged = idp.sign(&stranger, Some("rsa-1"), &idp.claims(&format!("mallory{i}")));
        assert_eq!(v.verify(&forged).await.unwrap_err(), IdentityError::BadSignature);
    }
    assert_eq!(v.cached_tokens(), 0, "refused tokens are never cached");
}

#[tokio::test]
async fn cached_keys_keep_working_while_the_idp_is_down() {
    let idp = TestIssuer::start();
    let v = verifier(&idp, "jwks_min_refresh_seconds = 0");
    v.verify(&idp.token("rsa-1", "alice")).await.expect("warm");
    idp.set_available(false);
    v.verify(&idp.token("ec-1", "bob")).await.expect("cached EC key still verifies");
    let stranger = TestKey::rsa("new");
    let token = idp.sign(&stranger, Some("new"), &idp.claims("alice"));
    assert!(matches!(v.verify(&token).await.unwrap_err(), IdentityError::UnknownKey { .. }));
    v.verify(&idp.token("rsa-1", "carol")).await.expect("and the old keys survived the failed refresh");
}

#[tokio::test]
async fn an_unreachable_idp_without_cached_keys_is_keys_unavailable() {
    let idp = TestIssuer::start();
    idp.set_available(false);
    let err = verifier(&idp, "").verify(&idp.token("rsa-1", "alice")).await.unwrap_err();
    assert_eq!(err, IdentityError::KeysUnavailable(idp.url.clone()));
}

#[tokio::test]
async fn an_algorithm_outside_the_issuers_list_is_refused() {
    let idp = TestIssuer::start();
    let v = verifier(&idp, "algorithms = [\"RS256\"]");
    let err = v.verify(&idp.token("ec-1", "alice")).await.unwrap_err();
    assert!(matches!(err, IdentityError::AlgorithmNotAllowed { .. }), "{err:?}");
}

#[tokio::test]
async fn a_key_cannot_be_used_with_an_algorithm_of_another_family() {
    // The EC key's kid in a token that claims RS256: the key type does not fit the algorithm.
    let idp = TestIssuer::start();
    let token = idp.sign(&idp.key("rsa-1"), Some("ec-1"), &idp.claims("alice"));
    let err = verifier(&idp, "").verify(&token).await.unwrap_err();
    assert!(matches!(err, IdentityError::AlgorithmNotAllowed { .. }), "{err:?}");
}
