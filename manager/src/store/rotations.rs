//! Rotations and each delegate's progress through one. The states and outcomes are enums
//! here and stored as the words they serialise to (`pending`, `grace_expired`, …), so the
//! database and the API keep the same words.
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use tether_protocol::message::RotateOutcome;
use uuid::Uuid;

use super::{i64_of, u64_col, StoreError};

/// Implements the stored word of an enum both ways: `as_str`, `parse`, and SQLite text.
macro_rules! stored_words {
    ($ty:ident { $($variant:ident => $word:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value, in order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The stored and API word.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $word),+
                }
            }

            /// The value of a stored word.
            pub fn parse(word: &str) -> Option<Self> {
                match word {
                    $($word => Some($ty::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ToSql for $ty {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $ty {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let word = value.as_str()?;
                Self::parse(word).ok_or_else(|| {
                    FromSqlError::Other(format!("unknown {} `{}`", stringify!($ty), tether_protocol::text::bounded(word, 32)).into())
                })
            }
        }
    };
}

/// Where one delegate is in a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DelegateState {
    /// Sent the successor (or about to be); no ack yet.
    Pending,
    /// Acknowledged the rotation on the old token.
    Acked,
    /// Connected with the successor: it has moved.
    Reconnected,
}

stored_words!(DelegateState { Pending => "pending", Acked => "acked", Reconnected => "reconnected" });

/// A delegate's progress as the API and CLI show it: the stored [`DelegateState`], except
/// that a delegate that acknowledged `manual` is shown as `manual` even when its proof
/// handshake was seen on the successor: it stays on the old token until an operator puts the
/// successor in place, and is cut at the deadline. Never stored; the words of
/// [`DelegateState`] read back as the same words here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShownDelegateState {
    /// Sent the successor (or about to be); no ack yet.
    Pending,
    /// Acknowledged the rotation on the old token.
    Acked,
    /// Seen on the successor (the proof handshake, then a session).
    Reconnected,
    /// Acknowledged `manual`: not moved; an operator must act before the deadline.
    Manual,
}

impl ShownDelegateState {
    /// Every value, in order.
    pub const ALL: &'static [ShownDelegateState] =
        &[Self::Pending, Self::Acked, Self::Reconnected, Self::Manual];

    /// The API word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Acked => "acked",
            Self::Reconnected => "reconnected",
            Self::Manual => "manual",
        }
    }
}

impl std::fmt::Display for ShownDelegateState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<DelegateState> for ShownDelegateState {
    fn from(s: DelegateState) -> Self {
        match s {
            DelegateState::Pending => Self::Pending,
            DelegateState::Acked => Self::Acked,
            DelegateState::Reconnected => Self::Reconnected,
        }
    }
}

/// What a delegate said it did with the successor (its `rotate_ack`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckOutcome {
    /// The successor is in use.
    Applied,
    /// Applying failed; the delegate stays on the old token.
    Failed,
    /// An operator must apply it.
    Manual,
}

stored_words!(AckOutcome { Applied => "applied", Failed => "failed", Manual => "manual" });

impl From<RotateOutcome> for AckOutcome {
    fn from(o: RotateOutcome) -> Self {
        match o {
            RotateOutcome::Applied => Self::Applied,
            RotateOutcome::Failed => Self::Failed,
            RotateOutcome::Manual => Self::Manual,
        }
    }
}

/// How a rotation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RotationOutcome {
    /// Every delegate moved onto the successor.
    Completed,
    /// The grace window ended first.
    GraceExpired,
}

stored_words!(RotationOutcome { Completed => "completed", GraceExpired => "grace_expired" });

/// Where a rotation is: running, or finished with its outcome (the API's `state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RotationState {
    /// The grace window is open.
    Running,
    /// Every delegate moved onto the successor.
    Completed,
    /// The grace window ended first.
    GraceExpired,
}

stored_words!(RotationState { Running => "running", Completed => "completed", GraceExpired => "grace_expired" });

impl From<Option<RotationOutcome>> for RotationState {
    fn from(outcome: Option<RotationOutcome>) -> Self {
        match outcome {
            None => Self::Running,
            Some(RotationOutcome::Completed) => Self::Completed,
            Some(RotationOutcome::GraceExpired) => Self::GraceExpired,
        }
    }
}

/// A rotation row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationRow {
    /// Rotation id (also the AEAD associated data of `sealed_token`).
    pub id: Uuid,
    /// Account.
    pub account_id: String,
    /// The token being replaced.
    pub old_token_id: Uuid,
    /// Its successor.
    pub new_token_id: Uuid,
    /// Unix seconds.
    pub started_at: u64,
    /// Who started it.
    pub started_by: String,
    /// End of the grace window: the old token is revoked then at the latest.
    pub deadline: u64,
    /// When it finished.
    pub finished_at: Option<u64>,
    /// How it ended, once it has.
    pub outcome: Option<RotationOutcome>,
}

impl RotationRow {
    /// Running, or how it ended.
    pub fn state(&self) -> RotationState {
        self.outcome.into()
    }
}

/// One delegate's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationDelegate {
    /// The delegate instance (from its hello).
    pub instance: Uuid,
    /// Its name.
    pub name: String,
    /// The session the rotate went to.
    pub session_id: Uuid,
    /// Where it is.
    pub state: DelegateState,
    /// The ack's outcome, once acked.
    pub outcome: Option<AckOutcome>,
    /// The ack's detail.
    pub detail: Option<String>,
    /// Unix seconds of the last change.
    pub updated_at: u64,
}

impl RotationDelegate {
    /// The progress shown by the API and CLI: `manual` once it acknowledged `manual`.
    pub fn shown_state(&self) -> ShownDelegateState {
        match self.outcome {
            Some(AckOutcome::Manual) => ShownDelegateState::Manual,
            _ => self.state.into(),
        }
    }
}

const COLS: &str =
    "id, account_id, old_token_id, new_token_id, started_at, started_by, deadline, finished_at, outcome";

fn uuid_col(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Uuid> {
    let s: String = r.get(i)?;
    s.parse()
        .map_err(|_| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, "uuid".into()))
}

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RotationRow> {
    Ok(RotationRow {
        id: uuid_col(r, 0)?,
        account_id: r.get(1)?,
        old_token_id: uuid_col(r, 2)?,
        new_token_id: uuid_col(r, 3)?,
        started_at: u64_col(r.get(4)?),
        started_by: r.get(5)?,
        deadline: u64_col(r.get(6)?),
        finished_at: r.get::<_, Option<i64>>(7)?.map(u64_col),
        outcome: r.get(8)?,
    })
}

/// Inserts a rotation.
pub fn insert(conn: &Connection, r: &RotationRow) -> Result<(), StoreError> {
    conn.execute(
        &format!("INSERT INTO rotations({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
        params![
            r.id.to_string(),
            r.account_id,
            r.old_token_id.to_string(),
            r.new_token_id.to_string(),
            i64_of(r.started_at),
            r.started_by,
            i64_of(r.deadline),
            r.finished_at.map(i64_of),
            r.outcome,
        ],
    )?;
    Ok(())
}

/// One rotation.
pub fn get(conn: &Connection, id: Uuid) -> Result<Option<RotationRow>, StoreError> {
    Ok(conn
        .query_row(&format!("SELECT {COLS} FROM rotations WHERE id = ?1"), [id.to_string()], from_row)
        .optional()?)
}

/// Rotations, finished or not, newest first.
pub fn list_recent(conn: &Connection, limit: u32) -> Result<Vec<RotationRow>, StoreError> {
    select_newest(conn, "", limit)
}

/// Unfinished rotations, newest first (to resume after a restart).
pub fn list_unfinished(conn: &Connection, limit: u32) -> Result<Vec<RotationRow>, StoreError> {
    select_newest(conn, "WHERE finished_at IS NULL", limit)
}

fn select_newest(conn: &Connection, filter: &str, limit: u32) -> Result<Vec<RotationRow>, StoreError> {
    let mut stmt = conn
        .prepare(&format!("SELECT {COLS} FROM rotations {filter} ORDER BY started_at DESC, id LIMIT ?1"))?;
    let rows = stmt.query_map([limit], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Marks a rotation finished and wipes its sealed successor.
pub fn finish(conn: &Connection, id: Uuid, now: u64, outcome: RotationOutcome) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE rotations SET finished_at = ?2, outcome = ?3, sealed_successor = NULL
         WHERE id = ?1 AND finished_at IS NULL",
        params![id.to_string(), i64_of(now), outcome],
    )?;
    Ok(n == 1)
}

/// Keeps the successor of a running rotation, sealed under the master key
/// ([`crate::keys::MasterKey::seal_successor`]), so a restarted manager can still hand it out.
pub fn set_sealed_successor(conn: &Connection, id: Uuid, sealed: &[u8]) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE rotations SET sealed_successor = ?2 WHERE id = ?1 AND finished_at IS NULL",
        params![id.to_string(), sealed],
    )?;
    Ok(())
}

/// The sealed successor of a running rotation (none once it has finished).
pub fn sealed_successor(conn: &Connection, id: Uuid) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT sealed_successor FROM rotations WHERE id = ?1 AND finished_at IS NULL",
            [id.to_string()],
            |r| r.get::<_, Option<Vec<u8>>>(0),
        )
        .optional()?
        .flatten())
}

/// Tracks `d` (as [`add_delegate`]) and claims the sending of `rotate` to its session: true
/// when that session has not been sent this rotation yet (it is recorded as sent), false when
/// it has. One transaction, so a claim is never recorded for an untracked delegate.
pub fn track_and_claim_push(
    conn: &mut Connection,
    rotation: Uuid,
    d: &RotationDelegate,
) -> Result<bool, StoreError> {
    let tx = conn.transaction()?;
    add_delegate(&tx, rotation, d)?;
    let session = d.session_id.to_string();
    let n = tx.execute(
        "UPDATE rotation_delegates SET rotate_sent_session = ?3
         WHERE rotation_id = ?1 AND instance = ?2 AND (rotate_sent_session IS NULL OR rotate_sent_session != ?3)",
        params![rotation.to_string(), d.instance.to_string(), session],
    )?;
    tx.commit()?;
    Ok(n == 1)
}

/// Adds a delegate (as `pending`) unless the instance is already tracked.
pub fn add_delegate(conn: &Connection, rotation: Uuid, d: &RotationDelegate) -> Result<(), StoreError> {
    conn.execute(
        "INSERT OR IGNORE INTO rotation_delegates(rotation_id, instance, name, session_id, state, outcome, detail, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            rotation.to_string(),
            d.instance.to_string(),
            d.name,
            d.session_id.to_string(),
            d.state,
            d.outcome,
            d.detail,
            i64_of(d.updated_at)
        ],
    )?;
    Ok(())
}

/// Records an ack for the delegate of `instance` (a `reconnected` delegate stays so).
/// Returns whether a tracked delegate matched.
pub fn ack(
    conn: &Connection,
    rotation: Uuid,
    instance: Uuid,
    outcome: AckOutcome,
    detail: &str,
    now: u64,
) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE rotation_delegates SET outcome = ?3, detail = ?4, updated_at = ?5,
             state = CASE state WHEN ?6 THEN ?6 ELSE ?7 END
         WHERE rotation_id = ?1 AND instance = ?2",
        params![
            rotation.to_string(),
            instance.to_string(),
            outcome,
            detail,
            i64_of(now),
            DelegateState::Reconnected,
            DelegateState::Acked
        ],
    )?;
    Ok(n > 0)
}

/// Marks delegates of this instance or name as reconnected on the new token.
pub fn reconnected(
    conn: &Connection,
    rotation: Uuid,
    instance: Uuid,
    name: &str,
    now: u64,
) -> Result<usize, StoreError> {
    Ok(conn.execute(
        "UPDATE rotation_delegates SET state = ?5, updated_at = ?4
         WHERE rotation_id = ?1 AND (instance = ?2 OR name = ?3) AND state != ?5",
        params![rotation.to_string(), instance.to_string(), name, i64_of(now), DelegateState::Reconnected],
    )?)
}

/// The delegates of a rotation.
pub fn delegates(conn: &Connection, rotation: Uuid) -> Result<Vec<RotationDelegate>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT instance, name, session_id, state, outcome, detail, updated_at FROM rotation_delegates
         WHERE rotation_id = ?1 ORDER BY name, instance",
    )?;
    let rows = stmt.query_map([rotation.to_string()], |r| {
        Ok(RotationDelegate {
            instance: uuid_col(r, 0)?,
            name: r.get(1)?,
            session_id: uuid_col(r, 2)?,
            state: r.get(3)?,
            outcome: r.get(4)?,
            detail: r.get(5)?,
            updated_at: u64_col(r.get(6)?),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Running rotations at one moment, for the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Rotations not finished.
    pub running: u64,
    /// Of those, how many are more than half through their grace window.
    pub past_half_grace: u64,
    /// Their delegates by the progress the API shows (`manual` once acknowledged so).
    pub delegates: Vec<(ShownDelegateState, u64)>,
}

/// Reads the running rotations' [`Progress`] at `now`.
pub fn progress(conn: &Connection, now: u64) -> Result<Progress, StoreError> {
    let mut p = Progress::default();
    let mut stmt = conn.prepare("SELECT started_at, deadline FROM rotations WHERE finished_at IS NULL")?;
    let rows = stmt.query_map([], |r| Ok((u64_col(r.get(0)?), u64_col(r.get(1)?))))?;
    for row in rows {
        let (started, deadline) = row?;
        p.running += 1;
        let half = started.saturating_add(deadline.saturating_sub(started) / 2);
        if now > half {
            p.past_half_grace += 1;
        }
    }
    let mut stmt = conn.prepare(
        "SELECT d.state, d.outcome, COUNT(*) FROM rotation_delegates d JOIN rotations r ON r.id = d.rotation_id
         WHERE r.finished_at IS NULL GROUP BY d.state, d.outcome",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, DelegateState>(0)?, r.get::<_, Option<AckOutcome>>(1)?, u64_col(r.get(2)?)))
    })?;
    for row in rows {
        let (state, outcome, n) = row?;
        let shown = match outcome {
            Some(AckOutcome::Manual) => ShownDelegateState::Manual,
            _ => state.into(),
        };
        match p.delegates.iter_mut().find(|(s, _)| *s == shown) {
            Some((_, total)) => *total += n,
            None => p.delegates.push((shown, n)),
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests;
