//! Validated configuration of `run`: raw flags and environment in, a [`Config`] out, or a
//! [`ConfigError`] that names the variable and says why, never its value.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tether_protocol::{SecretString, Token};

use crate::cli::RunFlags;
use crate::strings::Strings;

/// Default directory for the state files when no token file is configured.
pub const DEFAULT_STATE_DIR: &str = "/run/tether";
/// Default Docker engine socket.
pub const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// Default Secret of kubernetes mode (the name in `kubernetes/`).
pub const DEFAULT_K8S_SECRET: &str = "tether-delegate-account-token";
/// Default service-account directory of a pod.
pub const DEFAULT_K8S_SERVICEACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const DEFAULT_REPLACE_TIMEOUT_SECS: u64 = 60;
const DEFAULT_FATAL_BACKOFF_SECS: u64 = 60;

/// Bad configuration: which variable, and why. Never carries the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {reason}")]
pub struct ConfigError {
    /// The environment variable (or its flag) at fault.
    pub var: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    fn new(var: &'static str, reason: impl Into<String>) -> Self {
        Self { var, reason: reason.into() }
    }
}

/// Where a candidate token came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// The token file (`ACCOUNT_SECRET_FILE`).
    File,
    /// An environment variable or its flag.
    Env(&'static str),
}

impl std::fmt::Display for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File => f.write_str("ACCOUNT_SECRET_FILE"),
            Self::Env(var) => f.write_str(var),
        }
    }
}

/// A token to try at start, with its origin.
#[derive(Debug)]
pub struct Candidate {
    /// Where it came from.
    pub source: TokenSource,
    /// The token.
    pub token: Token,
}

/// The manager's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Endpoint {
    /// `wss://host:port/api/v1/delegates/connect`.
    pub fn url(&self) -> String {
        if self.host.contains(':') {
            format!("wss://[{}]:{}/api/v1/delegates/connect", self.host, self.port)
        } else {
            format!("wss://{}:{}/api/v1/delegates/connect", self.host, self.port)
        }
    }
}

/// How a rotated token is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyModeSetting {
    /// Kubernetes in a pod, else Docker if possible, then file, then manual.
    Auto,
    /// Only kubernetes (fails the rotation if the in-cluster API is unavailable).
    Kubernetes,
    /// Only docker (fails the rotation if Docker is unavailable).
    Docker,
    /// Only the token file.
    File,
    /// Never apply; warn.
    Manual,
}

/// Validated settings of `run`.
#[derive(Debug)]
pub struct Config {
    /// Account id.
    pub account_id: String,
    /// Tokens to try at start, in order: the file's first, then the environment's.
    pub candidates: Vec<Candidate>,
    /// The token file, if configured.
    pub secret_file: Option<PathBuf>,
    /// The manager's addresses (one, or a replica set's), tried in turn.
    pub endpoints: Vec<Endpoint>,
    /// Delegate name.
    pub delegate_name: String,
    /// Host name announced in the hello.
    pub host: String,
    /// TLS client configuration: the pinned CA of `MANAGER_CA_CERT`, else the public roots.
    pub tls: Arc<ClientConfig>,
    /// Directory of the health and fatal-exit state files.
    pub state_dir: PathBuf,
    /// How rotations are applied.
    pub apply_mode: ApplyModeSetting,
    /// Docker engine socket.
    pub docker_socket: PathBuf,
    /// Explicit container id override.
    pub container_id: Option<String>,
    /// Kubernetes mode's settings.
    pub kubernetes: KubeSettings,
    /// How long a successor container has to authenticate.
    pub replace_timeout: Duration,
    /// Quiet period after a fatal exit.
    pub fatal_backoff: Duration,
}

/// Settings of kubernetes mode (whether it applies is decided at start, see
/// [`KubeSettings::in_pod`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeSettings {
    /// `KUBERNETES_SERVICE_HOST`, set by the kubelet in every pod.
    pub service_host: Option<String>,
    /// `KUBERNETES_SERVICE_PORT` (default 443).
    pub service_port: u16,
    /// `TETHER_K8S_SERVICEACCOUNT_DIR`: `token`, `namespace` and `ca.crt`.
    pub serviceaccount_dir: PathBuf,
    /// `TETHER_K8S_SECRET`: the Secret holding `DELEGATE_TOKEN`.
    pub secret: String,
    /// `TETHER_K8S_POD_NAME`, else the host name.
    pub pod_name: String,
}

impl KubeSettings {
    /// Whether this process runs in a pod: `KUBERNETES_SERVICE_HOST` is set and the
    /// service-account token is mounted.
    pub fn in_pod(&self) -> bool {
        self.service_host.is_some() && self.serviceaccount_dir.join("token").is_file()
    }
}

/// A value from its flag, else from the environment; empty counts as unset.
fn pick(flag: &Option<String>, env: &dyn Strings, var: &str) -> Option<String> {
    flag.clone().or_else(|| env.get(var)).filter(|v| !v.trim().is_empty())
}

/// A secret value from its flag, else from the environment; empty counts as unset.
fn pick_secret(flag: &Option<SecretString>, env: &dyn Strings, var: &str) -> Option<SecretString> {
    flag.clone().or_else(|| env.get(var).map(SecretString::new)).filter(|v| !v.expose().trim().is_empty())
}

/// Parses a token, naming the variable and the reason on failure.
pub fn parse_token(text: &str, var: &'static str) -> Result<Token, ConfigError> {
    Token::parse(text.trim()).map_err(|err| ConfigError::new(var, format!("malformed token: {err}")))
}

fn parse_secs(
    flag: &Option<String>,
    env: &dyn Strings,
    var: &'static str,
    default: u64,
) -> Result<Duration, ConfigError> {
    match pick(flag, env, var) {
        None => Ok(Duration::from_secs(default)),
        Some(text) => text
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|secs| *secs <= 86_400)
            .map(Duration::from_secs)
            .ok_or_else(|| ConfigError::new(var, "expected a whole number of seconds up to 86400")),
    }
}

/// Most addresses `MANAGER_HOST_AND_PORT` may list.
pub const MAX_ENDPOINTS: usize = 32;

/// Parses `MANAGER_HOST_AND_PORT`: one address ([`parse_endpoint`]) or a comma-separated list
/// of them (a replica set), at most [`MAX_ENDPOINTS`].
pub fn parse_endpoints(text: &str) -> Result<Vec<Endpoint>, ConfigError> {
    let parts: Vec<&str> = text.split(',').map(str::trim).filter(|p| !p.is_empty()).collect();
    if parts.len() > MAX_ENDPOINTS {
        return Err(ConfigError::new(
            "MANAGER_HOST_AND_PORT",
            format!("lists more than {MAX_ENDPOINTS} addresses"),
        ));
    }
    if parts.is_empty() && text.contains(',') {
        return Err(ConfigError::new("MANAGER_HOST_AND_PORT", "lists no address"));
    }
    if parts.len() <= 1 && !text.contains(',') {
        return parse_endpoint(text).map(|e| vec![e]);
    }
    parts.into_iter().map(parse_endpoint).collect()
}

/// Parses `host:port`, `https://host:port` or `wss://host:port` (port 443 when omitted).
pub fn parse_endpoint(text: &str) -> Result<Endpoint, ConfigError> {
    const VAR: &str = "MANAGER_HOST_AND_PORT";
    let text = text.trim();
    let rest = if let Some(rest) = text.strip_prefix("https://").or_else(|| text.strip_prefix("wss://")) {
        rest
    } else if text.contains("://") {
        return Err(ConfigError::new(
            VAR,
            "unsupported scheme: use host:port, https://host:port or wss://host:port (TLS only)",
        ));
    } else {
        text
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') || rest.contains('?') || rest.contains('@') {
        return Err(ConfigError::new(VAR, "expected only host and port, without a path, query or user"));
    }
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (host, after) =
            bracketed.split_once(']').ok_or_else(|| ConfigError::new(VAR, "unclosed `[` in IPv6 address"))?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(ConfigError::new(VAR, "expected `:port` after `]`")),
            },
        }
    } else {
        match rest.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err(ConfigError::new(VAR, "write IPv6 addresses in brackets, e.g. [::1]:8443"))
            }
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err(ConfigError::new(VAR, "the host is empty"));
    }
    let port = match port {
        None => 443,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| ConfigError::new(VAR, "the port is not a number in 1..=65535"))?,
    };
    Ok(Endpoint { host: host.to_owned(), port })
}

fn read_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    const VAR: &str = "MANAGER_CA_CERT";
    let pem = std::fs::read(path)
        .map_err(|err| ConfigError::new(VAR, format!("cannot read {}: {err}", path.display())))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|_| ConfigError::new(VAR, format!("{} is not valid PEM", path.display())))?;
    if certs.is_empty() {
        return Err(ConfigError::new(VAR, format!("{} holds no CERTIFICATE block", path.display())));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in &certs {
        roots.add(cert.clone()).map_err(|err| {
            ConfigError::new(VAR, format!("{} holds an unusable certificate: {err}", path.display()))
        })?;
    }
    Ok(certs)
}

/// Reads the token file: `Ok(None)` when it does not exist or is empty (it is seeded later).
pub fn read_token_file(path: &Path) -> Result<Option<Token>, ConfigError> {
    const VAR: &str = "ACCOUNT_SECRET_FILE";
    match crate::token_file::read_text(path) {
        Ok(text) if text.trim().is_empty() => Ok(None),
        Ok(text) => parse_token(&text, VAR).map(Some),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(ConfigError::new(VAR, format!("cannot read {}: {}", path.display(), err.kind()))),
    }
}

impl Config {
    /// Validates the flags, falling back to `env` for each unset flag: one step per setting,
    /// each naming its variable on failure.
    pub fn load(flags: &RunFlags, env: &dyn Strings) -> Result<Self, ConfigError> {
        let account_id = account_id(flags, env)?;
        let env_token = env_token(flags, env)?;
        let secret_file = secret_file(&flags.account_secret_file, env);
        let candidates = candidates(secret_file.as_deref(), env_token)?;
        let endpoints = endpoints(flags, env)?;
        let host = host(env);
        let delegate_name = delegate_name(flags, env, &host)?;
        let tls = manager_tls(flags, env)?;
        let state_dir = state_dir(&flags.state_dir, env, secret_file.as_deref());
        let apply_mode = apply_mode(flags, env, secret_file.is_some())?;
        let docker_socket = docker_socket(flags, env);
        let container_id = container_id(flags, env)?;
        let kubernetes = kubernetes(flags, env, &host)?;
        let replace_timeout = parse_secs(
            &flags.replace_timeout_secs,
            env,
            "TETHER_REPLACE_TIMEOUT_SECS",
            DEFAULT_REPLACE_TIMEOUT_SECS,
        )?;
        let fatal_backoff = parse_secs(
            &flags.fatal_backoff_secs,
            env,
            "TETHER_FATAL_BACKOFF_SECS",
            DEFAULT_FATAL_BACKOFF_SECS,
        )?;
        Ok(Self {
            account_id,
            candidates,
            secret_file,
            endpoints,
            delegate_name,
            host,
            tls,
            state_dir,
            apply_mode,
            docker_socket,
            container_id,
            kubernetes,
            replace_timeout,
            fatal_backoff,
        })
    }
}

/// `ACCOUNT_ID`: required, at most 128 printable characters.
fn account_id(flags: &RunFlags, env: &dyn Strings) -> Result<String, ConfigError> {
    let account_id = pick(&flags.account_id, env, "ACCOUNT_ID")
        .map(|v| v.trim().to_owned())
        .ok_or_else(|| ConfigError::new("ACCOUNT_ID", "is not set"))?;
    if account_id.len() > 128 || account_id.chars().any(char::is_control) {
        return Err(ConfigError::new("ACCOUNT_ID", "must be at most 128 printable characters"));
    }
    Ok(account_id)
}

/// `ACCOUNT_SECRET` or its alias `DELEGATE_TOKEN` (both set: they must agree).
fn env_token(flags: &RunFlags, env: &dyn Strings) -> Result<Option<Candidate>, ConfigError> {
    let secret = pick_secret(&flags.account_secret, env, "ACCOUNT_SECRET")
        .map(|v| parse_token(v.expose(), "ACCOUNT_SECRET"))
        .transpose()?;
    let alias = pick_secret(&flags.delegate_token, env, "DELEGATE_TOKEN")
        .map(|v| parse_token(v.expose(), "DELEGATE_TOKEN"))
        .transpose()?;
    match (secret, alias) {
        (Some(a), Some(b)) if !a.same_as(&b) => Err(ConfigError::new(
            "DELEGATE_TOKEN",
            "holds a different token than ACCOUNT_SECRET; set only one",
        )),
        (Some(a), _) => Ok(Some(Candidate { source: TokenSource::Env("ACCOUNT_SECRET"), token: a })),
        (None, Some(b)) => Ok(Some(Candidate { source: TokenSource::Env("DELEGATE_TOKEN"), token: b })),
        (None, None) => Ok(None),
    }
}

/// `ACCOUNT_SECRET_FILE`, if set (`health` reads it with the same rule).
pub fn secret_file(flag: &Option<String>, env: &dyn Strings) -> Option<PathBuf> {
    pick(flag, env, "ACCOUNT_SECRET_FILE").map(PathBuf::from)
}

/// The tokens to try at start: the file's first, then the environment's unless it is the
/// same; at least one.
fn candidates(
    secret_file: Option<&Path>,
    env_token: Option<Candidate>,
) -> Result<Vec<Candidate>, ConfigError> {
    let file_token = match secret_file {
        Some(path) => read_token_file(path)?,
        None => None,
    };
    let mut candidates = Vec::new();
    if let Some(token) = file_token {
        candidates.push(Candidate { source: TokenSource::File, token });
    }
    if let Some(env_token) = env_token {
        if !candidates.iter().any(|c| c.token.same_as(&env_token.token)) {
            candidates.push(env_token);
        }
    }
    if candidates.is_empty() {
        return Err(match secret_file {
            Some(_) => ConfigError::new(
                "ACCOUNT_SECRET_FILE",
                "the file is missing or empty and neither ACCOUNT_SECRET nor DELEGATE_TOKEN is set",
            ),
            None => {
                ConfigError::new("ACCOUNT_SECRET", "is not set (nor DELEGATE_TOKEN or ACCOUNT_SECRET_FILE)")
            }
        });
    }
    Ok(candidates)
}

/// `MANAGER_HOST_AND_PORT`: required.
fn endpoints(flags: &RunFlags, env: &dyn Strings) -> Result<Vec<Endpoint>, ConfigError> {
    pick(&flags.manager_host_and_port, env, "MANAGER_HOST_AND_PORT")
        .ok_or_else(|| ConfigError::new("MANAGER_HOST_AND_PORT", "is not set"))
        .and_then(|v| parse_endpoints(&v))
}

/// The host name announced in the hello: `HOSTNAME`, else the kernel's, else `unknown`.
fn host(env: &dyn Strings) -> String {
    env.get("HOSTNAME")
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_owned()))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// `DELEGATE_NAME`, else the host name: at most 128 printable characters.
fn delegate_name(flags: &RunFlags, env: &dyn Strings, host: &str) -> Result<String, ConfigError> {
    let delegate_name = pick(&flags.delegate_name, env, "DELEGATE_NAME")
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| host.to_owned());
    if delegate_name.len() > 128 || delegate_name.chars().any(char::is_control) {
        return Err(ConfigError::new("DELEGATE_NAME", "must be at most 128 printable characters"));
    }
    Ok(delegate_name)
}

/// `MANAGER_CA_CERT` (else the public roots), built into the TLS client configuration here,
/// so that a CA rustls cannot use is bad configuration, not a failure at connect time.
fn manager_tls(flags: &RunFlags, env: &dyn Strings) -> Result<Arc<ClientConfig>, ConfigError> {
    let ca_certs = match pick(&flags.manager_ca_cert, env, "MANAGER_CA_CERT") {
        Some(path) => read_ca(Path::new(path.trim()))?,
        None => Vec::new(),
    };
    crate::tls::client_config(&ca_certs).map(Arc::new).map_err(|err| {
        ConfigError::new("MANAGER_CA_CERT", format!("cannot build the TLS configuration: {err}"))
    })
}

/// `TETHER_STATE_DIR`, else the token file's directory, else [`DEFAULT_STATE_DIR`]; `health`
/// uses this same rule.
pub fn state_dir(flag: &Option<String>, env: &dyn Strings, secret_file: Option<&Path>) -> PathBuf {
    match pick(flag, env, "TETHER_STATE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => default_state_dir(secret_file),
    }
}

/// `TETHER_APPLY_MODE`: auto (default), kubernetes, docker, file (needs the token file) or
/// manual.
fn apply_mode(
    flags: &RunFlags,
    env: &dyn Strings,
    has_secret_file: bool,
) -> Result<ApplyModeSetting, ConfigError> {
    const VAR: &str = "TETHER_APPLY_MODE";
    let apply_mode = match pick(&flags.apply_mode, env, VAR).as_deref().map(str::trim) {
        None | Some("auto") => ApplyModeSetting::Auto,
        Some("kubernetes") => ApplyModeSetting::Kubernetes,
        Some("docker") => ApplyModeSetting::Docker,
        Some("file") => ApplyModeSetting::File,
        Some("manual") => ApplyModeSetting::Manual,
        Some(_) => {
            return Err(ConfigError::new(VAR, "expected one of auto, kubernetes, docker, file, manual"))
        }
    };
    if apply_mode == ApplyModeSetting::File && !has_secret_file {
        return Err(ConfigError::new(VAR, "file mode needs ACCOUNT_SECRET_FILE"));
    }
    Ok(apply_mode)
}

/// `TETHER_DOCKER_SOCKET` (a `unix://` prefix is dropped), else [`DEFAULT_DOCKER_SOCKET`].
fn docker_socket(flags: &RunFlags, env: &dyn Strings) -> PathBuf {
    pick(&flags.docker_socket, env, "TETHER_DOCKER_SOCKET")
        .map(|s| PathBuf::from(s.strip_prefix("unix://").unwrap_or(&s)))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DOCKER_SOCKET))
}

/// `TETHER_CONTAINER_ID`, if set: at least 12 hex digits.
fn container_id(flags: &RunFlags, env: &dyn Strings) -> Result<Option<String>, ConfigError> {
    let container_id = pick(&flags.container_id, env, "TETHER_CONTAINER_ID").map(|v| v.trim().to_owned());
    if let Some(id) = &container_id {
        if id.len() < 12 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(ConfigError::new(
                "TETHER_CONTAINER_ID",
                "expected a container id (12 to 64 hex digits)",
            ));
        }
    }
    Ok(container_id)
}

/// Whether `name` is a Kubernetes object name (a DNS subdomain: at most 253 characters of
/// lower-case letters, digits, `-` and `.`, starting and ending alphanumeric).
pub fn is_object_name(name: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    name.len() <= 253
        && edge(name.chars().next())
        && edge(name.chars().last())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

/// Kubernetes mode: `KUBERNETES_SERVICE_HOST`/`_PORT`, `TETHER_K8S_SERVICEACCOUNT_DIR`,
/// `TETHER_K8S_SECRET`, `TETHER_K8S_POD_NAME` (else the host name).
fn kubernetes(flags: &RunFlags, env: &dyn Strings, host: &str) -> Result<KubeSettings, ConfigError> {
    let service_host =
        env.get("KUBERNETES_SERVICE_HOST").map(|h| h.trim().to_owned()).filter(|h| !h.is_empty());
    let service_port =
        match env.get("KUBERNETES_SERVICE_PORT").map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()) {
            None => 443,
            Some(port) => port.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                ConfigError::new("KUBERNETES_SERVICE_PORT", "the port is not a number in 1..=65535")
            })?,
        };
    let serviceaccount_dir = pick(&flags.k8s_serviceaccount_dir, env, "TETHER_K8S_SERVICEACCOUNT_DIR")
        .map(|d| PathBuf::from(d.trim()))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_K8S_SERVICEACCOUNT_DIR));
    let secret = pick(&flags.k8s_secret, env, "TETHER_K8S_SECRET")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| DEFAULT_K8S_SECRET.to_owned());
    if !is_object_name(&secret) {
        return Err(ConfigError::new("TETHER_K8S_SECRET", "expected a Kubernetes object name"));
    }
    let pod_name = match pick(&flags.k8s_pod_name, env, "TETHER_K8S_POD_NAME") {
        Some(name) if is_object_name(name.trim()) => name.trim().to_owned(),
        Some(_) => return Err(ConfigError::new("TETHER_K8S_POD_NAME", "expected a Kubernetes object name")),
        None => host.to_owned(),
    };
    Ok(KubeSettings { service_host, service_port, serviceaccount_dir, secret, pod_name })
}

/// The state directory when none is configured: the token file's directory, else
/// [`DEFAULT_STATE_DIR`].
pub fn default_state_dir(secret_file: Option<&Path>) -> PathBuf {
    secret_file
        .and_then(Path::parent)
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
}

#[cfg(test)]
mod tests;
