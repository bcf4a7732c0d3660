//! `init`: create the database, master key, CA and server certificate, the first account with
//! its default token, and the first admin token; return the values once. Refuses (changing
//! nothing) on a data dir that is already initialised.
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::clock::now_unix;
use crate::datadir::{DataDir, DataDirError};
use crate::store::audit::Actor;
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
    /// Bad option.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
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
    if let Some(at) = DataDir::initialised_at(&opts.data_dir)? {
        return Err(InitError::AlreadyInitialised { path: opts.data_dir.display().to_string(), at });
    }
    let data = DataDir::open(&opts.data_dir)?;
    let files = tls::reissue_server_cert(&data.path, &opts.tls_sans)?;
    let ca_cert = files.ca.clone().unwrap_or_else(|| data.path.join(tls::CA_CERT));
    let ca_fingerprint_sha256 = tls::fingerprint_sha256(&ca_cert)?;
    let now = now_unix();
    let actor = Actor::system("init");
    let master = data.master.clone();
    let account = opts.account.clone();
    let (token_row, token, admin_value) = data
        .store
        .call_blocking(|conn| {
            let (_, row, token) =
                crate::tokens::create_account(conn, &master, &account, &account, &actor, now)?;
            let (_, admin) = crate::tokens::create_admin_token(
                conn,
                "init-admin",
                vec!["admin".into()],
                None,
                vec![],
                &actor,
                now,
            )?;
            crate::store::meta_set(conn, "initialised_at", &now.to_string())?;
            Ok((row, token, admin))
        })
        .map_err(DataDirError::from)?;
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

/// The default CA path of a data dir, if it exists (the CLI's `--ca-cert` default).
pub fn default_ca(data_dir: &Path) -> Option<PathBuf> {
    let p = data_dir.join(tls::CA_CERT);
    p.exists().then_some(p)
}
