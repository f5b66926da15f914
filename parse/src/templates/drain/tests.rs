//! Unit tests of the miner: grouping, ids, bounds, the constant-evidence guard.

use super::*;

fn miner() -> TemplateMiner {
    TemplateMiner::new(MinerConfig::default())
}

#[test]
fn groups_and_generalises() {
    let mut m = miner();
    let a = m.add("Invalid user admin from 1.2.3.4");
    assert!(a.changed);
    assert_eq!(&*a.template, "Invalid user admin from <*>");
    let b = m.add("Invalid user oracle from 5.6.7.8");
    assert_eq!(b.template_id, a.template_id);
    assert!(b.changed);
    assert_eq!(&*b.template, "Invalid user <*> from <*>");
    let c = m.add("Invalid user bob from 9.9.9.9");
    assert!(!c.changed);
    assert_eq!(m.len(), 1);
    let d = m.add("Connection closed by 1.2.3.4 [preauth]");
    assert_ne!(d.template_id, a.template_id);
    assert_eq!(m.len(), 2);
    assert_eq!(m.templates().count(), 2);
}

#[test]
fn a_word_constant_over_enough_lines_is_not_generalised() {
    let mut m = miner();
    let init: Vec<_> = (0..3)
        .map(|_| {
            m.add("Starting TrustedInstaller initialization.")
                .template_id
        })
        .collect();
    let fin = m.add("Starting TrustedInstaller finalization.");
    assert_ne!(fin.template_id, init[0], "{}", fin.template);
    assert_eq!(
        m.add("Starting TrustedInstaller initialization.")
            .template_id,
        init[0]
    );
    for i in 0..5 {
        m.add(&format!(
            "Session: 3054617{i}_42617224 initialized by client WindowsUpdateAgent."
        ));
    }
    let spp = m.add("Session: 30546999_11 initialized by client SPP.");
    assert!(!spp.template.contains("<*>."), "{}", spp.template);
    // A position whose words vary from the start is a variable before any evidence.
    let a = m.add("Invalid user admin from 1.2.3.4");
    let b = m.add("Invalid user oracle from 5.6.7.8");
    assert_eq!(a.template_id, b.template_id);
    for _ in 0..5 {
        assert_eq!(
            m.add("Invalid user test from 1.1.1.1").template_id,
            a.template_id
        );
    }
    // `key=value` pairs carry their variable in the token: not a constant word.
    let u: Vec<_> = ["root", "root", "root", "root", "uucp"]
        .iter()
        .map(|u| {
            m.add(&format!(
                "authentication failure; logname= uid=0 tty=ssh user={u}"
            ))
            .template_id
        })
        .collect();
    assert!(u.iter().all(|&x| x == u[0]));
    // Off, it merges as plain Drain does.
    let mut off = TemplateMiner::new(MinerConfig {
        constant_evidence: 0,
        ..MinerConfig::default()
    });
    let x = off.add("Session: 1_2 initialized by client WindowsUpdateAgent.");
    for _ in 0..3 {
        off.add("Session: 3_4 initialized by client WindowsUpdateAgent.");
    }
    let spp = off.add("Session: 5_6 initialized by client SPP.");
    assert_eq!(spp.template_id, x.template_id);
}

#[test]
fn dates_in_words_and_dotted_labels_are_variables() {
    let mut m = miner();
    let a = m.add("connection from 1.2.3.4 () at Mon Jun 20 03:40:59 2005");
    for d in ["Wed Jun 22 13:16:30 2005", "Sun Jul  3 10:05:25 2005"] {
        let r = m.add(&format!("connection from 5.6.7.8 () at {d}"));
        assert_eq!(r.template_id, a.template_id, "{}", r.template);
    }
    // A job label as the first token does not split the tree by job.
    let j =
        m.add("com.apple.CacheDelete.daily: told me to run this job; however, not for 12 seconds.");
    let k = m.add(
        "com.apple.icloud.fmfd.heartbeat: told me to run this job; however, not for 4390 seconds.",
    );
    assert_eq!(j.template_id, k.template_id, "{}", k.template);
}

#[test]
fn ids_are_stable_across_miners() {
    let mut a = miner();
    let mut b = miner();
    b.add("something else entirely");
    let x = a.add("Accepted password for root from 1.2.3.4 port 22 ssh2");
    let y = b.add("Accepted password for root from 9.9.9.9 port 2222 ssh2");
    assert_eq!(x.template_id, y.template_id);
}

#[test]
fn lru_bounds_clusters_and_keeps_tree_consistent() {
    let mut m = TemplateMiner::new(MinerConfig {
        max_clusters: 3,
        ..MinerConfig::default()
    });
    let words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta"];
    for (i, w) in words.iter().enumerate() {
        m.add(&format!("{w} happened once"));
        assert!(m.len() <= 3, "after {i}");
    }
    // The most recent ones survive and still match.
    let before = m.len();
    let r = m.add("eta happened once");
    assert!(!r.changed);
    assert_eq!(m.len(), before);
    // Evicted clusters come back with the same id (same founding text).
    let again = m.add("alpha happened once");
    assert_eq!(again.template_id, fnv1a64(b"alpha happened once"));
    assert_eq!(m.ids.len(), m.len());
    assert_tree_lists_each_live_cluster_once(&m);
}

#[test]
fn long_and_empty_lines() {
    let mut m = TemplateMiner::new(MinerConfig {
        max_tokens: 4,
        ..MinerConfig::default()
    });
    let r = m.add("a b c d e f g");
    assert_eq!(&*r.template, "a b c <*>");
    let e = m.add("");
    assert_eq!(&*e.template, "");
    assert_eq!(m.add("   ").template_id, e.template_id);
}

#[test]
fn random_input_never_panics_and_stays_bounded() {
    let mut m = TemplateMiner::new(MinerConfig {
        max_clusters: 50,
        max_tokens: 16,
        ..MinerConfig::default()
    });
    let alphabet: Vec<char> = "ab0123456789 :./-_=[]()<>*,\"\t\u{e9}\u{4e2d}xX"
        .chars()
        .collect();
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..5_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 60) as usize;
        let line: String = (0..len)
            .map(|i| alphabet[((seed >> (i % 50)) as usize + i * 7) % alphabet.len()])
            .collect();
        let r = m.add(&line);
        assert!(m.len() <= 50);
        assert!(m.ids.contains_key(&r.template_id));
    }
    assert_eq!(m.ids.len(), m.len());
    assert_eq!(m.templates().count(), m.len());
    assert_tree_lists_each_live_cluster_once(&m);
}

fn assert_tree_lists_each_live_cluster_once(m: &TemplateMiner) {
    fn walk(n: &Node, out: &mut Vec<u32>) {
        out.extend(&n.clusters);
        n.children.values().for_each(|c| walk(c, out));
    }
    let mut listed = Vec::new();
    m.roots.values().for_each(|r| walk(r, &mut listed));
    listed.sort_unstable();
    let mut live: Vec<u32> = (0..m.slots.len() as u32)
        .filter(|&s| m.slots[s as usize].is_some())
        .collect();
    live.sort_unstable();
    assert_eq!(listed, live);
}

#[test]
fn overflowing_children_share_a_wildcard() {
    let mut m = TemplateMiner::new(MinerConfig {
        max_children: 3,
        ..MinerConfig::default()
    });
    for w in ["a", "b", "c", "d", "e"] {
        m.add(&format!("{w} x y z"));
    }
    // c, d and e route through the shared `<*>` child and so may merge there.
    assert!(m.len() <= 5);
    let root = &m.roots[&4];
    assert!(root.children.len() <= 3);
}
