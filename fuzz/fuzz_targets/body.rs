//! One frame's body, decoded as its tag (the first byte) says.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some((&tag, body)) = data.split_first() {
        pproc_runtime::fuzzing::body(tag, body);
    }
});
