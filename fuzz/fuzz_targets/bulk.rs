//! Elasticsearch `_bulk` body: action/document pairing, document mapping and per-item
//! results (see `apus_ingest::fuzzing::bulk`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| apus_ingest::fuzzing::bulk(data));
