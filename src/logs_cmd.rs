//! `apus logs templates FILE`: runs every line of a log file through one
//! [`TemplateMiner`] and prints `line,template_id,template` per input line.
//!
//! Invariants (DESIGN.md "Interfaces that stay stable"): one row per input line, 1-based,
//! every line present (empty ones too; a final line without a newline counts, a trailing
//! newline does not add one); the template is the one the line's cluster had right after
//! the line was added, and `template_id` is 16 hex digits like the `logs.template_id`
//! column. The file is streamed, never loaded whole; bytes that are not UTF-8 are replaced.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use apus_parse::templates::{MinerConfig, TemplateMiner};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum LogsCmd {
    /// Mine log templates from FILE: one row per input line with its template id and text.
    Templates {
        /// The log file (one message per line).
        file: PathBuf,
        /// Output format: `csv` (header `line,template_id,template`) or `json` (an array
        /// of `{line, template_id, template}`).
        #[arg(long, default_value = "csv")]
        format: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Format {
    Csv,
    Json,
}

pub fn run(cmd: LogsCmd) -> Result<()> {
    match cmd {
        LogsCmd::Templates { file, format } => {
            let format = match format.as_str() {
                "csv" => Format::Csv,
                "json" => Format::Json,
                other => bail!("unknown --format {other:?}: expected csv or json"),
            };
            templates_file(&file, format)
        }
    }
}

fn templates_file(path: &Path, format: Format) -> Result<()> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let stdout = io::stdout();
    let out = BufWriter::new(stdout.lock());
    match write_templates(BufReader::new(f), format, out) {
        // `apus logs templates big.log | head` is normal use, not a failure.
        Err(e)
            if e.downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        r => r.with_context(|| format!("templating {}", path.display())),
    }
}

fn write_templates(mut input: impl BufRead, format: Format, mut out: impl Write) -> Result<()> {
    let mut miner = TemplateMiner::new(MinerConfig::default());
    let mut buf = Vec::new();
    let mut n: u64 = 0;
    match format {
        Format::Csv => writeln!(out, "line,template_id,template")?,
        Format::Json => write!(out, "[")?,
    }
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        n += 1;
        let mut line = buf.as_slice();
        if let Some(rest) = line.strip_suffix(b"\n") {
            line = rest.strip_suffix(b"\r").unwrap_or(rest);
        }
        let text = String::from_utf8_lossy(line);
        let m = miner.add(&text);
        match format {
            Format::Csv => writeln!(out, "{n},{:016x},{}", m.template_id, csv_field(&m.template))?,
            Format::Json => write!(
                out,
                "{}\n  {{\"line\": {n}, \"template_id\": \"{:016x}\", \"template\": {}}}",
                if n == 1 { "" } else { "," },
                m.template_id,
                serde_json::to_string(&*m.template)?
            )?,
        }
    }
    if format == Format::Json {
        writeln!(out, "{}]", if n == 0 { "" } else { "\n" })?;
    }
    out.flush()?;
    Ok(())
}

/// RFC 4180 quoting: only fields with a comma, quote or line break are quoted.
fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_on(input: &[u8], format: Format) -> String {
        let mut out = Vec::new();
        write_templates(input, format, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn csv_has_every_line_and_quotes() {
        let out = run_on(
            b"a, \"b\" 1\r\n\nuser 7 in\nuser 8 in\n\xff bad utf8",
            Format::Csv,
        );
        let rows: Vec<&str> = out.lines().collect();
        assert_eq!(rows[0], "line,template_id,template");
        assert_eq!(rows.len(), 6);
        assert!(rows[1].starts_with("1,") && rows[1].ends_with(",\"a, \"\"b\"\" <*>\""));
        assert_eq!(rows[2], "2,cbf29ce484222325,");
        assert_eq!(rows[3][2..19], rows[4][2..19], "same template id");
        assert!(rows[5].starts_with("5,"));
    }

    #[test]
    fn json_is_an_array_of_rows() {
        let out = run_on(b"x 1\nx 2\n", Format::Json);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let rows = v.as_array().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1]["line"], 2);
        assert_eq!(rows[1]["template"], "x <*>");
        assert_eq!(rows[1]["template_id"].as_str().unwrap().len(), 16);
        let empty: serde_json::Value = serde_json::from_str(&run_on(b"", Format::Json)).unwrap();
        assert_eq!(empty, serde_json::json!([]));
    }

    #[test]
    fn unknown_format_and_missing_file_fail() {
        let bad = LogsCmd::Templates {
            file: "Cargo.toml".into(),
            format: "xml".into(),
        };
        assert!(run(bad).is_err());
        let missing = LogsCmd::Templates {
            file: "/nonexistent/apus.log".into(),
            format: "csv".into(),
        };
        let e = run(missing).unwrap_err();
        assert!(format!("{e:#}").contains("cannot open"));
    }
}
