//! A worker's `CALL` frame body: a function's name, then its arguments.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pproc_runtime::fuzzing::call_body(data));
