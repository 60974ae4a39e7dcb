//! The aws-chunked body decoder must never panic, whatever the upload body holds.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = lakegate::s3::sigv4::fuzz_aws_chunked(data);
});
