//! End-to-end test support for Tether: helpers that run the real `tether-manager` and
//! `tether-delegate` binaries (and Docker compose projects), used by the tests in `tests/tests/`.
pub mod attack;
pub mod compose;
pub mod harness;
pub mod load;
