//! libFuzzer entry point for the `rest_bodies` driver (see `tether_fuzz::targets::rest_bodies`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tether_fuzz::targets::rest_bodies::run(data);
});
