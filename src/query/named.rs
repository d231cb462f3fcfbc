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
const SHIPPED: [(&str, &str); 5] = [
    ("ab_by_version", include_str!("../../sql/ab_by_version.sql")),
    (
        "drift_by_training_run",
        include_str!("../../sql/drift_by_training_run.sql"),
    ),
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

/// The `$name` placeholders of `sql` (SQL's own tokenizer: none inside
/// string literals or comments; `$1` positional ones are not parameters).
fn placeholders(sql: &str) -> BTreeSet<String> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|t| match t {
            Token::Placeholder(p) => p
                .strip_prefix('$')
                .filter(|n| n.chars().next().is_some_and(char::is_alphabetic))
                .map(str::to_string),
            _ => None,
        })
        .collect()
}

/// The values of `query`'s parameters from `key=value` pairs: every
/// parameter given once, and nothing else. Typed when the plan is known
/// ([`typed`]).
pub fn bind(query: &NamedQuery, pairs: &[String]) -> Result<BTreeMap<String, String>> {
    let mut given: BTreeMap<String, String> = BTreeMap::new();
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| Error::Config(format!("--param {p}: expected key=value")))?;
        if given.insert(k.trim().to_string(), v.to_string()).is_some() {
            return Err(Error::Config(format!("--param {}: given twice", k.trim())));
        }
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
    Ok(given)
}

/// The values of `given` as the types the plan infers for their
/// placeholders (a model name `2024` compared with the text column stays
/// text); a placeholder without an inferred type is text. A value that
/// does not convert is an error naming the parameter.
pub fn typed(
    plan: &datafusion::logical_expr::LogicalPlan,
    given: &BTreeMap<String, String>,
) -> Result<ParamValues> {
    let types = plan.get_parameter_types()?;
    let mut map: HashMap<String, ScalarValue> = HashMap::new();
    for (k, v) in given {
        let value = match types.get(&format!("${k}")).cloned().flatten() {
            Some(dt) => ScalarValue::try_from_string(v.clone(), &dt)
                .map_err(|e| Error::Config(format!("--param {k}={v}: not a {dt}: {e}")))?,
            None => ScalarValue::Utf8(Some(v.clone())),
        };
        map.insert(k.clone(), value);
    }
    Ok(ParamValues::from(map))
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
        assert_eq!(
            placeholders("SELECT 'a--b', $x, /* $c */ $x::text")
                .into_iter()
                .collect::<Vec<_>>(),
            ["x"]
        );
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
        assert_eq!(bind(health, &["model=a".into()]).unwrap()["model"], "a");
        let e = bind(health, &["model=a".into(), "model=b".into()]).unwrap_err();
        assert!(e.to_string().contains("given twice"), "{e}");
    }
}
