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
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            let _ = stop.send(true);
        });
        agent::run(config, stopped).await
    });
    ExitCode::from(exit.code())
}

/// SIGTERM or SIGINT. As PID 1 in a scratch image there is no default handler, so the
/// delegate must install its own.
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}
