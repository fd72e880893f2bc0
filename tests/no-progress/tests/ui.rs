//! A progress method called without the `progress` feature: one error,
//! which says which feature to turn on. Regenerate the snapshot with
//! `TRYBUILD=overwrite cargo test` here and review the diff.

#[test]
fn ui() {
    if pproc::__private::PROGRESS {
        // A build with other packages of the workspace, which turn the
        // feature on: the calls compile there.
        eprintln!("pproc has its `progress` feature in this build: nothing to pin");
        return;
    }
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
