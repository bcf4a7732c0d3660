//! Prometheus metrics. Labels are fixed, low-cardinality words: never token ids or secrets.
//! Every labelled family whose label values are known is initialised at start, so alerts see
//! zeros rather than absent series. `/metrics` serves the 0.0.4 text format or OpenMetrics
//! ([`exposition`]), with the `process_*` metrics read from `/proc` ([`process`]).
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
#[cfg(test)]
use tether_protocol::RejectCode;

pub mod exposition;
pub mod process;

pub use exposition::Format;

/// Label of an API request's latency: the method and the matched route template.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// `GET`, `POST`, … or `other`.
    pub method: &'static str,
    /// A template of [`crate::api::ROUTES`] (`/api/v1/accounts/{account}`), or `unmatched`.
    pub route: &'static str,
}

/// Label of a counted API request: route and status code.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `GET`, `POST`, … or `other`.
    pub method: &'static str,
    /// A template of [`crate::api::ROUTES`], or `unmatched`.
    pub route: &'static str,
    /// The response's status code.
    pub status: u16,
}

/// Label of a histogram split by a fixed word (`result`, `phase`, `state`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok` or `refused`.
    pub result: &'static str,
}

/// Label of a store operation phase.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    /// `wait` (queued for the blocking pool and the connection) or `run`.
    pub phase: &'static str,
}

/// Label of a delegate's progress in a running rotation.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// `pending`, `acked`, `reconnected` or `manual`.
    pub state: &'static str,
}

/// A histogram family with a fixed bucket layout.
pub type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Buckets of request and handshake latencies, seconds (1 ms to 10 s).
fn latency_buckets() -> Histogram {
    Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
}

/// Buckets of short in-process operations, seconds (10 µs to 5 s): store calls, revoke
/// fan-out.
fn short_buckets() -> Histogram {
    Histogram::new([
        0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
    ])
}

/// Seconds of a duration, for `observe`.
pub fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Handshake outcomes: `ok` and every reject code.
pub const HANDSHAKE_OUTCOMES: &[&str] = &[
    "ok",
    "auth_failed",
    "revoked",
    "expired",
    "ip_not_allowed",
    "protocol",
    "rate_limited",
    "unsupported_version",
];

/// Reasons of a failed admin authentication.
pub const ADMIN_AUTH_FAILURE_REASONS: &[&str] = &["malformed", "unknown", "revoked", "expired"];

/// Caps of [`Metrics::connections_refused`].
pub const CONNECTION_CAPS: &[&str] = &["per_address", "total"];

/// Caps of [`Metrics::sessions_refused`].
pub const SESSION_CAPS: &[&str] = &["token", "account", "total"];

/// Outcomes of a finished rotation.
pub const ROTATION_OUTCOMES: &[&str] = &["completed", "grace_expired"];

/// A delegate's progress in a running rotation, as the API shows it.
pub const ROTATION_DELEGATE_STATES: &[&str] = &["pending", "acked", "reconnected", "manual"];

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
    /// When the rotation gauges were last read from the store (see
    /// [`Metrics::rotation_reading_due`]).
    rotations_read_at: std::sync::Mutex<Option<std::time::Instant>>,
    /// Live authenticated sessions.
    pub sessions: Gauge,
    /// Handshakes by outcome.
    pub handshakes: Family<OutcomeLabel, Counter>,
    /// Handshake latency (challenge to welcome or reject) by `result`.
    pub handshake_duration: HistogramFamily<ResultLabel>,
    /// Tokens revoked (by an operator or a rotation).
    pub revocations: Counter,
    /// How long telling every live session of a token that it was revoked took.
    pub revoke_fanout: Histogram,
    /// Sessions closed because their token was revoked or expired.
    pub sessions_revoked: Counter,
    /// Rotations finished, by outcome.
    pub rotations: Family<OutcomeLabel, Counter>,
    /// Rotations running (set at scrape time from the store).
    pub rotations_in_progress: Gauge,
    /// Running rotations more than half through their grace window (set at scrape time).
    pub rotations_past_half_grace: Gauge,
    /// Delegates of running rotations by progress (set at scrape time).
    pub rotation_delegates: Family<StateLabel, Gauge>,
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
    /// HTTP requests by method, route template and status.
    pub api_requests: Family<RequestLabels, Counter>,
    /// HTTP request latency by method and route template.
    pub api_request_duration: HistogramFamily<RouteLabels>,
    /// Store calls by phase (`wait`, `run`).
    pub store_duration: HistogramFamily<PhaseLabel>,
    /// Times this replica failed closed (lost the database for the fail-closed window).
    pub fail_closed: Counter,
    /// Change log rows from other replicas applied here.
    pub changes_applied: Counter,
    /// Sessions here closed by a revocation made through another replica.
    pub remote_revocations: Counter,
    /// 1 while this replica accepts delegate sessions, 0 while it fails closed.
    pub accepting: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Shortest time between two readings of the rotation gauges from the store.
pub const ROTATION_READING_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

impl Metrics {
    /// Registers every metric and initialises every labelled family whose labels are known.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tether");
        registry.register(
            "build",
            "Build information of this manager",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION")), ("protocol", "1")]),
        );
        let sessions = Gauge::default();
        let handshakes = Family::default();
        let revocations = Counter::default();
        let sessions_revoked = Counter::default();
        let rotations = Family::default();
        let heartbeat_timeouts = Counter::default();
        registry.register("sessions", "Live authenticated delegate sessions", sessions.clone());
        registry.register("handshakes", "Delegate handshakes by outcome", handshakes.clone());
        let handshake_duration: HistogramFamily<ResultLabel> = Family::new_with_constructor(latency_buckets);
        registry.register(
            "handshake_duration_seconds",
            "Delegate handshake latency from the challenge to the welcome or the reject, by result",
            handshake_duration.clone(),
        );
        registry.register("token_revocations", "Delegate tokens revoked", revocations.clone());
        let revoke_fanout = short_buckets();
        registry.register(
            "revoke_fanout_duration_seconds",
            "Time to send revoked to every live session of a token after the revocation committed",
            revoke_fanout.clone(),
        );
        registry.register(
            "sessions_revoked",
            "Live sessions closed by revocation or expiry",
            sessions_revoked.clone(),
        );
        registry.register("rotations", "Token rotations finished, by outcome", rotations.clone());
        let rotations_in_progress = Gauge::default();
        let rotations_past_half_grace = Gauge::default();
        let rotation_delegates = Family::default();
        registry.register("rotations_in_progress", "Token rotations running", rotations_in_progress.clone());
        registry.register(
            "rotations_past_half_grace",
            "Token rotations running for more than half their grace window",
            rotations_past_half_grace.clone(),
        );
        registry.register(
            "rotation_delegates",
            "Delegates of running rotations, by progress",
            rotation_delegates.clone(),
        );
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
        let api_requests = Family::default();
        let api_request_duration: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(latency_buckets);
        registry.register(
            "api_requests",
            "HTTP requests by method, route template and status code",
            api_requests.clone(),
        );
        registry.register(
            "api_request_duration_seconds",
            "HTTP request latency (to the response head) by method and route template",
            api_request_duration.clone(),
        );
        let store_duration: HistogramFamily<PhaseLabel> = Family::new_with_constructor(short_buckets);
        registry.register(
            "store_operation_duration_seconds",
            "Store calls: wait (for the blocking pool and the connection) and run, by phase",
            store_duration.clone(),
        );
        let fail_closed = Counter::default();
        registry.register(
            "fail_closed",
            "Times this replica failed closed: it could not reach the database for the fail-closed window",
            fail_closed.clone(),
        );
        let changes_applied = Counter::default();
        registry.register(
            "cluster_changes_applied",
            "Change log rows written by other replicas and applied here",
            changes_applied.clone(),
        );
        let remote_revocations = Counter::default();
        registry.register(
            "remote_revocations",
            "Live sessions here closed by a revocation made through another replica",
            remote_revocations.clone(),
        );
        let accepting = Gauge::default();
        registry.register(
            "accepting",
            "1 while this manager accepts delegate sessions, 0 while it fails closed or has not caught up",
            accepting.clone(),
        );
        let metrics = Self {
            registry,
            rotations_read_at: std::sync::Mutex::new(None),
            sessions,
            handshakes,
            handshake_duration,
            revocations,
            revoke_fanout,
            sessions_revoked,
            rotations,
            rotations_in_progress,
            rotations_past_half_grace,
            rotation_delegates,
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
            api_requests,
            api_request_duration,
            store_duration,
            fail_closed,
            changes_applied,
            remote_revocations,
            accepting,
        };
        metrics.initialise();
        metrics
    }

    /// Creates every series whose label values are known, at zero.
    fn initialise(&self) {
        let owned = |s: &&str| s.to_string();
        for outcome in HANDSHAKE_OUTCOMES.iter().map(owned) {
            let _ = self.handshakes.get_or_create(&OutcomeLabel { outcome });
        }
        for result in ["ok", "refused"] {
            let _ = self.handshake_duration.get_or_create(&ResultLabel { result });
        }
        for outcome in ROTATION_OUTCOMES.iter().map(owned) {
            let _ = self.rotations.get_or_create(&OutcomeLabel { outcome });
        }
        for &state in ROTATION_DELEGATE_STATES {
            let _ = self.rotation_delegates.get_or_create(&StateLabel { state });
        }
        for reason in ADMIN_AUTH_FAILURE_REASONS.iter().map(owned) {
            let _ = self.admin_auth_failures.get_or_create(&ReasonLabel { reason });
        }
        for cap in CONNECTION_CAPS.iter().map(owned) {
            let _ = self.connections_refused.get_or_create(&CapLabel { cap });
        }
        for cap in SESSION_CAPS.iter().map(owned) {
            let _ = self.sessions_refused.get_or_create(&CapLabel { cap });
        }
        for &(method, route) in crate::api::ROUTES {
            let _ =
                self.api_request_duration.get_or_create(&RouteLabels { method: method_label(method), route });
        }
        for phase in ["wait", "run"] {
            let _ = self.store_duration.get_or_create(&PhaseLabel { phase });
        }
    }

    /// Counts a handshake outcome.
    pub fn handshake(&self, outcome: &str) {
        self.handshakes.get_or_create(&OutcomeLabel { outcome: outcome.to_owned() }).inc();
    }

    /// Records a handshake's latency: `ok` or `refused`.
    pub fn handshake_latency(&self, ok: bool, took: Duration) {
        let result = if ok { "ok" } else { "refused" };
        self.handshake_duration.get_or_create(&ResultLabel { result }).observe(seconds(took));
    }

    /// Counts a failed admin authentication.
    pub fn admin_auth_failure(&self, reason: &str) {
        self.admin_auth_failures.get_or_create(&ReasonLabel { reason: reason.to_owned() }).inc();
    }

    /// Counts an HTTP request and records its latency.
    pub fn api_request(&self, method: &'static str, route: &'static str, status: u16, took: Duration) {
        self.api_requests.get_or_create(&RequestLabels { method, route, status }).inc();
        self.api_request_duration.get_or_create(&RouteLabels { method, route }).observe(seconds(took));
    }

    /// Sets the rotation gauges from a reading of the store.
    /// Whether the rotation gauges are due for a new reading from the store, marking it taken:
    /// at most one reading per [`ROTATION_READING_EVERY`], so `/metrics` (served without
    /// authentication) costs the store nothing more however often it is scraped.
    pub fn rotation_reading_due(&self, now: std::time::Instant) -> bool {
        let mut last = self.rotations_read_at.lock().unwrap_or_else(|p| p.into_inner());
        match *last {
            Some(at) if now.saturating_duration_since(at) < ROTATION_READING_EVERY => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }

    /// Sets the rotation gauges from a reading of the store.
    pub fn set_rotations(&self, progress: &crate::store::rotations::Progress) {
        self.rotations_in_progress.set(gauge_value(progress.running));
        self.rotations_past_half_grace.set(gauge_value(progress.past_half_grace));
        for &state in ROTATION_DELEGATE_STATES {
            let n = progress.delegates.iter().find(|(s, _)| s.as_str() == state).map_or(0, |(_, n)| *n);
            self.rotation_delegates.get_or_create(&StateLabel { state }).set(gauge_value(n));
        }
    }

    /// The store's latency histograms (`wait`, `run`), for [`crate::store::Store::with_timing`].
    pub fn store_timing(&self) -> crate::store::Timing {
        crate::store::Timing {
            wait: self.store_duration.get_or_create(&PhaseLabel { phase: "wait" }).clone(),
            run: self.store_duration.get_or_create(&PhaseLabel { phase: "run" }).clone(),
        }
    }

    /// The exposition in `format`, with the process metrics read now.
    pub fn encode(&self, format: Format) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode_registry(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        process::Process::read().encode(&mut out);
        match format {
            Format::OpenMetrics => {
                out.push_str("# EOF\n");
                out
            }
            Format::Prometheus => exposition::to_prometheus(&out),
        }
    }
}

/// The method label: the standard methods by name, anything else `other`.
pub fn method_label(method: &str) -> &'static str {
    const KNOWN: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
    KNOWN.iter().find(|m| m.eq_ignore_ascii_case(method)).copied().unwrap_or("other")
}

fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_is_read_for_the_rotation_gauges_at_most_once_per_interval() {
        let m = Metrics::new();
        let t0 = std::time::Instant::now();
        assert!(m.rotation_reading_due(t0), "the first scrape reads");
        for ms in [0, 1, 1_000, 4_999] {
            assert!(!m.rotation_reading_due(t0 + std::time::Duration::from_millis(ms)), "{ms} ms later");
        }
        assert!(m.rotation_reading_due(t0 + ROTATION_READING_EVERY));
        assert!(!m.rotation_reading_due(t0 + ROTATION_READING_EVERY));
    }

    #[test]
    fn handshake_outcomes_are_the_reject_codes() {
        let codes = [
            RejectCode::AuthFailed,
            RejectCode::Revoked,
            RejectCode::Expired,
            RejectCode::IpNotAllowed,
            RejectCode::Protocol,
            RejectCode::RateLimited,
            RejectCode::UnsupportedVersion,
        ];
        let words: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
        assert_eq!(HANDSHAKE_OUTCOMES[1..], words[..]);
    }

    #[test]
    fn labelled_families_start_at_zero_in_both_formats() {
        let m = Metrics::new();
        let om = m.encode(Format::OpenMetrics);
        assert!(om.ends_with("# EOF\n"), "{om}");
        assert!(om.contains("tether_handshakes_total{outcome=\"auth_failed\"} 0\n"), "{om}");
        assert!(om.contains("# TYPE tether_build info\n"), "{om}");
        let text = m.encode(Format::Prometheus);
        for want in [
            "# TYPE tether_handshakes_total counter\n",
            "tether_handshakes_total{outcome=\"auth_failed\"} 0\n",
            "tether_admin_auth_failures_total{reason=\"unknown\"} 0\n",
            "tether_sessions_refused_total{cap=\"account\"} 0\n",
            "tether_rotation_delegates{state=\"pending\"} 0\n",
            "tether_api_request_duration_seconds_count{method=\"GET\",route=\"/api/v1/accounts/{account}\"} 0\n",
            "# TYPE tether_build_info gauge\n",
        ] {
            assert!(text.contains(want), "{want} missing in\n{text}");
        }
        assert!(!text.contains("# EOF"));
    }
}
