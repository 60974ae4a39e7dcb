//! POST Object's form: the fields, the policy document and its signature.
//!
//! A browser form upload (`multipart/form-data` POSTed to a bucket) carries in form fields what a PUT carries
//! in headers, and its authorisation too: `policy` (the base64 of a JSON document with an `expiration` and a list
//! of `conditions`), `x-amz-algorithm`, `x-amz-credential`, `x-amz-date`, `x-amz-signature` (SigV4's HMAC of the
//! policy's base64 text under the day's signing key) and, for session credentials, `x-amz-security-token`.
//!
//! S3's rules, applied here:
//! - The policy must not have expired.
//! - Every form field except `x-amz-signature`, `file`, `policy` and `x-ignore-*` must be named by a condition;
//!   the bucket counts as a field.
//! - Each condition must hold: `{"field": "value"}` and `["eq", "$field", "value"]` exactly,
//!   `["starts-with", "$field", "prefix"]` by prefix (each value of a comma-separated `Content-Type`), and
//!   `["content-length-range", min, max]` on the file's length, which only the caller can see.
//! - Field names are matched without regard to case; `expiration`, `conditions` and the operators exactly.
//!
//! Signature Version 2 forms (`AWSAccessKeyId` and `signature`, HMAC-SHA1) are refused as SigV2 requests are:
//! [`crate::sigv4::SigV4Error::SignatureVersion2`] names the client setting that switches to SigV4.

use base64::Engine;
use serde_json::Value;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::sigv4::{ALGORITHM, Credential, SigV4Error, SigningKey, parse_amz_date};

/// Most bytes all fields but the file may hold together, as S3 allows (20 KiB).
pub const MAX_FIELD_BYTES: usize = 20 * 1024;
/// Largest object a form may upload, as S3 allows (5 GiB).
pub const MAX_FILE_BYTES: u64 = 5 * 1024 * 1024 * 1024;

/// Why a form upload was refused, one variant per S3 error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostError {
    /// The body is not `multipart/form-data` as S3 reads it.
    #[error("the body of the POST request is not well-formed multipart/form-data: {0}")]
    Malformed(String),
    /// A field the form needs is missing, or one it has cannot be used.
    #[error("{0}")]
    InvalidArgument(String),
    /// The form has no file, or more than one.
    #[error("POST requires exactly one file upload per request")]
    FileCount,
    /// The policy cannot be decoded or read as a policy document.
    #[error("invalid policy document: {0}")]
    InvalidPolicy(String),
    /// The policy, correctly signed, does not allow this upload.
    #[error("Invalid according to Policy: {0}")]
    PolicyRefused(String),
    /// A Signature Version 2 form (`AWSAccessKeyId`, `signature`): refused as SigV2 requests are.
    #[error("{}", SigV4Error::SignatureVersion2)]
    SignatureVersion2,
    /// The form carries no signature: Lakegate serves no anonymous uploads.
    #[error("a form upload must be signed with a POST policy (Lakegate serves no anonymous requests)")]
    Anonymous,
    #[error("Your proposed upload exceeds the maximum allowed size")]
    TooLarge,
    #[error("Your proposed upload is smaller than the minimum allowed size")]
    TooSmall,
}

impl PostError {
    /// The S3 error code.
    pub fn s3_code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "MalformedPOSTRequest",
            Self::InvalidArgument(_) => "InvalidArgument",
            Self::SignatureVersion2 => SigV4Error::SignatureVersion2.s3_code(),
            Self::FileCount => "IncorrectNumberOfFilesInPostRequest",
            Self::InvalidPolicy(_) => "InvalidPolicyDocument",
            Self::PolicyRefused(_) | Self::Anonymous => "AccessDenied",
            Self::TooLarge => "EntityTooLarge",
            Self::TooSmall => "EntityTooSmall",
        }
    }

    /// The HTTP status.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::PolicyRefused(_) | Self::Anonymous => 403,
            _ => 400,
        }
    }
}

/// The form's fields other than the file, in order, names lower-cased.
#[derive(Debug, Clone, Default)]
pub struct PostForm {
    fields: Vec<(String, String)>,
    bytes: usize,
}

impl PostForm {
    /// Adds a field. A name given twice is refused: which of the two the policy meant would be a guess.
    pub fn push(&mut self, name: &str, value: String) -> Result<(), PostError> {
        let name = name.to_ascii_lowercase();
        if self.get(&name).is_some() {
            return Err(PostError::InvalidArgument(format!("the form field {name} is given more than once")));
        }
        self.bytes = self.bytes.saturating_add(name.len() + value.len());
        if self.bytes > MAX_FIELD_BYTES {
            return Err(PostError::Malformed(format!("the form fields exceed {MAX_FIELD_BYTES} bytes")));
        }
        self.fields.push((name, value));
        Ok(())
    }

    /// The value of field `name` (lower-case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Every field, names lower-cased.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The object key: the `key` field, with `${filename}` replaced by the uploaded file's name as S3 does.
    pub fn key(&self, file_name: Option<&str>) -> Result<String, PostError> {
        let key = self
            .get("key")
            .filter(|k| !k.is_empty())
            .ok_or_else(|| PostError::InvalidArgument("Bucket POST must contain a field named 'key'".into()))?;
        Ok(key.replace("${filename}", file_name.unwrap_or_default()))
    }

    /// How the form is signed. The signature itself is checked by [`FormSignature::verify`] once the caller has
    /// the secret for [`FormSignature::credential`].
    pub fn signature(&self) -> Result<FormSignature<'_>, PostError> {
        if self.get("awsaccesskeyid").is_some() || self.get("signature").is_some() {
            return Err(PostError::SignatureVersion2);
        }
        let Some(policy) = self.get("policy") else {
            return Err(if self.get("x-amz-signature").is_some() || self.get("x-amz-credential").is_some() {
                PostError::InvalidArgument("Bucket POST must contain a field named 'policy'".into())
            } else {
                PostError::Anonymous
            });
        };
        let field = |name: &'static str| {
            self.get(name)
                .ok_or_else(|| PostError::InvalidArgument(format!("Bucket POST must contain a field named '{name}'")))
        };
        if field("x-amz-algorithm")? != ALGORITHM {
            return Err(PostError::InvalidArgument(format!("x-amz-algorithm must be {ALGORITHM}")));
        }
        let credential = Credential::parse(field("x-amz-credential")?)
            .map_err(|e| PostError::InvalidArgument(format!("x-amz-credential: {e}")))?;
        let date = field("x-amz-date")?;
        let signed_at = parse_amz_date(date)
            .ok_or_else(|| PostError::InvalidArgument("x-amz-date is not a valid ISO 8601 basic date-time".into()))?;
        if date.get(..8) != Some(credential.date) {
            return Err(PostError::InvalidArgument("the credential date is not the date of x-amz-date".into()));
        }
        if credential.service != "s3" {
            return Err(PostError::InvalidArgument("the credential's service must be s3".into()));
        }
        let signature = hex::decode(field("x-amz-signature")?)
            .ok()
            .and_then(|s| <[u8; 32]>::try_from(s).ok())
            .ok_or_else(|| PostError::InvalidArgument("x-amz-signature is not 64 hex digits".into()))?;
        Ok(FormSignature { credential, signed_at, signature, policy, session_token: self.get("x-amz-security-token") })
    }
}

/// A form's SigV4 signature, parsed and not yet verified.
#[derive(Debug, Clone)]
pub struct FormSignature<'a> {
    pub credential: Credential<'a>,
    pub signed_at: OffsetDateTime,
    signature: [u8; 32],
    /// The policy's base64 text, the string that is signed.
    pub policy: &'a str,
    pub session_token: Option<&'a str>,
}

impl FormSignature<'_> {
    /// Checks the signature with the signing key of the credential's scope, in constant time.
    pub fn verify(&self, key: &SigningKey) -> Result<(), SigV4Error> {
        let expected = key.sign(self.policy.as_bytes());
        if bool::from(expected.ct_eq(&self.signature)) {
            Ok(())
        } else {
            Err(SigV4Error::SignatureDoesNotMatch("the form's signature is not the policy's"))
        }
    }
}

/// A decoded policy document.
#[derive(Debug, Clone, PartialEq)]
pub struct PostPolicy {
    expiration: OffsetDateTime,
    conditions: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq)]
enum Condition {
    Eq { field: String, value: String },
    StartsWith { field: String, prefix: String },
    LengthRange { min: u64, max: u64 },
}

/// The file lengths a policy allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthRange {
    pub min: u64,
    pub max: u64,
}

impl LengthRange {
    /// Whether `length` is allowed; the error says which way it is not.
    pub fn check(&self, length: u64) -> Result<(), PostError> {
        if length > self.max {
            Err(PostError::TooLarge)
        } else if length < self.min {
            Err(PostError::TooSmall)
        } else {
            Ok(())
        }
    }
}

impl PostPolicy {
    /// Decodes the `policy` field.
    pub fn parse(base64_text: &str) -> Result<Self, PostError> {
        let invalid = |why: &str| PostError::InvalidPolicy(why.to_owned());
        let json = base64::engine::general_purpose::STANDARD
            .decode(base64_text.trim())
            .map_err(|_| invalid("the policy is not base64"))?;
        let doc: serde_json::Map<String, Value> =
            serde_json::from_slice(&json).map_err(|_| invalid("the policy is not a JSON object"))?;
        let expiration =
            doc.get("expiration").and_then(Value::as_str).ok_or_else(|| invalid("the policy has no expiration"))?;
        let expiration = OffsetDateTime::parse(expiration, &Rfc3339)
            .map_err(|_| invalid("the policy's expiration is not an ISO 8601 date-time"))?;
        let list = doc
            .get("conditions")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("the policy has no conditions list"))?;
        let conditions = list.iter().map(Condition::parse).collect::<Result<_, _>>()?;
        Ok(Self { expiration, conditions })
    }

    /// Checks the form against the policy at `now`: not expired, every field named by a condition, every
    /// condition met. `key` is the object key after `${filename}`. Returns the lengths the file may have.
    pub fn check(
        &self,
        now: OffsetDateTime,
        form: &PostForm,
        bucket: &str,
        key: &str,
    ) -> Result<LengthRange, PostError> {
        if now >= self.expiration {
            return Err(PostError::PolicyRefused("Policy expired.".into()));
        }
        let value_of = |field: &str| match field {
            "bucket" => Some(bucket),
            "key" => Some(key),
            other => form.get(other),
        };
        let mut range = LengthRange { min: 0, max: MAX_FILE_BYTES };
        for condition in &self.conditions {
            let holds = match condition {
                Condition::Eq { field, value } => value_of(field) == Some(value.as_str()),
                Condition::StartsWith { field, prefix } => match value_of(field) {
                    // A content type may list several values; each must start with the prefix.
                    Some(v) if field == "content-type" => {
                        v.split(',').all(|t| t.trim_start().starts_with(prefix.as_str()))
                    }
                    Some(v) => v.starts_with(prefix.as_str()),
                    None => prefix.is_empty(),
                },
                Condition::LengthRange { min, max } => {
                    range = LengthRange { min: range.min.max(*min), max: range.max.min(*max) };
                    true
                }
            };
            if !holds {
                return Err(PostError::PolicyRefused(format!("Policy Condition failed: {}", condition.describe())));
            }
        }
        let named = |field: &str| {
            self.conditions.iter().any(|c| match c {
                Condition::Eq { field: f, .. } | Condition::StartsWith { field: f, .. } => f == field,
                Condition::LengthRange { .. } => false,
            })
        };
        let extra: Vec<&str> = std::iter::once("bucket")
            .chain(form.fields().map(|(n, _)| n))
            .filter(|n| !matches!(*n, "x-amz-signature" | "file" | "policy") && !n.starts_with("x-ignore-"))
            .filter(|n| !named(n))
            .collect();
        if !extra.is_empty() {
            return Err(PostError::PolicyRefused(format!("Extra input fields: {}", extra.join(", "))));
        }
        Ok(range)
    }
}

impl Condition {
    fn parse(value: &Value) -> Result<Self, PostError> {
        let invalid = |why: String| PostError::InvalidPolicy(why);
        match value {
            Value::Object(map) => {
                let mut entries = map.iter();
                match (entries.next(), entries.next()) {
                    (Some((field, Value::String(v))), None) => {
                        Ok(Self::Eq { field: field.to_ascii_lowercase(), value: v.clone() })
                    }
                    _ => Err(invalid("a condition object must hold one field and its string value".into())),
                }
            }
            Value::Array(items) => match items.as_slice() {
                [Value::String(op), Value::String(field), Value::String(v)] if op == "eq" || op == "starts-with" => {
                    let field = field
                        .strip_prefix('$')
                        .ok_or_else(|| invalid(format!("the field of an {op} condition must start with $")))?
                        .to_ascii_lowercase();
                    Ok(if op == "eq" {
                        Self::Eq { field, value: v.clone() }
                    } else {
                        Self::StartsWith { field, prefix: v.clone() }
                    })
                }
                [Value::String(op), min, max] if op == "content-length-range" => {
                    let bound = |v: &Value| match v {
                        Value::Number(n) => n.as_u64(),
                        Value::String(s) => s.parse().ok(),
                        _ => None,
                    };
                    match (bound(min), bound(max)) {
                        (Some(min), Some(max)) if min <= max => Ok(Self::LengthRange { min, max }),
                        _ => Err(invalid("content-length-range needs two non-negative bounds, min <= max".into())),
                    }
                }
                _ => Err(invalid("a condition list must be eq, starts-with or content-length-range".into())),
            },
            _ => Err(invalid("a condition must be an object or a list".into())),
        }
    }

    /// The condition as S3 quotes it in a refusal.
    fn describe(&self) -> String {
        match self {
            Self::Eq { field, value } => format!("[\"eq\", \"${field}\", \"{value}\"]"),
            Self::StartsWith { field, prefix } => format!("[\"starts-with\", \"${field}\", \"{prefix}\"]"),
            Self::LengthRange { min, max } => format!("[\"content-length-range\", {min}, {max}]"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::sigv4::{SecretKey, derive_signing_key};

    fn b64(json: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(json)
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::parse("2026-11-29T10:00:00Z", &Rfc3339).unwrap()
    }

    fn form(fields: &[(&str, &str)]) -> PostForm {
        let mut f = PostForm::default();
        for (n, v) in fields {
            f.push(n, (*v).to_owned()).unwrap();
        }
        f
    }

    const POLICY: &str = r#"{"expiration": "2026-11-29T11:00:00Z", "conditions": [
        {"bucket": "lake"}, ["starts-with", "$key", "sales/"], ["starts-with", "$Content-Type", "text/"],
        ["content-length-range", 1, 1024]]}"#;

    #[test]
    fn a_form_within_its_policy_gets_the_policy_length_range() {
        let policy = PostPolicy::parse(&b64(POLICY)).unwrap();
        let f = form(&[("Key", "sales/a.txt"), ("Content-Type", "text/plain")]);
        let range = policy.check(now(), &f, "lake", "sales/a.txt").unwrap();
        assert_eq!(range, LengthRange { min: 1, max: 1024 });
        assert_eq!(range.check(0), Err(PostError::TooSmall));
        assert_eq!(range.check(1025), Err(PostError::TooLarge));
        assert_eq!(range.check(1024), Ok(()));
    }

    #[test]
    fn every_condition_must_hold() {
        let policy = PostPolicy::parse(&b64(POLICY)).unwrap();
        let f = form(&[("key", "hr/a.txt"), ("content-type", "text/plain")]);
        assert!(matches!(policy.check(now(), &f, "lake", "hr/a.txt"), Err(PostError::PolicyRefused(_))));
        let f = form(&[("key", "sales/a"), ("content-type", "text/plain,image/png")]);
        assert!(matches!(policy.check(now(), &f, "lake", "sales/a"), Err(PostError::PolicyRefused(_))));
        let f = form(&[("key", "sales/a"), ("content-type", "text/plain")]);
        assert!(matches!(policy.check(now(), &f, "other", "sales/a"), Err(PostError::PolicyRefused(_))));
    }

    #[test]
    fn a_field_no_condition_names_is_refused_unless_exempt() {
        let policy = PostPolicy::parse(&b64(POLICY)).unwrap();
        let f = form(&[("key", "sales/a"), ("content-type", "text/x"), ("x-amz-meta-owner", "mallory")]);
        let e = policy.check(now(), &f, "lake", "sales/a").unwrap_err();
        assert_eq!(e, PostError::PolicyRefused("Extra input fields: x-amz-meta-owner".into()));
        let f = form(&[
            ("key", "sales/a"),
            ("content-type", "text/x"),
            ("x-ignore-me", "1"),
            ("policy", "p"),
            ("x-amz-signature", "s"),
        ]);
        assert!(policy.check(now(), &f, "lake", "sales/a").is_ok());
    }

    #[test]
    fn the_bucket_counts_as_a_field() {
        let policy = PostPolicy::parse(&b64(r#"{"expiration": "2026-11-29T11:00:00Z", "conditions": [
            ["starts-with", "$key", ""]]}"#))
        .unwrap();
        let e = policy.check(now(), &form(&[("key", "k")]), "lake", "k").unwrap_err();
        assert_eq!(e, PostError::PolicyRefused("Extra input fields: bucket".into()));
    }

    #[test]
    fn an_expired_policy_is_refused() {
        let policy = PostPolicy::parse(&b64(POLICY)).unwrap();
        let later = OffsetDateTime::parse("2026-11-29T11:00:00Z", &Rfc3339).unwrap();
        let f = form(&[("key", "sales/a"), ("content-type", "text/x")]);
        assert_eq!(policy.check(later, &f, "lake", "sales/a"), Err(PostError::PolicyRefused("Policy expired.".into())));
    }

    #[test]
    fn malformed_policies_are_invalid_documents() {
        for doc in [
            "not json",
            r#"{"conditions": []}"#,
            r#"{"Expiration": "2026-11-29T11:00:00Z", "conditions": []}"#,
            r#"{"expiration": "2026-11-29T11:00:00Z", "CONDITIONS": []}"#,
            r#"{"expiration": "tomorrow", "conditions": []}"#,
            r#"{"expiration": "2026-11-29T11:00:00Z", "conditions": [["content-length-range", 0]]}"#,
            r#"{"expiration": "2026-11-29T11:00:00Z", "conditions": [["content-length-range", -1, 0]]}"#,
            r#"{"expiration": "2026-11-29T11:00:00Z", "conditions": [["EQ", "$key", "a"]]}"#,
            r#"{"expiration": "2026-11-29T11:00:00Z", "conditions": [["eq", "key", "a"]]}"#,
        ] {
            assert!(matches!(PostPolicy::parse(&b64(doc)), Err(PostError::InvalidPolicy(_))), "{doc}");
        }
        assert!(matches!(PostPolicy::parse("%%%"), Err(PostError::InvalidPolicy(_))));
    }

    #[test]
    fn the_key_takes_the_file_name_and_must_be_given() {
        assert_eq!(form(&[("key", "in/${filename}")]).key(Some("a.csv")).unwrap(), "in/a.csv");
        assert!(matches!(form(&[]).key(None), Err(PostError::InvalidArgument(_))));
        assert!(matches!(form(&[("key", "")]).key(None), Err(PostError::InvalidArgument(_))));
    }

    #[test]
    fn a_field_given_twice_is_refused() {
        let mut f = form(&[("key", "a")]);
        assert!(f.push("KEY", "b".into()).is_err());
    }

    #[test]
    fn the_signature_is_sigv4_over_the_policy_text() {
        let secret = SecretKey::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
        let key = derive_signing_key(&secret, "20261129", "us-east-1", "s3");
        let policy = b64(POLICY);
        let signature = hex::encode(key.sign(policy.as_bytes()));
        let fields = |sig: &str| {
            form(&[
                ("policy", &policy),
                ("x-amz-algorithm", "AWS4-HMAC-SHA256"),
                ("x-amz-credential", "AKIDEXAMPLE/20261129/us-east-1/s3/aws4_request"),
                ("x-amz-date", "20261129T100000Z"),
                ("x-amz-signature", sig),
                ("x-amz-security-token", "token"),
            ])
        };
        let good = fields(&signature);
        let parsed = good.signature().unwrap();
        assert_eq!(parsed.credential.access_key_id, "AKIDEXAMPLE");
        assert_eq!(parsed.session_token, Some("token"));
        assert_eq!(parsed.verify(&key), Ok(()));
        let mut flipped = signature.into_bytes();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        let bad = fields(std::str::from_utf8(&flipped).unwrap());
        assert!(matches!(bad.signature().unwrap().verify(&key), Err(SigV4Error::SignatureDoesNotMatch(_))));
    }

    #[test]
    fn unsigned_sigv2_and_half_signed_forms_are_refused_before_any_lookup() {
        assert_eq!(form(&[("key", "a")]).signature().unwrap_err(), PostError::Anonymous);
        let v2 = form(&[("AWSAccessKeyId", "AKID"), ("signature", "x"), ("policy", "p")]);
        let refusal = v2.signature().unwrap_err();
        assert_eq!((refusal.s3_code(), refusal.http_status()), ("InvalidRequest", 400));
        assert!(refusal.to_string().contains("signature_version='s3v4'"));
        let unsigned = form(&[("policy", "p"), ("x-amz-algorithm", "AWS4-HMAC-SHA256")]);
        assert!(matches!(unsigned.signature(), Err(PostError::InvalidArgument(_))));
        let wrong_day = form(&[
            ("policy", "p"),
            ("x-amz-algorithm", "AWS4-HMAC-SHA256"),
            ("x-amz-credential", "AKID/20261128/us-east-1/s3/aws4_request"),
            ("x-amz-date", "20261129T100000Z"),
            ("x-amz-signature", &"0".repeat(64)),
        ]);
        assert!(matches!(wrong_day.signature(), Err(PostError::InvalidArgument(_))));
    }
}
