//! The `serve` subcommand: configuration (exit 64 when bad), logging, runtime, signals,
//! systemd notification, and the summaries of repeated warnings (every window and at the end).
use std::process::ExitCode;

use super::{ServeArgs, EXIT_USAGE};
use crate::config::{ServeConfig, Sources};

pub(super) fn serve(args: ServeArgs) -> ExitCode {
    let mut flags = Vec::new();
    if let Some(v) = args.data_dir {
        flags.push(("data_dir", v));
    }
    if let Some(v) = args.database {
        flags.push(("database", v));
    }
    if let Some(v) = args.listen {
        flags.push(("listen", v));
    }
    if let Some(v) = args.log_format {
        flags.push(("log_format", v));
    }
    if args.init {
        flags.push(("init", "true".to_owned()));
    }
    let config = match Sources::collect(flags, std::env::vars(), args.config.as_deref())
        .and_then(|src| ServeConfig::from_sources(&src))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tether-manager: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    crate::logging::init(config.log_format);
    // Every session is an open file: raise the soft limit to the hard one (as the systemd
    // unit's LimitNOFILE does), so the session caps derived from it are as high as allowed.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(open_files = limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tether-manager: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        // Stopped with the runtime; the last summaries are written below.
        let _summaries = tokio::spawn(crate::logging::summarise_repeats_periodically());
        let listener = std::net::TcpListener::bind(config.listen).map_err(|e| {
            crate::server::ServeError::Io(std::io::Error::new(
                e.kind(),
                format!("cannot listen on {}: {e}", config.listen),
            ))
        })?;
        crate::server::run(config, listener, shutdown_signal(), || {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        })
        .await
    });
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    crate::logging::summarise_repeats(true);
    match result {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(
            e @ (crate::server::ServeError::NotInitialised { .. }
            | crate::server::ServeError::NotInitialisedDatabase { .. }
            | crate::server::ServeError::Database(_)),
        ) => {
            tracing::error!(error = %e, "refusing to serve");
            eprintln!("tether-manager: {e}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => {
            tracing::error!(error = %e, "manager failed");
            eprintln!("tether-manager: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
