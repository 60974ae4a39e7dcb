//! ListBuckets: the store's list, narrowed to what the caller may see; and CreateBucket, answered by the same rule.

use http::{HeaderMap, HeaderValue, Method, Response};

use super::auth::Caller;
use super::backend::{BoxBody, ForwardRequest};
use super::classify::{ClassifyError, Operation};
use super::error::S3Error;
use super::service::{
    MAX_STORE_XML, S3Front, caller_details, decide, empty, error_response, full, read_bounded, stamp, store_error,
    touches_bucket,
};
use lakegate_core::credentials::Scope;
use lakegate_core::gate::{BucketCandidate, Origin};
use lakegate_s3_protocol::xml;

/// ListBuckets: the store's list, narrowed to the buckets the caller can see something in.
pub(crate) async fn list_buckets(
    front: &S3Front,
    origin: &Origin,
    caller: &Caller,
) -> Result<Response<BoxBody>, S3Error> {
    let request = ForwardRequest {
        method: Method::GET,
        bucket: None,
        key: None,
        query: Vec::new(),
        headers: HeaderMap::new(),
        body: empty(),
    };
    let response = front.backend.forward(request).await?;
    if !response.status().is_success() {
        return Err(store_error(response, &Method::GET).await);
    }
    let bytes = read_bounded(response.into_body(), MAX_STORE_XML).await?;
    let all = xml::parse_list_buckets(&bytes)?;
    // Only buckets the credential reaches are candidates; the gate decides which of them the policy shows.
    let candidates = all
        .iter()
        .filter(|b| touches_bucket(&caller.scope, &b.name))
        .map(|b| BucketCandidate { bucket: b.name.clone(), prefixes: scoped_prefixes(&caller.scope, &b.name) })
        .collect();
    let listing = front.gate.list_buckets(origin, &caller.principal, candidates, caller_details(caller)).await?;
    let visible: Vec<xml::BucketEntry> = all.into_iter().filter(|b| listing.visible.contains(&b.name)).collect();
    let text = xml::list_buckets(&visible, &caller.principal.subject);
    let mut slot = listing.slot;
    let outcome = slot.event_mut().outcome_mut();
    outcome.status = Some(200);
    outcome.bytes_out = text.len() as u64;
    slot.finish();
    let mut r = Response::new(full(text));
    r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    Ok(stamp(r, &origin.request_id))
}

/// CreateBucket (`PUT /<bucket>`), which Lakegate never carries out: bucket administration is the store
/// operator's. Tools such as rclone send it to make sure a bucket is there before they upload, and go on when S3
/// answers `409 BucketAlreadyOwnedByYou`. So: whoever may see into the bucket (the rule of ListBuckets: the
/// credential reaches into it and the live policy lets them list somewhere in it) hears `409` when it exists and
/// `501 NotImplemented` when it does not (creating buckets is not offered); everyone else `403 AccessDenied`,
/// before the store is asked, so the answer tells no one more than ListBuckets would. Decided and audited as
/// `s3:CreateBucket` on `s3://<bucket>/`.
pub(crate) async fn create_bucket(
    front: &S3Front,
    origin: &Origin,
    caller: &Caller,
    op: &Operation,
) -> Result<Response<BoxBody>, S3Error> {
    let bucket = op.bucket.clone().ok_or(ClassifyError::InvalidBucketName)?;
    let resource = op.resource()?;
    if !touches_bucket(&caller.scope, &bucket) {
        // Recorded as a denial outside the credential's scope, and answered 403.
        decide(front, origin, caller, op.kind.action(), &resource, false, op.kind.name()).await?;
    }
    let candidate = BucketCandidate { bucket: bucket.clone(), prefixes: scoped_prefixes(&caller.scope, &bucket) };
    let seen = front
        .gate
        .see_bucket(origin, &caller.principal, candidate, op.kind.action(), op.kind.name(), caller_details(caller))
        .await?;
    let mut slot = seen.slot;
    let visible = !seen.visible.is_empty();
    let error = if !visible {
        // The record already says why (the default deny of `see_bucket`); the client hears S3's plain denial.
        S3Error::OutOfScope
    } else {
        let head = ForwardRequest {
            method: Method::HEAD,
            bucket: Some(bucket.clone()),
            key: None,
            query: Vec::new(),
            headers: HeaderMap::new(),
            body: empty(),
        };
        match front.backend.forward(head).await {
            Ok(r) if r.status().is_success() => already_yours(),
            Ok(r) if r.status() == http::StatusCode::NOT_FOUND => {
                S3Error::Classify(ClassifyError::NotImplemented("creating buckets"))
            }
            Ok(r) => store_error(r, &Method::HEAD).await,
            Err(e) => S3Error::Backend(e),
        }
    };
    // Nothing was created: the record of an allowed request says how it was answered.
    if visible {
        let reason = match &error {
            S3Error::Store { code, .. } if code == "BucketAlreadyOwnedByYou" => {
                "the bucket exists; nothing was created".to_owned()
            }
            other => other.to_string(),
        };
        slot.event_mut().reason = Some(reason);
    }
    let outcome = slot.event_mut().outcome_mut();
    outcome.status = Some(error.status().as_u16());
    outcome.error_code = Some(error.code().to_owned());
    slot.finish();
    Ok(error_response(&error, &format!("/{bucket}"), &origin.request_id, &Method::PUT))
}

/// S3's answer to creating a bucket that exists and is the caller's: rclone and the SDKs' "ensure bucket"
/// helpers read it as "already there" and go on.
fn already_yours() -> S3Error {
    S3Error::Store {
        status: http::StatusCode::CONFLICT,
        code: "BucketAlreadyOwnedByYou".to_owned(),
        message: "Your previous request to create the named bucket succeeded and you already own it.".to_owned(),
    }
}

/// The prefixes of `bucket` a credential scoped to grants reaches (where the policy may allow listing even when
/// it does not at the bucket's root).
fn scoped_prefixes(scope: &Scope, bucket: &str) -> Vec<String> {
    match scope {
        Scope::Grants(grants) => grants.iter().filter(|g| g.bucket == bucket).map(|g| g.prefix.clone()).collect(),
        Scope::Unrestricted => Vec::new(),
    }
}
