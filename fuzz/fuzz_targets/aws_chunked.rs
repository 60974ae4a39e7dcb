//! The aws-chunked body decoder must never panic, whatever the upload body holds.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = lakegate_s3_protocol::sigv4::fuzz_aws_chunked(data);
});
