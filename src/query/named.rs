//! The named queries mlwatch ships in `sql/` (compiled into the binary, so
//! `mlwatch sql --query NAME` works from any folder), and their parameters.
//!
//! A query's leading `--` comment lines describe it; `$name` placeholders
//! are its parameters, given as `--param name=value` and bound by
//! DataFusion (a value that parses as an integer or a float is bound as
//! one, anything else as text). The per-window drift queries
//! (`window_drift*.sql`) are run by the pipeline, not listed here.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use datafusion::common::{ParamValues, ScalarValue};
use serde::Serialize;

use crate::error::{Error, Result};

/// The shipped queries: name and text.
const SHIPPED: [(&str, &str); 4] = [
    ("ab_by_version", include_str!("../../sql/ab_by_version.sql")),
    (
        "drift_by_window",
        include_str!("../../sql/drift_by_window.sql"),
    ),
    ("model_health", include_str!("../../sql/model_health.sql")),
    (
        "performance_by_window",
        include_str!("../../sql/performance_by_window.sql"),
    ),
];

/// A shipped query.
#[derive(Debug, Clone, Serialize)]
pub struct NamedQuery {
    /// Its name (the file name without `.sql`).
    pub name: &'static str,
    /// Its leading comment, as one paragraph.
    pub description: String,
    /// The `$name` parameters it takes, sorted.
    pub params: Vec<String>,
    /// The SQL.
    #[serde(skip)]
    pub sql: &'static str,
}

/// Every shipped query, by name.
pub fn shipped() -> Vec<NamedQuery> {
    SHIPPED
        .iter()
        .map(|(name, sql)| NamedQuery {
            name,
            description: sql
                .lines()
                .take_while(|l| l.starts_with("--"))
                .map(|l| l.trim_start_matches('-').trim())
                .collect::<Vec<_>>()
                .join(" "),
            params: placeholders(sql).into_iter().collect(),
            sql,
        })
        .collect()
}

/// The shipped query `name`; an unknown name is an error listing them.
pub fn find(name: &str) -> Result<NamedQuery> {
    let all = shipped();
    let names: Vec<&str> = all.iter().map(|q| q.name).collect();
    all.iter().find(|q| q.name == name).cloned().ok_or_else(|| {
        Error::Config(format!(
            "--query {name}: no such query (shipped: {})",
            names.join(", ")
        ))
    })
}

/// The `$name` placeholders of `sql` outside comments and string literals.
fn placeholders(sql: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in sql.lines() {
        let code = line.split("--").next().unwrap_or("");
        let mut in_str = false;
        let chars: Vec<char> = code.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '\'' => in_str = !in_str,
                '$' if !in_str => {
                    let name: String = chars[i + 1..]
                        .iter()
                        .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
                        .collect();
                    if name.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
                        i += name.len();
                        out.insert(name);
                    }
                }
                _ => {}
            }
            i += 1;
        }
    }
    out
}

/// The values of `query`'s parameters from `key=value` pairs: every
/// parameter must be given, and nothing else.
pub fn bind(query: &NamedQuery, pairs: &[String]) -> Result<Option<ParamValues>> {
    let mut given: BTreeMap<String, String> = BTreeMap::new();
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| Error::Config(format!("--param {p}: expected key=value")))?;
        given.insert(k.trim().to_string(), v.to_string());
    }
    if let Some(extra) = given.keys().find(|k| !query.params.contains(k)) {
        return Err(Error::Config(format!(
            "--param {extra}: query `{}` takes {}",
            query.name,
            if query.params.is_empty() {
                "no parameters".to_string()
            } else {
                query.params.join(", ")
            }
        )));
    }
    if let Some(missing) = query.params.iter().find(|p| !given.contains_key(*p)) {
        return Err(Error::Config(format!(
            "query `{}` needs --param {missing}=VALUE",
            query.name
        )));
    }
    if given.is_empty() {
        return Ok(None);
    }
    let map: HashMap<String, ScalarValue> = given
        .into_iter()
        .map(|(k, v)| {
            let value = if let Ok(i) = v.parse::<i64>() {
                ScalarValue::Int64(Some(i))
            } else if let Ok(f) = v
                .parse::<f64>()
                .map_err(drop)
                .and_then(|f| if f.is_finite() { Ok(f) } else { Err(()) })
            {
                ScalarValue::Float64(Some(f))
            } else {
                ScalarValue::Utf8(Some(v))
            };
            (k, value)
        })
        .collect();
    Ok(Some(ParamValues::from(map)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_queries_describe_themselves_and_name_their_parameters() {
        let all = shipped();
        let health = all.iter().find(|q| q.name == "model_health").unwrap();
        assert_eq!(health.params, ["model"]);
        assert!(health.description.starts_with("One model's health"));
        assert!(all.iter().all(|q| !q.description.is_empty()));
        assert!(placeholders("SELECT '$x', $y -- $z\n").contains("y"));
        assert_eq!(placeholders("SELECT '$x', $1 -- $z").len(), 0);
        let e = find("nope").unwrap_err().to_string();
        assert!(e.contains("model_health"), "{e}");
        assert!(
            bind(health, &[])
                .unwrap_err()
                .to_string()
                .contains("--param model")
        );
        let e = bind(health, &["model=a".into(), "x=1".into()]).unwrap_err();
        assert!(e.to_string().contains("--param x"), "{e}");
        assert!(bind(health, &["model=a".into()]).unwrap().is_some());
    }
}
