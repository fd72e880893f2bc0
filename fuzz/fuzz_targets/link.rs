//! A host's link as its parent or its agent reads it: the first byte picks
//! the end, the rest is what the other end sent.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pproc_runtime::fuzzing::link(data));
