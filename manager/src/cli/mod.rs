//! The command line: `init`, `serve`, and the client subcommands that call a running
//! manager's API (`token`, `delegate`, `account`, `admin-token`, `restriction`, `rotation`,
//! `audit`), and `completions` / `man`, generated from these clap definitions.
//! Exit codes (OPERATIONS.md, "Exit codes"): 0 ok, [`EXIT_USAGE`] 64 bad configuration or
//! usage, [`EXIT_REFUSED`] 65 input the server refused (4xx), [`EXIT_UNAVAILABLE`] 69 the
//! manager cannot be reached (or its certificate is not trusted), [`EXIT_NOT_AUTHORISED`] 77
//! not authorised (401, 403, locked out), 1 anything else. Durations are parsed by
//! [`duration::parse_secs`] (`3600`, `90s`, `1h`, `30d`).
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tether_protocol::SecretString;

use crate::config::{DatabaseUrl, DEFAULT_DATA_DIR};

mod client;
mod commands;
pub mod duration;
mod generated;
mod render;
mod serve;
mod store_cmd;
mod table;
mod tls_show;

pub use client::{ApiClient, ClientError};
pub use tls_show::{TlsCmd, TlsShowArgs};

/// Exit code for bad configuration or usage (`EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;
/// Exit code for input the server refused: validation, not found, conflict (`EX_DATAERR`).
pub const EXIT_REFUSED: u8 = 65;
/// Exit code when the manager cannot be reached or not trusted (`EX_UNAVAILABLE`).
pub const EXIT_UNAVAILABLE: u8 = 69;
/// Exit code when the admin token is refused: 401, 403, locked out (`EX_NOPERM`).
pub const EXIT_NOT_AUTHORISED: u8 = 77;

/// `tether-manager`.
#[derive(Debug, Parser)]
#[command(
    name = "tether-manager",
    version,
    about = "Tether manager: delegate tokens, rotation, revocation and the delegate endpoint"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the data dir: database, master key, CA, first account and admin token.
    Init(InitArgs),
    /// Run the manager.
    Serve(ServeArgs),
    /// Apply the store's schema migrations and exit (idempotent): run it ahead of a rolling
    /// upgrade, so managers of the new version start on a migrated schema.
    Migrate {
        /// Data directory (its SQLite file, when no --database is given).
        #[arg(long, env = "TETHER_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// PostgreSQL store, postgres://USER:PASSWORD@HOST:PORT/DB.
        #[arg(long, env = "TETHER_DATABASE_URL", hide_env_values = true, value_parser = parse_database)]
        database: Option<DatabaseArg>,
        /// Machine-readable errors.
        #[arg(long)]
        json: bool,
    },
    /// Store maintenance.
    Store {
        /// What to do.
        #[command(subcommand)]
        cmd: StoreCmd,
        /// Machine-readable errors.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Delegate tokens.
    Token {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// Live delegates.
    Delegate {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        cmd: DelegateCmd,
    },
    /// The managers of a replica set on one PostgreSQL store.
    Replica {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        cmd: ReplicaCmd,
    },
    /// Accounts.
    Account {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        cmd: AccountCmd,
    },
    /// Admin tokens of the API.
    AdminToken {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        cmd: AdminTokenCmd,
    },
    /// Endpoint restrictions of admin tokens.
    Restriction {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        cmd: RestrictionCmd,
    },
    /// Rotations.
    Rotation {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        cmd: RotationCmd,
    },
    /// The audit log, newest first.
    Audit {
        #[command(flatten)]
        client: ClientArgs,
        /// How many entries.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// The generated TLS certificates in the data dir (read from the files, no API call).
    Tls {
        #[command(subcommand)]
        cmd: TlsCmd,
    },
    /// Print a shell completion script to stdout, e.g. `tether-manager completions bash >
    /// /etc/bash_completion.d/tether-manager`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout, e.g. `tether-manager man > tether-manager.1`.
    Man,
}

/// `init` options.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Data directory.
    #[arg(long, env = "TETHER_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// First account id.
    #[arg(long, default_value = "default")]
    pub account: String,
    /// Extra subject alternative name of the server certificate (repeatable).
    #[arg(long = "tls-san")]
    pub tls_sans: Vec<String>,
    /// PostgreSQL store, postgres://USER:PASSWORD@HOST:PORT/DB (default: the SQLite file in
    /// the data dir, which then keeps only the master key and TLS files).
    #[arg(long, env = "TETHER_DATABASE_URL", hide_env_values = true, value_parser = parse_database)]
    pub database: Option<DatabaseArg>,
    /// The URL delegates and the CLI will use.
    #[arg(long, default_value = "https://127.0.0.1:8443")]
    pub manager_url: String,
    /// Print one JSON object.
    #[arg(long, conflicts_with = "env")]
    pub json: bool,
    /// Print dotenv lines (ACCOUNT_ID, ACCOUNT_SECRET, TETHER_ADMIN_TOKEN).
    #[arg(long)]
    pub env: bool,
}

impl InitArgs {
    /// How the values are printed.
    pub fn format(&self) -> InitFormat {
        match (self.json, self.env) {
            (true, _) => InitFormat::Json,
            (false, true) => InitFormat::Env,
            (false, false) => InitFormat::Text,
        }
    }
}

/// How `init` prints the values it made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitFormat {
    /// Sentences for people.
    Text,
    /// One JSON object (`--json`).
    Json,
    /// Dotenv lines (`--env`).
    Env,
}

/// How a client command prints the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// Tables and sentences for people.
    Table,
    /// The API's JSON, pretty-printed (`--json`).
    Json,
}

/// `serve` options (each also `TETHER_<NAME>` or a key of the config file).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Data directory [env TETHER_DATA_DIR; default /var/lib/tether].
    #[arg(long)]
    pub data_dir: Option<String>,
    /// PostgreSQL store, postgres://USER:PASSWORD@HOST:PORT/DB [env TETHER_DATABASE_URL;
    /// default: the SQLite file in the data dir].
    #[arg(long)]
    pub database: Option<String>,
    /// Listen address [env TETHER_LISTEN; default 0.0.0.0:8443].
    #[arg(long)]
    pub listen: Option<String>,
    /// TOML configuration file.
    #[arg(long, env = "TETHER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format: text or json [env TETHER_LOG_FORMAT].
    #[arg(long)]
    pub log_format: Option<String>,
    /// Initialise the data dir at start if it is not initialised, making no token (create the
    /// first admin token with `admin-token create --offline`) [env TETHER_INIT=1]. Without
    /// it, a data dir that is not initialised is refused (exit 64).
    #[arg(long)]
    pub init: bool,
}

/// How the client reaches the manager.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Manager URL.
    #[arg(long, env = "TETHER_MANAGER_URL", default_value = "https://127.0.0.1:8443", global = true)]
    pub manager: String,
    /// Admin token (`tat_…`); redacted in `Debug`.
    #[arg(long, env = "TETHER_ADMIN_TOKEN", hide_env_values = true, global = true)]
    pub admin_token: Option<SecretString>,
    /// CA certificate PEM to trust [default: <data dir>/ca.pem].
    #[arg(long, env = "TETHER_CA_CERT", global = true)]
    pub ca_cert: Option<PathBuf>,
    /// Data dir, for the default CA path.
    #[arg(long, env = "TETHER_DATA_DIR", default_value = DEFAULT_DATA_DIR, global = true)]
    pub data_dir: PathBuf,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    pub json: bool,
}

impl ClientArgs {
    /// How answers are printed.
    pub fn format(&self) -> OutputFormat {
        if self.json {
            OutputFormat::Json
        } else {
            OutputFormat::Table
        }
    }
}

/// `store …`
#[derive(Debug, Subcommand)]
pub enum StoreCmd {
    /// Copy an SQLite installation into an empty PostgreSQL store (accounts, tokens with their
    /// sealed keys, admin tokens, restrictions, finished rotations, the audit log), then read it
    /// back and compare. Refused while a rotation is running or when the target is not empty.
    /// Stop the manager first; keep the data dir (its master key opens the copied tokens).
    Copy {
        /// The SQLite database: the data dir, or its tether.db.
        #[arg(long)]
        from: PathBuf,
        /// The PostgreSQL store, postgres://USER:PASSWORD@HOST:PORT/DB.
        #[arg(long, value_parser = parse_database)]
        to: DatabaseArg,
    },
}

/// `token …`
#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a token (prints its value once).
    Create {
        /// Token name.
        name: String,
        /// Account.
        #[arg(long, default_value = "default")]
        account: String,
        /// Expire after this long: seconds (3600) or a number with a unit: 90s, 15m, 1h, 30d, 2w.
        #[arg(long, value_parser = duration::parse_secs, value_name = "DURATION")]
        expires_in: Option<u64>,
        /// Allowed source CIDR (repeatable).
        #[arg(long = "allow-cidr")]
        allow_cidrs: Vec<String>,
        /// Rotate it automatically this long after creation (and each successor likewise):
        /// seconds or a number with a unit: 12h, 30d, 2w.
        #[arg(long, value_parser = duration::parse_secs, value_name = "DURATION")]
        rotate_every: Option<u64>,
        /// The grace window of those rotations (default: the manager's, at most half of
        /// --rotate-every).
        #[arg(long, requires = "rotate_every", value_parser = duration::parse_secs, value_name = "DURATION")]
        grace: Option<u64>,
    },
    /// Change a token's rotation policy.
    Update {
        /// Token id or name.
        token: String,
        /// Account.
        #[arg(long, default_value = "default")]
        account: String,
        /// Rotate it automatically this long after creation: 12h, 30d, 2w.
        #[arg(long, value_parser = duration::parse_secs, value_name = "DURATION",
              required_unless_present = "no_rotation", conflicts_with = "no_rotation")]
        rotate_every: Option<u64>,
        /// The grace window of those rotations.
        #[arg(long, requires = "rotate_every", value_parser = duration::parse_secs, value_name = "DURATION")]
        grace: Option<u64>,
        /// Remove the rotation policy.
        #[arg(long)]
        no_rotation: bool,
    },
    /// List tokens (no values).
    List {
        /// Account.
        #[arg(long, default_value = "default")]
        account: String,
    },
    /// Show one token.
    Show {
        /// Token id or name.
        token: String,
        /// Account.
        #[arg(long, default_value = "default")]
        account: String,
    },
    /// Revoke a token; live delegates on it are closed.
    Revoke {
        /// Token id or name.
        token: String,
        /// Account.
        #[arg(long, default_value = "default")]
        account: String,
    },
    /// Rotate a token (prints the successor's value once and the rotation id).
    Rotate {
        /// Token id or name.
        token: String,
        /// Account.
        #[arg(long, default_value = "default")]
        account: String,
        /// Grace window: seconds (3600) or a number with a unit: 90s, 15m, 1h, 30d, 2w.
        #[arg(long, visible_alias = "grace", value_parser = duration::parse_secs, value_name = "DURATION")]
        grace_secs: Option<u64>,
        /// The successor's lifetime (default: the old token's lifetime, from now): seconds
        /// (3600) or a number with a unit: 90s, 15m, 1h, 30d, 2w.
        #[arg(long, value_parser = duration::parse_secs, value_name = "DURATION")]
        expires_in: Option<u64>,
    },
    /// Delete a revoked token.
    Delete {
        /// Token id or name.
        token: String,
        /// Account.
        #[arg(long, default_value = "default")]
        account: String,
    },
}

/// `delegate …`
#[derive(Debug, Subcommand)]
pub enum DelegateCmd {
    /// List live delegates.
    List {
        /// Only this account.
        #[arg(long)]
        account: Option<String>,
    },
    /// Disconnect a delegate session (it reconnects).
    Disconnect {
        /// Session id.
        session_id: String,
    },
    /// Ping a delegate and print the round-trip time.
    Ping {
        /// Session id.
        session_id: String,
        /// Echo payload.
        #[arg(long)]
        payload: Option<String>,
    },
}

/// `replica …`
#[derive(Debug, Subcommand)]
pub enum ReplicaCmd {
    /// List the replicas: version, host, last report, live sessions, whether they accept.
    List,
}

/// `account …`
#[derive(Debug, Subcommand)]
pub enum AccountCmd {
    /// List accounts.
    List,
    /// Create an account and its default token (prints the value once).
    Create {
        /// Account id.
        id: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
    },
    /// Show an account.
    Show {
        /// Account id.
        id: String,
    },
}

/// `admin-token …`
#[derive(Debug, Subcommand)]
pub enum AdminTokenCmd {
    /// List admin tokens.
    List,
    /// Create an admin token (prints its value once). With `--offline`, directly in the
    /// database of `--data-dir` instead of through the API: the recovery when no admin token
    /// works any more (see OPERATIONS.md, "Recovering admin access").
    Create {
        /// Name (or `--name`).
        #[arg(required_unless_present = "name_flag", conflicts_with = "name_flag")]
        name: Option<String>,
        /// Name.
        #[arg(long = "name", id = "name_flag", value_name = "NAME")]
        name_flag: Option<String>,
        /// Scope (repeatable): tokens:read, tokens:write, delegates:read, delegates:write, admin
        /// [with --offline, default: admin].
        #[arg(
            long = "scope",
            visible_alias = "scopes",
            value_delimiter = ',',
            required_unless_present = "offline"
        )]
        scopes: Vec<String>,
        /// Write the token into the database of --data-dir (needs write access to it, not the
        /// API; works whether the manager runs or not); audited as `local`. Bound to no
        /// account, no restriction.
        #[arg(long, conflicts_with_all = ["account", "restriction"])]
        offline: bool,
        /// With --offline: the PostgreSQL store to write into instead of the SQLite file of
        /// --data-dir.
        #[arg(long, requires = "offline", env = "TETHER_DATABASE_URL", hide_env_values = true, value_parser = parse_database)]
        database: Option<DatabaseArg>,
        /// Expire after this long: seconds (3600) or a number with a unit: 90s, 15m, 1h, 30d, 2w.
        #[arg(long, value_parser = duration::parse_secs, value_name = "DURATION")]
        expires_in: Option<u64>,
        /// Allowed source CIDR (repeatable).
        #[arg(long = "allow-cidr")]
        allow_cidrs: Vec<String>,
        /// Bind it to this account (it may then act on this account only).
        #[arg(long)]
        account: Option<String>,
        /// Limit it to what this endpoint restriction (name or id) allows.
        #[arg(long)]
        restriction: Option<String>,
    },
    /// Revoke an admin token.
    Revoke {
        /// Id or name.
        id: String,
    },
}

/// `restriction …`
#[derive(Debug, Subcommand)]
pub enum RestrictionCmd {
    /// List endpoint restrictions.
    List,
    /// Create an endpoint restriction.
    Create {
        /// Name.
        name: String,
        /// An allowed request, `METHOD /api/v1/path` (repeatable); `*` or `{name}` matches
        /// any one path segment, e.g. `GET /api/v1/accounts/*/tokens`.
        #[arg(long = "allow", required = true)]
        allow: Vec<String>,
    },
    /// Delete an endpoint restriction no admin token uses any more.
    Delete {
        /// Name or id.
        name: String,
    },
}

/// `rotation …`
#[derive(Debug, Subcommand)]
pub enum RotationCmd {
    /// Recent rotations.
    List,
    /// One rotation with per-delegate progress.
    Show {
        /// Rotation id.
        id: String,
    },
}

/// The exit of a command line clap refused: help and version print and exit 0; anything else
/// is a usage error (64), printed as one JSON object on stderr when the line has `--json`.
pub fn parse_failed(e: clap::Error, json: bool) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        _ if json => commands::fail(true, "usage", e.render().to_string().trim_end(), None, EXIT_USAGE),
        _ => {
            let _ = e.print();
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Init(args) => commands::init(args),
        Command::Serve(args) => serve::serve(args),
        Command::Tls { cmd } => tls_show::run(cmd),
        Command::Migrate { data_dir, database, json } => store_cmd::migrate(data_dir, database, json),
        Command::Store { cmd, json } => store_cmd::run(cmd, json),
        Command::Completions { shell } => generated::completions(shell),
        Command::Man => generated::man(),
        other => commands::client_command(other),
    }
}

/// A `--database` value as given, checked by the command that uses it ([`DatabaseArg::check`]):
/// clap's own refusal of a bad value would quote it, password and all. `Debug` is redacted.
#[derive(Clone)]
pub struct DatabaseArg(String);

impl DatabaseArg {
    /// The URL, or why it cannot be one (never quoting it).
    pub fn check(&self) -> Result<DatabaseUrl, String> {
        DatabaseUrl::parse(&self.0)
            .map_err(|reason| format!("invalid --database (TETHER_DATABASE_URL): {reason}"))
    }

    /// [`DatabaseArg::check`] of an optional one.
    pub fn check_opt(arg: Option<&Self>) -> Result<Option<DatabaseUrl>, String> {
        arg.map(Self::check).transpose()
    }
}

impl std::fmt::Debug for DatabaseArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabaseArg(<redacted>)")
    }
}

/// Takes `--database` as given; [`DatabaseArg::check`] validates it.
fn parse_database(v: &str) -> Result<DatabaseArg, String> {
    Ok(DatabaseArg(v.to_owned()))
}
