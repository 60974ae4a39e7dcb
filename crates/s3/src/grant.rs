//! GetDataAccess (S3 Access Grants' shape): credentials for one prefix and permission, decided by Cedar.
//!
//! `GET /v20180820/accessgrantsinstance/dataaccess?target=s3://bucket/prefix*&permission=READ|WRITE|READWRITE
//! &durationSeconds=&privilege=Default|Minimal`, signed with service `s3` (boto3's `s3control`) or a bearer
//! token. The gate decides `GetDataAccess` on the granting location; the permission asked for must also be
//! allowed there by the live policy; the vended scope is never wider than the caller's own.

use http::{HeaderValue, Method, Response, StatusCode};
use hyper::body::Incoming;

use super::auth::{self, Caller};
use super::backend::BoxBody;
use super::error::S3Error;
use super::service::{S3Front, caller_details, full, refuse, s3_settings, stamp};
use lakegate_core::credentials::{
    self, CredentialKind, MAX_SESSION_SECONDS, MIN_SESSION_SECONDS, Permission, Privilege, S3Location, SessionClaims,
};
use lakegate_core::gate::{Grant, Origin, Vend};
use lakegate_core::policy::Resource;
use lakegate_s3_protocol::xml::escape;

/// The request path of GetDataAccess.
pub const PATH: &str = "/v20180820/accessgrantsinstance/dataaccess";
const ACTION: &str = "GetDataAccess";
const CONTROL_NS: &str = "http://awss3control.amazonaws.com/doc/2018-08-20/";
const DEFAULT_SECONDS: i64 = 3600;

/// Why a GetDataAccess request was refused before a decision.
fn invalid(message: &'static str) -> S3Error {
    S3Error::Classify(super::classify::ClassifyError::InvalidArgument(message))
}

/// Serves GetDataAccess.
pub async fn handle(
    front: &S3Front,
    origin: &Origin,
    parts: http::request::Parts,
    _body: Incoming,
) -> Response<BoxBody> {
    let target_text = parts
        .uri
        .query()
        .and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "target").map(|(_, v)| v.into_owned()))
        .unwrap_or_default();
    let caller =
        match auth::authenticate(&front.gate, &front.keys.current(), origin, &parts, s3_settings(front), None).await {
            Ok(c) => c,
            Err(e) => return refuse(front, origin, None, ACTION, &target_text, e, &parts.method).await,
        };
    match vend(front, origin, &caller, &parts).await {
        Ok(r) => r,
        Err(e) => refuse(front, origin, Some(&caller), ACTION, &target_text, e, &parts.method).await,
    }
}

async fn vend(
    front: &S3Front,
    origin: &Origin,
    caller: &Caller,
    parts: &http::request::Parts,
) -> Result<Response<BoxBody>, S3Error> {
    if parts.method != Method::GET {
        return Err(S3Error::Classify(super::classify::ClassifyError::MethodNotAllowed));
    }
    let query = super::classify::decode_query(parts.uri.query().unwrap_or(""))?;
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    for (k, _) in &query {
        if !matches!(k.as_str(), "target" | "permission" | "durationSeconds" | "privilege" | "targetType" | "x-id") {
            return Err(invalid("unknown GetDataAccess parameter"));
        }
    }
    let target = S3Location::parse_target(param("target").unwrap_or_default())
        .map_err(|_| invalid("target must be s3://bucket/prefix*"))?;
    let permission = Permission::parse(param("permission").unwrap_or_default())
        .ok_or(invalid("permission must be READ, WRITE or READWRITE"))?;
    let privilege = match param("privilege") {
        None => Privilege::Default,
        Some(p) => Privilege::parse(p).ok_or(invalid("privilege must be Default or Minimal"))?,
    };
    let seconds = match param("durationSeconds") {
        None => DEFAULT_SECONDS,
        Some(d) => d.parse::<i64>().map_err(|_| invalid("durationSeconds must be a number"))?,
    };
    if !(i64::from(MIN_SESSION_SECONDS)..=i64::from(MAX_SESSION_SECONDS)).contains(&seconds) {
        return Err(invalid("durationSeconds must be between 900 and 43200"));
    }

    // A target that is no valid resource is the client's mistake, refused before any decision.
    location_resource(&target)?;
    let request = Vend::DataAccess { target: &target, permission, privilege, within: &caller.scope };
    let mut details = caller_details(caller);
    details.insert("operation".into(), "GetDataAccess".into());
    details.insert("target".into(), target.to_string().into());
    details.insert("permission".into(), format!("{permission:?}").into());
    let vending = front.gate.vend(origin, &caller.principal, request, details).await?;
    let Grant::DataAccess(access) = vending.grant else {
        return Err(S3Error::Backend(super::backend::BackendError::Request("the gate granted no data access".into())));
    };
    let mut slot = vending.slot;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut expires_at = now + seconds;
    if let Some(s) = &caller.session {
        // Credentials vended from credentials do not outlive them.
        expires_at = expires_at.min(s.expires_at);
    }
    let claims = SessionClaims {
        principal: caller.principal.clone(),
        scope: access.scope.clone(),
        role: None,
        session_name: None,
        issued_at: now,
        expires_at,
        kind: CredentialKind::AccessGrant,
        table: None,
    };
    let creds = credentials::mint(&front.keys.current(), &claims)
        .map_err(|e| S3Error::Backend(super::backend::BackendError::Request(e.to_string())))?;
    let text = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<GetDataAccessResult xmlns=\"{CONTROL_NS}\"><Credentials>\
         <AccessKeyId>{}</AccessKeyId><SecretAccessKey>{}</SecretAccessKey><SessionToken>{}</SessionToken>\
         <Expiration>{}</Expiration></Credentials><MatchedGrantTarget>{}</MatchedGrantTarget><Grantee>\
         <GranteeType>DIRECTORY_USER</GranteeType><GranteeIdentifier>{}</GranteeIdentifier></Grantee>\
         </GetDataAccessResult>",
        escape(&creds.access_key_id),
        escape(creds.secret_access_key.expose()),
        escape(&creds.session_token),
        creds.expiration_rfc3339(),
        escape(&access.matched_grant_target),
        escape(&caller.principal.subject),
    );
    let event = slot.event_mut();
    event.extra.insert("matched_grant_target".into(), access.matched_grant_target.clone().into());
    event.extra.insert("vended_access_key_id".into(), creds.access_key_id.clone().into());
    let outcome = event.outcome_mut();
    outcome.status = Some(200);
    outcome.bytes_out = text.len() as u64;
    slot.finish();
    let mut r = Response::new(full(text));
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    Ok(stamp(r, &origin.request_id))
}

fn location_resource(location: &S3Location) -> Result<Resource, S3Error> {
    let r = if location.is_object() {
        Resource::object(location.bucket(), location.prefix())
    } else {
        Resource::prefix(location.bucket(), location.prefix())
    };
    r.map_err(|_| invalid("target is not a valid location"))
}
