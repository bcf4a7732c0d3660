//! libFuzzer entry point for the `sealed_token_open` driver (see `tether_fuzz::targets::sealed_token_open`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tether_fuzz::targets::sealed_token_open::run(data);
});
