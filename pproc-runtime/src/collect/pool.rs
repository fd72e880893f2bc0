//! A pool of persistent worker processes that run any registered function,
//! call after call.

use std::any::Any;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use super::exchange::{BatchSize, Exchange, Origin, Store};
use crate::error::{Error, Result};
use crate::lock::lock;
use crate::parent::builder::Builder;
use crate::parent::call::Call;
use crate::parent::delivery::{Delivery, Returns};

/// How long one turn of driving the pool may hold its lock, so that other
/// threads can start calls meanwhile.
const TURN: Duration = Duration::from_millis(10);

/// The results of the pool's calls, by index, kept until joined.
#[derive(Default)]
struct Results {
    done: HashMap<usize, Result<Box<dyn Any + Send>>>,
    /// Indices in the order their results arrived.
    arrivals: VecDeque<usize>,
    /// Calls whose result nobody waits for any more.
    abandoned: HashSet<usize>,
}

impl Results {
    fn put(&mut self, index: usize, outcome: Result<Box<dyn Any + Send>>) {
        if !self.abandoned.remove(&index) {
            self.done.insert(index, outcome);
            self.arrivals.push_back(index);
        }
    }
}

impl<T: Send + 'static> Store<T> for Results {
    fn store(&mut self, value: T, origin: &Origin<'_>) -> Result<()> {
        self.put(origin.index(), Ok(Box::new(value)));
        Ok(())
    }

    fn failed(&mut self, error: Error, origin: &Origin<'_>) -> Result<()> {
        self.put(origin.index(), Err(error));
        Ok(())
    }
}

/// The exchange that a pool's handles share.
type Workers = Arc<Mutex<Exchange<Results>>>;

/// `n` persistent worker processes that run any `#[parallel]` function,
/// call after call.
///
/// [`start`](Self::start) runs a call on the next free worker (it waits in
/// line while all are busy) and returns a [`Pending`] result to
/// [`join`](Pending::join). A worker that dies (a panic with
/// `panic = "abort"`, `kill -9`, the OOM killer) fails only the call it was
/// running, with the matching [`Error`], and a fresh worker takes its place.
/// [`recycle`](Self::recycle) replaces workers after a number of calls.
///
/// The pool can be shared between threads (it is `Send` and `Sync`); its
/// workers are driven by whichever thread waits for a result. Dropping the
/// pool and its pending results, or [`shutdown`](Self::shutdown), stops and
/// reaps every worker; none outlives the program.
///
/// # Examples
///
/// ```
/// use pproc::{parallel, Pool};
///
/// #[parallel]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// #[parallel]
/// fn greet(name: String) -> String {
///     format!("hello, {name}")
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let pool = Pool::new(2)?;
/// let a = pool.start(square::call(7))?;
/// let b = pool.start(greet::call("pool".into()))?;
/// assert_eq!(a.join()?, 49);
/// assert_eq!(b.join()?, "hello, pool");
/// assert_eq!(pool.map(square::call, 0..5)?, [0, 1, 4, 9, 16]);
/// pool.shutdown()?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
#[must_use = "a `Pool` stops and reaps its workers when it is dropped"]
pub struct Pool {
    shared: Workers,
}

impl Pool {
    /// Starts `n` workers (at least one).
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] if a worker cannot be started.
    pub fn new(n: usize) -> Result<Self> {
        Self::with_builder(n, Builder::new())
    }

    /// Starts `n` workers (at least one) with the options of `builder`.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] if a worker cannot be started.
    pub fn with_builder(n: usize, builder: Builder) -> Result<Self> {
        let n = n.max(1);
        let mut exchange = Exchange::new(Results::default())
            .limit(n)
            .reuse(true)
            .batch(BatchSize::Auto)
            .builder(builder);
        exchange.keep_workers(n)?;
        Ok(Self {
            shared: Arc::new(Mutex::new(exchange)),
        })
    }

    /// Starts `n` workers (at least one), each of which runs `init` once
    /// before its first call: a `#[parallel]` function of no result, or a
    /// closure that captures nothing ([`pproc::call`](crate::call)). This
    /// is `with_builder(n, Builder::new().initializer(init))` (see
    /// [`Builder::initializer`]): a worker whose initializer panicked
    /// fails every call it is given with [`Error::Setup`], and is not
    /// replaced.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] if a worker cannot be started.
    ///
    /// # Examples
    ///
    /// ```
    /// use pproc::{parallel, Pool};
    /// use std::sync::atomic::{AtomicU64, Ordering};
    ///
    /// static SCALE: AtomicU64 = AtomicU64::new(1);
    ///
    /// #[parallel]
    /// fn scaled(x: u64) -> u64 {
    ///     x * SCALE.load(Ordering::Relaxed)
    /// }
    ///
    /// # fn main() -> pproc::Result<()> {
    /// let init = pproc::call(10_u64, |s: u64| SCALE.store(s, Ordering::Relaxed));
    /// let pool = Pool::with_initializer(2, init)?;
    /// assert_eq!(pool.map(scaled::call, 1..=3)?, [10, 20, 30]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_initializer<F>(n: usize, init: Call<(), (), (), Returns, F>) -> Result<Self> {
        Self::with_builder(n, Builder::new().initializer(init))
    }

    /// One worker for each slot of `cluster`, on its hosts (see
    /// [`Builder::cluster`]).
    ///
    /// # Errors
    ///
    /// [`Error::Launch`](crate::Error::Launch) if no host can be reached,
    /// [`Error::Spawn`](crate::Error::Spawn) if a worker cannot be started.
    pub fn on(cluster: &crate::remote::Cluster) -> Result<Self> {
        Self::with_builder(cluster.slots(), Builder::new().cluster(cluster))
    }

    /// Replaces each worker by a fresh process after `calls` calls (at
    /// least one).
    pub fn recycle(self, calls: usize) -> Self {
        self.reconfigure(|exchange| exchange.recycle(calls))
    }

    fn reconfigure(self, f: impl FnOnce(Exchange<Results>) -> Exchange<Results>) -> Self {
        {
            let mut exchange = lock(&self.shared);
            let taken = std::mem::replace(&mut *exchange, Exchange::new(Results::default()));
            *exchange = f(taken);
        }
        self
    }

    /// Shows a progress bar on standard error, where it is a terminal:
    /// calls ended out of calls started (feature `progress`).
    #[cfg(feature = "progress")]
    #[cfg_attr(docsrs, doc(cfg(feature = "progress")))]
    pub fn progress(self, on: bool) -> Self {
        self.reconfigure(|exchange| exchange.progress(on))
    }

    /// Shows `bar`, a progress bar of yours, with the style you gave it
    /// (or in a `MultiProgress` you added it to): calls ended out of calls
    /// started (feature `progress`). pproc sets its length and position.
    #[cfg(feature = "progress")]
    #[cfg_attr(docsrs, doc(cfg(feature = "progress")))]
    pub fn progress_bar(self, bar: indicatif::ProgressBar) -> Self {
        self.reconfigure(|exchange| exchange.progress_bar(bar))
    }

    super::progress::without_the_feature!();

    /// Runs `call` on the next free worker; it waits in line while all are
    /// busy. Never blocks for long: results are collected by whoever waits
    /// for one.
    ///
    /// # Errors
    ///
    /// Only if the pool itself fails (its poll set); a call that cannot run
    /// fails when it is joined.
    pub fn start<R, S, V, K, F>(&self, call: Call<R, S, V, K, F>) -> Result<Pending<K::Item<R, V>>>
    where
        K: Delivery,
        K::Item<R, V>: DeserializeOwned + Send + 'static,
    {
        let index = lock(&self.shared).start(call)?;
        Ok(self.pending(index))
    }

    fn pending<T>(&self, index: usize) -> Pending<T> {
        Pending {
            shared: Arc::clone(&self.shared),
            index: Some(index),
            _result: PhantomData,
        }
    }

    /// Runs `f(item)` for every item on the pool's workers and returns the
    /// results in input order. The items go to the workers in batches, as
    /// a [`Map`](crate::Map)'s do (see [`BatchSize`]).
    ///
    /// # Errors
    ///
    /// The first failed item's error, in input order.
    pub fn map<I: IntoIterator, R, S, V, K, F2>(
        &self,
        f: impl FnMut(I::Item) -> Call<R, S, V, K, F2>,
        items: I,
    ) -> Result<Vec<K::Item<R, V>>>
    where
        K: Delivery,
        K::Item<R, V>: DeserializeOwned + Send + 'static,
    {
        // Queued together, so that they go to the workers in batches.
        let mut exchange = lock(&self.shared);
        let indices: Vec<usize> = items
            .into_iter()
            .map(f)
            .map(|call| exchange.enqueue(call))
            .collect();
        let dispatched = exchange.dispatch();
        drop(exchange);
        // Joined or dropped, each result is claimed: none stays behind.
        let pending: Vec<Pending<K::Item<R, V>>> =
            indices.into_iter().map(|i| self.pending(i)).collect();
        dispatched?;
        pending.into_iter().map(Pending::join).collect()
    }

    /// Runs `f(item)` for every item on the pool's workers and yields the
    /// results as they arrive, each with its item's index; a failed item is
    /// yielded as `Err` in its place.
    ///
    /// # Errors
    ///
    /// Only if the pool itself fails.
    pub fn queue<I, F, R, S, V, K, F2>(&self, f: F, items: I) -> Result<Arrivals<K::Item<R, V>>>
    where
        I: IntoIterator,
        F: FnMut(I::Item) -> Call<R, S, V, K, F2>,
        K: Delivery,
        K::Item<R, V>: DeserializeOwned + Send + 'static,
    {
        let mut arrivals = Arrivals {
            shared: Arc::clone(&self.shared),
            items: HashMap::new(),
            _result: PhantomData,
        };
        let mut exchange = lock(&self.shared);
        for (n, call) in items.into_iter().map(f).enumerate() {
            arrivals.items.insert(exchange.enqueue(call), n);
        }
        exchange.dispatch()?;
        drop(exchange);
        Ok(arrivals)
    }

    /// Waits for the calls started so far, then stops every worker and
    /// reaps it. Pending results not joined yet stay joinable.
    ///
    /// # Errors
    ///
    /// If the pool itself fails.
    pub fn shutdown(self) -> Result<()> {
        let mut exchange = lock(&self.shared);
        while exchange.unfinished() {
            exchange.store(None)?;
        }
        exchange.stop_workers()
    }
}

fn downcast<T: 'static>(outcome: Result<Box<dyn Any + Send>>) -> Result<T> {
    outcome.and_then(|value| {
        value.downcast::<T>().map(|v| *v).map_err(|_| Error::Codec {
            message: format!("the result is not of type `{}`", std::any::type_name::<T>()),
        })
    })
}

/// The results of [`Pool::queue`], as they arrive: an iterator of each
/// item's index and result. Dropping it abandons the results still to come.
///
/// # Examples
///
/// ```
/// use pproc::{parallel, Pool};
///
/// #[parallel]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let pool = Pool::new(2)?;
/// let mut arrived: Vec<(usize, u64)> = Vec::new();
/// for (index, result) in pool.queue(square::call, [7, 8, 9])? {
///     arrived.push((index, result?)); // in the order they arrive
/// }
/// arrived.sort_unstable();
/// assert_eq!(arrived, [(0, 49), (1, 64), (2, 81)]);
/// pool.shutdown()?;
/// # Ok(())
/// # }
/// ```
pub struct Arrivals<T> {
    shared: Workers,
    /// The pool's index of each call still to come, and its item's index.
    items: HashMap<usize, usize>,
    _result: PhantomData<fn() -> T>,
}

impl<T: 'static> Iterator for Arrivals<T> {
    type Item = (usize, Result<T>);

    fn next(&mut self) -> Option<(usize, Result<T>)> {
        while !self.items.is_empty() {
            let mut exchange = lock(&self.shared);
            let results = exchange.get_mut();
            if let Some(at) = results
                .arrivals
                .iter()
                .position(|i| self.items.contains_key(i))
            {
                let index = results.arrivals.remove(at)?;
                let outcome = results.done.remove(&index)?;
                let item = self.items.remove(&index)?;
                return Some((item, downcast(outcome)));
            }
            if let Err(error) = exchange.store(Some(TURN)) {
                drop(exchange);
                self.abandon();
                return Some((usize::MAX, Err(error)));
            }
        }
        None
    }
}

impl<T> Arrivals<T> {
    fn abandon(&mut self) {
        let mut exchange = lock(&self.shared);
        let results = exchange.get_mut();
        for (index, _) in self.items.drain() {
            if results.done.remove(&index).is_some() {
                results.arrivals.retain(|&i| i != index);
            } else {
                results.abandoned.insert(index);
            }
        }
    }
}

impl<T> Drop for Arrivals<T> {
    fn drop(&mut self) {
        self.abandon();
    }
}

impl<T> fmt::Debug for Arrivals<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Arrivals")
            .field("to_come", &self.items.len())
            .finish_non_exhaustive()
    }
}

/// The result of a call running on a [`Pool`], to be joined.
///
/// Dropping it without joining abandons the result: the call runs on, and
/// its result is dropped when it arrives.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pproc::{parallel, Pool};
///
/// #[parallel]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let pool = Pool::new(2)?;
/// let mut pending = pool.start(square::call(12))?;
/// assert_eq!(pending.join_timeout(Duration::from_secs(10))?, 144);
/// assert!(pending.is_finished()?); // joined: nothing left to wait for
/// let results: Vec<_> = (0..4).map(|x| pool.start(square::call(x))).collect::<pproc::Result<_>>()?;
/// let squares = results.into_iter().map(|p| p.join()).collect::<pproc::Result<Vec<_>>>()?;
/// assert_eq!(squares, [0, 1, 4, 9]);
/// # Ok(())
/// # }
/// ```
#[must_use = "the call's result is dropped with its `Pending`: `join` it"]
pub struct Pending<R> {
    shared: Workers,
    index: Option<usize>,
    _result: PhantomData<fn() -> R>,
}

impl<R: 'static> Pending<R> {
    /// Waits for the result.
    ///
    /// # Errors
    ///
    /// As [`Handle::join`](crate::Handle::join): [`Error::Panicked`],
    /// [`Error::Signaled`] if the worker was killed,
    /// [`Error::StackOverflow`] (named for this call) if it overflowed its
    /// stack, [`Error::Codec`], ...
    pub fn join(mut self) -> Result<R> {
        self.wait(None)
    }

    /// Waits at most `timeout` for the result. On [`Error::Timeout`] the
    /// call goes on and can be joined again.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`], or as [`join`](Self::join).
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<R> {
        self.wait(Some(Instant::now() + timeout))
    }

    /// Whether the result has arrived. Collects what has arrived, without
    /// waiting.
    ///
    /// # Errors
    ///
    /// If the pool itself fails.
    pub fn is_finished(&self) -> Result<bool> {
        let Some(index) = self.index else {
            return Ok(true);
        };
        let mut exchange = lock(&self.shared);
        exchange.store(Some(Duration::ZERO))?;
        Ok(exchange.get_ref().done.contains_key(&index))
    }

    fn wait(&mut self, deadline: Option<Instant>) -> Result<R> {
        let Some(index) = self.index else {
            return Err(Error::Disconnected);
        };
        loop {
            let mut exchange = lock(&self.shared);
            if let Some(outcome) = exchange.get_mut().done.remove(&index) {
                exchange.get_mut().arrivals.retain(|&i| i != index);
                self.index = None;
                return downcast(outcome);
            }
            let turn = match deadline {
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::Timeout);
                    }
                    left.min(TURN)
                }
                None => TURN,
            };
            exchange.store(Some(turn))?;
        }
    }
}

impl<R> Drop for Pending<R> {
    fn drop(&mut self) {
        if let Some(index) = self.index.take() {
            let mut exchange = lock(&self.shared);
            let results = exchange.get_mut();
            if results.done.remove(&index).is_some() {
                results.arrivals.retain(|&i| i != index);
            } else {
                results.abandoned.insert(index);
            }
        }
    }
}

impl<R> fmt::Debug for Pending<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}
