//! The one road every request takes: who is it (identity) -> may they (policy) -> write it down (audit).
//!
//! The gate is the only door to the policy engine and the audit writer: its fields are private, and it has one
//! method per kind of decision. Each method decides, counts the decision in `lakegate_decisions_total` (by front
//! and outcome) and records it, naming the policies that decided or saying that it was a default deny.
//!
//! | decision | method |
//! |---|---|
//! | an object or prefix access, a decision API question | [`Gate::authorize`] |
//! | the data filters of the tables of one SQL statement | [`Gate::statement_policy`], then [`Gate::admit_statement`] or [`Gate::refuse_statement`] |
//! | what a listing may show (ListBuckets, a SQL catalog query, an Iceberg listing) | [`Gate::list_buckets`], [`Gate::list_catalog`], [`Gate::list_visible`] |
//! | whether a caller may see into one bucket (S3 CreateBucket on a bucket that exists) | [`Gate::see_bucket`] |
//! | vending credentials (STS, GetDataAccess, full-table credentials) | [`Gate::vend`] |
//! | an S3 access made with full-table credentials (decided as an access to their table) | [`Gate::authorize_table_files`] |
//! | exchanging a token (RFC 8693) | [`Gate::exchange_token`] |
//!
//! Fronts translate their protocol into these calls, carry out what was allowed, and finish the audit slot they
//! were handed. What is not a decision has narrow accessors: audit health and the policy count for readiness,
//! the JWKS and issuer for the token endpoint, a catalog snapshot for start-up.

mod exchange;
mod listing;
mod statement;
mod vend;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::audit::{AuditError, AuditEvent, AuditSlot, Auditor, Front};
use crate::identity::exchange::ExchangeError;
use crate::identity::{IdentityError, KeptToken, Principal, TokenService, Verifier};
use crate::metrics;
use crate::policy::catalog::Catalog;
use crate::policy::{Decision, PolicyEngine, PolicyError, PolicyStore, RequestContext, Resource};

pub use listing::{BucketCandidate, BucketListing, CatalogListing, Listing, ListingCandidate, VisibleTable};
pub use statement::{FilterCache, Refusal, StatementDecision, StatementPolicy};
pub use vend::{Grant, TableAsk, TableShape, Vend, Vending};

/// The core services every front composes, reachable only through the gate's decisions.
#[derive(Clone, Debug)]
pub struct Gate {
    verifier: Verifier,
    policy: PolicyEngine,
    auditor: Auditor,
    /// The token exchange service (RFC 8693) and Lakegate's signing keys.
    tokens: TokenService,
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
    /// The policy lets the principal ask, but not for this much: full-table credentials for a principal with
    /// row filters or masks, a GetDataAccess permission the policy does not allow at the target, credentials
    /// wider than the caller's own. Recorded as a denial.
    #[error("{0}")]
    NotGrantable(String),
    /// The token exchange itself was refused (client, subject token, audience, scope, chain length).
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
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

/// The governed catalog of the policy set in force when the snapshot was taken; it does not change while held.
#[derive(Debug, Clone)]
pub struct CatalogSnapshot(Arc<PolicyStore>);

impl std::ops::Deref for CatalogSnapshot {
    type Target = Catalog;

    fn deref(&self) -> &Catalog {
        self.0.catalog()
    }
}

impl Gate {
    /// A gate over these services. Only the binary's start-up builds one; fronts receive it shared.
    pub fn new(verifier: Verifier, policy: PolicyEngine, auditor: Auditor, tokens: TokenService) -> Self {
        Gate { verifier, policy, auditor, tokens }
    }

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
            Err(e) => Err(self.refuse_identity(origin, action, resource, e).await),
        }
    }

    /// Whether a token a session authenticated with still holds (not expired, its issuer and signing key still
    /// trusted), for a front that keeps a session open across requests; a failure is audited as a denial (from
    /// `origin`, made only then) before it is returned, as [`Gate::authenticate`]'s. A token seen before costs a
    /// cache lookup.
    pub async fn reauthenticate(
        &self,
        origin: impl FnOnce() -> Origin,
        token: &KeptToken,
        action: &str,
        resource: &str,
    ) -> Result<(), GateError> {
        match self.verifier.check(token).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.refuse_identity(&origin(), action, resource, e).await),
        }
    }

    /// Whether Lakegate still trusts every issuer `principal` rests on ([`Verifier::vouches_for`]): for a front
    /// that takes the principal from credentials Lakegate vended rather than from a token it verifies now.
    pub fn vouches_for(&self, principal: &Principal) -> Result<(), IdentityError> {
        self.verifier.vouches_for(principal)
    }

    /// Counts and records a refused identity; the error to return (the audit's, if the record cannot be written).
    async fn refuse_identity(&self, origin: &Origin, action: &str, resource: &str, e: IdentityError) -> GateError {
        metrics::TOKEN_FAILURES.inc(&[("reason", e.reason())]);
        let event = event(origin, action, resource).deny(format!("identity: {e}"), Vec::<String>::new());
        match self.write(origin.front, event).await {
            Ok(()) => e.into(),
            Err(audit) => audit,
        }
    }

    /// Decides `action` on `resource` (an object, a prefix, a bucket, or any resource of the decision API) for
    /// `principal`. A denial is recorded and returned as an error; an allow returns a reserved audit slot, so the
    /// access cannot start unless its record can be written.
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
        let mut base = event(origin, action, resource.to_string()).principal(principal);
        base.extra.extend(details);
        let context = RequestContext { front: front_name(origin.front), ..context };
        let decision = self.policy.decide(principal, action, resource, &context);
        self.settle(origin, base, decision).await
    }

    /// [`Gate::authorize_with_details`] for a front whose operations are not Cedar actions one to one (the
    /// Iceberg catalog decides `LoadTable` with `SelectTable`): recorded under `operation`, with the Cedar
    /// action that decided it in `extra.policy_action`.
    pub async fn authorize_operation(
        &self,
        origin: &Origin,
        principal: &Principal,
        operation: &str,
        action: &str,
        resource: &Resource,
        details: BTreeMap<String, serde_json::Value>,
    ) -> Result<Allowed, GateError> {
        let mut base = event(origin, operation, resource.to_string()).principal(principal);
        base.extra.extend(details);
        let base = base.extra("policy_action", action);
        let context = RequestContext { front: front_name(origin.front), ..RequestContext::default() };
        let decision = self.policy.decide(principal, action, resource, &context);
        self.settle(origin, base, decision).await
    }

    /// Several Cedar questions that must all be allowed for one operation (renaming a table takes it from one
    /// name and creates it under another), decided against one policy set and recorded once under `operation`
    /// on `resource`: an allow names the permits of every answer, a denial the first question refused.
    pub async fn authorize_all(
        &self,
        origin: &Origin,
        principal: &Principal,
        operation: &str,
        resource: &str,
        questions: &[(&str, Resource)],
    ) -> Result<Allowed, GateError> {
        let store = self.policy.store();
        let context = RequestContext { front: front_name(origin.front), ..RequestContext::default() };
        let base = event(origin, operation, resource).principal(principal);
        let mut policies = Vec::new();
        let mut last = None;
        for (action, r) in questions {
            let decision = crate::policy::decide_with(&store, principal, action, r, &context);
            match allowed(decision) {
                Ok(d) => {
                    policies.extend(d.policy_ids());
                    last = Some(d);
                }
                Err(not) => {
                    let base = base.extra("refused", format!("{action} on {r}"));
                    return Err(self.refuse(origin, base, not).await);
                }
            }
        }
        let Some(decision) = last else {
            let e = PolicyError::Request("no question to decide".into());
            return Err(self.refuse(origin, base, NotAllowed::Failed(e)).await);
        };
        policies.sort();
        policies.dedup();
        Self::count(origin.front, "allow");
        let slot = self.begin(origin.front, base.allow(policies)).await?;
        Ok(Allowed { decision, slot })
    }

    /// Records an event built by a front for a refusal that came before any decision (a malformed request, a
    /// bad signature, a credential used outside its scope).
    pub async fn record(&self, event: AuditEvent) -> Result<(), GateError> {
        self.write(event.front, event).await
    }

    /// Whether the audit log is writing (readiness).
    pub fn audit_healthy(&self) -> bool {
        self.auditor.healthy()
    }

    /// The audit file being written (the start-up banner).
    pub fn audit_file(&self) -> std::path::PathBuf {
        self.auditor.current_file()
    }

    /// Waits until everything recorded so far is on disk (shutdown).
    pub async fn flush_audit(&self) -> Result<(), AuditError> {
        self.auditor.flush().await
    }

    /// How many policies are in force (readiness).
    pub fn policy_count(&self) -> usize {
        self.policy.store().len()
    }

    /// The public keys of the token service, for `/.well-known/jwks.json`.
    pub fn jwks(&self) -> jsonwebtoken::jwk::JwkSet {
        self.tokens.signer().jwks()
    }

    /// The `iss` of tokens the token service issues, for the discovery document.
    pub fn token_issuer(&self) -> &str {
        self.tokens.issuer()
    }

    /// The governed catalog in force now (opening backends at start-up).
    pub fn catalog(&self) -> CatalogSnapshot {
        CatalogSnapshot(self.policy.store())
    }

    /// Counts one decision of `front` with `outcome` (`allow`, `deny` or `error`).
    fn count(front: Front, outcome: &str) {
        metrics::DECISIONS.inc(&[("front", front_name(front)), ("decision", outcome)]);
    }

    /// Counts, records and returns the outcome of one Cedar decision: a denial or a policy error is recorded
    /// and returned as an error; an allow reserves the audit slot of the access.
    async fn settle(
        &self,
        origin: &Origin,
        base: AuditEvent,
        decision: Result<Decision, PolicyError>,
    ) -> Result<Allowed, GateError> {
        match allowed(decision) {
            Ok(decision) => {
                Self::count(origin.front, "allow");
                let slot = self.begin(origin.front, base.allow(decision.policy_ids())).await?;
                Ok(Allowed { decision, slot })
            }
            Err(not) => Err(self.refuse(origin, base, not).await),
        }
    }

    /// Counts and records a decision that did not allow; the error to return (the audit failure if the record
    /// could not be written).
    async fn refuse(&self, origin: &Origin, base: AuditEvent, not: NotAllowed) -> GateError {
        let (event, error) = match not {
            NotAllowed::Failed(e) => {
                Self::count(origin.front, "error");
                (base.error(format!("policy: {e}")), GateError::Policy(e))
            }
            NotAllowed::Denied(decision) => {
                Self::count(origin.front, "deny");
                let event = base.deny(denial_reason(&decision), decision.policy_ids());
                (event, GateError::Denied(Box::new(decision)))
            }
        };
        match self.write(origin.front, event).await {
            Ok(()) => error,
            Err(e) => e,
        }
    }

    /// Reserves room for the record of an access about to start.
    async fn begin(&self, front: Front, event: AuditEvent) -> Result<AuditSlot, GateError> {
        self.auditor.begin(event).await.map_err(|e| {
            metrics::AUDIT_REFUSALS.inc(&[("front", front_name(front))]);
            GateError::Audit(e)
        })
    }

    /// Writes a one-shot record (a refusal, or a decision that needs no access).
    async fn write(&self, front: Front, event: AuditEvent) -> Result<(), GateError> {
        self.auditor.record(event).await.map_err(|e| {
            metrics::AUDIT_REFUSALS.inc(&[("front", front_name(front))]);
            GateError::Audit(e)
        })
    }
}

/// A decision that did not allow.
enum NotAllowed {
    Denied(Decision),
    Failed(PolicyError),
}

/// Splits a decision into an allow and everything else.
fn allowed(decision: Result<Decision, PolicyError>) -> Result<Decision, NotAllowed> {
    match decision {
        Ok(d) if d.allowed => Ok(d),
        Ok(d) => Err(NotAllowed::Denied(d)),
        Err(e) => Err(NotAllowed::Failed(e)),
    }
}

/// The reason recorded for a denial: a default deny says so, a forbid is named in `policies`.
fn denial_reason(decision: &Decision) -> String {
    if decision.policies.is_empty() { DEFAULT_DENY.to_owned() } else { "forbidden by policy".to_owned() }
}

/// How a record says that no policy permitted the request. Fronts use it for refusals of their own that are
/// denials by default, so an auditor can look for one phrase.
pub const DEFAULT_DENY: &str = "default deny: no policy permits this";

/// A fresh audit event for this origin.
pub fn event(origin: &Origin, action: &str, resource: impl Into<String>) -> AuditEvent {
    let e = AuditEvent::new(origin.front, origin.request_id.clone(), action, resource);
    match &origin.source {
        Some(s) => e.source(s.clone()),
        None => e,
    }
}

/// The front's name as policies see it in `context.front` and metrics label it.
pub fn front_name(front: Front) -> &'static str {
    match front {
        Front::Control => "control",
        Front::S3 => "s3",
        Front::Sts => "sts",
        Front::Sql => "sql",
        Front::Token => "token",
        Front::Policy => "policy",
        Front::Catalog => "catalog",
    }
}

/// Shared handle type for fronts.
pub type SharedGate = Arc<Gate>;
