//! A program whose `pproc::setup!` function panics in every child: each
//! call fails with `Error::Setup`, a pool's workers stay and are not
//! replaced, and nothing is left behind.

use pproc::{Error, Pool, parallel};
use pproc_workspace::children;

fn broken_setup() {
    panic!("the config file is missing");
}

pproc::setup!(broken_setup);

#[parallel]
fn one() -> u8 {
    1
}

fn is_setup_error(err: &Error) -> bool {
    matches!(err, Error::Setup { name, message }
        if name.ends_with("broken_setup") && message == "the config file is missing")
}

#[test]
fn a_failing_setup_fails_every_call_of_its_process() {
    let err = one::start().unwrap().join().unwrap_err();
    assert!(is_setup_error(&err), "{err:?}");
    assert!(
        err.to_string().contains("broken_setup") && err.to_string().contains("config file"),
        "{err}"
    );

    let pool = Pool::new(2).unwrap();
    let mut before = children();
    before.sort_unstable();
    for _ in 0..20 {
        let err = pool.start(one::call()).unwrap().join().unwrap_err();
        assert!(is_setup_error(&err), "{err:?}");
    }
    let mut after = children();
    after.sort_unstable();
    assert_eq!(after, before, "no worker was replaced");
    pool.shutdown().unwrap();
    assert_eq!(children(), Vec::<u32>::new());
}
