//! libFuzzer entry point for the `session_decode` driver (see `tether_fuzz::targets::session_decode`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tether_fuzz::targets::session_decode::run(data);
});
