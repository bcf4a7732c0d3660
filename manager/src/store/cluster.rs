//! The replica set's records, backend-neutral: a change live sessions must see ([`Change`]),
//! as numbered in the change log ([`LoggedChange`]), a replica of the set ([`ReplicaRow`]) and
//! one live session as the cluster-wide view holds it ([`ClusterSession`]). Only the
//! PostgreSQL store keeps them (one SQLite file has one manager).
use std::net::IpAddr;

use uuid::Uuid;

/// A change that must reach the live sessions of every replica. The change log carries only
/// what changed; each replica reads the current state from the tables when it applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Change {
    /// A delegate token changed in a way sessions must see: revoked, deleted, or its expiry.
    Token(Uuid),
    /// A rotation started: sessions on its old token are sent the successor.
    RotationStarted(Uuid),
    /// A rotation finished (its old token is revoked by the same transaction).
    RotationFinished(Uuid),
    /// An operator asked to disconnect one session (`delegate disconnect`).
    Disconnect(Uuid),
    /// An operator asked to ping a session another replica holds (the id of its `pings` row).
    Ping(Uuid),
}

impl Change {
    /// The `kind` column.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Token(_) => "token",
            Self::RotationStarted(_) => "rotation_started",
            Self::RotationFinished(_) => "rotation_finished",
            Self::Disconnect(_) => "disconnect",
            Self::Ping(_) => "ping",
        }
    }

    /// The `subject` column: the id the change is about.
    pub fn subject(&self) -> Uuid {
        match self {
            Self::Token(id)
            | Self::RotationStarted(id)
            | Self::RotationFinished(id)
            | Self::Disconnect(id)
            | Self::Ping(id) => *id,
        }
    }

    /// Reads a logged change back; `None` for a kind this binary does not know (written by a
    /// newer replica during a rolling upgrade) or a malformed subject.
    pub fn parse(kind: &str, subject: &str) -> Option<Self> {
        let id = Uuid::parse_str(subject).ok()?;
        Some(match kind {
            "token" => Self::Token(id),
            "rotation_started" => Self::RotationStarted(id),
            "rotation_finished" => Self::RotationFinished(id),
            "disconnect" => Self::Disconnect(id),
            "ping" => Self::Ping(id),
            _ => return None,
        })
    }
}

/// One row of the change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedChange {
    /// Its number: gapless and in commit order.
    pub seq: i64,
    /// What changed (`None`: a kind this binary does not know; skipped).
    pub change: Option<Change>,
    /// The replica that made it (it applied it to its own sessions already).
    pub origin: Uuid,
}

/// A replica of the set, as it last reported itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRow {
    /// Its id (new at every start).
    pub id: Uuid,
    /// Its version.
    pub version: String,
    /// Its host name.
    pub host: String,
    /// Unix seconds.
    pub started_at: u64,
    /// Unix seconds of its last report.
    pub last_seen: u64,
    /// Live sessions at its last report.
    pub sessions: u64,
    /// Whether it accepts delegate sessions (false while it fails closed or drains).
    pub accepting: bool,
    /// Whether its last report is within the liveness lease.
    pub alive: bool,
}

/// One live session in the cluster-wide view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSession {
    /// The replica holding it.
    pub replica_id: Uuid,
    /// Session id.
    pub session_id: Uuid,
    /// Account.
    pub account_id: String,
    /// Token.
    pub token_id: Uuid,
    /// Delegate name.
    pub name: String,
    /// Delegate instance.
    pub instance: Uuid,
    /// Delegate host.
    pub host: String,
    /// Delegate version.
    pub version: String,
    /// Source address.
    pub ip: IpAddr,
    /// Unix seconds.
    pub connected_at: u64,
    /// Unix seconds of the last heartbeat the holder reported.
    pub last_heartbeat: u64,
}

/// What a replica reports about itself at each presence sync.
#[derive(Debug, Clone)]
pub struct Presence {
    /// The replica.
    pub replica_id: Uuid,
    /// Its version.
    pub version: String,
    /// Its host name.
    pub host: String,
    /// Unix seconds.
    pub started_at: u64,
    /// Now (unix seconds).
    pub now: u64,
    /// Whether it accepts delegate sessions.
    pub accepting: bool,
    /// Sessions that appeared since the last sync.
    pub added: Vec<ClusterSession>,
    /// Sessions that ended since the last sync.
    pub removed: Vec<Uuid>,
    /// Live sessions now.
    pub sessions: u64,
    /// How long after this report its sessions may still be open: its fail-closed window
    /// and two presence periods. Past it the replica is dead to the others.
    pub lease: std::time::Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_change_reads_back_and_unknown_kinds_are_skipped() {
        let id = Uuid::new_v4();
        for c in [
            Change::Token(id),
            Change::RotationStarted(id),
            Change::RotationFinished(id),
            Change::Disconnect(id),
        ] {
            assert_eq!(Change::parse(c.kind(), &c.subject().to_string()), Some(c));
        }
        assert_eq!(Change::parse("future_kind", &id.to_string()), None);
        assert_eq!(Change::parse("token", "not-a-uuid"), None);
        assert_eq!(Change::parse("token", "ü"), None);
    }
}
