//! The token service's HTTP face: `POST /oauth2/token` (RFC 8693 token exchange), the JWKS and the OpenID
//! discovery document, so replicas, sidecars and other services can validate Lakegate tokens.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{Request, Response, StatusCode};
use serde_json::json;

use lakegate_core::gate::{Gate, GateError, Origin, event};
use lakegate_core::identity::exchange::{ActorAuth, ExchangeError, ExchangeRequest, GRANT_TYPE, TOKEN_TYPE_JWT};
use lakegate_net::http::{self as h, Body};

/// Largest token request accepted (two tokens and a few parameters).
const MAX_TOKEN_REQUEST: usize = 64 * 1024;

/// `GET /.well-known/jwks.json`
pub fn jwks(gate: &Gate, rid: &str) -> Response<Body> {
    h::json(StatusCode::OK, &gate.jwks(), rid)
}

/// `GET /.well-known/openid-configuration`
pub fn discovery(gate: &Gate, rid: &str) -> Response<Body> {
    let iss = gate.token_issuer();
    h::json(
        StatusCode::OK,
        &json!({
            "issuer": iss,
            "jwks_uri": format!("{iss}/.well-known/jwks.json"),
            "token_endpoint": format!("{iss}/oauth2/token"),
            "grant_types_supported": [GRANT_TYPE],
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["EdDSA"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        }),
        rid,
    )
}

/// `POST /oauth2/token`: one exchange, audited whatever its outcome. Errors in RFC 6749's JSON form.
pub async fn exchange<B>(gate: &Gate, origin: &Origin, req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let rid = origin.request_id.as_str();
    let basic = basic_credentials(req.headers());
    let body = match h::read_limited(req.into_body(), MAX_TOKEN_REQUEST).await {
        Ok(b) => b,
        Err(e) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string(), rid),
    };
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let request = match parse_form(&form, basic.as_ref()) {
        Ok(r) => r,
        Err(e) => {
            let ev = event(origin, "token:Exchange", "").deny(e.to_string(), Vec::<String>::new());
            if gate.record(ev).await.is_err() {
                return audit_unavailable(rid);
            }
            return oauth_error(StatusCode::BAD_REQUEST, e.code(), &e.to_string(), rid);
        }
    };
    match gate.exchange_token(origin, &request).await {
        Ok(issued) => {
            let mut body = json!({
                "access_token": issued.access_token,
                "issued_token_type": TOKEN_TYPE_JWT,
                "token_type": "Bearer",
                "expires_in": issued.expires_in,
            });
            if let Some(scope) = issued.scope {
                body["scope"] = json!(scope);
            }
            let mut resp = h::json(StatusCode::OK, &body, rid);
            resp.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
            resp
        }
        Err(GateError::Exchange(e)) => {
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            let mut resp = oauth_error(status, e.code(), &e.to_string(), rid);
            if matches!(e, ExchangeError::InvalidClient | ExchangeError::InvalidActor(_)) {
                resp.headers_mut()
                    .insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Basic realm=\"lakegate\""));
            }
            resp
        }
        // The client authenticated, but the policy does not let it act for this user (RFC 6749 section 5.2: the
        // client is not authorized for this grant). The gate has recorded which policy decided; the answer does
        // not name it.
        Err(GateError::Denied(decision)) => {
            let description = if decision.policies.is_empty() {
                "no policy permits this application to act for this user"
            } else {
                "a policy forbids this application to act for this user"
            };
            oauth_error(StatusCode::BAD_REQUEST, "unauthorized_client", description, rid)
        }
        Err(GateError::Audit(_)) => audit_unavailable(rid),
        Err(e) => oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", &e.to_string(), rid),
    }
}

/// Why a token request's form was refused before any decision.
#[derive(Debug, thiserror::Error)]
enum FormError {
    #[error("grant_type must be {GRANT_TYPE}")]
    UnsupportedGrantType,
    /// RFC 6749 section 3.2: parameters must not be repeated.
    #[error("parameter {0} is repeated")]
    Repeated(&'static str),
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("actor_token_type is required with actor_token")]
    MissingActorTokenType,
    #[error("actor_token_type is not supported")]
    UnsupportedActorTokenType,
    #[error("authenticate the actor one way: client credentials or actor_token")]
    AmbiguousActor,
}

impl FormError {
    /// The RFC 6749 error code.
    fn code(&self) -> &'static str {
        match self {
            FormError::UnsupportedGrantType => "unsupported_grant_type",
            _ => "invalid_request",
        }
    }
}

/// Reads an RFC 8693 token exchange request from its form parameters and any HTTP Basic client credentials.
fn parse_form<'a>(
    form: &'a [(String, String)],
    basic: Option<&'a (String, String)>,
) -> Result<ExchangeRequest<'a>, FormError> {
    let param = |name: &'static str| -> Result<Option<&'a str>, FormError> {
        let mut values = form.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let first = values.next();
        if values.next().is_some() { Err(FormError::Repeated(name)) } else { Ok(first) }
    };
    if param("grant_type")? != Some(GRANT_TYPE) {
        return Err(FormError::UnsupportedGrantType);
    }
    let subject_token = param("subject_token")?.ok_or(FormError::Missing("subject_token"))?;
    let subject_token_type = param("subject_token_type")?.ok_or(FormError::Missing("subject_token_type"))?;
    let actor = match (basic, param("client_id")?, param("client_secret")?, param("actor_token")?) {
        (Some((id, secret)), None, None, None) => ActorAuth::Client { id, secret },
        (None, Some(id), Some(secret), None) => ActorAuth::Client { id, secret },
        (None, None, None, Some(token)) => {
            let ty = param("actor_token_type")?.ok_or(FormError::MissingActorTokenType)?;
            if ty != TOKEN_TYPE_JWT && !ty.starts_with("urn:ietf:params:oauth:token-type:") {
                return Err(FormError::UnsupportedActorTokenType);
            }
            ActorAuth::Token(token)
        }
        (None, None, None, None) => ActorAuth::Missing,
        _ => return Err(FormError::AmbiguousActor),
    };
    // `resource` is accepted and not used: a token is scoped by its audience.
    param("resource")?;
    Ok(ExchangeRequest {
        subject_token,
        subject_token_type,
        actor,
        audience: param("audience")?,
        scope: param("scope")?,
        requested_token_type: param("requested_token_type")?,
    })
}

/// `Authorization: Basic` client credentials, form-urlencoded inside as RFC 6749 section 2.3.1 says.
fn basic_credentials(headers: &http::HeaderMap) -> Option<(String, String)> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape =
        |s: &str| url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned());
    Some((unescape(id)?, unescape(secret)?))
}

fn oauth_error(status: StatusCode, code: &str, description: &str, rid: &str) -> Response<Body> {
    let mut resp = h::json(status, &json!({"error": code, "error_description": description}), rid);
    resp.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    resp
}

fn audit_unavailable(rid: &str) -> Response<Body> {
    oauth_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "audit log unavailable", rid)
}
