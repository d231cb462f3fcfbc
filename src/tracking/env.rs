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
    /// `$USER` (or `$USERNAME`).
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
        user: std::env::var("USER")
            .or_else(|_| std::env::var("USERNAME"))
            .ok(),
        mlwatch_version: env!("CARGO_PKG_VERSION").to_string(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        rustc_version: output(dir, "rustc", &["--version"]),
        python_version: output(dir, "python3", &["--version"]),
    }
}
