//! `tether-manager`: the manager daemon and its admin CLI. All logic lives in the library.
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // ring is the only TLS provider; install it before anything builds a TLS config.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tether_manager::logging::install_panic_hook();
    let cli = match tether_manager::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(tether_manager::cli::EXIT_USAGE),
            };
        }
    };
    tether_manager::cli::run(cli)
}
