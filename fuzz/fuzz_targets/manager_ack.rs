//! libFuzzer entry point for the `manager_ack` driver (see `tether_fuzz::targets::manager_ack`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tether_fuzz::targets::manager_ack::run(data);
});
