#![no_main]
//! Arbitrary bytes as a stored blob, in every protection mode: no panic, and nothing forged is
//! ever accepted by a keyed cache.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hyper_client_cache::fuzzing::open_envelope(data);
});
