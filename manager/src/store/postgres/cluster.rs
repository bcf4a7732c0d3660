//! The replica set's tables on PostgreSQL: the change log (a row written inside the
//! transaction of each change, numbered gaplessly in commit order under an advisory lock, then
//! `NOTIFY tether_changes` with its number), a [`Listener`] connection of its own per replica
//! that `LISTEN`s and reads the log, the single-runner leases (a row with an owner, a fence and
//! an expiry in the database's clock), and the cluster-wide view of replicas and sessions.
use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, GenericClient};
use uuid::Uuid;

use super::super::cluster::{Change, ClusterSession, LoggedChange, Presence, ReplicaRow};
use super::super::{i64_of, u64_col, StoreError};
use super::error::{self, Failure};
use super::PgStore;

/// The advisory lock that orders change log writers ("tether" in ASCII, then 2): held from the
/// number's choice to the commit, so numbers become visible in order and without gaps.
const CHANGE_LOCK: i64 = 0x7465_7468_6572_0002;

/// The notification channel.
const CHANNEL: &str = "tether_changes";

/// New sessions written per statement by a presence sync.
const INSERT_BATCH: usize = 2_000;

/// How long one query of the listener may take before its connection counts as dead (a
/// silent, half-open connection otherwise hangs until TCP gives up).
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// Appends `change` to the log within the caller's transaction and notifies listeners (the
/// notification is delivered at commit, and dropped with a rollback).
pub(super) async fn log_change(
    c: &impl GenericClient,
    origin: Uuid,
    change: Change,
    now: u64,
) -> Result<(), Failure> {
    c.execute("SELECT pg_advisory_xact_lock($1)", &[&CHANGE_LOCK]).await?;
    c.execute(
        "WITH c AS (INSERT INTO changes (seq, kind, subject, origin, at)
                    SELECT COALESCE(MAX(seq), 0) + 1, $1, $2, $3, $4 FROM changes RETURNING seq)
         SELECT pg_notify('tether_changes', seq::text) FROM c",
        &[&change.kind(), &change.subject().to_string(), &origin.to_string(), &i64_of(now)],
    )
    .await?;
    Ok(())
}

fn logged(row: &tokio_postgres::Row) -> Result<LoggedChange, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("change log: {what}"));
    let seq: i64 = row.try_get(0).map_err(|_| corrupt("seq"))?;
    let kind: String = row.try_get(1).map_err(|_| corrupt("kind"))?;
    let subject: String = row.try_get(2).map_err(|_| corrupt("subject"))?;
    let origin: String = row.try_get(3).map_err(|_| corrupt("origin"))?;
    Ok(LoggedChange {
        seq,
        change: Change::parse(&kind, &subject),
        origin: Uuid::parse_str(&origin).unwrap_or_else(|_| Uuid::nil()),
    })
}

/// A connection of its own that listens for change numbers and reads the log.
pub struct Listener {
    client: tokio_postgres::Client,
    notes: mpsc::UnboundedReceiver<i64>,
    driver: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").finish_non_exhaustive()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Listener {
    /// The next notified change number; `None` once the connection is gone (everything
    /// notified meanwhile is lost: read the log from the last applied number).
    pub async fn next_note(&mut self) -> Option<i64> {
        self.notes.recv().await
    }

    /// Up to `limit` changes after `after`, in order.
    pub async fn changes_after(&self, after: i64, limit: u32) -> Result<Vec<LoggedChange>, StoreError> {
        let rows = self
            .query(
                "SELECT seq, kind, subject, origin FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&after, &i64::from(limit)],
            )
            .await?;
        rows.iter().map(logged).collect()
    }

    /// The lowest and highest numbers in the log (0, 0 when it is empty).
    pub async fn bounds(&self) -> Result<(i64, i64), StoreError> {
        let rows =
            self.query("SELECT COALESCE(MIN(seq), 0), COALESCE(MAX(seq), 0) FROM changes", &[]).await?;
        let row = rows.first().ok_or_else(|| StoreError::Postgres("no row".into()))?;
        let get = |i| row.try_get::<_, i64>(i).map_err(|e| Failure::from(e).into_store());
        Ok((get(0)?, get(1)?))
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        match tokio::time::timeout(QUERY_TIMEOUT, self.client.query(sql, params)).await {
            Ok(r) => r.map_err(|e| Failure::from(e).into_store()),
            Err(_) => Err(StoreError::Postgres("the listener connection did not answer in time".into())),
        }
    }
}

impl PgStore {
    /// Opens a listener: a connection of its own, `LISTEN` issued before it returns (so a
    /// change committed after this is notified, and one committed before is in the log).
    pub async fn listen(&self) -> Result<Listener, StoreError> {
        let mut config = (*self.config).clone();
        config.connect_timeout(QUERY_TIMEOUT).keepalives(true).keepalives_idle(Duration::from_secs(5));
        let connect = config.connect(self.tls.clone());
        let (client, mut connection) = match tokio::time::timeout(QUERY_TIMEOUT * 2, connect).await {
            Ok(r) => r.map_err(|e| Failure::from(e).into_store())?,
            Err(_) => return Err(StoreError::Postgres("connecting the listener timed out".into())),
        };
        let (tx, notes) = mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(n)) if n.channel() == CHANNEL => {
                        if let Ok(seq) = n.payload().parse::<i64>() {
                            if tx.send(seq).is_err() {
                                return;
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %error::describe(&e), "listener connection closed");
                        return;
                    }
                }
            }
        });
        let listener = Listener { client, notes, driver };
        match tokio::time::timeout(QUERY_TIMEOUT, listener.client.batch_execute("LISTEN tether_changes"))
            .await
        {
            Ok(r) => r.map_err(|e| Failure::from(e).into_store())?,
            Err(_) => return Err(StoreError::Postgres("LISTEN timed out".into())),
        }
        Ok(listener)
    }

    /// Logs `change` on its own (a change with no row of its own to write, such as a
    /// disconnect asked of a session another replica holds).
    pub async fn publish(&self, change: Change) -> Result<(), StoreError> {
        let origin = self.replica;
        self.run("publish_change", || async move {
            let mut client = self.client().await?;
            let tx = Self::write(&mut client).await?;
            log_change(&*tx, origin, change, crate::clock::now_unix()).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Asks the replica holding `session` to ping it: the request's row and its change, in one
    /// transaction.
    pub async fn request_ping(&self, id: Uuid, session: Uuid, payload: &str) -> Result<(), StoreError> {
        let origin = self.replica;
        self.run("request_ping", || async move {
            let mut client = self.client().await?;
            let tx = Self::write(&mut client).await?;
            tx.execute(
                "INSERT INTO pings (id, session_id, payload) VALUES ($1, $2, $3)",
                &[&id.to_string(), &session.to_string(), &payload],
            )
            .await?;
            log_change(&*tx, origin, Change::Ping(id), crate::clock::now_unix()).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// The session and payload of ping request `id`, while it is unanswered.
    pub async fn ping_request(&self, id: Uuid) -> Result<Option<(Uuid, String)>, StoreError> {
        self.run("ping_request", || async move {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    "SELECT session_id, payload FROM pings WHERE id = $1 AND ok IS NULL",
                    &[&id.to_string()],
                )
                .await?;
            let Some(row) = row else { return Ok(None) };
            let session: String = row.try_get(0)?;
            let payload: String = row.try_get(1)?;
            Ok(Uuid::parse_str(&session).ok().map(|s| (s, payload)))
        })
        .await
    }

    /// Records the delegate's answer to ping request `id`.
    pub async fn answer_ping(&self, id: Uuid, ok: bool, reply: &str) -> Result<(), StoreError> {
        self.run("answer_ping", || async move {
            let client = self.client().await?;
            client
                .execute(
                    "UPDATE pings SET ok = $2, reply = $3 WHERE id = $1 AND ok IS NULL",
                    &[&id.to_string(), &ok, &reply],
                )
                .await?;
            Ok(())
        })
        .await
    }

    /// The answer to ping request `id`, once there is one.
    pub async fn ping_answer(&self, id: Uuid) -> Result<Option<(bool, String)>, StoreError> {
        self.run("ping_answer", || async move {
            let client = self.client().await?;
            let row = client
                .query_opt("SELECT ok, reply FROM pings WHERE id = $1 AND ok IS NOT NULL", &[&id.to_string()])
                .await?;
            let Some(row) = row else { return Ok(None) };
            let ok: bool = row.try_get(0)?;
            let reply: Option<String> = row.try_get(1)?;
            Ok(Some((ok, reply.unwrap_or_default())))
        })
        .await
    }

    /// Takes or renews the lease `name` for this replica for `ttl`; returns its fence (a number
    /// that grows at every change of owner) while this replica holds it, `None` while another
    /// does. Expiry is judged by the database's clock, so replicas' clocks do not matter.
    pub async fn renew_lease(&self, name: &str, ttl: Duration) -> Result<Option<i64>, StoreError> {
        let owner = self.replica.to_string();
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        self.run("renew_lease", || {
            let owner = owner.clone();
            async move {
                let client = self.client().await?;
                let row = client
                    .query_opt(
                        "INSERT INTO leases (name, owner, fence, expires_at)
                         VALUES ($1, $2, 1, clock_timestamp() + $3::float8 * interval '1 millisecond')
                         ON CONFLICT (name) DO UPDATE
                           SET owner = EXCLUDED.owner,
                               fence = leases.fence + CASE WHEN leases.owner = EXCLUDED.owner THEN 0 ELSE 1 END,
                               expires_at = EXCLUDED.expires_at
                           WHERE leases.owner = EXCLUDED.owner OR leases.expires_at < clock_timestamp()
                         RETURNING fence",
                        &[&name, &owner, &(ttl_ms as f64)],
                    )
                    .await?;
                Ok(row.map(|r| r.try_get::<_, i64>(0)).transpose()?)
            }
        })
        .await
    }

    /// Gives the lease `name` up if this replica holds it (a clean shutdown: the next replica
    /// need not wait for it to expire).
    pub async fn release_lease(&self, name: &str) -> Result<(), StoreError> {
        let owner = self.replica.to_string();
        self.run("release_lease", || {
            let owner = owner.clone();
            async move {
                let client = self.client().await?;
                client.execute("DELETE FROM leases WHERE name = $1 AND owner = $2", &[&name, &owner]).await?;
                Ok(())
            }
        })
        .await
    }

    /// Records this replica's presence: its row, and its sessions' rows changed since the last
    /// sync (one transaction, whatever the number of heartbeats: a session's row is written when
    /// it appears and deleted when it ends; its liveness is its replica's last report). Returns whether its row was
    /// new: a replica reaped while it was silent must then write all its sessions again.
    pub async fn sync_presence(&self, p: &Presence) -> Result<bool, StoreError> {
        self.run("sync_presence", || async move {
            let mut client = self.client().await?;
            let tx = Self::write(&mut client).await?;
            let id = p.replica_id.to_string();
            let row = tx
                .query_one(
                    "INSERT INTO replicas (id, version, host, started_at, last_seen, seen_at, sessions, accepting, lease_ms)
                     VALUES ($1, $2, $3, $4, $5, clock_timestamp(), $6, $7, $8)
                     ON CONFLICT (id) DO UPDATE SET last_seen = EXCLUDED.last_seen, seen_at = EXCLUDED.seen_at,
                         sessions = EXCLUDED.sessions, accepting = EXCLUDED.accepting, lease_ms = EXCLUDED.lease_ms
                     RETURNING (xmax = 0)",
                    &[
                        &id,
                        &p.version,
                        &p.host,
                        &i64_of(p.started_at),
                        &i64_of(p.now),
                        &i64_of(p.sessions),
                        &p.accepting,
                        &i64::try_from(p.lease.as_millis()).unwrap_or(i64::MAX),
                    ],
                )
                .await?;
            let inserted: bool = row.try_get(0)?;
            if !p.removed.is_empty() {
                let gone: Vec<String> = p.removed.iter().map(Uuid::to_string).collect();
                tx.execute(
                    "DELETE FROM cluster_sessions WHERE replica_id = $1 AND session_id = ANY($2)",
                    &[&id, &gone],
                )
                .await?;
            }
            // One statement per batch of new sessions (arrays unnested), not one per session.
            for batch in p.added.chunks(INSERT_BATCH) {
                let col = |f: fn(&ClusterSession) -> String| batch.iter().map(f).collect::<Vec<String>>();
                let num = |f: fn(&ClusterSession) -> u64| batch.iter().map(|s| i64_of(f(s))).collect::<Vec<i64>>();
                tx.execute(
                    "INSERT INTO cluster_sessions (session_id, replica_id, account_id, token_id, name, instance,
                         host, version, ip, connected_at, last_heartbeat)
                     SELECT u.session_id, $1, u.account_id, u.token_id, u.name, u.instance, u.host, u.version, u.ip,
                            u.connected_at, u.last_heartbeat
                     FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                                 $9::text[], $10::bigint[], $11::bigint[])
                          AS u(session_id, account_id, token_id, name, instance, host, version, ip, connected_at,
                               last_heartbeat)
                     ON CONFLICT (session_id) DO NOTHING",
                    &[
                        &id,
                        &col(|s| s.session_id.to_string()),
                        &col(|s| s.account_id.clone()),
                        &col(|s| s.token_id.to_string()),
                        &col(|s| s.name.clone()),
                        &col(|s| s.instance.to_string()),
                        &col(|s| s.host.clone()),
                        &col(|s| s.version.clone()),
                        &col(|s| s.ip.to_string()),
                        &num(|s| s.connected_at),
                        &num(|s| s.last_heartbeat),
                    ],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(inserted)
        })
        .await
    }

    /// Forgets this replica (a clean shutdown): its row and its sessions' rows.
    pub async fn leave(&self) -> Result<(), StoreError> {
        let id = self.replica.to_string();
        self.run("leave", || {
            let id = id.clone();
            async move {
                let mut client = self.client().await?;
                let tx = Self::write(&mut client).await?;
                tx.execute("DELETE FROM cluster_sessions WHERE replica_id = $1", &[&id]).await?;
                tx.execute("DELETE FROM replicas WHERE id = $1", &[&id]).await?;
                tx.commit().await?;
                Ok(())
            }
        })
        .await
    }

    /// Deletes the rows of replicas silent past their own lease (and their sessions'), and the
    /// oldest rows of the change log, written by the database's clock more than `keep_secs`
    /// ago: always a prefix of the numbers (never a hole), and never the newest row, which
    /// carries the numbering on. Returns the replicas reaped.
    pub async fn reap(&self, keep_secs: u64) -> Result<u64, StoreError> {
        let keep_ms = (keep_secs as f64) * 1000.0;
        self.run("reap", || async move {
            let mut client = self.client().await?;
            let tx = Self::write(&mut client).await?;
            tx.execute(
                &format!(
                    "DELETE FROM cluster_sessions WHERE replica_id IN (SELECT id FROM replicas WHERE NOT {ALIVE})
                       OR replica_id NOT IN (SELECT id FROM replicas)"
                ),
                &[],
            )
            .await?;
            let reaped = tx.execute(&format!("DELETE FROM replicas WHERE NOT {ALIVE}"), &[]).await?;
            tx.execute("DELETE FROM pings WHERE created < clock_timestamp() - interval '1 minute'", &[]).await?;
            tx.execute(
                "DELETE FROM changes
                 WHERE seq <= (SELECT MAX(seq) FROM changes
                               WHERE created < clock_timestamp() - $1::float8 * interval '1 millisecond')
                   AND seq < (SELECT MAX(seq) FROM changes)",
                &[&keep_ms],
            )
            .await?;
            tx.commit().await?;
            Ok(reaped)
        })
        .await
    }

    /// Every replica recorded, newest start first; `alive` while its last report is within its
    /// lease. A row that does not read back (a malformed id) is skipped, with a warning.
    pub async fn replicas(&self) -> Result<Vec<ReplicaRow>, StoreError> {
        self.run("replicas", || async move {
            let client = self.client().await?;
            let rows = client
                .query(
                    &format!(
                        "SELECT id, version, host, started_at, last_seen, sessions, accepting, {ALIVE}
                         FROM replicas ORDER BY started_at DESC, id"
                    ),
                    &[],
                )
                .await?;
            Ok(rows.iter().filter_map(|r| skip_malformed("replicas", replica(r))).collect())
        })
        .await
    }

    /// Live sessions of the other live replicas (of `account` only, and only session
    /// `only`, if given). A row that does not read back is skipped, with a warning: one bad
    /// row must not hide every other.
    pub async fn sessions_elsewhere(
        &self,
        account: Option<&str>,
        only: Option<Uuid>,
    ) -> Result<Vec<ClusterSession>, StoreError> {
        let (me, only) = (self.replica.to_string(), only.map(|s| s.to_string()));
        self.run("sessions_elsewhere", || {
            let (me, only) = (me.clone(), only.clone());
            async move {
                let client = self.client().await?;
                let rows = client
                    .query(
                        &format!(
                            "SELECT s.replica_id, s.session_id, s.account_id, s.token_id, s.name, s.instance, s.host,
                                    s.version, s.ip, s.connected_at, GREATEST(s.last_heartbeat, r.last_seen)
                             FROM cluster_sessions s JOIN replicas r ON r.id = s.replica_id
                             WHERE s.replica_id <> $1 AND ($2::text IS NULL OR s.account_id = $2)
                               AND ($3::text IS NULL OR s.session_id = $3) AND {ALIVE_R}
                             ORDER BY s.account_id, s.name, s.session_id"
                        ),
                        &[&me, &account, &only],
                    )
                    .await?;
                Ok(rows.iter().filter_map(|r| skip_malformed("cluster_sessions", session(r))).collect())
            }
        })
        .await
    }

    /// Live sessions per token (of `token` only, if given) on the other live replicas.
    pub async fn counts_elsewhere(&self, token: Option<Uuid>) -> Result<HashMap<Uuid, usize>, StoreError> {
        let (me, token) = (self.replica.to_string(), token.map(|t| t.to_string()));
        self.run("counts_elsewhere", || {
            let (me, token) = (me.clone(), token.clone());
            async move {
                let client = self.client().await?;
                let rows = client
                    .query(
                        &format!(
                            "SELECT s.token_id, COUNT(*) FROM cluster_sessions s JOIN replicas r ON r.id = s.replica_id
                             WHERE s.replica_id <> $1 AND ($2::text IS NULL OR s.token_id = $2) AND {ALIVE_R}
                             GROUP BY s.token_id"
                        ),
                        &[&me, &token],
                    )
                    .await?;
                let mut out = HashMap::new();
                for r in &rows {
                    let token: String = r.try_get(0)?;
                    let n: i64 = r.try_get(1)?;
                    if let Ok(id) = Uuid::parse_str(&token) {
                        out.insert(id, usize::try_from(n).unwrap_or(0));
                    }
                }
                Ok(out)
            }
        })
        .await
    }
}

/// Whether a `replicas` row is within its lease (its sessions may still be open).
const ALIVE: &str = "seen_at >= clock_timestamp() - lease_ms * interval '1 millisecond'";

/// [`ALIVE`] of the `replicas` row aliased `r`.
const ALIVE_R: &str = "r.seen_at >= clock_timestamp() - r.lease_ms * interval '1 millisecond'";

fn skip_malformed<T>(table: &str, row: Result<T, StoreError>) -> Option<T> {
    match row {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(table, error = %e, "skipping a row that does not read back");
            None
        }
    }
}

fn replica(r: &tokio_postgres::Row) -> Result<ReplicaRow, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("replica: {what}"));
    let id: String = r.try_get(0).map_err(|_| corrupt("id"))?;
    let num = |i: usize, what: &str| -> Result<u64, StoreError> {
        r.try_get::<_, i64>(i).map(u64_col).map_err(|_| corrupt(what))
    };
    Ok(ReplicaRow {
        id: Uuid::parse_str(&id).map_err(|_| corrupt("id"))?,
        version: r.try_get(1).map_err(|_| corrupt("version"))?,
        host: r.try_get(2).map_err(|_| corrupt("host"))?,
        started_at: num(3, "started_at")?,
        last_seen: num(4, "last_seen")?,
        sessions: num(5, "sessions")?,
        accepting: r.try_get(6).map_err(|_| corrupt("accepting"))?,
        alive: r.try_get(7).map_err(|_| corrupt("alive"))?,
    })
}

fn session(r: &tokio_postgres::Row) -> Result<ClusterSession, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("cluster session: {what}"));
    let uuid = |i: usize, what: &str| -> Result<Uuid, StoreError> {
        let s: String = r.try_get(i).map_err(|_| corrupt(what))?;
        Uuid::parse_str(&s).map_err(|_| corrupt(what))
    };
    let text =
        |i: usize, what: &str| -> Result<String, StoreError> { r.try_get(i).map_err(|_| corrupt(what)) };
    let num = |i: usize, what: &str| -> Result<u64, StoreError> {
        r.try_get::<_, i64>(i).map(u64_col).map_err(|_| corrupt(what))
    };
    Ok(ClusterSession {
        replica_id: uuid(0, "replica")?,
        session_id: uuid(1, "session")?,
        account_id: text(2, "account")?,
        token_id: uuid(3, "token")?,
        name: text(4, "name")?,
        instance: uuid(5, "instance")?,
        host: text(6, "host")?,
        version: text(7, "version")?,
        ip: text(8, "ip")?.parse().map_err(|_| corrupt("ip"))?,
        connected_at: num(9, "connected_at")?,
        last_heartbeat: num(10, "last_heartbeat")?,
    })
}
