//! The servers a pool sends requests to, kept ready for the request path. Pingora's
//! `LoadBalancer::select_with` walks its selector, hashes every candidate (SipHash) to look
//! up its health and to keep its iteration unique, and bumps one round-robin cursor every
//! proxy thread writes; then the proxy looked the chosen server's counters up by address.
//! A rotation is that answer precomputed: the servers in rotation (health-checked ready,
//! admitted, not drained) with their counters, rebuilt whenever one of those inputs changes
//! (a health flip, an admission, a drain, a membership update), and a round-robin cursor
//! per thread slot.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::ServerStats;

/// Cursor slots: threads beyond this many share slots (still correct, only contended).
const SLOTS: usize = 8;

/// A round-robin cursor on a cache line of its own.
#[repr(align(64))]
#[derive(Default)]
struct Cursor(AtomicUsize);

/// One server in rotation and its live counts.
pub(super) struct Slot {
    pub addr: SocketAddr,
    pub stats: Arc<ServerStats>,
}

#[derive(Default)]
pub(super) struct Rotation {
    servers: ArcSwap<Vec<Slot>>,
    cursors: [Cursor; SLOTS],
    /// Serialises rebuilds, so the last one stored is the last one computed.
    rebuilding: Mutex<()>,
}

/// This thread's cursor slot.
fn thread_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static SLOT: usize = NEXT.fetch_add(1, Relaxed) % SLOTS);
    SLOT.with(|s| *s)
}

impl Rotation {
    /// Replace the servers in rotation with what `compute` says now (rebuilds are
    /// serialised, so a slower, older computation never overwrites a newer one).
    pub fn rebuild(&self, compute: impl FnOnce() -> Vec<Slot>) {
        let _g = self.rebuilding.lock().unwrap_or_else(|p| p.into_inner());
        self.servers.store(Arc::new(compute()));
    }

    /// The next server in rotation that `ok` accepts, round robin per thread slot.
    #[inline]
    pub fn pick(&self, ok: impl Fn(SocketAddr) -> bool) -> Option<(SocketAddr, Arc<ServerStats>)> {
        let servers = self.servers.load();
        let n = servers.len();
        if n == 0 {
            return None;
        }
        let start = self.cursors[thread_slot()].0.fetch_add(1, Relaxed);
        (0..n)
            .map(|i| &servers[(start + i) % n])
            .find(|s| ok(s.addr))
            .map(|s| (s.addr, s.stats.clone()))
    }

    /// The addresses in rotation now.
    #[cfg(test)]
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.servers.load().iter().map(|s| s.addr).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(a: &str) -> Slot {
        Slot {
            addr: a.parse().unwrap(),
            stats: Arc::default(),
        }
    }

    #[test]
    fn round_robin_skips_what_the_caller_refuses() {
        let r = Rotation::default();
        assert!(r.pick(|_| true).is_none(), "empty rotation");
        r.rebuild(|| {
            vec![
                slot("10.0.0.1:80"),
                slot("10.0.0.2:80"),
                slot("10.0.0.3:80"),
            ]
        });
        let picks: Vec<SocketAddr> = (0..6).map(|_| r.pick(|_| true).unwrap().0).collect();
        for a in r.addrs() {
            assert_eq!(picks.iter().filter(|p| **p == a).count(), 2, "{picks:?}");
        }
        let two: SocketAddr = "10.0.0.2:80".parse().unwrap();
        for _ in 0..6 {
            assert_ne!(r.pick(|a| a != two).unwrap().0, two);
        }
        assert!(r.pick(|_| false).is_none());
    }
}
