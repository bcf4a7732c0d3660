//! The `serve` configuration: a TOML file, `TETHER_*` environment variables and flags, read
//! once into a validated [`ServeConfig`]. Precedence: flag, then environment, then file, then
//! default. A bad value is a [`ConfigError`] that names the setting and where it came from.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/tether";
/// Default listen address.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8443";

/// Every setting the file and the environment may carry (env name: `TETHER_` + upper case).
pub const SETTINGS: &[&str] = &[
    "data_dir",
    "database",
    "listen",
    "log_format",
    "heartbeat_secs",
    "hello_timeout_secs",
    "max_frame",
    "handshake_fail_limit",
    "handshake_fail_window_secs",
    "tls_handshake_timeout_secs",
    "http_header_timeout_secs",
    "http_idle_timeout_secs",
    "max_unauthenticated_connections",
    "max_unauthenticated_per_address",
    "max_unauthenticated_age_secs",
    "max_sessions_per_token",
    "max_sessions_per_account",
    "max_sessions",
    "session_write_timeout_secs",
    "rotation_grace_secs",
    "max_rotation_grace_secs",
    "min_rotate_every_secs",
    "rotation_policy_check_secs",
    "fail_closed_secs",
    "drain_secs",
    "tls_cert",
    "tls_key",
    "admin_auth_fail_limit",
    "admin_auth_fail_window_secs",
    "admin_auth_lockout_secs",
    "init",
];

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The validated configuration of `serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Database, master key and generated certificates live here.
    pub data_dir: PathBuf,
    /// The PostgreSQL store (`postgres://…`), or `None` for the SQLite file in the data dir.
    /// Its environment variable is `TETHER_DATABASE_URL`; it holds a password, so `Debug`
    /// shows only whether it is set.
    pub database: Option<DatabaseUrl>,
    /// Address of the one TLS port.
    pub listen: SocketAddr,
    /// Log format.
    pub log_format: LogFormat,
    /// Heartbeat interval announced in the welcome; 3 missed intervals close the session.
    pub heartbeat_secs: u64,
    /// Deadline for the hello after the challenge (at most the protocol's 10 s).
    pub hello_timeout_secs: u64,
    /// Largest frame, announced in the challenge.
    pub max_frame: usize,
    /// Failed handshakes one source IP may make per window before `rate_limited`.
    pub handshake_fail_limit: u32,
    /// The window of that limit.
    pub handshake_fail_window_secs: u64,
    /// Deadline for the TLS handshake of a new connection.
    pub tls_handshake_timeout_secs: u64,
    /// Deadline for a complete HTTP request head, counted from when the connection is ready
    /// for one (accepted, or the previous response sent).
    pub http_header_timeout_secs: u64,
    /// A connection that is not an authenticated delegate session is closed after this long
    /// without a byte read or written.
    pub http_idle_timeout_secs: u64,
    /// Most connections that have not authenticated (HTTP, or a WebSocket before its
    /// delegate handshake succeeded), over all source addresses.
    pub max_unauthenticated_connections: usize,
    /// Most such connections from one source address (IPv6: one /64).
    pub max_unauthenticated_per_address: usize,
    /// A connection that has not authenticated as a delegate session is closed this long
    /// after it was accepted, however busy (an HTTP client reconnects).
    pub max_unauthenticated_age_secs: u64,
    /// Most live delegate sessions on one token.
    pub max_sessions_per_token: usize,
    /// Most live delegate sessions in one account.
    pub max_sessions_per_account: usize,
    /// Most live delegate sessions in all; `None`: as many as the open-file limit leaves
    /// after the unauthenticated connections and a headroom (always at most that).
    pub max_sessions: Option<usize>,
    /// Bound on every write to an authenticated session; a session that cannot be written
    /// within it is dropped.
    pub session_write_timeout_secs: u64,
    /// Grace window of a rotation when the request names none.
    pub rotation_grace_secs: u64,
    /// Longest grace window a request may ask for.
    pub max_rotation_grace_secs: u64,
    /// Shortest `rotate_every` a token's rotation policy may have (default one hour; tests
    /// lower it to seconds).
    pub min_rotate_every_secs: u64,
    /// How often the manager looks for tokens whose rotation policy makes them due.
    pub rotation_policy_check_secs: u64,
    /// With the PostgreSQL store: how long a replica may go without reaching the database
    /// (and so without learning of revocations) before it says `goodbye` to its sessions,
    /// refuses handshakes and fails `/readyz`.
    pub fail_closed_secs: u64,
    /// Bound on the graceful shutdown drain.
    pub drain_secs: u64,
    /// Certificate chain PEM; with none, a generated one in the data dir is used.
    pub tls_cert: Option<PathBuf>,
    /// Private key PEM, with `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Failed admin authentications one source address may make per window before it is locked out.
    pub admin_auth_fail_limit: u32,
    /// The window of that limit.
    pub admin_auth_fail_window_secs: u64,
    /// How long a locked-out address is answered 429.
    pub admin_auth_lockout_secs: u64,
    /// Initialise `data_dir` at start when it is not initialised (`--init`, `TETHER_INIT=1`;
    /// see [`crate::init::init_bare`]); otherwise such a data dir is refused.
    pub init: bool,
}

impl ServeConfig {
    /// Defaults for `data_dir`, as tests use them.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        let mut cfg = Self::from_sources(&Sources::default()).expect("defaults are valid");
        cfg.data_dir = data_dir.into();
        cfg
    }

    /// Reads and validates every setting from `sources`.
    pub fn from_sources(src: &Sources) -> Result<Self, ConfigError> {
        let log_format = match src.get("log_format") {
            None => LogFormat::Text,
            Some((v, origin)) => match v.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => return Err(ConfigError::invalid("log_format", origin, "must be `text` or `json`")),
            },
        };
        let listen = match src.get("listen") {
            None => DEFAULT_LISTEN.parse().expect("default listen parses"),
            Some((v, origin)) => v.parse().map_err(|_| {
                ConfigError::invalid("listen", origin, "must be ADDR:PORT, e.g. 0.0.0.0:8443")
            })?,
        };
        let data_dir = match src.get("data_dir") {
            None => PathBuf::from(DEFAULT_DATA_DIR),
            Some((v, origin)) if v.is_empty() => {
                return Err(ConfigError::invalid("data_dir", origin, "must not be empty"))
            }
            Some((v, _)) => PathBuf::from(v),
        };
        let database = match src.get("database") {
            None => None,
            Some((v, origin)) => Some(
                DatabaseUrl::parse(&v).map_err(|reason| ConfigError::invalid("database", origin, reason))?,
            ),
        };
        let tls_cert = src.get("tls_cert").map(|(v, _)| PathBuf::from(v));
        let tls_key = src.get("tls_key").map(|(v, _)| PathBuf::from(v));
        if tls_cert.is_some() != tls_key.is_some() {
            let missing = if tls_cert.is_some() { "tls_key" } else { "tls_cert" };
            return Err(ConfigError::invalid(missing, Origin::Default, "tls_cert and tls_key go together"));
        }
        let max_rotation_grace_secs = src.u64("max_rotation_grace_secs", 30 * 86_400, 1, 365 * 86_400)?;
        let max_unauthenticated_connections =
            src.u64("max_unauthenticated_connections", 4_096, 1, 1_000_000)? as usize;
        let max_unauthenticated_per_address = src.u64(
            "max_unauthenticated_per_address",
            128.min(max_unauthenticated_connections as u64),
            1,
            max_unauthenticated_connections as u64,
        )? as usize;
        let init = match src.get("init") {
            None => false,
            Some((v, origin)) => match v.trim() {
                "1" | "true" | "yes" => true,
                "0" | "false" | "no" | "" => false,
                _ => return Err(ConfigError::invalid("init", origin, "must be 1/true/yes or 0/false/no")),
            },
        };
        let cfg = Self {
            init,
            data_dir,
            database,
            listen,
            log_format,
            heartbeat_secs: src.u64("heartbeat_secs", 30, 1, 3_600)?,
            hello_timeout_secs: src.u64(
                "hello_timeout_secs",
                tether_protocol::handshake::HELLO_TIMEOUT_SECS,
                1,
                tether_protocol::handshake::HELLO_TIMEOUT_SECS,
            )?,
            max_frame: src.u64(
                "max_frame",
                tether_protocol::frame::DEFAULT_MAX_FRAME as u64,
                tether_protocol::frame::MIN_MAX_FRAME as u64,
                tether_protocol::frame::MAX_MAX_FRAME as u64,
            )? as usize,
            handshake_fail_limit: src.u64("handshake_fail_limit", 20, 1, 1_000_000)? as u32,
            handshake_fail_window_secs: src.u64("handshake_fail_window_secs", 60, 1, 86_400)?,
            tls_handshake_timeout_secs: src.u64("tls_handshake_timeout_secs", 10, 1, 300)?,
            http_header_timeout_secs: src.u64("http_header_timeout_secs", 10, 1, 300)?,
            http_idle_timeout_secs: src.u64("http_idle_timeout_secs", 30, 1, 3_600)?,
            max_unauthenticated_connections,
            max_unauthenticated_per_address,
            max_unauthenticated_age_secs: src.u64("max_unauthenticated_age_secs", 300, 1, 86_400)?,
            max_sessions_per_token: src.u64("max_sessions_per_token", 10_000, 1, 10_000_000)? as usize,
            max_sessions_per_account: src.u64("max_sessions_per_account", 10_000, 1, 10_000_000)? as usize,
            max_sessions: match src.get("max_sessions") {
                None => None,
                Some(_) => Some(src.u64("max_sessions", 1, 1, 10_000_000)? as usize),
            },
            session_write_timeout_secs: src.u64("session_write_timeout_secs", 10, 1, 300)?,
            rotation_grace_secs: src.u64("rotation_grace_secs", 3_600, 1, max_rotation_grace_secs)?,
            max_rotation_grace_secs,
            min_rotate_every_secs: src.u64("min_rotate_every_secs", 3_600, 1, 365 * 86_400)?,
            rotation_policy_check_secs: src.u64("rotation_policy_check_secs", 30, 1, 3_600)?,
            fail_closed_secs: src.u64("fail_closed_secs", 10, 2, 300)?,
            drain_secs: src.u64("drain_secs", 10, 1, 600)?,
            tls_cert,
            tls_key,
            admin_auth_fail_limit: src.u64("admin_auth_fail_limit", 5, 1, 1_000_000)? as u32,
            admin_auth_fail_window_secs: src.u64("admin_auth_fail_window_secs", 900, 1, 86_400)?,
            admin_auth_lockout_secs: src.u64("admin_auth_lockout_secs", 900, 1, 86_400)?,
        };
        Ok(cfg)
    }
}

/// A PostgreSQL URL (`postgres://` or `postgresql://`), checked for its scheme here and parsed
/// in full when the manager connects. It holds the password: `Debug` and `Display` never show
/// it.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Checks the scheme; the reason of a refusal never quotes the value.
    pub fn parse(value: &str) -> Result<Self, String> {
        let v = value.trim();
        let lower: String = v.chars().take(13).collect::<String>().to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            Ok(Self(v.to_owned()))
        } else {
            Err("must be a PostgreSQL URL, postgres://USER:PASSWORD@HOST:PORT/DATABASE (leave it unset for the SQLite file in the data dir)".into())
        }
    }

    /// The URL itself, to connect with. Never log it.
    pub fn connect_string(&self) -> &str {
        &self.0
    }

    /// The store location it names.
    pub fn location(&self) -> crate::store::Location {
        crate::store::Location::Postgres(self.0.clone())
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabaseUrl(<redacted>)")
    }
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag.
    Flag,
    /// An environment variable.
    Env(String),
    /// The TOML file.
    File(PathBuf),
    /// Not set (a default or a derived check).
    Default,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Flag => f.write_str("command line"),
            Self::Env(name) => write!(f, "environment variable {name}"),
            Self::File(path) => write!(f, "config file {}", path.display()),
            Self::Default => f.write_str("configuration"),
        }
    }
}

/// A configuration problem; `main` exits 64 with its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A setting has a bad value.
    #[error("invalid setting `{setting}` (from {origin}): {reason}")]
    Invalid {
        /// The setting's name.
        setting: String,
        /// Where it came from.
        origin: Origin,
        /// What is wrong (never the value of a secret).
        reason: String,
    },
    /// The TOML file names a setting that does not exist.
    #[error("unknown setting `{setting}` in config file {}", path.display())]
    Unknown {
        /// The unknown key.
        setting: String,
        /// The file.
        path: PathBuf,
    },
    /// The TOML file cannot be read or parsed.
    #[error("cannot read config file {}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl ConfigError {
    fn invalid(setting: &str, origin: Origin, reason: impl Into<String>) -> Self {
        Self::Invalid { setting: setting.to_owned(), origin, reason: reason.into() }
    }
}

/// The raw strings of every source, before validation.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    flags: BTreeMap<String, String>,
    env: BTreeMap<String, String>,
    file: BTreeMap<String, String>,
    file_path: Option<PathBuf>,
}

impl Sources {
    /// Collects the sources: `flags` (setting → value), the `TETHER_*` entries of `env`
    /// (pass `std::env::vars()` in the binary, a fixed list in tests) and the TOML `file`.
    pub fn collect(
        flags: impl IntoIterator<Item = (&'static str, String)>,
        env: impl IntoIterator<Item = (String, String)>,
        file: Option<&Path>,
    ) -> Result<Self, ConfigError> {
        let mut src = Self::default();
        for (k, v) in flags {
            src.flags.insert(k.to_owned(), v);
        }
        for (k, v) in env {
            if let Some(setting) = k.strip_prefix("TETHER_") {
                // The database URL's variable is named as libraries and platforms name it.
                let setting = match setting {
                    "DATABASE_URL" => "database".to_owned(),
                    "DATABASE" => continue,
                    other => other.to_ascii_lowercase(),
                };
                if SETTINGS.contains(&setting.as_str()) {
                    src.env.insert(setting, v);
                }
            }
        }
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::File { path: path.to_owned(), reason: e.to_string() })?;
            src.file = parse_toml(&text, path)?;
            src.file_path = Some(path.to_owned());
        }
        Ok(src)
    }

    fn get(&self, key: &str) -> Option<(String, Origin)> {
        if let Some(v) = self.flags.get(key) {
            return Some((v.clone(), Origin::Flag));
        }
        if let Some(v) = self.env.get(key) {
            return Some((v.clone(), Origin::Env(format!("TETHER_{}", key.to_ascii_uppercase()))));
        }
        self.file.get(key).map(|v| (v.clone(), Origin::File(self.file_path.clone().unwrap_or_default())))
    }

    fn u64(&self, key: &str, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
        let Some((v, origin)) = self.get(key) else { return Ok(default) };
        let n: u64 = v
            .trim()
            .parse()
            .map_err(|_| ConfigError::invalid(key, origin.clone(), "must be a whole number"))?;
        if n < min || n > max {
            return Err(ConfigError::invalid(key, origin, format!("must be between {min} and {max}")));
        }
        Ok(n)
    }
}

fn parse_toml(text: &str, path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    // The parser's own message quotes the offending line, which may hold the database
    // password: say what and where only.
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let line = e.span().map(|s| text.bytes().take(s.start).filter(|b| *b == b'\n').count() + 1);
        let reason = match line {
            Some(line) => format!("{} (line {line})", e.message()),
            None => e.message().to_owned(),
        };
        ConfigError::File { path: path.to_owned(), reason }
    })?;
    let mut out = BTreeMap::new();
    for (k, v) in table {
        if !SETTINGS.contains(&k.as_str()) {
            return Err(ConfigError::Unknown { setting: k, path: path.to_owned() });
        }
        let s = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => {
                return Err(ConfigError::invalid(
                    &k,
                    Origin::File(path.to_owned()),
                    "must be a string or a number",
                ))
            }
        };
        out.insert(k, s);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults() {
        let cfg = ServeConfig::from_sources(&Sources::default()).unwrap();
        assert_eq!(cfg.heartbeat_secs, 30);
        assert_eq!(cfg.listen.to_string(), "0.0.0.0:8443");
        assert_eq!(cfg.data_dir, PathBuf::from("/var/lib/tether"));
        assert_eq!(cfg.max_frame, 65_536);
    }

    #[test]
    fn precedence_flag_env_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.toml");
        std::fs::write(&file, "heartbeat_secs = 5\ndrain_secs = 7\nlisten = \"127.0.0.1:1\"\n").unwrap();
        let src = Sources::collect(
            [("listen", "127.0.0.1:3".to_string())],
            env(&[("TETHER_HEARTBEAT_SECS", "6"), ("OTHER", "x")]),
            Some(&file),
        )
        .unwrap();
        let cfg = ServeConfig::from_sources(&src).unwrap();
        assert_eq!(cfg.heartbeat_secs, 6);
        assert_eq!(cfg.drain_secs, 7);
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:3");
    }

    #[test]
    fn bad_values_name_the_setting() {
        let src = Sources::collect([], env(&[("TETHER_HEARTBEAT_SECS", "0")]), None).unwrap();
        let err = ServeConfig::from_sources(&src).unwrap_err().to_string();
        assert!(err.contains("heartbeat_secs") && err.contains("TETHER_HEARTBEAT_SECS"), "{err}");
        let src = Sources::collect([("listen", "nope".into())], [], None).unwrap();
        assert!(ServeConfig::from_sources(&src).unwrap_err().to_string().contains("`listen`"));
        let src = Sources::collect([], env(&[("TETHER_TLS_CERT", "/x")]), None).unwrap();
        assert!(ServeConfig::from_sources(&src).unwrap_err().to_string().contains("tls_key"));
    }

    #[test]
    fn unknown_file_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.toml");
        std::fs::write(&file, "heartbeat = 5\n").unwrap();
        let err = Sources::collect([], [], Some(&file)).unwrap_err().to_string();
        assert!(err.contains("heartbeat"), "{err}");
    }

    #[test]
    fn connection_limits_and_timeouts() {
        let cfg = ServeConfig::from_sources(&Sources::default()).unwrap();
        assert_eq!(
            (cfg.tls_handshake_timeout_secs, cfg.http_header_timeout_secs, cfg.http_idle_timeout_secs),
            (10, 10, 30)
        );
        assert_eq!((cfg.max_unauthenticated_connections, cfg.max_unauthenticated_per_address), (4_096, 128));
        assert_eq!(cfg.session_write_timeout_secs, 10);
        assert_eq!(cfg.max_unauthenticated_age_secs, 300);
        assert_eq!(
            (cfg.max_sessions_per_token, cfg.max_sessions_per_account, cfg.max_sessions),
            (10_000, 10_000, None)
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.toml");
        std::fs::write(&file, "max_unauthenticated_connections = 50\nsession_write_timeout_secs = 2\n")
            .unwrap();
        let src = Sources::collect([], env(&[("TETHER_HTTP_IDLE_TIMEOUT_SECS", "5")]), Some(&file)).unwrap();
        let cfg = ServeConfig::from_sources(&src).unwrap();
        assert_eq!(cfg.http_idle_timeout_secs, 5);
        assert_eq!(cfg.max_sessions, None);
        assert_eq!(cfg.session_write_timeout_secs, 2);
        // The per-address default never exceeds the global cap.
        assert_eq!((cfg.max_unauthenticated_connections, cfg.max_unauthenticated_per_address), (50, 50));
        let src = Sources::collect(
            [],
            env(&[
                ("TETHER_MAX_UNAUTHENTICATED_CONNECTIONS", "10"),
                ("TETHER_MAX_UNAUTHENTICATED_PER_ADDRESS", "11"),
            ]),
            None,
        )
        .unwrap();
        let err = ServeConfig::from_sources(&src).unwrap_err().to_string();
        assert!(err.contains("max_unauthenticated_per_address") && err.contains("between 1 and 10"), "{err}");
        let src = Sources::collect(
            [],
            env(&[
                ("TETHER_MAX_SESSIONS_PER_TOKEN", "3"),
                ("TETHER_MAX_SESSIONS_PER_ACCOUNT", "4"),
                ("TETHER_MAX_SESSIONS", "5"),
                ("TETHER_MAX_UNAUTHENTICATED_AGE_SECS", "60"),
            ]),
            None,
        )
        .unwrap();
        let cfg = ServeConfig::from_sources(&src).unwrap();
        assert_eq!(
            (cfg.max_sessions_per_token, cfg.max_sessions_per_account, cfg.max_sessions),
            (3, 4, Some(5))
        );
        assert_eq!(cfg.max_unauthenticated_age_secs, 60);
        for (name, value) in [
            ("TETHER_MAX_SESSIONS", "0"),
            ("TETHER_MAX_SESSIONS_PER_TOKEN", "0"),
            ("TETHER_MAX_UNAUTHENTICATED_AGE_SECS", "0"),
            ("TETHER_TLS_HANDSHAKE_TIMEOUT_SECS", "0"),
            ("TETHER_HTTP_HEADER_TIMEOUT_SECS", "301"),
            ("TETHER_SESSION_WRITE_TIMEOUT_SECS", "x"),
        ] {
            let src = Sources::collect([], env(&[(name, value)]), None).unwrap();
            let err = ServeConfig::from_sources(&src).unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
    }
}
