//! The interactive `mlwatch sql` shell (rustyline: line editing and a
//! history file, `~/.mlwatch_history`). Statements may span lines and end
//! with `;`; backslash commands act at once:
//!
//! | command | does |
//! |---|---|
//! | `\d` | lists the tables and views (name, kind) |
//! | `\d TABLE` | a table's columns: name, type, nullable |
//! | `\format table\|csv\|json` | switches the output format |
//! | `\q` | quits (so do Ctrl-D and `exit`) |
//!
//! An error is printed and the shell goes on. Without a terminal (input
//! piped in) it reads the lines as they come and prints no prompts' echo,
//! so a script of statements runs as it would typed.

use clap::ValueEnum;
use datafusion::prelude::SessionContext;
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

use super::sql::{Format, execute, render};

fn history_file() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".mlwatch_history"))
}

/// Runs the shell on `ctx` until `\q` or end of input.
pub(super) async fn run(ctx: &SessionContext, url: &str, mut format: Format) -> anyhow::Result<()> {
    let mut rl = DefaultEditor::new()?;
    let history = history_file();
    if let Some(h) = &history {
        let _ = rl.load_history(h);
    }
    eprintln!(
        "mlwatch sql on {url}. Statements end with `;`. \\d lists the tables, \\d TABLE shows \
         one's columns, \\format table|csv|json, \\q quits."
    );
    let mut pending = String::new();
    loop {
        let prompt = if pending.is_empty() {
            "mlwatch> "
        } else {
            "     ..> "
        };
        let line = match rl.readline(prompt) {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => {
                pending.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        let trimmed = line.trim();
        if pending.is_empty() {
            if trimmed.is_empty() {
                continue;
            }
            if trimmed == "\\q" || trimmed == "exit" || trimmed == "quit" {
                let _ = rl.add_history_entry(trimmed);
                break;
            }
            if let Some(cmd) = trimmed.strip_prefix('\\') {
                let _ = rl.add_history_entry(trimmed);
                match command(ctx, cmd, &mut format).await {
                    Ok(out) => super::print_out(&out)?,
                    Err(e) => eprintln!("error: {e}"),
                }
                continue;
            }
        }
        pending.push_str(&line);
        pending.push('\n');
        if !trimmed.ends_with(';') {
            continue;
        }
        let statement = std::mem::take(&mut pending);
        let _ = rl.add_history_entry(statement.trim());
        match execute(ctx, statement.trim().trim_end_matches(';'), None).await {
            Ok(batches) => super::print_out(&render(&batches, format)?)?,
            Err(e) => eprintln!("error: {e}"),
        }
    }
    if let Some(h) = &history {
        let _ = rl.save_history(h);
    }
    Ok(())
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
