//! Command-line flags. Every setting is also an environment variable (Harness's names for the
//! core ones); secret values are never shown in `--help`. Flags only collect raw strings:
//! validation happens in [`crate::config`]. Token values are held as [`SecretString`], so the
//! derived `Debug` of these structs never shows them.
use clap::{Args, Parser, Subcommand, ValueEnum};
use tether_protocol::SecretString;

/// Tether delegate: keeps an authenticated session to the manager and applies token rotations.
#[derive(Debug, Parser)]
#[command(name = "tether-delegate", version, about)]
pub struct Cli {
    /// Log output format.
    #[arg(long, global = true, env = "TETHER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Settings of `run` (also accepted without the subcommand).
    #[command(flatten)]
    pub run: RunFlags,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Connect to the manager and stay connected (the default).
    Run(Box<RunFlags>),
    /// Exit 0 only while the local delegate holds an authenticated session (for HEALTHCHECK).
    Health(HealthFlags),
}

/// Log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Raw settings of `run`; each is a flag and an environment variable.
#[derive(Debug, Clone, Default, Args)]
pub struct RunFlags {
    /// Account the token belongs to.
    #[arg(long, env = "ACCOUNT_ID")]
    pub account_id: Option<String>,
    /// Delegate token (`tdt_…`).
    #[arg(long, env = "ACCOUNT_SECRET", hide_env_values = true)]
    pub account_secret: Option<SecretString>,
    /// Alias of ACCOUNT_SECRET.
    #[arg(long, env = "DELEGATE_TOKEN", hide_env_values = true)]
    pub delegate_token: Option<SecretString>,
    /// File holding the token; kept current across rotations.
    #[arg(long, env = "ACCOUNT_SECRET_FILE")]
    pub account_secret_file: Option<String>,
    /// Manager address: `host:port`, `https://host:port` or `wss://host:port`.
    #[arg(long, env = "MANAGER_HOST_AND_PORT")]
    pub manager_host_and_port: Option<String>,
    /// Name shown in the manager's delegate list (default: the host name).
    #[arg(long, env = "DELEGATE_NAME")]
    pub delegate_name: Option<String>,
    /// PEM file of the private CA that signed the manager's certificate (default: public roots).
    #[arg(long, env = "MANAGER_CA_CERT")]
    pub manager_ca_cert: Option<String>,
    /// Directory for the health and fatal-exit state files (default: the directory of
    /// ACCOUNT_SECRET_FILE, else /run/tether).
    #[arg(long, env = "TETHER_STATE_DIR")]
    pub state_dir: Option<String>,
    /// How to apply a rotated token: auto, kubernetes, docker, file or manual.
    #[arg(long, env = "TETHER_APPLY_MODE")]
    pub apply_mode: Option<String>,
    /// Docker engine socket used in docker mode.
    #[arg(long, env = "TETHER_DOCKER_SOCKET")]
    pub docker_socket: Option<String>,
    /// This container's id, when it cannot be discovered from /proc.
    #[arg(long, env = "TETHER_CONTAINER_ID")]
    pub container_id: Option<String>,
    /// Kubernetes mode: the Secret holding DELEGATE_TOKEN (default tether-delegate-account-token).
    #[arg(long, env = "TETHER_K8S_SECRET")]
    pub k8s_secret: Option<String>,
    /// Kubernetes mode: the service-account directory (token, namespace, ca.crt).
    #[arg(long, env = "TETHER_K8S_SERVICEACCOUNT_DIR")]
    pub k8s_serviceaccount_dir: Option<String>,
    /// Kubernetes mode: this pod's name (default: the host name, which is the pod name).
    #[arg(long, env = "TETHER_K8S_POD_NAME")]
    pub k8s_pod_name: Option<String>,
    /// Seconds the successor container has to authenticate before it is rolled back.
    #[arg(long, env = "TETHER_REPLACE_TIMEOUT_SECS")]
    pub replace_timeout_secs: Option<String>,
    /// Seconds to wait before the first handshake after a recent fatal exit (revoked/expired).
    #[arg(long, env = "TETHER_FATAL_BACKOFF_SECS")]
    pub fatal_backoff_secs: Option<String>,
}

/// Settings of `health`.
#[derive(Debug, Clone, Default, Args)]
pub struct HealthFlags {
    /// Directory of the running delegate's state files.
    #[arg(long, env = "TETHER_STATE_DIR")]
    pub state_dir: Option<String>,
    /// The running delegate's token file (its directory is the default state directory).
    #[arg(long, env = "ACCOUNT_SECRET_FILE")]
    pub account_secret_file: Option<String>,
}
