//! ListBuckets: the store's list, narrowed to what the caller may see.

use http::{HeaderMap, HeaderValue, Method, Response};

use super::auth::Caller;
use super::backend::{BoxBody, ForwardRequest};
use super::error::S3Error;
use super::service::{
    MAX_STORE_XML, S3Front, caller_details, empty, full, read_bounded, stamp, store_error, touches_bucket,
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

/// The prefixes of `bucket` a credential scoped to grants reaches (where the policy may allow listing even when
/// it does not at the bucket's root).
fn scoped_prefixes(scope: &Scope, bucket: &str) -> Vec<String> {
    match scope {
        Scope::Grants(grants) => grants.iter().filter(|g| g.bucket == bucket).map(|g| g.prefix.clone()).collect(),
        Scope::Unrestricted => Vec::new(),
    }
}
