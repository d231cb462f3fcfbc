//! MLflow-style run filters, translated to DataFusion SQL over the tracking
//! views, so `mlwatch sql` can answer the same question directly.
//!
//! ```text
//! metrics.accuracy > 0.9 and (params.model = 'xgb' or tags.team = "risk")
//!     order by metrics.accuracy desc, start_time
//! ```
//!
//! Operands: `metrics.KEY` (the value at the run's largest step), `params.KEY`,
//! `tags.KEY`, and run attributes (`run_id`, `run_name`, `experiment`,
//! `status`, `start_time`, `end_time`, `user`, `git_commit`, `git_branch`,
//! optionally written `attributes.NAME`; MLflow's singular prefixes
//! `metric.`, `param.`, `tag.`, `attr.` too). Keys with other characters go
//! in backticks or double quotes: ``metrics.`val loss` ``,
//! `metrics."val loss"`. Operators: `=`, `!=`, `<>`, `<`, `<=`, `>`, `>=`,
//! `like`, `ilike`, `in (...)`, `not in (...)`; `and`, `or`, `not` and
//! parentheses. A param or
//! tag compared with a number is cast to a number (`try_cast`). Each
//! metric/param/tag named becomes one left join, so the query stays a few
//! hash joins however many runs there are.

use std::collections::BTreeMap;

use super::TrackingError;

const ATTRIBUTES: &[&str] = &[
    "run_id",
    "run_name",
    "experiment",
    "status",
    "start_time",
    "end_time",
    "user",
    "git_commit",
    "git_branch",
];

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(String),
    Op(String),
    LParen,
    RParen,
    Comma,
}

fn err(filter: &str, reason: impl Into<String>) -> TrackingError {
    TrackingError::Filter {
        filter: filter.to_string(),
        reason: reason.into(),
    }
}

fn lex(src: &str) -> Result<Vec<Tok>, TrackingError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1
            }
            '\'' | '"' => {
                let q = c;
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(err(src, format!("unterminated string at {i}"))),
                        Some(ch) if *ch == q && chars.get(i + 1) == Some(&q) => {
                            s.push(q);
                            i += 2;
                        }
                        Some(ch) if *ch == q => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            s.push(*ch);
                            i += 1
                        }
                    }
                }
                out.push(Tok::Str(s));
            }
            '=' | '!' | '<' | '>' => {
                let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
                let op = if ["!=", "<=", ">=", "<>"].contains(&two.as_str()) {
                    two
                } else if c == '!' {
                    return Err(err(src, format!("unexpected `!` at {i}")));
                } else {
                    c.to_string()
                };
                i += op.len();
                out.push(Tok::Op(op));
            }
            c if c.is_ascii_digit() || c == '-' || c == '.' => {
                let start = i;
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '.' | '-' | '+'))
                {
                    i += 1;
                }
                let n: String = chars[start..i].iter().collect();
                if !n.parse::<f64>().is_ok_and(f64::is_finite) {
                    return Err(err(src, format!("`{n}` is not a finite number")));
                }
                out.push(Tok::Num(n));
            }
            c if c.is_alphabetic() || c == '_' || c == '`' => {
                let mut s = String::new();
                while i < chars.len() {
                    let ch = chars[i];
                    // A key in backticks, or in double quotes after its
                    // prefix (`metrics."val loss"`), as MLflow takes it.
                    if ch == '`' || (ch == '"' && s.ends_with('.')) {
                        let end = chars[i + 1..]
                            .iter()
                            .position(|x| *x == ch)
                            .ok_or_else(|| err(src, format!("unterminated {ch}")))?;
                        s.extend(&chars[i + 1..i + 1 + end]);
                        i += end + 2;
                    } else if ch.is_alphanumeric() || ch == '_' || ch == '.' {
                        s.push(ch);
                        i += 1;
                    } else {
                        break;
                    }
                }
                out.push(Tok::Ident(s));
            }
            other => return Err(err(src, format!("unexpected `{other}` at {i}"))),
        }
    }
    Ok(out)
}

/// A translated filter: the SQL and the joins it needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    /// The full query returning the matching runs.
    pub sql: String,
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<Tok>,
    pos: usize,
    /// (kind, key) -> join alias.
    joins: BTreeMap<(String, String), String>,
    /// `not` and parentheses open around the current position.
    depth: usize,
}

/// `terms` joined by `op` in one pair of parentheses (a single term as is).
fn flat(mut terms: Vec<String>, op: &str) -> String {
    if terms.len() == 1 {
        terms.remove(0)
    } else {
        format!("({})", terms.join(&format!(" {op} ")))
    }
}

/// Most distinct metrics, params and tags one filter may name (one join
/// each).
const MAX_KEYS: usize = 32;

/// Deepest nesting of `not` and parentheses a filter may have (the parser
/// recurses once per level).
const MAX_DEPTH: usize = 64;
/// Longest filter accepted, in bytes.
const MAX_LEN: usize = 10_000;

/// A SQL string literal.
pub(crate) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s.eq_ignore_ascii_case(kw))
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn or(&mut self) -> Result<String, TrackingError> {
        // Flat `(a OR b OR c)`, not nested pairs: DataFusion's SQL parser
        // has a recursion limit that nested pairs reach at about 45 terms.
        let mut terms = vec![self.and()?];
        while self.keyword("or") {
            self.pos += 1;
            terms.push(self.and()?);
        }
        Ok(flat(terms, "OR"))
    }

    fn and(&mut self) -> Result<String, TrackingError> {
        let mut terms = vec![self.not()?];
        while self.keyword("and") {
            self.pos += 1;
            terms.push(self.not()?);
        }
        Ok(flat(terms, "AND"))
    }

    fn not(&mut self) -> Result<String, TrackingError> {
        let nested = self.keyword("not") || self.peek() == Some(&Tok::LParen);
        if !nested {
            return self.comparison();
        }
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(err(
                self.src,
                format!("more than {MAX_DEPTH} levels of `not` and parentheses"),
            ));
        }
        let e = if self.keyword("not") {
            self.pos += 1;
            format!("(NOT {})", self.not()?)
        } else {
            self.pos += 1;
            let e = self.or()?;
            if self.next() != Some(Tok::RParen) {
                return Err(err(self.src, "missing `)`"));
            }
            e
        };
        self.depth -= 1;
        Ok(e)
    }

    /// The SQL expression of an operand, and whether it is numeric.
    fn operand(&mut self, name: &str) -> Result<(String, &'static str), TrackingError> {
        // MLflow's prefixes, singular and plural.
        let prefix = |p: &str| match p.to_ascii_lowercase().as_str() {
            "metrics" | "metric" => Some("metrics"),
            "params" | "param" | "parameters" | "parameter" => Some("params"),
            "tags" | "tag" => Some("tags"),
            "attributes" | "attribute" | "attr" | "run" => Some("attributes"),
            _ => None,
        };
        let (kind, key) = match name.split_once('.') {
            Some((k, rest)) if prefix(k).is_some() => (prefix(k).unwrap_or("attributes"), rest),
            _ => ("attributes", name),
        };
        if key.is_empty() {
            return Err(err(self.src, format!("`{name}` names no key")));
        }
        if kind == "attributes" {
            if !ATTRIBUTES.contains(&key) {
                return Err(err(
                    self.src,
                    format!(
                        "unknown attribute `{key}` (use metrics.KEY, params.KEY, tags.KEY or one of {})",
                        ATTRIBUTES.join(", ")
                    ),
                ));
            }
            return Ok((format!("r.{key}"), "attribute"));
        }
        let n = self.joins.len();
        if n >= MAX_KEYS
            && !self
                .joins
                .contains_key(&(kind.to_string(), key.to_string()))
        {
            return Err(err(
                self.src,
                format!("more than {MAX_KEYS} distinct metrics, params and tags"),
            ));
        }
        let alias = self
            .joins
            .entry((kind.to_string(), key.to_string()))
            .or_insert_with(|| format!("j{n}"))
            .clone();
        Ok((
            format!("{alias}.value"),
            if kind == "metrics" { "metric" } else { "text" },
        ))
    }

    fn comparison(&mut self) -> Result<String, TrackingError> {
        let Some(Tok::Ident(name)) = self.next() else {
            return Err(err(self.src, "expected a metric, param, tag or attribute"));
        };
        let (lhs, kind) = self.operand(&name)?;
        // `[not] in (v, ...)`.
        let negated = self.keyword("not");
        if negated {
            self.pos += 1;
        }
        if self.keyword("in") {
            self.pos += 1;
            return self.list(&name, &lhs, kind, negated);
        }
        if negated {
            return Err(err(self.src, format!("expected `in` after `{name} not`")));
        }
        let op = match self.next() {
            Some(Tok::Op(o)) => o,
            Some(Tok::Ident(w))
                if w.eq_ignore_ascii_case("like") || w.eq_ignore_ascii_case("ilike") =>
            {
                w.to_uppercase()
            }
            _ => {
                return Err(err(
                    self.src,
                    format!("expected an operator after `{name}`"),
                ));
            }
        };
        let op = if op == "<>" { "!=".to_string() } else { op };
        match self.next() {
            Some(Tok::Num(n)) => {
                if op == "LIKE" || op == "ILIKE" {
                    return Err(err(
                        self.src,
                        format!("`{name} {op}` takes a quoted pattern, not a number"),
                    ));
                }
                match kind {
                    "text" => Ok(format!("try_cast({lhs} AS DOUBLE) {op} {n}")),
                    // Times against a number: milliseconds since the epoch,
                    // as MLflow's `attributes.start_time > 1700000000000`.
                    "attribute" if lhs.ends_with("_time") => Ok(format!(
                        "{lhs} {op} to_timestamp_millis(CAST({n} AS BIGINT))"
                    )),
                    "attribute" => Err(err(
                        self.src,
                        format!("`{name}` is text; compare it with a quoted string"),
                    )),
                    _ => Ok(format!("{lhs} {op} {n}")),
                }
            }
            Some(Tok::Str(s)) => {
                if kind == "metric" {
                    return Err(err(
                        self.src,
                        format!("`{name}` is a number; compare it with a number"),
                    ));
                }
                let lhs = if lhs.ends_with("_time") {
                    format!("CAST({lhs} AS VARCHAR)")
                } else {
                    lhs
                };
                Ok(format!("{lhs} {op} {}", quote(&s)))
            }
            _ => Err(err(
                self.src,
                format!("expected a number or a quoted string after `{name} {op}`"),
            )),
        }
    }

    /// The rest of `name [not] in (v, ...)`: quoted strings for params,
    /// tags and attributes, numbers for metrics.
    fn list(
        &mut self,
        name: &str,
        lhs: &str,
        kind: &str,
        negated: bool,
    ) -> Result<String, TrackingError> {
        if self.next() != Some(Tok::LParen) {
            return Err(err(self.src, format!("expected `(` after `{name} in`")));
        }
        let mut items = Vec::new();
        loop {
            match (self.next(), kind) {
                (Some(Tok::Num(n)), "metric") => items.push(n),
                (Some(Tok::Str(s)), k) if k != "metric" => items.push(quote(&s)),
                _ => {
                    return Err(err(
                        self.src,
                        format!(
                            "`{name} in (...)` takes {}",
                            if kind == "metric" {
                                "numbers"
                            } else {
                                "quoted strings"
                            }
                        ),
                    ));
                }
            }
            match self.next() {
                Some(Tok::Comma) => continue,
                Some(Tok::RParen) => break,
                _ => {
                    return Err(err(
                        self.src,
                        format!("expected `,` or `)` in `{name} in (...)`"),
                    ));
                }
            }
        }
        let lhs = if lhs.ends_with("_time") {
            format!("CAST({lhs} AS VARCHAR)")
        } else {
            lhs.to_string()
        };
        let not = if negated { "NOT " } else { "" };
        Ok(format!("{lhs} {not}IN ({})", items.join(", ")))
    }

    fn order_by(&mut self) -> Result<Vec<String>, TrackingError> {
        let mut out = Vec::new();
        loop {
            let Some(Tok::Ident(name)) = self.next() else {
                return Err(err(self.src, "expected a column after `order by`"));
            };
            let (e, _) = self.operand(&name)?;
            let mut dir = "ASC";
            if (self.keyword("desc") || self.keyword("asc"))
                && let Some(Tok::Ident(d)) = self.next()
            {
                dir = if d.eq_ignore_ascii_case("desc") {
                    "DESC"
                } else {
                    "ASC"
                };
            }
            out.push(format!("{e} {dir} NULLS LAST"));
            if self.peek() == Some(&Tok::Comma) {
                self.pos += 1;
                continue;
            }
            return Ok(out);
        }
    }
}

/// Translates a filter (possibly empty, possibly ending in `order by ...`)
/// into a query over `runs` returning `run_id, experiment, run_name,
/// status, start_time, end_time` plus one column per metric, param or tag
/// the filter names. `experiment` restricts to one experiment.
pub fn translate(filter: &str, experiment: Option<&str>) -> Result<Translated, TrackingError> {
    if filter.len() > MAX_LEN {
        return Err(err(
            &filter[..filter.floor_char_boundary(80)],
            format!("the filter is longer than {MAX_LEN} bytes"),
        ));
    }
    let toks = lex(filter)?;
    let mut p = Parser {
        src: filter,
        toks,
        pos: 0,
        joins: BTreeMap::new(),
        depth: 0,
    };
    let mut conditions = Vec::new();
    if let Some(e) = experiment {
        conditions.push(format!("r.experiment = {}", quote(e)));
    }
    let starts_with_order = p.keyword("order");
    if !p.toks.is_empty() && !starts_with_order {
        conditions.push(p.or()?);
    }
    let mut order = vec!["r.start_time DESC".to_string()];
    if p.keyword("order") {
        p.pos += 1;
        if !p.keyword("by") {
            return Err(err(filter, "expected `by` after `order`"));
        }
        p.pos += 1;
        order = p.order_by()?;
        order.push("r.start_time DESC".into());
    }
    if let Some(t) = p.peek() {
        return Err(err(filter, format!("unexpected {t:?} after the filter")));
    }
    let mut select = vec![
        "r.run_id".to_string(),
        "r.experiment".into(),
        "r.run_name".into(),
        "r.status".into(),
        "r.start_time".into(),
        "r.end_time".into(),
    ];
    let mut joins = String::new();
    for ((kind, key), alias) in &p.joins {
        // Filter on the key first, then reduce: for metrics the value at the
        // largest step (as `latest_metrics`: then the latest timestamp, then
        // the largest value, as MLflow breaks ties), over one key's points only.
        let source = match kind.as_str() {
            "metrics" => format!(
                "SELECT run_id, last_value(value ORDER BY step, timestamp, value) AS value \
                 FROM metrics WHERE key = {} GROUP BY run_id",
                quote(key)
            ),
            "params" => format!(
                "SELECT run_id, value FROM params WHERE key = {}",
                quote(key)
            ),
            _ => format!("SELECT run_id, value FROM tags WHERE key = {}", quote(key)),
        };
        joins.push_str(&format!(
            " LEFT JOIN ({source}) {alias} ON {alias}.run_id = r.run_id"
        ));
        select.push(format!(
            "{alias}.value AS \"{kind}.{}\"",
            key.replace('"', "\"\"")
        ));
    }
    let where_clause = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    Ok(Translated {
        sql: format!(
            "SELECT {} FROM runs r{joins}{where_clause} ORDER BY {}",
            select.join(", "),
            order.join(", ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_filters_are_refused_with_a_reason() {
        for (filter, reason) in [
            ("metrics.a > -inf", "not a finite number"),
            ("metrics.a > nan", "expected a number"),
            ("metrics.a like 5", "quoted pattern"),
            ("start_time like 5", "quoted pattern"),
            ("run_name = 5", "is text"),
            ("status > 1.5", "is text"),
        ] {
            let e = translate(filter, None).unwrap_err().to_string();
            assert!(e.contains(reason), "{filter}: {e}");
        }
        let deep = format!("{}metrics.a > 1", "not ".repeat(100));
        assert!(
            translate(&deep, None)
                .unwrap_err()
                .to_string()
                .contains("levels")
        );
        let deep = format!("{}metrics.a > 1{}", "(".repeat(65), ")".repeat(65));
        assert!(
            translate(&deep, None)
                .unwrap_err()
                .to_string()
                .contains("levels")
        );
        let ok = format!("{}metrics.a > 1{}", "(".repeat(64), ")".repeat(64));
        assert!(translate(&ok, None).is_ok());
        let keys: String = (0..33).map(|i| format!(" and metrics.k{i} > 1")).collect();
        let e = translate(&format!("metrics.a > 1{keys}"), None).unwrap_err();
        assert!(e.to_string().contains("distinct"), "{e}");
        let long = format!("metrics.a > 1{}", " or metrics.a > 1".repeat(1000));
        assert!(
            translate(&long, None)
                .unwrap_err()
                .to_string()
                .contains("longer")
        );
    }

    #[test]
    fn translates_and_rejects() {
        let t = translate(
            "metrics.accuracy > 0.9 and (params.model = 'xgb' or tags.team = \"risk\") order by metrics.accuracy desc",
            None,
        )
        .unwrap();
        assert!(
            t.sql.contains(
                "WHERE (j0.value > 0.9 AND (j1.value = 'xgb' OR j2.value = 'risk')) \
                 ORDER BY j0.value DESC NULLS LAST, r.start_time DESC"
            ),
            "{}",
            t.sql
        );
        assert!(
            t.sql.contains("ORDER BY j0.value DESC NULLS LAST"),
            "{}",
            t.sql
        );
        assert!(
            t.sql
                .contains("FROM metrics WHERE key = 'accuracy' GROUP BY run_id")
        );
        let t = translate("params.lr >= 0.01 and status = 'FINISHED'", Some("exp'1")).unwrap();
        assert!(
            t.sql.contains("try_cast(j0.value AS DOUBLE) >= 0.01"),
            "{}",
            t.sql
        );
        assert!(t.sql.contains("r.experiment = 'exp''1'"), "{}", t.sql);
        assert!(
            translate("", None)
                .unwrap()
                .sql
                .ends_with("ORDER BY r.start_time DESC")
        );
        assert!(
            translate("metrics.`val loss` < 1", None)
                .unwrap()
                .sql
                .contains("'val loss'")
        );
        // MLflow's other spellings: double-quoted keys, singular prefixes,
        // `in` and `not in`.
        let t = translate(
            "metric.\"val loss\" < 1 and param.\"model-type\" = 'x' and attr.run_id in ('a', 'b') \
             and tags.team not in ('risk') and metrics.epochs in (1, 2.5)",
            None,
        )
        .unwrap();
        for part in [
            "j0.value < 1",
            "key = 'val loss'",
            "j1.value = 'x'",
            "key = 'model-type'",
            "r.run_id IN ('a', 'b')",
            "j2.value NOT IN ('risk')",
            "j3.value IN (1, 2.5)",
        ] {
            assert!(t.sql.contains(part), "{part}: {}", t.sql);
        }
        for (bad, why) in [
            ("metrics.a in ('x')", "takes numbers"),
            ("params.a in (1)", "takes quoted strings"),
            ("params.a in 'x'", "expected `(`"),
            ("params.a in ('x' 'y')", "expected `,` or `)`"),
            ("params.a not = 'x'", "expected `in`"),
        ] {
            let e = translate(bad, None).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        for bad in [
            "metrics.accuracy >",
            "metrics.accuracy > 'high'",
            "colour = 'red'",
            "(metrics.a > 1",
            "metrics.a > 1 extra",
            "params.x = 'unterminated",
            "metrics.a ! 1",
        ] {
            let e = translate(bad, None).unwrap_err().to_string();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }
}
