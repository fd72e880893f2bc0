//! A worker's result log as its parent reads it: a `LOG` frame's
//! position (the first eight bytes), then what the log holds.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pproc_runtime::fuzzing::log_frames(data);
});
