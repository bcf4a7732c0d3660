//! `tether-delegate`: thin entry point. Exit codes: 0 stopped by SIGTERM (or healthy),
//! 1 unhealthy or internal error, 64 bad configuration (including a `MANAGER_CA_CERT` rustls
//! cannot use: the TLS configuration is built while the configuration loads), 78 token
//! revoked or expired (signed by the manager).
use std::process::ExitCode;

use clap::Parser;
use tether_delegate::cli::{Cli, Command};
use tether_delegate::config::Config;
use tether_delegate::strings::ProcessEnv;
use tether_delegate::{agent, health, logging};

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    logging::init(cli.log_format);
    logging::install_panic_hook();
    let flags = match cli.command {
        Some(Command::Health(flags)) => {
            return match health::check(&flags, &ProcessEnv) {
                Ok(_) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("unhealthy: {err}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::Run(flags)) => *flags,
        None => cli.run,
    };
    let config = match Config::load(&flags, &ProcessEnv) {
        Ok(config) => config,
        Err(err) => {
            tracing::error!(variable = err.var, "bad configuration: {err}");
            return ExitCode::from(agent::EXIT_BAD_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(error = %err, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    // The agent runs as a local task (see `supervise`), so no `Send` bound is needed.
    let local = tokio::task::LocalSet::new();
    let exit = local.block_on(&runtime, async {
        // Install the handlers before anything else runs: as PID 1 there is no default
        // SIGTERM action, and elsewhere an early signal must not kill the process mid-write.
        let signals = Signals::install()?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            signals.wait().await;
            let _ = stop.send(true);
        });
        Ok::<_, std::io::Error>(supervise(&flags, config, stopped).await)
    });
    match exit {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(err) => {
            tracing::error!(error = %err, "cannot install signal handlers");
            ExitCode::FAILURE
        }
    }
}

/// Runs the agent in a task of its own; if it panics (a bug: no input is meant to reach a
/// panic), logs it and starts the agent again after a growing pause (1 s doubling to 60 s),
/// so one bad frame or answer can never stop the delegate. Stops on SIGTERM during a pause.
async fn supervise(
    flags: &tether_delegate::cli::RunFlags,
    mut config: Config,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> agent::Exit {
    let mut pause = std::time::Duration::from_secs(1);
    loop {
        let task = tokio::task::spawn_local(agent::run(config, stopped.clone()));
        match task.await {
            Ok(exit) => return exit,
            Err(err) => tracing::error!(
                panicked = err.is_panic(),
                restart_in_secs = pause.as_secs(),
                "internal error: the agent stopped unexpectedly; starting it again"
            ),
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stopped.wait_for(|stop| *stop) => return agent::Exit::Stopped,
        }
        pause = (pause * 2).min(std::time::Duration::from_secs(60));
        config = match Config::load(flags, &ProcessEnv) {
            Ok(config) => config,
            Err(err) => {
                tracing::error!(variable = err.var, "bad configuration: {err}");
                return agent::Exit::BadConfig;
            }
        };
    }
}

/// SIGTERM and SIGINT, registered with the kernel as soon as this is built.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
