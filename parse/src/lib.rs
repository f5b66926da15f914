//! Pure parsers, no IO and no Arrow: the MySQL/MariaDB/Percona slow log ([`slowlog`]), the
//! SQL fingerprint ([`fingerprint`]), log template mining ([`templates`], with
//! [`templates::SharedMiner`]), the slow-query digest ([`digest`]) and the one quantile
//! sketch the digest and the stores' rollups share ([`sketch`]). Each works on
//! borrowed input and returns plain values; receivers and commands do the IO around them.
//!
//! Must never depend on: anything with IO (files, sockets, runtimes), Arrow, the stores.

#![warn(clippy::print_stdout)]

pub mod digest;
pub mod fingerprint;
pub mod sketch;
pub mod slowlog;
pub mod templates;
