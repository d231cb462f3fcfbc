//! The time range of a backfill: arguments as users write them, and the
//! windows they cover.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

use crate::error::{Error, Result};

/// Parses a time argument, relative to `now_ms` when it starts with `-` or
/// `+` (`-1d`, `-6h30m`, humantime durations) or is `now`; otherwise
/// absolute: RFC 3339 (`2026-11-29T10:00:00Z`), a UTC date-time without
/// offset (`2026-11-29T10:00:00`, `2026-11-29 10:00`), a UTC date
/// (`2026-11-29`, its midnight) or epoch milliseconds. Returns epoch ms.
pub fn parse_time(s: &str, now_ms: i64) -> Result<i64> {
    let t = s.trim();
    let bad = |why: String| Error::Config(format!("time `{s}`: {why}"));
    if t.eq_ignore_ascii_case("now") {
        return Ok(now_ms);
    }
    if let Some(rest) = t.strip_prefix('-').or_else(|| t.strip_prefix('+')) {
        let d = humantime::parse_duration(rest.trim()).map_err(|e| bad(e.to_string()))?;
        let ms = i64::try_from(d.as_millis()).map_err(|_| bad("too long".into()))?;
        let t = if t.starts_with('-') {
            now_ms.checked_sub(ms)
        } else {
            now_ms.checked_add(ms)
        };
        return t.ok_or_else(|| bad("out of range".into()));
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d.timestamp_millis());
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(d) = NaiveDateTime::parse_from_str(t, f) {
            return Ok(d.and_utc().timestamp_millis());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(d
            .and_hms_opt(0, 0, 0)
            .map_or(0, |d| d.and_utc().timestamp_millis()));
    }
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map_err(|_| bad("not a time".into()));
    }
    Err(bad(
        "not `now`, a relative duration (`-1d`), RFC 3339, `yyyy-mm-dd[THH:MM[:SS]]` or epoch ms"
            .into(),
    ))
}

/// The windows a backfill replaces: every window that overlaps the
/// requested `[from, to)`, whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Covered {
    /// Start of the first window (epoch ms).
    pub from: i64,
    /// End of the last window (exclusive).
    pub to: i64,
    /// Labels are read until here: the last window's end plus the longest
    /// label horizon and the allowed lateness.
    pub labels_to: i64,
    /// The window size.
    pub window_ms: i64,
}

impl Covered {
    /// The windows of size `window_ms` overlapping `[from, to)`.
    pub fn new(from: i64, to: i64, window_ms: i64, label_wait_ms: i64) -> Result<Self> {
        if to <= from {
            return Err(Error::Config(format!(
                "the backfill's end ({}) is not after its start ({})",
                iso(to),
                iso(from)
            )));
        }
        // Event times are epoch ms of years 0 to 9999 (what RFC 3339 and
        // the date partitions can name).
        for (name, t) in [("start", from), ("end", to)] {
            if !crate::event::ts_in_range(t) {
                return Err(Error::Config(format!(
                    "the backfill's {name} ({t} ms) is outside the years 0 to 9999"
                )));
            }
        }
        let from = from.div_euclid(window_ms) * window_ms;
        let to = (to + window_ms - 1).div_euclid(window_ms) * window_ms;
        Ok(Self {
            from,
            to,
            labels_to: to.saturating_add(label_wait_ms),
            window_ms,
        })
    }

    /// Whether a window starting at `start` is one of them.
    pub fn holds(&self, start: i64) -> bool {
        (self.from..self.to).contains(&start)
    }
}

/// An epoch-ms time as RFC 3339.
pub fn iso(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_relative_and_absolute() -> Result<()> {
        let now = 1_764_000_000_000;
        assert_eq!(parse_time("now", now)?, now);
        assert_eq!(parse_time("-1d", now)?, now - 86_400_000);
        assert_eq!(parse_time("-6h 30m", now)?, now - 23_400_000);
        assert_eq!(parse_time("+1m", now)?, now + 60_000);
        assert_eq!(parse_time("2025-11-24", now)?, 1_763_942_400_000);
        assert_eq!(parse_time("2025-11-24T00:01:00Z", now)?, 1_763_942_460_000);
        assert_eq!(parse_time("2025-11-24T00:01", now)?, 1_763_942_460_000);
        assert_eq!(parse_time("1763942460000", now)?, 1_763_942_460_000);
        for bad in ["", "yesterday", "-1 fortnight", "2025-13-01"] {
            let e = parse_time(bad, now).unwrap_err().to_string();
            assert!(e.contains(&format!("`{bad}`")), "{e}");
        }
        Ok(())
    }

    #[test]
    fn covered_windows_are_whole() -> Result<()> {
        let c = Covered::new(90_000, 150_000, 60_000, 5_000)?;
        assert_eq!((c.from, c.to, c.labels_to), (60_000, 180_000, 185_000));
        assert!(c.holds(60_000) && c.holds(120_000) && !c.holds(180_000));
        let c = Covered::new(60_000, 120_000, 60_000, 0)?;
        assert_eq!((c.from, c.to), (60_000, 120_000));
        assert!(Covered::new(5, 5, 60_000, 0).is_err());
        assert!(Covered::new(0, i64::MAX, 60_000, 0).is_err());
        assert!(parse_time("-300000000000d", 0).is_err());
        Ok(())
    }
}
