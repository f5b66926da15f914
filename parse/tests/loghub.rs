//! Grouping accuracy of the template miner on the Loghub 2k samples (shared/data/loghub).
//!
//! For each system, every `Content` of `<Sys>_2k.log_structured.csv` goes through a fresh
//! default [`TemplateMiner`]; grouping accuracy (GA) is computed as the data's README
//! defines it (a line is correct when its predicted group is exactly its ground-truth
//! EventId group) and must reach the published Drain figure for that system. Missing data
//! fails the test: a silent skip would let accuracy regress unnoticed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use apus_parse::templates::{MinerConfig, TemplateId, TemplateMiner};

/// (system, published Drain GA from the LogPAI benchmark, Zhu et al. ICSE-SEIP 2019).
const SYSTEMS: [(&str, f64); 8] = [
    ("HDFS", 0.9975),
    ("Hadoop", 0.9475),
    ("Spark", 0.92),
    ("Zookeeper", 0.9665),
    ("BGL", 0.9625),
    ("Apache", 1.0),
    ("OpenSSH", 0.7875),
    ("HealthApp", 0.78),
];

fn data_dir() -> PathBuf {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/data/loghub"
    ))
    .to_path_buf()
}

/// RFC 4180 records: quoted fields may hold commas, doubled quotes and newlines.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
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
fn load(system: &str) -> Vec<(String, String)> {
    let path = data_dir()
        .join(system)
        .join(format!("{system}_2k.log_structured.csv"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
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
fn grouping_accuracy(pred: &[TemplateId], truth: &[String]) -> f64 {
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

#[test]
fn csv_reader_handles_quotes() {
    let rows = parse_csv("a,b\n\"x, \"\"y\"\"\",\"multi\nline\"\r\n1,\n");
    assert_eq!(rows[0], ["a", "b"]);
    assert_eq!(rows[1], ["x, \"y\"", "multi\nline"]);
    assert_eq!(rows[2], ["1", ""]);
}

#[test]
fn loghub_grouping_accuracy_meets_drain() {
    assert!(
        data_dir().is_dir(),
        "Loghub data directory {} not found: the accuracy test needs shared/data/loghub",
        data_dir().display()
    );
    let mut failures = Vec::new();
    println!("{:<10} {:>6} {:>9} {:>9}", "system", "lines", "GA", "Drain");
    for (system, published) in SYSTEMS {
        let rows = load(system);
        let mut miner = TemplateMiner::new(MinerConfig::default());
        let pred: Vec<TemplateId> = rows.iter().map(|(c, _)| miner.add(c).template_id).collect();
        let truth: Vec<String> = rows.into_iter().map(|(_, e)| e).collect();
        let ga = grouping_accuracy(&pred, &truth);
        println!("{system:<10} {:>6} {ga:>9.4} {published:>9.4}", truth.len());
        if ga + 1e-9 < published {
            failures.push(format!("{system}: GA {ga:.4} < {published}"));
        }
    }
    assert!(
        failures.is_empty(),
        "below published Drain GA: {failures:?}"
    );
}
