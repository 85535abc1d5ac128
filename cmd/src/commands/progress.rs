//! Live rendering of pull and import progress, as docker prints it: one line per layer,
//! redrawn in place on a terminal; plain status changes otherwise.

use std::io::{IsTerminal, Write};

use anyhow::{Result, bail};
use futures_util::{Stream, StreamExt};
use serde_json::Value;

use crate::format;

/// Where progress is written.
pub enum Target {
    Stdout,
    Stderr,
}

struct Line {
    id: String,
    text: String,
}

/// Renders a stream of Docker JSON progress messages. Returns the non-layer status lines
/// (e.g. "Loaded image: …"); a message with `error` ends it with that error.
pub async fn render<S>(stream: S, target: Target, quiet: bool) -> Result<Vec<String>>
where
    S: Stream<Item = Result<Value>>,
{
    let mut out: Box<dyn Write> = match target {
        Target::Stdout => Box::new(std::io::stdout()),
        Target::Stderr => Box::new(std::io::stderr()),
    };
    let tty = match target {
        Target::Stdout => std::io::stdout().is_terminal(),
        Target::Stderr => std::io::stderr().is_terminal(),
    };
    let mut lines: Vec<Line> = Vec::new();
    let mut statuses = Vec::new();
    let mut stream = Box::pin(stream);
    while let Some(msg) = stream.next().await {
        let msg = msg?;
        if let Some(err) = msg.get("error").and_then(Value::as_str) {
            bail!("{err}");
        }
        let status = msg
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let id = msg.get("id").and_then(Value::as_str).map(str::to_owned);
        let text = match (&id, msg.get("progressDetail")) {
            (Some(_), Some(d)) => progress_text(&status, d),
            _ => status.clone(),
        };
        let Some(id) = id else {
            statuses.push(status.clone());
            if !quiet {
                writeln!(out, "{status}")?;
            }
            continue;
        };
        if quiet {
            continue;
        }
        // "Pulling from library/x" carries the tag as its id and is printed once.
        if status.starts_with("Pulling from") {
            writeln!(out, "{id}: {status}")?;
            continue;
        }
        match lines.iter().position(|l| l.id == id) {
            Some(i) => {
                let changed = lines[i].text != text;
                lines[i].text = text.clone();
                if tty {
                    let up = lines.len() - i;
                    write!(out, "\x1b[{up}A\r\x1b[2K{id}: {text}\x1b[{up}B\r")?;
                } else if changed
                    && !status.starts_with("Downloading")
                    && !status.starts_with("Extracting")
                {
                    writeln!(out, "{id}: {status}")?;
                }
            }
            None => {
                lines.push(Line {
                    id: id.clone(),
                    text: text.clone(),
                });
                if tty || !(status.starts_with("Downloading") || status.starts_with("Extracting")) {
                    writeln!(out, "{id}: {}", if tty { &text } else { &status })?;
                }
            }
        }
        out.flush()?;
    }
    Ok(statuses)
}

/// `Downloading [=====>      ]  1.2MB/3.4MB`.
fn progress_text(status: &str, d: &Value) -> String {
    let current = d.get("current").and_then(Value::as_u64);
    let total = d.get("total").and_then(Value::as_u64).filter(|t| *t > 0);
    match (current, total) {
        (Some(c), Some(t)) => {
            const WIDTH: u64 = 50;
            let filled = (c.min(t) * WIDTH / t) as usize;
            let bar = if filled as u64 >= WIDTH {
                "=".repeat(WIDTH as usize)
            } else {
                format!(
                    "{}>{}",
                    "=".repeat(filled),
                    " ".repeat(WIDTH as usize - filled - 1)
                )
            };
            format!(
                "{status} [{bar}]  {}/{}",
                format::human_size(c as f64),
                format::human_size(t as f64)
            )
        }
        (Some(c), None) => format!("{status}  {}", format::human_size(c as f64)),
        _ => status.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars() {
        let d = serde_json::json!({"current": 500, "total": 1000});
        let t = progress_text("Downloading", &d);
        assert!(
            t.starts_with("Downloading [=========================>"),
            "{t}"
        );
        assert!(t.ends_with("500B/1kB"), "{t}");
        let full = progress_text(
            "Extracting",
            &serde_json::json!({"current": 10, "total": 10}),
        );
        assert!(full.contains(&"=".repeat(50)));
    }
}
