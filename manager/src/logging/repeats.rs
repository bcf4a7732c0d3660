//! Limiting repeated identical warnings: [`RepeatLimiter`] (pure: keys and `now` in, whether
//! to write and the summaries out) and [`RepeatLayer`], the tracing layer that asks it about
//! every WARN and ERROR record before any output layer sees the record.
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// How many distinct repeated records are tracked at once; past that a new one is written
/// as it comes (never lost, only not limited), so the table stays bounded.
pub const MAX_KEYS: usize = 1024;

/// Longest key kept, in bytes (a record's fields beyond it do not tell records apart).
pub const MAX_KEY_BYTES: usize = 1024;

/// Longest message quoted in a summary, in characters.
const MAX_SHOWN_CHARS: usize = 200;

/// One repeated record's window.
#[derive(Debug)]
struct Seen {
    /// Until when repeats are counted, not written.
    until: Instant,
    /// Repeats not written since the last summary.
    suppressed: u64,
    target: String,
    message: String,
}

/// "N similar log lines suppressed": what was not written of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The record's target (for a record bridged from the `log` crate, its `log.target`).
    pub target: String,
    /// The record's message (bounded, control characters escaped).
    pub message: String,
    /// How many were not written.
    pub suppressed: u64,
}

/// Decides which repeats of a record are written: the first, then none until its window is
/// over (each counted), then the next first.
#[derive(Debug)]
pub struct RepeatLimiter {
    window: Duration,
    seen: HashMap<String, Seen>,
}

impl RepeatLimiter {
    /// A limiter with windows of `window`.
    pub fn new(window: Duration) -> Self {
        Self { window, seen: HashMap::new() }
    }

    /// Whether the record with `key` (target, message and fields) may be written at `now`.
    pub fn admit(&mut self, key: &str, target: &str, message: &str, now: Instant) -> bool {
        if let Some(seen) = self.seen.get_mut(key) {
            if now < seen.until {
                seen.suppressed += 1;
                return false;
            }
            seen.until = now + self.window;
            return true;
        }
        if self.seen.len() < MAX_KEYS {
            let message = tether_protocol::text::bounded_chars(message, MAX_SHOWN_CHARS);
            let seen = Seen {
                until: now + self.window,
                suppressed: 0,
                target: target.to_owned(),
                message: tether_protocol::text::escape_control(message).into_owned(),
            };
            self.seen.insert(key.to_owned(), seen);
        }
        true
    }

    /// The summaries of the records whose window is over at `now` (of all, when `all`) and
    /// that had repeats; forgets the records whose window is over.
    pub fn drain(&mut self, now: Instant, all: bool) -> Vec<Summary> {
        let mut out = Vec::new();
        for seen in self.seen.values_mut() {
            if seen.suppressed > 0 && (all || now >= seen.until) {
                out.push(Summary {
                    target: seen.target.clone(),
                    message: seen.message.clone(),
                    suppressed: std::mem::take(&mut seen.suppressed),
                });
            }
        }
        self.seen.retain(|_, seen| now < seen.until);
        out.sort_by(|a, b| (&a.target, &a.message).cmp(&(&b.target, &b.message)));
        out
    }

    /// How many records are tracked.
    pub fn tracked(&self) -> usize {
        self.seen.len()
    }
}

/// The tracing layer: asks the limiter about every WARN and ERROR record (except the
/// summaries' own) and stops those it does not admit from reaching the output layers.
#[derive(Debug, Clone)]
pub struct RepeatLayer {
    limiter: Arc<Mutex<RepeatLimiter>>,
}

impl RepeatLayer {
    /// A layer over `limiter`.
    pub fn new(limiter: Arc<Mutex<RepeatLimiter>>) -> Self {
        Self { limiter }
    }
}

impl<S: Subscriber> Layer<S> for RepeatLayer {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() > Level::WARN || meta.target() == super::TARGET {
            return true;
        }
        let mut key = KeyVisitor::new(meta.target());
        event.record(&mut key);
        let target = key.log_target.as_deref().unwrap_or(meta.target()).to_owned();
        match self.limiter.lock() {
            Ok(mut limiter) => limiter.admit(&key.key, &target, &key.message, Instant::now()),
            Err(_) => true,
        }
    }
}

/// Builds a record's key: its target and every field, in order, bounded.
struct KeyVisitor {
    key: String,
    message: String,
    log_target: Option<String>,
}

impl KeyVisitor {
    fn new(target: &str) -> Self {
        Self { key: target.to_owned(), message: String::new(), log_target: None }
    }
}

impl Visit for KeyVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = tether_protocol::text::bounded(value, MAX_KEY_BYTES).to_owned(),
            "log.target" => self.log_target = Some(tether_protocol::text::bounded(value, 200).to_owned()),
            _ => {}
        }
        if self.key.len() < MAX_KEY_BYTES {
            let _ = write!(self.key, "\u{1f}{}={value}", field.name());
            tether_protocol::text::bound_in_place(&mut self.key, MAX_KEY_BYTES);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
            tether_protocol::text::bound_in_place(&mut self.message, MAX_KEY_BYTES);
        }
        if self.key.len() < MAX_KEY_BYTES {
            let _ = write!(self.key, "\u{1f}{}={value:?}", field.name());
            tether_protocol::text::bound_in_place(&mut self.key, MAX_KEY_BYTES);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(60);

    #[test]
    fn the_first_is_written_the_repeats_counted_and_summarised_once_per_window() {
        let mut l = RepeatLimiter::new(W);
        let t0 = Instant::now();
        assert!(l.admit("k", "rustls", "Illegal SNI extension", t0));
        for i in 1..367 {
            assert!(!l.admit("k", "rustls", "Illegal SNI extension", t0 + Duration::from_millis(i)));
        }
        assert!(l.admit("other", "rustls", "another warning", t0), "a different record is written");
        assert!(l.drain(t0 + Duration::from_secs(1), false).is_empty(), "the window is still open");
        let summaries = l.drain(t0 + W, false);
        assert_eq!(
            summaries,
            vec![Summary {
                target: "rustls".into(),
                message: "Illegal SNI extension".into(),
                suppressed: 366
            }]
        );
        assert_eq!(l.tracked(), 0, "records whose window is over are forgotten");
        assert!(l.drain(t0 + W * 2, false).is_empty(), "summarised once");
        assert!(
            l.admit("k", "rustls", "Illegal SNI extension", t0 + W * 2),
            "a new window starts with a line"
        );
    }

    #[test]
    fn after_its_window_a_record_is_written_again_and_the_count_kept_for_the_summary() {
        let mut l = RepeatLimiter::new(W);
        let t0 = Instant::now();
        assert!(l.admit("k", "t", "m", t0));
        assert!(!l.admit("k", "t", "m", t0 + Duration::from_secs(1)));
        assert!(l.admit("k", "t", "m", t0 + W), "one line per window");
        assert!(!l.admit("k", "t", "m", t0 + W + Duration::from_secs(1)));
        let all = l.drain(t0 + W + Duration::from_secs(2), true);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].suppressed, 2, "at the end every open window is summarised");
    }

    #[test]
    fn the_table_is_bounded_and_a_record_beyond_it_is_written() {
        let mut l = RepeatLimiter::new(W);
        let t0 = Instant::now();
        for i in 0..MAX_KEYS + 10 {
            assert!(l.admit(&format!("k{i}"), "t", "m", t0));
        }
        assert_eq!(l.tracked(), MAX_KEYS);
        assert!(l.admit("new", "t", "m", t0) && l.admit("new", "t", "m", t0), "untracked: always written");
    }

    #[test]
    fn a_summary_quotes_a_bounded_escaped_message() {
        let mut l = RepeatLimiter::new(W);
        let t0 = Instant::now();
        let message = format!("bad \u{1b}[31m {}", "é".repeat(1000));
        assert!(l.admit("k", "t", &message, t0));
        assert!(!l.admit("k", "t", &message, t0));
        let s = l.drain(t0, true).remove(0);
        assert!(
            !s.message.contains('\u{1b}') && s.message.chars().count() <= MAX_SHOWN_CHARS + 8,
            "{}",
            s.message
        );
    }

    #[test]
    fn the_layer_writes_one_of_identical_warnings_and_every_info() {
        use tracing_subscriber::layer::SubscriberExt;
        let limiter = Arc::new(Mutex::new(RepeatLimiter::new(W)));
        let written = Arc::new(Mutex::new(0usize));
        struct Count(Arc<Mutex<usize>>);
        impl<S: Subscriber> Layer<S> for Count {
            fn on_event(&self, _: &Event<'_>, _: Context<'_, S>) {
                *self.0.lock().unwrap() += 1;
            }
        }
        let subscriber = tracing_subscriber::registry()
            .with(RepeatLayer::new(limiter.clone()))
            .with(Count(written.clone()));
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..10 {
                tracing::warn!(peer = "a", "same warning");
                tracing::info!("an info line is never limited");
            }
            tracing::warn!(peer = "b", "same warning");
        });
        assert_eq!(*written.lock().unwrap(), 1 + 10 + 1, "different fields are a different record");
        let s = limiter.lock().unwrap().drain(Instant::now(), true);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].suppressed, s[0].message.as_str()), (9, "same warning"));
    }
}
