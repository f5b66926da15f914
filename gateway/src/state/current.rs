//! What the proxy reads on every request: the rules in force with their lanes' metric
//! handles and header values ([`Current`]), and the holding pen that frees replaced rule
//! sets off the proxy threads ([`Retired`]). How changes are made is the parent module.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use apus_control::ReleaseDoc;
use apus_rules::RuleSet;

use crate::metrics as m;
use crate::pools::Pool;

/// The rule set in force and its version.
pub struct Current {
    /// Version number of the release state.
    pub version: u64,
    /// The compiled rules.
    pub rules: RuleSet,
    /// The release state they were compiled from.
    pub doc: Arc<ReleaseDoc>,
    /// Metric handles and header values per route and lane: `lanes[route][0]` is stable,
    /// `[i + 1]` rule `i`.
    lanes: Vec<Vec<Lane>>,
}

/// What the request path needs of a lane, built once per rule version: its pool, its
/// metric handles and the values of the headers that tag its requests.
pub struct Lane {
    /// The pool its requests go to (`None`: a pool this node does not have).
    pub pool: Option<Arc<Pool>>,
    pub metrics: m::LaneMetrics,
    /// The tag header's value.
    pub tag: http::HeaderValue,
    /// `baggage` for a request that brings none: `{baggage_key}={tag}`.
    pub baggage: http::HeaderValue,
}

impl Lane {
    fn new(
        route: &str,
        pool: &str,
        tag: &str,
        baggage_key: &str,
        pools: &HashMap<String, Arc<Pool>>,
    ) -> Self {
        let value = |s: &str| http::HeaderValue::from_static(interned(s));
        Lane {
            pool: pools.get(pool).cloned(),
            metrics: m::LaneMetrics::new(route, pool, tag),
            tag: value(tag),
            baggage: value(&format!("{baggage_key}={tag}")),
        }
    }
}

/// `s` as a static header value, kept once per distinct text for the life of the process.
/// A static value's clones on the request path copy a pointer, where a shared one bumps a
/// reference count every proxy thread writes to. The texts are tags and their baggage
/// members (few, and bounded by the names operators give), so keeping them is cheap. Tags
/// are validated names; text that is not a header value tags nothing rather than failing
/// every request of its lane.
fn interned(s: &str) -> &'static str {
    static TEXTS: Mutex<Option<std::collections::HashSet<&'static str>>> = Mutex::new(None);
    if http::HeaderValue::from_str(s).is_err() {
        return "";
    }
    let mut texts = TEXTS.lock().unwrap_or_else(|e| e.into_inner());
    let texts = texts.get_or_insert_with(Default::default);
    match texts.get(s) {
        Some(t) => t,
        None => {
            let t: &'static str = Box::leak(s.into());
            texts.insert(t);
            t
        }
    }
}

impl Current {
    /// Wrap a rule set, resolving its lanes' pools, registering their metric handles and
    /// building their header values (`baggage_key` is the gateway's baggage member name).
    pub fn new(
        version: u64,
        rules: RuleSet,
        doc: Arc<ReleaseDoc>,
        baggage_key: &str,
        pools: &HashMap<String, Arc<Pool>>,
    ) -> Self {
        let lanes = rules
            .routes()
            .map(|r| {
                std::iter::once(Lane::new(
                    &r.name,
                    &r.stable_pool,
                    apus_rules::STABLE_TAG,
                    baggage_key,
                    pools,
                ))
                .chain(
                    r.gray_rules
                        .iter()
                        .map(|g| Lane::new(&r.name, &g.pool, &g.tag, baggage_key, pools)),
                )
                .collect()
            })
            .collect();
        Current {
            version,
            rules,
            doc,
            lanes,
        }
    }

    /// A decision's lane.
    pub fn lane(&self, d: apus_rules::Decision) -> &Lane {
        &self.lanes[d.route][d.rule.map_or(0, |i| i + 1)]
    }
}

/// Values replaced but maybe still referenced elsewhere, kept until this holds the last
/// reference, so that the thread that frees them is the one that sweeps.
pub struct Retired<T>(Mutex<Vec<Arc<T>>>);

impl<T> Default for Retired<T> {
    fn default() -> Self {
        Retired(Mutex::new(Vec::new()))
    }
}

impl<T> Retired<T> {
    /// Keep `old` until nobody else holds it (and free what nobody holds any more).
    pub fn retire(&self, old: Arc<T>) {
        self.sweep();
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(old);
    }

    /// Free (here) what nobody else holds; returns how many are still held.
    pub fn sweep(&self) -> usize {
        let dead: Vec<Arc<T>> = {
            let mut r = self.0.lock().unwrap_or_else(|e| e.into_inner());
            let (dead, live) = std::mem::take(&mut *r)
                .into_iter()
                .partition(|c| Arc::strong_count(c) == 1);
            *r = live;
            dead
        };
        if !dead.is_empty() {
            drop(dead);
            crate::release_freed_memory();
        }
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::{interned, Retired};
    use std::sync::Arc;

    #[test]
    fn interned_header_texts_are_kept_once() {
        let a = interned("gray-7");
        let b = interned(&String::from("gray-7"));
        assert_eq!(a, "gray-7");
        assert!(std::ptr::eq(a, b), "one copy per distinct text");
        assert_eq!(
            interned("bad\nvalue"),
            "",
            "not a header value: tags nothing"
        );
    }

    thread_local! {
        static RELEASES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    fn count_release() {
        RELEASES.with(|c| c.set(c.get() + 1));
    }

    #[test]
    fn retired_values_are_freed_by_the_sweeper_not_by_their_last_user() {
        // Counted per thread: other tests may install rule sets on theirs.
        crate::on_release_freed_memory(count_release);
        let releases = || RELEASES.with(|c| c.get());
        let r = Retired::default();
        let old = Arc::new(String::from("rule set v1"));
        let in_flight = old.clone();
        let watch = Arc::downgrade(&old);
        r.retire(old);
        assert_eq!(r.sweep(), 1, "a request still holds it");
        assert_eq!(releases(), 0, "nothing freed, nothing to hand back");
        drop(in_flight);
        assert!(
            watch.upgrade().is_some(),
            "the request's drop did not free it"
        );
        assert_eq!(r.sweep(), 0);
        assert!(watch.upgrade().is_none(), "the sweep freed it");
        assert_eq!(
            releases(),
            1,
            "and handed the memory back to the allocator's OS side"
        );
    }
}
