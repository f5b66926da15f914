//! Query-API input: query strings (time ranges, filters, options) and user SQL (see
//! `apus_query::fuzzing::query_input`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    apus_query::fuzzing::query_input(data);
});
