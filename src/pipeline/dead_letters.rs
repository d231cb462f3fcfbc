//! Records that cannot be used, buffered until the next checkpoint.
//!
//! Each buffered record keeps its payload, reason and message. At a
//! checkpoint the stream writes the buffer as one Parquet file per (source,
//! partition), named after its consumer group and the checkpoint's number,
//! so a replay of the interval after a crash overwrites the file instead
//! of adding a second copy (naming after the lowest offset did not: a label
//! dead-lettered on replay in an earlier interval than before changed it).
//! A backfill names its files after their first offset (it replays the
//! same chunks).

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};

use crate::error::Result;
use crate::event::Reason;
use crate::storage::Storage;
use crate::storage::tables::{self, DEAD_LETTER_FILE_SCHEMA};

struct DeadLetter {
    offset: i64,
    payload: String,
    reason: Reason,
    error: String,
}

/// The buffer.
#[derive(Default)]
pub(crate) struct DeadLetters {
    by_partition: BTreeMap<(String, i32), Vec<DeadLetter>>,
    len: usize,
}

impl DeadLetters {
    /// Buffers one record.
    pub fn push(
        &mut self,
        source: &str,
        partition: i32,
        offset: i64,
        payload: &[u8],
        reason: Reason,
        error: String,
    ) {
        self.by_partition
            .entry((source.to_string(), partition))
            .or_default()
            .push(DeadLetter {
                offset,
                payload: String::from_utf8_lossy(payload).into_owned(),
                reason,
                error,
            });
        self.len += 1;
    }

    /// Records buffered.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Writes and empties the buffer, each file named after its first
    /// offset (a backfill's chunks).
    pub async fn write(&mut self, storage: &Storage) -> Result<()> {
        self.write_named(storage, |topic, partition, first| {
            tables::dead_letter_file(topic, partition, first)
        })
        .await
    }

    /// Writes and empties the buffer as the interval ending with checkpoint
    /// `sequence` of consumer group `group` (the stream).
    pub async fn write_interval(
        &mut self,
        storage: &Storage,
        group: &str,
        sequence: u64,
    ) -> Result<()> {
        self.write_named(storage, |topic, partition, _| {
            tables::dead_letter_interval_file(topic, partition, group, sequence)
        })
        .await
    }

    async fn write_named(
        &mut self,
        storage: &Storage,
        name: impl Fn(&str, i32, i64) -> String,
    ) -> Result<()> {
        for ((topic, partition), letters) in &self.by_partition {
            // The lowest offset: a label dead-lettered after waiting for its
            // prediction is older than the records around it.
            let Some(first) = letters.iter().map(|d| d.offset).min() else {
                continue;
            };
            let path = name(topic, *partition, first);
            storage.write_parquet(&path, &[batch(letters)?]).await?;
        }
        self.by_partition.clear();
        self.len = 0;
        Ok(())
    }
}

fn batch(letters: &[DeadLetter]) -> Result<RecordBatch> {
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(
            letters.iter().map(|d| d.offset),
        )),
        Arc::new(StringArray::from_iter_values(
            letters.iter().map(|d| d.payload.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            letters.iter().map(|d| d.reason.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            letters.iter().map(|d| d.error.as_str()),
        )),
    ];
    Ok(RecordBatch::try_new(DEAD_LETTER_FILE_SCHEMA.clone(), cols)?)
}
