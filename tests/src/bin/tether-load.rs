//! `tether-load`: runs the benchmark scenarios against a real manager on loopback and writes
//! a JSON result plus a table. `tether-load run --smoke` takes seconds (CI);
//! `tether-load run --full` is what BENCHMARKS.md records. See BENCHMARKS.md for commands.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tether_tests::harness::process::binary;
use tether_tests::harness::{Manager, Options};
use tether_tests::load::scenarios::{self, Ctx, Scale};
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
        /// Where to write the JSON result.
        #[arg(long, default_value = "target/bench/results.json")]
        out: PathBuf,
        /// The manager binary (default: next to this one).
        #[arg(long)]
        manager_bin: Option<PathBuf>,
        /// The delegate binary (default: next to this one).
        #[arg(long)]
        delegate_bin: Option<PathBuf>,
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

async fn run(
    scale: Scale,
    which: &str,
    out: PathBuf,
    manager_bin: PathBuf,
    delegate_bin: PathBuf,
) -> Result<()> {
    let mut results = serde_json::Map::new();
    results.insert("scale".into(), serde_json::to_value(&scale)?);
    results.insert(
        "machine".into(),
        serde_json::json!({ "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) }),
    );
    for name in which.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        eprintln!("== {name}");
        // A fresh manager per scenario, so one scenario's memory does not colour the next.
        let manager = Manager::start_with(Options {
            bin: Some(manager_bin.clone()),
            // The shipped defaults (30 s heartbeats), and no per-session log lines.
            env: vec![("RUST_LOG".into(), "warn".into())],
            ..Options::default()
        })
        .await?;
        let target = Target::new(manager.addr, "localhost", &manager.init.ca_cert)?;
        let ctx =
            Ctx { manager, target, delegate_bin: delegate_bin.clone(), self_bin: std::env::current_exe()? };
        let value = match name {
            "idle" => serde_json::to_value(scenarios::idle(&ctx, &scale).await?)?,
            "rate" => serde_json::to_value(scenarios::rate(&ctx, &scale).await?)?,
            "revoke" => serde_json::to_value(scenarios::revoke(&ctx, &scale).await?)?,
            "rotate" => serde_json::to_value(scenarios::rotate(&ctx, &scale).await?)?,
            "echo" => serde_json::to_value(scenarios::echo(&ctx, &scale).await?)?,
            "footprint" => serde_json::to_value(scenarios::footprint(&ctx, &scale).await?)?,
            other => anyhow::bail!("unknown scenario `{other}`"),
        };
        eprintln!("{name}: {value}");
        results.insert(name.into(), value);
    }
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text = serde_json::to_string_pretty(&serde_json::Value::Object(results))?;
    std::fs::write(&out, &text).with_context(|| format!("writing {}", out.display()))?;
    println!("{text}");
    eprintln!("results written to {}", out.display());
    Ok(())
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.cmd {
            Cmd::Run { full, scenarios, idle_steps, out, manager_bin, delegate_bin } => {
                let mut scale = if full { Scale::full() } else { Scale::smoke() };
                if let Some(steps) = idle_steps.filter(|s| s.len() >= 2) {
                    scale.idle_steps = steps;
                }
                let manager_bin = manager_bin.map_or_else(|| binary("tether-manager"), Ok)?;
                let delegate_bin = delegate_bin.map_or_else(|| binary("tether-delegate"), Ok)?;
                run(scale, &scenarios, out, manager_bin, delegate_bin).await
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
