//! A run's control objects: small JSON files under `tracking/_runs/<run id>/`
//! that the tables' readers never list, each created once with
//! create-if-absent (`Storage::put_if_absent`: a no-replace link locally,
//! `If-None-Match: *` on S3).
//!
//! | object | written by | decides |
//! |---|---|---|
//! | `head.json` | the start | the run exists; its row and owner (a `log-*` call reads this one object instead of scanning the tables) |
//! | `params/<sha256 of key>.json` | the first `log-param` of that key | the key's value: a later or concurrent different value is refused |
//! | `end.json` | the first `end` (or the reaper) | the final status: a later or concurrent different status is refused |
//!
//! Each marker is created before the rows it stands for are written, so a
//! losing writer never writes rows. A write of rows that fails after its
//! retries deletes the markers the same call created, so the request is
//! refused whole. A process killed between the two leaves the marker
//! without its rows: for `end` the next read repairs it (the run's row is
//! still `RUNNING` while `end.json` exists, see `ExperimentTracker::reap`);
//! for a param, the key stays reserved with that value.
//!
//! Runs logged before these objects existed, and runs from the tracking
//! topic (one consumer owns them), have no head: they are read from the
//! tables as before.

use serde::{Deserialize, Serialize};

use super::tables::{self, RunRow};

/// Folder of the per-run control objects.
pub const RUNS: &str = "tracking/_runs";

/// The process that owns a run: when it is gone (same host), the run is
/// reaped as `KILLED`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Process id.
    pub pid: u32,
    /// Host the process runs on.
    pub hostname: Option<String>,
    /// The process's start time (clock ticks after boot, from
    /// `/proc/<pid>/stat`), so a later process that reuses the pid is not
    /// taken for the owner.
    pub started: Option<u64>,
    /// The kernel's boot id and the PID namespace the pid belongs to:
    /// containers that share a host name (a Kubernetes pod, `--network
    /// host`) do not share pids, so liveness is only judged from the same
    /// boot and namespace.
    #[serde(default)]
    pub pid_space: Option<String>,
}

impl Owner {
    /// Process `pid` on this host, with its start time when it is running.
    pub fn process(pid: u32, hostname: Option<String>) -> Self {
        Self {
            pid,
            hostname,
            started: process_start(pid),
            pid_space: pid_space(),
        }
    }

    /// Whether the owner is still running. Only answerable on its own host:
    /// elsewhere this returns `None`.
    pub fn alive(&self, this_host: &str) -> Option<bool> {
        if self.hostname.as_deref() != Some(this_host) {
            return None;
        }
        // Unknown unless this process sees the same pids as the owner did.
        let here = pid_space()?;
        if self.pid_space.as_deref() != Some(here.as_str()) {
            return None;
        }
        Some(match (process_start(self.pid), self.started) {
            (None, _) => false,
            (Some(now), Some(then)) => now == then,
            (Some(_), None) => true,
        })
    }
}

/// This process's boot id and PID namespace (`<boot id>/<pid:[inode]>`),
/// or `None` where `/proc` does not tell.
pub fn pid_space() -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
    Some(format!("{}/{}", boot.trim(), ns.display()))
}

/// Start time of process `pid` in clock ticks after boot (field 22 of
/// `/proc/<pid>/stat`), or `None` when there is no such process.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// `head.json`: the run as started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Head {
    /// The start row.
    pub row: RunRow,
    /// Who owns it, if anyone.
    pub owner: Option<Owner>,
}

/// `end.json`: how the run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndMark {
    /// FINISHED, FAILED or KILLED.
    pub status: String,
    /// µs since the epoch.
    pub end_time: i64,
}

/// `params/<hash>.json`: a param's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamMark {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
    /// µs since the epoch.
    pub logged_at: i64,
}

/// Path of a run's head.
pub fn head_path(run_id: &str) -> String {
    format!("{RUNS}/{run_id}/head.json")
}

/// Path of a run's end.
pub fn end_path(run_id: &str) -> String {
    format!("{RUNS}/{run_id}/end.json")
}

/// Path of a param's marker: keys may hold `/`, spaces and up to 250
/// characters, so the file is named by a hash of the key.
pub fn param_path(run_id: &str, key: &str) -> String {
    let h = crate::registry::artifact::sha256_hex(key.as_bytes());
    format!("{RUNS}/{run_id}/params/{}.json", &h[..40])
}

/// Label of the file that holds a run's end row: one name per run, so the
/// repair of a crashed `end` overwrites rather than adds.
pub const END_LABEL: &str = "end";

/// Path of that file.
pub fn end_row_path(run_id: &str) -> String {
    tables::file_path("run_log", run_id, END_LABEL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_a_dead_one_is_not() {
        let me = Owner::process(std::process::id(), Some("h".into()));
        assert!(me.started.is_some());
        assert_eq!(me.alive("h"), Some(true));
        assert_eq!(me.alive("other-host"), None);
        // Another pid namespace (a container sharing the host name): unknown.
        let other = Owner {
            pid_space: Some("elsewhere".into()),
            ..me.clone()
        };
        assert_eq!(other.alive("h"), None);
        // Same pid, another start time: a reused pid is not the owner.
        let reused = Owner {
            started: me.started.map(|s| s + 1),
            ..me.clone()
        };
        assert_eq!(reused.alive("h"), Some(false));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert_eq!(
            Owner::process(pid, Some("h".into())).alive("h"),
            Some(false)
        );
    }

    #[test]
    fn param_paths_are_short_and_distinct() {
        let long = "k/".repeat(120);
        let p = param_path("ab", &long);
        assert!(p.len() < 100, "{p}");
        assert_ne!(param_path("ab", "a"), param_path("ab", "b"));
    }
}
