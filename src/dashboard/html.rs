//! Page layout and HTML pieces: escaping, tables, the navigation bar, and
//! links that point at server routes or, in the report file, at sections.

use std::fmt::Write as _;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::error::Result;

pub(crate) use crate::ab::report::esc;

/// Where links of a page point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Links {
    /// Routes of `mlwatch serve`.
    Server,
    /// Sections of one report file.
    Report,
}

/// Percent-encodes a query value (`application/x-www-form-urlencoded`).
pub(crate) fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Percent-encodes a path segment: everything but ASCII letters, digits,
/// `-` and `_` (a space is `%20`, which axum's `Path` decodes; `+` is not).
pub(crate) fn seg(s: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_');
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

impl Links {
    /// The page (or section) of model `m`.
    pub(crate) fn model(self, m: &str) -> String {
        match self {
            Links::Server => format!("/models/{}", seg(m)),
            Links::Report => format!("#model-{}", enc(m)),
        }
    }

    /// The page (or section) of experiment `e`.
    pub(crate) fn experiment(self, e: &str) -> String {
        match self {
            Links::Server => format!("/experiments/{}", seg(e)),
            Links::Report => format!("#experiment-{}", enc(e)),
        }
    }

    /// The page of run `id` (in a report: the runs section).
    pub(crate) fn run(self, id: &str) -> String {
        match self {
            Links::Server => format!("/runs/{}", seg(id)),
            Links::Report => "#runs".into(),
        }
    }

    /// A top-level page: `registry`, `runs` or the overview (`""`).
    pub(crate) fn page(self, name: &str) -> String {
        match (self, name) {
            (Links::Server, "") => "/".into(),
            (Links::Server, n) => format!("/{n}"),
            (Links::Report, "") => "#overview".into(),
            (Links::Report, n) => format!("#{n}"),
        }
    }
}

/// A page: its title and body (without the layout).
#[derive(Debug, Clone)]
pub(crate) struct Page {
    /// Title (also the first heading).
    pub title: String,
    /// HTML of the content.
    pub body: String,
}

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#222}\
main{padding:1em 2em;max-width:1100px}nav{background:#1f3b57;padding:.6em 2em}\
nav a{color:#fff;margin-right:1.5em;text-decoration:none;font-weight:600}\
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd}\
table{border-collapse:collapse;font-size:13px;margin:.5em 0;display:block;max-width:100%;overflow-x:auto}\
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}th{background:#f3f3f3}\
td.n{text-align:right}td.l{text-align:left}.verdict{font-size:1.3em;font-weight:bold}\
.ship{color:#1a7f37}.invalid,.stop,.bad{color:#b42318}.keep_control,.keep_running,.muted{color:#666}\
figure{margin:.6em 0}figure svg{max-width:100%;height:auto}\
.error{border-left:4px solid #b42318;padding:.5em 1em;background:#fdf0ef}\
form input[type=text]{width:40em}section{margin-bottom:3em}";

/// The whole document of `title` with `content` (nav bar, inline CSS; no
/// scripts and nothing fetched, so it renders offline).
pub(crate) fn document(title: &str, content: &str, links: Links) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><link rel=\"icon\" href=\"data:,\">\
         <title>{} · mlwatch</title><style>{CSS}</style></head><body><nav>\
         <a href=\"{}\">mlwatch</a><a href=\"{}\">Registry</a><a href=\"{}\">Runs</a></nav><main>{content}</main></body></html>",
        esc(title),
        links.page(""),
        links.page("registry"),
        links.page("runs"),
    );
    s
}

/// A figure wrapping one chart's SVG, named for tests and readers.
pub(crate) fn figure(name: &str, svg: &str) -> String {
    format!(
        "<figure class=\"chart\" data-chart=\"{}\">{svg}</figure>",
        esc(name)
    )
}

/// A table with a header row; cells are HTML already.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = String::from("<table><tr>");
    for h in header {
        let _ = write!(s, "<th>{}</th>", esc(h));
    }
    s.push_str("</tr>");
    for r in rows {
        s.push_str("<tr>");
        for c in r {
            let _ = write!(s, "<td>{c}</td>");
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
    if rows.is_empty() {
        s.push_str("<p class=\"muted\">(none)</p>");
    }
    s
}

/// A column whose cells become links: its name and the target of a value.
pub(crate) type LinkColumn<'a> = (&'a str, &'a dyn Fn(&str) -> String);

/// Record batches as a table; `link` turns a cell of the named column into
/// a link (the run id of a run list).
pub(crate) fn batches(batches: &[RecordBatch], link: Option<LinkColumn<'_>>) -> Result<String> {
    let Some(first) = batches.first() else {
        return Ok(table(&[], &[]));
    };
    let schema = first.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let opts = FormatOptions::default().with_null("");
    let mut rows = Vec::new();
    for b in batches {
        let fmts = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        for i in 0..b.num_rows() {
            rows.push(
                fmts.iter()
                    .zip(&names)
                    .map(|(f, n)| {
                        let v = f.value(i).to_string();
                        match link {
                            Some((col, to)) if col == *n && !v.is_empty() => {
                                format!("<a href=\"{}\">{}</a>", esc(&to(&v)), esc(&v))
                            }
                            _ => esc(&v),
                        }
                    })
                    .collect(),
            );
        }
    }
    Ok(table(&names, &rows))
}

pub(crate) use crate::tracking::plot::{short_time, time_labels};

#[cfg(test)]
mod tests {
    #[test]
    fn links_encode_path_segments_and_labels_show_dates_across_days() {
        assert_eq!(super::seg("credit risk/v1.2"), "credit%20risk%2Fv1%2E2");
        assert_eq!(super::Links::Server.model("a+b"), "/models/a%2Bb");
        let one = ["2026-01-01T00:05:00Z", "2026-01-01T00:06:00Z"];
        assert_eq!(super::time_labels(&one), ["00:05", "00:06"]);
        let two = ["2026-01-01T23:59:00Z", "2026-01-02T00:00:00Z"];
        assert_eq!(super::time_labels(&two), ["01-01 23:59", "01-02 00:00"]);
    }
}
