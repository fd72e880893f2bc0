//! Requests of an authenticated manager client, answered by a real server.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pproc_runtime::fuzzing::manager_request(data));
