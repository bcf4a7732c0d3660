//! The standard `process_*` metrics, read from `/proc` at scrape time: CPU seconds, resident
//! memory, open and maximum file descriptors, start time. A value that cannot be read (not
//! Linux, `/proc` not mounted) is left out rather than reported as zero.
use std::fmt::Write as _;

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`: 100 on every Linux
/// architecture the manager is built for; reading `sysconf` would need `unsafe`).
const USER_HZ: f64 = 100.0;

/// The values read.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Process {
    /// User plus system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident set size, bytes.
    pub resident_bytes: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft open-file limit.
    pub max_fds: Option<u64>,
    /// Start time, seconds since the Unix epoch.
    pub start_time: Option<f64>,
}

impl Process {
    /// Reads this process's values.
    pub fn read() -> Self {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let fields = stat.as_deref().map(stat_fields).unwrap_or_default();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        let cpu_seconds = ticks(11).zip(ticks(12)).map(|(u, s)| u.saturating_add(s) as f64 / USER_HZ);
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| boot_time(&s));
        let start_time = ticks(19).zip(boot).map(|(t, b)| b as f64 + t as f64 / USER_HZ);
        let resident_bytes = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| status_kib(&s, "VmRSS:"))
            .map(|k| k * 1024);
        let open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as u64);
        let max_fds = rlimit::getrlimit(rlimit::Resource::NOFILE).ok().map(|(soft, _)| soft);
        Self { cpu_seconds, resident_bytes, open_fds, max_fds, start_time }
    }

    /// Appends the families in the OpenMetrics format.
    pub fn encode(&self, out: &mut String) {
        let mut family = |name: &str, kind: &str, help: &str, value: Option<String>| {
            let Some(value) = value else { return };
            let sample = if kind == "counter" { format!("{name}_total") } else { name.to_owned() };
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{sample} {value}\n");
        };
        family(
            "process_cpu_seconds",
            "counter",
            "Total user and system CPU time spent in seconds.",
            self.cpu_seconds.map(|v| v.to_string()),
        );
        family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            self.resident_bytes.map(|v| v.to_string()),
        );
        family(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            self.open_fds.map(|v| v.to_string()),
        );
        family(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors (the soft limit).",
            self.max_fds.map(|v| v.to_string()),
        );
        family(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch in seconds.",
            self.start_time.map(|v| v.to_string()),
        );
    }
}

/// The fields of `/proc/<pid>/stat` after the command name (which may hold spaces and
/// parentheses): index 0 is field 3 (state), so field `n` is at `n - 3`.
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default()
}

/// `btime` of `/proc/stat`: boot time, seconds since the epoch.
fn boot_time(stat: &str) -> Option<u64> {
    stat.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
}

/// A `kB` value of `/proc/<pid>/status`.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    let value = status.lines().find_map(|l| l.strip_prefix(key))?;
    value.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_formats() {
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 1000 1 2";
        let f = stat_fields(stat);
        assert_eq!((f[0], f[11], f[12], f[19]), ("S", "250", "50", "1000"));
        assert_eq!(boot_time("cpu 1 2\nbtime 1700000000\nprocesses 3\n"), Some(1_700_000_000));
        assert_eq!(status_kib("Name:\tx\nVmRSS:\t  1234 kB\n", "VmRSS:"), Some(1234));
        assert_eq!(stat_fields("garbage"), Vec::<&str>::new());
    }

    #[test]
    fn this_process_is_read_on_linux() {
        let p = Process::read();
        if cfg!(target_os = "linux") {
            assert!(p.cpu_seconds.is_some() && p.resident_bytes.is_some() && p.open_fds.is_some(), "{p:?}");
            assert!(p.start_time.is_some_and(|t| t > 1_000_000_000.0), "{p:?}");
        }
        let mut out = String::new();
        p.encode(&mut out);
        assert!(out.contains("# TYPE process_cpu_seconds counter\nprocess_cpu_seconds_total "), "{out}");
    }
}
