//! In-flight byte budgets, one per receiver: a request takes its `Content-Length` (a
//! streamed slow log a fixed share) from its receiver's budget before its body is read,
//! and gives it back when answered. A request that does not fit gets 429 with
//! `Retry-After`, so overload costs clients a retry instead of costing the process its
//! memory.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::metrics as m;
use crate::IngestError;

/// What a streamed request (no `Content-Length`, or the slow-log receiver) is charged.
pub const STREAM_CHARGE: usize = 8 << 20;

/// The budgets of every receiver.
pub struct Budgets {
    limit: usize,
    retry_after_s: u64,
    used: Counters,
}

/// Bytes in flight per receiver name (eight fixed entries).
struct Counters(Vec<(&'static str, Arc<AtomicUsize>)>);

impl Counters {
    fn get(&self, k: &str) -> Arc<AtomicUsize> {
        self.0
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, c)| c.clone())
            .unwrap_or_else(|| self.0[0].1.clone())
    }
}

/// The receiver a path belongs to.
fn receiver(path: &str) -> &'static str {
    match path {
        "/ingest/v1/logs" => "logs",
        "/api/v1/write" => "remote_write",
        "/ingest/v1/metrics" => "metrics",
        "/ingest/v1/access" => "access",
        "/ingest/v1/changes" => "changes",
        "/ingest/v1/slowlog" => "slowlog",
        p if p.ends_with("/_bulk") => "bulk",
        _ => "other",
    }
}

impl Budgets {
    /// Budgets of `limit` bytes per receiver.
    pub fn new(limit: usize, retry_after_s: u64) -> Budgets {
        let names = [
            "other",
            "logs",
            "bulk",
            "remote_write",
            "metrics",
            "access",
            "changes",
            "slowlog",
        ];
        Budgets {
            limit: limit.max(1 << 20),
            retry_after_s,
            used: Counters(
                names
                    .iter()
                    .map(|n| (*n, Arc::new(AtomicUsize::new(0))))
                    .collect(),
            ),
        }
    }

    fn take(&self, counter: &AtomicUsize, n: usize) -> bool {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                // One request always fits an idle receiver, whatever its size.
                (used == 0 || used + n <= self.limit).then_some(used + n)
            })
            .is_ok()
    }
}

struct Charge(Arc<AtomicUsize>, usize);

impl Drop for Charge {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::AcqRel);
    }
}

/// The middleware.
pub async fn admit(State(b): State<Arc<Budgets>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let name = receiver(path);
    if name == "other" {
        return next.run(req).await;
    }
    let n = match name {
        "slowlog" => STREAM_CHARGE,
        _ => req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(STREAM_CHARGE),
    };
    let counter = b.used.get(name);
    if !b.take(&counter, n) {
        metrics::counter!(m::THROTTLED, "reason" => "inflight").increment(1);
        return IngestError::Overloaded(
            format!(
                "receiver `{name}` has {} bytes in flight (limit {}); retry",
                counter.load(Ordering::Acquire),
                b.limit
            ),
            b.retry_after_s,
        )
        .into_response();
    }
    let _charge = Charge(counter, n);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_admit_until_full_and_release_on_drop() {
        let b = Budgets::new(4 << 20, 1);
        let c = b.used.get("logs");
        assert!(b.take(&c, 3 << 20));
        assert!(!b.take(&c, 2 << 20));
        let charge = Charge(c.clone(), 3 << 20);
        drop(charge);
        assert!(b.take(&c, 2 << 20));
        // An idle receiver takes one request of any size.
        let s = b.used.get("slowlog");
        assert!(b.take(&s, 100 << 20));
        assert_eq!(receiver("/shop/_bulk"), "bulk");
    }
}
