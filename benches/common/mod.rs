//! Helpers shared by the bench binaries (each includes this module).

use std::ffi::OsStr;
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs the `mlwatch` binary with `args` as a fresh process; returns the
/// wall time, start-up included. A failed run is an error with its stderr.
#[allow(dead_code)] // not every bench binary uses it
pub fn time_mlwatch<I, S>(args: I) -> Result<Duration, Box<dyn std::error::Error>>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_mlwatch"))
        .args(args)
        .output()?;
    let elapsed = t.elapsed();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
    }
    Ok(elapsed)
}

/// Runs the `mlwatch` binary with `args`: its stdout, or its stderr as the
/// error when it fails.
#[allow(dead_code)] // not every bench binary uses it
pub fn run_mlwatch(args: &[&str]) -> Result<String, Box<dyn std::error::Error>> {
    let out = Command::new(env!("CARGO_BIN_EXE_mlwatch"))
        .args(args)
        .output()?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Checks that librdkafka's mock broker kept every one of the `n` messages
/// produced to `topic`'s `partitions` (it drops the oldest past 5 MiB per
/// partition).
#[allow(dead_code)] // only the Kafka benches use it
pub fn check_retained(brokers: &str, topic: &str, partitions: i32, n: u64) {
    use rdkafka::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("consumer");
    let mut total = 0;
    for p in 0..partitions {
        let (low, high) = c
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .expect("watermarks");
        assert_eq!(low, 0, "{topic} [{p}] lost messages: raise the partitions");
        total += high;
    }
    assert_eq!(total as u64, n, "every message is on the broker");
}
