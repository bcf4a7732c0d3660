//! `tether-delegate`: thin entry point. Exit codes: 0 stopped by SIGTERM (or healthy),
//! 1 unhealthy or internal error, 64 bad configuration, 78 token revoked or expired.
use std::process::ExitCode;

use clap::Parser;
use tether_delegate::cli::{Cli, Command};
use tether_delegate::config::Config;
use tether_delegate::strings::ProcessEnv;
use tether_delegate::{agent, health, logging};

const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    logging::init(cli.log_format);
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
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(error = %err, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    let exit = runtime.block_on(async {
        // Install the handlers before anything else runs: as PID 1 there is no default
        // SIGTERM action, and elsewhere an early signal must not kill the process mid-write.
        let signals = Signals::install()?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            signals.wait().await;
            let _ = stop.send(true);
        });
        Ok::<_, std::io::Error>(agent::run(config, stopped).await)
    });
    match exit {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(err) => {
            tracing::error!(error = %err, "cannot install signal handlers");
            ExitCode::FAILURE
        }
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
