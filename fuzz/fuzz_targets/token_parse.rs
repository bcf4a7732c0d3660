//! libFuzzer entry point for the `token_parse` driver (see `tether_fuzz::targets::token_parse`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tether_fuzz::targets::token_parse::run(data);
});
