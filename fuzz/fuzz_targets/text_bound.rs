//! libFuzzer entry point for the `text_bound` driver (see `tether_fuzz::targets::text_bound`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tether_fuzz::targets::text_bound::run(data);
});
