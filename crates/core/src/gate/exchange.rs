//! Exchanging a token (RFC 8693): may this application act for this user?
//!
//! The token service checks what it can check on its own (the actor's credentials, the subject token, the
//! audience, scope and chain length); the policy then decides `token:Exchange` with the subject's user as
//! principal, the acting application as `context.actor` (the whole chain as `context.actors`) and the audience
//! of the token as resource. Only an allowed exchange is signed, and only once its record has room.

use super::{Allowed, Gate, GateError, Origin, event, front_name};
use crate::identity::exchange::{ExchangeRequest, Issued};
use crate::policy::{RequestContext, Resource};

/// The Cedar action (and audit action) of a token exchange.
pub const EXCHANGE: &str = "token:Exchange";

impl Gate {
    /// Performs one exchange: checks it, decides it, records it, and signs the token if it was allowed.
    pub async fn exchange_token(&self, origin: &Origin, request: &ExchangeRequest<'_>) -> Result<Issued, GateError> {
        let pending = match self.tokens.prepare(&self.verifier, request).await {
            Ok(p) => p,
            Err(e) => {
                // No identity to decide for (a bad client secret, a forged subject token...): an identity refusal,
                // like a bad bearer token elsewhere, not a policy decision.
                let ev = event(origin, EXCHANGE, "").deny(e.to_string(), Vec::<String>::new());
                self.write(origin.front, ev).await?;
                return Err(e.into());
            }
        };
        let resource = Resource::Audience(pending.audience.clone());
        let ev = event(origin, EXCHANGE, resource.to_string()).principal(&pending.principal);
        let context = RequestContext { front: front_name(origin.front), ..Default::default() };
        let decision = self.policy.decide(&pending.principal, EXCHANGE, &resource, &context);
        let Allowed { mut slot, .. } = self.settle(origin, ev, decision).await?;
        match self.tokens.issue(pending) {
            Ok(issued) => {
                slot.event_mut().outcome_mut().status = Some(200);
                slot.finish();
                Ok(issued)
            }
            Err(e) => {
                let event = slot.event_mut();
                event.reason = Some(e.to_string());
                event.outcome_mut().status = Some(e.status());
                slot.finish();
                Err(e.into())
            }
        }
    }
}
