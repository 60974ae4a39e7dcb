//! The SigV4 `Authorization` header parser must never panic on any header a client sends.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = lakegate_s3_protocol::sigv4::parse_authorization_header(text);
    }
});
