//! Structured logs with tracing: text or JSON lines on stderr, filtered by `RUST_LOG`
//! (default `info`). Log fields carry token ids, never token values or secrets.
//!
//! [`install_panic_hook`] replaces the default panic message (which quotes whatever the
//! panicking code formatted, input included) with a log record that names only the place.
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber (once; later calls do nothing).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// What a panic's log line may say of its message: a literal of the code (`&'static str`)
/// as it is; anything formatted (a `String`, which may quote input or a secret) withheld.
pub fn shown_panic_message(payload: &(dyn std::any::Any + Send)) -> &'static str {
    payload.downcast_ref::<&'static str>().copied().unwrap_or("<formatted message withheld>")
}

/// Logs a panic as one error record with its location, and its message only when that is a
/// literal of the code (`&'static str`): a formatted message may quote input, or a secret.
/// The release profile unwinds, so tokio ends only the panicking task (one connection or
/// session); this hook makes that visible without leaking what the task was handling.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        let message = shown_panic_message(info.payload());
        let thread = std::thread::current().name().unwrap_or("unnamed").to_owned();
        tracing::error!(%location, %thread, message, "internal error: a task panicked and was stopped; the manager keeps running");
        // Also when no subscriber is installed (the CLI commands), so a panic is never silent.
        if !tracing::dispatcher::has_been_set() {
            eprintln!("tether-manager: internal error at {location}: {message}");
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_formatted_panic_message_is_withheld() {
        let secret = "tdt_AAAAsecretBBBB";
        let formatted = std::panic::catch_unwind(|| panic!("token {secret} rejected")).unwrap_err();
        assert_eq!(shown_panic_message(formatted.as_ref()), "<formatted message withheld>");
        let literal = std::panic::catch_unwind(|| panic!("a literal")).unwrap_err();
        assert_eq!(shown_panic_message(literal.as_ref()), "a literal");
    }
}
