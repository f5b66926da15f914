//! Every metric the gateway emits: names, labels and descriptions in one place.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Requests, labels: route, pool, tag, status class (`2xx` ...).
pub const REQUESTS: &str = "apus_gateway_requests_total";
/// End-to-end latency in seconds, labels: route, pool, tag.
pub const LATENCY: &str = "apus_gateway_request_duration_seconds";
/// Upstream server health (1 healthy, 0 not), labels: pool, server.
pub const UPSTREAM_HEALTHY: &str = "apus_gateway_upstream_healthy";
/// Current rule-set version.
pub const RULE_VERSION: &str = "apus_gateway_rule_version";
/// Access-log records dropped because the channel was full.
pub const ACCESS_LOG_DROPPED: &str = "apus_gateway_access_log_dropped_total";
/// Access-log records written by the sink.
pub const ACCESS_LOG_WRITTEN: &str = "apus_gateway_access_log_written_total";
/// Connect failures retried on another server, label: pool.
pub const RETRIES: &str = "apus_gateway_upstream_retries_total";
/// Requests answered 503 because a pool had no healthy server, label: pool.
pub const NO_HEALTHY: &str = "apus_gateway_no_healthy_upstream_total";
/// Servers ejected by passive health (consecutive upstream timeouts).
pub const EJECTED: &str = "apus_gateway_upstream_ejected_total";
/// Admin API changes, labels: kind, outcome.
pub const ADMIN_CHANGES: &str = "apus_gateway_admin_changes_total";
/// Changes to protected environments applied by an admin's emergency bypass.
pub const EMERGENCY_BYPASS: &str = "apus_gateway_emergency_bypass_total";

/// Register descriptions with the installed recorder.
pub fn describe() {
    describe_counter!(
        REQUESTS,
        "requests proxied, by route, pool, tag and status class"
    );
    describe_histogram!(
        LATENCY,
        Unit::Seconds,
        "request latency through the gateway"
    );
    describe_gauge!(UPSTREAM_HEALTHY, "1 if the upstream server is in rotation");
    describe_gauge!(RULE_VERSION, "version of the rule set in force");
    describe_counter!(
        ACCESS_LOG_DROPPED,
        "access-log records dropped (channel full)"
    );
    describe_counter!(ACCESS_LOG_WRITTEN, "access-log records handed to the sink");
    describe_counter!(
        RETRIES,
        "upstream connect failures retried on another server"
    );
    describe_counter!(NO_HEALTHY, "requests refused with 503: no healthy upstream");
    describe_counter!(
        EJECTED,
        "servers taken out by passive health after consecutive upstream timeouts"
    );
    describe_counter!(
        ADMIN_CHANGES,
        "admin API change attempts by kind and outcome"
    );
    describe_counter!(
        EMERGENCY_BYPASS,
        "changes to protected environments applied by an admin bypassing approvals"
    );
}

/// Status classes in the order [`LaneMetrics::requests`] keeps them.
pub const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// The index of a status code's class in [`STATUS_CLASSES`].
pub fn status_class(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100) - 1,
        _ => 5,
    }
}

/// Metric handles of one lane (route × pool × tag), registered once per rule version so
/// the request path only bumps atomics instead of hashing labels.
pub struct LaneMetrics {
    requests: [metrics::Counter; 6],
    latency: metrics::Histogram,
}

impl LaneMetrics {
    /// Register the handles of a lane.
    pub fn new(route: &str, pool: &str, tag: &str) -> Self {
        let (r, p, t) = (route.to_string(), pool.to_string(), tag.to_string());
        LaneMetrics {
            requests: STATUS_CLASSES.map(|c| {
                metrics::counter!(REQUESTS, "route" => r.clone(), "pool" => p.clone(), "tag" => t.clone(), "status" => c)
            }),
            latency: metrics::histogram!(LATENCY, "route" => r, "pool" => p, "tag" => t),
        }
    }

    /// Count one request.
    #[inline]
    pub fn record(&self, status: u16, seconds: f64) {
        self.requests[status_class(status)].increment(1);
        self.latency.record(seconds);
    }
}
