//! PostgreSQL failures as [`StoreError`]s: the message of a server error (its severity, SQLSTATE
//! and primary message, never its DETAIL, which can quote a row: an admin token's hash),
//! unique violations as conflicts, and the failures worth retrying (serialization failure,
//! deadlock) told apart from the rest while an operation runs.
use std::error::Error as _;

use tokio_postgres::error::SqlState;

use super::super::StoreError;

/// A failure while an operation runs: a domain or store error, or a PostgreSQL error that may
/// be retried ([`Failure::retryable`]) before it becomes a [`StoreError`].
#[derive(Debug)]
pub(super) enum Failure {
    /// Final: returned as is.
    Store(StoreError),
    /// From the server or the connection.
    Pg(tokio_postgres::Error),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Pg(e)
    }
}

impl From<deadpool_postgres::PoolError> for Failure {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => Self::Pg(e),
            other => Self::Store(StoreError::Postgres(format!("connection pool: {other}"))),
        }
    }
}

impl Failure {
    /// Whether running the whole transaction again may succeed: a serialization failure or a
    /// deadlock (PostgreSQL rolled the transaction back).
    pub(super) fn retryable(&self) -> bool {
        match self {
            Self::Pg(e) => matches!(
                e.code(),
                Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
            ),
            Self::Store(_) => false,
        }
    }

    /// The [`StoreError`] to return.
    pub(super) fn into_store(self) -> StoreError {
        match self {
            Self::Store(e) => e,
            Self::Pg(e) => pg(&e),
        }
    }
}

/// A PostgreSQL error as a [`StoreError`]: a foreign key violation is the missing row
/// (NotFound), a unique violation a conflict (with a generic text: callers that know which
/// name was taken say so with [`conflict`]), anything else [`StoreError::Postgres`].
pub(super) fn pg(e: &tokio_postgres::Error) -> StoreError {
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => {
            StoreError::Conflict("a row with this key already exists".into())
        }
        Some(c) if *c == SqlState::FOREIGN_KEY_VIOLATION => {
            StoreError::NotFound("the row it refers to".into())
        }
        _ => StoreError::Postgres(describe(e)),
    }
}

/// `e` as text: tokio-postgres's message and its causes (an I/O error, a TLS failure), or for a
/// server error its severity, SQLSTATE and primary message only. None of these carries the
/// connection URL or the password (tokio-postgres never puts its configuration in an error,
/// and the server's authentication failure names the user, not the password).
pub(super) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} {}: {}", db.severity(), db.code().code(), db.message());
    }
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Whether `f` is a unique violation of constraint `constraint`.
pub(super) fn is_unique_violation(f: &Failure, constraint: &str) -> bool {
    match f {
        Failure::Pg(e) => e.as_db_error().is_some_and(|db| {
            *db.code() == SqlState::UNIQUE_VIOLATION && db.constraint() == Some(constraint)
        }),
        Failure::Store(_) => false,
    }
}

/// Maps a unique violation of `constraint` to [`StoreError::Conflict`] with `message` (the
/// texts the SQLite backend uses); other failures pass through.
pub(super) fn conflict(f: Failure, constraint: &str, message: impl FnOnce() -> String) -> Failure {
    if is_unique_violation(&f, constraint) {
        Failure::Store(StoreError::Conflict(message()))
    } else {
        f
    }
}
