//! STS on the S3 port (Query protocol): `AssumeRoleWithWebIdentity` turns an OIDC token into Lakegate session
//! credentials for a configured role profile; `GetCallerIdentity` says who a set of credentials belongs to.
//!
//! The same port serves both because `AWS_ENDPOINT_URL` points every AWS SDK client, S3 and STS alike, at one
//! endpoint. STS requests are `POST /` with a form body (or `GET /?Action=...`), which S3 never uses.

use std::collections::{BTreeMap, HashMap};

use http::{HeaderValue, Response, StatusCode};
use hyper::body::Incoming;
use sha2::{Digest, Sha256};

use super::auth::{self, SigV4Settings};
use super::backend::BoxBody;
use super::service::{S3Front, full, stamp};
use lakegate_core::audit::Front;
use lakegate_core::credentials::{self, CredentialKind, RoleError, SessionClaims};
use lakegate_core::gate::{self, GateError, Origin, Vend};
use lakegate_core::identity::IdentityError;
use lakegate_net::http::read_limited;
use lakegate_s3_protocol::sts::valid_session_name;
use lakegate_s3_protocol::xml::escape;

/// Largest STS request body (a web identity token is at most a few KiB; the identity module caps it).
const MAX_STS_BODY: usize = 64 * 1024;
const STS_NS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

/// An STS error: code, status, message.
#[derive(Debug)]
struct StsError {
    code: &'static str,
    status: StatusCode,
    message: String,
    /// Whether the gate has recorded the refusal already (it records its own: identity, policy, audit).
    recorded: bool,
}

impl StsError {
    fn new(code: &'static str, status: u16, message: impl Into<String>) -> Self {
        Self {
            code,
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            message: message.into(),
            recorded: false,
        }
    }

    fn validation(message: impl Into<String>) -> Self {
        Self::new("ValidationError", 400, message)
    }
}

impl From<RoleError> for StsError {
    fn from(e: RoleError) -> Self {
        let status = if e.sts_code() == "AccessDenied" { 403 } else { 400 };
        Self::new(e.sts_code(), status, e.to_string())
    }
}

impl From<GateError> for StsError {
    fn from(e: GateError) -> Self {
        let e = match e {
            GateError::Identity(IdentityError::Expired) => {
                Self::new("ExpiredTokenException", 400, "the web identity token has expired")
            }
            GateError::Identity(i) => Self::new("InvalidIdentityToken", 400, i.to_string()),
            GateError::Audit(_) => Self::new("ServiceUnavailable", 503, "the audit log is unavailable"),
            GateError::Denied(_) => Self::new("AccessDenied", 403, "not authorized to assume this role"),
            GateError::Policy(_) | GateError::NotGrantable(_) | GateError::Exchange(_) => {
                Self::new("AccessDenied", 403, "Access Denied")
            }
        };
        Self { recorded: true, ..e }
    }
}

/// Serves an STS request.
pub async fn handle(front: &S3Front, origin: Origin, parts: http::request::Parts, body: Incoming) -> Response<BoxBody> {
    let origin = Origin { front: Front::Sts, ..origin };
    let bytes = match read_limited(body, MAX_STS_BODY).await {
        Ok(b) => b,
        Err(e) => return error(front, &origin, "sts:Request", "", StsError::validation(e.to_string())).await,
    };
    let mut params: HashMap<String, String> = HashMap::new();
    let sources: [&[u8]; 2] = [parts.uri.query().unwrap_or("").as_bytes(), &bytes];
    for source in sources {
        for (k, v) in form_urlencoded::parse(source) {
            if params.insert(k.into_owned(), v.into_owned()).is_some() {
                return error(front, &origin, "sts:Request", "", StsError::validation("a parameter is repeated")).await;
            }
        }
    }
    match params.get("Action").map(String::as_str) {
        Some("AssumeRoleWithWebIdentity") => assume_role(front, &origin, &params).await,
        Some("GetCallerIdentity") => caller_identity(front, &origin, &parts, &bytes).await,
        _ => {
            let e =
                StsError::new("InvalidAction", 400, "only AssumeRoleWithWebIdentity and GetCallerIdentity are served");
            error(front, &origin, "sts:Request", "", e).await
        }
    }
}

async fn assume_role(front: &S3Front, origin: &Origin, params: &HashMap<String, String>) -> Response<BoxBody> {
    const ACTION: &str = "sts:AssumeRoleWithWebIdentity";
    let role_arn = params.get("RoleArn").cloned().unwrap_or_default();
    let result = async {
        let session_name =
            params.get("RoleSessionName").ok_or_else(|| StsError::validation("RoleSessionName is required"))?;
        if !valid_session_name(session_name) {
            return Err(StsError::validation("RoleSessionName must be 2 to 64 of [A-Za-z0-9+=,.@_-]"));
        }
        if params.contains_key("Policy") || params.contains_key("PolicyArns.member.1") {
            return Err(StsError::validation("session policies are not supported; roles narrow credentials"));
        }
        let role = credentials::select_role(&front.roles, &role_arn)?;
        let requested = match params.get("DurationSeconds") {
            Some(d) => Some(d.parse::<i64>().map_err(|_| StsError::validation("DurationSeconds must be a number"))?),
            None => None,
        };
        let duration = role.session_duration(requested)?;
        let token = params.get("WebIdentityToken").map(String::as_str);
        let principal = front.gate.authenticate(origin, token, ACTION, &role_arn).await?;
        let details = BTreeMap::from([
            ("role_arn".to_owned(), serde_json::Value::from(role_arn.clone())),
            ("role_session_name".to_owned(), serde_json::Value::from(session_name.clone())),
        ]);
        let vending = front.gate.vend(origin, &principal, Vend::Role(role.name()), details).await?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = SessionClaims {
            principal,
            scope: role.scope(),
            role: Some(role.name().to_owned()),
            session_name: Some(session_name.clone()),
            issued_at: now,
            expires_at: now + i64::from(duration),
            kind: CredentialKind::Sts,
            table: None,
        };
        let mut slot = vending.slot;
        match credentials::mint(&front.keys.current(), &claims) {
            Ok(creds) => Ok((claims, creds, role.role_name().to_owned(), slot)),
            Err(e) => {
                let event = slot.event_mut();
                event.reason = Some(e.to_string());
                event.outcome_mut().status = Some(500);
                event.outcome_mut().error_code = Some("InternalError".into());
                slot.finish();
                Err(StsError { recorded: true, ..StsError::new("InternalError", 500, e.to_string()) })
            }
        }
    }
    .await;
    let (claims, creds, role_name, mut slot) = match result {
        Ok(r) => r,
        Err(e) => return error(front, origin, ACTION, &role_arn, e).await,
    };
    let session = claims.session_name.clone().unwrap_or_default();
    let arn = format!("arn:aws:sts::{}:assumed-role/{role_name}/{session}", front.account_id);
    let text = format!(
        "<AssumeRoleWithWebIdentityResponse xmlns=\"{STS_NS}\"><AssumeRoleWithWebIdentityResult>\
         <SubjectFromWebIdentityToken>{sub}</SubjectFromWebIdentityToken><Audience>lakegate</Audience>\
         <AssumedRoleUser><Arn>{arn}</Arn><AssumedRoleId>{akid}:{session}</AssumedRoleId></AssumedRoleUser>\
         <Credentials><AccessKeyId>{akid}</AccessKeyId><SecretAccessKey>{secret}</SecretAccessKey>\
         <SessionToken>{token}</SessionToken><Expiration>{exp}</Expiration></Credentials>\
         <Provider>{iss}</Provider></AssumeRoleWithWebIdentityResult>\
         <ResponseMetadata><RequestId>{rid}</RequestId></ResponseMetadata></AssumeRoleWithWebIdentityResponse>",
        sub = escape(&claims.principal.subject),
        arn = escape(&arn),
        akid = escape(&creds.access_key_id),
        session = escape(&session),
        secret = escape(creds.secret_access_key.expose()),
        token = escape(&creds.session_token),
        exp = creds.expiration_rfc3339(),
        iss = escape(&claims.principal.issuer),
        rid = escape(&origin.request_id),
    );
    // The slot was reserved before the credentials were minted: no record, no credentials.
    let event = slot.event_mut();
    event.extra.insert("role".into(), claims.role.clone().unwrap_or_default().into());
    event.extra.insert("access_key_id".into(), creds.access_key_id.clone().into());
    event.extra.insert("expiration".into(), creds.expiration_rfc3339().into());
    event.outcome_mut().status = Some(200);
    event.outcome_mut().bytes_out = text.len() as u64;
    slot.finish();
    xml_response(StatusCode::OK, text, &origin.request_id)
}

async fn caller_identity(
    front: &S3Front,
    origin: &Origin,
    parts: &http::request::Parts,
    body: &[u8],
) -> Response<BoxBody> {
    const ACTION: &str = "sts:GetCallerIdentity";
    // STS signers hash the form body but do not send x-amz-content-sha256: the body is small and read already.
    let hash: [u8; 32] = Sha256::digest(body).into();
    // STS requests are not presigned GETs worth keeping; and a URL verified for S3 must not pass for STS.
    let settings = SigV4Settings {
        max_skew: front.max_skew,
        services: &["sts"],
        signing_keys: &front.signing_keys,
        presigned: None,
    };
    let caller = match auth::authenticate(&front.gate, &front.keys.current(), origin, parts, settings, Some(hash)).await
    {
        Ok(c) => c,
        Err(e) => {
            let err = StsError::new(
                match e.code() {
                    "InvalidAccessKeyId" => "InvalidClientTokenId",
                    "ExpiredToken" => "ExpiredToken",
                    "SignatureDoesNotMatch" => "SignatureDoesNotMatch",
                    _ => "AccessDenied",
                },
                e.status().as_u16(),
                e.message(),
            );
            return error(front, origin, ACTION, "", err).await;
        }
    };
    let (role, session) = match &caller.session {
        Some(s) => (
            s.role.clone().unwrap_or_else(|| "access-grant".into()),
            s.session_name.clone().unwrap_or_else(|| caller.principal.subject.clone()),
        ),
        None => ("web-identity".into(), caller.principal.subject.clone()),
    };
    let arn = format!("arn:aws:sts::{}:assumed-role/{role}/{session}", front.account_id);
    let user_id =
        format!("{}:{session}", caller.access_key_id.clone().unwrap_or_else(|| caller.principal.subject.clone()));
    let text = format!(
        "<GetCallerIdentityResponse xmlns=\"{STS_NS}\"><GetCallerIdentityResult><Arn>{}</Arn><UserId>{}</UserId>\
         <Account>{}</Account></GetCallerIdentityResult><ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata>\
         </GetCallerIdentityResponse>",
        escape(&arn),
        escape(&user_id),
        escape(&front.account_id),
        escape(&origin.request_id)
    );
    let mut event =
        super::service::with_caller(gate::event(origin, ACTION, &arn).principal(&caller.principal), &caller)
            .allow(Vec::<String>::new());
    event.outcome_mut().status = Some(200);
    if let Err(e) = front.gate.record(event).await {
        return error(front, origin, ACTION, "", StsError::from(e)).await;
    }
    xml_response(StatusCode::OK, text, &origin.request_id)
}

/// Audits a refused STS request (unless the gate already did) and answers with `<ErrorResponse>`.
async fn error(front: &S3Front, origin: &Origin, action: &str, resource: &str, e: StsError) -> Response<BoxBody> {
    if !e.recorded {
        let mut event = gate::event(origin, action, resource).deny(e.message.clone(), Vec::<String>::new());
        event.outcome_mut().status = Some(e.status.as_u16());
        event.outcome_mut().error_code = Some(e.code.to_owned());
        if let Err(err) = front.gate.record(event).await {
            tracing::error!(error = %err, "could not audit a refused STS request");
        }
    }
    let kind = if e.status.is_server_error() { "Receiver" } else { "Sender" };
    let text = format!(
        "<ErrorResponse xmlns=\"{STS_NS}\"><Error><Type>{kind}</Type><Code>{}</Code><Message>{}</Message></Error>\
         <RequestId>{}</RequestId></ErrorResponse>",
        e.code,
        escape(&e.message),
        escape(&origin.request_id)
    );
    xml_response(e.status, text, &origin.request_id)
}

fn xml_response(status: StatusCode, text: String, request_id: &str) -> Response<BoxBody> {
    let mut r = Response::new(full(text));
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    stamp(r, request_id)
}
