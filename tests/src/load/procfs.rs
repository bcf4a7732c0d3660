//! Reads a process's resident memory, CPU time and parent from `/proc`, and the machine's load
//! average and connection-tracking table, for the footprint figures and the notes of a run.
use anyhow::{Context, Result};

/// Resident set size of `pid` in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS missing")
}

/// The fields of `/proc/PID/stat` after the command name (field 3, `state`, is index 0).
fn stat_fields(pid: u32) -> Result<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("reading /proc stat")?;
    // The command name may contain spaces; fields start after the closing parenthesis.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("malformed stat")?;
    Ok(rest.split_whitespace().map(str::to_owned).collect())
}

fn stat_field(fields: &[String], index: usize, name: &str) -> Result<u64> {
    fields.get(index).and_then(|v| v.parse().ok()).with_context(|| format!("{name} in /proc stat"))
}

/// User plus system CPU time of `pid`, in clock ticks (`/proc/PID/stat` fields 14 and 15).
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let fields = stat_fields(pid)?;
    Ok(stat_field(&fields, 11, "utime")? + stat_field(&fields, 12, "stime")?)
}

/// [`cpu_ticks`] plus that of the children `pid` has waited for (fields 16 and 17).
pub fn cpu_ticks_with_children(pid: u32) -> Result<u64> {
    let fields = stat_fields(pid)?;
    (11..=14).map(|i| stat_field(&fields, i, "CPU time")).sum()
}

/// The parent process id of `pid` (field 4).
pub fn parent(pid: u32) -> Result<u32> {
    Ok(u32::try_from(stat_field(&stat_fields(pid)?, 1, "ppid")?)?)
}

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`).
pub fn loadavg() -> Result<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").context("reading /proc/loadavg")?;
    let mut values = text.split_whitespace().map(|v| v.parse::<f64>());
    let mut next = || values.next().context("short /proc/loadavg")?.context("/proc/loadavg");
    Ok([next()?, next()?, next()?])
}

/// The connection-tracking table's entries in use and its size
/// (`/proc/sys/net/netfilter/nf_conntrack_{count,max}`), where the kernel tracks connections.
pub fn conntrack() -> Option<(u64, u64)> {
    let read = |name: &str| {
        std::fs::read_to_string(format!("/proc/sys/net/netfilter/nf_conntrack_{name}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some((read("count")?, read("max")?))
}

/// Clock ticks per second (USER_HZ); 100 on every Linux this runs on.
pub const TICKS_PER_SEC: u64 = 100;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(rss_kib(pid).unwrap() > 100);
        assert!(cpu_ticks_with_children(pid).unwrap() >= cpu_ticks(pid).unwrap());
        assert_eq!(parent(pid).unwrap(), std::os::unix::process::parent_id());
        assert!(loadavg().unwrap().iter().all(|l| *l >= 0.0));
    }
}
