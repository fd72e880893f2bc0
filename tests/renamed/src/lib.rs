//! A crate that knows pproc only as `renamed`: `#[parallel]` and
//! `#[derive(Exchange)]` work here through their `crate = path` option,
//! whether the path names the dependency or a re-export of it. Its unit
//! tests start real children.

use std::collections::BTreeMap;

use renamed::{Exchange, Failure};

/// pproc, reached through a re-export, as a facade crate would offer it.
pub mod support {
    pub use renamed as pp;
}

/// Squares `x`, through the dependency's own name.
///
/// # Panics
///
/// If `x` is 13: a failure for the exchange to collect.
#[renamed::parallel(crate = renamed)]
#[must_use]
pub fn square(x: u64) -> u64 {
    assert!(x != 13, "unlucky");
    x * x
}

/// Names `x`, through a re-export, by a path relative to this module.
#[renamed::parallel(crate = self::support::pp)]
#[must_use]
pub fn named(x: u64) -> (u64, String) {
    (x, format!("#{x}"))
}

/// Sends `0..n` on its channel, through a path from the crate's root.
#[renamed::parallel(crate = crate::support::pp)]
#[expect(
    clippy::needless_pass_by_value,
    reason = "a channel-style function owns its end of the channel"
)]
pub fn count(ch: renamed::Channel<u64>, n: u64) {
    for i in 0..n {
        let _ = ch.send(&i);
    }
}

/// Functions of a module below the root.
pub mod nested {
    /// Halves `x`, through a path relative to the parent module.
    #[renamed::parallel(crate = super::support::pp)]
    #[must_use]
    pub fn half(x: u64) -> u64 {
        x / 2
    }
}

/// Each function's values in a field of its own, and the failures.
#[derive(Default, Exchange)]
#[store(crate = renamed)]
pub struct Routed {
    /// What `square` returned.
    #[store(from = square)]
    pub squares: Vec<u64>,
    /// What `named` returned.
    #[store(from = named)]
    pub names: BTreeMap<u64, String>,
    /// What `count` sent.
    #[store(from = count)]
    pub counted: Vec<u64>,
    /// What `half` returned.
    #[store(from = nested::half)]
    pub halves: Vec<u64>,
    /// The calls that failed.
    #[store(errors)]
    pub failures: Vec<Failure>,
}

/// Every value, through a re-export.
#[derive(Default, Exchange)]
#[store(crate = support::pp)]
pub struct Plain {
    /// All of them.
    #[store]
    pub all: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_run_in_children() {
        let h = square::start(7).unwrap();
        assert_ne!(h.pid(), std::process::id());
        assert_eq!(h.join().unwrap(), 49);
        assert_eq!(named::start(2).unwrap().join().unwrap().1, "#2");
        assert_eq!(nested::half::start(9).unwrap().join().unwrap(), 4);
        assert!(square::NAME.ends_with("::square"));
    }

    #[test]
    fn channel_functions_stream() {
        let h = count::start(3).unwrap();
        let got: Vec<u64> = h.iter().collect::<renamed::Result<_>>().unwrap();
        assert_eq!(got, [0, 1, 2]);
    }

    #[test]
    fn derived_stores_route_and_collect() {
        let mut ex = Exchange::new(Routed::default()).limit(4);
        for i in 11..15 {
            ex.start(square::call(i)).unwrap();
            ex.start(named::call(i)).unwrap();
        }
        ex.start(count::call(2)).unwrap();
        ex.start(nested::half::call(10)).unwrap();
        let routed = ex.finish().unwrap();
        let mut squares = routed.squares;
        squares.sort_unstable();
        assert_eq!(squares, [121, 144, 196]);
        assert_eq!(routed.names[&12], "#12");
        assert_eq!(routed.counted, [0]);
        assert_eq!(routed.halves, [5]);
        assert_eq!(routed.failures.len(), 1);
        assert!(routed.failures[0].error.is_panic());

        let mut ex = Exchange::new(Plain::default());
        ex.start(square::call(3)).unwrap();
        assert_eq!(ex.finish().unwrap().all, [9]);
    }
}
