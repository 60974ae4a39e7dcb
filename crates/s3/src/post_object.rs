//! POST Object: a browser form upload (`multipart/form-data` POSTed to a bucket), on the road every request
//! takes: the form's policy signature authenticates -> its policy is checked -> the gate decides `s3:PutObject`
//! on the key -> the store gets a PUT -> the audit record is finished with the outcome.
//!
//! S3 reads the file as the form's last part and ignores what follows it, so everything the decision needs
//! (key, policy, signature, headers) has arrived before the first byte of the file is read. The file is then
//! spooled to an anonymous temporary file; only once it is whole and within the policy's
//! `content-length-range` is it sent to the store, with the length a PUT needs. A refused, oversized or broken
//! upload therefore stores nothing, and memory stays bounded whatever the file's size.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{StreamExt, TryStreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use super::auth::{self, Caller};
use super::backend::{BoxBody, ForwardRequest};
use super::body::{AuditedBody, Lingering, RequestTap};
use super::classify::{self, ClassifyError, OpKind, Operation};
use super::error::S3Error;
use super::service::{
    S3Front, decide, finish_with_error, forward_headers, full, labelled, refuse, refused_header, scope_allows, stamp,
    store_error,
};
use lakegate_core::audit::AuditSlot;
use lakegate_core::gate::Origin;
use lakegate_s3_protocol::post_policy::{LengthRange, PostError, PostForm, PostPolicy};
use lakegate_s3_protocol::sigv4::BoxError;
use lakegate_s3_protocol::xml;

const ACTION: &str = "s3:PutObject";
const OPERATION: &str = "PostObject";

/// Form fields that become the stored object's headers, as S3 maps them. `acl` is read as `x-amz-acl`, so the
/// header rules apply to it (`private` accepted, any other ACL refused).
const HEADER_FIELDS: &[&str] =
    &["cache-control", "content-disposition", "content-encoding", "content-type", "expires", "acl"];
/// Fields that are read here and are neither headers nor refused.
const FORM_FIELDS: &[&str] = &[
    "key",
    "policy",
    "success_action_status",
    "success_action_redirect",
    "redirect",
    "x-amz-algorithm",
    "x-amz-credential",
    "x-amz-date",
    "x-amz-signature",
    "x-amz-security-token",
];

/// Serves a form upload. `parts` is a POST whose content type is `multipart/form-data`.
pub(crate) async fn handle(
    front: &S3Front,
    origin: &Origin,
    parts: http::request::Parts,
    body: Lingering,
) -> Response<BoxBody> {
    let method = parts.method.clone();
    let refuse_early = |resource: String, error: S3Error, caller: Option<Caller>| async move {
        refuse(front, origin, caller.as_ref(), ACTION, &resource, error, &method).await
    };
    let bucket = match form_bucket(front, &parts) {
        Ok(b) => b,
        Err(e) => return labelled(refuse_early(parts.uri.path().to_owned(), e, None).await, OPERATION, None),
    };
    let resource = format!("s3://{bucket}/");
    let budget = Arc::new(AtomicU64::new(MAX_BEFORE_FILE));
    let mut multipart = match boundary(&parts.headers) {
        Ok(b) => multer::Multipart::new(budgeted(body, budget.clone()), b),
        Err(e) => return labelled(refuse_early(resource, e.into(), None).await, OPERATION, None),
    };
    let (form, file) = match read_fields(&mut multipart).await {
        Ok(f) => f,
        Err(e) => return labelled(refuse_early(resource, e.into(), None).await, OPERATION, None),
    };
    // The file is bounded by the policy's length range as it is spooled.
    budget.store(u64::MAX, Ordering::Relaxed);
    let caller = match form
        .signature()
        .map_err(S3Error::from)
        .and_then(|f| auth::authenticate_form(&front.gate, &front.keys.current(), &f))
    {
        Ok(c) => c,
        Err(e) => return labelled(refuse_early(resource, e, None).await, OPERATION, None),
    };
    let accepted = match accept(&bucket, &form, file.file_name()) {
        Ok(a) => a,
        Err(e) => return labelled(refuse_early(resource, e, Some(caller)).await, OPERATION, None),
    };
    let r = store(front, origin, caller, accepted, file).await;
    labelled(r, OPERATION, None)
}

/// A form that passed its policy and the header rules, not yet decided.
struct Accepted {
    op: Operation,
    range: LengthRange,
    headers: HeaderMap,
    answer: Answer,
}

/// What a successful upload answers, as the form asks (`success_action_redirect`, `success_action_status`).
enum Answer {
    Status(StatusCode),
    Redirect(url::Url),
}

/// The bucket a form is posted to: the bucket's own URL, never an object's.
fn form_bucket(front: &S3Front, parts: &http::request::Parts) -> Result<String, S3Error> {
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or(parts.uri.authority().map(|a| a.as_str()));
    match classify::locate(host, parts.uri.path(), &front.style)? {
        (Some(bucket), "") => Ok(bucket),
        (Some(_), _) => {
            Err(ClassifyError::InvalidRequest("a form upload is posted to the bucket, not to a key").into())
        }
        (None, _) => Err(ClassifyError::MethodNotAllowed.into()),
    }
}

fn boundary(headers: &HeaderMap) -> Result<String, PostError> {
    let content_type = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    multer::parse_boundary(content_type).map_err(|e| PostError::Malformed(e.to_string()))
}

/// Most bytes of the form read before its file part: the fields' own limit, and room for the parts' boundaries
/// and headers. Without it, a part whose headers never end would be buffered by the parser without bound.
const MAX_BEFORE_FILE: u64 = lakegate_s3_protocol::post_policy::MAX_FIELD_BYTES as u64 + 64 * 1024;

/// The request body as the parser reads it, failing once more than `budget` bytes have been read.
fn budgeted(
    body: Lingering,
    budget: Arc<AtomicU64>,
) -> impl futures::Stream<Item = Result<bytes::Bytes, BoxError>> + Send + 'static {
    let mut read: u64 = 0;
    body.into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(|e| -> BoxError { Box::new(e) })?;
        read = read.saturating_add(chunk.len() as u64);
        if read > budget.load(Ordering::Relaxed) {
            return Err("the form's fields and part headers are too large".into());
        }
        Ok(chunk)
    })
}

/// Reads the fields up to the file, which is returned unread.
async fn read_fields<'r>(multipart: &mut multer::Multipart<'r>) -> Result<(PostForm, multer::Field<'r>), PostError> {
    let mut form = PostForm::default();
    loop {
        let mut field = multipart
            .next_field()
            .await
            .map_err(|e| PostError::Malformed(e.to_string()))?
            .ok_or(PostError::FileCount)?;
        let name = field.name().unwrap_or_default().to_owned();
        if name.eq_ignore_ascii_case("file") {
            return Ok((form, field));
        }
        // Bounded as it is read: `PostForm::push` limits the fields' total, and no single field may exceed it.
        let mut value = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(|e| PostError::Malformed(e.to_string()))? {
            if value.len() + chunk.len() > lakegate_s3_protocol::post_policy::MAX_FIELD_BYTES {
                return Err(PostError::Malformed("a form field is too large".into()));
            }
            value.extend_from_slice(&chunk);
        }
        let value = String::from_utf8(value)
            .map_err(|_| PostError::InvalidArgument(format!("the form field {name} is not UTF-8")))?;
        form.push(&name, value)?;
    }
}

/// Checks an authenticated form against its policy and maps its fields to the headers of the PUT.
fn accept(bucket: &str, form: &PostForm, file_name: Option<&str>) -> Result<Accepted, S3Error> {
    let signature = form.signature()?;
    let key = form.key(file_name)?;
    let policy = PostPolicy::parse(signature.policy)?;
    let range = policy.check(time::OffsetDateTime::now_utc(), form, bucket, &key)?;
    let headers = object_headers(form)?;
    let answer = answer(form)?;
    let op = Operation {
        kind: OpKind::PutObject,
        bucket: Some(bucket.to_owned()),
        key: Some(key),
        prefix: String::new(),
        copy_source: None,
        query: Vec::new(),
    };
    Ok(Accepted { op, range, headers, answer })
}

/// The headers a PUT of the same object would carry, with the rules a PUT's headers obey.
fn object_headers(form: &PostForm) -> Result<HeaderMap, S3Error> {
    let mut headers = HeaderMap::new();
    for (name, value) in form.fields() {
        if FORM_FIELDS.contains(&name) || name.starts_with("x-ignore-") {
            continue;
        }
        if name == "tagging" {
            return Err(ClassifyError::UnsupportedHeader("tagging".into()).into());
        }
        let header = if name == "acl" { "x-amz-acl" } else { name };
        if !(HEADER_FIELDS.contains(&name) || header.starts_with("x-amz-")) {
            // Any other field is only the form's own (a submit button's name, say); the policy covered it.
            continue;
        }
        let header = HeaderName::from_bytes(header.as_bytes())
            .map_err(|_| PostError::InvalidArgument(format!("the form field {name} is not a valid header name")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| PostError::InvalidArgument(format!("the form field {name} is not a valid header value")))?;
        if let Some(e) = refused_header(&header, &value, true) {
            return Err(e.into());
        }
        headers.append(header, value);
    }
    Ok(headers)
}

/// S3's answer rules: a redirect if asked for, else 200, 201 (with an XML body) or 204, which is also what an
/// unknown status gets.
fn answer(form: &PostForm) -> Result<Answer, PostError> {
    if let Some(target) = form.get("success_action_redirect").or_else(|| form.get("redirect")) {
        let url = url::Url::parse(target)
            .map_err(|_| PostError::InvalidArgument("success_action_redirect is not a URL".into()))?;
        return Ok(Answer::Redirect(url));
    }
    Ok(Answer::Status(match form.get("success_action_status") {
        Some("200") => StatusCode::OK,
        Some("201") => StatusCode::CREATED,
        _ => StatusCode::NO_CONTENT,
    }))
}

/// Decides the upload, spools the file, and PUTs it to the store.
async fn store(
    front: &S3Front,
    origin: &Origin,
    caller: Caller,
    form: Accepted,
    mut file: multer::Field<'_>,
) -> Response<BoxBody> {
    let Accepted { op, range, headers, answer } = form;
    let method = Method::POST;
    let resource_text =
        format!("s3://{}/{}", op.bucket.as_deref().unwrap_or_default(), op.key.as_deref().unwrap_or_default());
    let decided = match op.resource() {
        Ok(resource) => {
            decide(front, origin, &caller, ACTION, &resource, scope_allows(&caller.scope, &op), OPERATION).await
        }
        Err(e) => Err(e.into()),
    };
    let slots = match decided {
        Ok(slot) => vec![slot],
        Err(e) => return refuse(front, origin, Some(&caller), ACTION, &resource_text, e, &method).await,
    };
    let tap = Arc::new(RequestTap::default());
    let fail = |slots, error: S3Error, tap: &RequestTap| {
        finish_with_error(slots, &error, &resource_text, &origin.request_id, &method, tap)
    };
    let (spooled, length) = match spool(&mut file, range).await {
        Ok(s) => s,
        Err(e) => return fail(slots, e, &tap),
    };
    tap.bytes.store(length, Ordering::Relaxed);
    let body = StreamBody::new(
        tokio_util::io::ReaderStream::with_capacity(spooled, 64 * 1024)
            .map_ok(Frame::data)
            .map_err(|e| -> BoxError { Box::new(e) }),
    );
    let request = ForwardRequest {
        method: Method::PUT,
        bucket: op.bucket.clone(),
        key: op.key.clone(),
        query: Vec::new(),
        headers: forward_headers(&headers, &op, Some(length)),
        body: body.boxed_unsync(),
    };
    let response = match front.backend.forward(request).await {
        Ok(r) => r,
        Err(e) => return fail(slots, S3Error::Backend(e), &tap),
    };
    if !response.status().is_success() {
        let error = store_error(response, &Method::PUT).await;
        return fail(slots, error, &tap);
    }
    let etag = response.headers().get(http::header::ETAG).cloned();
    answered(origin, &op, slots, etag, answer, tap)
}

/// Reads the file into an anonymous temporary file (gone when dropped), within the policy's lengths.
async fn spool(file: &mut multer::Field<'_>, range: LengthRange) -> Result<(tokio::fs::File, u64), S3Error> {
    let io = |e: std::io::Error| S3Error::BodyRead(format!("spooling the form's file: {e}"));
    let spooled = tokio::task::spawn_blocking(tempfile::tempfile)
        .await
        .map_err(|e| S3Error::BodyRead(e.to_string()))?
        .map_err(io)?;
    let mut writer = tokio::io::BufWriter::with_capacity(256 * 1024, tokio::fs::File::from_std(spooled));
    let mut length: u64 = 0;
    while let Some(chunk) = file.chunk().await.map_err(|e| PostError::Malformed(e.to_string()))? {
        length = length.saturating_add(chunk.len() as u64);
        if length > range.max {
            // Stop reading at once: the rest of the file is never stored anywhere.
            return Err(PostError::TooLarge.into());
        }
        writer.write_all(&chunk).await.map_err(io)?;
    }
    range.check(length)?;
    writer.flush().await.map_err(io)?;
    let mut spooled = writer.into_inner();
    spooled.rewind().await.map_err(io)?;
    Ok((spooled, length))
}

/// The answer to a stored upload, with the audit record finished by its body.
fn answered(
    origin: &Origin,
    op: &Operation,
    mut slots: Vec<AuditSlot>,
    etag: Option<HeaderValue>,
    answer: Answer,
    tap: Arc<RequestTap>,
) -> Response<BoxBody> {
    let bucket = op.bucket.as_deref().unwrap_or_default();
    let key = op.key.as_deref().unwrap_or_default();
    let etag_text = etag.as_ref().and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let location = format!("/{}", super::backend::encode_path(Some(bucket), Some(key)).trim_start_matches('/'));
    let (status, text, redirect) = match answer {
        Answer::Redirect(mut url) => {
            url.query_pairs_mut().append_pair("bucket", bucket).append_pair("key", key).append_pair("etag", &etag_text);
            (StatusCode::SEE_OTHER, String::new(), Some(url))
        }
        Answer::Status(StatusCode::CREATED) => {
            let text = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<PostResponse><Location>{}</Location><Bucket>{}</Bucket>\
                 <Key>{}</Key><ETag>{}</ETag></PostResponse>",
                xml::escape(&location),
                xml::escape(bucket),
                xml::escape(key),
                xml::escape(&etag_text)
            );
            (StatusCode::CREATED, text, None)
        }
        Answer::Status(status) => (status, String::new(), None),
    };
    for slot in &mut slots {
        slot.event_mut().outcome_mut().status = Some(status.as_u16());
    }
    let length = text.len() as u64;
    let body = if text.is_empty() { super::service::empty() } else { full(text) };
    let mut r = Response::new(AuditedBody::new(body, slots, status.as_u16(), Some(length), Some(tap)).boxed_unsync());
    *r.status_mut() = status;
    let headers = r.headers_mut();
    if let Some(etag) = etag {
        headers.insert(http::header::ETAG, etag);
    }
    let location = redirect.map_or(location, String::from);
    if let Ok(v) = HeaderValue::from_str(&location) {
        headers.insert(http::header::LOCATION, v);
    }
    if status == StatusCode::CREATED {
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    }
    stamp(r, &origin.request_id)
}
