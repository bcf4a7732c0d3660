//! Finding the delegate's own container id: an explicit override, then `/proc/self/mountinfo`
//! (the `/containers/<64 hex>/` in the source paths of hostname, hosts or resolv.conf), then
//! `/proc/self/cgroup`, then `HOSTNAME`. The caller confirms the candidate with an inspect.

/// Where the candidate id came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdSource {
    /// `TETHER_CONTAINER_ID`.
    Override,
    /// `/proc/self/mountinfo`.
    Mountinfo,
    /// `/proc/self/cgroup`.
    Cgroup,
    /// `HOSTNAME` (a short id, unless the hostname was set).
    Hostname,
}

/// Length of Docker's short container id.
pub const SHORT_ID_LEN: usize = 12;

/// The short form of a container id, for logs and names: its first 12 bytes, cut on a
/// character boundary, so an engine answering a short or odd id cannot make it panic.
pub fn short_id(id: &str) -> &str {
    tether_protocol::text::bounded(id, SHORT_ID_LEN)
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The container id in mountinfo text: the mounts of `/etc/hostname`, `/etc/hosts` or
/// `/etc/resolv.conf` come from `…/containers/<id>/…`.
pub fn from_mountinfo(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (root, mount_point) = (fields.get(3)?, fields.get(4)?);
        if !matches!(*mount_point, "/etc/hostname" | "/etc/hosts" | "/etc/resolv.conf") {
            return None;
        }
        let (_, after) = root.split_once("/containers/")?;
        let id = after.split('/').next()?;
        (id.len() == 64 && is_hex(id)).then(|| id.to_owned())
    })
}

/// The container id in `/proc/self/cgroup` text: a 64-hex path segment, possibly as
/// `docker-<id>.scope` (systemd driver).
pub fn from_cgroup(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?;
        path.split('/').find_map(|segment| {
            let segment = segment.strip_suffix(".scope").unwrap_or(segment);
            let id = segment.rsplit('-').next().unwrap_or(segment);
            (id.len() == 64 && is_hex(id)).then(|| id.to_owned())
        })
    })
}

/// A hostname that looks like Docker's default (the 12-hex short id).
pub fn from_hostname(hostname: &str) -> Option<String> {
    (hostname.len() == 12 && is_hex(hostname)).then(|| hostname.to_owned())
}

/// Candidate ids in order of preference, each with its source.
pub fn candidates(
    override_id: Option<&str>,
    mountinfo: Option<&str>,
    cgroup: Option<&str>,
    hostname: Option<&str>,
) -> Vec<(String, IdSource)> {
    let mut out: Vec<(String, IdSource)> = Vec::new();
    let mut push = |id: Option<String>, source| {
        if let Some(id) = id {
            if !out.iter().any(|(known, _)| *known == id) {
                out.push((id, source));
            }
        }
    };
    push(override_id.map(str::to_owned), IdSource::Override);
    push(mountinfo.and_then(from_mountinfo), IdSource::Mountinfo);
    push(cgroup.and_then(from_cgroup), IdSource::Cgroup);
    push(hostname.and_then(from_hostname), IdSource::Hostname);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f";

    #[test]
    fn mountinfo_of_a_docker_container() {
        let text = format!(
            "612 543 0:62 / / rw,relatime master:301 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/X\n\
             613 612 0:64 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw\n\
             640 612 8:1 /var/lib/docker/containers/{ID}/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/sda1 rw\n\
             641 612 8:1 /var/lib/docker/containers/{ID}/hostname /etc/hostname rw,relatime - ext4 /dev/sda1 rw\n"
        );
        assert_eq!(from_mountinfo(&text).as_deref(), Some(ID));
    }

    #[test]
    fn mountinfo_ignores_other_mounts_and_bad_ids() {
        let text = "640 612 8:1 /var/lib/docker/containers/abc/hostname /etc/hostname rw - ext4 /dev/sda1 rw\n\
                    641 612 8:1 /data/containers/3f4e5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f/x /data rw - ext4 /dev/sda1 rw\n\
                    garbage\n";
        assert_eq!(from_mountinfo(text), None);
        // Outside a container: no such mounts.
        assert_eq!(from_mountinfo("22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"), None);
    }

    #[test]
    fn cgroup_v1_and_systemd_layouts() {
        let v1 = format!("12:pids:/docker/{ID}\n11:memory:/docker/{ID}\n0::/\n");
        assert_eq!(from_cgroup(&v1).as_deref(), Some(ID));
        let systemd = format!("0::/system.slice/docker-{ID}.scope\n");
        assert_eq!(from_cgroup(&systemd).as_deref(), Some(ID));
        // cgroup v2 with a private namespace shows nothing useful.
        assert_eq!(from_cgroup("0::/\n"), None);
        assert_eq!(from_cgroup("0::/user.slice/user-1000.slice/session-3.scope\n"), None);
    }

    #[test]
    fn hostname_only_when_it_looks_like_a_short_id() {
        assert_eq!(from_hostname("3f4e5a6b7c8d").as_deref(), Some("3f4e5a6b7c8d"));
        assert_eq!(from_hostname("delegate-1"), None);
        assert_eq!(from_hostname("3F4E5A6B7C8D"), None);
    }

    #[test]
    fn short_id_of_short_and_odd_ids_does_not_panic() {
        assert_eq!(short_id(ID), "3f4e5a6b7c8d");
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(short_id(""), "");
        // Byte 12 inside a multi-byte character: cut before it.
        assert_eq!(short_id("aaaaaaaaaaaé"), "aaaaaaaaaaa");
        assert_eq!(short_id("日本語日本語"), "日本語日");
    }

    #[test]
    fn candidates_keep_order_and_drop_duplicates() {
        let mountinfo =
            format!("1 2 8:1 /var/lib/docker/containers/{ID}/hosts /etc/hosts rw - ext4 /dev/sda1 rw\n");
        let cgroup = format!("0::/docker/{ID}\n");
        let got = candidates(Some("aaaaaaaaaaaa"), Some(&mountinfo), Some(&cgroup), Some("3f4e5a6b7c8d"));
        assert_eq!(
            got,
            [
                ("aaaaaaaaaaaa".to_owned(), IdSource::Override),
                (ID.to_owned(), IdSource::Mountinfo),
                ("3f4e5a6b7c8d".to_owned(), IdSource::Hostname),
            ]
        );
        assert!(candidates(None, None, None, Some("box")).is_empty());
    }
}
