//! What `start_run` records about where a run ran: git commit, branch and
//! dirtiness (when inside a repository), host, OS, user, mlwatch version,
//! command line, and the versions of `rustc` and `python3` when present.
//! Each probe is a short subprocess; a missing tool leaves the field empty.

use std::path::Path;
use std::process::Command;

/// The captured facts (columns of `runs`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunEnvironment {
    /// `git rev-parse HEAD`.
    pub git_commit: Option<String>,
    /// `git rev-parse --abbrev-ref HEAD`.
    pub git_branch: Option<String>,
    /// Whether `git status --porcelain` lists changes.
    pub git_dirty: Option<bool>,
    /// Host name.
    pub hostname: Option<String>,
    /// `std::env::consts::OS` and architecture.
    pub os: String,
    /// The user name, see [`user`].
    pub user: Option<String>,
    /// This crate's version.
    pub mlwatch_version: String,
    /// The command line of the process that started the run.
    pub command: String,
    /// `rustc --version`.
    pub rustc_version: Option<String>,
    /// `python3 --version`.
    pub python_version: Option<String>,
}

fn output(dir: &Path, program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// This machine's host name (`/etc/hostname`, else `hostname`).
pub fn hostname(dir: &Path) -> Option<String> {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| output(dir, "hostname", &[]))
}

/// Who is running this process: `$USER`, `$LOGNAME` or `$USERNAME` when set
/// (and not empty), else the OS account of the process's uid, so that a
/// cron job, a container or `env -i` still records a name. Used for the
/// tracking `user` and the registry history's `actor`.
pub fn user() -> Option<String> {
    ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .map(|v| v.trim().to_string())
        .find(|v| !v.is_empty())
        .or_else(os_user)
}

/// The account name of this process's uid: from `/etc/passwd` (no libc
/// call), else `id -un` (which also asks NSS: LDAP, sssd).
fn os_user() -> Option<String> {
    let by_passwd = uid().and_then(|uid| {
        let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
        passwd_name(&passwd, uid)
    });
    by_passwd.or_else(|| output(Path::new("/"), "id", &["-un"]))
}

/// The real uid of this process, from `/proc/self/status` (Linux).
fn uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        .and_then(|id| id.parse().ok())
}

/// The name of `uid` in `/etc/passwd` text (`name:x:uid:gid:...`).
fn passwd_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id: u32 = fields.nth(1)?.parse().ok()?;
        (id == uid && !name.is_empty() && !name.starts_with('#')).then(|| name.to_string())
    })
}

/// Captures the environment of a run started in `dir`.
pub fn capture(dir: &Path) -> RunEnvironment {
    let git = |args: &[&str]| output(dir, "git", args);
    let git_commit = git(&["rev-parse", "HEAD"]);
    let git_dirty = git_commit.as_ref().and_then(|_| {
        Command::new("git")
            .args(["status", "--porcelain"])
            .current_dir(dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| !o.stdout.is_empty())
    });
    RunEnvironment {
        git_branch: git_commit
            .as_ref()
            .and_then(|_| git(&["rev-parse", "--abbrev-ref", "HEAD"])),
        git_commit,
        git_dirty,
        hostname: hostname(dir),
        os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
        user: user(),
        mlwatch_version: env!("CARGO_PKG_VERSION").to_string(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        rustc_version: output(dir, "rustc", &["--version"]),
        python_version: output(dir, "python3", &["--version"]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lookup_finds_the_uid_not_the_gid() {
        let passwd = "# comment\nroot:x:0:0:root:/root:/bin/sh\n\
                      svc:x:998:1000::/:/bin/false\nalice:x:1000:1000:A:/home/alice:/bin/sh\n";
        assert_eq!(passwd_name(passwd, 0).as_deref(), Some("root"));
        assert_eq!(passwd_name(passwd, 1000).as_deref(), Some("alice"));
        assert_eq!(passwd_name(passwd, 4242), None);
    }
}
