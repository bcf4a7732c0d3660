//! `init`: create the database, master key, CA and server certificate, the first account with
//! its default token, and the first admin token; return the values once. Refuses (changing
//! nothing) on a data dir that is already initialised. Also the other work done on the data
//! dir itself rather than through the API: `serve --init` ([`init_bare`]) and the offline
//! recovery of admin access ([`offline_admin_token`]).
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::clock::now_unix;
use crate::datadir::{DataDir, DataDirError};
use crate::store::admin::AdminTokenRow;
use crate::store::audit::Actor;
use crate::store::{Store, StoreError, StoreOps, DB_FILE};
use crate::tls::{self, TlsError};
use crate::validate::{self, InvalidInput};

/// What `init` needs.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Data dir.
    pub data_dir: PathBuf,
    /// First account id.
    pub account: String,
    /// Extra SANs of the server certificate.
    pub tls_sans: Vec<String>,
    /// The URL delegates and the CLI use to reach this manager.
    pub manager_url: String,
    /// The PostgreSQL store, or `None` for the SQLite file in the data dir.
    pub database: Option<crate::config::DatabaseUrl>,
}

/// What `init` made; printed once.
pub struct InitOutput {
    /// Account id.
    pub account_id: String,
    /// The default token's value.
    pub default_token: Zeroizing<String>,
    /// The default token's id.
    pub default_token_id: String,
    /// The first admin token's value.
    pub admin_token: Zeroizing<String>,
    /// Absolute path of the CA certificate PEM.
    pub ca_cert: PathBuf,
    /// Lowercase hex SHA-256 of the CA certificate (DER).
    pub ca_fingerprint_sha256: String,
    /// The manager URL.
    pub manager_url: String,
}

impl InitOutput {
    /// The `--json` form: one object.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "account_id": self.account_id,
            "default_token": self.default_token.as_str(),
            "default_token_id": self.default_token_id,
            "admin_token": self.admin_token.as_str(),
            "ca_cert": self.ca_cert,
            "ca_fingerprint_sha256": self.ca_fingerprint_sha256,
            "manager_url": self.manager_url,
        })
        .to_string()
    }
}

impl std::fmt::Debug for InitOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitOutput").field("account_id", &self.account_id).finish_non_exhaustive()
    }
}

/// Why `init` failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// Already initialised: nothing was changed.
    #[error("data dir {path} is already initialised (at unix time {at}); refusing to overwrite it. Nothing was changed. To start over, move the directory away first.")]
    AlreadyInitialised {
        /// The data dir.
        path: String,
        /// When.
        at: String,
    },
    /// The PostgreSQL store is already initialised: nothing was changed.
    #[error("the database (--database / TETHER_DATABASE_URL) is already initialised (at unix time {at}); refusing to initialise it again. Nothing was changed. A second manager of the same database needs a copy of the first one's data dir (master key and TLS files), not `init`.")]
    DatabaseInitialised {
        /// When.
        at: String,
    },
    /// Bad option.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Data dir problems.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// TLS material.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Runs `init`.
pub fn init(opts: &InitOptions) -> Result<InitOutput, InitError> {
    validate::name("account", &opts.account)?;
    for san in &opts.tls_sans {
        if san.is_empty()
            || san.len() > 253
            || !san.chars().all(|c| c.is_ascii_alphanumeric() || ".-:*".contains(c))
        {
            return Err(InvalidInput::new("tls-san", "must be a DNS name or an IP address").into());
        }
    }
    // Everything that touches the store runs on one runtime: a PostgreSQL connection lives
    // on the runtime that made it.
    let (data, ca_cert, token_row, token, admin_value) = block_on(async {
        let store = match &opts.database {
            None => None,
            Some(url) => {
                let store = Store::connect(&url.location()).await?;
                if let Some(at) = store.meta_get("initialised_at").await? {
                    return Err(InitError::DatabaseInitialised { at });
                }
                Some(store)
            }
        };
        if store.is_none() {
            if let Some(at) = DataDir::initialised_at(&opts.data_dir)? {
                return Err(InitError::AlreadyInitialised { path: opts.data_dir.display().to_string(), at });
            }
        }
        let (data, ca_cert) = prepare(&opts.data_dir, &opts.tls_sans, store)?;
        // The master key's check value first: of two `init`s racing on one database, the one
        // whose key is not recorded stops here, before making anything.
        claim_key(&data).await?;
        let now = now_unix();
        let actor = Actor::system("init");
        let (store, master, account) = (&data.store, &data.master, &opts.account);
        let (_, row, token) = crate::tokens::create_account(store, master, account, account, &actor, now)
            .await
            .map_err(DataDirError::from)?;
        let (_, admin) = crate::tokens::create_admin_token(
            store,
            "init-admin",
            vec!["admin".into()],
            None,
            vec![],
            &actor,
            now,
        )
        .await
        .map_err(DataDirError::from)?;
        store
            .meta_set(vec![("initialised_at".into(), now.to_string())], vec![])
            .await
            .map_err(DataDirError::from)?;
        Ok((data, ca_cert, row, token, admin))
    })?;
    drop(data);
    let ca_fingerprint_sha256 = tls::fingerprint_sha256(&ca_cert)?;
    Ok(InitOutput {
        account_id: opts.account.clone(),
        default_token: token.expose(),
        default_token_id: token_row.id.to_string(),
        admin_token: admin_value,
        ca_cert,
        ca_fingerprint_sha256,
        manager_url: opts.manager_url.clone(),
    })
}

/// Creates the data dir's files (directory, master key, database unless `store` is given, CA
/// and server certificate) and returns it opened, with the CA certificate's path.
fn prepare(
    data_dir: &Path,
    tls_sans: &[String],
    store: Option<Store>,
) -> Result<(DataDir, PathBuf), InitError> {
    let data = match store {
        Some(store) => DataDir::open_with(data_dir, store)?,
        None => DataDir::open(data_dir)?,
    };
    let files = tls::reissue_server_cert(&data.path, tls_sans)?;
    let ca_cert = files.ca.clone().unwrap_or_else(|| data.path.join(tls::CA_CERT));
    Ok((data, ca_cert))
}

/// `serve --init` on a data dir that is not initialised: what `init` makes except the secrets
/// (no account, no delegate token, no admin token), so nothing secret is made that would have
/// to be shown in a log. The first admin token comes from [`offline_admin_token`], run by
/// whoever can read the data dir. Returns the CA certificate's path.
pub fn init_bare(data_dir: &Path) -> Result<PathBuf, InitError> {
    if let Some(at) = DataDir::initialised_at(data_dir)? {
        return Err(InitError::AlreadyInitialised { path: data_dir.display().to_string(), at });
    }
    let (data, ca_cert) = prepare(data_dir, &[], None)?;
    block_on(async {
        claim_key(&data).await?;
        mark_bare(data.store.clone()).await
    })?;
    Ok(ca_cert)
}

/// [`init_bare`] with the PostgreSQL `store` (already connected, on the caller's runtime):
/// the data dir gets the master key and TLS files, the store the `initialised_at` mark.
pub async fn init_bare_with(data_dir: &Path, store: Store) -> Result<PathBuf, InitError> {
    if let Some(at) = store.meta_get("initialised_at").await? {
        return Err(InitError::DatabaseInitialised { at });
    }
    let (data, ca_cert) = prepare(data_dir, &[], Some(store.clone()))?;
    claim_key(&data).await?;
    mark_bare(store).await?;
    Ok(ca_cert)
}

/// Records the data dir's master-key check value in the store, or fails when another key's is
/// there already.
async fn claim_key(data: &DataDir) -> Result<(), InitError> {
    let check = data.master.check_value();
    let stored = data.store.meta_claim("master_key_check", &check).await?;
    if stored != check {
        let at =
            data.store.meta_get("initialised_at").await?.unwrap_or_else(|| "now, by another init".into());
        return Err(InitError::DatabaseInitialised { at });
    }
    Ok(())
}

async fn mark_bare(store: Store) -> Result<(), InitError> {
    let now = now_unix();
    let audit = Actor::system("serve --init").entry(now, "data_dir.init", "data_dir", "no tokens made");
    Ok(store.meta_set(vec![("initialised_at".into(), now.to_string())], vec![audit]).await?)
}

/// What `admin-token create --offline` makes.
#[derive(Debug, Clone)]
pub struct OfflineAdminToken {
    /// Its name.
    pub name: String,
    /// Its scopes (names).
    pub scopes: Vec<String>,
    /// Expire this many seconds from now.
    pub expires_in_secs: Option<u64>,
    /// Allowed source CIDRs.
    pub allowed_cidrs: Vec<String>,
    /// The PostgreSQL store, or `None` for the SQLite file of the data dir.
    pub database: Option<crate::config::DatabaseUrl>,
}

/// Why the offline recovery failed.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// There is no initialised data dir at the path (nothing was created there).
    #[error("data dir {path} is not initialised (no Tether database there); nothing was changed. Check --data-dir (or TETHER_DATA_DIR)")]
    NotInitialised {
        /// The data dir.
        path: String,
    },
    /// A bad option.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// The data dir or its database (a duplicate name is a conflict).
    #[error(transparent)]
    DataDir(#[from] DataDirError),
}

impl From<StoreError> for OfflineError {
    fn from(e: StoreError) -> Self {
        Self::DataDir(DataDirError::Store(e))
    }
}

/// Creates an admin token directly in the database of `data_dir`, without the API: the way
/// back in when no admin token works any more. It needs only write access to the data dir's
/// database (no master key, no running manager), works while a manager serves the same data
/// dir (SQLite WAL: a second writer waits for the lock within the busy timeout), and is
/// audited with the actor `local`. The token is bound to no account and has no restriction.
/// Returns its row and its value, to be shown once.
pub fn offline_admin_token(
    data_dir: &Path,
    req: &OfflineAdminToken,
) -> Result<(AdminTokenRow, Zeroizing<String>), OfflineError> {
    validate::name("name", &req.name)?;
    let scopes = crate::api::admin_tokens::scopes(&req.scopes)?;
    let allowed_cidrs = validate::cidrs("allowed_cidrs", &req.allowed_cidrs)?;
    let now = now_unix();
    let expires_at = req
        .expires_in_secs
        .map(|s| {
            validate::secs("expires_in", s, 1, crate::api::admin_tokens::MAX_EXPIRY_SECS).map(|s| now + s)
        })
        .transpose()?;
    if req.database.is_none() && DataDir::initialised_at(data_dir)?.is_none() {
        return Err(OfflineError::NotInitialised { path: data_dir.display().to_string() });
    }
    let actor = Actor::system("local");
    let (row, value) =
        crate::tokens::new_admin_row(&req.name, scopes, expires_at, allowed_cidrs, &actor, now);
    let detail = format!("{} scopes={} account=* restriction=- (offline)", row.name, row.scopes.join(","));
    let audit = actor.entry(now, "admin_token.create", &format!("admin_token:{}", row.id), &detail);
    // The store takes the write lock first (waiting within the busy timeout while a running
    // manager writes), so the name check cannot go stale.
    let inserted = row.clone();
    let (database, data_dir) = (req.database.clone(), data_dir.to_owned());
    block_on(async move {
        let store = match &database {
            Some(url) => {
                let store = Store::connect(&url.location()).await.map_err(DataDirError::from)?;
                if store.meta_get("initialised_at").await.map_err(DataDirError::from)?.is_none() {
                    return Err(OfflineError::NotInitialised {
                        path: "the PostgreSQL store (--database)".into(),
                    });
                }
                store
            }
            None => Store::open(&data_dir.join(DB_FILE)).map_err(DataDirError::from)?,
        };
        store.create_admin_token(inserted, audit).await.map_err(DataDirError::from)?;
        Ok(())
    })?;
    Ok((row, value))
}

/// Runs a store future to completion on a small runtime of its own, on a thread of its own:
/// `init` and the offline recovery run before (or without) the manager's runtime, and may be
/// called from inside another runtime (tests), which must not be re-entered.
pub fn block_on<T: Send, E: Send + From<StoreError>>(
    fut: impl std::future::Future<Output = Result<T, E>> + Send,
) -> Result<T, E> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| StoreError::Io(format!("cannot start a runtime: {e}")))?;
            rt.block_on(fut)
        })
        .join()
        .unwrap_or(Err(E::from(StoreError::Task)))
    })
}

/// The default CA path of a data dir, if it exists (the CLI's `--ca-cert` default).
pub fn default_ca(data_dir: &Path) -> Option<PathBuf> {
    let p = data_dir.join(tls::CA_CERT);
    p.exists().then_some(p)
}
