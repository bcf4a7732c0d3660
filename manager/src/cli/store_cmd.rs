//! `migrate` (apply the store's schema migrations ahead of a rolling upgrade; idempotent) and
//! `store copy` (move an SQLite installation onto PostgreSQL, verified row for row).
use std::path::PathBuf;
use std::process::ExitCode;

use super::commands::fail;
use super::{StoreCmd, EXIT_USAGE};
use crate::config::DatabaseUrl;
use crate::datadir::DataDir;
use crate::store::{SqliteStore, Store, StoreError, StoreOps, DB_FILE};

/// Why a store command failed.
#[derive(Debug, thiserror::Error)]
enum StoreCmdError {
    /// The command line names something that cannot be used; nothing was changed.
    #[error("{0}")]
    Usage(String),
    /// The store refused or failed; nothing was changed unless said.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn exit(json: bool, e: &StoreCmdError) -> ExitCode {
    match e {
        StoreCmdError::Usage(m) => fail(json, "usage", m, None, EXIT_USAGE),
        StoreCmdError::Store(e) => fail(json, "error", &e.to_string(), None, 1),
    }
}

/// `tether-manager migrate`.
pub(super) fn migrate(data_dir: PathBuf, database: Option<DatabaseUrl>, json: bool) -> ExitCode {
    let result = match &database {
        Some(url) => crate::init::block_on(async {
            let m = crate::store::postgres::PgStore::migrate_only(url.connect_string()).await?;
            Ok::<_, StoreCmdError>(format!(
                "PostgreSQL store: schema at version {} (was {}).\n",
                m.to, m.from
            ))
        }),
        None => {
            let db = data_dir.join(DB_FILE);
            if !db.exists() {
                Err(StoreCmdError::Usage(format!(
                    "no Tether database at {}: check --data-dir (or TETHER_DATA_DIR), or give --database for PostgreSQL",
                    db.display()
                )))
            } else {
                SqliteStore::open(&db).map_err(StoreCmdError::from).and_then(|s| {
                    let v = s.call_blocking(|c| {
                        Ok(c.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))?)
                    })?;
                    Ok(format!("SQLite store {}: schema at version {v}.\n", db.display()))
                })
            }
        }
    };
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => exit(json, &e),
    }
}

/// `tether-manager store …`.
pub(super) fn run(cmd: StoreCmd, json: bool) -> ExitCode {
    match cmd {
        StoreCmd::Copy { from, to } => match crate::init::block_on(copy(from, to)) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => exit(json, &e),
        },
    }
}

/// Copies the SQLite database `from` into the empty PostgreSQL store `to`, then reads the
/// target back and compares it with the source, row for row.
async fn copy(from: PathBuf, to: DatabaseUrl) -> Result<String, StoreCmdError> {
    // The source is never created: a typo must not become an empty store that is "copied".
    let file = if from.is_dir() { from.join(DB_FILE) } else { from.clone() };
    let dir = file.parent().map(PathBuf::from).unwrap_or_default();
    if !file.exists() || DataDir::initialised_at(&dir).ok().flatten().is_none() {
        return Err(StoreCmdError::Usage(format!(
            "{} is not an initialised Tether SQLite database (give the data dir or its {DB_FILE}); nothing was changed",
            from.display()
        )));
    }
    let source = Store::from(SqliteStore::open(&file)?);
    let target = Store::connect(&to.location()).await?;
    if !target.is_empty().await? {
        return Err(StoreCmdError::Usage(
            "the target PostgreSQL store is not empty; copy only into a new database. Nothing was changed"
                .into(),
        ));
    }
    let snapshot = source.snapshot().await?;
    target.restore(snapshot.clone()).await?;
    let copied = target.snapshot().await?;
    let mut out = String::from("TABLE               SOURCE  TARGET\n");
    for ((table, n), (_, m)) in snapshot.counts().into_iter().zip(copied.counts()) {
        out.push_str(&format!("{table:<18} {n:>7} {m:>7}\n"));
    }
    if copied != snapshot {
        return Err(StoreCmdError::Store(StoreError::Corrupt(format!(
            "the copy differs from the source after writing it; the target now holds a partial copy: drop and recreate that database before trying again\n{out}"
        ))));
    }
    out.push_str(&format!(
        "Copied {} into the PostgreSQL store; every row read back equal. Serve it with --database \
         (TETHER_DATABASE_URL) and the same data dir (its master key opens the copied tokens).\n",
        file.display()
    ));
    Ok(out)
}
