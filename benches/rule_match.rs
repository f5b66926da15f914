//! Gray-rule match cost with 100k tenants and 10k CIDRs (budget: <= 1 µs, no allocation).
//!
//! Run: `cargo bench -p apus-rules --bench match`. Besides criterion's timings it counts
//! heap allocations made by `RuleSet::decide` with a counting global allocator and fails
//! if there is any.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

use apus_rules::{HeaderList, RequestView, RuleSet, RulesFile};
use criterion::{criterion_group, Criterion, Throughput};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: delegates every call unchanged to the system allocator; only counts calls.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn build() -> RuleSet {
    let tenants: Vec<String> = (0..100_000).map(|i| format!("\"tenant-{i}\"")).collect();
    let cidrs: Vec<String> = (0..10_000u32)
        .map(|i| {
            if i % 10 == 0 {
                format!("\"2001:db8:{:x}::/48\"", i)
            } else {
                format!(
                    "\"{}.{}.{}.0/24\"",
                    11 + (i >> 16) % 200,
                    (i >> 8) & 255,
                    i & 255
                )
            }
        })
        .collect();
    let toml = format!(
        r#"
[[routes]]
name = "static"
path_prefix = "/static"
stable_pool = "stable"
[[routes]]
name = "api"
path_prefix = "/api"
stable_pool = "stable"
tenant_sources = [{{ header = "x-tenant-id" }}, {{ query = "orgId" }}, {{ cookie = "tenant" }}]
[[routes.gray_rules]]
name = "beta-tenants"
pool = "gray"
tenants = [{}]
[[routes.gray_rules]]
name = "office"
pool = "gray"
cidrs = [{}]
[[routes.gray_rules]]
name = "canary-header"
pool = "gray"
header = {{ name = "x-canary", regex = "^(1|yes|true)$" }}
[[routes.gray_rules]]
name = "ramp"
pool = "gray"
percent = 5
"#,
        tenants.join(","),
        cidrs.join(",")
    );
    let f = RulesFile::from_toml(&toml).unwrap();
    let no_files = |p: &str| -> Result<String, String> { Err(p.to_string()) };
    RuleSet::compile(&f.routes, &["stable", "gray"], &no_files).unwrap()
}

fn bench(c: &mut Criterion) {
    let rs = build();
    let hdr_tenant: &[(&str, &str)] = &[
        ("host", "api.example.com"),
        ("user-agent", "wrk"),
        ("x-tenant-id", "tenant-99999"),
    ];
    let hdr_miss: &[(&str, &str)] = &[
        ("host", "api.example.com"),
        ("user-agent", "wrk"),
        ("cookie", "a=b; tenant=nobody-here"),
    ];
    let cases = [
        ("tenant_hit", hdr_tenant, "203.0.113.9"),
        ("cidr_hit", hdr_miss, "11.0.200.77"),
        ("all_rules_miss", hdr_miss, "203.0.113.9"),
        ("ipv6_miss", hdr_miss, "2001:db9::1"),
    ];
    let mut g = c.benchmark_group("rule_match_100k_tenants_10k_cidrs");
    g.throughput(Throughput::Elements(1));
    for (name, headers, ip) in cases {
        let h = HeaderList(headers);
        let ip = ip.parse().unwrap();
        g.bench_function(name, |b| {
            b.iter(|| {
                let req = RequestView {
                    host: Some("api.example.com"),
                    path: "/api/v1/orders",
                    query: Some("page=2"),
                    client_ip: ip,
                    headers: &h,
                };
                black_box(rs.decide(black_box(&req)))
            })
        });
        // Allocation check: warm once (regex caches), then count.
        let req = RequestView {
            host: Some("api.example.com"),
            path: "/api/v1/orders",
            query: Some("page=2"),
            client_ip: ip,
            headers: &h,
        };
        black_box(rs.decide(&req));
        let before = ALLOCS.load(Ordering::Relaxed);
        for _ in 0..10_000 {
            black_box(rs.decide(black_box(&req)));
        }
        let n = ALLOCS.load(Ordering::Relaxed) - before;
        assert_eq!(n, 0, "{name}: {n} heap allocations in 10k matches");
        eprintln!("{name}: 0 heap allocations in 10k matches");
    }
    g.finish();
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
