//! The one road every request takes: who is it (identity) -> may they (policy) -> write it down (audit).
//!
//! Fronts translate their protocol into a token, an action and a resource, call the [`Gate`], carry out what
//! it allowed, and finish the audit slot it handed them. A front never calls the policy engine directly for an
//! access decision, so no access can be decided without being recorded.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::audit::{AuditError, AuditEvent, AuditSlot, Auditor, Front};
use crate::identity::{IdentityError, Principal, TokenService, Verifier};
use crate::metrics;
use crate::policy::{Decision, PolicyEngine, PolicyError, RequestContext, Resource};

/// The core services every front composes.
#[derive(Clone, Debug)]
pub struct Gate {
    pub verifier: Verifier,
    pub policy: PolicyEngine,
    pub auditor: Auditor,
    /// The token exchange service (RFC 8693) and Lakegate's signing keys.
    pub tokens: TokenService,
}

/// Why the gate refused; fronts map this to their protocol's error form.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("access denied")]
    Denied(Box<Decision>),
    #[error("audit log unavailable: {0}")]
    Audit(#[from] AuditError),
}

/// An allowed request: the decision and the audit slot the front finishes when it is done.
#[derive(Debug)]
pub struct Allowed {
    pub decision: Decision,
    pub slot: AuditSlot,
}

/// Where a request came from, for the audit record.
#[derive(Debug, Clone)]
pub struct Origin {
    pub front: Front,
    pub request_id: String,
    pub source: Option<String>,
}

impl Gate {
    /// Validates a token; a failure is audited as a denial before it is returned.
    pub async fn authenticate(
        &self,
        origin: &Origin,
        token: Option<&str>,
        action: &str,
        resource: &str,
    ) -> Result<Principal, GateError> {
        let result = match token {
            Some(t) => self.verifier.verify(t).await,
            None => Err(IdentityError::Missing),
        };
        match result {
            Ok(p) => Ok(p),
            Err(e) => {
                metrics::TOKEN_FAILURES.inc(&[("reason", e.reason())]);
                let event = event(origin, action, resource).deny(format!("identity: {e}"), Vec::<String>::new());
                self.auditor.record(event).await?;
                Err(e.into())
            }
        }
    }

    /// Decides `action` on `resource` for `principal`. A denial is recorded and returned as an error; an
    /// allow returns a reserved audit slot, so the access cannot start unless its record can be written.
    pub async fn authorize(
        &self,
        origin: &Origin,
        principal: &Principal,
        action: &str,
        resource: &Resource,
        context: RequestContext,
    ) -> Result<Allowed, GateError> {
        self.authorize_with_details(origin, principal, action, resource, context, BTreeMap::new()).await
    }

    /// [`Gate::authorize`], with front-specific details (e.g. the S3 session's access key id and role session
    /// name) recorded in the event's `extra` whether the request is allowed or denied.
    pub async fn authorize_with_details(
        &self,
        origin: &Origin,
        principal: &Principal,
        action: &str,
        resource: &Resource,
        context: RequestContext,
        details: BTreeMap<String, serde_json::Value>,
    ) -> Result<Allowed, GateError> {
        let mut base = event(origin, action, &resource.to_string()).principal(principal);
        base.extra.extend(details);
        let context = RequestContext { front: front_name(origin.front), ..context };
        let decision = match self.policy.decide(principal, action, resource, &context) {
            Ok(d) => d,
            Err(e) => {
                metrics::DECISIONS.inc(&[("front", front_name(origin.front)), ("decision", "error")]);
                self.auditor.record(base.error(format!("policy: {e}"))).await?;
                return Err(e.into());
            }
        };
        let label = if decision.allowed { "allow" } else { "deny" };
        metrics::DECISIONS.inc(&[("front", front_name(origin.front)), ("decision", label)]);
        if !decision.allowed {
            let reason = if decision.policies.is_empty() { "no policy permits" } else { "forbidden by policy" };
            self.auditor.record(base.deny(reason, decision.policy_ids())).await?;
            return Err(GateError::Denied(Box::new(decision)));
        }
        let slot = self.auditor.begin(base.allow(decision.policy_ids())).await.inspect_err(|_| {
            metrics::AUDIT_REFUSALS.inc(&[("front", front_name(origin.front))]);
        })?;
        Ok(Allowed { decision, slot })
    }

    /// Asks the live policy without recording anything. Only for narrowing what an answer that is itself
    /// audited shows (the buckets a ListBuckets answer names, the granting prefix of GetDataAccess); never to let
    /// an access happen: that is [`Gate::authorize`]'s job. Any error reads as "no".
    pub fn permits(&self, principal: &Principal, action: &str, resource: &Resource, front: Front) -> bool {
        let context = RequestContext { front: front_name(front), ..RequestContext::default() };
        self.policy.decide(principal, action, resource, &context).is_ok_and(|d| d.allowed)
    }

    /// Records an event built by a front (errors before a decision, e.g. a malformed request).
    pub async fn record(&self, event: AuditEvent) -> Result<(), GateError> {
        self.auditor.record(event).await.map_err(|e| {
            metrics::AUDIT_REFUSALS.inc(&[("front", "any")]);
            GateError::Audit(e)
        })
    }
}

/// A fresh audit event for this origin.
pub fn event(origin: &Origin, action: &str, resource: &str) -> AuditEvent {
    let e = AuditEvent::new(origin.front, origin.request_id.clone(), action, resource);
    match &origin.source {
        Some(s) => e.source(s.clone()),
        None => e,
    }
}

/// The front's name as policies see it in `context.front`.
pub fn front_name(front: Front) -> &'static str {
    match front {
        Front::Control => "control",
        Front::S3 => "s3",
        Front::Sts => "sts",
        Front::Sql => "sql",
        Front::Token => "token",
        Front::Policy => "policy",
    }
}

/// Shared handle type for fronts.
pub type SharedGate = Arc<Gate>;
