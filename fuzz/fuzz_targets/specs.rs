//! Release inputs: rollout, serial-release and gray-target JSON, config files of each
//! content type, file keys (see `apus_rules::fuzzing::release_input`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    apus_rules::fuzzing::release_input(data);
});
