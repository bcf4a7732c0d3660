//! End-to-end test support for Tether: the one harness that runs the real `tether-manager`
//! and `tether-delegate` binaries ([`harness`]), a raw protocol client for attack tests
//! ([`attack`]), secret scanning ([`secrets`]), Docker Compose projects ([`compose`]), the Kubernetes cluster
//! simulator ([`kube_sim`]), a real PostgreSQL server ([`pg`]), the load generator ([`load`])
//! and a headless Chromium for the console tests ([`browser`]), used by the tests in
//! `tests/tests/`.
pub mod attack;
pub mod browser;
pub mod compose;
pub mod harness;
pub mod kube_sim;
pub mod load;
pub mod pg;
pub mod secrets;
