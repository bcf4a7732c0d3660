//! Percentiles and summaries of measured durations.
use std::time::Duration;

use serde::Serialize;

/// p50, p99 and max of a sample, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Summary {
    /// Number of samples.
    pub count: usize,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Maximum, ms.
    pub max_ms: f64,
}

/// Summarises `samples` (nearest-rank percentiles); `None` for an empty sample.
pub fn summarize(samples: &mut [Duration]) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let rank = |p: f64| {
        let idx = ((p / 100.0) * samples.len() as f64).ceil() as usize;
        samples[idx.clamp(1, samples.len()) - 1]
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Some(Summary {
        count: samples.len(),
        p50_ms: ms(rank(50.0)),
        p99_ms: ms(rank(99.0)),
        max_ms: ms(*samples.last().expect("non-empty")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = summarize(&mut v).unwrap();
        assert_eq!((s.count, s.p50_ms, s.p99_ms, s.max_ms), (100, 50.0, 99.0, 100.0));
        assert!(summarize(&mut []).is_none());
    }
}
