//! The canonical request: URI, query, headers.

use std::borrow::Cow;

use http::HeaderMap;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str};
use sha2::{Digest, Sha256};

/// Where a canonical request goes as it is produced: kept whole (to show or test it), or straight into the hash
/// the string to sign needs, without building it first.
pub(super) trait Sink {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Sink for Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

/// What a canonical request is made of, for the verifier (from what the client sent) and the signer (from what it
/// forwards) alike.
pub(super) struct CanonicalParts<'a, N> {
    pub method: &'a str,
    /// The path as sent, still percent-encoded, without the query.
    pub path: &'a str,
    pub path_mode: PathMode,
    /// The raw query without `?`.
    pub query: Option<&'a str>,
    /// Leave `X-Amz-Signature` out of the canonical query (a presigned URL's own signature).
    pub skip_signature: bool,
    pub headers: &'a HeaderMap,
    /// The signed header names, lowercase, sorted.
    pub signed_headers: &'a [N],
    /// The `host` value when the headers have none (HTTP/2 keeps `:authority` in the URI).
    pub authority: Option<&'a str>,
    /// The payload's hash or literal (`UNSIGNED-PAYLOAD`, ...).
    pub payload_hash: &'a str,
}

/// Writes the canonical request of `parts` into `out`.
pub(super) fn write_canonical_request<N: AsRef<str>>(out: &mut impl Sink, parts: &CanonicalParts<'_, N>) {
    out.put(parts.method.as_bytes());
    out.put(b"\n");
    out.put(canonical_uri(parts.path, parts.path_mode).as_bytes());
    out.put(b"\n");
    let pairs = canonical_query_pairs(parts.query.unwrap_or(""));
    write_canonical_query(out, &pairs, |k| parts.skip_signature && k == "X-Amz-Signature");
    out.put(b"\n");
    for name in parts.signed_headers {
        let name = name.as_ref();
        out.put(name.as_bytes());
        out.put(b":");
        let fallback = if name == "host" { parts.authority } else { None };
        // An absent header writes nothing: the signature then fails, as it should.
        write_canonical_header_value(out, parts.headers, name, fallback);
        out.put(b"\n");
    }
    out.put(b"\n");
    for (i, name) in parts.signed_headers.iter().enumerate() {
        if i > 0 {
            out.put(b";");
        }
        out.put(name.as_ref().as_bytes());
    }
    out.put(b"\n");
    out.put(parts.payload_hash.as_bytes());
}

/// How the path goes into the canonical request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathMode {
    /// S3: the path exactly as sent, segment by segment: each segment is decoded once and encoded
    /// once, so an SDK's encoding of an object key comes out as the SDK signed it. No `.`/`..`/`//`
    /// normalization: those are literal parts of object keys.
    S3,
    /// Generic AWS services (and the published test suite): remove `.` and `..` segments, collapse
    /// empty segments, then encode the path as given, `%` included, which is the "double encoding"
    /// of the generic signers.
    Normalized,
}

/// SigV4 `UriEncode`: everything but the unreserved `A-Z a-z 0-9 - . _ ~` is `%XX`, uppercase.
const SIGV4_ENCODE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

fn encode_bytes(out: &mut String, bytes: &[u8]) {
    // percent_encoding works on &[u8] through this helper; non-UTF-8 bytes are encoded too.
    out.extend(percent_encoding::percent_encode(bytes, SIGV4_ENCODE));
}

/// The canonical URI for `path` (without the query) in the given mode.
pub fn canonical_uri(path: &str, mode: PathMode) -> String {
    let path = if path.is_empty() { "/" } else { path };
    let mut out = String::with_capacity(path.len() + 8);
    match mode {
        PathMode::S3 => {
            for (i, segment) in path.split('/').enumerate() {
                if i > 0 {
                    out.push('/');
                }
                out.push_str(&reencode(segment));
            }
        }
        PathMode::Normalized => {
            let mut stack: Vec<&str> = Vec::new();
            let segments: Vec<&str> = path.split('/').collect();
            let last = segments.len().saturating_sub(1);
            // A path ending in '/', '.' or '..' names a directory: keep its trailing slash.
            let mut trailing_slash = false;
            for (i, segment) in segments.iter().enumerate() {
                match *segment {
                    "" | "." => trailing_slash = i == last && i > 0,
                    ".." => {
                        stack.pop();
                        trailing_slash = i == last;
                    }
                    s => {
                        stack.push(s);
                        trailing_slash = false;
                    }
                }
            }
            for segment in &stack {
                out.push('/');
                encode_bytes(&mut out, segment.as_bytes());
            }
            if stack.is_empty() || trailing_slash {
                out.push('/');
            }
        }
    }
    out
}

/// One query parameter, both halves in canonical (encoded) form: borrowed from the query where it was sent so.
type Param<'a> = (Cow<'a, str>, Cow<'a, str>);

/// Splits a raw query into canonically encoded (key, value) pairs, in the order sent.
///
/// Each half is percent-decoded once and encoded with SigV4's set, so `%2f`, `%2F` and a raw
/// byte that needs encoding all come out the same. `+` is a literal plus (S3 and SDKs send `%20`
/// for space), so it becomes `%2B`.
fn canonical_query_pairs(query: &str) -> Vec<Param<'_>> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (reencode(k), reencode(v))
        })
        .collect()
}

fn reencode(s: &str) -> Cow<'_, str> {
    // What SDKs send is in this form already (a presigned URL's session token is most of its bytes).
    if is_canonical(s.as_bytes()) {
        return Cow::Borrowed(s);
    }
    let decoded: Vec<u8> = percent_decode_str(s).collect();
    let mut out = String::with_capacity(decoded.len());
    encode_bytes(&mut out, &decoded);
    Cow::Owned(out)
}

/// Whether `s` is what [`reencode`] makes of it: unreserved bytes as they are, every other byte as `%XX` in
/// uppercase hex.
fn is_canonical(s: &[u8]) -> bool {
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
    let upper_hex = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    let mut rest = s;
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let [high, low, tail @ ..] = tail else { return false };
            let (Some(high), Some(low)) = (upper_hex(*high), upper_hex(*low)) else { return false };
            if unreserved(high * 16 + low) {
                return false;
            }
            rest = tail;
        } else if unreserved(b) {
            rest = tail;
        } else {
            return false;
        }
    }
    true
}

/// Decodes a raw query value (for reading `X-Amz-*` parameters).
pub(super) fn decode_query_value(s: &str) -> Option<Cow<'_, str>> {
    percent_decode_str(s).decode_utf8().ok()
}

/// Writes the canonical query string: pairs sorted by encoded key then value, joined by `&`, leaving out the
/// parameters for which `skip` (on the encoded key) is true.
fn write_canonical_query(out: &mut impl Sink, pairs: &[Param<'_>], skip: impl Fn(&str) -> bool) {
    let mut kept: Vec<&Param<'_>> = pairs.iter().filter(|(k, _)| !skip(k)).collect();
    kept.sort();
    for (i, (k, v)) in kept.iter().enumerate() {
        if i > 0 {
            out.put(b"&");
        }
        out.put(k.as_bytes());
        out.put(b"=");
        out.put(v.as_bytes());
    }
}

/// Writes the canonical value of one header: every value trimmed, inner whitespace runs folded to one space,
/// repeated headers joined with `,` in the order received; `fallback` when the header is absent.
fn write_canonical_header_value(out: &mut impl Sink, headers: &HeaderMap, name: &str, fallback: Option<&str>) {
    let mut found = false;
    for value in headers.get_all(name) {
        if found {
            out.put(b",");
        }
        found = true;
        fold_whitespace(out, value.as_bytes());
    }
    if let (false, Some(v)) = (found, fallback) {
        fold_whitespace(out, v.as_bytes());
    }
}

/// The value's runs of non-whitespace, one space between them.
fn fold_whitespace(out: &mut impl Sink, value: &[u8]) {
    // Most signed values (the session token, dates, hashes, the host) hold no whitespace at all: put them whole
    // rather than word by word.
    if !value.iter().any(|b| is_whitespace(*b)) {
        out.put(value);
        return;
    }
    let words = value.split(|b| is_whitespace(*b)).filter(|w| !w.is_empty());
    for (i, word) in words.enumerate() {
        if i > 0 {
            out.put(b" ");
        }
        out.put(word);
    }
}

/// The whitespace a header value's canonical form folds.
fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `reencode` the long way, without the shortcut for text already canonical.
    fn decoded_and_encoded(s: &str) -> String {
        let mut out = String::new();
        encode_bytes(&mut out, &percent_decode_str(s).collect::<Vec<u8>>());
        out
    }

    #[test]
    fn text_already_canonical_is_taken_as_it_is_and_anything_else_is_reencoded() {
        for s in [
            "",
            "AQoDYXdzEJr%2B%2F%3D",
            "a-b.c_d~e",
            "%7E",
            "%2f",
            "%2",
            "%",
            "%zz",
            "a+b",
            "a b",
            "caf%C3%A9",
            "café",
            "%41",
        ] {
            assert_eq!(reencode(s), decoded_and_encoded(s), "{s:?}");
        }
        assert!(is_canonical(b"AQoDYXdzEJr%2B%2F%3D"), "an SDK's encoding takes the shortcut");
        for s in ["%7E", "%2f", "a+b", "%2"] {
            assert!(!is_canonical(s.as_bytes()), "{s:?}");
        }
        // Random text over an alphabet that makes every case likely: escapes of either case, of reserved and
        // unreserved bytes, broken escapes, raw bytes that need encoding.
        let alphabet =
            ["a", "Z", "0", "-", "~", "%", "2", "f", "F", "7", "E", "e", "+", " ", "/", "=", "é", "%2F", "%7e"];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..20_000 {
            let mut s = String::new();
            for _ in 0..(state % 9) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                s.push_str(alphabet.get((state % alphabet.len() as u64) as usize).copied().unwrap_or_default());
            }
            assert_eq!(reencode(&s), decoded_and_encoded(&s), "{s:?}");
        }
    }
}
