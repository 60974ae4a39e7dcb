//! The control endpoint: the decision API (`POST /v1/authorize`), health, readiness and metrics, and the
//! token service's HTTP face ([`token`]).

pub mod token;

use std::net::SocketAddr;

use http::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};

use lakegate_core::audit::Front;
use lakegate_core::gate::{Gate, GateError, Origin, event};
use lakegate_core::metrics;
use lakegate_core::policy::{RequestContext, Resource};
use lakegate_net::http::{self as h, Body, Problem};

/// Largest decision request accepted.
const MAX_AUTHORIZE_BODY: usize = 64 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorizeRequest {
    action: String,
    resource: String,
    #[serde(default)]
    context: serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize)]
struct AuthorizeResponse<'a> {
    decision: &'static str,
    policies: Vec<String>,
    request_id: &'a str,
}

/// Routes one request.
pub async fn handle<B>(gate: &Gate, req: Request<B>, peer: SocketAddr) -> Response<Body>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let request_id = h::new_request_id();
    let span =
        tracing::info_span!("control", request_id = %request_id, method = %req.method(), path = %req.uri().path());
    let _enter = span.enter();
    let response = match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => h::json(StatusCode::OK, &serde_json::json!({"status": "ok"}), &request_id),
        (&Method::GET, "/readyz") => readiness(gate, &request_id),
        (&Method::GET, "/metrics") => {
            h::text(StatusCode::OK, "text/plain; version=0.0.4", metrics::render(), &request_id)
        }
        (&Method::POST, "/v1/authorize") => {
            let origin =
                Origin { front: Front::Control, request_id: request_id.clone(), source: Some(peer.to_string()) };
            authorize(gate, &origin, req).await
        }
        (&Method::POST, "/oauth2/token") => {
            let origin = Origin { front: Front::Token, request_id: request_id.clone(), source: Some(peer.to_string()) };
            token::exchange(gate, &origin, req).await
        }
        (&Method::GET, "/.well-known/jwks.json") => token::jwks(gate, &request_id),
        (&Method::GET, "/.well-known/openid-configuration") => token::discovery(gate, &request_id),
        (_, "/healthz" | "/readyz" | "/metrics" | "/v1/authorize" | "/oauth2/token") => {
            Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed", "", &request_id)
                .response()
        }
        (_, path) => Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            format!("no route for {}", path.chars().take(200).collect::<String>()),
            &request_id,
        )
        .response(),
    };
    metrics::REQUESTS.inc(&[("front", "control"), ("status", response.status().as_str())]);
    response
}

/// The answer to `req` while Lakegate drains, or `None` to serve it as usual.
///
/// `/readyz` turns 503 and says `draining`, so the load balancer stops sending traffic here; `/healthz` and
/// `/metrics` still answer (the process is healthy, only leaving); a request that `continues_open_work` (the next
/// page of an open query) is served; anything that would start new work is refused with 503.
pub fn while_draining<B>(req: &Request<B>, continues_open_work: bool) -> Option<Response<Body>> {
    let request_id = h::new_request_id();
    let response = match (req.method(), req.uri().path()) {
        (&Method::GET, "/readyz") => {
            h::json(StatusCode::SERVICE_UNAVAILABLE, &serde_json::json!({"status": "draining"}), &request_id)
        }
        (&Method::GET, "/healthz" | "/metrics") => return None,
        _ if continues_open_work => return None,
        _ => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting-down",
            "Shutting down",
            "this replica is draining: retry on another",
            &request_id,
        )
        .response(),
    };
    metrics::REQUESTS.inc(&[("front", "control"), ("status", response.status().as_str())]);
    Some(response)
}

fn readiness(gate: &Gate, request_id: &str) -> Response<Body> {
    let audit = gate.audit_healthy();
    let policies = gate.policy_count();
    let body = serde_json::json!({"audit": if audit { "ok" } else { "unavailable" }, "policies": policies});
    h::json(if audit { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, &body, request_id)
}

async fn authorize<B>(gate: &Gate, origin: &Origin, req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let rid = origin.request_id.as_str();
    let token = h::bearer(req.headers()).map(str::to_owned);
    let principal = match gate.authenticate(origin, token.as_deref(), "authorize", "").await {
        Ok(p) => p,
        Err(e) => return gate_problem(&e, rid),
    };
    let is_json = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
    let parsed = if !is_json {
        Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "send application/json",
            rid,
        ))
    } else {
        match h::read_limited(req.into_body(), MAX_AUTHORIZE_BODY).await {
            Ok(bytes) => serde_json::from_slice::<AuthorizeRequest>(&bytes).map_err(|e| {
                Problem::new(StatusCode::BAD_REQUEST, "invalid-request", "Invalid request", e.to_string(), rid)
            }),
            Err(h::BodyError::TooLarge(n)) => Err(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "Request body too large",
                format!("at most {n} bytes"),
                rid,
            )),
            Err(e) => {
                Err(Problem::new(StatusCode::BAD_REQUEST, "invalid-request", "Invalid request", e.to_string(), rid))
            }
        }
    };
    let request = match parsed {
        Ok(r) => r,
        Err(problem) => {
            let ev = event(origin, "authorize", "").principal(&principal).error(problem.detail.clone());
            return match gate.record(ev).await {
                Ok(()) => problem.response(),
                Err(e) => gate_problem(&e, rid),
            };
        }
    };
    let resource = match Resource::parse(&request.resource) {
        Ok(r) => r,
        Err(e) => {
            let ev = event(origin, &request.action, &request.resource).principal(&principal).error(e.to_string());
            return match gate.record(ev).await {
                Ok(()) => {
                    Problem::new(StatusCode::BAD_REQUEST, "invalid-resource", "Invalid resource", e.to_string(), rid)
                        .response()
                }
                Err(e) => gate_problem(&e, rid),
            };
        }
    };
    let context = RequestContext { front: "control", extra: request.context };
    match gate.authorize(origin, &principal, &request.action, &resource, context).await {
        Ok(allowed) => {
            let policies = allowed.decision.policy_ids();
            allowed.slot.finish();
            h::json(StatusCode::OK, &AuthorizeResponse { decision: "allow", policies, request_id: rid }, rid)
        }
        Err(GateError::Denied(decision)) => h::json(
            StatusCode::OK,
            &AuthorizeResponse { decision: "deny", policies: decision.policy_ids(), request_id: rid },
            rid,
        ),
        Err(e) => gate_problem(&e, rid),
    }
}

/// The problem form of a gate refusal.
fn gate_problem(e: &GateError, rid: &str) -> Response<Body> {
    match e {
        GateError::Identity(e) => {
            Problem::new(StatusCode::UNAUTHORIZED, "invalid-token", "Invalid token", e.to_string(), rid).response()
        }
        GateError::Policy(e) => {
            Problem::new(StatusCode::BAD_REQUEST, "invalid-request", "Invalid request", e.to_string(), rid).response()
        }
        GateError::Denied(_) => {
            Problem::new(StatusCode::FORBIDDEN, "access-denied", "Access denied", "no policy permits this", rid)
                .response()
        }
        GateError::NotGrantable(reason) => {
            Problem::new(StatusCode::FORBIDDEN, "access-denied", "Access denied", reason.clone(), rid).response()
        }
        GateError::Exchange(e) => {
            Problem::new(StatusCode::BAD_REQUEST, "invalid-request", "Invalid request", e.to_string(), rid).response()
        }
        GateError::Audit(e) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit-unavailable",
            "Audit log unavailable",
            format!("{e}; the request was not carried out"),
            rid,
        )
        .response(),
    }
}
