use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::sync::Arc;

use super::*;

fn verify_now(
    ring: &KeyRing,
    creds: &VendedCredentials,
) -> Result<(Arc<SessionClaims>, SecretString), CredentialError> {
    verify(ring, &creds.access_key_id, Some(&creds.session_token), NOW)
}

#[test]
fn round_trip_returns_the_claims_and_the_minted_secret() {
    let ring = ring("k1");
    let creds = mint(&ring, &claims()).unwrap();
    let (back, secret) = verify_now(&ring, &creds).unwrap();
    assert_eq!(*back, claims());
    assert_eq!(secret.expose(), creds.secret_access_key.expose());
}

#[test]
fn credentials_have_the_shape_aws_sdks_expect() {
    let creds = mint(&ring("k1"), &claims()).unwrap();
    let akid = &creds.access_key_id;
    assert_eq!(akid.len(), 20);
    assert!(akid.starts_with("ASIA"));
    assert!(akid.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
    assert!(looks_like_lakegate_access_key_id(akid));
    let secret = creds.secret_access_key.expose();
    assert_eq!(secret.len(), 40);
    assert!(secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/'));
    assert!(creds.session_token.len() <= MAX_SESSION_TOKEN_LEN);
    assert_eq!(creds.expiration.unix_timestamp(), NOW + 3600);
    assert_eq!(creds.expiration_rfc3339(), "2026-01-01T01:00:00Z");
}

#[test]
fn the_token_hides_the_claims() {
    let creds = mint(&ring("k1"), &claims()).unwrap();
    let raw = URL_SAFE_NO_PAD.decode(&creds.session_token).unwrap();
    let raw = String::from_utf8_lossy(&raw);
    for visible in ["alice", "analysts", "sales/", "spark-job-7", "idp.example.com"] {
        assert!(!raw.contains(visible), "{visible} readable in the token");
    }
}

#[test]
fn minting_the_same_claims_twice_gives_unrelated_credentials() {
    let ring = ring("k1");
    let a = mint(&ring, &claims()).unwrap();
    let b = mint(&ring, &claims()).unwrap();
    assert_ne!(a.session_token, b.session_token);
    assert_ne!(a.access_key_id, b.access_key_id);
    assert_ne!(a.secret_access_key.expose(), b.secret_access_key.expose());
}

#[test]
fn rotation_keeps_old_credentials_valid_until_the_old_key_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    write_key(dir.path(), "2025-k");
    let old_creds = mint(&KeyRing::load(dir.path()).unwrap(), &claims()).unwrap();

    // Rotation step 1: a new key sorts last and becomes current; the old one is still accepted.
    write_key(dir.path(), "2026-k");
    let rotated = KeyRing::load(dir.path()).unwrap();
    assert_eq!(rotated.current_kid().as_str(), "2026-k");
    assert!(verify_now(&rotated, &old_creds).is_ok());
    let new_creds = mint(&rotated, &claims()).unwrap();

    // Rotation step 2: the old key is removed; its credentials die, the new ones live.
    std::fs::remove_file(dir.path().join("2025-k")).unwrap();
    let retired = KeyRing::load(dir.path()).unwrap();
    assert_eq!(verify_now(&retired, &old_creds).unwrap_err(), CredentialError::InvalidToken);
    assert!(verify_now(&retired, &new_creds).is_ok());
}

#[test]
fn two_replicas_loading_the_same_key_files_derive_the_same_credentials() {
    let dir = tempfile::tempdir().unwrap();
    write_key(dir.path(), "k1");
    let replica_a = KeyRing::load(dir.path()).unwrap();
    let replica_b = KeyRing::load(dir.path()).unwrap();
    let creds = mint(&replica_a, &claims()).unwrap();
    let (back, secret) = verify_now(&replica_b, &creds).unwrap();
    assert_eq!(*back, claims());
    assert_eq!(secret.expose(), creds.secret_access_key.expose());
}

#[test]
fn a_token_from_another_ring_is_an_invalid_token() {
    let creds = mint(&ring("k1"), &claims()).unwrap();
    // Same kid, other key material: the case a kid lookup alone would miss.
    assert_eq!(verify_now(&ring("k1"), &creds).unwrap_err(), CredentialError::InvalidToken);
    assert_eq!(verify_now(&ring("k2"), &creds).unwrap_err(), CredentialError::InvalidToken);
}

#[test]
fn every_altered_token_byte_is_an_invalid_token() {
    let ring = ring("k1");
    let creds = mint(&ring, &claims()).unwrap();
    let raw = URL_SAFE_NO_PAD.decode(&creds.session_token).unwrap();
    for position in 0..raw.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut altered = raw.clone();
            altered[position] ^= flip;
            let token = URL_SAFE_NO_PAD.encode(&altered);
            let result = verify(&ring, &creds.access_key_id, Some(&token), NOW);
            assert_eq!(result.unwrap_err(), CredentialError::InvalidToken, "byte {position} ^ {flip:#x}");
        }
    }
}

#[test]
fn every_altered_token_character_is_an_invalid_token() {
    let ring = ring("k1");
    let creds = mint(&ring, &claims()).unwrap();
    let token = creds.session_token.as_bytes();
    for position in 0..token.len() {
        // Several replacements per position, including ones that change only the unused trailing bits.
        for replacement in [b'A', b'B', b'_', b'-', b'=', b'.', b' '] {
            if token[position] == replacement {
                continue;
            }
            let mut altered = token.to_vec();
            altered[position] = replacement;
            let altered = String::from_utf8(altered).unwrap();
            let result = verify(&ring, &creds.access_key_id, Some(&altered), NOW);
            assert_eq!(result.unwrap_err(), CredentialError::InvalidToken, "char {position} -> {replacement}");
        }
    }
}

#[test]
fn every_truncation_or_extension_of_a_token_is_an_invalid_token() {
    let ring = ring("k1");
    let creds = mint(&ring, &claims()).unwrap();
    for end in 0..creds.session_token.len() {
        let cut = &creds.session_token[..end];
        let result = verify(&ring, &creds.access_key_id, Some(cut), NOW);
        let expected = if end == 0 { CredentialError::MissingToken } else { CredentialError::InvalidToken };
        assert_eq!(result.unwrap_err(), expected, "cut at {end}");
    }
    for tail in ["A", "AA", "AAAA"] {
        let longer = format!("{}{tail}", creds.session_token);
        assert_eq!(verify(&ring, &creds.access_key_id, Some(&longer), NOW).unwrap_err(), CredentialError::InvalidToken);
    }
}

#[test]
fn an_altered_access_key_id_is_an_invalid_access_key_id() {
    let ring = ring("k1");
    let creds = mint(&ring, &claims()).unwrap();
    let akid = creds.access_key_id.as_bytes();
    for position in 0..akid.len() {
        let mut altered = akid.to_vec();
        altered[position] = if akid[position] == b'Z' { b'Y' } else { b'Z' };
        let altered = String::from_utf8(altered).unwrap();
        let result = verify(&ring, &altered, Some(&creds.session_token), NOW);
        assert_eq!(result.unwrap_err(), CredentialError::InvalidAccessKeyId, "position {position}");
    }
    for other in ["", "ASIA", "AKIAIOSFODNN7EXAMPLE", &format!("{}X", creds.access_key_id)] {
        let result = verify(&ring, other, Some(&creds.session_token), NOW);
        assert_eq!(result.unwrap_err(), CredentialError::InvalidAccessKeyId, "{other:?}");
    }
}

#[test]
fn another_credentials_access_key_id_does_not_fit_this_token() {
    let ring = ring("k1");
    let a = mint(&ring, &claims()).unwrap();
    let b = mint(&ring, &claims()).unwrap();
    let result = verify(&ring, &b.access_key_id, Some(&a.session_token), NOW);
    assert_eq!(result.unwrap_err(), CredentialError::InvalidAccessKeyId);
}

#[test]
fn a_token_is_opened_once_and_checked_at_every_use() {
    // The tokens opened are kept per CPU: count them on one.
    crate::per_cpu_cache::stay_on_this_cpu();
    let ring = ring("k1");
    let creds = mint(&ring, &claims()).unwrap();
    assert!(verify_now(&ring, &creds).is_ok());
    assert!(verify_now(&ring, &creds).is_ok());
    assert_eq!(ring.opened.len(), 1, "the second use found the token opened");
    // Kept, yet still refused with another key id, before it was issued or once it expired.
    let at = |akid: &str, now| verify(&ring, akid, Some(&creds.session_token), now);
    assert_eq!(at("ASIAAAAAAAAAAAAAAAAA", NOW).unwrap_err(), CredentialError::InvalidAccessKeyId);
    assert_eq!(at(&creds.access_key_id, NOW - 301).unwrap_err(), CredentialError::InvalidToken);
    assert_eq!(at(&creds.access_key_id, NOW + 3600).unwrap_err(), CredentialError::ExpiredToken);
    // What a ring cannot open is not kept.
    let mut forged = creds.session_token.clone();
    forged.push('A');
    assert!(at(&creds.access_key_id, NOW).is_ok());
    assert_eq!(verify(&ring, &creds.access_key_id, Some(&forged), NOW).unwrap_err(), CredentialError::InvalidToken);
    assert_eq!(ring.opened.len(), 1);
}

#[test]
fn the_tokens_a_ring_keeps_stay_within_their_weight_however_large() {
    let ring = ring("k1");
    let mut claims = claims();
    claims.principal.attributes.insert("filler".into(), "x".repeat(MAX_SESSION_TOKEN_LEN / 2));
    for _ in 0..2_500 {
        let creds = mint(&ring, &claims).unwrap();
        assert!(verify_now(&ring, &creds).is_ok());
    }
    let (weight, most) = ring.opened.weight();
    assert!(weight <= most, "{weight} > {most}");
    assert!(ring.opened.len() < 2_500, "some were let go: {}", ring.opened.len());
}

#[test]
fn a_token_is_expired_from_its_expiry_second_on() {
    let ring = ring("k1");
    let creds = mint(&ring, &claims()).unwrap();
    let at = |now| verify(&ring, &creds.access_key_id, Some(&creds.session_token), now);
    assert!(at(NOW + 3599).is_ok());
    assert_eq!(at(NOW + 3600).unwrap_err(), CredentialError::ExpiredToken);
    assert_eq!(at(i64::MAX).unwrap_err(), CredentialError::ExpiredToken);
}

#[test]
fn a_token_issued_in_the_future_beyond_clock_skew_is_invalid() {
    let ring = ring("k1");
    let creds = mint(&ring, &claims()).unwrap();
    let at = |now| verify(&ring, &creds.access_key_id, Some(&creds.session_token), now);
    assert!(at(NOW - 300).is_ok());
    assert_eq!(at(NOW - 301).unwrap_err(), CredentialError::InvalidToken);
}

#[test]
fn our_access_key_id_without_its_token_is_a_missing_token() {
    let ring = ring("k1");
    let creds = mint(&ring, &claims()).unwrap();
    for token in [None, Some("")] {
        let err = verify(&ring, &creds.access_key_id, token, NOW).unwrap_err();
        assert_eq!(err, CredentialError::MissingToken);
        assert_eq!(err.s3_code(), "InvalidToken");
    }
    let err = verify(&ring, "AKIAIOSFODNN7EXAMPLE", None, NOW).unwrap_err();
    assert_eq!(err, CredentialError::InvalidAccessKeyId);
}

#[test]
fn each_credential_error_maps_to_its_s3_code() {
    assert_eq!(CredentialError::InvalidAccessKeyId.s3_code(), "InvalidAccessKeyId");
    assert_eq!(CredentialError::InvalidToken.s3_code(), "InvalidToken");
    assert_eq!(CredentialError::MissingToken.s3_code(), "InvalidToken");
    assert_eq!(CredentialError::ExpiredToken.s3_code(), "ExpiredToken");
}

#[test]
fn claims_too_large_for_a_header_fail_to_mint() {
    let mut big = claims();
    big.principal.groups = (0..1000).map(|i| format!("group-{i}")).collect();
    let err = mint(&ring("k1"), &big).unwrap_err();
    assert!(matches!(err, MintError::TokenTooLarge { len, max } if len > max && max == MAX_SESSION_TOKEN_LEN));
}

#[test]
fn the_largest_mintable_token_still_verifies() {
    let ring = ring("k1");
    let mut claims = claims();
    // Grow the claims one attribute byte at a time until minting refuses, then check the last success.
    let mut last = None;
    let mut filler = String::new();
    loop {
        filler.push('x');
        claims.principal.attributes.insert("filler".into(), filler.clone());
        match mint(&ring, &claims) {
            Ok(creds) => last = Some(creds),
            Err(MintError::TokenTooLarge { .. }) => break,
            Err(other) => panic!("{other}"),
        }
    }
    let last = last.unwrap();
    assert!(last.session_token.len() > MAX_SESSION_TOKEN_LEN - 4);
    assert!(verify(&ring, &last.access_key_id, Some(&last.session_token), NOW).is_ok());
}

#[test]
fn oversized_presented_tokens_are_refused_before_decoding() {
    let token = "A".repeat(MAX_SESSION_TOKEN_LEN + 1);
    let err = verify(&ring("k1"), "ASIAAAAAAAAAAAAAAAAA", Some(&token), NOW).unwrap_err();
    assert_eq!(err, CredentialError::InvalidToken);
}

#[test]
fn a_session_must_expire_after_it_is_issued() {
    let mut bad = claims();
    bad.expires_at = bad.issued_at;
    assert_eq!(mint(&ring("k1"), &bad).unwrap_err(), MintError::InvalidLifetime);
}

#[test]
fn debug_never_shows_the_secret_or_the_token() {
    let creds = mint(&ring("k1"), &claims()).unwrap();
    let shown = format!("{creds:?} {} {:?}", creds.secret_access_key, creds.secret_access_key);
    assert!(shown.contains(&creds.access_key_id));
    assert!(!shown.contains(creds.secret_access_key.expose()));
    assert!(!shown.contains(&creds.session_token));
}

#[test]
fn claims_serialise_with_snake_case_kinds_and_scopes() {
    let mut c = claims();
    c.kind = CredentialKind::AccessGrant;
    c.scope = Scope::Unrestricted;
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["kind"], "access_grant");
    assert_eq!(json["scope"], "unrestricted");
    assert_eq!(serde_json::from_value::<SessionClaims>(json).unwrap(), c);
}

/// Property: random garbage never panics and never verifies, whatever its shape.
#[test]
fn random_tokens_and_key_ids_never_verify_and_never_panic() {
    let ring = ring("k1");
    let genuine = mint(&ring, &claims()).unwrap();
    for round in 0..2000 {
        let len = random_below(600);
        let mut bytes = vec![0u8; len];
        aws_lc_rs::rand::fill(&mut bytes).unwrap();
        // Alternate: raw garbage as text, garbage that decodes as base64, and garbage behind a genuine header.
        let token = match round % 3 {
            0 => String::from_utf8_lossy(&bytes).into_owned(),
            1 => URL_SAFE_NO_PAD.encode(&bytes),
            _ => {
                let mut raw = URL_SAFE_NO_PAD.decode(&genuine.session_token).unwrap();
                raw.truncate(4 + 12);
                raw.extend_from_slice(&bytes);
                URL_SAFE_NO_PAD.encode(&raw)
            }
        };
        let akid = if round % 2 == 0 {
            genuine.access_key_id.clone()
        } else {
            String::from_utf8_lossy(&bytes[..len.min(20)]).into_owned()
        };
        assert!(verify(&ring, &akid, Some(&token), NOW).is_err());
    }
}
