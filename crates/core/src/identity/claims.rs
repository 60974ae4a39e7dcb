//! Claim mapping: from a verified token's claims to the principal's user, groups and attributes.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{IdentityError, IssuerConfig, Principal};

/// Registered and protocol claims that are never principal attributes.
const RESERVED: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "azp",
    "act",
    "may_act",
    "scope",
    "client_id",
    "groups",
    "auth_time",
    "nonce",
    "at_hash",
    "sid",
    "typ",
];

/// Maps verified claims to a principal according to the issuer's configuration.
pub fn to_principal(cfg: &IssuerConfig, claims: &Map<String, Value>) -> Result<Principal, IdentityError> {
    let subject = match lookup(claims, &cfg.user_claim) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => return Err(IdentityError::InvalidClaim(cfg.user_claim.clone())),
        None => return Err(IdentityError::MissingClaim(cfg.user_claim.clone())),
    };
    let groups = match cfg.groups_claim.as_deref().and_then(|path| lookup(claims, path)) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| IdentityError::InvalidClaim(cfg.groups_claim.clone().unwrap_or_default()))?,
        Some(Value::String(s)) => {
            s.split(cfg.groups_delimiter.as_str()).map(str::trim).filter(|g| !g.is_empty()).map(str::to_owned).collect()
        }
        Some(_) => return Err(IdentityError::InvalidClaim(cfg.groups_claim.clone().unwrap_or_default())),
    };
    if let Some(native) = cfg.native {
        return native_principal(cfg, claims, subject, groups, native.max_depth);
    }
    let mut attributes = BTreeMap::new();
    if cfg.all_claims_as_attributes {
        for (name, value) in claims {
            if RESERVED.contains(&name.as_str()) || Some(name.as_str()) == cfg.groups_claim.as_deref() {
                continue;
            }
            if let Some(text) = scalar(value) {
                attributes.insert(name.clone(), text);
            }
        }
    }
    for (attribute, path) in &cfg.attribute_claims {
        if let Some(text) = lookup(claims, path).and_then(scalar) {
            attributes.insert(attribute.clone(), text);
        }
    }
    let expires_at =
        claims.get("exp").and_then(Value::as_i64).ok_or_else(|| IdentityError::MissingClaim("exp".into()))?;
    Ok(Principal {
        issuer: cfg.issuer.clone(),
        subject,
        groups,
        attributes,
        token_id: claims.get("jti").and_then(Value::as_str).map(str::to_owned),
        expires_at,
        actors: Vec::new(),
    })
}

/// A Lakegate token: attributes under `attrs`, the user's original issuer in `orig_iss`, actors in `act`.
fn native_principal(
    cfg: &IssuerConfig,
    claims: &Map<String, Value>,
    subject: String,
    groups: Vec<String>,
    max_depth: usize,
) -> Result<Principal, IdentityError> {
    let attributes = match claims.get("attrs") {
        None => BTreeMap::new(),
        Some(Value::Object(map)) => map.iter().filter_map(|(k, v)| scalar(v).map(|v| (k.clone(), v))).collect(),
        Some(_) => return Err(IdentityError::InvalidClaim("attrs".into())),
    };
    let issuer = claims.get("orig_iss").and_then(Value::as_str).unwrap_or(&cfg.issuer).to_owned();
    let actors = super::exchange::actors_from_claim(claims.get("act"), max_depth)?;
    let expires_at =
        claims.get("exp").and_then(Value::as_i64).ok_or_else(|| IdentityError::MissingClaim("exp".into()))?;
    Ok(Principal {
        issuer,
        subject,
        groups,
        attributes,
        token_id: claims.get("jti").and_then(Value::as_str).map(str::to_owned),
        expires_at,
        actors,
    })
}

/// Follows a dotted path (`realm_access.roles`) through nested objects.
fn lookup<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut segments = path.split('.');
    let mut current = claims.get(segments.next()?)?;
    for segment in segments {
        current = current.as_object()?.get(segment)?;
    }
    Some(current)
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer(extra: &str) -> IssuerConfig {
        toml::from_str(&format!(
            "issuer = \"https://idp\"\njwks_url = \"https://idp/jwks\"\naudiences = [\"lg\"]\n{extra}"
        ))
        .expect("issuer config")
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn groups_claim_may_be_a_delimited_string() {
        let cfg = issuer("groups_claim = \"roles\"\ngroups_delimiter = \" \"");
        let p = to_principal(&cfg, &claims(serde_json::json!({"sub": "a", "exp": 1, "roles": "x  y"}))).expect("maps");
        assert_eq!(p.groups, vec!["x", "y"]);
    }

    #[test]
    fn nested_claims_map_to_attributes_by_dotted_path() {
        let cfg = issuer("user_claim = \"email\"\n[attribute_claims]\nregion = \"org.region\"");
        let p = to_principal(
            &cfg,
            &claims(serde_json::json!({"sub": "1", "email": "a@x", "exp": 1, "org": {"region": "EU"}})),
        )
        .expect("maps");
        assert_eq!(p.subject, "a@x");
        assert_eq!(p.attributes.get("region").map(String::as_str), Some("EU"));
    }

    #[test]
    fn a_non_string_groups_entry_is_refused() {
        let cfg = issuer("");
        let err = to_principal(&cfg, &claims(serde_json::json!({"sub": "a", "exp": 1, "groups": ["x", 3]})));
        assert_eq!(err.unwrap_err(), IdentityError::InvalidClaim("groups".into()));
    }
}
