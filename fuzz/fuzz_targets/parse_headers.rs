#![no_main]
//! Cache-Control, Age, HTTP-dates, Expires and Vary parsing on arbitrary header lines.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hyper_client_cache::fuzzing::parse_headers(data);
});
