//! Prometheus remote_write decoder, bounded to 1 MiB decoded (see
//! `apus_ingest::fuzzing::remote_write`). Each input is tried twice: as sent (a snappy block,
//! mostly malformed, for the snappy decoder) and snappy-compressed first, so that the
//! protobuf decoder behind snappy sees the fuzzer's bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    apus_ingest::fuzzing::remote_write(data);
    // Fails only for inputs over snappy's 4 GiB limit.
    if let Ok(body) = snap::raw::Encoder::new().compress_vec(data) {
        apus_ingest::fuzzing::remote_write(&body);
    }
});
