//! Grouping accuracy of the template miner on the Loghub 2k samples (shared/data/loghub).
//!
//! For each system, every `Content` of `<Sys>_2k.log_structured.csv` goes through a fresh
//! default [`TemplateMiner`]; grouping accuracy (GA) is computed as the data's README
//! defines it (a line is correct when its predicted group is exactly its ground-truth
//! EventId group) and must reach the published Drain figure for that system. Missing data
//! fails the test: a silent skip would let accuracy regress unnoticed.

mod loghub_data;

use std::collections::HashMap;
use std::path::Path;

use apus_parse::templates::{MinerConfig, TemplateId, TemplateMiner};
use loghub_data::*;

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

/// GA of `cfg` on each of `systems` (rows loaded once by the caller).
fn ga_of(cfg: &MinerConfig, data: &[(&str, Vec<(String, String)>)]) -> Vec<f64> {
    data.iter()
        .map(|(_, rows)| {
            let mut miner = TemplateMiner::new(cfg.clone());
            let pred: Vec<TemplateId> =
                rows.iter().map(|(c, _)| miner.add(c).template_id).collect();
            let truth: Vec<String> = rows.iter().map(|(_, e)| e.clone()).collect();
            grouping_accuracy(&pred, &truth)
        })
        .collect()
}

/// The configurations the hold-out search tries: Drain's two knobs over their usual
/// ranges, with the constant-evidence guard as configured by default (it is a design choice
/// made for a failure these eight systems do not show, see the README, not a fitted knob).
fn grid() -> Vec<MinerConfig> {
    let mut out = Vec::new();
    for depth in [3, 4, 5, 6] {
        for sim in [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85] {
            out.push(MinerConfig {
                depth,
                similarity: sim,
                ..MinerConfig::default()
            });
        }
    }
    out
}

/// Hold-out: choose the configuration that is best on four systems, report it on the other
/// four, and the other way round (`--nocapture` prints the table the README quotes). What
/// a configuration tuned on some logs gives on logs it never saw is what a new user gets.
/// The default's own figures are held by `loghub_grouping_accuracy_meets_drain`; this test
/// holds their mean (≥ 0.95).
#[test]
fn holdout_tuning_generalizes() {
    let data: Vec<(&str, Vec<(String, String)>)> =
        SYSTEMS.iter().map(|(s, _)| (*s, load(s))).collect();
    let halves: [[usize; 4]; 2] = [[0, 1, 2, 3], [4, 5, 6, 7]];
    let configs = grid();
    let scores: Vec<Vec<f64>> = configs.iter().map(|c| ga_of(c, &data)).collect();
    let mean = |v: &[f64], idx: &[usize]| idx.iter().map(|&i| v[i]).sum::<f64>() / idx.len() as f64;
    for (k, tune) in halves.iter().enumerate() {
        let held = halves[1 - k];
        let best = (0..configs.len())
            .max_by(|&a, &b| mean(&scores[a], tune).total_cmp(&mean(&scores[b], tune)))
            .unwrap();
        let c = &configs[best];
        println!(
            "tuned on {:?}: depth={} similarity={} (tuning mean GA {:.4})",
            tune.map(|i| SYSTEMS[i].0),
            c.depth,
            c.similarity,
            mean(&scores[best], tune)
        );
        for i in held {
            let (sys, drain) = SYSTEMS[i];
            println!(
                "  held out {sys:<10} GA {:.4}  Drain {drain:.4}",
                scores[best][i]
            );
        }
    }
    let def = ga_of(&MinerConfig::default(), &data);
    let avg = def.iter().sum::<f64>() / def.len() as f64;
    println!("default: mean GA {avg:.4} over the eight");
    assert!(avg >= 0.95, "mean GA {avg:.4} < 0.95");
}

/// The check on systems this repo does not hold: `LOGHUB_EXTRA_DIR=DIR cargo test -p
/// apus-parse --test loghub -- --ignored extra` runs the default miner on each of
/// [`EXTRA_SYSTEMS`] found under DIR and fails below Drain's published GA (or when DIR
/// holds none of them).
#[test]
#[ignore = "needs LOGHUB_EXTRA_DIR with Loghub systems this repo does not hold"]
fn extra_systems_meet_drain() {
    let dir = std::env::var("LOGHUB_EXTRA_DIR").expect("LOGHUB_EXTRA_DIR");
    let mut found = 0;
    let mut failures = Vec::new();
    for (system, drain) in EXTRA_SYSTEMS {
        let path = Path::new(&dir)
            .join(system)
            .join(format!("{system}_2k.log_structured.csv"));
        if !path.exists() {
            println!("{system:<12} (not in {dir})");
            continue;
        }
        found += 1;
        let rows = load_path(&path);
        let ga = ga_of(&MinerConfig::default(), &[(system, rows)])[0];
        println!("{system:<12} GA {ga:.4}  Drain {drain:.4}");
        if ga + 1e-9 < drain {
            failures.push(format!("{system}: GA {ga:.4} < Drain {drain}"));
        }
    }
    assert!(found > 0, "no Loghub system under {dir}");
    assert!(failures.is_empty(), "{failures:?}");
}

/// `LOGHUB_DIAG=System|path.csv` (with `LOGHUB_CFG=depth,similarity,evidence`):
/// prints the ground-truth events the miner splits and the groups it merges.
#[test]
fn diagnose() {
    let Ok(sys) = std::env::var("LOGHUB_DIAG") else {
        return;
    };
    let mut cfg = MinerConfig::default();
    if let Ok(c) = std::env::var("LOGHUB_CFG") {
        let v: Vec<&str> = c.split(',').collect();
        cfg.depth = v[0].parse().unwrap();
        cfg.similarity = v[1].parse().unwrap();
        cfg.constant_evidence = v[2].parse().unwrap();
    }
    let rows = if sys.contains('/') {
        load_path(Path::new(&sys))
    } else {
        load(&sys)
    };
    let mut miner = TemplateMiner::new(cfg);
    let mut by_event: HashMap<String, HashMap<TemplateId, usize>> = HashMap::new();
    let mut by_group: HashMap<TemplateId, HashMap<String, usize>> = HashMap::new();
    let mut sample: HashMap<(String, TemplateId), String> = HashMap::new();
    for (c, e) in &rows {
        let id = miner.add(c).template_id;
        *by_event
            .entry(e.clone())
            .or_default()
            .entry(id)
            .or_default() += 1;
        *by_group
            .entry(id)
            .or_default()
            .entry(e.clone())
            .or_default() += 1;
        sample.entry((e.clone(), id)).or_insert_with(|| c.clone());
    }
    for (e, ids) in &by_event {
        if ids.len() > 1 {
            println!("SPLIT {e}:");
            for (id, n) in ids {
                println!("   {n:>5} {}", sample[&(e.clone(), *id)]);
            }
        }
    }
    for (id, evs) in &by_group {
        if evs.len() > 1 {
            println!("MERGED {id:x}:");
            for (e, n) in evs {
                println!("   {n:>5} {e} {}", sample[&(e.clone(), *id)]);
            }
        }
    }
    let pred: Vec<TemplateId> = {
        let mut m = TemplateMiner::new(miner.config().clone());
        rows.iter().map(|(c, _)| m.add(c).template_id).collect()
    };
    let truth: Vec<String> = rows.iter().map(|(_, e)| e.clone()).collect();
    println!("GA {:.4}", grouping_accuracy(&pred, &truth));
}
