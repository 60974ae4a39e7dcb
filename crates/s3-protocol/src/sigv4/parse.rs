//! Pure parsers for what the client sends: the `Authorization` header, the credential scope,
//! the signed-headers list and the timestamps. No I/O, no panics; these are the fuzz entry points.

use time::{OffsetDateTime, PrimitiveDateTime, format_description::FormatItem, macros::format_description};

use super::error::SigV4Error;
use super::key::parse_hex32;

/// The only algorithm this verifier accepts.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Longest `Authorization` header accepted. Real ones are a few hundred bytes; a bound keeps a
/// hostile header from costing more than a fixed amount of parsing.
pub const MAX_AUTHORIZATION_LEN: usize = 8 * 1024;

/// Most names accepted in `SignedHeaders`.
pub const MAX_SIGNED_HEADERS: usize = 64;

const HTTP_DATE_FORMAT: &[FormatItem<'static>] =
    format_description!("[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT");

/// The credential scope: `AKID/date/region/service/aws4_request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credential<'a> {
    /// The access key id, handed to the credential lookup.
    pub access_key_id: &'a str,
    /// The scope date, `YYYYMMDD`.
    pub date: &'a str,
    /// The scope region, not checked here (the caller may).
    pub region: &'a str,
    /// The scope service (`s3`, `sts`...).
    pub service: &'a str,
}

/// The longest region or service name a credential scope may give. AWS's are under 20 characters; a verifier
/// keeps the signing keys it derives by scope, and a name a client chose must not make one arbitrarily large.
const MAX_SCOPE_NAME: usize = 64;

impl<'a> Credential<'a> {
    /// Parses `AKID/YYYYMMDD/region/service/aws4_request`. The error carries a detail only; the
    /// caller picks the variant for header or query form.
    pub fn parse(s: &'a str) -> Result<Self, &'static str> {
        let mut parts = s.split('/');
        let (Some(akid), Some(date), Some(region), Some(service), Some(term), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("the credential must have the form AKID/date/region/service/aws4_request");
        };
        if akid.is_empty() || !akid.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the access key id is empty or has invalid characters");
        }
        if parse_basic_date(date.as_bytes()).is_none() {
            return Err("the credential date is not a valid YYYYMMDD date");
        }
        if region.is_empty() || !region.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err("the credential region is empty or has invalid characters");
        }
        if service.is_empty() || !service.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err("the credential service is empty or has invalid characters");
        }
        if region.len() > MAX_SCOPE_NAME || service.len() > MAX_SCOPE_NAME {
            return Err("the credential region or service is longer than 64 characters");
        }
        if term != "aws4_request" {
            return Err("the credential must end with aws4_request");
        }
        Ok(Self { access_key_id: akid, date, region, service })
    }

    /// The scope string used in the string to sign: `date/region/service/aws4_request`.
    pub fn scope(&self) -> String {
        format!("{}/{}/{}/aws4_request", self.date, self.region, self.service)
    }
}

/// The parsed value of an `Authorization: AWS4-HMAC-SHA256 ...` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationHeader<'a> {
    /// The credential scope.
    pub credential: Credential<'a>,
    /// The signed header names, lowercase, in the (sorted) order sent.
    pub signed_headers: Vec<&'a str>,
    /// The 32-byte signature.
    pub signature: [u8; 32],
}

/// Parses an `Authorization` header value. Fuzz entry point: total on any input.
///
/// Accepts the spacing real clients send (`Credential=..., SignedHeaders=..., Signature=...`,
/// with or without spaces after the commas and around `=`), requires each of the three parts
/// exactly once and nothing else.
pub fn parse_authorization_header(value: &str) -> Result<AuthorizationHeader<'_>, SigV4Error> {
    use SigV4Error::AuthorizationHeaderMalformed as Malformed;
    if value.len() > MAX_AUTHORIZATION_LEN {
        return Err(Malformed("the authorization header is too long"));
    }
    let value = value.trim_matches(is_ows);
    let Some(rest) = value.strip_prefix(ALGORITHM) else {
        return Err(if value.starts_with("AWS4-ECDSA-P256-SHA256") {
            SigV4Error::NotImplemented("SigV4a (AWS4-ECDSA-P256-SHA256) is not supported")
        } else {
            Malformed("the authorization algorithm must be AWS4-HMAC-SHA256")
        });
    };
    // The algorithm must be followed by whitespace, else "AWS4-HMAC-SHA256X" would pass.
    if !rest.starts_with(is_ows) {
        return Err(Malformed("the authorization algorithm must be AWS4-HMAC-SHA256"));
    }
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim_matches(is_ows);
        let Some((key, val)) = part.split_once('=') else {
            return Err(Malformed("each authorization component must be key=value"));
        };
        let slot = match key.trim_matches(is_ows) {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut signature,
            _ => return Err(Malformed("unknown authorization component")),
        };
        if slot.replace(val.trim_matches(is_ows)).is_some() {
            return Err(Malformed("an authorization component is repeated"));
        }
    }
    let credential = credential.ok_or(Malformed("the Credential component is missing"))?;
    let signed = signed.ok_or(Malformed("the SignedHeaders component is missing"))?;
    let signature = signature.ok_or(Malformed("the Signature component is missing"))?;
    Ok(AuthorizationHeader {
        credential: Credential::parse(credential).map_err(Malformed)?,
        signed_headers: parse_signed_headers(signed).map_err(Malformed)?,
        signature: parse_signature(signature).map_err(Malformed)?,
    })
}

/// Parses a 64-hex-digit signature.
pub fn parse_signature(s: &str) -> Result<[u8; 32], &'static str> {
    parse_hex32(s).ok_or("the signature must be 64 hexadecimal digits")
}

/// Parses `SignedHeaders`: lowercase header names joined by `;`, strictly ascending as every SDK
/// sends them; an unsorted or repeated list would make two canonical requests possible.
pub fn parse_signed_headers(s: &str) -> Result<Vec<&str>, &'static str> {
    let mut out: Vec<&str> = Vec::new();
    for name in s.split(';') {
        if name.is_empty() || !name.bytes().all(is_lower_token_byte) {
            return Err("signed header names must be non-empty lowercase tokens");
        }
        if out.last().is_some_and(|prev| *prev >= name) {
            return Err("signed header names must be sorted and unique");
        }
        if out.len() >= MAX_SIGNED_HEADERS {
            return Err("too many signed headers");
        }
        out.push(name);
    }
    Ok(out)
}

fn is_lower_token_byte(b: u8) -> bool {
    b.is_ascii_lowercase()
        || b.is_ascii_digit()
        || matches!(
            b,
            b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
        )
}

fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Parses an ISO 8601 basic timestamp, `YYYYMMDDTHHMMSSZ`, as `x-amz-date` carries it.
pub fn parse_amz_date(s: &str) -> Option<OffsetDateTime> {
    // By hand rather than with a format description: every header-signed request has one, and the shape is fixed
    // (the time crate's parser would also take signed or longer years, which no client sends).
    let [date @ .., b'T', h1, h2, m1, m2, s1, s2, b'Z'] = s.as_bytes() else { return None };
    let date = parse_basic_date(date)?;
    let time = time::Time::from_hms(two_digits(*h1, *h2)?, two_digits(*m1, *m2)?, two_digits(*s1, *s2)?).ok()?;
    Some(PrimitiveDateTime::new(date, time).assume_utc())
}

/// Parses `YYYYMMDD`, a calendar date (the credential scope's, and the first half of `x-amz-date`).
fn parse_basic_date(s: &[u8]) -> Option<time::Date> {
    let [y1, y2, y3, y4, m1, m2, d1, d2] = *s else { return None };
    let year = i32::from(two_digits(y1, y2)?) * 100 + i32::from(two_digits(y3, y4)?);
    let month = time::Month::try_from(two_digits(m1, m2)?).ok()?;
    time::Date::from_calendar_date(year, month, two_digits(d1, d2)?).ok()
}

/// Two ASCII digits as a number.
fn two_digits(tens: u8, ones: u8) -> Option<u8> {
    (tens.is_ascii_digit() && ones.is_ascii_digit()).then(|| (tens - b'0') * 10 + (ones - b'0'))
}

/// Parses an IMF-fixdate `Date` header (`Fri, 24 May 2013 00:00:00 GMT`).
pub fn parse_http_date(s: &str) -> Option<OffsetDateTime> {
    PrimitiveDateTime::parse(s.trim(), HTTP_DATE_FORMAT).ok().map(PrimitiveDateTime::assume_utc)
}

/// Formats a timestamp as `YYYYMMDDTHHMMSSZ` for the string to sign; `None` for a year outside 0..=9999, which
/// has no such form.
pub fn format_amz_date(t: OffsetDateTime) -> Option<String> {
    // By hand, like the parser: every request Lakegate forwards to a remote store is signed with the time of
    // day, and the time crate's formatter, which interprets a format description, took 0.5% of such a GET.
    let year = u16::try_from(t.year()).ok().filter(|year| *year <= 9999)?;
    let mut s = String::with_capacity(16);
    push_digits(&mut s, year, 4);
    push_digits(&mut s, u8::from(t.month()).into(), 2);
    push_digits(&mut s, t.day().into(), 2);
    s.push('T');
    push_digits(&mut s, t.hour().into(), 2);
    push_digits(&mut s, t.minute().into(), 2);
    push_digits(&mut s, t.second().into(), 2);
    s.push('Z');
    Some(s)
}

/// Appends the last `width` decimal digits of `n`, zero-padded.
fn push_digits(s: &mut String, n: u16, width: u32) {
    for place in (0..width).rev() {
        let digit = n / 10u16.pow(place) % 10;
        s.push(char::from(b'0' + digit as u8));
    }
}

/// Presigned-URL parameters: read by the SigV4 verifier, never forwarded.
pub const PRESIGN_PARAMS: &[&str] = &[
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The form the hand parser and formatter follow, as a format description of the time crate.
    const AMZ_DATE_FORMAT: &[FormatItem<'static>] = format_description!("[year][month][day]T[hour][minute][second]Z");

    /// What the time crate's parser makes of a timestamp of the right shape, the reference for the hand parser.
    fn by_format_description(s: &str) -> Option<OffsetDateTime> {
        let shape = s.len() == 16
            && s.bytes().enumerate().all(|(i, c)| match i {
                8 => c == b'T',
                15 => c == b'Z',
                _ => c.is_ascii_digit(),
            });
        shape.then(|| PrimitiveDateTime::parse(s, AMZ_DATE_FORMAT).ok().map(PrimitiveDateTime::assume_utc)).flatten()
    }

    #[test]
    fn a_timestamp_is_read_as_the_time_crate_reads_it_and_only_a_real_instant_is_one() {
        for s in [
            "20261201T000000Z",
            "20240229T235959Z",
            "20250229T120000Z",
            "20261301T000000Z",
            "20260001T000000Z",
            "20260100T000000Z",
            "20260132T000000Z",
            "20261201T240000Z",
            "20261201T236000Z",
            "20261201T235960Z",
            "00000101T000000Z",
            "20261201T000000",
            "20261201 000000Z",
            "2026120T1000000Z",
            "+2026120T000000Z",
            "20261201T00000AZ",
            "",
        ] {
            assert_eq!(parse_amz_date(s), by_format_description(s), "{s:?}");
        }
        assert!(parse_amz_date("20240229T235959Z").is_some(), "a leap day");
        assert!(parse_amz_date("20250229T120000Z").is_none(), "no leap day that year");
        for t in [time::macros::datetime!(0000-01-01 00:00:00 UTC), time::macros::datetime!(9999-12-31 23:59:59 UTC)] {
            assert_eq!(format_amz_date(t), t.format(AMZ_DATE_FORMAT).ok(), "as the time crate formats it");
        }
        assert_eq!(format_amz_date(time::macros::datetime!(-0001-12-31 23:59:59 UTC)), None);
        // Random timestamps over digits, so that every field goes out of its range now and then.
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..20_000 {
            let mut s = String::new();
            for i in 0..16 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                s.push(match i {
                    8 => 'T',
                    15 => 'Z',
                    // Years near today's, months and days around their bounds.
                    0 => '2',
                    1 => '0',
                    4 | 6 | 9 | 11 | 13 => char::from(b'0' + (state % 4) as u8),
                    _ => char::from(b'0' + (state % 10) as u8),
                });
            }
            assert_eq!(parse_amz_date(&s), by_format_description(&s), "{s:?}");
            if let Some(t) = parse_amz_date(&s) {
                assert_eq!(format_amz_date(t).as_deref(), Some(s.as_str()), "a timestamp reads back as it was sent");
            }
            let date = &s[..8];
            assert_eq!(
                Credential::parse(&format!("AKID/{date}/us-east-1/s3/aws4_request")).is_ok(),
                time::Date::parse(date, format_description!("[year][month][day]")).is_ok(),
                "{date:?}"
            );
        }
    }

    #[test]
    fn a_scope_names_a_region_and_a_service_of_at_most_64_characters() {
        let credential = |region: &str, service: &str| format!("AKID/20261206/{region}/{service}/aws4_request");
        let (long, longer) = ("r".repeat(64), "r".repeat(65));
        assert!(Credential::parse(&credential(&long, "s3")).is_ok());
        assert!(Credential::parse(&credential("eu-west-1", &long)).is_ok());
        assert!(Credential::parse(&credential(&longer, "s3")).is_err());
        assert!(Credential::parse(&credential("eu-west-1", &longer)).is_err());
    }
}
