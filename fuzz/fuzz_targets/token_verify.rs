//! Token validation must refuse garbage without panicking (the dev issuer is trusted, keys are static).
#![no_main]

use std::sync::OnceLock;

use lakegate_core::identity::{DevIssuer, IdentityConfig, Verifier};

fn verifier() -> &'static (Verifier, tokio::runtime::Runtime) {
    static V: OnceLock<(Verifier, tokio::runtime::Runtime)> = OnceLock::new();
    V.get_or_init(|| {
        let dir = std::env::temp_dir().join("lakegate-fuzz-dev-issuer");
        let dev = DevIssuer::load_or_create(&dir).expect("dev issuer");
        let verifier = Verifier::new(&IdentityConfig::default(), Some(&dev)).expect("verifier");
        (verifier, tokio::runtime::Builder::new_current_thread().build().expect("runtime"))
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        let (v, rt) = verifier();
        assert!(rt.block_on(v.verify(token)).is_err());
    }
});
