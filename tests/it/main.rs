//! The one integration-test binary: modules per area.

mod ab;
mod alerts;
mod backfill;
mod build;
mod cli;
mod dashboard;
mod detectors;
mod labels;
mod oracle;
mod pipeline;
mod properties;
mod registry;
mod sql_shell;
mod tracking;
mod tracking_cli;
mod tracking_kafka;
mod verdicts;

/// The checkout the tests run from: cargo's `CARGO_MANIFEST_DIR` at run
/// time (a test binary reused from a build cache may have been compiled in
/// another checkout, so the compile-time path can point elsewhere), else the
/// compile-time one.
pub fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}

/// Result type of tests: any error fails the test with its message.
pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Runs the `mlwatch` binary with `args`: its stdout, or its stderr as the
/// error when it fails.
pub fn run_mlwatch<I, S>(args: I) -> Result<String, Box<dyn std::error::Error>>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mlwatch"))
        .args(args)
        .output()?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// A child process killed (and reaped) when dropped, so a failing test
/// leaves no server running.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The demo's output (20,000 events over 10 windows) in a new temporary
/// folder: the folder (kept alive by the caller) and the data root in it.
pub async fn demo_output() -> Result<(tempfile::TempDir, String), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    mlwatch::demo::run_demo(&mlwatch::demo::DemoOptions {
        data: data.clone(),
        events: 20_000,
        windows: 10,
    })
    .await?;
    Ok((tmp, data.display().to_string()))
}
