//! A real PostgreSQL server for tests, from Debian's `postgresql` package (no mock): started
//! from `/usr/lib/postgresql/<major>/bin` in a temporary directory, as an unprivileged user
//! (`postgres`, else `nobody`, when the tests run as root: `initdb` refuses root), on a free
//! loopback port, with one password-authenticated superuser role (`scram-sha-256` for every
//! connection) and `fsync` on. [`PgServer::start`] gives a server of its own; [`database`]
//! gives each test its own database (`CREATE DATABASE`) on one server shared by the test
//! process, and its URL.
//!
//! Cleanup does not depend on this process ending well: next to the server runs a small
//! supervisor shell, in its own process group, that waits for this process to close its
//! standard input (on drop, or because the process ended, panic or `kill -9` included), then
//! stops the server (`pg_ctl stop -m immediate`) and removes the directory.
//!
//! `initdb` runs once per PostgreSQL version and user: its cluster is kept as a template in the
//! temporary directory and copied for each server.
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::harness::poll;
use crate::harness::process::run_ok;

/// The superuser role the servers are initialised with.
pub const ROLE: &str = "tether";

/// How long starting or stopping a server may take.
const START_LIMIT: Duration = Duration::from_secs(60);

/// The supervisor: waits for EOF on its standard input, then stops the server and removes
/// its directory. Arguments: the `bin` dir, the data dir, the user prefix (or empty), the
/// directory to remove.
const SUPERVISOR: &str = r#"
cat >/dev/null
if [ -n "$3" ]; then
  setpriv --reuid="$3" --regid="$3" --clear-groups "$1/pg_ctl" stop -D "$2" -m immediate -w -t 30 >/dev/null 2>&1
else
  "$1/pg_ctl" stop -D "$2" -m immediate -w -t 30 >/dev/null 2>&1
fi
rm -rf "$4"
"#;

/// What a server of its own is started with beyond the defaults (e.g. TLS).
#[derive(Debug, Clone, Default)]
pub struct Setup {
    /// Lines appended to `postgresql.conf`.
    pub conf: String,
    /// Files written into the data directory (name, content), private to the server's user.
    pub files: Vec<(String, Vec<u8>)>,
    /// The whole `pg_hba.conf`, instead of initdb's (`scram-sha-256` for every connection).
    pub hba: Option<String>,
}

/// A running PostgreSQL server; stopped and its directory removed on drop.
#[derive(Debug)]
pub struct PgServer {
    /// Loopback port it listens on.
    pub port: u16,
    /// The password of [`ROLE`].
    pub password: String,
    /// The server's directory (data dir, log).
    pub dir: PathBuf,
    bin: PathBuf,
    user: Option<String>,
    supervisor: Child,
    stdin: Option<ChildStdin>,
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // Closing the pipe makes the supervisor stop the server and remove the directory.
        drop(self.stdin.take());
        let supervisor = &mut self.supervisor;
        let done =
            poll::until_blocking("the PostgreSQL supervisor to stop", START_LIMIT, poll::INTERVAL, || {
                Ok(supervisor.try_wait()?.map(|_| ()))
            });
        if done.is_err() {
            let _ = supervisor.kill();
            let _ = supervisor.wait();
        }
    }
}

/// The newest `/usr/lib/postgresql/<major>/bin` holding `initdb`, `pg_ctl` and `postgres`.
pub fn bin_dir() -> Result<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            ["initdb", "pg_ctl", "postgres"].iter().all(|b| bin.join(b).is_file()).then_some((major, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).ok_or_else(|| {
        anyhow!(
            "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/{{initdb,pg_ctl,postgres}}): \
             install Debian's `postgresql` package, as `bash tests/run.sh` does"
        )
    })
}

/// The user to run PostgreSQL as: none (this process's own) unless this process is root, then
/// `postgres` if it exists, else `nobody`; with its uid and gid.
fn server_user() -> Result<Option<(String, u32, u32)>> {
    let me = std::fs::metadata("/proc/self").context("reading /proc/self")?.uid();
    if me != 0 {
        return Ok(None);
    }
    for name in ["postgres", "nobody"] {
        let id = |flag: &str| -> Option<u32> {
            let out = Command::new("id").arg(flag).arg(name).stderr(Stdio::null()).output().ok()?;
            out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().parse().ok()).flatten()
        };
        if let (Some(uid), Some(gid)) = (id("-u"), id("-g")) {
            return Ok(Some((name.to_owned(), uid, gid)));
        }
    }
    bail!("running as root and neither the `postgres` nor the `nobody` user exists to run PostgreSQL as")
}

/// `command` (a PostgreSQL binary) as `user`, through `setpriv`.
fn as_user(user: Option<&str>, program: &Path) -> Command {
    match user {
        Some(u) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={u}")).arg(format!("--regid={u}")).arg("--clear-groups").arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Gives `path` (recursively) to `owner`.
fn chown_all(path: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    let Some((uid, gid)) = owner else { return Ok(()) };
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .with_context(|| format!("chown {}", path.display()))?;
    if path.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_all(&entry?.path(), owner)?;
        }
    }
    Ok(())
}

/// The initialised cluster to copy (created once per version and user, atomically: a
/// concurrent creator's copy is discarded) and its superuser's password.
fn template(bin: &Path, user: Option<&(String, u32, u32)>) -> Result<(PathBuf, String)> {
    let major = bin.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str()).unwrap_or("pg");
    let who = user.map_or_else(|| "self".to_owned(), |u| u.0.clone());
    let path = std::env::temp_dir().join(format!("tether-pg-template-{major}-{who}"));
    let read =
        |p: &Path| -> Result<String> { Ok(std::fs::read_to_string(p.join("password"))?.trim().to_owned()) };
    if let Ok(password) = read(&path) {
        if path.join("data").join("PG_VERSION").is_file() {
            return Ok((path, password));
        }
    }
    let scratch = tempfile::Builder::new().prefix("tether-pg-template-").tempdir()?;
    let owner = user.map(|u| (u.1, u.2));
    let password = uuid::Uuid::new_v4().simple().to_string();
    std::fs::write(scratch.path().join("password"), format!("{password}\n"))?;
    chown_all(scratch.path(), owner)?;
    // `-N`: initdb does not fsync the files it writes (a test machine's crash loses the
    // template, not a test's data); the server runs with fsync on.
    run_ok(
        as_user(user.map(|u| u.0.as_str()), &bin.join("initdb"))
            .arg("-D")
            .arg(scratch.path().join("data"))
            .arg(format!("--username={ROLE}"))
            .arg(format!("--pwfile={}", scratch.path().join("password").display()))
            .args([
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "-N",
            ]),
        START_LIMIT,
    )
    .context("initdb")?;
    let scratch = scratch.keep();
    if std::fs::rename(&scratch, &path).is_err() {
        // Another process made it first (or a broken one is in the way: replace it).
        if read(&path).is_err() || !path.join("data").join("PG_VERSION").is_file() {
            let _ = std::fs::remove_dir_all(&path);
            std::fs::rename(&scratch, &path).context("installing the PostgreSQL template")?;
        } else {
            let _ = std::fs::remove_dir_all(&scratch);
        }
    }
    Ok((path.clone(), read(&path)?))
}

/// A port free on 127.0.0.1 at the time of asking.
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl PgServer {
    /// Starts a server of its own (in a new temporary directory, on a free port) and waits
    /// until it accepts connections.
    pub fn start() -> Result<Self> {
        Self::start_with(&Setup::default())
    }

    /// [`PgServer::start`] with `setup` applied to the data directory first.
    pub fn start_with(setup: &Setup) -> Result<Self> {
        let bin = bin_dir()?;
        let user = server_user()?;
        let (template, password) = template(&bin, user.as_ref())?;
        let dir = tempfile::Builder::new().prefix("tether-pg-").tempdir()?.keep();
        let data = dir.join("data");
        let owner = user.as_ref().map(|u| (u.1, u.2));
        // The supervisor first, so that whatever happens next, the directory goes.
        let mut supervisor = Command::new("sh")
            .arg("-c")
            .arg(SUPERVISOR)
            .arg("tether-pg-supervisor")
            .arg(&bin)
            .arg(&data)
            .arg(user.as_ref().map_or("", |u| u.0.as_str()))
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting the PostgreSQL supervisor shell")?;
        let stdin = supervisor.stdin.take();
        let mut server =
            Self { port: 0, password, dir: dir.clone(), bin, user: user.map(|u| u.0), supervisor, stdin };
        run_ok(Command::new("cp").arg("-a").arg(template.join("data")).arg(&data), START_LIMIT)
            .context("copying the PostgreSQL template")?;
        {
            use std::os::unix::fs::PermissionsExt;
            for (name, content) in &setup.files {
                let path = data.join(name);
                std::fs::write(&path, content).with_context(|| format!("writing {name}"))?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            }
        }
        if let Some(hba) = &setup.hba {
            std::fs::write(data.join("pg_hba.conf"), hba)?;
        }
        if !setup.conf.is_empty() {
            let mut conf = std::fs::OpenOptions::new().append(true).open(data.join("postgresql.conf"))?;
            writeln!(conf, "\n{}", setup.conf)?;
        }
        chown_all(&dir, owner)?;
        // A port can be taken between asking and binding: a few tries.
        let mut last = None;
        for _ in 0..5 {
            server.port = free_port()?;
            match server.configure_and_start() {
                Ok(()) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("PostgreSQL did not start")))
    }

    fn configure_and_start(&self) -> Result<()> {
        let data = self.dir.join("data");
        let mut conf = std::fs::OpenOptions::new().append(true).open(data.join("postgresql.conf"))?;
        writeln!(
            conf,
            "\n# tether-tests\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n\
             fsync = on\nsynchronous_commit = on\nfull_page_writes = on\nmax_connections = 300\n\
             shared_buffers = 16MB\npassword_encryption = 'scram-sha-256'\n",
            self.port,
            self.dir.display()
        )?;
        let log = self.dir.join("server.log");
        run_ok(
            as_user(self.user.as_deref(), &self.bin.join("pg_ctl"))
                .arg("start")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60"]),
            START_LIMIT + Duration::from_secs(5),
        )
        .with_context(|| {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = tail.lines().rev().take(10).collect();
            format!("pg_ctl start; server log: {}", lines.into_iter().rev().collect::<Vec<_>>().join(" | "))
        })?;
        Ok(())
    }

    /// Restarts the server as a crash would (`pg_ctl restart -m immediate`): every connection
    /// is cut, nothing committed is lost; returns once it accepts connections again.
    pub fn restart(&self) -> Result<()> {
        let data = self.dir.join("data");
        let log = self.dir.join("server.log");
        run_ok(
            as_user(self.user.as_deref(), &self.bin.join("pg_ctl"))
                .arg("restart")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .args(["-m", "immediate", "-w", "-t", "60"]),
            START_LIMIT + Duration::from_secs(5),
        )
        .context("pg_ctl restart")
        .map(drop)
    }

    /// The URL of database `db` as [`ROLE`] (TLS off: loopback).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{ROLE}:{}@127.0.0.1:{}/{db}?sslmode=disable", self.password, self.port)
    }

    /// Connects to database `db` (for setup and inspection), polling until the server accepts.
    pub async fn client(&self, db: &str) -> Result<tokio_postgres::Client> {
        let url = self.url(db);
        poll::until(format!("PostgreSQL on port {}", self.port), START_LIMIT, || {
            let url = url.clone();
            async move {
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                Ok(Some(client))
            }
        })
        .await
    }

    /// Creates a new, empty database and returns its URL.
    pub async fn create_database(&self) -> Result<String> {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let client = self.client("postgres").await?;
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.context("CREATE DATABASE")?;
        Ok(self.url(&name))
    }
}

/// The server this test process shares between its tests (started on first use, stopped when
/// the process ends, by the supervisor).
pub fn shared() -> Result<&'static PgServer> {
    static SHARED: OnceLock<std::result::Result<PgServer, String>> = OnceLock::new();
    SHARED
        .get_or_init(|| PgServer::start().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("{e}"))
}

/// A new, empty database on the [`shared`] server: its URL.
pub async fn database() -> Result<String> {
    // Starting blocks (initdb, pg_ctl): off the async threads.
    tokio::task::spawn_blocking(|| shared().map(|_| ()))
        .await
        .map_err(|e| anyhow!("starting PostgreSQL: {e}"))??;
    shared()?.create_database().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_server_takes_password_logins_only_runs_with_fsync_and_is_removed_on_drop() {
        let server = PgServer::start().unwrap();
        let client = server.client("postgres").await.unwrap();
        let fsync: String = client.query_one("SHOW fsync", &[]).await.unwrap().get(0);
        assert_eq!(fsync, "on");
        let wrong =
            format!("postgres://{ROLE}:not-the-password@127.0.0.1:{}/postgres?sslmode=disable", server.port);
        assert!(
            tokio_postgres::connect(&wrong, tokio_postgres::NoTls).await.is_err(),
            "a wrong password is refused"
        );
        let url = server.create_database().await.unwrap();
        let (other, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        let db: String = other.query_one("SELECT current_database()", &[]).await.unwrap().get(0);
        assert!(url.contains(&db), "the URL names the new database");
        let dir = server.dir.clone();
        assert!(dir.join("data").is_dir());
        drop(server);
        assert!(!dir.exists(), "the server's directory is removed on drop");
    }
}
