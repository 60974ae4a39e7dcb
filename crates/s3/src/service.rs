//! The S3 front's request path: authenticate -> classify -> decide (live policy AND credential scope) ->
//! forward, narrowed -> audit. STS and GetDataAccess share the port and branch off at the top.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tracing::Instrument;

use super::auth::{self, Caller, SigV4Settings};
use super::backend::{Backend, BoxBody, ForwardRequest, encode_path};
use super::body::{AuditedBody, Lingering, MeteredBody, MetricLabels, RequestTap, tap_request};
use super::classify::{self, HostStyle, OpKind, Operation};
use super::error::S3Error;
use lakegate_core::audit::{AuditEvent, AuditSlot, Front};
use lakegate_core::credentials::{Access, LiveKeyRing, RoleProfile, Scope};
use lakegate_core::gate::{self, Gate, GateError, Origin};
use lakegate_core::policy::{RequestContext, Resource};
use lakegate_net::http::{new_request_id, remove_hop_by_hop};
pub(crate) use lakegate_s3_protocol::body::{empty, full, stamp};
use lakegate_s3_protocol::sigv4::{AwsChunkedBody, PayloadMode, Sha256VerifiedBody};
use lakegate_s3_protocol::xml;

/// Most header bytes (names and values) a request may carry; real S3 requests send a few KiB.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Largest XML request body read whole (DeleteObjects, CompleteMultipartUpload is streamed).
pub const MAX_XML_BODY: usize = 2 * 1024 * 1024;
/// Largest store answer read whole (errors, ListBuckets, DeleteObjects results).
pub(crate) const MAX_STORE_XML: usize = 4 * 1024 * 1024;

/// Request headers passed on to the store; everything else is dropped (authentication, aws-chunked framing,
/// SDK bookkeeping) or refused (see [`REFUSED_HEADER_PREFIXES`]).
const FORWARDED_HEADERS: &[&str] = &[
    "cache-control",
    "content-disposition",
    "content-language",
    "content-md5",
    "content-type",
    "expires",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-unmodified-since",
    "range",
    "x-amz-checksum-crc32",
    "x-amz-checksum-crc32c",
    "x-amz-checksum-crc64nvme",
    "x-amz-checksum-sha1",
    "x-amz-checksum-sha256",
    "x-amz-copy-source-if-match",
    "x-amz-copy-source-if-modified-since",
    "x-amz-copy-source-if-none-match",
    "x-amz-copy-source-if-unmodified-since",
    "x-amz-copy-source-range",
    "x-amz-metadata-directive",
    "x-amz-storage-class",
];

/// Headers that would change who may access an object or how it is protected: Lakegate does not carry them
/// out, and silently dropping them would mislead the client, so the request is refused.
const REFUSED_HEADER_PREFIXES: &[&str] =
    &["x-amz-acl", "x-amz-grant-", "x-amz-server-side-encryption", "x-amz-object-lock-", "x-amz-website-"];

/// `x-amz-*` request headers that are read by Lakegate itself or that SDKs send routinely and that change
/// nothing about what is stored: neither forwarded nor refused. Any other `x-amz-*` header that is not
/// forwarded is refused on an operation that writes, so nothing is stored without a part of what the client
/// asked for (tags, for one); on reads and listings it is dropped.
const CONSUMED_HEADERS: &[&str] = &[
    // Signature V4 and its payload framing, checked by the front.
    "x-amz-content-sha256",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-decoded-content-length",
    "x-amz-trailer",
    // Read by the classifier and forwarded in decoded form.
    "x-amz-copy-source",
    // SDK checksum bookkeeping: the checksum values themselves are forwarded and verified by the store.
    "x-amz-sdk-checksum-algorithm",
    "x-amz-checksum-algorithm",
    "x-amz-checksum-type",
    "x-amz-checksum-mode",
    "x-amz-user-agent",
    "x-amz-api-version",
];
/// The store's own name and request ids: the client hears Lakegate's, which its audit record carries. As
/// `HeaderName`s: every forwarded answer is cleared of them, and a name given as text is parsed at each removal.
static STORE_IDENTITY_HEADERS: [HeaderName; 3] =
    [http::header::SERVER, HeaderName::from_static("x-amz-request-id"), HeaderName::from_static("x-amz-id-2")];

/// The S3 front: everything a request needs.
#[derive(Debug)]
pub struct S3Front {
    pub gate: Arc<Gate>,
    pub keys: Arc<LiveKeyRing>,
    pub backend: Arc<dyn Backend>,
    pub roles: Vec<RoleProfile>,
    pub style: HostStyle,
    pub max_skew: time::Duration,
    /// The account id shown in STS ARNs.
    pub account_id: String,
    /// The region reported by GetBucketLocation and accepted in signatures.
    pub region: String,
    /// SigV4 signing keys derived before.
    pub signing_keys: super::auth::SigningKeys,
    /// Presigned URLs verified before.
    pub presigned: super::auth::PresignedUrls,
}

/// Serves one request on the S3 port.
pub async fn handle(front: Arc<S3Front>, req: http::Request<Incoming>, peer: SocketAddr) -> Response<BoxBody> {
    let origin = Origin { front: Front::S3, request_id: new_request_id(), source: Some(peer.ip().to_string()) };
    let span = tracing::info_span!("s3", request_id = %origin.request_id, method = %req.method());
    let started = std::time::Instant::now();
    let response = async move {
        let (parts, body) = req.into_parts();
        let header_bytes: usize = parts.headers.iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
        if header_bytes > MAX_HEADER_BYTES {
            let error = S3Error::HeadersTooLarge(MAX_HEADER_BYTES);
            return refuse(&front, &origin, None, "s3:Request", parts.uri.path(), error, &parts.method).await;
        }
        if parts.uri.path() == super::grant::PATH {
            let r = super::grant::handle(&front, &origin, parts, body).await;
            return labelled(r, "GetDataAccess", None);
        }
        if lakegate_s3_protocol::sts::is_sts(&parts) {
            let r = super::sts::handle(&front, origin.clone(), parts, body).await;
            return labelled(r, "STS", None);
        }
        serve_s3(&front, &origin, parts, body).await
    }
    .instrument(span)
    .await;
    MeteredBody::wrap(response, started)
}

/// Sets the metric labels of a response, keeping a decision already set by [`refuse`].
pub(crate) fn labelled(
    mut r: Response<BoxBody>,
    operation: &'static str,
    decision: Option<&'static str>,
) -> Response<BoxBody> {
    let decision = decision.or_else(|| r.extensions().get::<MetricLabels>().and_then(|l| l.decision));
    r.extensions_mut().insert(MetricLabels { operation, decision });
    r
}

/// Signature settings for S3 requests.
pub(crate) fn s3_settings(front: &S3Front) -> SigV4Settings<'_> {
    SigV4Settings {
        max_skew: front.max_skew,
        services: &["s3"],
        signing_keys: &front.signing_keys,
        presigned: Some(&front.presigned),
    }
}

async fn serve_s3(front: &S3Front, origin: &Origin, parts: http::request::Parts, body: Incoming) -> Response<BoxBody> {
    // From here on, a refusal or an early answer from the store leaves the rest of the body to be read.
    let expects_continue =
        parts.headers.get(http::header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let body = Lingering::new(body, expects_continue);
    let read_started = body.read_started();
    let mut response = serve_s3_request(front, origin, parts, body).await;
    if expects_continue && !read_started.load(std::sync::atomic::Ordering::Relaxed) {
        // Answered without `100 Continue`: the client need not send its body, but one that stopped waiting for
        // the answer (botocore waits a second) has sent it, and nothing tells which. Reading on could take those
        // bytes for the next request, so the connection ends with this answer (RFC 9110 §10.1.1).
        response.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

async fn serve_s3_request(
    front: &S3Front,
    origin: &Origin,
    parts: http::request::Parts,
    body: Lingering,
) -> Response<BoxBody> {
    let path = parts.uri.path().to_owned();
    let method = parts.method.clone();
    // A browser form upload (POST Object) carries its signature in the form, not in the request.
    if is_form_upload(&parts) {
        return super::post_object::handle(front, origin, parts, body).await;
    }
    let caller =
        match auth::authenticate(&front.gate, &front.keys.current(), origin, &parts, s3_settings(front), None).await {
            Ok(c) => c,
            Err(e) => return refuse(front, origin, None, "s3:Authenticate", &path, e, &method).await,
        };
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or(parts.uri.authority().map(|a| a.as_str()));
    let op = match classify::classify(&method, host, &path, parts.uri.query(), &parts.headers, &front.style) {
        Ok(op) => op,
        Err(e) => return refuse(front, origin, Some(&caller), "s3:Request", &path, e.into(), &method).await,
    };
    // CreateBucket never creates or changes anything (see `listing::create_bucket`), so the headers that would
    // shape a new bucket (`x-amz-acl`, which rclone sends, object lock, ownership) have nothing to act on: they
    // must not refuse the answer that the bucket is already there.
    if op.kind == OpKind::CreateBucket {
        let r = match super::listing::create_bucket(front, origin, &caller, &op).await {
            Ok(r) => r,
            Err(e) => refuse(front, origin, Some(&caller), op.kind.action(), &display_resource(&op), e, &method).await,
        };
        return labelled(r, op.kind.name(), None);
    }
    let writes = op.kind.access() == Access::Write;
    if let Some(e) = parts.headers.iter().find_map(|(n, v)| refused_header(n, v, writes)) {
        let r = refuse(front, origin, Some(&caller), op.kind.action(), &path, e.into(), &method).await;
        return labelled(r, op.kind.name(), None);
    }
    let result = match op.kind {
        OpKind::ListBuckets => super::listing::list_buckets(front, origin, &caller).await,
        OpKind::DeleteObjects => super::delete::delete_objects(front, origin, &caller, &op, parts, body).await,
        _ => forward(front, origin, &caller, &op, parts, body).await,
    };
    let response = match result {
        Ok(r) => r,
        // The resource's text is made only here, for the refusal: the operation's own audit record has its own.
        Err(e) => refuse(front, origin, Some(&caller), op.kind.action(), &display_resource(&op), e, &method).await,
    };
    labelled(response, op.kind.name(), None)
}

/// A POST of an HTML form (`multipart/form-data`): S3's POST Object.
fn is_form_upload(parts: &http::request::Parts) -> bool {
    parts.method == Method::POST
        && parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("multipart/form-data"))
}

/// Why a request header makes Lakegate refuse the request (one that `writes`, or any), if it does.
///
/// `x-amz-acl: private` is accepted, and not forwarded: it is S3's default canned ACL (the owner alone has
/// access), grants nothing, and is what an object gets on both stores without it; rclone and other tools send it
/// on every upload. Not forwarding it keeps every ACL header away from the store whatever its configuration (a
/// bucket with ACLs disabled refuses some values, and no store behind Lakegate is meant to hold grants).
pub(crate) fn refused_header(name: &HeaderName, value: &HeaderValue, writes: bool) -> Option<classify::ClassifyError> {
    use classify::ClassifyError::{NotImplemented, UnsupportedHeader};
    let name = name.as_str();
    if name == "x-amz-acl" && value.as_bytes() == CANNED_PRIVATE.as_bytes() {
        return None;
    }
    if REFUSED_HEADER_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return Some(NotImplemented("access-control and encryption headers"));
    }
    let forwarded = FORWARDED_HEADERS.contains(&name) || name.starts_with("x-amz-meta-");
    if writes && name.starts_with("x-amz-") && !forwarded && !CONSUMED_HEADERS.contains(&name) {
        return Some(UnsupportedHeader(name.to_owned()));
    }
    None
}

/// The one canned ACL accepted (see [`refused_header`]).
const CANNED_PRIVATE: &str = "private";

fn display_resource(op: &Operation) -> String {
    match (&op.bucket, &op.key) {
        (Some(b), Some(k)) => format!("s3://{b}/{k}"),
        (Some(b), None) => format!("s3://{b}/{}", op.prefix),
        _ => "s3://".into(),
    }
}

/// Whether `scope` allows `op`'s own access (not the copy source).
pub(crate) fn scope_allows(scope: &Scope, op: &Operation) -> bool {
    let bucket = op.bucket.as_deref().unwrap_or_default();
    match op.kind {
        OpKind::ListBuckets => true,
        // Knowing where a bucket is (or that it exists) is allowed to any credential that reaches into it.
        OpKind::CreateBucket | OpKind::HeadBucket | OpKind::GetBucketLocation => touches_bucket(scope, bucket),
        OpKind::ListObjectsV1 | OpKind::ListObjectsV2 | OpKind::ListMultipartUploads => {
            scope.allows(bucket, &op.prefix, Access::List)
        }
        // Decided per key.
        OpKind::DeleteObjects => touches_bucket(scope, bucket),
        kind => op.key.as_deref().is_some_and(|k| scope.allows(bucket, k, kind.access())),
    }
}

pub(crate) fn touches_bucket(scope: &Scope, bucket: &str) -> bool {
    match scope {
        Scope::Unrestricted => true,
        Scope::Grants(grants) => grants.iter().any(|g| g.bucket == bucket),
    }
}

/// Records the refusal of a request that holds no audit slot, then answers with the S3 error.
pub(crate) async fn refuse(
    front: &S3Front,
    origin: &Origin,
    caller: Option<&Caller>,
    action: &str,
    resource: &str,
    error: S3Error,
    method: &Method,
) -> Response<BoxBody> {
    // The gate has already recorded its own refusals (bad bearer token, policy denial), and `decide` or the
    // bucket check records a request outside the credential's scope before it answers `OutOfScope`; an audit
    // failure cannot be recorded.
    let recorded = matches!(error, S3Error::Gate(_) | S3Error::OutOfScope);
    if !recorded {
        let mut event = gate::event(origin, action, resource);
        if let Some(c) = caller {
            event = with_caller(event.principal(&c.principal), c);
        }
        let reason = error.to_string();
        let mut event = match error {
            S3Error::Signature(_) | S3Error::Credential(_) | S3Error::OutOfScope => {
                event.deny(reason, Vec::<String>::new())
            }
            S3Error::Classify(classify::ClassifyError::InvalidKey(_)) => event.deny(reason, Vec::<String>::new()),
            _ => event.error(reason),
        };
        let outcome = event.outcome_mut();
        outcome.status = Some(error.status().as_u16());
        outcome.error_code = Some(error.code().to_owned());
        if let Err(e) = front.gate.record(event).await {
            tracing::error!(error = %e, "could not audit a refused request");
            let e = S3Error::Gate(e);
            return error_response(&e, resource, &origin.request_id, method);
        }
    }
    tracing::info!(code = error.code(), %error, "refused");
    let decision = match &error {
        S3Error::Signature(_)
        | S3Error::Credential(_)
        | S3Error::OutOfScope
        | S3Error::Classify(classify::ClassifyError::InvalidKey(_))
        | S3Error::Gate(GateError::Denied(_) | GateError::NotGrantable(_) | GateError::Identity(_)) => "deny",
        _ => "error",
    };
    let r = error_response(&error, resource, &origin.request_id, method);
    labelled(r, "Unknown", Some(decision))
}

/// Adds the session details of a SigV4 caller to an event.
pub(crate) fn with_caller(mut event: AuditEvent, caller: &Caller) -> AuditEvent {
    event.extra.extend(caller_details(caller));
    event
}

/// The access key id, role and session name of a SigV4 caller, as audit `extra` fields.
pub(crate) fn caller_details(caller: &Caller) -> std::collections::BTreeMap<String, serde_json::Value> {
    let mut out = std::collections::BTreeMap::new();
    if let Some(akid) = &caller.access_key_id {
        out.insert("access_key_id".into(), akid.clone().into());
    }
    if let Some(s) = &caller.session {
        if let Some(role) = &s.role {
            out.insert("role".into(), role.clone().into());
        }
        if let Some(name) = &s.session_name {
            out.insert("role_session_name".into(), name.clone().into());
        }
    }
    out
}

/// An S3 XML error response.
pub(crate) fn error_response(error: &S3Error, resource: &str, request_id: &str, method: &Method) -> Response<BoxBody> {
    let body = if method == Method::HEAD {
        empty()
    } else {
        full(xml::s3_error(error.code(), &error.message(), resource, request_id))
    };
    let mut r = Response::new(body);
    *r.status_mut() = error.status();
    r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    stamp(r, request_id)
}

/// Decides one access: the credential scope first (cheap, and recorded as a denial of its own), then the live
/// policy through the gate, which returns the audit slot of the access.
pub(crate) async fn decide(
    front: &S3Front,
    origin: &Origin,
    caller: &Caller,
    action: &str,
    resource: &Resource,
    in_scope: bool,
    operation: &str,
) -> Result<AuditSlot, S3Error> {
    if !in_scope {
        let event = with_caller(gate::event(origin, action, resource.to_string()).principal(&caller.principal), caller)
            .deny("outside the credential's scope", Vec::<String>::new())
            .extra("operation", operation);
        front.gate.record(event).await?;
        return Err(S3Error::OutOfScope);
    }
    let mut details = caller_details(caller);
    details.insert("operation".into(), operation.into());
    if let Some(binding) = caller.session.as_ref().and_then(|s| s.table.as_ref()) {
        // Full-table credentials: decided as an access to their table, not by S3 prefix policies.
        let access = (action, resource);
        let gate = &front.gate;
        return Ok(gate
            .authorize_table_files(origin, &caller.principal, binding, access, writes(action), details)
            .await?);
    }
    let allowed = front
        .gate
        .authorize_with_details(origin, &caller.principal, action, resource, RequestContext::default(), details)
        .await?;
    Ok(allowed.slot)
}

/// Whether `action` changes the store (anything not known to only read or list counts as a write).
fn writes(action: &str) -> bool {
    !matches!(
        action,
        "s3:GetObject"
            | "s3:HeadObject"
            | "s3:GetObjectAttributes"
            | "s3:ListBucket"
            | "s3:ListBucketMultipartUploads"
            | "s3:HeadBucket"
            | "s3:GetBucketLocation"
    )
}

/// Decides an operation on its own resource and, for copies, the read of the source.
async fn decide_operation(
    front: &S3Front,
    origin: &Origin,
    caller: &Caller,
    op: &Operation,
) -> Result<Vec<AuditSlot>, S3Error> {
    let mut slots = Vec::new();
    if let Some((src_bucket, src_key)) = &op.copy_source {
        let source =
            Resource::object(src_bucket, src_key).map_err(|e| classify::ClassifyError::InvalidKey(e.to_string()))?;
        let in_scope = caller.scope.allows(src_bucket, src_key, Access::Read);
        slots.push(decide(front, origin, caller, "s3:GetObject", &source, in_scope, op.kind.name()).await?);
    }
    let resource = op.resource()?;
    slots.push(
        decide(front, origin, caller, op.kind.action(), &resource, scope_allows(&caller.scope, op), op.kind.name())
            .await?,
    );
    Ok(slots)
}

/// The headers forwarded for `op`, with the body's real length.
pub(crate) fn forward_headers(headers: &HeaderMap, op: &Operation, content_length: Option<u64>) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let n = name.as_str();
        if FORWARDED_HEADERS.contains(&n) || n.starts_with("x-amz-meta-") {
            out.append(name.clone(), value.clone());
        }
    }
    if let Some(encoding) = headers.get(http::header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()) {
        let rest: Vec<&str> = encoding
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("aws-chunked"))
            .collect();
        if let (false, Ok(v)) = (rest.is_empty(), HeaderValue::from_str(&rest.join(", "))) {
            out.insert(http::header::CONTENT_ENCODING, v);
        }
    }
    if let Some(len) = content_length {
        out.insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    if let Some((b, k)) = &op.copy_source
        && let Ok(v) = HeaderValue::from_str(&encode_path(Some(b), Some(k)))
    {
        out.insert("x-amz-copy-source", v);
    }
    out
}

/// The request body, verified as the signature demands, and its length once decoded.
pub(crate) fn request_body(
    caller: &Caller,
    headers: &HeaderMap,
    body: Lingering,
    tap: Arc<RequestTap>,
) -> Result<(BoxBody, Option<u64>), S3Error> {
    let declared =
        headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let plain = |b: Lingering| b.map_err(|e| lakegate_s3_protocol::sigv4::PayloadError::Body(Box::new(e)));
    Ok(match caller.payload() {
        PayloadMode::Unsigned => (tap_request(plain(body), tap), declared),
        PayloadMode::Sha256(hash) => (tap_request(Sha256VerifiedBody::new(body, hash), tap), declared),
        mode => {
            let decoded = match mode {
                PayloadMode::StreamingSigned { decoded_length }
                | PayloadMode::StreamingSignedTrailer { decoded_length, .. }
                | PayloadMode::StreamingUnsignedTrailer { decoded_length, .. } => decoded_length,
                PayloadMode::Unsigned | PayloadMode::Sha256(_) => 0,
            };
            let decoder = caller.verified.as_ref().and_then(|v| v.aws_chunked_decoder()).ok_or(S3Error::Signature(
                lakegate_s3_protocol::sigv4::SigV4Error::InvalidRequest("no aws-chunked decoder"),
            ))?;
            (tap_request(AwsChunkedBody::new(body, decoder), tap), Some(decoded))
        }
    })
}

/// Forwards a decided single-resource operation and streams the answer back.
async fn forward(
    front: &S3Front,
    origin: &Origin,
    caller: &Caller,
    op: &Operation,
    parts: http::request::Parts,
    body: Lingering,
) -> Result<Response<BoxBody>, S3Error> {
    let mut slots = decide_operation(front, origin, caller, op).await?;
    let tap = Arc::new(RequestTap::default());
    let (body, length) = request_body(caller, &parts.headers, body, tap.clone())?;
    let request = ForwardRequest {
        method: parts.method.clone(),
        bucket: op.bucket.clone(),
        key: op.key.clone(),
        query: op.query.iter().filter(|(k, _)| k != "x-id").cloned().collect(),
        headers: forward_headers(&parts.headers, op, length),
        body,
    };
    let response = match front.backend.forward(request).await {
        Ok(r) => r,
        Err(e) => {
            let error = tap.rejected().map_or(S3Error::Backend(e), S3Error::Signature);
            return Ok(finish_with_error(
                slots,
                &error,
                &display_resource(op),
                &origin.request_id,
                &parts.method,
                &tap,
            ));
        }
    };
    if let Some(rejected) = tap.rejected() {
        // The body failed verification; whatever the store made of the aborted upload, the client hears why.
        return Ok(finish_with_error(
            slots,
            &S3Error::Signature(rejected),
            &display_resource(op),
            &origin.request_id,
            &parts.method,
            &tap,
        ));
    }
    let status = response.status();
    if status.is_client_error() || status.is_server_error() {
        let error = store_error(response, &parts.method).await;
        return Ok(finish_with_error(slots, &error, &display_resource(op), &origin.request_id, &parts.method, &tap));
    }
    let (mut head, store_body) = response.into_parts();
    remove_hop_by_hop(&mut head.headers);
    for name in &STORE_IDENTITY_HEADERS {
        head.headers.remove(name);
    }
    if op.kind == OpKind::GetBucketLocation {
        // The embedded store answers with its own idea of a region; clients must sign for ours.
        let text = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<LocationConstraint xmlns=\"{}\">{}</LocationConstraint>",
            xml::S3_NS,
            if front.region == "us-east-1" { String::new() } else { xml::escape(&front.region) }
        );
        head.headers.remove(http::header::CONTENT_LENGTH);
        for slot in &mut slots {
            slot.event_mut().outcome_mut().status = Some(200);
        }
        let length = text.len() as u64;
        let audited = AuditedBody::new(full(text), slots, 200, Some(length), Some(tap));
        return Ok(stamp(Response::from_parts(head, audited.boxed_unsync()), &origin.request_id));
    }
    let expected = if parts.method == Method::HEAD {
        Some(0)
    } else {
        head.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
    };
    let audited = AuditedBody::new(store_body, slots, status.as_u16(), expected, Some(tap));
    Ok(stamp(Response::from_parts(head, audited.boxed_unsync()), &origin.request_id))
}

/// Finishes the slots of an allowed access that failed, and answers with the error.
pub(crate) fn finish_with_error(
    slots: Vec<AuditSlot>,
    error: &S3Error,
    resource: &str,
    request_id: &str,
    method: &Method,
    tap: &RequestTap,
) -> Response<BoxBody> {
    for mut slot in slots {
        // The decision stays an allow; the record says what went wrong after it, in the store's or the
        // transport's own words (the client only hears the S3 error).
        slot.event_mut().reason = Some(error.to_string());
        let outcome = slot.event_mut().outcome_mut();
        outcome.status = Some(error.status().as_u16());
        outcome.error_code = Some(error.code().to_owned());
        outcome.bytes_in = tap.bytes.load(std::sync::atomic::Ordering::Relaxed);
        slot.finish();
    }
    // The access was allowed; the store's answer (or the body) failed.
    labelled(error_response(error, resource, request_id, method), "Unknown", Some("allow"))
}

/// Turns a store's error response into an [`S3Error`] carrying its code and message.
pub(crate) async fn store_error(response: Response<BoxBody>, method: &Method) -> S3Error {
    let status = response.status();
    let fallback = || match status.as_u16() {
        404 => ("NoSuchKey".to_owned(), "The specified key does not exist.".to_owned()),
        304 => ("NotModified".to_owned(), String::new()),
        412 => ("PreconditionFailed".to_owned(), "At least one of the preconditions did not hold.".to_owned()),
        416 => ("InvalidRange".to_owned(), "The requested range is not satisfiable.".to_owned()),
        403 => ("AccessDenied".to_owned(), "Access Denied".to_owned()),
        _ => ("InternalError".to_owned(), format!("the store answered {status}")),
    };
    let (code, message) = if method == Method::HEAD {
        fallback()
    } else {
        match read_bounded(response.into_body(), MAX_STORE_XML).await {
            Ok(bytes) => xml::parse_error(&bytes).unwrap_or_else(fallback),
            Err(_) => fallback(),
        }
    };
    S3Error::Store { status, code, message }
}

/// Reads a whole body of at most `limit` bytes (XML documents only; object data always streams).
pub(crate) async fn read_bounded(mut body: BoxBody, limit: usize) -> Result<Bytes, S3Error> {
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| S3Error::BodyRead(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if out.len().saturating_add(data.len()) > limit {
                return Err(S3Error::BodyTooLarge(limit));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn refused(name: &'static str, value: &'static str, writes: bool) -> bool {
        refused_header(&HeaderName::from_static(name), &HeaderValue::from_static(value), writes).is_some()
    }

    #[test]
    fn the_private_canned_acl_is_accepted_and_not_forwarded() {
        assert!(!refused("x-amz-acl", "private", true));
        assert!(!refused("x-amz-acl", "private", false));
        let mut headers = HeaderMap::new();
        headers.insert("x-amz-acl", HeaderValue::from_static("private"));
        let op = Operation {
            kind: OpKind::PutObject,
            bucket: Some("lake".into()),
            key: Some("sales/k".into()),
            prefix: String::new(),
            copy_source: None,
            query: Vec::new(),
        };
        assert!(!forward_headers(&headers, &op, Some(0)).contains_key("x-amz-acl"));
    }

    #[test]
    fn every_other_acl_value_and_grant_header_is_refused() {
        for value in ["public-read", "public-read-write", "authenticated-read", "bucket-owner-full-control", "Private"]
        {
            assert!(refused("x-amz-acl", value, true), "x-amz-acl: {value}");
            assert!(refused("x-amz-acl", value, false), "x-amz-acl: {value} on a read");
        }
        for name in ["x-amz-grant-read", "x-amz-grant-full-control", "x-amz-server-side-encryption"] {
            assert!(refused(name, "private", true), "{name}");
        }
    }
}
