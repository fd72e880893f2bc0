//! Every diagnostic the macros emit, and every type error they aim, pinned
//! by a compile-fail case in `tests/ui/`. Regenerate the snapshots with
//! `TRYBUILD=overwrite cargo test --test ui` and review the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}

/// Errors that only a build finds, not `cargo check`: a closure run in a
/// child that captures something is refused when the call is instantiated.
/// The passing case makes trybuild build rather than check, and runs.
#[test]
fn ui_build() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui-build/closure-passes-arguments.rs");
    t.compile_fail("tests/ui-build/closure-captures.rs");
}
