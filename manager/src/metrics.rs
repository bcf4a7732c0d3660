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

/// Label of a failed admin authentication.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// `malformed`, `unknown`, `revoked` or `expired`.
    pub reason: String,
}

/// Label of a refused connection or session: which cap it hit.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CapLabel {
    /// Connections: `total` (every address) or `per_address`. Sessions: `token`, `account`
    /// or `total`.
    pub cap: String,
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
    /// Failed admin-token authentications, by reason.
    pub admin_auth_failures: Family<ReasonLabel, Counter>,
    /// Admin authentication lockouts started (one per source address and lockout).
    pub admin_auth_lockouts: Counter,
    /// Requests refused with 429 because their source address was locked out (or had every
    /// admin-authentication slot in flight).
    pub admin_auth_locked: Counter,
    /// Open connections that have not authenticated (HTTP, or WebSocket before the handshake).
    pub unauthenticated_connections: Gauge,
    /// Connections closed on accept because a cap on unauthenticated connections was reached.
    pub connections_refused: Family<CapLabel, Counter>,
    /// Unauthenticated connections closed after the idle timeout.
    pub connection_idle_timeouts: Counter,
    /// Unauthenticated connections closed to admit one from an address holding fewer (the
    /// global cap was full).
    pub connections_evicted: Counter,
    /// Unauthenticated connections closed at `max_unauthenticated_age_secs`.
    pub connection_max_age_closes: Counter,
    /// Delegate handshakes refused (`rate_limited`) because a cap on live sessions was full.
    pub sessions_refused: Family<CapLabel, Counter>,
    /// Sessions dropped because a write did not complete within the write timeout.
    pub session_write_timeouts: Counter,
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
        let admin_auth_failures = Family::default();
        let admin_auth_lockouts = Counter::default();
        let admin_auth_locked = Counter::default();
        registry.register(
            "admin_auth_failures",
            "Failed admin-token authentications, by reason",
            admin_auth_failures.clone(),
        );
        registry.register(
            "admin_auth_lockouts",
            "Source addresses locked out after repeated failed admin authentication",
            admin_auth_lockouts.clone(),
        );
        registry.register(
            "admin_auth_locked_requests",
            "API requests refused (429) while their source address was locked out or busy",
            admin_auth_locked.clone(),
        );
        let unauthenticated_connections = Gauge::default();
        let connections_refused = Family::default();
        let connection_idle_timeouts = Counter::default();
        let session_write_timeouts = Counter::default();
        registry.register(
            "unauthenticated_connections",
            "Open connections not (yet) authenticated as a delegate session",
            unauthenticated_connections.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed on accept by a cap on unauthenticated connections",
            connections_refused.clone(),
        );
        registry.register(
            "connection_idle_timeouts",
            "Unauthenticated connections closed after the idle timeout",
            connection_idle_timeouts.clone(),
        );
        registry.register(
            "session_write_timeouts",
            "Delegate sessions dropped because a write did not complete in time",
            session_write_timeouts.clone(),
        );
        let connections_evicted = Counter::default();
        let connection_max_age_closes = Counter::default();
        let sessions_refused = Family::default();
        registry.register(
            "connections_evicted",
            "Unauthenticated connections closed to admit one from an address holding fewer (global cap full)",
            connections_evicted.clone(),
        );
        registry.register(
            "connection_max_age_closes",
            "Unauthenticated connections closed at their maximum age",
            connection_max_age_closes.clone(),
        );
        registry.register(
            "sessions_refused",
            "Delegate handshakes refused (rate_limited) because a cap on live sessions was full, by cap",
            sessions_refused.clone(),
        );
        Self {
            registry,
            sessions,
            handshakes,
            revocations,
            sessions_revoked,
            rotations,
            heartbeat_timeouts,
            admin_auth_failures,
            admin_auth_lockouts,
            admin_auth_locked,
            unauthenticated_connections,
            connections_refused,
            connection_idle_timeouts,
            session_write_timeouts,
            connections_evicted,
            connection_max_age_closes,
            sessions_refused,
        }
    }

    /// Counts a handshake outcome.
    pub fn handshake(&self, outcome: &str) {
        self.handshakes.get_or_create(&OutcomeLabel { outcome: outcome.to_owned() }).inc();
    }

    /// Counts a failed admin authentication.
    pub fn admin_auth_failure(&self, reason: &str) {
        self.admin_auth_failures.get_or_create(&ReasonLabel { reason: reason.to_owned() }).inc();
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
