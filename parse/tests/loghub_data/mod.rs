//! The Loghub 2k samples (shared/data/loghub): loading and grouping accuracy, shared by
//! the accuracy tests and the miner's throughput bench.

#![allow(dead_code)] // each including target uses a part

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use apus_parse::templates::TemplateId;

/// (system, published Drain GA from the LogPAI benchmark, Zhu et al. ICSE-SEIP 2019).
pub const SYSTEMS: [(&str, f64); 8] = [
    ("HDFS", 0.9975),
    ("Hadoop", 0.9475),
    ("Spark", 0.92),
    ("Zookeeper", 0.9665),
    ("BGL", 0.9625),
    ("Apache", 1.0),
    ("OpenSSH", 0.7875),
    ("HealthApp", 0.78),
];

/// The other eight Loghub 2k systems (not in this repo), with Drain's published GA from the
/// same benchmark (logpai/logparser's Drain README). `LOGHUB_EXTRA_DIR` holds them as
/// `<Sys>/<Sys>_2k.log_structured.csv` for the held-out check.
pub const EXTRA_SYSTEMS: [(&str, f64); 8] = [
    ("Android", 0.911),
    ("HPC", 0.887),
    ("Linux", 0.69),
    ("Mac", 0.7865),
    ("OpenStack", 0.7325),
    ("Proxifier", 0.5265),
    ("Thunderbird", 0.955),
    ("Windows", 0.997),
];

pub fn data_dir() -> PathBuf {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/data/loghub"
    ))
    .to_path_buf()
}

/// RFC 4180 records: quoted fields may hold commas, doubled quotes and newlines.
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            ',' => row.push(std::mem::take(&mut field)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            _ => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

/// (Content, EventId) per line of a structured CSV.
pub fn load(system: &str) -> Vec<(String, String)> {
    load_path(
        &data_dir()
            .join(system)
            .join(format!("{system}_2k.log_structured.csv")),
    )
}

/// (Content, EventId) per line of the structured CSV at `path`.
pub fn load_path(path: &Path) -> Vec<(String, String)> {
    let system = path.display();
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "Loghub data missing at {} ({e}); it must be present (shared/ beside the repo)",
            path.display()
        )
    });
    let mut rows = parse_csv(&text).into_iter();
    let header = rows.next().expect("header row");
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("{system}: no {name} column"))
    };
    let (content, event) = (col("Content"), col("EventId"));
    rows.map(|r| {
        assert_eq!(r.len(), header.len(), "{system}: ragged row {r:?}");
        (r[content].clone(), r[event].clone())
    })
    .collect()
}

/// Fraction of lines whose predicted group equals their ground-truth group.
pub fn grouping_accuracy(pred: &[TemplateId], truth: &[String]) -> f64 {
    let mut truth_size: HashMap<&str, usize> = HashMap::new();
    for t in truth {
        *truth_size.entry(t.as_str()).or_default() += 1;
    }
    let mut groups: HashMap<TemplateId, Vec<usize>> = HashMap::new();
    for (i, p) in pred.iter().enumerate() {
        groups.entry(*p).or_default().push(i);
    }
    let correct: usize = groups
        .values()
        .filter(|lines| {
            let first = truth[lines[0]].as_str();
            lines.iter().all(|&i| truth[i] == first) && truth_size[first] == lines.len()
        })
        .map(Vec::len)
        .sum();
    correct as f64 / truth.len() as f64
}
