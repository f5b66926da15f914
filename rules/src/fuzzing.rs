//! Invariants for the fuzz target `rules` (`fuzz/`; replayed over the seed corpus by this
//! module's tests): whatever bytes arrive as a rule file (TOML, as `apus rules check` and
//! `import` read) or as the gray rules of an admin API body (JSON), parsing and compiling
//! either refuse them with an error or yield a rule set that routes any request without
//! panicking and always to a route it has and a pool it was compiled against.

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
}
