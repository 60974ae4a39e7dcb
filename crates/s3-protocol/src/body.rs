//! The body type both directions of an S3 exchange carry, and the small responses built from it.

use bytes::Bytes;
use http::{HeaderValue, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

use crate::sigv4::BoxError;

/// A streaming body, as both directions carry.
pub type BoxBody = UnsyncBoxBody<Bytes, BoxError>;

/// The request id headers of an S3 answer: S3's own and the one every Lakegate front sets.
const REQUEST_ID_HEADERS: [&str; 2] = ["x-amz-request-id", "x-request-id"];

/// Sets the request id headers on a response.
pub fn stamp<B>(mut r: Response<B>, request_id: &str) -> Response<B> {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        for name in REQUEST_ID_HEADERS {
            r.headers_mut().insert(name, v.clone());
        }
    }
    r
}

/// A body holding `text`.
pub fn full(text: String) -> BoxBody {
    full_bytes(Bytes::from(text))
}

/// A body holding `bytes`.
pub fn full_bytes(bytes: Bytes) -> BoxBody {
    Full::new(bytes).map_err(|never| match never {}).boxed_unsync()
}

/// An empty body.
pub fn empty() -> BoxBody {
    Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync()
}
