//! Whose a session or an open query is, where the fronts count or check them per user.

use lakegate_core::identity::Principal;

/// A user, by issuer and subject: two issuers may each have an `alice`. An acting chain is its user's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct Owner {
    issuer: String,
    subject: String,
}

impl Owner {
    pub(crate) fn of(principal: &Principal) -> Self {
        Owner { issuer: principal.issuer.clone(), subject: principal.subject.clone() }
    }

    pub(crate) fn is(&self, principal: &Principal) -> bool {
        self.issuer == principal.issuer && self.subject == principal.subject
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use lakegate_core::identity::Principal;

    /// A user of `issuer` without groups or attributes.
    pub(crate) fn principal(issuer: &str, subject: &str) -> Principal {
        Principal {
            issuer: issuer.into(),
            subject: subject.into(),
            groups: Vec::new(),
            attributes: std::collections::BTreeMap::new(),
            token_id: None,
            expires_at: 0,
            actors: Vec::new(),
        }
    }
}
