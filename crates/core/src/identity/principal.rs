//! The authenticated caller: who they are, which groups they belong to, and who acts for them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A caller whose token was validated against a trusted issuer.
///
/// Fronts never build one from request data directly: only `identity` does, after checking a signature.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Principal {
    /// The `iss` of the token that established the user (for an exchanged token: the original issuer).
    pub issuer: String,
    /// The user name, from the issuer's configured user claim.
    pub subject: String,
    /// Group names, from the issuer's configured groups claim.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Claim-derived attributes (e.g. `region`), always as strings.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// The token's `jti`, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// Unix time (seconds) after which the token that established this principal is no longer valid.
    pub expires_at: i64,
    /// Applications acting on the user's behalf, current (outermost) actor first. Empty when the user calls
    /// directly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actors: Vec<Actor>,
}

/// One hop of a delegation chain: an application acting for the user.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Actor {
    pub issuer: String,
    pub subject: String,
}

impl Principal {
    /// Whether the principal is a member of `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// The principal as policies see it: without the id and expiry of its token, which no policy reads (the
    /// decision cache leaves them out of its key too). Two principals seen alike are decided alike, whichever
    /// tokens they came with.
    pub fn as_policies_see_it(&self) -> Principal {
        Principal { token_id: None, expires_at: 0, ..self.clone() }
    }

    /// The chain as `notebook <- portal`, for logs; empty when the user acts directly.
    pub fn on_behalf_of(&self) -> String {
        self.actors.iter().map(|a| a.subject.as_str()).collect::<Vec<_>>().join(" <- ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Principal {
        Principal {
            issuer: "https://idp".into(),
            subject: "alice".into(),
            groups: vec!["analysts".into()],
            attributes: BTreeMap::from([("region".to_owned(), "EU".to_owned())]),
            token_id: Some("t1".into()),
            expires_at: 1_000,
            actors: vec![Actor { issuer: "https://idp".into(), subject: "notebook".into() }],
        }
    }

    #[test]
    fn policies_see_a_principal_alike_whatever_its_token_and_apart_by_any_other_fact() {
        let other_token = Principal { token_id: Some("t2".into()), expires_at: 2_000, ..alice() };
        assert_eq!(alice().as_policies_see_it(), other_token.as_policies_see_it());
        let others = [
            Principal { issuer: "https://other".into(), ..alice() },
            Principal { subject: "bob".into(), ..alice() },
            Principal { groups: vec!["analysts".into(), "admins".into()], ..alice() },
            Principal { attributes: BTreeMap::from([("region".to_owned(), "US".to_owned())]), ..alice() },
            Principal { actors: Vec::new(), ..alice() },
            Principal { actors: vec![Actor { issuer: "https://idp".into(), subject: "portal".into() }], ..alice() },
        ];
        for other in others {
            assert_ne!(alice().as_policies_see_it(), other.as_policies_see_it(), "{other:?}");
        }
    }
}
