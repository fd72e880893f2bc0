//! How many calls a reusable worker is sent at once: the grain of the
//! work, measured as it runs, the way joblib's `batch_size="auto"` finds
//! it.
//!
//! A dispatch (one write of several `CALL` frames, and the worker's
//! wake-up) costs tens of microseconds whatever it carries. Tiny calls
//! sent one by one pay that for each; sent in batches that take a few
//! milliseconds each, they pay it once per batch. The worker still
//! answers each call with its own frame as soon as it is done, so a
//! worker that dies in the middle of a batch loses only the call it was
//! running.

use std::time::Duration;

/// How long one batch should take on its worker: long enough to hide a
/// dispatch's cost (well under 1 % of it), short enough that the last
/// batches of a map end close together.
pub(crate) const TARGET: Duration = Duration::from_millis(5);

/// The most calls one batch carries.
pub(crate) const MAX_BATCH: usize = 4096;

/// How many items a [`Map`](crate::Map) or a [`Queue`](crate::Queue) sends
/// a worker at once.
///
/// With [`Auto`](Self::Auto), the default, the first dispatch carries one
/// item; each batch that ends tells how long its items took, and the next
/// batch is sized so that it takes about 5 ms: the size at most doubles
/// from one batch to the next, and drops at once when items slow down. So
/// items of a millisecond or more go one at a time, and items of
/// microseconds go hundreds at a time, paying the cost of a dispatch once
/// per batch. Near the end of the input, batches shrink so that every
/// worker gets a share.
///
/// Results still arrive one by one, as each item ends, and a worker that
/// dies in the middle of a batch fails only the item it was running: the
/// items it had finished are delivered, the rest of its batch runs on
/// another worker.
///
/// # Examples
///
/// ```
/// use pproc::{parallel, BatchSize, Map};
///
/// #[parallel]
/// fn double(x: u64) -> u64 {
///     x * 2
/// }
///
/// # fn main() -> pproc::Result<()> {
/// // Ten items per dispatch, whatever they cost.
/// let doubled: Vec<u64> = Map::new(double::call, 0..100)
///     .batch(BatchSize::Fixed(10))
///     .collect::<pproc::Result<_>>()?;
/// assert_eq!(doubled[99], 198);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BatchSize {
    /// Measured as the items run (see above).
    #[default]
    Auto,
    /// This many items per dispatch (at least one).
    Fixed(usize),
}

/// The batch size an exchange uses now, and how it learns it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Grain {
    mode: BatchSize,
    size: usize,
}

impl Default for Grain {
    /// One call per dispatch: an exchange's own default.
    fn default() -> Self {
        Self::new(BatchSize::Fixed(1))
    }
}

impl Grain {
    pub(crate) fn new(mode: BatchSize) -> Self {
        let size = match mode {
            BatchSize::Auto => 1,
            BatchSize::Fixed(n) => n.clamp(1, MAX_BATCH),
        };
        Self { mode, size }
    }

    /// How many calls the next batch carries, at most.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Whether batches may carry more than one call.
    pub(crate) fn batches(&self) -> bool {
        self.mode == BatchSize::Auto || self.size > 1
    }

    /// A batch of `calls` calls took `took`, from its dispatch to its last
    /// result.
    pub(crate) fn measured(&mut self, took: Duration, calls: usize) {
        if self.mode != BatchSize::Auto || calls == 0 {
            return;
        }
        let per_call = took.as_nanos() / calls as u128;
        let ideal = TARGET.as_nanos().checked_div(per_call).unwrap_or(u128::MAX);
        let ideal = usize::try_from(ideal).unwrap_or(usize::MAX);
        // Grow at most twofold a batch, from what this batch carried: one
        // fast batch does not commit a worker to thousands of calls. Shrink
        // at once.
        let next = ideal.min(calls.max(self.size).saturating_mul(2));
        let was = self.size;
        self.size = next.clamp(1, MAX_BATCH);
        crate::trace::batch_size(was, self.size, calls, took);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn auto_grows_twofold_towards_the_target_and_stops_there() {
        let mut grain = Grain::new(BatchSize::Auto);
        assert_eq!(grain.size(), 1);
        // Calls of 10 µs: the target is 500 a batch.
        let mut sizes = Vec::new();
        for _ in 0..12 {
            let n = grain.size();
            grain.measured(us(10) * u32::try_from(n).unwrap(), n);
            sizes.push(grain.size());
        }
        assert_eq!(sizes[..9], [2, 4, 8, 16, 32, 64, 128, 256, 500]);
        assert_eq!(sizes[11], 500);
    }

    #[test]
    fn auto_shrinks_at_once_when_calls_slow_down() {
        let mut grain = Grain::new(BatchSize::Auto);
        grain.size = 500;
        // The batch took a second: 2 ms a call, so two or three a batch.
        grain.measured(Duration::from_secs(1), 500);
        assert_eq!(grain.size(), 2);
        // A call of a second: one at a time.
        grain.measured(Duration::from_secs(1), 1);
        assert_eq!(grain.size(), 1);
    }

    #[test]
    fn fixed_sizes_do_not_move_and_are_bounded() {
        let mut grain = Grain::new(BatchSize::Fixed(7));
        grain.measured(us(1), 7);
        assert_eq!(grain.size(), 7);
        assert_eq!(Grain::new(BatchSize::Fixed(0)).size(), 1);
        assert_eq!(Grain::new(BatchSize::Fixed(usize::MAX)).size(), MAX_BATCH);
        assert!(!Grain::default().batches());
        assert!(Grain::new(BatchSize::Auto).batches());
    }

    #[test]
    fn instant_batches_grow_without_dividing_by_zero() {
        let mut grain = Grain::new(BatchSize::Auto);
        grain.measured(Duration::ZERO, 1);
        assert_eq!(grain.size(), 2);
    }
}
