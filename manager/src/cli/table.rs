//! Plain-text tables and time formatting for people.

/// Renders rows under a header, columns padded to their widest cell. Control and bidi
/// characters in a cell (delegate-supplied names, hosts, versions, details) are shown as
/// `\u{…}` escapes, so no value can steer the operator's terminal.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|c| tether_protocol::text::escape_control(c).into_owned()).collect())
        .collect();
    let rows = rows.as_slice();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SSZ` (UTC).
pub fn time(secs: u64) -> String {
    let t = tether_protocol::utc::UtcTime::from_unix(secs);
    format!("{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z", t.year, t.month, t.day, t.hour, t.minute, t.second)
}

/// An optional time, or `-`.
pub fn opt_time(secs: Option<u64>) -> String {
    secs.map(time).unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times_and_tables() {
        assert_eq!(time(0), "1970-01-01 00:00:00Z");
        assert_eq!(time(1_700_000_000), "2023-11-14 22:13:20Z");
        assert_eq!(time(951_782_400), "2000-02-29 00:00:00Z");
        let t = render(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }

    #[test]
    fn control_characters_in_cells_are_escaped() {
        // Issue 10, finding 9: a delegate named like this retitled and cleared the terminal.
        let evil = "\u{1b}]0;title\u{7}\u{1b}[2Jpwned";
        let t = render(&["NAME", "HOST"], &[vec![evil.into(), "h\u{202e}x".into()]]);
        assert!(!t.contains('\u{1b}') && !t.contains('\u{7}') && !t.contains('\u{202e}'), "{t:?}");
        assert!(t.contains("\\u{1b}]0;title\\u{7}\\u{1b}[2Jpwned"));
        assert_eq!(render(&["N"], &[vec!["délégué日本".into()]]), "N\ndélégué日本\n");
    }
}
