//! MySQL / MariaDB slow-log parser, streamed: the first byte picks a chunk size, the rest is
//! the log; chunked and whole parsing must agree (see `apus_ingest::fuzzing::slowlog`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| apus_ingest::fuzzing::slowlog(data));
