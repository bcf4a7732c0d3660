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

/// How many distinct repeated records are tracked at once; past that, new records share one
/// overflow bucket, limited and summarised like a record, so the table stays bounded and a
/// flood of distinct warnings still yields one line per window and a count.
pub const MAX_KEYS: usize = 1024;

/// Longest key kept, in bytes (a record's fields beyond it do not tell records apart).
pub const MAX_KEY_BYTES: usize = 1024;

/// Longest message quoted in a summary, in characters.
const MAX_SHOWN_CHARS: usize = 200;

/// Shortest run of hex digits (with at least one decimal digit) that [`normalise`] replaces.
const MIN_VARIABLE_RUN: usize = 4;

/// The target named in the overflow bucket's summary.
pub const OVERFLOW_TARGET: &str = "*";

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

impl Seen {
    /// Counts a repeat (`false`: not written) while the window is open; otherwise opens a new
    /// window (`true`: written).
    fn admit(&mut self, now: Instant, window: Duration) -> bool {
        if now < self.until {
            self.suppressed += 1;
            return false;
        }
        self.until = now + window;
        true
    }

    fn summary(&mut self) -> Summary {
        Summary {
            target: self.target.clone(),
            message: self.message.clone(),
            suppressed: std::mem::take(&mut self.suppressed),
        }
    }
}

/// "N similar log lines suppressed": what was not written of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The record's target (for a record bridged from the `log` crate, its `log.target`;
    /// [`OVERFLOW_TARGET`] for the overflow bucket).
    pub target: String,
    /// The record's message, normalised (see [`normalise`]; bounded, control characters
    /// escaped).
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
    /// The records that came when the table was full, counted as one.
    overflow: Option<Seen>,
}

impl RepeatLimiter {
    /// A limiter with windows of `window`.
    pub fn new(window: Duration) -> Self {
        Self { window, seen: HashMap::new(), overflow: None }
    }

    /// Whether the record with `key` (from [`record_key`]) may be written at `now`.
    pub fn admit(&mut self, key: &str, target: &str, message: &str, now: Instant) -> bool {
        if let Some(seen) = self.seen.get_mut(key) {
            return seen.admit(now, self.window);
        }
        let shown = |message: &str| {
            let message = normalise(tether_protocol::text::bounded_chars(message, MAX_SHOWN_CHARS));
            tether_protocol::text::escape_control(&message).into_owned()
        };
        if self.seen.len() < MAX_KEYS {
            let seen = Seen {
                until: now + self.window,
                suppressed: 0,
                target: target.to_owned(),
                message: shown(message),
            };
            self.seen.insert(key.to_owned(), seen);
            return true;
        }
        match &mut self.overflow {
            Some(overflow) => overflow.admit(now, self.window),
            None => {
                self.overflow = Some(Seen {
                    until: now + self.window,
                    suppressed: 0,
                    target: OVERFLOW_TARGET.to_owned(),
                    message: format!("warnings beyond the {MAX_KEYS} distinct records tracked"),
                });
                true
            }
        }
    }

    /// The summaries of the records whose window is over at `now` (of all, when `all`) and
    /// that had repeats, the overflow bucket's last; forgets the records whose window is over.
    pub fn drain(&mut self, now: Instant, all: bool) -> Vec<Summary> {
        let due = |seen: &Seen| seen.suppressed > 0 && (all || now >= seen.until);
        let mut out: Vec<Summary> = self.seen.values_mut().filter(|s| due(s)).map(Seen::summary).collect();
        self.seen.retain(|_, seen| now < seen.until);
        out.sort_by(|a, b| (&a.target, &a.message).cmp(&(&b.target, &b.message)));
        if let Some(overflow) = self.overflow.as_mut().filter(|s| due(s)) {
            out.push(overflow.summary());
        }
        if self.overflow.as_ref().is_some_and(|s| now >= s.until) {
            self.overflow = None;
        }
        out
    }

    /// How many records are tracked (the overflow bucket not counted).
    pub fn tracked(&self) -> usize {
        self.seen.len()
    }
}

/// `message` with its variable parts replaced by `#`: every run of at least
/// [`MIN_VARIABLE_RUN`] hex digits that has a decimal digit (addresses, ports, ids, hex dumps
/// such as the SNI rustls quotes), so that records differing only there are one record.
/// Words made of the letters a–f alone ("added", "decade") are kept.
pub fn normalise(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= MIN_VARIABLE_RUN && run.bytes().any(|b| b.is_ascii_digit()) {
            out.push('#');
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in message.chars() {
        if c.is_ascii_hexdigit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// Appends `part` to `key` prefixed by its length, so that no two sequences of parts make
/// the same key (`("a\x1fb", "c")` and `("a", "b\x1fc")` differ).
fn push_part(key: &mut String, part: &str) {
    let _ = write!(key, "{}:{part}", part.len());
}

/// A record's key: its target, its [`normalise`]d message and, for the project's own
/// records (targets `tether_*`), its other fields (`fields`, as [`push_part`] wrote them);
/// a third-party record (rustls, hyper) is keyed by target and message alone. Bounded to
/// [`MAX_KEY_BYTES`].
pub fn record_key(target: &str, message: &str, fields: &str) -> String {
    let mut key = String::new();
    push_part(&mut key, target);
    push_part(&mut key, &normalise(message));
    if target.starts_with("tether_") {
        key.push_str(fields);
    }
    tether_protocol::text::bound_in_place(&mut key, MAX_KEY_BYTES);
    key
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
        let mut visitor = KeyVisitor::default();
        event.record(&mut visitor);
        let target = visitor.log_target.as_deref().unwrap_or(meta.target());
        let key = record_key(target, &visitor.message, &visitor.fields);
        match self.limiter.lock() {
            Ok(mut limiter) => limiter.admit(&key, target, &visitor.message, Instant::now()),
            Err(_) => true,
        }
    }
}

/// Collects a record's message, its `log.target` and its other fields, in order,
/// length-prefixed and bounded.
#[derive(Default)]
struct KeyVisitor {
    message: String,
    log_target: Option<String>,
    fields: String,
}

impl KeyVisitor {
    fn push_field(&mut self, name: &str, value: &str) {
        if self.fields.len() < MAX_KEY_BYTES {
            push_part(&mut self.fields, name);
            push_part(&mut self.fields, value);
            tether_protocol::text::bound_in_place(&mut self.fields, MAX_KEY_BYTES);
        }
    }
}

impl Visit for KeyVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = tether_protocol::text::bounded(value, MAX_KEY_BYTES).to_owned(),
            "log.target" => self.log_target = Some(tether_protocol::text::bounded(value, 200).to_owned()),
            name => self.push_field(name, tether_protocol::text::bounded(value, MAX_KEY_BYTES)),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = format!("{value:?}");
        tether_protocol::text::bound_in_place(&mut text, MAX_KEY_BYTES);
        match field.name() {
            "message" => self.message = text,
            name => self.push_field(name, &text),
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
    fn past_a_full_table_records_share_one_overflow_bucket_summarised_like_the_others() {
        let mut l = RepeatLimiter::new(W);
        let t0 = Instant::now();
        for i in 0..MAX_KEYS {
            assert!(l.admit(&format!("k{i}"), "t", "m", t0));
        }
        assert!(l.admit("new0", "t", "m", t0), "the first past the table is written");
        for i in 1..5000 {
            assert!(!l.admit(&format!("new{i}"), "t", "m", t0), "then counted, not written");
        }
        assert_eq!(l.tracked(), MAX_KEYS, "memory stays bounded");
        let s = l.drain(t0 + W, false);
        assert_eq!(s.len(), 1, "no tracked record repeated: only the overflow is summarised");
        assert_eq!((s[0].target.as_str(), s[0].suppressed), (OVERFLOW_TARGET, 4999));
        assert!(s[0].message.contains("beyond the 1024"), "{}", s[0].message);
        assert_eq!(l.tracked(), 0);
        assert!(l.drain(t0 + W * 2, false).is_empty(), "summarised once, the bucket forgotten");
        assert!(l.admit("new1", "t", "m", t0 + W * 2), "a record fits in the table again");
    }

    #[test]
    fn distinct_sni_warnings_are_one_record() {
        let mut l = RepeatLimiter::new(W);
        let t0 = Instant::now();
        let target = "rustls::msgs::handshake";
        let mut written = 0;
        for i in 0..1100u32 {
            let ip = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
            let hex: String = ip.bytes().map(|b| format!("{b:02x}")).collect();
            let message = format!("Illegal SNI extension: ignoring IP address presented as hostname ({hex})");
            written += usize::from(l.admit(&record_key(target, &message, ""), target, &message, t0));
        }
        assert_eq!(written, 1, "one line for a scanner");
        assert_eq!(l.tracked(), 1);
        let s = l.drain(t0 + W, false);
        assert_eq!(
            s,
            vec![Summary {
                target: target.into(),
                message: "Illegal SNI extension: ignoring IP address presented as hostname (#)".into(),
                suppressed: 1099
            }]
        );
    }

    #[test]
    fn normalising_replaces_numbers_and_hex_not_words() {
        assert_eq!(
            normalise("peer 10.0.0.1:44321 id 3f9a2c sent 12 bytes"),
            "peer 10.0.0.1:# id # sent 12 bytes"
        );
        assert_eq!(normalise("added a decade of cafe"), "added a decade of cafe");
        assert_eq!(normalise("(3132372e302e302e31)"), "(#)");
        assert_eq!(normalise("é1234é"), "é#é");
    }

    #[test]
    fn keys_are_unambiguous_and_third_party_fields_do_not_split_records() {
        let mut a = String::new();
        push_part(&mut a, "a\u{1f}b");
        push_part(&mut a, "c");
        let mut b = String::new();
        push_part(&mut b, "a");
        push_part(&mut b, "b\u{1f}c");
        assert_ne!(record_key("tether_manager", "m", &a), record_key("tether_manager", "m", &b));
        assert_ne!(record_key("tether_manager", "m", ""), record_key("tether_manager", "", "1:m"));
        assert_ne!(record_key("t", "x:y", ""), record_key("t:x", "y", ""));
        assert_eq!(record_key("rustls", "m", &a), record_key("rustls", "m", &b), "fields ignored");
        assert_eq!(
            record_key("tether_manager", "port 44321", ""),
            record_key("tether_manager", "port 44322", "")
        );
        assert!(record_key("tether_manager", &"x".repeat(5000), &a).len() <= MAX_KEY_BYTES);
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
