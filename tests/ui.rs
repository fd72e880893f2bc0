//! Every diagnostic the macros emit, and every type error they aim, pinned
//! by a compile-fail case in `tests/ui/`. Regenerate the snapshots with
//! `TRYBUILD=overwrite cargo test --test ui` and review the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
