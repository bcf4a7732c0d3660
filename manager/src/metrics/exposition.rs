//! The two exposition formats `/metrics` serves, chosen by the scraper's `Accept` header:
//! OpenMetrics 1.0.0 (what prometheus-client writes) and the Prometheus text format 0.0.4
//! (rewritten from it: a counter's HELP and TYPE name its `_total` sample, an info metric is
//! a gauge named `_info`, no UNIT lines and no `# EOF`).
use std::fmt::Write as _;

/// An exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`: every Prometheus and most other scrapers.
    Prometheus,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
}

const OPENMETRICS: &str = "application/openmetrics-text";

impl Format {
    /// The format for an `Accept` header: OpenMetrics when it is asked for with a quality at
    /// least that of `text/plain`, otherwise (no header, `*/*`, `text/plain`, anything else)
    /// the 0.0.4 text format.
    pub fn negotiate(accept: Option<&str>) -> Self {
        let Some(accept) = accept else { return Self::Prometheus };
        let (mut openmetrics, mut text) = (0.0_f64, 0.0_f64);
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim();
            let quality = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f64>().ok())
                .filter(|q| (0.0..=1.0).contains(q))
                .unwrap_or(1.0);
            if media.eq_ignore_ascii_case(OPENMETRICS) {
                openmetrics = openmetrics.max(quality);
            } else if media.eq_ignore_ascii_case("text/plain") {
                text = text.max(quality);
            }
        }
        if openmetrics > 0.0 && openmetrics >= text {
            Self::OpenMetrics
        } else {
            Self::Prometheus
        }
    }

    /// The response's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Rewrites an OpenMetrics exposition (as prometheus-client and [`super::process`] write it:
/// HELP before TYPE, no exemplars, no `_created` samples) into the 0.0.4 text format.
pub fn to_prometheus(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (suffix, kind) = match kind {
                "counter" => ("_total", "counter"),
                "info" => ("_info", "gauge"),
                "gauge" | "histogram" | "summary" => ("", kind),
                _ => ("", "untyped"),
            };
            if let Some((help_name, text)) = help.take().filter(|(n, _)| *n == name) {
                // OpenMetrics escapes `"` in HELP too; 0.0.4 escapes only `\` and newline.
                let _ = writeln!(out, "# HELP {help_name}{suffix} {}", text.replace("\\\"", "\""));
            }
            let _ = writeln!(out, "# TYPE {name}{suffix} {kind}");
            continue;
        }
        if line.starts_with('#') {
            continue; // UNIT, EOF
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_prefers_openmetrics_only_when_asked() {
        use Format::*;
        let cases = [
            (None, Prometheus),
            (Some("*/*"), Prometheus),
            (Some("text/plain"), Prometheus),
            (Some("text/plain;version=0.0.4"), Prometheus),
            (Some("application/openmetrics-text"), OpenMetrics),
            (Some("application/openmetrics-text; version=1.0.0; charset=utf-8"), OpenMetrics),
            // What Prometheus 2.x sends.
            (Some("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"), OpenMetrics),
            (Some("text/plain;version=0.0.4;q=1,application/openmetrics-text;q=0.5"), Prometheus),
            (Some("application/openmetrics-text;q=0"), Prometheus),
            (Some("application/openmetrics-text;q=banana"), OpenMetrics),
        ];
        for (accept, want) in cases {
            assert_eq!(Format::negotiate(accept), want, "{accept:?}");
        }
    }

    #[test]
    fn counters_and_info_are_renamed_for_the_text_format() {
        let om = "# HELP t_x Things.\n# TYPE t_x counter\nt_x_total{a=\"b\"} 1\n\
                  # HELP t_build Build.\n# TYPE t_build info\nt_build_info{version=\"1\"} 1\n\
                  # HELP t_g A \\\"quoted\\\" gauge.\n# TYPE t_g gauge\n# UNIT t_g bytes\nt_g 2\n# EOF\n";
        assert_eq!(
            to_prometheus(om),
            "# HELP t_x_total Things.\n# TYPE t_x_total counter\nt_x_total{a=\"b\"} 1\n\
             # HELP t_build_info Build.\n# TYPE t_build_info gauge\nt_build_info{version=\"1\"} 1\n\
             # HELP t_g A \"quoted\" gauge.\n# TYPE t_g gauge\nt_g 2\n"
        );
    }
}
