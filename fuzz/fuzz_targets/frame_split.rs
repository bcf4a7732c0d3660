//! libFuzzer entry point for the `frame_split` driver (see `tether_fuzz::targets::frame_split`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tether_fuzz::targets::frame_split::run(data);
});
