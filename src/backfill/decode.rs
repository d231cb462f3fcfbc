//! A chunk of records decoded: archive rows from their columns
//! ([`crate::archive::columnar`]), JSON records (and the archive rows it
//! hands back, rebuilt into payloads) by the stream's decoder.

use std::collections::HashMap;

use super::source::{Body, Record};
use crate::archive::columnar::{self, ArchivedBatch};
use crate::error::Result;
use crate::event::{EventKind, ModelCatalog};
use crate::pipeline::step::{DecodedRecords, decode_records};

/// Decodes `records`; positions in the result index `records`. Archive rows
/// the columns cannot vouch for become JSON records (their dead letters
/// then hold the rebuilt payload).
pub(crate) fn decode_chunk(
    catalog: &ModelCatalog,
    records: &mut [Record],
) -> Result<DecodedRecords> {
    let mut columnar_out = Vec::new();
    let mut unknown = 0;
    for kind in [
        EventKind::Prediction,
        EventKind::Feature,
        EventKind::Outcome,
    ] {
        let mut batches: Vec<ArchivedBatch> = Vec::new();
        let mut index: HashMap<u64, u32> = HashMap::new();
        let mut rows: Vec<(u32, u32)> = Vec::new();
        let mut positions: Vec<usize> = Vec::new();
        for (pos, r) in records.iter().enumerate() {
            let Body::Archived(a) = &r.body else { continue };
            if r.kind != kind {
                continue;
            }
            let b = match index.get(&a.serial) {
                Some(b) => *b,
                None => {
                    let b = batches.len() as u32;
                    batches.push(ArchivedBatch::new(kind, a.batch.clone(), catalog)?);
                    index.insert(a.serial, b);
                    b
                }
            };
            rows.push((b, a.row));
            positions.push(pos);
        }
        if rows.is_empty() {
            continue;
        }
        let out = columnar::decode(catalog, kind, &batches, &rows);
        unknown += out.unknown_features;
        for s in out.fallback {
            let (b, row) = rows[s as usize];
            let archived = &batches[b as usize];
            let one = archived.batch.slice(row as usize, 1);
            let name = archived.model_name(row as usize).to_string();
            let payload = crate::archive::payloads(kind, &one, |_| name.as_str())?;
            let payload = payload.into_iter().next().unwrap_or_default();
            records[positions[s as usize]].body = Body::Json(payload.into_bytes());
        }
        for mut d in out.decoded {
            for s in d.seq.iter_mut() {
                *s = positions[*s as usize] as u32;
            }
            columnar_out.push((kind, d));
        }
    }
    let payloads: Vec<&[u8]> = records
        .iter()
        .map(|r| match &r.body {
            Body::Json(p) => p.as_slice(),
            Body::Archived(_) | Body::Decoded => &[],
        })
        .collect();
    let kinds: Vec<Option<EventKind>> = records
        .iter()
        .map(|r| matches!(r.body, Body::Json(_)).then_some(r.kind))
        .collect();
    let mut out = decode_records(catalog, &payloads, &kinds);
    out.batches.extend(columnar_out);
    out.unknown_features += unknown;
    // The rows are in the decoded batches now: the archive's batches go.
    for r in records.iter_mut() {
        if matches!(r.body, Body::Archived(_)) {
            r.body = Body::Decoded;
        }
    }
    Ok(out)
}
