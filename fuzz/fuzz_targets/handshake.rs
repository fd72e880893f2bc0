//! Both halves of the manager's handshake, fed what the other side says.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pproc_runtime::fuzzing::handshake(data));
