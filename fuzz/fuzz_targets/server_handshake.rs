//! libFuzzer entry point for the `server_handshake` driver (see `tether_fuzz::targets::server_handshake`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tether_fuzz::targets::server_handshake::run(data);
});
