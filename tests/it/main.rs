//! The one integration-test binary: modules per area.

mod cli;
mod detectors;
mod oracle;
mod pipeline;
mod properties;
mod registry;
mod tracking;
mod tracking_kafka;

/// Result type of tests: any error fails the test with its message.
pub type TestResult = Result<(), Box<dyn std::error::Error>>;
