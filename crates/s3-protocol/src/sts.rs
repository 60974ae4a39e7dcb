//! The STS requests Lakegate serves beside S3 on the same port, as S3 clients and the sidecar send them.

use http::Method;

/// Whether a request is for STS rather than S3.
///
/// A form body or an `Action` parameter marks STS: a virtual-hosted `POST /?delete` (DeleteObjects) has the same
/// path but an XML body.
pub fn is_sts(parts: &http::request::Parts) -> bool {
    if parts.uri.path() != "/" {
        return false;
    }
    let action = parts.uri.query().is_some_and(|q| q.split('&').any(|p| p.starts_with("Action=")));
    let form = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    match parts.method {
        Method::POST => form || action,
        Method::GET => action,
        _ => false,
    }
}

/// IAM's RoleSessionName rule.
pub fn valid_session_name(name: &str) -> bool {
    (2..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parts(method: &str, uri: &str, content_type: Option<&str>) -> http::request::Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        if let Some(ct) = content_type {
            b = b.header("content-type", ct);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn sts_is_told_from_s3_by_its_form_body_or_action_parameter() {
        assert!(is_sts(&parts("POST", "/", Some("application/x-www-form-urlencoded; charset=utf-8"))));
        assert!(is_sts(&parts("GET", "/?Action=GetCallerIdentity&Version=2011-06-15", None)));
        assert!(!is_sts(&parts("POST", "/?delete", Some("application/xml"))));
        assert!(!is_sts(&parts("GET", "/", None)));
        assert!(!is_sts(&parts("POST", "/lake", Some("application/x-www-form-urlencoded"))));
    }
}
