//! Request verification: from a request head to an authenticated access key id.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use super::canonical::{CanonicalParts, PathMode, decode_query_value, write_canonical_request};
use super::chunked::{AwsChunkedDecoder, ChunkSigner, ChunkedMode};
use super::error::{LookupError, SigV4Error};
use super::key::{SecretKey, SigningKey, derive_signing_key, macs_equal, parse_hex32, string_to_sign};
use super::parse::{
    ALGORITHM, Credential, format_amz_date, parse_amz_date, parse_authorization_header, parse_http_date,
    parse_signature, parse_signed_headers,
};

/// Longest validity a presigned URL may ask for (`X-Amz-Expires`), seven days as in S3.
pub const MAX_PRESIGNED_EXPIRES_SECS: i64 = 604_800;

/// Most names accepted in `x-amz-trailer`.
const MAX_DECLARED_TRAILERS: usize = 8;

/// What the verifier reads of a request: no body, and the path and query exactly as received.
///
/// The path and query are raw strings rather than an [`http::Uri`] because the canonical request
/// must be built from what the client sent, byte for byte.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// The method, e.g. `PUT`.
    pub method: &'a str,
    /// The path as received, still percent-encoded, without the query.
    pub path: &'a str,
    /// The raw query string without `?`, if any.
    pub query: Option<&'a str>,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The authority, used as the `host` value when there is no `Host` header (HTTP/2 sends
    /// `:authority`, which hyper keeps in the URI rather than in the headers).
    pub authority: Option<&'a str>,
}

impl<'a> RequestHead<'a> {
    /// The head of an [`http::Request`].
    pub fn from_parts(parts: &'a http::request::Parts) -> Self {
        Self {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &parts.headers,
            authority: parts.uri.authority().map(|a| a.as_str()),
        }
    }
}

/// What the caller decides for one verification.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The verifier's clock.
    pub now: OffsetDateTime,
    /// Largest allowed distance between the request time and `now` (S3: 15 minutes).
    pub max_skew: Duration,
    /// How the path is canonicalized.
    pub path_mode: PathMode,
    /// Credential-scope services accepted (`s3` for the S3 front, `sts` for the token front).
    pub allowed_services: &'static [&'static str],
    /// The SHA-256 of the body when the caller already has it (a small buffered body, or none).
    /// Used as the payload hash when the request carries no `x-amz-content-sha256`, and checked
    /// against it when it does. Without it, a header-signed request must carry the header and a
    /// presigned one is `UNSIGNED-PAYLOAD`.
    pub known_body_sha256: Option<[u8; 32]>,
}

impl VerifyOptions {
    /// The S3 front's defaults: 15 minutes of skew, S3 path rules, service `s3`.
    pub fn s3(now: OffsetDateTime) -> Self {
        Self {
            now,
            max_skew: Duration::minutes(15),
            path_mode: PathMode::S3,
            allowed_services: &["s3"],
            known_body_sha256: None,
        }
    }
}

/// Gives the secret for an access key id (and session token, when the client sent one).
///
/// The lookup decides whether a key needs a token and whether the token belongs to the key; its
/// [`LookupError`]s pass through as `InvalidAccessKeyId`, `ExpiredToken` or `InvalidToken`. The
/// token handed to it is already covered by the signature check that follows, but is not yet
/// verified when the lookup runs: the lookup must not act on it beyond finding the secret.
pub trait CredentialLookup {
    /// The secret for `access_key_id`.
    fn secret_for(&self, access_key_id: &str, session_token: Option<&str>) -> Result<SecretKey, LookupError>;
}

impl<F> CredentialLookup for F
where
    F: Fn(&str, Option<&str>) -> Result<SecretKey, LookupError>,
{
    fn secret_for(&self, access_key_id: &str, session_token: Option<&str>) -> Result<SecretKey, LookupError> {
        self(access_key_id, session_token)
    }
}

/// Where the signature was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthForm {
    /// The `Authorization` header.
    Header,
    /// Presigned query parameters; the URL is valid until `expires_at`.
    Presigned {
        /// End of validity (`X-Amz-Date` + `X-Amz-Expires`).
        expires_at: OffsetDateTime,
    },
}

/// How the body is protected, from `x-amz-content-sha256`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadMode {
    /// `UNSIGNED-PAYLOAD`: the body is not covered.
    Unsigned,
    /// The body must hash to this; wrap it in [`super::Sha256VerifiedBody`].
    Sha256([u8; 32]),
    /// aws-chunked with signed chunks (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`).
    StreamingSigned {
        /// `x-amz-decoded-content-length`.
        decoded_length: u64,
    },
    /// aws-chunked with signed chunks and a signed trailer
    /// (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`).
    StreamingSignedTrailer {
        /// `x-amz-decoded-content-length`.
        decoded_length: u64,
        /// The trailer names announced in `x-amz-trailer`, lowercase.
        trailers: Vec<String>,
    },
    /// aws-chunked with unsigned chunks and a trailing checksum
    /// (`STREAMING-UNSIGNED-PAYLOAD-TRAILER`).
    StreamingUnsignedTrailer {
        /// `x-amz-decoded-content-length`.
        decoded_length: u64,
        /// The trailer names announced in `x-amz-trailer`, lowercase.
        trailers: Vec<String>,
    },
}

/// The credential scope of a verified request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// `YYYYMMDD`.
    pub date: String,
    /// The region the client signed for; not checked by the verifier.
    pub region: String,
    /// The service the client signed for, one of [`VerifyOptions::allowed_services`].
    pub service: String,
}

/// A request whose signature verified.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The authenticated access key id.
    pub access_key_id: String,
    /// The credential scope.
    pub scope: Scope,
    /// The signed header names, lowercase, sorted.
    pub signed_headers: Vec<String>,
    /// How the body is protected; the caller must wrap the body accordingly.
    pub payload: PayloadMode,
    /// Header or presigned form.
    pub form: AuthForm,
    /// The request time the signature covers.
    pub request_time: OffsetDateTime,
    /// What the chunk signatures of a streaming payload chain from; `None` for any other payload.
    pub(super) seed: Option<ChunkSigner>,
}

impl Verified {
    /// The aws-chunked decoder for a streaming payload, chained from this request's signature;
    /// `None` for non-streaming payloads.
    pub fn aws_chunked_decoder(&self) -> Option<AwsChunkedDecoder> {
        let (mode, decoded_length, trailers) = match &self.payload {
            PayloadMode::Unsigned | PayloadMode::Sha256(_) => return None,
            PayloadMode::StreamingSigned { decoded_length } => (ChunkedMode::Signed, *decoded_length, Vec::new()),
            PayloadMode::StreamingSignedTrailer { decoded_length, trailers } => {
                (ChunkedMode::SignedWithTrailer, *decoded_length, trailers.clone())
            }
            PayloadMode::StreamingUnsignedTrailer { decoded_length, trailers } => {
                (ChunkedMode::UnsignedWithTrailer, *decoded_length, trailers.clone())
            }
        };
        Some(AwsChunkedDecoder::new(mode, decoded_length, trailers, self.seed.clone()))
    }
}

/// Verifies a request head: parse and policy checks, lookup, signature.
pub fn verify(
    head: &RequestHead<'_>,
    options: &VerifyOptions,
    lookup: &dyn CredentialLookup,
) -> Result<Verified, SigV4Error> {
    let request = SignedRequest::parse(head, options)?;
    let secret = lookup.secret_for(request.access_key_id(), request.session_token())?;
    request.verify_with_secret(&secret)
}

/// The credential scope, owned: presigned requests carry it percent-encoded.
#[derive(Debug, Clone)]
struct OwnedCredential {
    access_key_id: String,
    date: String,
    region: String,
    service: String,
}

impl OwnedCredential {
    fn from_parsed(c: &Credential<'_>) -> Self {
        Self {
            access_key_id: c.access_key_id.to_owned(),
            date: c.date.to_owned(),
            region: c.region.to_owned(),
            service: c.service.to_owned(),
        }
    }

    fn view(&self) -> Credential<'_> {
        Credential {
            access_key_id: &self.access_key_id,
            date: &self.date,
            region: &self.region,
            service: &self.service,
        }
    }
}

fn owned_names(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

/// A request that passed parsing and the policy checks, before its signature is checked.
///
/// Split from [`verify`] so that a caller with an async credential store, or a cache of
/// [`SigningKey`]s, can do the lookup itself.
#[derive(Clone)]
pub struct SignedRequest<'a> {
    head: RequestHead<'a>,
    path_mode: PathMode,
    form: AuthForm,
    credential: OwnedCredential,
    signed_headers: Vec<String>,
    signature: [u8; 32],
    amz_date: String,
    request_time: OffsetDateTime,
    session_token: Option<Cow<'a, str>>,
    payload_hash: String,
    payload: PayloadMode,
}

/// Written by hand: the head's headers and the session token are credentials and stay out of logs.
impl std::fmt::Debug for SignedRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedRequest")
            .field("method", &self.head.method)
            .field("path", &self.head.path)
            .field("form", &self.form)
            .field("credential", &self.credential.view())
            .field("signed_headers", &self.signed_headers)
            .field("amz_date", &self.amz_date)
            .field("session_token", &self.session_token.as_ref().map(|_| "<redacted>"))
            .field("payload", &self.payload)
            .finish_non_exhaustive()
    }
}

impl<'a> SignedRequest<'a> {
    /// Parses the signature parameters and applies every check that needs no secret.
    pub fn parse(head: &RequestHead<'a>, options: &VerifyOptions) -> Result<Self, SigV4Error> {
        let authorizations = head.headers.get_all(http::header::AUTHORIZATION);
        let mut auth_iter = authorizations.iter();
        let authorization = auth_iter.next();
        if auth_iter.next().is_some() {
            return Err(SigV4Error::AuthorizationHeaderMalformed("more than one Authorization header"));
        }
        let query_pairs = head.query.map(raw_query_pairs).unwrap_or_default();
        let presigned =
            query_pairs.iter().any(|(k, _)| matches!(*k, "X-Amz-Algorithm" | "X-Amz-Credential" | "X-Amz-Signature"));
        if is_signature_v2(authorization, &query_pairs, presigned) {
            return Err(SigV4Error::SignatureVersion2);
        }
        match (authorization, presigned) {
            (Some(_), true) => Err(SigV4Error::InvalidArgument("only one auth mechanism allowed")),
            (None, false) => Err(SigV4Error::AccessDenied("the request is not signed")),
            (Some(value), false) => {
                let value = value
                    .to_str()
                    .map_err(|_| SigV4Error::AuthorizationHeaderMalformed("non-ASCII Authorization header"))?;
                Self::parse_header_form(head, options, value)
            }
            (None, true) => Self::parse_presigned(head, options, &query_pairs),
        }
    }

    fn parse_header_form(head: &RequestHead<'a>, options: &VerifyOptions, value: &'a str) -> Result<Self, SigV4Error> {
        use SigV4Error::AuthorizationHeaderMalformed as Malformed;
        let auth = parse_authorization_header(value)?;
        check_service(&auth.credential, options).map_err(Malformed)?;
        let (amz_date, request_time, date_header) = request_time(head.headers)?;
        if !amz_date.starts_with(auth.credential.date) {
            return Err(Malformed("the credential date is not the date of x-amz-date"));
        }
        if (request_time - options.now).abs() > options.max_skew {
            return Err(SigV4Error::RequestTimeTooSkewed);
        }
        check_signed_headers(head, &auth.signed_headers).map_err(|e| match e {
            SignedHeadersError::HostNotSigned => Malformed("the host header must be signed"),
            SignedHeadersError::Other(e) => e,
        })?;
        if !auth.signed_headers.contains(&date_header) {
            return Err(SigV4Error::AccessDenied("the header giving the request time must be signed"));
        }
        let session_token = single_header(head.headers, &X_AMZ_SECURITY_TOKEN)?
            .map(|v| v.to_str().map(Cow::Borrowed).map_err(|_| SigV4Error::InvalidToken))
            .transpose()?;
        let (payload_hash, payload) = payload_mode(head.headers, options, false)?;
        Ok(Self {
            head: *head,
            path_mode: options.path_mode,
            form: AuthForm::Header,
            credential: OwnedCredential::from_parsed(&auth.credential),
            signed_headers: owned_names(&auth.signed_headers),
            signature: auth.signature,
            amz_date,
            request_time,
            session_token,
            payload_hash,
            payload,
        })
    }

    fn parse_presigned(
        head: &RequestHead<'a>,
        options: &VerifyOptions,
        pairs: &[(&'a str, &'a str)],
    ) -> Result<Self, SigV4Error> {
        use SigV4Error::AuthorizationQueryParametersError as Bad;
        let find = |name: &'static str| -> Result<Option<&'a str>, SigV4Error> {
            let mut found = pairs.iter().filter(|(k, _)| *k == name).map(|(_, v)| *v);
            let first = found.next();
            if found.next().is_some() {
                return Err(Bad("a presigned parameter is repeated"));
            }
            Ok(first)
        };
        let required = |name: &'static str, missing: &'static str| -> Result<&'a str, SigV4Error> {
            find(name)?.ok_or(Bad(missing))
        };
        let algorithm = decode(required("X-Amz-Algorithm", "X-Amz-Algorithm is missing")?)?;
        if algorithm != ALGORITHM {
            return Err(if algorithm == "AWS4-ECDSA-P256-SHA256" {
                SigV4Error::NotImplemented("SigV4a (AWS4-ECDSA-P256-SHA256) is not supported")
            } else {
                Bad("X-Amz-Algorithm must be AWS4-HMAC-SHA256")
            });
        }
        let credential_raw = required("X-Amz-Credential", "X-Amz-Credential is missing")?;
        // SDKs send the credential and the signed-headers list percent-encoded (`%2F`, `%3B`).
        let credential_decoded = decode(credential_raw)?;
        let credential = Credential::parse(&credential_decoded).map_err(Bad)?;
        check_service(&credential, options).map_err(Bad)?;
        let amz_date = decode(required("X-Amz-Date", "X-Amz-Date is missing")?)?.into_owned();
        let request_time = parse_amz_date(&amz_date).ok_or(Bad("X-Amz-Date must be YYYYMMDDTHHMMSSZ"))?;
        if !amz_date.starts_with(credential.date) {
            return Err(Bad("the credential date is not the date of X-Amz-Date"));
        }
        let expires = parse_expires(&decode(required("X-Amz-Expires", "X-Amz-Expires is missing")?)?)?;
        // A URL valid for no time at all (or less) has expired whatever the clocks say, as S3 answers it: without
        // this, a signing clock ahead of ours would make `X-Amz-Expires=0` usable for up to the allowed skew.
        if expires <= 0 {
            return Err(SigV4Error::AccessDenied("the presigned request has expired"));
        }
        if expires > MAX_PRESIGNED_EXPIRES_SECS {
            return Err(Bad("X-Amz-Expires must be less than a week (in seconds) that is 604800"));
        }
        let expires_at = request_time + Duration::seconds(expires);
        if request_time - options.now > options.max_skew {
            return Err(SigV4Error::AccessDenied("the presigned request is not valid yet"));
        }
        if options.now > expires_at {
            return Err(SigV4Error::AccessDenied("the presigned request has expired"));
        }
        let signed_raw = required("X-Amz-SignedHeaders", "X-Amz-SignedHeaders is missing")?;
        let signed_decoded = decode(signed_raw)?;
        let signed_headers = parse_signed_headers(&signed_decoded).map_err(Bad)?;
        check_signed_headers(head, &signed_headers).map_err(|e| match e {
            SignedHeadersError::HostNotSigned => Bad("the host header must be signed"),
            SignedHeadersError::Other(e) => e,
        })?;
        let signature = parse_signature(required("X-Amz-Signature", "X-Amz-Signature is missing")?).map_err(Bad)?;
        let session_token = find("X-Amz-Security-Token")?.map(decode).transpose()?;
        if session_token.is_some() && head.headers.contains_key("x-amz-security-token") {
            return Err(SigV4Error::InvalidArgument("the security token is given twice"));
        }
        let (payload_hash, payload) = payload_mode(head.headers, options, true)?;
        Ok(Self {
            head: *head,
            path_mode: options.path_mode,
            form: AuthForm::Presigned { expires_at },
            credential: OwnedCredential::from_parsed(&credential),
            signed_headers: owned_names(&signed_headers),
            signature,
            amz_date,
            request_time,
            session_token,
            payload_hash,
            payload,
        })
    }

    /// The access key id to look up.
    pub fn access_key_id(&self) -> &str {
        &self.credential.access_key_id
    }

    /// The session token to hand to the lookup, from `x-amz-security-token` or
    /// `X-Amz-Security-Token`.
    pub fn session_token(&self) -> Option<&str> {
        self.session_token.as_deref()
    }

    /// The credential scope.
    pub fn credential(&self) -> Credential<'_> {
        self.credential.view()
    }

    /// The canonical request, as the client should have built it.
    pub fn canonical_request(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        write_canonical_request(&mut out, &self.canonical_parts());
        out
    }

    fn canonical_parts(&self) -> CanonicalParts<'_, String> {
        CanonicalParts {
            method: self.head.method,
            path: self.head.path,
            path_mode: self.path_mode,
            query: self.head.query,
            skip_signature: matches!(self.form, AuthForm::Presigned { .. }),
            headers: self.head.headers,
            signed_headers: &self.signed_headers,
            authority: self.head.authority,
            payload_hash: &self.payload_hash,
        }
    }

    /// The string to sign for [`SignedRequest::canonical_request`].
    pub fn string_to_sign(&self) -> Vec<u8> {
        self.string_to_sign_in(&self.credential.view().scope()).into_bytes()
    }

    /// The string to sign, the canonical request hashed as it is written rather than built first.
    fn string_to_sign_in(&self, scope: &str) -> String {
        let mut hash = Sha256::new();
        write_canonical_request(&mut hash, &self.canonical_parts());
        string_to_sign(&self.amz_date, scope, &hash.finalize().into())
    }

    /// Checks the signature with a signing key derived from the lookup's secret.
    pub fn verify_with_secret(self, secret: &SecretKey) -> Result<Verified, SigV4Error> {
        let c = &self.credential;
        let key = derive_signing_key(secret, &c.date, &c.region, &c.service);
        self.verify_with_key(&key)
    }

    /// Checks the signature with an already derived (for instance cached) signing key, which
    /// must be the one for this request's access key id and scope.
    pub fn verify_with_key(self, key: &SigningKey) -> Result<Verified, SigV4Error> {
        let scope = self.credential.view().scope();
        let expected = key.sign(self.string_to_sign_in(&scope).as_bytes());
        if !macs_equal(&expected, &self.signature) {
            return Err(SigV4Error::SignatureDoesNotMatch("the request signature is wrong"));
        }
        let streaming = !matches!(self.payload, PayloadMode::Unsigned | PayloadMode::Sha256(_));
        let OwnedCredential { access_key_id, date, region, service } = self.credential;
        Ok(Verified {
            access_key_id,
            scope: Scope { date, region, service },
            signed_headers: self.signed_headers,
            payload: self.payload,
            form: self.form,
            request_time: self.request_time,
            seed: streaming.then(|| ChunkSigner::new(key.clone(), self.signature, &self.amz_date, &scope)),
        })
    }
}

/// Whether the request is signed with Signature Version 2: the `AWS ` authorization scheme, or SigV2's query
/// parameters without SigV4's (a SigV4 presigned URL may carry a key named `Signature` of its own).
fn is_signature_v2(authorization: Option<&http::HeaderValue>, query: &[(&str, &str)], presigned: bool) -> bool {
    let header = authorization.is_some_and(|v| v.as_bytes().starts_with(b"AWS "));
    let query = !presigned && query.iter().any(|(k, _)| matches!(*k, "AWSAccessKeyId" | "Signature"));
    header || (authorization.is_none() && query)
}

/// Reads `X-Amz-Expires`: a whole number of seconds, negative numbers included (they are expired, not
/// malformed, as S3 answers them).
fn parse_expires(s: &str) -> Result<i64, SigV4Error> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || digits.len() > 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SigV4Error::AuthorizationQueryParametersError("X-Amz-Expires should be a number"));
    }
    let n: i64 = digits
        .parse()
        .map_err(|_| SigV4Error::AuthorizationQueryParametersError("X-Amz-Expires should be a number"))?;
    Ok(if digits.len() < s.len() { -n } else { n })
}

fn raw_query_pairs(query: &str) -> Vec<(&str, &str)> {
    query.split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap_or((p, ""))).collect()
}

fn decode(raw: &str) -> Result<Cow<'_, str>, SigV4Error> {
    decode_query_value(raw).ok_or(SigV4Error::AuthorizationQueryParametersError("a presigned parameter is not UTF-8"))
}

fn check_service(credential: &Credential<'_>, options: &VerifyOptions) -> Result<(), &'static str> {
    if options.allowed_services.contains(&credential.service) {
        Ok(())
    } else {
        Err("the credential service is not accepted here")
    }
}

/// Finds the request time: `x-amz-date`, else `date`. Returns the string for the string to sign,
/// the time, and which header gave it (it must be signed).
fn request_time(headers: &HeaderMap) -> Result<(String, OffsetDateTime, &'static str), SigV4Error> {
    const MISSING: SigV4Error = SigV4Error::AccessDenied("a valid x-amz-date or Date header is required");
    if let Some(v) = single_header(headers, &X_AMZ_DATE)? {
        let s = v.to_str().map_err(|_| MISSING)?;
        let t = parse_amz_date(s).ok_or(MISSING)?;
        return Ok((s.to_owned(), t, "x-amz-date"));
    }
    if let Some(v) = single_header(headers, &http::header::DATE)? {
        let t = v.to_str().ok().and_then(parse_http_date).ok_or(MISSING)?;
        let s = format_amz_date(t).ok_or(MISSING)?;
        return Ok((s, t, "date"));
    }
    Err(MISSING)
}

// Header names as `HeaderName`s, so that a lookup hashes the name without parsing it first (the signer's too).
pub(super) const X_AMZ_DATE: HeaderName = HeaderName::from_static("x-amz-date");
pub(super) const X_AMZ_SECURITY_TOKEN: HeaderName = HeaderName::from_static("x-amz-security-token");
pub(super) const X_AMZ_CONTENT_SHA256: HeaderName = HeaderName::from_static("x-amz-content-sha256");
const X_AMZ_DECODED_CONTENT_LENGTH: HeaderName = HeaderName::from_static("x-amz-decoded-content-length");

fn single_header<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Result<Option<&'h http::HeaderValue>, SigV4Error> {
    let mut all = headers.get_all(name).iter();
    let first = all.next();
    if all.next().is_some() {
        return Err(SigV4Error::InvalidArgument("a header that must appear once is repeated"));
    }
    Ok(first)
}

enum SignedHeadersError {
    HostNotSigned,
    Other(SigV4Error),
}

/// `host` signed; every signed header present; every `x-amz-*` header signed.
fn check_signed_headers(head: &RequestHead<'_>, signed: &[&str]) -> Result<(), SignedHeadersError> {
    if !signed.contains(&"host") {
        return Err(SignedHeadersError::HostNotSigned);
    }
    for name in signed {
        let present = head.headers.contains_key(*name) || (*name == "host" && head.authority.is_some());
        if !present {
            return Err(SignedHeadersError::Other(SigV4Error::AccessDenied(
                "a signed header is missing from the request",
            )));
        }
    }
    // Every x-amz-* header changes what S3 does (ACL, storage class, copy source, checksum...), so
    // one that the signature does not cover could be added by anyone on the path. botocore, the
    // AWS CLI and the other SDKs sign every x-amz-* header they send, x-amz-content-sha256 and
    // x-amz-security-token included, so refusing unsigned ones costs no real client.
    for name in head.headers.keys() {
        let name = name.as_str();
        if name.starts_with("x-amz-") && !signed.contains(&name) {
            return Err(SignedHeadersError::Other(SigV4Error::AccessDenied(
                "there were headers present in the request which were not signed",
            )));
        }
    }
    Ok(())
}

/// Reads `x-amz-content-sha256` into the literal for the canonical request and the body mode.
fn payload_mode(
    headers: &HeaderMap,
    options: &VerifyOptions,
    presigned: bool,
) -> Result<(String, PayloadMode), SigV4Error> {
    let Some(value) = single_header(headers, &X_AMZ_CONTENT_SHA256)? else {
        return match (options.known_body_sha256, presigned) {
            (Some(hash), _) => Ok((hex::encode(hash), PayloadMode::Sha256(hash))),
            (None, true) => Ok(("UNSIGNED-PAYLOAD".to_owned(), PayloadMode::Unsigned)),
            (None, false) => Err(SigV4Error::MissingSecurityHeader("x-amz-content-sha256")),
        };
    };
    const INVALID: SigV4Error = SigV4Error::InvalidArgument(
        "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, a STREAMING-* value or a SHA-256 in hex",
    );
    let literal = value.to_str().map_err(|_| INVALID)?;
    let streaming = |make: fn(u64, Vec<String>) -> PayloadMode| -> Result<PayloadMode, SigV4Error> {
        if presigned {
            return Err(SigV4Error::InvalidRequest("streaming payloads need the Authorization header"));
        }
        Ok(make(decoded_length(headers)?, declared_trailers(headers)?))
    };
    let mode = match literal {
        "UNSIGNED-PAYLOAD" => PayloadMode::Unsigned,
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" => {
            streaming(|decoded_length, _| PayloadMode::StreamingSigned { decoded_length })?
        }
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER" => {
            streaming(|decoded_length, trailers| PayloadMode::StreamingSignedTrailer { decoded_length, trailers })?
        }
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER" => {
            streaming(|decoded_length, trailers| PayloadMode::StreamingUnsignedTrailer { decoded_length, trailers })?
        }
        s if s.starts_with("STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD") => {
            return Err(SigV4Error::NotImplemented("SigV4a streaming payloads are not supported"));
        }
        s => {
            let hash = parse_hex32(s).ok_or(INVALID)?;
            if options.known_body_sha256.is_some_and(|known| !macs_equal(&known, &hash)) {
                return Err(SigV4Error::XAmzContentSHA256Mismatch);
            }
            PayloadMode::Sha256(hash)
        }
    };
    Ok((literal.to_owned(), mode))
}

fn decoded_length(headers: &HeaderMap) -> Result<u64, SigV4Error> {
    let value = single_header(headers, &X_AMZ_DECODED_CONTENT_LENGTH)?.ok_or(SigV4Error::MissingContentLength)?;
    value
        .to_str()
        .ok()
        .filter(|s| !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or(SigV4Error::InvalidArgument("x-amz-decoded-content-length must be a number"))
}

fn declared_trailers(headers: &HeaderMap) -> Result<Vec<String>, SigV4Error> {
    const BAD: SigV4Error = SigV4Error::InvalidArgument("x-amz-trailer must list header names");
    let mut out = Vec::new();
    for value in headers.get_all("x-amz-trailer") {
        for name in value.to_str().map_err(|_| BAD)?.split(',') {
            let name = name.trim().to_ascii_lowercase();
            if name.is_empty() {
                continue;
            }
            if out.len() >= MAX_DECLARED_TRAILERS || out.contains(&name) {
                return Err(BAD);
            }
            out.push(name);
        }
    }
    Ok(out)
}
