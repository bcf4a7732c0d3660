//! Prometheus metrics. Labels are fixed, low-cardinality words: never token ids or secrets.
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label of a handshake outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `ok`, or a reject code such as `auth_failed`.
    pub outcome: String,
}

/// The manager's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Live authenticated sessions.
    pub sessions: Gauge,
    /// Handshakes by outcome.
    pub handshakes: Family<OutcomeLabel, Counter>,
    /// Tokens revoked (by an operator or a rotation).
    pub revocations: Counter,
    /// Sessions closed because their token was revoked or expired.
    pub sessions_revoked: Counter,
    /// Rotations finished, by outcome.
    pub rotations: Family<OutcomeLabel, Counter>,
    /// Sessions closed for missed heartbeats.
    pub heartbeat_timeouts: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tether");
        let sessions = Gauge::default();
        let handshakes = Family::default();
        let revocations = Counter::default();
        let sessions_revoked = Counter::default();
        let rotations = Family::default();
        let heartbeat_timeouts = Counter::default();
        registry.register("sessions", "Live authenticated delegate sessions", sessions.clone());
        registry.register("handshakes", "Delegate handshakes by outcome", handshakes.clone());
        registry.register("token_revocations", "Delegate tokens revoked", revocations.clone());
        registry.register(
            "sessions_revoked",
            "Live sessions closed by revocation or expiry",
            sessions_revoked.clone(),
        );
        registry.register("rotations", "Token rotations finished, by outcome", rotations.clone());
        registry.register(
            "heartbeat_timeouts",
            "Sessions closed after missed heartbeats",
            heartbeat_timeouts.clone(),
        );
        Self { registry, sessions, handshakes, revocations, sessions_revoked, rotations, heartbeat_timeouts }
    }

    /// Counts a handshake outcome.
    pub fn handshake(&self, outcome: &str) {
        self.handshakes.get_or_create(&OutcomeLabel { outcome: outcome.to_owned() }).inc();
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
