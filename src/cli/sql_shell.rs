//! The interactive `mlwatch sql` shell. On a terminal it uses rustyline
//! (line editing, a history file, `~/.mlwatch_history`); piped input is
//! read as a script, line by line, without prompts or history.
//!
//! Statements may span lines; SQL's own tokenizer decides where they end (a
//! `;` outside string literals and comments), so several may share a line.
//! Backslash commands act at once:
//!
//! | command | does |
//! |---|---|
//! | `\d` | lists the tables and views (name, kind) |
//! | `\d TABLE` | a table's columns: name, type, nullable |
//! | `\format table\|csv\|json` | switches the output format |
//! | `\q` | quits (so do Ctrl-D, `exit` and the end of a script) |
//!
//! An error is printed and the shell goes on; Ctrl-C cancels the statement
//! being typed or run. A script's last statement runs without its `;`, and
//! a script with a failed statement exits non-zero.

use std::io::{BufRead, IsTerminal};

use clap::ValueEnum;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer, Whitespace};
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

use super::sql::{Format, execute, render};

fn history_file() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".mlwatch_history"))
}

/// Where lines come from.
enum Input {
    Terminal(Box<DefaultEditor>),
    Script(std::io::Lines<std::io::StdinLock<'static>>),
}

impl Input {
    /// The next line; `None` at the end (Ctrl-D); `Some(None)` on Ctrl-C.
    fn line(&mut self, prompt: &str) -> anyhow::Result<Option<Option<String>>> {
        match self {
            Input::Terminal(rl) => match rl.readline(prompt) {
                Ok(l) => Ok(Some(Some(l))),
                Err(ReadlineError::Interrupted) => Ok(Some(None)),
                Err(ReadlineError::Eof) => Ok(None),
                Err(e) => Err(e.into()),
            },
            Input::Script(lines) => Ok(lines.next().transpose()?.map(Some)),
        }
    }

    fn remember(&mut self, entry: &str) {
        if let Input::Terminal(rl) = self {
            let _ = rl.add_history_entry(entry);
            if let Some(h) = history_file() {
                let _ = rl.save_history(&h);
            }
        }
    }
}

/// The statements of `text` if it ends with a `;` outside literals and
/// comments; `None` while it is incomplete (an open string, no `;` yet).
fn complete(text: &str) -> Option<Vec<String>> {
    // Tokens written back as typed: unescaping would turn `'it''s'` into
    // an unterminated `'it's'`.
    let tokens = Tokenizer::new(&GenericDialect {}, text)
        .with_unescape(false)
        .tokenize()
        .ok()?;
    let significant = |t: &&Token| !matches!(t, Token::Whitespace(_));
    if tokens.iter().rev().find(significant) != Some(&Token::SemiColon) {
        return None;
    }
    let mut out = Vec::new();
    let mut current = String::new();
    for t in &tokens {
        match t {
            Token::SemiColon => {
                if !current.trim().is_empty() {
                    out.push(current.trim().to_string());
                }
                current.clear();
            }
            // Comments go: a trailing `-- ...` must not swallow the end.
            Token::Whitespace(Whitespace::SingleLineComment { .. })
            | Token::Whitespace(Whitespace::MultiLineComment(_)) => current.push(' '),
            t => current.push_str(&t.to_string()),
        }
    }
    Some(out)
}

/// Runs the shell on `ctx` until `\q` or the end of input.
pub(super) async fn run(ctx: &SessionContext, url: &str, mut format: Format) -> anyhow::Result<()> {
    let terminal = std::io::stdin().is_terminal();
    let mut input = if terminal {
        let mut rl = DefaultEditor::new()?;
        if let Some(h) = history_file() {
            let _ = rl.load_history(&h);
        }
        eprintln!(
            "mlwatch sql on {url}. Statements end with `;`. \\d lists the tables, \\d TABLE shows \
             one's columns, \\format table|csv|json, \\q quits."
        );
        Input::Terminal(Box::new(rl))
    } else {
        Input::Script(std::io::stdin().lock().lines())
    };
    let mut pending = String::new();
    let mut failed = 0usize;
    loop {
        let prompt = if pending.is_empty() {
            "mlwatch> "
        } else {
            "     ..> "
        };
        let line = match input.line(prompt)? {
            None => break,
            Some(None) => {
                pending.clear();
                continue;
            }
            Some(Some(l)) => l,
        };
        let trimmed = line.trim();
        if pending.is_empty() {
            if trimmed.is_empty() {
                continue;
            }
            if matches!(trimmed, "\\q" | "exit" | "quit") {
                input.remember(trimmed);
                break;
            }
            if let Some(cmd) = trimmed.strip_prefix('\\') {
                input.remember(trimmed);
                match command(ctx, cmd, &mut format).await {
                    Ok(out) => super::print_out(&out)?,
                    Err(e) => {
                        failed += 1;
                        eprintln!("error: {e}");
                    }
                }
                continue;
            }
        }
        pending.push_str(&line);
        pending.push('\n');
        if let Some(statements) = complete(&pending) {
            input.remember(pending.trim());
            pending.clear();
            for s in statements {
                failed += usize::from(!run_one(ctx, &s, format).await?);
            }
        }
    }
    // A script's last statement may lack its `;`.
    if !pending.trim().is_empty() {
        let text = format!("{};", pending.trim());
        for s in complete(&text).unwrap_or_else(|| vec![pending.trim().to_string()]) {
            failed += usize::from(!run_one(ctx, &s, format).await?);
        }
    }
    if !terminal && failed > 0 {
        anyhow::bail!("{failed} statement(s) or command(s) failed");
    }
    Ok(())
}

/// Runs one statement and prints its result or error; Ctrl-C cancels it.
/// Whether it succeeded.
async fn run_one(ctx: &SessionContext, sql: &str, format: Format) -> anyhow::Result<bool> {
    let result = tokio::select! {
        r = execute(ctx, sql, None) => r.and_then(|b| render(&b, format)),
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("cancelled")),
    };
    match result {
        Ok(text) => {
            super::print_out(&text)?;
            Ok(true)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(false)
        }
    }
}

/// A backslash command (without its `\`).
async fn command(ctx: &SessionContext, cmd: &str, format: &mut Format) -> anyhow::Result<String> {
    let mut words = cmd.split_whitespace();
    match (words.next(), words.next()) {
        (Some("d"), None) => {
            let b = execute(
                ctx,
                "SELECT table_name AS name, lower(table_type) AS kind FROM information_schema.tables \
                 WHERE table_schema = 'public' ORDER BY table_name",
                None,
            )
            .await?;
            render(&b, Format::Table)
        }
        (Some("d"), Some(table)) => {
            let df = ctx
                .table(table)
                .await
                .map_err(|_| anyhow::anyhow!("no table `{table}` (\\d lists them)"))?;
            let rows: Vec<Vec<String>> = std::iter::once(vec![
                "column".to_string(),
                "type".to_string(),
                "nullable".to_string(),
            ])
            .chain(df.schema().fields().iter().map(|f| {
                vec![
                    f.name().clone(),
                    f.data_type().to_string(),
                    f.is_nullable().to_string(),
                ]
            }))
            .collect();
            Ok(super::align(rows))
        }
        (Some("format"), Some(name)) => {
            let f = Format::from_str(name, true)
                .ok()
                .filter(|f| !matches!(f, Format::Parquet))
                .ok_or_else(|| anyhow::anyhow!("\\format {name}: use table, csv or json"))?;
            *format = f;
            Ok(format!("output: {name}\n"))
        }
        _ => anyhow::bail!("unknown command `\\{cmd}` (\\d, \\d TABLE, \\format FORMAT, \\q)"),
    }
}

#[cfg(test)]
mod tests {
    use super::complete;

    #[test]
    fn statements_end_at_a_semicolon_outside_strings_and_comments() {
        assert_eq!(complete("SELECT 1"), None);
        assert_eq!(complete("SELECT 'a;\n"), None, "open string");
        assert_eq!(complete("SELECT 'a;\nb';").unwrap(), ["SELECT 'a;\nb'"]);
        assert_eq!(
            complete("SELECT 1; SELECT 2;").unwrap(),
            ["SELECT 1", "SELECT 2"]
        );
        assert_eq!(complete("SELECT 1; -- note\n").unwrap(), ["SELECT 1"]);
        assert_eq!(complete("SELECT 1 -- ;\n"), None, "a ; in a comment");
        // Doubled quotes stay doubled.
        assert_eq!(
            complete("SELECT 'driver''s', \"a\"\"b\";").unwrap(),
            ["SELECT 'driver''s', \"a\"\"b\""]
        );
    }
}
