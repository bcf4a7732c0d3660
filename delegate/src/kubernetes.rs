//! Kubernetes mode: in a pod, a rotated token is applied the Kubernetes way — written to the
//! delegate's Secret (`DELEGATE_TOKEN`, and `UPGRADER_TOKEN` when present) under a
//! resourceVersion precondition, then the owning workload is rolled by pod-template
//! annotations, as `kubectl rollout restart` does; the pods it starts read the new token from
//! the Secret. Under a Role limited by `resourceNames` (see `kubernetes/role.yaml`).
//!
//! - [`plan`]: the decisions without an API server (owners, patch bodies, redaction).
//! - [`cluster`]: the in-cluster client and the calls.
pub mod cluster;
pub mod plan;
