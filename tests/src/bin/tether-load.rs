//! `tether-load`: runs the benchmark scenarios against a real manager on loopback and writes
//! a JSON result plus a table. `tether-load run --smoke` takes seconds (CI);
//! `tether-load run --full` is what BENCHMARKS.md records. See BENCHMARKS.md for commands.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tether_tests::harness::process::binary;
use tether_tests::harness::{Manager, Options};
use tether_tests::load::procfs;
use tether_tests::load::scenarios::{self, Ctx, Scale};
use tether_tests::load::stores::{PgSource, Store, StoreCalls};
use tether_tests::load::transport::Target;

#[derive(Parser)]
#[command(about = "Tether load generator and benchmark suite")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a manager, run scenarios, write results.
    Run {
        /// The design brief's sizes (100k idle sessions, 10k revoked, …). Default: smoke sizes.
        #[arg(long)]
        full: bool,
        /// Comma-separated subset: idle,rate,revoke,rotate,echo,footprint.
        #[arg(long, default_value = "idle,rate,revoke,rotate,echo,footprint")]
        scenarios: String,
        /// Override the idle scenario's steps, e.g. `1000,10000,50000,100000` (each session
        /// needs an open file in the manager and one here: mind `ulimit -n`).
        #[arg(long, value_delimiter = ',')]
        idle_steps: Option<Vec<usize>>,
        /// Override the revoke scenario's sessions per fan-out (10,000 with --full).
        #[arg(long)]
        revoke_sessions: Option<usize>,
        /// Override the revoke scenario's rounds (5 with --full), each a revoke on the
        /// manager then a broadcast on the bare baseline.
        #[arg(long)]
        revoke_rounds: Option<usize>,
        /// Where to write the JSON result.
        #[arg(long, default_value = "target/bench/results.json")]
        out: PathBuf,
        /// The manager binary (default: next to this one).
        #[arg(long)]
        manager_bin: Option<PathBuf>,
        /// The delegate binary (default: next to this one).
        #[arg(long)]
        delegate_bin: Option<PathBuf>,
        /// Comma-separated stores to run each scenario on, one after the other (a fresh
        /// manager and database each time): sqlite (the file in the data dir), postgres. With
        /// more than one, or postgres alone, the results are grouped by store.
        #[arg(long, value_delimiter = ',', default_value = "sqlite")]
        stores: Vec<Store>,
        /// For `postgres`: the server to use, as a URL whose role may CREATE DATABASE (a fresh
        /// database per scenario). Default: a private server started from Debian's PostgreSQL
        /// binaries (/usr/lib/postgresql/*/bin; fsync on), removed at the end.
        #[arg(long, env = "TETHER_BENCH_DATABASE_URL")]
        database: Option<String>,
    },
    /// The replica-set benchmark: N managers on one PostgreSQL; revoke fan-out across them,
    /// failover of real delegates after `kill -9` of a replica, RSS per session per replica.
    Cluster {
        /// Managers in the set.
        #[arg(long, default_value_t = 3)]
        replicas: usize,
        /// Idle sessions spread evenly over them, then revoked through the first.
        #[arg(long, default_value_t = 300)]
        sessions: usize,
        /// Real delegate processes for the failover measurement.
        #[arg(long, default_value_t = 6)]
        delegates: usize,
        /// Where to write the JSON result.
        #[arg(long, default_value = "target/bench/cluster.json")]
        out: PathBuf,
        /// The manager binary (default: next to this one).
        #[arg(long)]
        manager_bin: Option<PathBuf>,
        /// The delegate binary (default: next to this one).
        #[arg(long)]
        delegate_bin: Option<PathBuf>,
        /// A PostgreSQL URL whose role may CREATE DATABASE (default: a private server from
        /// Debian's binaries).
        #[arg(long, env = "TETHER_BENCH_DATABASE_URL")]
        database: Option<String>,
    },
    /// The replica set's session count: N managers on one PostgreSQL, the sessions held by
    /// `hold` child processes (each at most 9,000 on a token of its own: one process may hold
    /// 20,000 open files, one token 10,000 sessions per manager).
    ClusterScale {
        /// Sessions in all.
        #[arg(long, default_value_t = 100_000)]
        sessions: usize,
        /// Managers in the set (each holds sessions/replicas).
        #[arg(long, default_value_t = 7)]
        replicas: usize,
        /// Where to write the JSON result.
        #[arg(long, default_value = "target/bench/cluster-scale.json")]
        out: PathBuf,
        /// The manager binary (default: next to this one).
        #[arg(long)]
        manager_bin: Option<PathBuf>,
        /// A PostgreSQL URL whose role may CREATE DATABASE (default: a private server).
        #[arg(long, env = "TETHER_BENCH_DATABASE_URL")]
        database: Option<String>,
    },
    /// Opens COUNT sessions on the manager at 127.0.0.1:PORT and holds them until standard
    /// input closes (a child of `cluster-scale`).
    Hold {
        /// The manager's port on 127.0.0.1.
        #[arg(long)]
        port: u16,
        /// The CA certificate the manager's certificate chains to.
        #[arg(long)]
        ca: PathBuf,
        /// A file holding the delegate token (not an argument: it would show in `ps`).
        #[arg(long)]
        token_file: PathBuf,
        /// The token's account.
        #[arg(long)]
        account: String,
        /// The sessions' delegate name.
        #[arg(long)]
        name: String,
        /// Sessions to open.
        #[arg(long)]
        count: usize,
    },
    /// The bare TLS + WebSocket accept loop used as the handshake-rate baseline.
    BaselineServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// Directory that receives the self-signed `ca.pem`.
        #[arg(long)]
        dir: PathBuf,
    },
}

/// What `run` is given.
struct Run {
    scale: Scale,
    which: String,
    out: PathBuf,
    manager_bin: PathBuf,
    delegate_bin: PathBuf,
    stores: Vec<Store>,
    database: Option<String>,
}

async fn scenario(name: &str, ctx: &Ctx, scale: &Scale) -> Result<serde_json::Value> {
    Ok(match name {
        "idle" => serde_json::to_value(scenarios::idle(ctx, scale).await?)?,
        "rate" => serde_json::to_value(scenarios::rate(ctx, scale).await?)?,
        "revoke" => serde_json::to_value(scenarios::revoke(ctx, scale).await?)?,
        "rotate" => serde_json::to_value(scenarios::rotate(ctx, scale).await?)?,
        "echo" => serde_json::to_value(scenarios::echo(ctx, scale).await?)?,
        "footprint" => serde_json::to_value(scenarios::footprint(ctx, scale).await?)?,
        other => anyhow::bail!("unknown scenario `{other}`"),
    })
}

async fn run(r: Run) -> Result<()> {
    let Run { scale, which, out, manager_bin, delegate_bin, stores, database } = r;
    if stores.is_empty() {
        anyhow::bail!("--stores names no store");
    }
    if database.is_some() && !stores.contains(&Store::Postgres) {
        anyhow::bail!("--database is for the postgres store: add it to --stores");
    }
    let mut results = serde_json::Map::new();
    results.insert("scale".into(), serde_json::to_value(&scale)?);
    results.insert(
        "machine".into(),
        serde_json::json!({
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "loadavg_at_start": procfs::loadavg().ok(),
            "conntrack_at_start": procfs::conntrack(),
        }),
    );
    results.insert("stores".into(), serde_json::to_value(&stores)?);
    warn_if_conntrack_small(&which, &scale);
    let pg = if stores.contains(&Store::Postgres) { Some(PgSource::start(database).await?) } else { None };
    if let Some(dir) = pg.as_ref().and_then(PgSource::dir) {
        eprintln!("PostgreSQL for the postgres store: a private server in {}", dir.display());
    }
    // The default (SQLite alone) keeps the results ungrouped, as before stores were a choice.
    let grouped = stores != [Store::Sqlite];
    for name in which.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        // Each scenario on every store before the next scenario: the stores see the same
        // machine load as nearly as one run can give.
        for &store in &stores {
            eprintln!("== {name} ({})", store.name());
            let database = match (store, &pg) {
                (Store::Postgres, Some(pg)) => Some(pg.fresh_database().await?),
                _ => None,
            };
            // A fresh manager per scenario, so one scenario's memory does not colour the next.
            let manager = Manager::start_with(Options {
                bin: Some(manager_bin.clone()),
                // The shipped defaults (30 s heartbeats), no per-session log lines, and room
                // for the idle scenario's 18,000 sessions on one token of one account under
                // this machine's 20,000 open files (by default 10,000 per token and per
                // account, and 4,096 files kept for handshakes in progress).
                env: vec![
                    ("RUST_LOG".into(), "warn".into()),
                    ("TETHER_MAX_UNAUTHENTICATED_CONNECTIONS".into(), "1024".into()),
                    ("TETHER_MAX_SESSIONS_PER_TOKEN".into(), "1000000".into()),
                    ("TETHER_MAX_SESSIONS_PER_ACCOUNT".into(), "1000000".into()),
                ],
                database,
                ..Options::default()
            })
            .await?;
            let target = Target::new(manager.addr, "localhost", &manager.init.ca_cert)?;
            let ctx = Ctx {
                manager,
                target,
                delegate_bin: delegate_bin.clone(),
                self_bin: std::env::current_exe()?,
            };
            let pid = ctx.manager.pid().context("the manager is not running")?;
            let loadavg = procfs::loadavg().ok();
            let calls_before = StoreCalls::read(&ctx.manager).await?;
            let cpu_before = procfs::cpu_ticks(pid)?;
            let pg_cpu_before =
                pg.as_ref().filter(|_| store == Store::Postgres).and_then(PgSource::cpu_ticks);
            let mut value = scenario(name, &ctx, &scale).await?;
            let ms = |ticks: u64| ticks as f64 * 1000.0 / procfs::TICKS_PER_SEC as f64;
            let whole = serde_json::json!({
                "store": store,
                "loadavg_at_start": loadavg,
                "store_calls": StoreCalls::read(&ctx.manager).await?.since(&calls_before),
                "manager_cpu_ms": ms(procfs::cpu_ticks(pid)?.saturating_sub(cpu_before)),
                "postgres_cpu_ms": pg_cpu_before.and_then(|before| {
                    pg.as_ref().and_then(PgSource::cpu_ticks).map(|now| ms(now.saturating_sub(before)))
                }),
            });
            if let serde_json::Value::Object(fields) = &mut value {
                fields.insert("whole_scenario".into(), whole);
            }
            eprintln!("{name} ({}): {value}", store.name());
            if grouped {
                let group = results
                    .entry(store.name())
                    .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
                if let serde_json::Value::Object(group) = group {
                    group.insert(name.into(), value);
                }
            } else {
                results.insert(name.into(), value);
            }
        }
    }
    results.insert("machine_at_end".into(), serde_json::json!({ "loadavg": procfs::loadavg().ok() }));
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text = serde_json::to_string_pretty(&serde_json::Value::Object(results))?;
    std::fs::write(&out, &text).with_context(|| format!("writing {}", out.display()))?;
    println!("{text}");
    eprintln!("results written to {}", out.display());
    Ok(())
}

/// The rate scenario opens ~5,000 connections a second per server for a minute, and the
/// kernel keeps each closed one in its connection-tracking table for 2 minutes (TIME_WAIT):
/// a full table drops new connections' packets, and the rate collapses to the retries. Warn
/// when the table may not hold a full run's.
fn warn_if_conntrack_small(which: &str, scale: &Scale) {
    let Some((count, max)) = procfs::conntrack() else { return };
    let per_sec = 6_000;
    let needed = if which.contains("rate") { 2 * scale.rate_secs * 3 * per_sec } else { 0 };
    if needed > 0 && max.saturating_sub(count) < needed {
        eprintln!(
            "warning: the connection-tracking table has {} of {max} entries free and the rate scenario may need \
             {needed}; a full table drops packets and the rate figures mean nothing. Raise it with \
             `sysctl -w net.netfilter.nf_conntrack_max=1048576`, or wait 2 minutes after the last run.",
            max.saturating_sub(count)
        );
    }
}

/// Prints `{"machine": …, key: value}` and writes it to `out`.
fn write_result(out: &std::path::Path, key: &str, value: serde_json::Value) -> Result<()> {
    let mut doc = serde_json::Map::new();
    doc.insert(
        "machine".into(),
        serde_json::json!({
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "loadavg_at_end": procfs::loadavg().ok(),
        }),
    );
    doc.insert(key.into(), value);
    let text = serde_json::to_string_pretty(&serde_json::Value::Object(doc))?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, &text).with_context(|| format!("writing {}", out.display()))?;
    println!("{text}");
    Ok(())
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.cmd {
            Cmd::Run {
                full,
                scenarios,
                idle_steps,
                revoke_sessions,
                revoke_rounds,
                out,
                manager_bin,
                delegate_bin,
                stores,
                database,
            } => {
                let mut scale = if full { Scale::full() } else { Scale::smoke() };
                if let Some(steps) = idle_steps.filter(|s| s.len() >= 2) {
                    scale.idle_steps = steps;
                }
                scale.revoke_sessions = revoke_sessions.unwrap_or(scale.revoke_sessions);
                scale.revoke_rounds = revoke_rounds.unwrap_or(scale.revoke_rounds).max(1);
                let manager_bin = manager_bin.map_or_else(|| binary("tether-manager"), Ok)?;
                let delegate_bin = delegate_bin.map_or_else(|| binary("tether-delegate"), Ok)?;
                run(Run { scale, which: scenarios, out, manager_bin, delegate_bin, stores, database }).await
            }
            Cmd::Cluster { replicas, sessions, delegates, out, manager_bin, delegate_bin, database } => {
                let options = tether_tests::load::cluster::ClusterOptions {
                    replicas,
                    sessions,
                    delegates,
                    manager_bin: manager_bin.map_or_else(|| binary("tether-manager"), Ok)?,
                    delegate_bin: delegate_bin.map_or_else(|| binary("tether-delegate"), Ok)?,
                    database,
                    spread: 16,
                };
                let result = tether_tests::load::cluster::run(&options).await?;
                write_result(&out, "cluster", serde_json::to_value(result)?)
            }
            Cmd::ClusterScale { sessions, replicas, out, manager_bin, database } => {
                let options = tether_tests::load::scale::ScaleOptions {
                    sessions,
                    replicas,
                    manager_bin: manager_bin.map_or_else(|| binary("tether-manager"), Ok)?,
                    database,
                };
                let result = tether_tests::load::scale::run(&options).await?;
                write_result(&out, "cluster_scale", serde_json::to_value(result)?)
            }
            Cmd::Hold { port, ca, token_file, account, name, count } => {
                tether_tests::load::scale::hold(port, &ca, &token_file, &account, &name, count).await
            }
            Cmd::BaselineServer { listen, dir } => tether_tests::load::baseline::serve(listen, &dir).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tether-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}
