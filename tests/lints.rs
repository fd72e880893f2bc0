//! Every `#[parallel]` form compiles without a warning under strict lints,
//! and runs.
#![deny(warnings, missing_docs, unreachable_pub, rust_2018_idioms)]
#![deny(clippy::all, clippy::pedantic)]

use pproc::{Channel, parallel};
use serde::{Deserialize, Serialize};

/// A value of the user's own type.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Across.
    pub x: i32,
    /// Down.
    pub y: i32,
}

/// Public, with arguments of the user's types.
#[parallel]
#[must_use]
pub fn shift(mut p: Point, by: i32) -> Point {
    p.x += by;
    p.y += by;
    p
}

/// Crate-visible, no arguments, no result.
#[parallel]
pub(crate) fn idle() {}

/// Private, with patterns and a raw identifier.
#[parallel]
fn patterns((a, b): (u8, u8), mut r#type: String) -> String {
    r#type.push(char::from(a + b));
    r#type
}

/// A channel with both types, and one with defaults.
#[parallel]
#[expect(
    clippy::needless_pass_by_value,
    reason = "a channel-style function owns its end of the channel"
)]
fn talk(ch: Channel<u32, String>) -> usize {
    let line = ch.recv().unwrap_or_default();
    ch.send(&7).ok();
    line.len()
}

#[parallel]
fn quiet(_ch: pproc::Channel) -> bool {
    true
}

/// Results of two functions and the failures, stored by the derive.
#[derive(Default, pproc::Exchange)]
pub struct Collected {
    /// The shifted points.
    #[store(from = shift)]
    pub points: Vec<Point>,
    /// The strings.
    #[store(from = patterns)]
    pub strings: Vec<String>,
    /// What failed.
    #[store(errors)]
    pub failures: Vec<pproc::Failure>,
}

/// Every value, twice over.
#[derive(Default, pproc::Exchange)]
pub struct Plain(#[store] Vec<u8>, #[store] std::collections::BTreeSet<u8>);

#[test]
fn every_derive_form_runs() -> pproc::Result<()> {
    let mut ex = pproc::Exchange::new(Collected::default());
    ex.start(shift::call(Point { x: 0, y: 0 }, 1))?;
    ex.start(patterns::call((1, 64), String::new()))?;
    let collected = ex.finish()?;
    assert_eq!(collected.points, [Point { x: 1, y: 1 }]);
    assert_eq!(collected.strings, ["A"]);
    assert!(collected.failures.is_empty());
    Ok(())
}

#[parallel]
fn byte(b: u8) -> u8 {
    b
}

/// A generic struct that routes.
#[derive(Default, pproc::Exchange)]
pub struct Keyed<T: Ord> {
    /// What `byte` returned.
    #[store(from = byte)]
    pub bytes: std::collections::BTreeSet<T>,
    /// What failed.
    #[store(errors)]
    pub failures: Vec<pproc::Failure>,
}

#[test]
fn a_generic_routing_derive_runs() -> pproc::Result<()> {
    let mut ex = pproc::Exchange::new(Keyed::<u8>::default());
    ex.start(byte::call(9))?;
    ex.start(byte::call(9))?;
    let keyed = ex.finish()?;
    assert_eq!(keyed.bytes.into_iter().collect::<Vec<_>>(), [9]);
    assert!(keyed.failures.is_empty());
    Ok(())
}

#[test]
fn a_tuple_struct_derive_runs() -> pproc::Result<()> {
    let mut ex = pproc::Exchange::new(Plain::default());
    ex.start(byte::call(7))?;
    ex.start(byte::call(7))?;
    let Plain(all, distinct) = ex.finish()?;
    assert_eq!((all.len(), distinct.len()), (2, 1));
    Ok(())
}

/// With the crate path spelled out.
#[parallel(crate = ::pproc)]
fn spelled(b: u8) -> u8 {
    b
}

/// Stored with the crate path spelled out.
#[derive(Default, pproc::Exchange)]
#[store(crate = ::pproc)]
pub struct Spelled {
    /// What `spelled` returned.
    #[store(from = spelled)]
    pub bytes: Vec<u8>,
}

#[test]
fn the_crate_option_runs() -> pproc::Result<()> {
    assert_eq!(spelled::start(3)?.join()?, 3);
    let mut ex = pproc::Exchange::new(Spelled::default());
    ex.start(spelled::call(4))?;
    assert_eq!(ex.finish()?.bytes, [4]);
    Ok(())
}

#[test]
fn every_form_runs() -> pproc::Result<()> {
    assert_eq!(
        shift::start(Point { x: 1, y: 2 }, 3)?.join()?,
        Point { x: 4, y: 5 }
    );
    idle::start()?.join()?;
    assert_eq!(patterns::start((32, 33), "x".into())?.join()?, "xA");
    let h = talk::start()?;
    h.send(&"four".to_string())?;
    assert_eq!(h.recv()?, 7);
    assert_eq!(h.join()?, 4);
    assert!(quiet::start()?.join()?);
    Ok(())
}
