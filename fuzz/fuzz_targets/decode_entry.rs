#![no_main]
//! The entry decoder (`envelope::wire::decode`) on arbitrary payloads.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hyper_client_cache::fuzzing::decode_entry(data);
});
