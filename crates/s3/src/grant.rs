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
use lakegate_core::audit::Front;
use lakegate_core::credentials::{
    self, CredentialKind, MAX_SESSION_SECONDS, MIN_SESSION_SECONDS, Permission, Privilege, S3Location, Scope,
    SessionClaims,
};
use lakegate_core::gate::Origin;
use lakegate_core::policy::{RequestContext, Resource};
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

    let Some(granting) = granting_location(front, caller, &target, permission) else {
        // Decided on the target through the gate, so the refusal is recorded like any other.
        let allowed = decide(front, origin, caller, &target).await?;
        // Policy lets the caller ask here but does not allow the permission asked for: one event, a denial.
        let mut slot = allowed.slot;
        let event = slot.event_mut();
        event.decision = lakegate_core::audit::Decision::Deny;
        event.reason = Some(format!("the live policy does not allow {permission:?} on the target"));
        event.outcome_mut().status = Some(403);
        event.outcome_mut().error_code = Some("AccessDenied".into());
        slot.finish();
        return Err(S3Error::Gate(lakegate_core::gate::GateError::Denied(Box::new(allowed.decision))));
    };
    let allowed = decide(front, origin, caller, &granting).await?;
    let mut slot = allowed.slot;

    let mut access = credentials::resolve_data_access(&target, permission, privilege, &granting)
        .map_err(|_| invalid("the target is not inside the granting location"))?;
    // Never wider than the caller's own credential: fall back to exactly the target, else refuse.
    if !within(&caller.scope, &access.scope) {
        access = credentials::resolve_data_access(&target, permission, Privilege::Minimal, &granting)
            .map_err(|_| invalid("the target is not inside the granting location"))?;
        if !within(&caller.scope, &access.scope) {
            let event = slot.event_mut();
            event.decision = lakegate_core::audit::Decision::Deny;
            event.reason = Some("wider than the caller's own credential scope".into());
            event.outcome_mut().status = Some(403);
            slot.finish();
            return Err(S3Error::Gate(lakegate_core::gate::GateError::Denied(Box::new(allowed.decision))));
        }
    }
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
    event.extra.insert("operation".into(), "GetDataAccess".into());
    event.extra.insert("target".into(), target.to_string().into());
    event.extra.insert("permission".into(), format!("{permission:?}").into());
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

/// The widest location at or above `target` where the live policy allows both GetDataAccess and `permission`.
fn granting_location(
    front: &S3Front,
    caller: &Caller,
    target: &S3Location,
    permission: Permission,
) -> Option<S3Location> {
    let prefix = target.prefix();
    let mut candidates: Vec<String> = vec![String::new()];
    candidates.extend(prefix.match_indices('/').map(|(i, _)| prefix.get(..=i).unwrap_or_default().to_owned()));
    if target.is_object() {
        candidates.push(prefix.to_owned());
    }
    candidates.into_iter().find_map(|p| {
        let text = format!("s3://{}/{p}", target.bucket());
        let location = if p.is_empty() || p.ends_with('/') {
            S3Location::parse_prefix(&text).ok()?
        } else {
            S3Location::parse_target(&text).ok()?
        };
        let resource = location_resource(&location).ok()?;
        let gate = &front.gate;
        let granted = gate.permits(&caller.principal, ACTION, &resource, Front::S3);
        (granted && permission_allowed(front, caller, &location, permission)).then_some(location)
    })
}

/// Whether the live policy allows `permission` at `location`: reading (list and get) and/or writing (put).
fn permission_allowed(front: &S3Front, caller: &Caller, location: &S3Location, permission: Permission) -> bool {
    let bucket = location.bucket();
    // A probe object inside the location stands for "any object under it"; for an object target, the object.
    let probe_key = if location.is_object() { location.prefix().to_owned() } else { format!("{}*", location.prefix()) };
    let Ok(object) = Resource::object(bucket, &probe_key) else { return false };
    let gate = &front.gate;
    let p = &caller.principal;
    let read = || {
        gate.permits(p, "s3:GetObject", &object, Front::S3)
            && (location.is_object()
                || Resource::prefix(bucket, location.prefix())
                    .is_ok_and(|r| gate.permits(p, "s3:ListBucket", &r, Front::S3)))
    };
    let write = || gate.permits(p, "s3:PutObject", &object, Front::S3);
    match permission {
        Permission::Read => read(),
        Permission::Write => write(),
        Permission::ReadWrite => read() && write(),
    }
}

/// Decides `GetDataAccess` on `location` through the gate (audited like any decision).
async fn decide(
    front: &S3Front,
    origin: &Origin,
    caller: &Caller,
    location: &S3Location,
) -> Result<lakegate_core::gate::Allowed, S3Error> {
    let resource = location_resource(location)?;
    Ok(front
        .gate
        .authorize_with_details(
            origin,
            &caller.principal,
            ACTION,
            &resource,
            RequestContext::default(),
            caller_details(caller),
        )
        .await?)
}

fn location_resource(location: &S3Location) -> Result<Resource, S3Error> {
    let r = if location.is_object() {
        Resource::object(location.bucket(), location.prefix())
    } else {
        Resource::prefix(location.bucket(), location.prefix())
    };
    r.map_err(|_| invalid("target is not a valid location"))
}

/// Whether `inner` allows nothing `outer` does not.
fn within(outer: &Scope, inner: &Scope) -> bool {
    outer.clone().narrow(inner.clone()) == *inner
}
