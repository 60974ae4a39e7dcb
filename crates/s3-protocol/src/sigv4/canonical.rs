//! The canonical request: URI, query, headers.

use http::HeaderMap;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str};

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
                let decoded: Vec<u8> = percent_decode_str(segment).collect();
                encode_bytes(&mut out, &decoded);
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

/// One query parameter, both halves in canonical (encoded) form.
type Param = (String, String);

/// Splits a raw query into canonically encoded (key, value) pairs, in the order sent.
///
/// Each half is percent-decoded once and encoded with SigV4's set, so `%2f`, `%2F` and a raw
/// byte that needs encoding all come out the same. `+` is a literal plus (S3 and SDKs send `%20`
/// for space), so it becomes `%2B`.
pub fn canonical_query_pairs(query: &str) -> Vec<Param> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (reencode(k), reencode(v))
        })
        .collect()
}

fn reencode(s: &str) -> String {
    // What SDKs send is in this form already (a presigned URL's session token is most of its bytes).
    if is_canonical(s.as_bytes()) {
        return s.to_owned();
    }
    let decoded: Vec<u8> = percent_decode_str(s).collect();
    let mut out = String::with_capacity(decoded.len());
    encode_bytes(&mut out, &decoded);
    out
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
pub fn decode_query_value(s: &str) -> Option<String> {
    percent_decode_str(s).decode_utf8().ok().map(|c| c.into_owned())
}

/// The canonical query string: pairs sorted by encoded key then value, joined by `&`, leaving out
/// the parameters for which `skip` (on the encoded key) is true.
pub fn canonical_query(pairs: &[Param], skip: impl Fn(&str) -> bool) -> String {
    let mut kept: Vec<&Param> = pairs.iter().filter(|(k, _)| !skip(k)).collect();
    kept.sort();
    let mut out = String::new();
    for (i, (k, v)) in kept.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Canonical value of one header: every value trimmed, inner whitespace runs folded to one
/// space, repeated headers joined with `,` in the order received. `None` when absent.
pub fn canonical_header_value(headers: &HeaderMap, name: &str, fallback: Option<&str>) -> Option<Vec<u8>> {
    let mut out: Vec<u8> = Vec::new();
    let mut found = false;
    for value in headers.get_all(name) {
        if found {
            out.push(b',');
        }
        found = true;
        fold_whitespace(&mut out, value.as_bytes());
    }
    if let (false, Some(v)) = (found, fallback) {
        fold_whitespace(&mut out, v.as_bytes());
        found = true;
    }
    found.then_some(out)
}

fn fold_whitespace(out: &mut Vec<u8>, value: &[u8]) {
    let mut pending_space = false;
    let mut started = false;
    for &b in value {
        if matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
            pending_space = started;
        } else {
            if pending_space {
                out.push(b' ');
                pending_space = false;
            }
            out.push(b);
            started = true;
        }
    }
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
