//! Conditional GET and HEAD on the embedded store (`If-Match`, `If-None-Match`, `If-Modified-Since`,
//! `If-Unmodified-Since`), which s3s-fs does not evaluate: it sent the object with 200 whatever they said, so a
//! client revalidating a cached copy downloaded it again, and one guarding a read with `If-Match` read a
//! replaced object.
//!
//! The order is RFC 9110 §13.2.2's, which is also S3's documented behaviour for the two pairs:
//!
//! 1. `If-Match` (strong comparison, `*` matches any object) false: `412 PreconditionFailed`. When it is
//!    present `If-Unmodified-Since` is not looked at (S3: If-Match true and If-Unmodified-Since false is 200);
//!    otherwise `If-Unmodified-Since` with an object modified after the date: `412`.
//! 2. `If-None-Match` (weak comparison) true: `304 Not Modified`. When it is present `If-Modified-Since` is not
//!    looked at; otherwise `If-Modified-Since` with an object not modified after the date: `304`.
//!
//! HTTP dates have whole seconds, so the object's time is compared truncated to its second: a client that sends
//! back the `Last-Modified` it was given gets `304` (or passes `If-Unmodified-Since`), as on S3.

use s3s::dto::{ETag, ETagCondition, Timestamp, TimestampFormat};
use s3s::{S3Error, S3Result, s3_error};

/// The conditional headers of a GET or HEAD, as s3s parsed them.
#[derive(Debug, Default, Clone)]
pub(super) struct Preconditions {
    pub(super) if_match: Option<ETagCondition>,
    pub(super) if_none_match: Option<ETagCondition>,
    pub(super) if_modified_since: Option<Timestamp>,
    pub(super) if_unmodified_since: Option<Timestamp>,
}

impl Preconditions {
    /// Whether any conditional header was sent (none: nothing to evaluate).
    pub(super) fn is_empty(&self) -> bool {
        self.if_match.is_none()
            && self.if_none_match.is_none()
            && self.if_modified_since.is_none()
            && self.if_unmodified_since.is_none()
    }

    /// Evaluates the conditions against an object's ETag (its value, unquoted) and last-modified time (Unix
    /// seconds; `None` when unknown, which no date condition can then refuse): `Ok` to answer with the object,
    /// else `PreconditionFailed` (412) or `NotModified` (304).
    pub(super) fn evaluate(&self, e_tag: &str, modified: Option<i64>) -> S3Result<()> {
        let current = ETag::Strong(e_tag.to_owned());
        match &self.if_match {
            Some(condition) => {
                if !holds(condition, &current, ETag::strong_cmp) {
                    return Err(s3_error!(
                        PreconditionFailed,
                        "At least one of the pre-conditions you specified did not hold"
                    ));
                }
            }
            None => {
                if let (Some(date), Some(modified)) = (&self.if_unmodified_since, modified)
                    && modified > seconds(date)
                {
                    return Err(s3_error!(
                        PreconditionFailed,
                        "At least one of the pre-conditions you specified did not hold"
                    ));
                }
            }
        }
        match &self.if_none_match {
            Some(condition) => {
                if holds(condition, &current, ETag::weak_cmp) {
                    return Err(not_modified(e_tag, modified));
                }
            }
            None => {
                if let (Some(date), Some(modified)) = (&self.if_modified_since, modified)
                    && modified <= seconds(date)
                {
                    return Err(not_modified(e_tag, Some(modified)));
                }
            }
        }
        Ok(())
    }
}

/// `304 Not Modified` with the validators of the object the client already has (RFC 9110 §15.4.5: a 304
/// carries the `ETag` and `Last-Modified` a 200 would have, so a cache can update its entry).
fn not_modified(e_tag: &str, modified: Option<i64>) -> S3Error {
    let mut error = s3_error!(NotModified);
    let mut headers = http::HeaderMap::new();
    if let Ok(value) = http::HeaderValue::from_str(&format!("\"{e_tag}\"")) {
        headers.insert(http::header::ETAG, value);
    }
    let date = modified.and_then(|m| time::OffsetDateTime::from_unix_timestamp(m).ok()).and_then(|m| {
        let mut text = Vec::new();
        Timestamp::from(m).format(TimestampFormat::HttpDate, &mut text).ok()?;
        http::HeaderValue::from_bytes(&text).ok()
    });
    if let Some(date) = date {
        headers.insert(http::header::LAST_MODIFIED, date);
    }
    error.set_headers(headers);
    error
}

fn holds(condition: &ETagCondition, current: &ETag, compare: fn(&ETag, &ETag) -> bool) -> bool {
    match condition {
        ETagCondition::Any => true,
        ETagCondition::ETag(e_tag) => compare(current, e_tag),
    }
}

fn seconds(timestamp: &Timestamp) -> i64 {
    time::OffsetDateTime::from(timestamp.clone()).unix_timestamp()
}

/// Unix seconds of a file or stored time (what an HTTP date can express).
pub(super) fn unix_seconds(at: impl Into<Timestamp>) -> i64 {
    seconds(&at.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use s3s::S3ErrorCode;

    const E_TAG: &str = "9a0364b9e99bb480dd25e1f0284c8555";
    /// The object's last modification, in Unix seconds.
    const MODIFIED: i64 = 1_700_000_000;

    fn at(unix: i64) -> Timestamp {
        Timestamp::from(time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH))
    }

    fn tag(value: &str) -> Option<ETagCondition> {
        Some(ETagCondition::ETag(ETag::Strong(value.to_owned())))
    }

    fn outcome(p: Preconditions) -> Result<(), S3ErrorCode> {
        p.evaluate(E_TAG, Some(MODIFIED)).map_err(|e| e.code().clone())
    }

    #[test]
    fn no_condition_sends_the_object() {
        assert_eq!(outcome(Preconditions::default()), Ok(()));
        assert!(Preconditions::default().is_empty());
    }

    #[test]
    fn if_match_with_the_current_etag_or_a_star_sends_the_object() {
        assert_eq!(outcome(Preconditions { if_match: tag(E_TAG), ..Default::default() }), Ok(()));
        assert_eq!(outcome(Preconditions { if_match: Some(ETagCondition::Any), ..Default::default() }), Ok(()));
    }

    #[test]
    fn if_match_with_another_etag_is_412() {
        let p = Preconditions { if_match: tag("other"), ..Default::default() };
        assert_eq!(outcome(p), Err(S3ErrorCode::PreconditionFailed));
    }

    #[test]
    fn if_match_compares_strongly_so_a_weak_etag_never_matches() {
        let p =
            Preconditions { if_match: Some(ETagCondition::ETag(ETag::Weak(E_TAG.to_owned()))), ..Default::default() };
        assert_eq!(outcome(p), Err(S3ErrorCode::PreconditionFailed));
    }

    #[test]
    fn if_none_match_with_the_current_etag_or_a_star_is_304() {
        let p = Preconditions { if_none_match: tag(E_TAG), ..Default::default() };
        assert_eq!(outcome(p), Err(S3ErrorCode::NotModified));
        let p = Preconditions { if_none_match: Some(ETagCondition::Any), ..Default::default() };
        assert_eq!(outcome(p), Err(S3ErrorCode::NotModified));
    }

    #[test]
    fn not_modified_carries_the_etag_and_last_modified_of_the_object() {
        let p = Preconditions { if_none_match: tag(E_TAG), ..Default::default() };
        let error = p.evaluate(E_TAG, Some(MODIFIED)).err().unwrap_or_else(|| S3Error::new(S3ErrorCode::InternalError));
        let headers = error.headers().cloned().unwrap_or_default();
        assert_eq!(headers.get("etag").and_then(|v| v.to_str().ok()), Some(format!("\"{E_TAG}\"").as_str()));
        assert_eq!(headers.get("last-modified").and_then(|v| v.to_str().ok()), Some("Tue, 14 Nov 2023 22:13:20 GMT"));
    }

    #[test]
    fn if_none_match_compares_weakly() {
        let p = Preconditions {
            if_none_match: Some(ETagCondition::ETag(ETag::Weak(E_TAG.to_owned()))),
            ..Default::default()
        };
        assert_eq!(outcome(p), Err(S3ErrorCode::NotModified));
    }

    #[test]
    fn if_none_match_with_another_etag_sends_the_object() {
        assert_eq!(outcome(Preconditions { if_none_match: tag("other"), ..Default::default() }), Ok(()));
    }

    #[test]
    fn if_modified_since_is_304_unless_modified_after_the_date() {
        let since = |unix| Preconditions { if_modified_since: Some(at(unix)), ..Default::default() };
        assert_eq!(outcome(since(MODIFIED)), Err(S3ErrorCode::NotModified), "sent back Last-Modified");
        assert_eq!(outcome(since(MODIFIED + 3600)), Err(S3ErrorCode::NotModified));
        assert_eq!(outcome(since(MODIFIED - 1)), Ok(()));
    }

    #[test]
    fn if_unmodified_since_is_412_when_modified_after_the_date() {
        let since = |unix| Preconditions { if_unmodified_since: Some(at(unix)), ..Default::default() };
        assert_eq!(outcome(since(MODIFIED - 1)), Err(S3ErrorCode::PreconditionFailed));
        assert_eq!(outcome(since(MODIFIED)), Ok(()), "sent back Last-Modified");
        assert_eq!(outcome(since(MODIFIED + 3600)), Ok(()));
    }

    #[test]
    fn a_true_if_match_overrides_a_false_if_unmodified_since() {
        let p =
            Preconditions { if_match: tag(E_TAG), if_unmodified_since: Some(at(MODIFIED - 1)), ..Default::default() };
        assert_eq!(outcome(p), Ok(()));
    }

    #[test]
    fn a_false_if_none_match_overrides_a_true_if_modified_since() {
        // The ETag differs: the client's copy is stale whatever the dates say.
        let p =
            Preconditions { if_none_match: tag("other"), if_modified_since: Some(at(MODIFIED)), ..Default::default() };
        assert_eq!(outcome(p), Ok(()));
    }

    #[test]
    fn a_failed_precondition_wins_over_not_modified() {
        let p = Preconditions { if_match: tag("other"), if_none_match: tag(E_TAG), ..Default::default() };
        assert_eq!(outcome(p), Err(S3ErrorCode::PreconditionFailed));
    }

    #[test]
    fn the_object_time_is_compared_to_the_second() {
        // Modified at MODIFIED + 0.9 s: its Last-Modified header says MODIFIED.
        let modified = unix_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_900));
        assert_eq!(modified, MODIFIED);
    }

    #[test]
    fn an_unknown_modification_time_refuses_on_no_date() {
        let p = Preconditions {
            if_unmodified_since: Some(at(0)),
            if_modified_since: Some(at(i64::from(u32::MAX))),
            ..Default::default()
        };
        assert!(p.evaluate(E_TAG, None).is_ok());
    }
}
