//! Who gets a config file's gray release: client IPs or networks, client labels, or a
//! sticky percentage of instances (hashed on the instance ID the client sends, so an
//! instance stays in as the percentage grows).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::CidrSet;

/// The clients a gray release goes to: any that matches one of the criteria.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrayTarget {
    /// Client IPs or CIDRs.
    pub ips: Vec<String>,
    /// Labels a client must all carry (`zone=a`).
    pub labels: BTreeMap<String, String>,
    /// Sticky share of instances, 1 to 100.
    pub percent: Option<u8>,
}

/// What a client says of itself.
#[derive(Debug, Clone, Default)]
pub struct Client<'a> {
    pub ip: Option<IpAddr>,
    pub labels: BTreeMap<String, String>,
    pub instance: Option<&'a str>,
}

impl GrayTarget {
    pub fn check(&self) -> Result<(), String> {
        if self.ips.is_empty() && self.labels.is_empty() && self.percent.is_none() {
            return Err("a gray release needs `ips`, `labels` or `percent`".into());
        }
        if self.ips.len() > 10_000 || self.labels.len() > 32 {
            return Err("at most 10000 ips and 32 labels".into());
        }
        if let Some(p) = self.percent {
            if !(1..=100).contains(&p) {
                return Err(format!("percent {p}: between 1 and 100"));
            }
        }
        self.nets().map(|_| ())
    }

    fn nets(&self) -> Result<CidrSet, String> {
        let mut nets = Vec::new();
        for s in &self.ips {
            let n = match s.parse::<ipnet::IpNet>() {
                Ok(n) => n,
                Err(_) => match s.parse::<IpAddr>() {
                    Ok(ip) => ipnet::IpNet::from(ip),
                    Err(_) => return Err(format!("`{s}` is not an IP or CIDR")),
                },
            };
            nets.push(n);
        }
        Ok(CidrSet::new(&nets))
    }

    /// Whether `c` gets the gray release of file `key`.
    pub fn matches(&self, key: &str, c: &Client<'_>) -> bool {
        if let (Some(ip), Ok(nets)) = (c.ip, self.nets()) {
            if !self.ips.is_empty() && nets.contains(ip) {
                return true;
            }
        }
        if !self.labels.is_empty() && self.labels.iter().all(|(k, v)| c.labels.get(k) == Some(v)) {
            return true;
        }
        match (self.percent, c.instance) {
            (Some(p), Some(i)) if !i.is_empty() => {
                crate::hash::sticky_bucket(key, i.as_bytes()) <= u32::from(p)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ips_labels_and_sticky_monotonic_percentages() {
        let t = GrayTarget {
            ips: vec!["10.1.0.0/16".into(), "192.168.1.7".into()],
            labels: BTreeMap::from([("zone".into(), "a".into())]),
            percent: None,
        };
        t.check().unwrap();
        let c = |ip: &str, zone: &str| Client {
            ip: ip.parse().ok(),
            labels: if zone.is_empty() {
                BTreeMap::new()
            } else {
                BTreeMap::from([("zone".into(), zone.into())])
            },
            instance: None,
        };
        assert!(t.matches("k", &c("10.1.2.3", "")));
        assert!(t.matches("k", &c("192.168.1.7", "")));
        assert!(!t.matches("k", &c("192.168.1.8", "")));
        assert!(t.matches("k", &c("8.8.8.8", "a")));
        assert!(!t.matches("k", &c("8.8.8.8", "b")));
        assert!(GrayTarget::default().check().is_err());
        assert!(GrayTarget {
            ips: vec!["nope".into()],
            ..Default::default()
        }
        .check()
        .unwrap_err()
        .contains("nope"));
        // Percent: about the share asked for, and monotonic as it grows.
        let inst: Vec<String> = (0..2000).map(|i| format!("host-{i}")).collect();
        let share = |p: u8| -> Vec<bool> {
            let t = GrayTarget {
                percent: Some(p),
                ..Default::default()
            };
            inst.iter()
                .map(|i| {
                    t.matches(
                        "shop/prod/web/app.properties",
                        &Client {
                            instance: Some(i),
                            ..Default::default()
                        },
                    )
                })
                .collect()
        };
        let (s10, s50) = (share(10), share(50));
        let n10 = s10.iter().filter(|x| **x).count();
        assert!((150..250).contains(&n10), "{n10}");
        assert!(s10.iter().zip(&s50).all(|(a, b)| !a || *b), "monotonic");
        assert!(share(100).iter().all(|x| *x));
    }
}
