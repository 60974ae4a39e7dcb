//! Trailing checksums of aws-chunked uploads (`x-amz-checksum-*`), for the algorithms this module
//! can compute without more dependencies: CRC32, CRC32C and SHA-256. CRC64NVME and SHA-1
//! trailers are decoded and handed on, not verified (the backend that stores the object checks
//! them again anyway).

use sha2::{Digest, Sha256};

// Runs at compile time over a constant index below 256, never on request data; `get_mut` is not
// usable in a const fn.
#[allow(clippy::indexing_slicing)]
const fn crc_table(poly: u32) -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { poly ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static CRC32_TABLE: [u32; 256] = crc_table(0xEDB8_8320);
static CRC32C_TABLE: [u32; 256] = crc_table(0x82F6_3B78);

/// A checksum computed while the decoded data goes by.
#[derive(Clone)]
pub(super) enum RunningChecksum {
    Crc32(u32),
    Crc32c(u32),
    Sha256(Box<Sha256>),
}

impl RunningChecksum {
    /// The running checksum for a trailer name, when this module can compute it.
    pub(super) fn for_trailer(name: &str) -> Option<Self> {
        match name {
            "x-amz-checksum-crc32" => Some(Self::Crc32(!0)),
            "x-amz-checksum-crc32c" => Some(Self::Crc32c(!0)),
            "x-amz-checksum-sha256" => Some(Self::Sha256(Box::default())),
            _ => None,
        }
    }

    pub(super) fn update(&mut self, data: &[u8]) {
        match self {
            Self::Crc32(c) => *c = crc_update(&CRC32_TABLE, *c, data),
            Self::Crc32c(c) => *c = crc_update(&CRC32C_TABLE, *c, data),
            Self::Sha256(h) => h.update(data),
        }
    }

    /// The checksum in the form the trailer carries it: base64 of the big-endian bytes.
    pub(super) fn finish_base64(self) -> String {
        match self {
            Self::Crc32(c) | Self::Crc32c(c) => base64(&(!c).to_be_bytes()),
            Self::Sha256(h) => base64(&h.finalize()),
        }
    }
}

fn crc_update(table: &[u32; 256], mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        let idx = usize::from((crc as u8) ^ b);
        // idx < 256 by construction; `get` keeps the no-indexing rule without a branch that matters.
        crc = table.get(idx).copied().unwrap_or(0) ^ (crc >> 8);
    }
    crc
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sym = |v: u32| char::from(ALPHABET.get((v & 63) as usize).copied().unwrap_or(b'='));
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for group in data.chunks(3) {
        let mut buf = [0u8; 3];
        for (d, s) in buf.iter_mut().zip(group) {
            *d = *s;
        }
        let [a, b, c] = buf;
        let n = (u32::from(a) << 16) | (u32::from(b) << 8) | u32::from(c);
        out.push(sym(n >> 18));
        out.push(sym(n >> 12));
        out.push(if group.len() > 1 { sym(n >> 6) } else { '=' });
        out.push(if group.len() > 2 { sym(n) } else { '=' });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum_of(name: &str, data: &[u8]) -> Option<String> {
        let mut c = RunningChecksum::for_trailer(name)?;
        c.update(data);
        Some(c.finish_base64())
    }

    #[test]
    fn crc32_of_check_string_is_the_published_value() {
        // CRC-32/ISO-HDLC check value 0xCBF43926 for "123456789".
        assert_eq!(checksum_of("x-amz-checksum-crc32", b"123456789").as_deref(), Some("y/Q5Jg=="));
    }

    #[test]
    fn crc32c_of_check_string_is_the_published_value() {
        // CRC-32C check value 0xE3069283 for "123456789".
        assert_eq!(checksum_of("x-amz-checksum-crc32c", b"123456789").as_deref(), Some("4waSgw=="));
    }

    #[test]
    fn base64_pads_like_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
