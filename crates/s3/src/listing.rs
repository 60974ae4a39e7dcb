//! ListBuckets: the store's list, narrowed to what the caller may see.

use http::{HeaderMap, HeaderValue, Method, Response};

use super::auth::Caller;
use super::backend::{BoxBody, ForwardRequest};
use super::error::S3Error;
use super::service::{
    MAX_STORE_XML, S3Front, empty, full, read_bounded, stamp, store_error, touches_bucket, with_caller,
};
use lakegate_core::audit::Front;
use lakegate_core::credentials::Scope;
use lakegate_core::gate::{self, Origin};
use lakegate_core::policy::Resource;
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
    let visible: Vec<xml::BucketEntry> = all.into_iter().filter(|b| bucket_visible(front, caller, &b.name)).collect();
    let text = xml::list_buckets(&visible, &caller.principal.subject);
    let mut event =
        with_caller(gate::event(origin, "s3:ListAllMyBuckets", "s3://").principal(&caller.principal), caller)
            .allow(Vec::<String>::new())
            .extra("operation", "ListBuckets")
            .extra("buckets", visible.iter().map(|b| b.name.clone()).collect::<Vec<_>>());
    let outcome = event.outcome_mut();
    outcome.status = Some(200);
    outcome.bytes_out = text.len() as u64;
    front.gate.record(event).await?;
    let mut r = Response::new(full(text));
    r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    Ok(stamp(r, &origin.request_id))
}

/// A bucket is visible when the credential reaches into it and the live policy lets the caller list somewhere in
/// it: at its root, at a prefix a policy names, or at a prefix the credential is scoped to.
fn bucket_visible(front: &S3Front, caller: &Caller, bucket: &str) -> bool {
    if !touches_bucket(&caller.scope, bucket) {
        return false;
    }
    let mut candidates: Vec<String> = vec![String::new()];
    candidates.extend(front.gate.policy.s3_prefixes().into_iter().filter(|(b, _)| b == bucket).map(|(_, p)| p));
    if let Scope::Grants(grants) = &caller.scope {
        candidates.extend(grants.iter().filter(|g| g.bucket == bucket).map(|g| g.prefix.clone()));
    }
    candidates.iter().any(|prefix| {
        Resource::prefix(bucket, prefix)
            .is_ok_and(|r| front.gate.permits(&caller.principal, "s3:ListBucket", &r, Front::S3))
    })
}
