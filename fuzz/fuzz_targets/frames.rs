//! A stream of frames, read through a real connection and decoded by tag.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pproc_runtime::fuzzing::frames(data));
