//! DeleteObjects: one request, many keys, each decided and audited on its own.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method, Response};

use super::auth::Caller;
use super::backend::{BoxBody, ForwardRequest};
use super::body::{Lingering, RequestTap};
use super::classify::{self, Operation};
use super::error::S3Error;
use super::service::{
    MAX_STORE_XML, MAX_XML_BODY, S3Front, decide, full, read_bounded, request_body, stamp, store_error, touches_bucket,
    with_caller,
};
use lakegate_core::audit::AuditSlot;
use lakegate_core::credentials::Access;
use lakegate_core::gate::{self, GateError, Origin};
use lakegate_core::policy::Resource;
use lakegate_s3_protocol::xml;

/// DeleteObjects: every key decided and audited on its own; only allowed keys reach the store, and the others
/// come back as `AccessDenied` entries of the result.
pub(crate) async fn delete_objects(
    front: &S3Front,
    origin: &Origin,
    caller: &Caller,
    op: &Operation,
    parts: http::request::Parts,
    body: Lingering,
) -> Result<Response<BoxBody>, S3Error> {
    let bucket = op.bucket.clone().unwrap_or_default();
    if !touches_bucket(&caller.scope, &bucket) {
        let resource = Resource::prefix(&bucket, "").map_err(|_| classify::ClassifyError::InvalidBucketName)?;
        decide(front, origin, caller, "s3:DeleteObject", &resource, false, "DeleteObjects").await?;
    }
    let tap = Arc::new(RequestTap::default());
    let (body, _) = request_body(caller, &parts.headers, body, tap.clone())?;
    let bytes = match read_bounded(body, MAX_XML_BODY).await {
        Ok(b) => b,
        Err(S3Error::BodyTooLarge(n)) => return Err(S3Error::BodyTooLarge(n)),
        Err(e) => return Err(tap.rejected().map_or(e, S3Error::Signature)),
    };
    let request = xml::parse_delete(&bytes)?;
    let mut allowed: Vec<(String, AuditSlot)> = Vec::new();
    let mut outcomes: Vec<xml::DeleteOutcome> = Vec::new();
    for key in &request.keys {
        let resource = classify::check_key(key).and_then(|()| {
            Resource::object(&bucket, key).map_err(|e| classify::ClassifyError::InvalidKey(e.to_string()))
        });
        let decision = match resource {
            Ok(resource) => {
                let in_scope = caller.scope.allows(&bucket, key, Access::Write);
                decide(front, origin, caller, "s3:DeleteObject", &resource, in_scope, "DeleteObjects").await
            }
            Err(e) => {
                let error = S3Error::Classify(e);
                let event = with_caller(gate::event(origin, "s3:DeleteObject", format!("s3://{bucket}/{key}")), caller)
                    .principal(&caller.principal)
                    .deny(error.to_string(), Vec::<String>::new());
                front.gate.record(event).await?;
                Err(error)
            }
        };
        match decision {
            Ok(slot) => allowed.push((key.clone(), slot)),
            Err(S3Error::Gate(GateError::Audit(e))) => return Err(S3Error::Gate(GateError::Audit(e))),
            Err(e) => outcomes.push(xml::DeleteOutcome::Error {
                key: key.clone(),
                code: e.code().to_owned(),
                message: e.message(),
            }),
        }
    }
    if !allowed.is_empty() {
        let keys: Vec<String> = allowed.iter().map(|(k, _)| k.clone()).collect();
        let text = xml::delete_body(&keys, false);
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(text.len()));
        let md5 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, md5_digest(text.as_bytes()));
        if let Ok(v) = HeaderValue::from_str(&md5) {
            headers.insert("content-md5", v);
        }
        let forwarded = ForwardRequest {
            method: Method::POST,
            bucket: Some(bucket.clone()),
            key: None,
            query: vec![("delete".into(), String::new())],
            headers,
            body: full(text),
        };
        let store = match front.backend.forward(forwarded).await {
            Ok(r) if r.status().is_success() => {
                let bytes = read_bounded(r.into_body(), MAX_STORE_XML).await;
                bytes.and_then(|b| xml::parse_delete_result(&b).map_err(S3Error::from))
            }
            Ok(r) => Err(store_error(r, &Method::POST).await),
            Err(e) => Err(S3Error::Backend(e)),
        };
        match store {
            Ok(results) => {
                for (key, mut slot) in allowed {
                    let result = results.iter().find(|o| match o {
                        xml::DeleteOutcome::Deleted(k) => *k == key,
                        xml::DeleteOutcome::Error { key: k, .. } => *k == key,
                    });
                    let outcome = slot.event_mut().outcome_mut();
                    match result {
                        Some(xml::DeleteOutcome::Error { code, .. }) => {
                            outcome.status = Some(400);
                            outcome.error_code = Some(code.clone());
                        }
                        _ => outcome.status = Some(204),
                    }
                    slot.finish();
                }
                outcomes.extend(results);
            }
            Err(e) => {
                for (key, mut slot) in allowed {
                    let outcome = slot.event_mut().outcome_mut();
                    outcome.status = Some(e.status().as_u16());
                    outcome.error_code = Some(e.code().to_owned());
                    slot.finish();
                    outcomes.push(xml::DeleteOutcome::Error { key, code: e.code().to_owned(), message: e.message() });
                }
            }
        }
    }
    let text = xml::delete_result(&outcomes, request.quiet);
    let mut r = Response::new(full(text));
    r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    Ok(stamp(r, &origin.request_id))
}

fn md5_digest(data: &[u8]) -> [u8; 16] {
    use md5::Digest;
    md5::Md5::digest(data).into()
}
