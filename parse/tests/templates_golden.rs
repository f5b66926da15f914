//! Golden test of the template miner: `golden/templates/input.txt` (mixed lines: sshd,
//! HTTP, HDFS, IPv6, UUIDs, a Java stack trace, empty and non-ASCII lines) through a fresh
//! default [`TemplateMiner`] must give exactly `golden/templates/expected.csv`
//! (`line,template_id,template`, the template as it stood after that line, ids as 16 hex
//! digits like the `logs.template_id` column). The ids pin the stable-id contract: a change
//! in masking or hashing shows up here. Regenerate deliberately with
//! `APUS_UPDATE_GOLDEN=1 cargo test -p apus-parse --test templates_golden`.

use std::path::PathBuf;

use apus_parse::templates::{exception_template, MinerConfig, TemplateMiner};

fn dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/templates"
    ))
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

#[test]
fn templates_match_golden_csv() {
    let input = std::fs::read_to_string(dir().join("input.txt")).expect("read input.txt");
    let mut miner = TemplateMiner::new(MinerConfig::default());
    let mut out = String::from("line,template_id,template\n");
    for (i, line) in input.lines().enumerate() {
        let m = miner.add(line);
        out.push_str(&format!(
            "{},{:016x},{}\n",
            i + 1,
            m.template_id,
            csv_field(&m.template)
        ));
    }
    let expected_path = dir().join("expected.csv");
    if std::env::var_os("APUS_UPDATE_GOLDEN").is_some() {
        std::fs::write(&expected_path, &out).expect("write expected.csv");
    }
    let expected = std::fs::read_to_string(&expected_path).expect("read expected.csv");
    for (n, (got, want)) in out.lines().zip(expected.lines()).enumerate() {
        assert_eq!(got, want, "expected.csv line {}", n + 1);
    }
    assert_eq!(out.lines().count(), expected.lines().count(), "row count");
}

#[test]
fn stack_trace_in_golden_input_names_its_exception() {
    let input = std::fs::read_to_string(dir().join("input.txt")).expect("read input.txt");
    let trace: String = input
        .lines()
        .skip_while(|l| !l.starts_with("java."))
        .take_while(|l| !l.starts_with("Error processing"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut miner = TemplateMiner::new(MinerConfig::default());
    let (class, m) = exception_template(&trace, &mut miner).expect("exception found");
    assert_eq!(class, "java.lang.IllegalStateException");
    assert_eq!(&*m.template, "pool <*> exhausted after <*> retries");
}
