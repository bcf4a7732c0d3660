//! Unix seconds as a UTC calendar date and time (no clock read here: the caller passes the
//! seconds). One conversion for every crate that prints a time.

/// A UTC date and time, to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    /// Year (1970 and later).
    pub year: u64,
    /// Month, 1–12.
    pub month: u64,
    /// Day of the month, 1–31.
    pub day: u64,
    /// Hour, 0–23.
    pub hour: u64,
    /// Minute, 0–59.
    pub minute: u64,
    /// Second, 0–59.
    pub second: u64,
}

impl UtcTime {
    /// The date and time `unix` seconds after 1970-01-01T00:00:00Z.
    pub fn from_unix(unix: u64) -> Self {
        let days = unix / 86_400;
        let secs = unix % 86_400;
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z % 146_097;
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + u64::from(month <= 2);
        Self { year, month, day, hour: secs / 3_600, minute: secs % 3_600 / 60, second: secs % 60 }
    }
}

/// `unix` seconds as RFC 3339 UTC (`2026-12-06T16:30:00Z`).
pub fn rfc3339(unix: u64) -> String {
    let t = UtcTime::from_unix(unix);
    format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", t.year, t.month, t.day, t.hour, t.minute, t.second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_across_leap_years_and_centuries() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_574_601), "2026-12-06T16:30:01Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
        let far = UtcTime::from_unix(u64::MAX);
        assert!(far.month >= 1 && far.month <= 12 && far.day >= 1 && far.day <= 31, "no overflow: {far:?}");
    }
}
