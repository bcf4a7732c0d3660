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
            // `--json` anywhere before a `--`: the error is printed as JSON too.
            let json = std::env::args_os().take_while(|a| a != "--").any(|a| a == "--json");
            return tether_manager::cli::parse_failed(e, json);
        }
    };
    tether_manager::cli::run(cli)
}
