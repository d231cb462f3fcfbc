//! Backfills: history re-run through the stream's own parts.
//!
//! A backfill reads a bounded [`source`] (the archive by default, or JSON
//! lines), decodes it ([`decode`]: archive rows straight from their
//! columns, which give what the stream's decoder gives; JSON and the rows
//! the columns cannot vouch for by that decoder,
//! [`crate::pipeline::step::decode_records`]), applies it with the
//! stream's [`Step`] (windows, label join) and hands closed windows to the
//! stream's evaluators and sinks ([`crate::pipeline::evaluators`],
//! [`WindowWriter`]): the same code, fed from files instead of Kafka.
//!
//! **What it replaces**: every window overlapping `[from, to)`, whole
//! ([`range::Covered`]). Result files are named after their window, so the
//! backfill's files overwrite the stream's (each with one atomic put); a
//! file of a covered window the backfill did not write again (an alert that
//! no longer fires) is removed afterwards. Running it twice writes the same
//! files. With `--version`, only that version's events are read and its
//! rows are replaced inside each file, the other versions' kept; the A/B
//! tables, which compare versions, are left alone.
//!
//! **State that spans windows** (concept-drift detectors, an experiment's
//! cumulative statistics, alert states) starts empty at the first covered
//! window: a backfill from an experiment's start reproduces the stream's
//! rows; one from its middle restarts the sums there.
//!
//! **Refusals**: records the decoder refuses (bad JSON, wrong types) are
//! dead letters (topic `backfill.<topic>` for archive rows, `backfill` for
//! JSON lines with a partition per file and the line as offset; named so a
//! rerun overwrites them). Records the step refuses (late, or labels whose
//! prediction lies outside the range) are counted in the summary only: the
//! stream recorded its own.
//!
//! Alerts are written to the `alerts` table, not sent (no Kafka topic, no
//! webhook): they describe the past.

mod decode;
pub mod jobs;
pub mod range;
pub mod schedule;
mod source;

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::event::{EventKind, ModelCatalog, field};
use crate::pipeline::Counters;
use crate::pipeline::dead_letters::DeadLetters;
use crate::pipeline::evaluate::{ParquetSink, Parts, ResultFiles, Sink, WindowWriter};
use crate::pipeline::step::{Input, Origin, Step};
use crate::storage::Storage;
use crate::storage::tables;
use range::{Covered, iso, parse_time};
use source::{Selection, Source};

/// Records decoded and applied at a time.
const CHUNK: usize = 8192;

/// What to backfill.
#[derive(Debug, Clone, Default)]
pub struct BackfillArgs {
    /// Start (see [`range::parse_time`]).
    pub from: String,
    /// End, exclusive.
    pub to: String,
    /// Models (all declared when empty).
    pub models: Vec<String>,
    /// One version only.
    pub version: Option<String>,
    /// Input other than the archive: a folder in the archive's layout, or
    /// JSON-lines files (path, URL or glob).
    pub input: Option<String>,
    /// What relative times are relative to (epoch ms).
    pub now_ms: i64,
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A bar on a terminal, log lines otherwise.
    Auto,
    /// Nothing (scheduled runs log their outcome).
    Quiet,
}

/// What a backfill did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BackfillSummary {
    /// Start of the first window replaced.
    pub from: String,
    /// End of the last window replaced.
    pub to: String,
    /// Models backfilled.
    pub models: Vec<String>,
    /// The version, when restricted to one.
    pub version: Option<String>,
    /// The input (`archive` by default).
    pub input: String,
    /// Records read.
    pub records: u64,
    /// Archive files in range merged as written (sorted by event time).
    pub files_merged: u64,
    /// Archive files DataFusion sorted (not written sorted, or stretched by
    /// very late events; a path it would percent-decode counts too).
    pub files_sorted: u64,
    /// Prediction and feature events applied to windows.
    pub events: u64,
    /// Outcome events.
    pub outcomes: u64,
    /// Labels joined to their prediction.
    pub labels_joined: u64,
    /// Windows evaluated.
    pub windows: u64,
    /// Rows written per table.
    pub rows: BTreeMap<String, u64>,
    /// Result files written.
    pub files_written: u64,
    /// Result files of covered windows removed (or, with a version, files
    /// that version's rows were removed from) because the backfill had no
    /// rows for them.
    pub files_removed: u64,
    /// Records outside the covered windows (JSON lines), skipped.
    pub outside: u64,
    /// Records the decoder refused, by reason (written as dead letters).
    pub dead_letters: BTreeMap<String, u64>,
    /// Records the step refused, by reason (counted only: the stream
    /// dead-lettered them; from JSON-lines files, which the stream never
    /// read, they are dead letters instead).
    pub refused: BTreeMap<String, u64>,
    /// `--to` was later than what the stream (`kafka.group_id`) has closed
    /// and archived: the backfill ended here instead.
    pub clamped_to: Option<String>,
    /// Wall time.
    pub seconds: f64,
    /// Records read per second.
    pub records_per_second: f64,
}

/// Runs a backfill with `config` (its storage, models and evaluators).
pub async fn run(
    config: &Config,
    args: &BackfillArgs,
    progress: Progress,
) -> Result<BackfillSummary> {
    let started = Instant::now();
    let catalog = Arc::new(ModelCatalog::from_config(config));
    for m in &args.models {
        if catalog.index(m).is_none() {
            return Err(Error::Config(format!(
                "--model `{m}` is not declared in the configuration (declared: {})",
                catalog
                    .models
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let models: Vec<String> = if args.models.is_empty() {
        catalog.models.iter().map(|m| m.name.clone()).collect()
    } else {
        args.models.clone()
    };
    let window_ms = config.window.size.as_millis() as i64;
    let label_wait = config
        .models
        .values()
        .filter(|m| m.task.is_some())
        .map(|m| m.label_horizon.as_millis() as i64)
        .max()
        .map_or(0, |h| h + config.window.allowed_lateness.as_millis() as i64);
    let storage = Storage::open(&config.storage.url, &config.storage.options)?;
    let mut to = parse_time(&args.to, args.now_ms)?;
    // Not past what the stream has made durable: windows it has not closed
    // (and, for labels, not past their wait) may still get archived events.
    let mut clamped = None;
    if let Some(c) =
        crate::pipeline::checkpoint::Checkpoint::load(&storage, &config.kafka.group_id).await?
    {
        // Closed windows' events, and final windows' labels, were archived
        // by that checkpoint.
        let durable = c
            .labels
            .first_pending()
            .map_or(c.windows.closed_through, |p| {
                p.min(c.windows.closed_through)
            });
        if args.input.is_none() && to > durable {
            to = durable;
            clamped = Some(iso(durable));
        }
    }
    let from = parse_time(&args.from, args.now_ms)?;
    if let Some(t) = clamped.as_ref().filter(|_| to <= from) {
        return Err(Error::Config(format!(
            "nothing to backfill yet: the stream (kafka.group_id `{}`) has closed and archived \
             windows (with their labels) only up to {t}",
            config.kafka.group_id
        )));
    }
    let covered = Covered::new(from, to, window_ms, label_wait)?;
    let selection = Selection {
        covered,
        models: models.clone(),
        version: args.version.clone(),
    };
    let mut source = Source::open(
        args.input.as_deref(),
        &storage,
        &config.storage.options,
        &selection,
    )
    .await?;
    let (files_merged, files_sorted) = source.files();
    // The stream never read JSON-lines files: what the step refuses in them
    // (other than late events) is dead-lettered here.
    let json_lines = matches!(source, Source::JsonLines(_));

    // The stream's evaluators and sinks; alerts go to their table only.
    let mut quiet = config.clone();
    quiet.kafka.alerts_topic.clear();
    quiet.alerts.webhook_url.clear();
    let files = ResultFiles::tracked(storage.clone(), args.version.clone());
    let evaluators =
        crate::pipeline::evaluators(&quiet, &catalog, &storage, args.version.is_none()).await?;
    let sinks: Vec<Box<dyn Sink>> = vec![
        Box::new(ParquetSink::new(files.clone())),
        Box::new(crate::alerts::AlertSink::new(&quiet, files.clone())?),
    ];
    let mut writer = WindowWriter::spawn(evaluators, sinks, &Parts::new())?;
    let mut step = Step::new(config, catalog.clone());
    let mut counters = Counters::default();
    let mut dead = DeadLetters::default();
    let mut summary = BackfillSummary {
        from: iso(covered.from),
        to: iso(covered.to),
        models,
        version: args.version.clone(),
        input: args.input.clone().unwrap_or_else(|| "archive".into()),
        clamped_to: clamped,
        files_merged,
        files_sorted,
        ..Default::default()
    };
    if let Some(t) = &summary.clamped_to {
        tracing::warn!(to = %t, group = %config.kafka.group_id,
            "the backfill ends where the stream's checkpoint has closed windows (and their labels' wait)");
    }
    let total = match progress {
        Progress::Auto if std::io::stderr().is_terminal() => source.total().await?,
        _ => None,
    };
    let bar = ProgressShow::new(progress, total);
    // Reading (scan, sort) runs on a task of its own, a chunk ahead of
    // decoding and windowing. (Decoding there too, a chunk ahead of the
    // step, was 5% faster and doubled the peak RSS: glibc's arenas keep
    // what one thread allocates and another frees.)
    let (chunks, mut next_chunk) = tokio::sync::mpsc::channel::<Result<Vec<source::Record>>>(2);
    let reader = tokio::spawn(async move {
        loop {
            let r = source.next(CHUNK).await;
            let done = matches!(&r, Ok(v) if v.is_empty()) || r.is_err();
            if chunks.send(r).await.is_err() || done {
                return;
            }
        }
    });
    // (model, window start) of the events read: only their files are replaced.
    let mut seen: BTreeSet<(usize, i64)> = BTreeSet::new();
    let selected: Vec<bool> = catalog
        .models
        .iter()
        .map(|m| summary.models.contains(&m.name))
        .collect();
    loop {
        let mut records = match next_chunk.recv().await {
            Some(r) => r?,
            None => break,
        };
        if records.is_empty() {
            break;
        }
        let base = summary.records as i64;
        summary.records += records.len() as u64;
        // CPU work: the runtime's other tasks (the reader, the writer, a
        // stream beside a schedule) go on on the other worker.
        let decoded = tokio::task::block_in_place(|| decode::decode_chunk(&catalog, &mut records))?;
        for (pos, reason, error) in decoded.rejected {
            let r = &records[pos];
            let payload = match &r.body {
                source::Body::Json(p) => p.as_slice(),
                // (Never: the decoder sees JSON bodies only, and archive rows
                // it is to decode were rebuilt into them.)
                source::Body::Archived(_) | source::Body::Decoded => &[],
            };
            *summary
                .dead_letters
                .entry(reason.as_str().to_string())
                .or_default() += 1;
            dead.push(&r.topic, r.partition, r.offset, payload, reason, error);
        }
        let mut batches = Vec::with_capacity(decoded.batches.len());
        for (kind, d) in decoded.batches {
            if let Some(d) = within(kind, d, &selection, &selected, &mut summary.outside)? {
                batches.push((kind, d));
            }
        }
        let input = Input {
            batches,
            origins: (0..records.len())
                .map(|i| Origin {
                    source: "backfill",
                    partition: 0,
                    offset: base + i as i64,
                })
                .collect(),
            type_errors: decoded
                .type_errors
                .into_iter()
                .filter(|(_, te)| {
                    covered.holds(te.ts - te.ts.rem_euclid(window_ms))
                        && selected.get(te.model).copied().unwrap_or(false)
                        && args.version.as_ref().is_none_or(|v| *v == te.version)
                })
                .collect(),
        };
        let refused = tokio::task::block_in_place(|| step.apply(&input, &mut counters));
        // Only the windows of events the step took are replaced: a window
        // whose events were all refused (late) keeps its results.
        let taken_out: BTreeSet<usize> = refused.iter().map(|r| r.pos).collect();
        for (kind, d) in &input.batches {
            if *kind != EventKind::Outcome {
                note_windows(d, window_ms, &taken_out, &mut seen);
            }
        }
        for r in refused {
            let rec = &records[r.pos];
            if json_lines && let source::Body::Json(payload) = &rec.body {
                *summary
                    .dead_letters
                    .entry(r.reason.as_str().to_string())
                    .or_default() += 1;
                dead.push(
                    &rec.topic,
                    rec.partition,
                    rec.offset,
                    payload,
                    r.reason,
                    r.error,
                );
                continue;
            }
            *summary
                .refused
                .entry(r.reason.as_str().to_string())
                .or_default() += 1;
        }
        drop(input);
        let closed = step.take_closable();
        count_letters(&mut step, &mut summary);
        for w in closed {
            writer.submit(w).await?;
        }
        if dead.len() >= config.checkpoint.max_dead_letters {
            dead.write(&storage).await?;
        }
        bar.update(summary.records, started);
    }
    reader.await.map_err(|e| Error::Task {
        task: "backfill reader",
        reason: e.to_string(),
    })?;
    if seen.is_empty() {
        return Err(Error::Config(format!(
            "nothing to backfill: {} has no events of {}{} in {} to {}{}",
            summary.input,
            summary.models.join(", "),
            args.version
                .as_ref()
                .map_or(String::new(), |v| format!(" (--version `{v}`)")),
            summary.from,
            summary.to,
            if args.input.is_none() && !config.archive.enabled {
                " (archive.enabled is off: `mlwatch run` archives events only with it on)"
            } else {
                ""
            }
        )));
    }
    let closed = step.take_all();
    count_letters(&mut step, &mut summary);
    for w in closed {
        writer.submit(w).await?;
    }
    let flushed = writer.flush().await?;
    writer.close().await?;
    dead.write(&storage).await?;
    summary.windows = flushed.stats.windows;
    summary.rows = flushed
        .stats
        .rows
        .iter()
        .map(|(t, n)| (t.to_string(), *n))
        .collect();
    let written = files.written();
    summary.files_written = written.len() as u64;
    let names: Vec<String> = catalog.models.iter().map(|m| m.name.clone()).collect();
    summary.files_removed = remove_stale(
        &storage,
        &files,
        &written,
        args.version.is_none(),
        &names,
        &seen,
    )
    .await?;
    summary.events = counters.events;
    summary.outcomes = counters.outcomes;
    summary.labels_joined = counters.labels_joined;
    summary.seconds = started.elapsed().as_secs_f64();
    summary.records_per_second = summary.records as f64 / summary.seconds.max(1e-9);
    bar.finish(&summary);
    Ok(summary)
}

/// Notes the (model, window) of every event of `d`.
fn note_windows(
    d: &crate::event::Decoded,
    window_ms: i64,
    refused: &BTreeSet<usize>,
    seen: &mut BTreeSet<(usize, i64)>,
) {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::TimestampMillisecondType;
    let Some(ts) = d.batch.column_by_name(field::TS) else {
        return;
    };
    let mut last = None;
    let times = ts.as_primitive::<TimestampMillisecondType>().values();
    for (t, pos) in times.iter().zip(&d.seq) {
        if refused.contains(&(*pos as usize)) {
            continue;
        }
        let start = t - t.rem_euclid(window_ms);
        if last != Some(start) {
            seen.insert((d.model, start));
            last = Some(start);
        }
    }
}

/// Counts the labels that waited in vain (their prediction was outside
/// the range, or never came).
fn count_letters(step: &mut Step, summary: &mut BackfillSummary) {
    for l in step.take_label_letters() {
        *summary
            .refused
            .entry(l.reason.as_str().to_string())
            .or_default() += 1;
    }
}

/// The rows of `d` of a selected model and version inside the covered
/// windows (labels: until their wait ends); `None` when none is left.
fn within(
    kind: EventKind,
    d: crate::event::Decoded,
    s: &Selection,
    selected: &[bool],
    outside: &mut u64,
) -> Result<Option<crate::event::Decoded>> {
    use datafusion::arrow::array::{Array, AsArray, BooleanArray};
    use datafusion::arrow::datatypes::TimestampMillisecondType;
    if !selected.get(d.model).copied().unwrap_or(false) {
        *outside += d.seq.len() as u64;
        return Ok(None);
    }
    let until = match kind {
        EventKind::Outcome => s.covered.labels_to,
        _ => s.covered.to,
    };
    let ts = d
        .batch
        .column_by_name(field::TS)
        .map(|c| c.as_primitive::<TimestampMillisecondType>());
    let version = d
        .batch
        .column_by_name(field::VERSION)
        .map(|c| c.as_string::<i32>());
    let keep: BooleanArray = (0..d.batch.num_rows())
        .map(|i| {
            let t = ts.map_or(0, |c| c.value(i));
            let in_range = t >= s.covered.from && t < until;
            let in_version = match (&s.version, version, kind) {
                (Some(v), Some(c), k) if k != EventKind::Outcome => {
                    !c.is_null(i) && c.value(i) == v
                }
                _ => true,
            };
            Some(in_range && in_version)
        })
        .collect();
    let kept = keep.true_count();
    *outside += (d.seq.len() - kept) as u64;
    if kept == d.seq.len() {
        return Ok(Some(d));
    }
    if kept == 0 {
        return Ok(None);
    }
    let batch = datafusion::arrow::compute::filter_record_batch(&d.batch, &keep)?;
    let seq = d
        .seq
        .iter()
        .zip(keep.values().iter())
        .filter(|(_, k)| *k)
        .map(|(s, _)| *s)
        .collect();
    Ok(Some(crate::event::Decoded {
        model: d.model,
        batch,
        seq,
    }))
}

/// Result tables a backfill replaces files of.
fn result_tables(with_ab: bool) -> Vec<&'static str> {
    let mut t = vec![
        tables::DRIFT_RESULTS,
        tables::DRIFT_SUMMARY,
        tables::DATA_QUALITY,
        tables::PREDICTION_DISTRIBUTION,
        tables::PERFORMANCE,
        tables::CONCEPT_DRIFT,
        tables::ALERTS,
    ];
    if with_ab {
        t.extend([tables::AB_RESULTS, tables::AB_DECISIONS]);
    }
    t
}

/// Start of the window a result file is named after
/// (`window-<start>-<end>[-name].parquet`).
fn window_of(rel: &str) -> Option<i64> {
    let name = rel.rsplit('/').next()?;
    let rest = name.strip_prefix("window-")?.strip_suffix(".parquet")?;
    rest.split('-').next()?.parse().ok()
}

/// Removes the files of the windows the backfill read events for that it
/// did not write again (`seen`: model index in `names` and window start).
/// Windows it read nothing for are left as they are: an archive that starts
/// later than the range, or a model without traffic, removes nothing.
async fn remove_stale(
    storage: &Storage,
    files: &ResultFiles,
    written: &BTreeSet<String>,
    with_ab: bool,
    names: &[String],
    seen: &BTreeSet<(usize, i64)>,
) -> Result<u64> {
    let dirs: BTreeSet<(usize, String)> = seen
        .iter()
        .map(|(m, start)| (*m, crate::archive::date_of(*start)))
        .collect();
    let mut removed = 0;
    for table in result_tables(with_ab) {
        for (m, date) in &dirs {
            let dir = format!("{table}/model={}/date={date}/", names[*m]);
            for l in storage.list(&dir).await? {
                let stale = window_of(&l.rel).is_some_and(|s| seen.contains(&(*m, s)))
                    && !written.contains(&l.rel);
                if stale {
                    files.remove(&l.rel).await?;
                    removed += 1;
                }
            }
        }
    }
    Ok(removed)
}

/// The progress bar, or log lines when stderr is not a terminal.
struct ProgressShow {
    bar: Option<indicatif::ProgressBar>,
    quiet: bool,
    last_log: std::cell::Cell<Instant>,
}

impl ProgressShow {
    fn new(progress: Progress, total: Option<u64>) -> Self {
        let quiet = progress == Progress::Quiet;
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = match total {
                Some(n) => indicatif::ProgressBar::new(n),
                None => indicatif::ProgressBar::no_length(),
            };
            let style = indicatif::ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{wide_bar}] {human_pos}/{human_len} records, {per_sec}, ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self {
            bar,
            quiet,
            last_log: std::cell::Cell::new(Instant::now()),
        }
    }

    fn update(&self, records: u64, started: Instant) {
        if let Some(b) = &self.bar {
            b.set_position(records);
        } else if !self.quiet && self.last_log.get().elapsed() >= Duration::from_secs(5) {
            self.last_log.set(Instant::now());
            let secs = started.elapsed().as_secs_f64();
            tracing::info!(
                records,
                records_per_second = (records as f64 / secs.max(1e-9)).round(),
                "backfilling"
            );
        }
    }

    fn finish(&self, s: &BackfillSummary) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        if !self.quiet {
            tracing::info!(
                records = s.records,
                windows = s.windows,
                seconds = s.seconds,
                "backfill done"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_files_name_their_window() {
        assert_eq!(
            window_of("alerts/model=m/date=d/window-60000-120000-performance.parquet"),
            Some(60_000)
        );
        assert_eq!(
            window_of("drift_results/model=m/date=d/window-0-60000.parquet"),
            Some(0)
        );
        assert_eq!(
            window_of("drift_results/model=m/date=d/other.parquet"),
            None
        );
    }
}
