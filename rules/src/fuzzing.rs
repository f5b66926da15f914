//! Invariants for the fuzz target `rules` (`fuzz/`; replayed over the seed corpus by this
//! module's tests): whatever bytes arrive as a rule file (TOML, as `apus rules check` and
//! `import` read) or as the gray rules of an admin API body (JSON), parsing and compiling
//! either refuse them with an error or yield a rule set that routes any request without
//! panicking and always to a route it has and a pool it was compiled against.
//!
//! And for the fuzz target `alarms`: alarm rule files, silences (the JSON of
//! `POST /api/v2/silences`), matchers, conditions, durations and templates either refuse
//! hostile input with an error or hold their invariants (durations round-trip, a checked
//! template renders, a silence that validates has an end after its start and never mutes
//! an empty label set by its matchers alone).

use std::net::IpAddr;

use crate::{GrayRuleSpec, HeaderList, RequestView, RouteSpec, RuleSet, RulesFile};

const POOLS: &[&str] = &["stable", "gray"];

fn no_files(p: &str) -> Result<String, String> {
    Err(format!("no files while fuzzing ({p})"))
}

fn exercise(set: &RuleSet, probe: &str) {
    let ips: [IpAddr; 3] = [
        [10, 1, 2, 3].into(),
        [203, 0, 113, 9].into(),
        "2001:db8::1".parse().unwrap_or([0, 0, 0, 0].into()),
    ];
    let headers = [
        ("x-tenant-id", probe),
        ("cookie", probe),
        ("x-env", probe),
        ("host", probe),
    ];
    for ip in ips {
        for path in ["/", probe, "/api/orders"] {
            let req = RequestView {
                host: Some(probe),
                path,
                query: Some(probe),
                client_ip: ip,
                headers: &HeaderList(&headers),
            };
            if let Some((d, _tenant)) = set.decide(&req) {
                let route = set.route(d);
                assert!(POOLS.contains(&route.stable_pool.as_str()));
                if let Some(i) = d.rule {
                    assert!(POOLS.contains(&route.gray_rules[i].pool.as_str()));
                }
            }
        }
    }
}

/// A rule file (TOML) of arbitrary bytes.
pub fn rule_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = toml::from_str::<RulesFile>(text) else {
        return;
    };
    if let Ok(set) = RuleSet::compile(&file.routes, POOLS, &no_files) {
        exercise(&set, text.get(..text.len().min(64)).unwrap_or(""));
    }
}

/// The `rules` of an admin API body (JSON) of arbitrary bytes, put on a route.
pub fn rule_body(data: &[u8]) {
    let Ok(rules) = serde_json::from_slice::<Vec<GrayRuleSpec>>(data) else {
        return;
    };
    let route = "[[routes]]\nname = \"api\"\nstable_pool = \"stable\"\n\
         tenant_sources = [{ header = \"x-tenant-id\" }, { query = \"orgId\" }]\n";
    let Ok(mut file) = toml::from_str::<RulesFile>(route) else {
        return;
    };
    let spec: &mut RouteSpec = &mut file.routes[0];
    spec.gray_rules = rules;
    if let Ok(set) = RuleSet::compile(&file.routes, POOLS, &no_files) {
        let probe = String::from_utf8_lossy(&data[..data.len().min(64)]).into_owned();
        exercise(&set, &probe);
    }
}

/// Alarm inputs of arbitrary bytes.
pub fn alarm_input(data: &[u8]) {
    use crate::alarm::{self, template, Condition, Labels, Matcher, Silence};
    let text = String::from_utf8_lossy(data);
    let mut taken = std::collections::HashSet::new();
    if let Ok(rules) = alarm::parse_rule_file("fuzz.toml", &text, &mut taken) {
        for r in &rules {
            assert!(r.window_us >= 1_000_000 && r.for_us >= 0);
            assert!(r.condition.threshold.is_finite());
            for t in r.annotations.values() {
                let _ =
                    template::render(t, &serde_json::json!({"value": 1.5}), template::json_escape);
            }
        }
    }
    if let Ok(mut s) = serde_json::from_slice::<Silence>(data) {
        if let Ok((start, end)) = s.validate() {
            assert!(end > start);
            assert!(!s.mutes(&Labels::new(), start));
        }
    }
    for line in text.lines().take(8) {
        if let Ok(m) = Matcher::parse(line) {
            let _ = m.matches(&Labels::new());
            let again = Matcher::parse(&m.to_string());
            assert!(
                again.is_ok_and(|a| a == m),
                "matcher `{m}` does not round-trip"
            );
        }
        if let Ok(c) = Condition::parse(line) {
            assert!(c.threshold.is_finite());
            let _ = c.holds(f64::NAN, Some(0.0));
        }
        if let Ok(us) = alarm::parse_duration(line) {
            assert_eq!(alarm::parse_duration(&alarm::format_duration(us)), Ok(us));
        }
        if template::check(line).is_ok() {
            let _ = template::render(
                line,
                &serde_json::json!({"labels": {"a": line}}),
                template::plain,
            );
        }
    }
}

/// Release inputs of arbitrary bytes (the fuzz target `specs`): rollout, serial release and
/// gray-target JSON as the admin API reads it, and config files as the config center
/// reads them (the first byte picks the content type). Parsing refuses or yields values
/// that hold their invariants: a checked rollout runs its plan without panicking, a valid
/// file merges with itself into a valid file, a file key prints as it parses.
pub fn release_input(data: &[u8]) {
    use crate::config::{format, vars, Client, ContentType, FileKey, GrayTarget};
    use crate::rollout::{Event, Progress, RolloutSpec, SerialDoc, SerialSpec, Verdict};
    if let Ok(r) = serde_json::from_slice::<RolloutSpec>(data) {
        if r.check().is_ok() {
            let (mut p, _) = Progress::start(&r.steps, 0);
            for (i, ev) in [
                Event::Tick,
                Event::Analysis(Verdict::Pass("ok".into())),
                Event::Hold("gate".into()),
                Event::Analysis(Verdict::Inconclusive("few".into())),
                Event::Resume,
                Event::Promote,
                Event::Analysis(Verdict::Fail("bad".into())),
            ]
            .into_iter()
            .enumerate()
            {
                let _ = p.handle(
                    &r.steps,
                    r.analysis.failure_limit,
                    i as i64 * 60_000_000,
                    ev,
                );
                assert!(p.step <= r.steps.len());
            }
        }
    }
    if let Ok(s) = serde_json::from_slice::<SerialSpec>(data) {
        if s.check().is_ok() {
            let mut d = SerialDoc::new(s, vec!["a".into(), "b".into()], "fuzz", 0);
            for _ in 0..20 {
                d.advance(1);
            }
            assert!(!d.running() && d.done.len() == 2);
        }
    }
    let text = String::from_utf8_lossy(data);
    if let Ok(t) = serde_json::from_slice::<GrayTarget>(data) {
        if t.check().is_ok() {
            let c = Client {
                ip: "10.0.0.1".parse().ok(),
                labels: [("zone".to_string(), text.to_string())].into(),
                instance: Some(&text),
            };
            let _ = t.matches("p/e/pool/f", &c);
        }
    }
    if let Ok(k) = FileKey::parse(&text) {
        assert_eq!(k.to_string(), text, "a file key prints as it parses");
    }
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let ct = [
        ContentType::Properties,
        ContentType::Json,
        ContentType::Yaml,
        ContentType::Xml,
        ContentType::Text,
    ][usize::from(first) % 5];
    let body = String::from_utf8_lossy(rest);
    let vs = [("a".to_string(), "1".to_string())].into();
    let _ = vars::substitute(&body, &vs);
    let _ = vars::used(&body);
    match format::validate(ct, &body) {
        // serde_yaml's emitter cannot print every document its parser reads (some tags):
        // a YAML merge may be refused with a reason, never a panic.
        Ok(()) if ct == ContentType::Yaml => {
            if let Ok(merged) = format::merge(ct, &body, &body) {
                format::validate(ct, &merged).expect("a merged YAML file parses");
            }
        }
        Ok(()) => {
            let merged = format::merge(ct, &body, &body).expect("a valid file merges with itself");
            format::validate(ct, &merged).expect("a merge of valid files is valid");
        }
        Err(e) => assert!(!e.message.is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays the committed seeds of `fuzz/corpus/rules`.
    #[test]
    fn seed_corpus_holds_the_invariants() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/rules");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let data = std::fs::read(e.unwrap().path()).unwrap();
            rule_file(&data);
            rule_body(&data);
            n += 1;
        }
        assert!(n >= 3, "{n} seeds in {}", dir.display());
    }

    /// Replays the committed seeds of `fuzz/corpus/alarms`.
    #[test]
    fn alarm_seed_corpus_holds_the_invariants() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/alarms");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            alarm_input(&std::fs::read(e.unwrap().path()).unwrap());
            n += 1;
        }
        assert!(n >= 3, "{n} seeds in {}", dir.display());
    }

    /// Replays the committed seeds of `fuzz/corpus/specs`.
    #[test]
    fn specs_seed_corpus_holds_the_invariants() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/specs");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            release_input(&std::fs::read(e.unwrap().path()).unwrap());
            n += 1;
        }
        assert!(n >= 3, "{n} seeds in {}", dir.display());
    }
}
