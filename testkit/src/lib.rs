//! Dev-only test helpers shared by the integration tests of every crate: free loopback
//! ports, process guards that kill on drop, wait-until, and harnesses for the real servers
//! the tests start (ClickHouse, etcd).
//!
//! Must never be a normal (non-dev) dependency of any crate.
