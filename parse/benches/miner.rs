//! Template-miner throughput on the Loghub 2k samples (all eight systems, fresh miner per
//! system, as `apus logs templates` runs): the default configuration against the previous
//! one (similarity 0.65, no constant-evidence guard), interleaved in the same run.
//!
//!   cargo bench -p apus-parse --bench miner        # ROUNDS=15 by default
//!
//! Ends with `RESULT miner_throughput lines_per_s=… previous_lines_per_s=… ratio=…`
//! (medians over the rounds). Under `cargo test --all-targets` it runs one round as a
//! smoke test.

#[path = "../tests/loghub_data/mod.rs"]
mod loghub_data;

use std::hint::black_box;
use std::time::Instant;

use apus_parse::templates::{MinerConfig, TemplateMiner};

fn lines_per_s(cfg: &MinerConfig, data: &[Vec<String>], reps: usize) -> f64 {
    let start = Instant::now();
    let mut n = 0usize;
    for _ in 0..reps {
        for lines in data {
            let mut m = TemplateMiner::new(cfg.clone());
            for l in lines {
                black_box(m.add(l).template_id);
            }
            n += lines.len();
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let rounds: usize = match std::env::var("ROUNDS").ok().and_then(|v| v.parse().ok()) {
        Some(n) if bench => n,
        _ if bench => 15,
        _ => 1,
    };
    let reps = if bench { 10 } else { 1 };
    let data: Vec<Vec<String>> = loghub_data::SYSTEMS
        .iter()
        .map(|(s, _)| loghub_data::load(s).into_iter().map(|(c, _)| c).collect())
        .collect();
    let now = MinerConfig::default();
    let before = MinerConfig {
        similarity: 0.65,
        constant_evidence: 0,
        ..MinerConfig::default()
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        a.push(lines_per_s(&now, &data, reps));
        b.push(lines_per_s(&before, &data, reps));
    }
    let (a, b) = (median(a), median(b));
    println!(
        "RESULT miner_throughput lines_per_s={a:.0} previous_lines_per_s={b:.0} ratio={:.3}",
        a / b
    );
}
