//! libFuzzer entry point for the `client_handshake` driver (see `tether_fuzz::targets::client_handshake`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tether_fuzz::targets::client_handshake::run(data);
});
