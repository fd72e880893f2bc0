//! The child's `PPROC_CHILD` environment variable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pproc_runtime::fuzzing::child_env(data));
