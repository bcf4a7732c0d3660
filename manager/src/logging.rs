//! Structured logs with tracing: text or JSON lines on stderr, filtered by `RUST_LOG`
//! (default `info`). Log fields carry token ids, never token values or secrets. Text logs are
//! coloured only when stderr is a terminal.
//!
//! Repeated similar warnings are limited ([`repeats`]): of a WARN or ERROR record that
//! repeats with the same target and message (its numbers and hex taken as `#`; for the
//! project's own records, the same fields too), the first in a window of
//! [`REPEAT_WINDOW`] is written and the rest are counted, then summarised in one line ("N
//! similar log lines suppressed") by [`summarise_repeats`], which `serve` calls every window
//! and once at the end. (rustls logs one "Illegal SNI extension" warning per connection,
//! quoting the name presented; a scanner makes hundreds, with as many names.) Records beyond
//! the tracked table share one overflow record, so memory stays bounded.
//!
//! [`install_panic_hook`] replaces the default panic message (which quotes whatever the
//! panicking code formatted, input included) with a log record that names only the place.
use std::io::IsTerminal;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

pub mod repeats;

use repeats::{RepeatLayer, RepeatLimiter};

/// How long identical warnings after the first are counted instead of written.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(60);

/// The target of this module's own records (the summaries), which are never limited.
pub const TARGET: &str = "tether_manager::logging";

/// The limiter of the installed subscriber, for [`summarise_repeats`].
static LIMITER: OnceLock<Arc<Mutex<RepeatLimiter>>> = OnceLock::new();

/// Installs the global subscriber (once; later calls do nothing).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let limiter = LIMITER.get_or_init(|| Arc::new(Mutex::new(RepeatLimiter::new(REPEAT_WINDOW)))).clone();
    let registry = tracing_subscriber::registry().with(filter).with(RepeatLayer::new(limiter));
    let ansi = std::io::stderr().is_terminal();
    let _ = match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_ansi(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text => {
            registry.with(fmt::layer().with_ansi(ansi).with_writer(std::io::stderr)).try_init()
        }
    };
}

/// Writes one summary line for each repeated warning whose window is over (every window
/// still open too when `all`, at the end), with how many were not written.
pub fn summarise_repeats(all: bool) {
    let Some(limiter) = LIMITER.get() else { return };
    // Taken out under the lock, logged after it: the limiter sees these records too.
    let summaries = match limiter.lock() {
        Ok(mut l) => l.drain(Instant::now(), all),
        Err(_) => return,
    };
    for s in summaries {
        tracing::warn!(target: TARGET, suppressed = s.suppressed, of_target = %s.target, of_message = %s.message,
            window_secs = REPEAT_WINDOW.as_secs(), "{} similar log lines suppressed", s.suppressed);
    }
}

/// Calls [`summarise_repeats`] every [`REPEAT_WINDOW`] until dropped or aborted.
pub async fn summarise_repeats_periodically() {
    let mut every = tokio::time::interval(REPEAT_WINDOW);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        summarise_repeats(false);
    }
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
