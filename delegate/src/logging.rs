//! Log output: human-readable by default, JSON lines with `--log-format json`. Filter with
//! `RUST_LOG` (default `info`). Token ids may appear in logs; token values never do.
//!
//! `RUST_LOG` governs the delegate's own records (`tether_delegate`, `tether_protocol`) only.
//! Every other target — the libraries that see secrets on their way (bollard logs Docker
//! request bodies, which carry the successor's `ACCOUNT_SECRET`, and inspect answers; hyper,
//! h2, tungstenite, rustls, …) and any library added later — is capped at `warn`, whatever
//! `RUST_LOG` says: a separate filter layer drops their debug and trace records (including
//! those bridged from the `log` crate) after the `RUST_LOG` filter, so no directive can turn
//! them back on. The kube crates are held at `error` (see [`QUIET_TARGETS`]).
use std::io::IsTerminal;

use tracing::{Level, Metadata};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{filter, fmt, EnvFilter};

use crate::cli::LogFormat;

/// Targets (crates, and their modules) whose records follow `RUST_LOG` at every level.
pub const OWN_TARGETS: &[&str] = &["tether_delegate", "tether_protocol"];

/// The most verbose level any other target may log at.
pub const OTHER_TARGETS_MAX: Level = Level::WARN;

/// Targets held at `error`: kube-client logs at `warn` the whole body of an answer it cannot
/// parse, and the answer to a Secret read carries the tokens (base64).
pub const QUIET_TARGETS: &[&str] = &["kube", "kube_client", "kube_core"];

/// Whether a record of `target` at `level` may be written (before `RUST_LOG` is applied).
pub fn may_log(target: &str, level: &Level) -> bool {
    if is_own(target) {
        return true;
    }
    if QUIET_TARGETS.iter().any(|quiet| in_crate(target, quiet)) {
        return *level <= Level::ERROR;
    }
    *level <= OTHER_TARGETS_MAX
}

/// Whether `target` is the crate `krate` or one of its modules.
fn in_crate(target: &str, krate: &str) -> bool {
    target.strip_prefix(krate).is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
}

fn is_own(target: &str) -> bool {
    OWN_TARGETS.iter().any(|own| in_crate(target, own))
}

/// Longest text from the peer that is logged as it came, in bytes.
pub const MAX_SHOWN: usize = 1024;

/// `text` as it may be logged when it can come from anything answering on the manager's
/// address (a reject's message, an error naming a received `type`): bounded to
/// [`MAX_SHOWN`] bytes on a character boundary, control characters escaped, so it can neither
/// flood the log nor forge lines or terminal sequences in it.
pub fn shown(text: &str) -> String {
    let bounded = tether_protocol::text::bounded(text, MAX_SHOWN);
    let mut out = tether_protocol::text::escape_control(bounded).into_owned();
    if bounded.len() < text.len() {
        out.push('…');
    }
    out
}

/// Installs the global subscriber, writing to stderr.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let guard = filter::filter_fn(|meta: &Metadata<'_>| may_log(meta.target(), meta.level()));
    let registry = tracing_subscriber::registry().with(filter).with(guard);
    let ansi = std::io::stderr().is_terminal();
    let _ = match format {
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(std::io::stderr).with_target(false).with_ansi(ansi))
            .try_init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true).with_writer(std::io::stderr).with_target(false))
            .try_init(),
    };
}

/// Logs a panic as one error record naming only its place (and the message when it is a
/// literal of the code): a formatted message may quote peer input or a token. `main`
/// restarts the agent after a panic (see `supervise` there).
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        let message = info.payload().downcast_ref::<&'static str>().copied().unwrap_or("<withheld>");
        tracing::error!(%location, message, "internal error: a task panicked");
        if !tracing::dispatcher::has_been_set() {
            eprintln!("tether-delegate: internal error at {location}: {message}");
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_text_is_bounded_and_escaped() {
        assert_eq!(shown("plain"), "plain");
        assert_eq!(shown("line\nforged: ERROR x\u{1b}[2J"), "line\\u{a}forged: ERROR x\\u{1b}[2J");
        let long = format!("{}é", "a".repeat(MAX_SHOWN - 1));
        assert_eq!(shown(&long), format!("{}…", "a".repeat(MAX_SHOWN - 1)));
        assert_eq!(shown(&"日".repeat(400)), format!("{}…", "日".repeat(341)));
    }

    #[test]
    fn libraries_are_capped_at_warn_and_the_delegate_is_not() {
        for target in [
            "bollard::docker",
            "bollard",
            "hyper_util::client",
            "h2::codec",
            "tungstenite::protocol",
            "tokio_tungstenite",
            "rustls::client",
            "log",
            "tether_delegate_evil",
            "tether_protocolx",
        ] {
            assert!(!may_log(target, &Level::DEBUG), "{target} at debug");
            assert!(!may_log(target, &Level::TRACE), "{target} at trace");
            assert!(!may_log(target, &Level::INFO), "{target} at info");
            assert!(may_log(target, &Level::WARN), "{target} at warn");
            assert!(may_log(target, &Level::ERROR), "{target} at error");
        }
        for target in ["kube_client::client", "kube_client", "kube", "kube_core::error"] {
            assert!(!may_log(target, &Level::WARN), "{target} at warn: it logs unparsed Secret bodies");
            assert!(may_log(target, &Level::ERROR), "{target} at error");
        }
        assert!(may_log("kubex", &Level::WARN), "only the kube crates are held at error");
        for target in ["tether_delegate", "tether_delegate::docker::engine", "tether_protocol::handshake"] {
            assert!(may_log(target, &Level::TRACE), "{target} at trace");
        }
    }
}
