//! Resource parsing (decision API, S3 keys) must never panic and never accept `..` segments.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(lakegate_core::policy::Resource::Object { key, .. }) = lakegate_core::policy::Resource::parse(text)
    {
        assert!(!key.split('/').any(|s| s == ".."));
    }
});
