//! CIDR membership: IPv4 and IPv6 ranges merged into sorted, disjoint intervals and found by
//! binary search — O(log n) per lookup, no allocation, whatever the number of prefixes.
//! (Membership is all a gray rule needs, so the longest-prefix question reduces to "is the
//! address inside any prefix", which the merged intervals answer exactly.)

use ipnet::IpNet;
use std::net::IpAddr;

/// A set of CIDR ranges for fast membership tests.
#[derive(Debug, Clone, Default)]
pub struct CidrSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

fn merge<T: Ord + Copy>(mut v: Vec<(T, T)>, succ: impl Fn(T) -> Option<T>) -> Vec<(T, T)> {
    v.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(v.len());
    for (s, e) in v {
        if let Some(last) = out.last_mut() {
            let adjacent = succ(last.1).is_some_and(|n| n >= s);
            if s <= last.1 || adjacent {
                if e > last.1 {
                    last.1 = e;
                }
                continue;
            }
        }
        out.push((s, e));
    }
    out
}

fn contains<T: Ord + Copy>(v: &[(T, T)], x: T) -> bool {
    // Index of the first interval starting after x; the candidate is the one before it.
    let i = v.partition_point(|&(s, _)| s <= x);
    i > 0 && v[i - 1].1 >= x
}

impl CidrSet {
    /// Build from parsed networks.
    pub fn new(nets: &[IpNet]) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for n in nets {
            match n {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
            }
        }
        CidrSet {
            v4: merge(v4, |x: u32| x.checked_add(1)),
            v6: merge(v6, |x: u128| x.checked_add(1)),
        }
    }

    /// Whether no range is present.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Number of disjoint intervals after merging.
    pub fn intervals(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Whether `ip` lies inside any range. IPv4-mapped IPv6 addresses count as IPv4.
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => contains(&self.v4, u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => contains(&self.v4, u32::from(v4)),
                None => contains(&self.v6, u128::from(a)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &[&str]) -> CidrSet {
        CidrSet::new(&s.iter().map(|c| c.parse().unwrap()).collect::<Vec<_>>())
    }

    #[test]
    fn v4_membership_and_merge() {
        let s = set(&[
            "10.0.0.0/8",
            "10.1.0.0/16",
            "192.168.1.0/24",
            "192.168.2.0/24",
        ]);
        assert_eq!(s.intervals(), 2, "nested and adjacent ranges merge");
        assert!(s.contains("10.200.3.4".parse().unwrap()));
        assert!(s.contains("192.168.2.255".parse().unwrap()));
        assert!(!s.contains("192.168.3.0".parse().unwrap()));
        assert!(!s.contains("9.255.255.255".parse().unwrap()));
        assert!(
            s.contains("::ffff:10.0.0.1".parse().unwrap()),
            "v4-mapped v6"
        );
    }

    #[test]
    fn v6_membership() {
        let s = set(&["2001:db8::/32", "::1/128"]);
        assert!(s.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(s.contains("::1".parse().unwrap()));
        assert!(!s.contains("2001:db9::1".parse().unwrap()));
        assert!(!s.contains("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn full_ranges() {
        let s = set(&["0.0.0.0/0", "::/0"]);
        assert!(s.contains("255.255.255.255".parse().unwrap()));
        assert!(s.contains("ffff::1".parse().unwrap()));
    }
}
