use super::*;
use crate::model::{RulesFile, TenantSource};
use crate::RuleError;

struct H(Vec<(&'static str, String)>);
impl Headers for H {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn no_files(p: &str) -> Result<String, String> {
    Err(format!("no file {p}"))
}

const POOLS: &[&str] = &["stable", "gray", "gray2"];

fn compile(toml: &str) -> Result<RuleSet, RuleError> {
    let f = RulesFile::from_toml(toml)?;
    RuleSet::compile(&f.routes, POOLS, &no_files)
}

fn decide(
    rs: &RuleSet,
    path: &str,
    ip: &str,
    headers: Vec<(&'static str, String)>,
) -> (String, String) {
    let (p, q) = path
        .split_once('?')
        .map(|(p, q)| (p, Some(q)))
        .unwrap_or((path, None));
    let h = H(headers);
    let req = RequestView {
        host: Some("api.example.com:8080"),
        path: p,
        query: q,
        client_ip: ip.parse().unwrap(),
        headers: &h,
    };
    let (d, _) = rs.decide(&req).expect("route");
    (rs.pool(d).to_string(), rs.tag(d).to_string())
}

const BASE: &str = r#"
[[routes]]
name = "api"
path_prefix = "/"
stable_pool = "stable"
tenant_sources = [{ header = "x-tenant-id" }, { query = "orgId" }, { cookie = "tenant" }]

[[routes.gray_rules]]
name = "beta-tenants"
pool = "gray"
tenants = ["t1", "t2"]

[[routes.gray_rules]]
name = "office"
pool = "gray2"
tag = "canary"
cidrs = ["10.0.0.0/8", "2001:db8::/32"]

[[routes.gray_rules]]
name = "hdr"
pool = "gray"
header = { name = "X-Canary", value = "always" }

[[routes.gray_rules]]
name = "ck"
pool = "gray"
cookie = { name = "lane", regex = "^gr[a-z]+$" }
"#;

#[test]
fn each_match_kind() {
    let rs = compile(BASE).unwrap();
    let t = |h: &'static str, v: &str| vec![(h, v.to_string())];
    assert_eq!(
        decide(&rs, "/x", "1.2.3.4", vec![]),
        ("stable".into(), "stable".into())
    );
    assert_eq!(
        decide(&rs, "/x", "1.2.3.4", t("x-tenant-id", "t1")).0,
        "gray"
    );
    assert_eq!(decide(&rs, "/x?a=b&orgId=t2", "1.2.3.4", vec![]).0, "gray");
    assert_eq!(
        decide(&rs, "/x", "1.2.3.4", t("cookie", "tenant=t2")).0,
        "gray"
    );
    assert_eq!(
        decide(&rs, "/x", "10.9.8.7", vec![]),
        ("gray2".into(), "canary".into())
    );
    assert_eq!(decide(&rs, "/x", "2001:db8::5", vec![]).0, "gray2");
    assert_eq!(decide(&rs, "/x", "2001:db9::5", vec![]).0, "stable");
    assert_eq!(
        decide(&rs, "/x", "1.1.1.1", t("x-canary", "always")).0,
        "gray"
    );
    assert_eq!(
        decide(&rs, "/x", "1.1.1.1", t("x-canary", "never")).0,
        "stable"
    );
    assert_eq!(
        decide(&rs, "/x", "1.1.1.1", t("cookie", "a=1; lane=gray")).0,
        "gray"
    );
    assert_eq!(
        decide(&rs, "/x", "1.1.1.1", t("cookie", "lane=blue")).0,
        "stable"
    );
}

#[test]
fn first_matching_rule_wins() {
    let rs = compile(BASE).unwrap();
    // Tenant t1 from the office network: beta-tenants is listed first.
    let h = vec![("x-tenant-id", "t1".to_string())];
    assert_eq!(
        decide(&rs, "/", "10.0.0.1", h),
        ("gray".into(), "gray".into())
    );
}

#[test]
fn and_combination() {
    let rs = compile(
        r#"
[[routes]]
name = "r"
stable_pool = "stable"
tenant_sources = [{ header = "x-tenant-id" }]
[[routes.gray_rules]]
name = "both"
pool = "gray"
tenants = ["t1"]
cidrs = ["192.168.0.0/16"]
"#,
    )
    .unwrap();
    let h = || vec![("x-tenant-id", "t1".to_string())];
    assert_eq!(decide(&rs, "/", "192.168.1.1", h()).0, "gray");
    assert_eq!(decide(&rs, "/", "172.16.0.1", h()).0, "stable");
    assert_eq!(decide(&rs, "/", "192.168.1.1", vec![]).0, "stable");
}

fn percent_rules(p: f64) -> RuleSet {
    compile(&format!(
        r#"
[[routes]]
name = "r"
stable_pool = "stable"
tenant_sources = [{{ header = "x-tenant-id" }}]
[[routes.gray_rules]]
name = "ramp"
pool = "gray"
percent = {p}
"#
    ))
    .unwrap()
}

#[test]
fn sticky_percentage_is_accurate_and_monotonic() {
    let (r10, r20) = (percent_rules(10.0), percent_rules(20.0));
    let mut n10 = 0;
    let mut n20 = 0;
    for i in 0..10_000 {
        let h = || vec![("x-tenant-id", format!("tenant-{i}"))];
        let g10 = decide(&r10, "/", "1.1.1.1", h()).0 == "gray";
        let g20 = decide(&r20, "/", "1.1.1.1", h()).0 == "gray";
        assert!(!g10 || g20, "tenant-{i} left gray on a raise");
        // Stable across repeated evaluation.
        assert_eq!(g10, decide(&r10, "/", "1.1.1.1", h()).0 == "gray");
        n10 += g10 as u32;
        n20 += g20 as u32;
    }
    assert!((800..=1200).contains(&n10), "10% gave {n10}/10000");
    assert!((1800..=2200).contains(&n20), "20% gave {n20}/10000");
}

#[test]
fn percent_without_tenant_uses_client_ip() {
    let rs = percent_rules(50.0);
    let mut gray = 0;
    for i in 0..1000u32 {
        let ip = format!("10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255);
        let a = decide(&rs, "/", &ip, vec![]).0;
        assert_eq!(a, decide(&rs, "/", &ip, vec![]).0);
        gray += (a == "gray") as u32;
    }
    assert!((400..=600).contains(&gray), "{gray}");
    // The bucket is the documented hash of "{rule}:{ip}".
    let b = sticky_bucket("ramp", b"10.0.0.1");
    assert_eq!(decide(&rs, "/", "10.0.0.1", vec![]).0 == "gray", b <= 50);
    assert_eq!(percent_rules(0.0).routes().count(), 1);
    assert_eq!(
        decide(&percent_rules(0.0), "/", "10.0.0.1", vec![]).0,
        "stable"
    );
    assert_eq!(
        decide(&percent_rules(100.0), "/", "10.0.0.1", vec![]).0,
        "gray"
    );
}

#[test]
fn route_specificity_and_host() {
    let rs = compile(
        r#"
[[routes]]
name = "any"
stable_pool = "stable"
[[routes]]
name = "orders"
path_prefix = "/orders"
stable_pool = "gray"
[[routes]]
name = "host"
host = "API.example.com"
path_prefix = "/orders"
stable_pool = "gray2"
"#,
    )
    .unwrap();
    assert_eq!(decide(&rs, "/orders/1", "1.1.1.1", vec![]).0, "gray2");
    assert_eq!(decide(&rs, "/x", "1.1.1.1", vec![]).0, "stable");
}

fn err(toml: &str) -> String {
    compile(toml).unwrap_err().to_string()
}

#[test]
fn validation_errors_name_rule_and_field() {
    let route = "[[routes]]\nname = \"api\"\nstable_pool = \"stable\"\n[[routes.gray_rules]]\nname = \"g\"\n";
    let e = err(&format!("{route}pool = \"nope\""));
    assert!(
        e.contains("route `api` rule `g`: field `pool`: unknown pool `nope`"),
        "{e}"
    );
    let e = err(&format!("{route}pool = \"gray\"\ncidrs = [\"10.0.0/33\"]"));
    assert!(e.contains("field `cidrs`: bad CIDR"), "{e}");
    let e = err(&format!(
        "{route}pool = \"gray\"\nheader = {{ name = \"x\", regex = \"(\" }}"
    ));
    assert!(e.contains("field `header`: bad regex"), "{e}");
    let e = err(&format!("{route}pool = \"gray\"\npercent = 101"));
    assert!(e.contains("field `percent`: 101 is outside 0-100"), "{e}");
    let e = err(&format!("{route}pool = \"gray\"\npercent = -1"));
    assert!(e.contains("outside"), "{e}");
    let e = err(&format!(
        "{route}pool = \"gray\"\n[[routes.gray_rules]]\nname = \"g\"\npool = \"gray\""
    ));
    assert!(e.contains("duplicate rule name"), "{e}");
    let e = err("[[routes]]\nname = \"a\"\nstable_pool = \"stable\"\n[[routes]]\nname = \"a\"\nstable_pool = \"stable\"");
    assert!(e.contains("duplicate route name"), "{e}");
    let e = err("[[routes]]\nname = \"a\"\nstable_pool = \"zzz\"");
    assert!(e.contains("field `stable_pool`: unknown pool `zzz`"), "{e}");
    let e = err("[[routes]]\nname = \"a\"\nstable_pool = \"stable\"\nbogus = 1");
    assert!(e.contains("unknown field `bogus`"), "{e}");
    let e = err(&format!(
        "{route}pool = \"gray\"\ntenants_file = \"/nonexistent\""
    ));
    assert!(e.contains("tenants_file `/nonexistent`"), "{e}");
    let e = err(&format!(
        "{route}pool = \"gray\"\nheader = {{ name = \"x\" }}"
    ));
    assert!(e.contains("exactly one of"), "{e}");
}

#[test]
fn tenants_file_is_loaded_through_the_loader() {
    let f = RulesFile::from_toml(
        "[[routes]]\nname = \"a\"\nstable_pool = \"stable\"\ntenant_sources = [{ path_segment = 0 }]\n[[routes.gray_rules]]\nname = \"g\"\npool = \"gray\"\ntenants_file = \"t.txt\"",
    )
    .unwrap();
    let loader = |p: &str| -> Result<String, String> {
        assert_eq!(p, "t.txt");
        Ok("# beta tenants\nacme\n\n globex \n".into())
    };
    let rs = RuleSet::compile(&f.routes, POOLS, &loader).unwrap();
    assert_eq!(decide(&rs, "/globex/x", "1.1.1.1", vec![]).0, "gray");
    assert_eq!(decide(&rs, "/acme", "1.1.1.1", vec![]).0, "gray");
    assert_eq!(decide(&rs, "/initech", "1.1.1.1", vec![]).0, "stable");
    assert!(matches!(
        f.routes[0].tenant_sources[0],
        TenantSource::PathSegment(0)
    ));
}

#[test]
fn unchanged_tenant_and_cidr_sets_are_shared_with_the_previous_compile() {
    let rules = |flip: &str, cidr: &str| {
        RulesFile::from_toml(&format!(
            "[[routes]]\nname = \"a\"\nstable_pool = \"stable\"\ntenant_sources = [{{ path_segment = 0 }}]\n\
             [[routes.gray_rules]]\nname = \"flip\"\npool = \"gray\"\ntenants = [\"{flip}\"]\n\
             [[routes.gray_rules]]\nname = \"beta\"\npool = \"gray\"\ntenants_file = \"t.txt\"\n\
             [[routes.gray_rules]]\nname = \"office\"\npool = \"gray\"\ncidrs = [\"{cidr}\"]"
        ))
        .unwrap()
        .routes
    };
    let file = std::cell::RefCell::new("acme\nglobex\n".to_string());
    let loader = |_: &str| -> Result<String, String> { Ok(file.borrow().clone()) };
    let a = RuleSet::compile(&rules("p1", "10.0.0.0/8"), POOLS, &loader).unwrap();
    let set = |rs: &RuleSet, i: usize| rs.routes[0].rules[i].tenants.clone().unwrap();
    let net = |rs: &RuleSet| rs.routes[0].rules[2].cidrs.clone().unwrap();

    // A flip of the first rule: the file's set and the CIDR set are the same allocations.
    let b = RuleSet::compile_after(&rules("p2", "10.0.0.0/8"), POOLS, &loader, Some(&a)).unwrap();
    assert!(Arc::ptr_eq(&set(&a, 1), &set(&b, 1)));
    assert!(Arc::ptr_eq(&net(&a), &net(&b)));
    assert!(!Arc::ptr_eq(&set(&a, 0), &set(&b, 0)));
    assert_eq!(decide(&b, "/p2/x", "1.1.1.1", vec![]).0, "gray");
    assert_eq!(decide(&b, "/p1/x", "1.1.1.1", vec![]).0, "stable");
    assert_eq!(decide(&b, "/globex", "1.1.1.1", vec![]).0, "gray");

    // The file changed on disk: its set is rebuilt from the new text, the CIDRs still shared.
    *file.borrow_mut() = "initech\n".into();
    let c = RuleSet::compile_after(&rules("p2", "10.0.0.0/8"), POOLS, &loader, Some(&b)).unwrap();
    assert!(!Arc::ptr_eq(&set(&b, 1), &set(&c, 1)));
    assert!(Arc::ptr_eq(&net(&b), &net(&c)));
    assert_eq!(decide(&c, "/initech", "1.1.1.1", vec![]).0, "gray");
    assert_eq!(decide(&c, "/globex", "1.1.1.1", vec![]).0, "stable");

    // Other CIDRs: rebuilt; a bad one is still refused whatever the previous set was.
    let d =
        RuleSet::compile_after(&rules("p2", "192.168.0.0/16"), POOLS, &loader, Some(&c)).unwrap();
    assert!(!Arc::ptr_eq(&net(&c), &net(&d)));
    assert_eq!(decide(&d, "/x", "192.168.1.1", vec![]).0, "gray");
    assert_eq!(decide(&d, "/x", "10.1.1.1", vec![]).0, "stable");
    assert!(RuleSet::compile_after(&rules("p2", "300.0.0.0/8"), POOLS, &loader, Some(&d)).is_err());
}

#[test]
fn diff_summarises_changes() {
    let a = percent_rules(10.0);
    let b = percent_rules(20.0);
    let d = a.diff(&b);
    assert_eq!(
        d,
        vec!["route r: ~ramp(percent Some(10.0)→Some(20.0))".to_string()]
    );
    assert!(a.diff(&percent_rules(10.0)).is_empty());
}

#[test]
fn touched_lists_what_a_change_reaches() {
    let a = percent_rules(10.0);
    let b = percent_rules(20.0);
    let t = a.touched(&b);
    assert_eq!(
        t,
        vec!["pool:gray", "route:r", "tag:gray", "tenant:*"],
        "{t:?}"
    );
    assert!(a.touched(&percent_rules(10.0)).is_empty());
}
