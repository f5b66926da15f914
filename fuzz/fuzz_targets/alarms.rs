//! Alarm inputs: rule files, silences, matchers, conditions, durations, templates (see
//! `apus_rules::fuzzing::alarm_input`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    apus_rules::fuzzing::alarm_input(data);
});
