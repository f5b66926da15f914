//! Gray rules as a rule file (TOML) and as an admin API body (JSON): parse, compile, route
//! (see `apus_rules::fuzzing`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    apus_rules::fuzzing::rule_file(data);
    apus_rules::fuzzing::rule_body(data);
});
