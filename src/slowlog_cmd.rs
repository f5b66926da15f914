//! `apus slowlog digest FILE`: a pt-query-digest-style report of a MySQL/MariaDB slow log.
//! The file is streamed in 1 MiB reads through the incremental parser into the digest, so
//! memory stays bounded by the number of distinct fingerprints, not by the file's size.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use apus_parse::digest::{render_text, Digest};
use apus_parse::slowlog::{SlowEntry, SlowLogParser};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum SlowlogCmd {
    /// Group a slow log's statements by fingerprint and rank them by total query time.
    Digest {
        /// The slow log file.
        file: PathBuf,
        /// Show at most this many fingerprints (0: all).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// `text` (a table) or `json` (an array of rows).
        #[arg(long, default_value = "text")]
        format: String,
    },
}

/// Runs the command; on failure prints the reason and exits 1.
pub fn run(cmd: SlowlogCmd) -> Result<()> {
    let result = match cmd {
        SlowlogCmd::Digest {
            file,
            limit,
            format,
        } => digest(&file, limit, &format),
    };
    if let Err(e) = result {
        eprintln!("apus slowlog: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

fn digest(path: &Path, limit: usize, format: &str) -> Result<()> {
    if !matches!(format, "text" | "json") {
        bail!("unknown format {format:?} (expected text or json)");
    }
    let (digest, bytes, saw_slow_log) = digest_file(path)?;
    if bytes > 0 && digest.is_empty() && !saw_slow_log {
        bail!(
            "{}: no slow-log entries (not a MySQL/MariaDB slow query log?)",
            path.display()
        );
    }
    let rows = digest.rows((limit > 0).then_some(limit));
    let out = match format {
        "json" => serde_json::to_string_pretty(&rows)? + "\n",
        _ => render_text(&rows),
    };
    match std::io::stdout().lock().write_all(out.as_bytes()) {
        // `apus slowlog digest big.log | head` is fine.
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        r => r.context("write report"),
    }
}

/// Read and parse `path` on this thread while two workers fingerprint and aggregate
/// alternate batches (the heavier half); their digests merge as if built in input order.
/// Bounded hand-over keeps memory flat. Returns the digest, the bytes read, and whether
/// the input looked like a slow log at all.
fn digest_file(path: &Path) -> Result<(Digest, u64, bool)> {
    let mut file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut parser = SlowLogParser::new();
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<(u64, Vec<SlowEntry>)>(4);
            let handle = std::thread::spawn(move || {
                let mut digest = Digest::new();
                for (pos, batch) in rx {
                    digest.seek(pos);
                    for e in &batch {
                        digest.add(e);
                    }
                }
                digest
            });
            (tx, handle)
        })
        .collect();
    let mut sent = 0u64;
    let mut turn = 0usize;
    let mut hand_over = |batch: Vec<SlowEntry>| -> Result<()> {
        let n = batch.len() as u64;
        workers[turn % 2]
            .0
            .send((sent, batch))
            .map_err(|_| anyhow::anyhow!("digest worker stopped"))?;
        sent += n;
        turn += 1;
        Ok(())
    };
    let mut entries = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        bytes += n as u64;
        parser.push(&buf[..n], &mut entries);
        if !entries.is_empty() {
            hand_over(std::mem::take(&mut entries))?;
        }
    }
    parser.finish(&mut entries);
    if !entries.is_empty() {
        hand_over(entries)?;
    }
    let mut digest = Digest::new();
    for (tx, handle) in workers {
        drop(tx);
        let part = handle
            .join()
            .map_err(|_| anyhow::anyhow!("digest worker panicked"))?;
        digest.merge(part);
    }
    Ok((digest, bytes, parser.saw_slow_log()))
}
