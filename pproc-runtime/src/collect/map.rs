//! pprocess's `Map`, `Queue` and `pmap` as Rust iterators over an exchange,
//! with the back-pressure of `AsynQueue`'s ordered item producer.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::iter::Fuse;
use std::marker::PhantomData;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::exchange::{BatchSize, Exchange, Origin, Store};
use crate::child::channel::Channel;
use crate::error::{Error, Result};
use crate::parent::builder::Builder;
use crate::parent::call::Call;
use crate::parent::delivery::{Delivery, Returns};

/// The outcomes of started items: by index for a map, in order of arrival
/// for a queue.
struct Slots<T> {
    ordered: bool,
    done: BTreeMap<usize, Result<T>>,
    arrivals: VecDeque<(usize, Result<T>)>,
    /// How many calls are over.
    ended: usize,
}

impl<T> Slots<T> {
    fn new(ordered: bool) -> Self {
        Self {
            ordered,
            done: BTreeMap::new(),
            arrivals: VecDeque::new(),
            ended: 0,
        }
    }

    fn put(&mut self, index: usize, outcome: Result<T>) {
        if self.ordered {
            self.done.insert(index, outcome);
        } else {
            self.arrivals.push_back((index, outcome));
        }
    }

    fn held(&self) -> usize {
        self.done.len() + self.arrivals.len()
    }
}

impl<T> Store<T> for Slots<T> {
    fn store(&mut self, value: T, origin: &Origin<'_>) -> Result<()> {
        self.put(origin.index(), Ok(value));
        Ok(())
    }

    fn failed(&mut self, error: Error, origin: &Origin<'_>) -> Result<()> {
        self.put(origin.index(), Err(error));
        Ok(())
    }

    fn ended(&mut self, _origin: &Origin<'_>) -> Result<()> {
        self.ended += 1;
        Ok(())
    }
}

mod sealed {
    pub trait Sealed {}
    impl<R, S, V, K, F> Sealed for crate::Call<R, S, V, K, F> {}
    impl<F, T> Sealed for super::Fork<F, T> {}
}

/// What a [`Map`] or a [`Queue`] runs for an item: a [`Call`] (such as a
/// `#[parallel]` function's `call`), or a closure to fork ([`fork`]).
///
/// # Examples
///
/// ```
/// use pproc::{parallel, Channel, Task};
///
/// #[parallel]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// /// Runs a task for each of 1, 2 and 3, and sums what they deliver.
/// fn total<X: Task<Item = u64>>(task: impl FnMut(u64) -> X) -> pproc::Result<u64> {
///     Ok(pproc::pmap(task, 1..=3)?.into_iter().sum())
/// }
///
/// # fn main() -> pproc::Result<()> {
/// assert_eq!(total(square::call)?, 14);
/// // SAFETY: nothing else runs in this program while it forks.
/// let tenfold = |x: u64| unsafe { pproc::fork(move |ch: Channel<u64>| ch.send(&(10 * x)).unwrap()) };
/// assert_eq!(total(tenfold)?, 60);
/// # Ok(())
/// # }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a task that pproc can run in a child process",
    label = "the function given to a map returns `{Self}`, where a task is due",
    note = "a map's function makes each item's task, the call of a `#[parallel]` function: \
            `Map::new(square::call, items)`, or `Map::new(|x| power::call(x, 2), items)`",
    note = "a closure that captures nothing runs in a child through `pproc::closure`: \
            `Map::new(pproc::closure(|x: u64| x * x), items)`; pass what it needs as arguments",
    note = "to run a closure that captures in a child as it is, return `pproc::fork(...)` \
            from it (`unsafe`: it forks this process)"
)]
pub trait Task: sealed::Sealed {
    /// The type of the value it delivers.
    type Item;

    /// Starts it on `exchange`, or queues it there to start with the next
    /// batch; returns its index there.
    ///
    /// # Errors
    ///
    /// As [`Exchange::start`].
    #[doc(hidden)]
    fn launch<S: Store<Self::Item>>(self, exchange: &mut Exchange<S>) -> Result<usize>;
}

impl<R, S, V, K, F> Task for Call<R, S, V, K, F>
where
    K: Delivery,
    K::Item<R, V>: DeserializeOwned,
{
    type Item = K::Item<R, V>;

    fn launch<St: Store<Self::Item>>(self, exchange: &mut Exchange<St>) -> Result<usize> {
        Ok(exchange.enqueue(self))
    }
}

/// A closure to run in a forked child, as an item of a [`Map`] or a
/// [`Queue`]: see [`fork`].
///
/// # Examples
///
/// A closure uses what it captures from the parent, which is never
/// serialized:
///
/// ```
/// use pproc::{Channel, Fork, Map};
///
/// # fn main() -> pproc::Result<()> {
/// let words = ["fork", "a", "closure"];
/// let length = |i: usize| -> Fork<_, usize> {
///     let word = words[i];
///     // SAFETY: nothing else runs in this program while it forks.
///     unsafe { pproc::fork(move |ch: Channel<usize>| ch.send(&word.len()).unwrap()) }
/// };
/// let lengths: Vec<usize> = Map::new(length, 0..words.len()).collect::<pproc::Result<_>>()?;
/// assert_eq!(lengths, [4, 1, 7]);
/// # Ok(())
/// # }
/// ```
pub struct Fork<F, T> {
    f: F,
    _sends: PhantomData<fn(T)>,
}

/// Wraps `f` so that a [`Map`] or a [`Queue`] runs it in a forked child
/// (pprocess's `Map.create` and `Queue.create`), as
/// [`Exchange::create`] does: the values it sends on its channel are the
/// item's result.
///
/// # Safety
///
/// As [`Exchange::create`], whose contract applies when the map or queue
/// forks the child.
///
/// # Examples
///
/// ```
/// use pproc::{Channel, Map};
///
/// let squares: Vec<u64> = Map::new(
///     // SAFETY: nothing else runs in this program while it forks.
///     |x: u64| unsafe { pproc::fork(move |ch: Channel<u64>| ch.send(&(x * x)).unwrap()) },
///     0..5,
/// )
/// .collect::<pproc::Result<_>>()
/// .unwrap();
/// assert_eq!(squares, [0, 1, 4, 9, 16]);
/// ```
pub unsafe fn fork<T, F>(f: F) -> Fork<F, T>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce(Channel<T, ()>),
{
    Fork {
        f,
        _sends: PhantomData,
    }
}

impl<F, T> Task for Fork<F, T>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce(Channel<T, ()>),
{
    type Item = T;

    fn launch<S: Store<T>>(self, exchange: &mut Exchange<S>) -> Result<usize> {
        // SAFETY: whoever built the `Fork` accepted `create`'s contract.
        unsafe { exchange.create(self.f) }
    }
}

impl<F, T> fmt::Debug for Fork<F, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fork").finish_non_exhaustive()
    }
}

/// What [`Map`] and [`Queue`] share: the calls still to start, the exchange
/// that runs them, and the bounds on both.
struct Engine<C, T> {
    calls: Fuse<C>,
    exchange: Exchange<Slots<T>>,
    limit: usize,
    /// Whether the user set the limit: otherwise a cluster's slots set it.
    limit_chosen: bool,
    window: Option<usize>,
    /// Whether the user chose to reuse processes or not; by default they
    /// are reused, unless a deadline or a CPU limit is set, which bound
    /// each item's process.
    reuse: Option<bool>,
    started: usize,
    /// The first item the consumer has not had yet, or the furthest it
    /// asked for: the window runs ahead of it.
    cursor: usize,
    stopped: bool,
}

/// The number of cores, or 1 where it cannot be told.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

impl<C: Iterator, T> Engine<C, T> {
    fn new(calls: C, ordered: bool) -> Self {
        let limit = cores();
        let exchange = Exchange::new(Slots::new(ordered))
            .limit(limit)
            .reuse(true)
            .batch(BatchSize::Auto);
        Self {
            calls: calls.fuse(),
            exchange,
            limit,
            limit_chosen: false,
            window: None,
            reuse: None,
            started: 0,
            cursor: 0,
            stopped: false,
        }
    }

    /// Changes the exchange's options, keeping its state.
    /// Gives a progress bar the input's length, when the input tells it.
    #[cfg(feature = "progress")]
    fn progress_total(&mut self) {
        if let (low, Some(high)) = self.calls.size_hint()
            && low == high
        {
            let total = self.started + low;
            self.exchange.progress_total(total);
        }
    }

    fn configure(&mut self, f: impl FnOnce(Exchange<Slots<T>>) -> Exchange<Slots<T>>) {
        let ordered = self.exchange.get_ref().ordered;
        let exchange = std::mem::replace(&mut self.exchange, Exchange::new(Slots::new(ordered)));
        self.exchange = f(exchange);
    }

    fn in_flight(&self) -> usize {
        self.started - self.exchange.get_ref().ended
    }

    /// Finished outcomes not yet taken.
    fn held(&self) -> usize {
        self.exchange.get_ref().held()
    }

    /// Whether the window has room for another item: ahead of the cursor
    /// for a map; for a queue, counting what runs and what waits to be
    /// taken (a continuous call may send many values).
    fn room(&self) -> bool {
        if self.exchange.get_ref().ordered {
            self.started < self.cursor + self.window()
        } else {
            self.in_flight() + self.held() < self.window() || self.started <= self.cursor
        }
    }

    /// By default, twice what the workers can hold: a batch running on
    /// each and one more waiting for each.
    fn window(&self) -> usize {
        self.window
            .unwrap_or_else(|| 2 * self.limit * self.exchange.batch_size())
    }

    /// How many items may be started and not over: a batch for each
    /// worker and the next ones, as far as the window goes; with a process
    /// per item, the limit.
    fn ahead(&self) -> usize {
        if self.exchange.batches() {
            self.window()
        } else {
            self.limit
        }
    }

    /// Stops every child and starts nothing more.
    fn stop(&mut self) {
        // Dropping the exchange kills and reaps its children.
        let ordered = self.exchange.get_ref().ordered;
        self.exchange = Exchange::new(Slots::new(ordered));
        self.started = 0;
        self.stopped = true;
    }
}

impl<C, T> Engine<C, T>
where
    C: Iterator,
    C::Item: Task<Item = T>,
{
    /// Starts items while fewer than the limit run and the window ahead
    /// of the cursor has room.
    fn feed(&mut self) -> Result<()> {
        while !self.stopped && self.in_flight() < self.ahead() && self.room() {
            let Some(call) = self.calls.next() else {
                break;
            };
            call.launch(&mut self.exchange)?;
            self.started += 1;
        }
        // Queued together, so that they can go out in batches.
        self.exchange.dispatch()
    }

    /// Starts what may start, then waits until an outcome arrives. Returns
    /// `false` if nothing runs and nothing is left to start.
    fn pump(&mut self) -> Result<bool> {
        self.pump_within(None)
    }

    /// As [`pump`](Self::pump), waiting at most `timeout` for a result.
    fn pump_within(&mut self, timeout: Option<Duration>) -> Result<bool> {
        self.feed()?;
        if self.in_flight() == 0 {
            return Ok(false);
        }
        self.exchange.store(timeout)?;
        Ok(true)
    }
}

macro_rules! options {
    () => {
        /// At most `n` items run at once (at least one; by default, the
        /// number of cores).
        pub fn limit(mut self, n: usize) -> Self {
            let n = n.max(1);
            self.engine.limit = n;
            self.engine.limit_chosen = true;
            self.engine.configure(|ex| ex.limit(n));
            self
        }

        /// Whether the items run on reused worker processes, in batches
        /// (see [`batch`](Self::batch)): the default. `reuse(false)` runs
        /// each item in a process of its own, as pprocess does by default:
        /// nothing an item leaves in its process (a static, a leak, a
        /// changed directory) reaches the next, at the cost of a process
        /// start (about a millisecond) per item.
        ///
        /// Unless this is set, a [`builder`](Self::builder) with a
        /// [`deadline`](Builder::deadline) or a
        /// [`cpu_limit`](Builder::cpu_limit) also gives each item a process
        /// of its own, since those bound a process, not an item.
        pub fn reuse(mut self, reuse: bool) -> Self {
            self.engine.reuse = Some(reuse);
            self.engine.configure(|ex| ex.reuse(reuse));
            self
        }

        /// An item whose worker was on a host that was lost
        /// ([`Error::HostLost`]) runs again on another worker, up to
        /// `times` times, before it fails (see
        /// [`Exchange::retry_lost`]). None by default.
        pub fn retry_lost(mut self, times: usize) -> Self {
            self.engine.configure(|ex| ex.retry_lost(times));
            self
        }

        /// How many items a reused worker is sent at once: measured as
        /// the items run by default ([`BatchSize::Auto`]). No effect with
        /// [`reuse(false)`](Self::reuse).
        pub fn batch(mut self, batch: BatchSize) -> Self {
            self.engine.configure(|ex| ex.batch(batch));
            self
        }

        /// At most `n` items are started ahead of the consumer, running or
        /// finished and waiting for their turn (at least one; by default
        /// twice the limit). While the window is full no item starts: a
        /// slow item, or a consumer that lags, holds the input back instead
        /// of letting results pile up in memory. The window runs ahead of
        /// the next item to yield, or of the furthest item asked for with
        /// `Map::get`.
        pub fn window(mut self, n: usize) -> Self {
            self.engine.window = Some(n.max(1));
            self
        }

        /// The options children are started with. With a
        /// [`cluster`](Builder::cluster), as many items run at once as it
        /// has slots, unless a [`limit`](Self::limit) says otherwise.
        pub fn builder(mut self, builder: Builder) -> Self {
            let per_process = builder.bounds_each_process();
            let reuse = self.engine.reuse.unwrap_or(!per_process);
            if let Some(slots) = builder.cluster_slots()
                && !self.engine.limit_chosen
            {
                let n = slots.max(1);
                self.engine.limit = n;
                self.engine.configure(|ex| ex.limit(n));
            }
            self.engine.configure(|ex| ex.builder(builder).reuse(reuse));
            self
        }

        /// Runs `init` once in each process the items run in, before its
        /// first item: a `#[parallel]` function of no result, or a
        /// closure that captures nothing ([`pproc::call`](crate::call)).
        /// An initializer that panics fails the items of its process with
        /// [`Error::Setup`], and no other worker is started in its place;
        /// see [`Builder::initializer`].
        pub fn initializer<F>(mut self, init: Call<(), (), (), Returns, F>) -> Self {
            self.engine.configure(|ex| ex.initializer(init));
            self
        }

        /// Runs the items on the hosts of `cluster`, with the default
        /// options otherwise: `builder(Builder::new().cluster(cluster))`.
        pub fn cluster(self, cluster: &crate::remote::Cluster) -> Self {
            self.builder(Builder::new().cluster(cluster))
        }

        /// Shows a progress bar on standard error, where it is a terminal:
        /// items done out of the input's length, when the input tells it
        /// (feature `progress`).
        #[cfg(feature = "progress")]
        #[cfg_attr(docsrs, doc(cfg(feature = "progress")))]
        pub fn progress(mut self, on: bool) -> Self {
            self.engine.configure(|ex| ex.progress(on));
            self.engine.progress_total();
            self
        }

        /// Shows `bar`, a progress bar of yours, with the style you gave
        /// it (or in a `MultiProgress` you added it to): items done out of
        /// the input's length, when the input tells it (feature
        /// `progress`). pproc sets its length and position.
        #[cfg(feature = "progress")]
        #[cfg_attr(docsrs, doc(cfg(feature = "progress")))]
        pub fn progress_bar(mut self, bar: indicatif::ProgressBar) -> Self {
            self.engine.configure(|ex| ex.progress_bar(bar));
            self.engine.progress_total();
            self
        }

        super::progress::without_the_feature!();

        /// How many finished results are held, waiting to be yielded.
        #[must_use]
        pub fn held(&self) -> usize {
            self.engine.held()
        }
    };
}

/// What a wait for a map's or a queue's next result, bounded in time,
/// found. Not re-exported: for the async front's map stream, whose sealed
/// trait names it (public there, hence `pub`).
#[derive(Debug)]
#[cfg_attr(not(feature = "tokio"), allow(unreachable_pub))]
pub enum Within<T> {
    /// The next result.
    Item(T),
    /// No more results.
    End,
    /// Nothing yet.
    Later,
}

/// Runs `f(item)` for every item in child processes, at most as many at a
/// time as there are cores, and yields the results **in input order**
/// (pprocess's `Map`).
///
/// `f` turns an item into a [`Call`], such as a `#[parallel]` function's
/// `call`. Items are taken from the input lazily, so an endless input
/// works; at most [`window`](Self::window) items are started and not yet
/// yielded.
///
/// Items run on one worker process per core, reused from item to item and
/// sent items in batches sized as they run ([`BatchSize::Auto`]), so that
/// items of a few microseconds cost little more than they would on
/// threads, and items of seconds still spread over every worker. An item
/// that panics, aborts or is killed fails alone: the worker's other items
/// are delivered or run elsewhere. [`reuse(false)`](Self::reuse) gives
/// each item a process of its own instead, as pprocess does; so does a
/// [`Builder`] with a deadline.
///
/// A failed item (a panic, a kill, an error of its own) is yielded as
/// `Err` in its place, and the map ends there: the children still running
/// are killed and reaped. [`get`](Self::get) waits for one item, as
/// indexing pprocess's `Map` does. Dropping the map kills and reaps its
/// children.
///
/// # Examples
///
/// ```
/// use pproc::{parallel, Map};
///
/// #[parallel]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let squares: Vec<u64> = Map::new(square::call, 0..10).limit(4).collect::<pproc::Result<_>>()?;
/// assert_eq!(squares, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
///
/// // Endless input: only what is taken is computed.
/// let first: Vec<u64> = Map::new(square::call, 1..).take(3).collect::<pproc::Result<_>>()?;
/// assert_eq!(first, [1, 4, 9]);
/// # Ok(())
/// # }
/// ```
#[must_use = "a `Map` starts its items as it is iterated, and kills its children when dropped"]
pub struct Map<C, T> {
    engine: Engine<C, T>,
    next: usize,
    ended: bool,
    broken: Option<Error>,
}

impl<I: Iterator, F, X, T> Map<std::iter::Map<I, F>, T>
where
    F: FnMut(I::Item) -> X,
    X: Task<Item = T>,
{
    /// A map of `f` over `items`. Nothing starts until the first item is
    /// asked for.
    pub fn new<II: IntoIterator<IntoIter = I>>(f: F, items: II) -> Self {
        Self {
            engine: Engine::new(items.into_iter().map(f), true),
            next: 0,
            ended: false,
            broken: None,
        }
    }
}

impl<C: Iterator, T> Map<C, T> {
    options!();

    fn end(&mut self) {
        self.ended = true;
        self.engine.stop();
    }
}

impl<C, T> Map<C, T>
where
    C: Iterator,
    C::Item: Task<Item = T>,
{
    /// Waits for item `i` (counted from 0 in the input) and returns it
    /// (pprocess's `Map.__getitem__`). The window moves forward to `i`, so
    /// the items up to it start as the limit allows; their results stay in
    /// the map, to be yielded in their turn.
    ///
    /// `None` if the input has no item `i`, if it was yielded already, or
    /// if the map has ended before it.
    ///
    /// # Examples
    ///
    /// ```
    /// use pproc::{parallel, Map};
    ///
    /// #[parallel]
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    ///
    /// # fn main() {
    /// let mut map = Map::new(square::call, 0..10);
    /// assert_eq!(map.get(7).unwrap().ok(), Some(&49));
    /// assert_eq!(map.next().unwrap().unwrap(), 0); // still in order
    /// assert!(map.get(10).is_none());
    /// # }
    /// ```
    pub fn get(&mut self, i: usize) -> Option<Result<&T, &Error>> {
        if i < self.next {
            return None;
        }
        while !self.engine.exchange.get_ref().done.contains_key(&i) {
            if self.ended {
                return self.broken.as_ref().map(Err);
            }
            self.engine.cursor = self.engine.cursor.max(i);
            match self.engine.pump() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(error) => {
                    self.end();
                    return Some(Err(self.broken.insert(error)));
                }
            }
        }
        self.engine
            .exchange
            .get_ref()
            .done
            .get(&i)
            .map(Result::as_ref)
    }
}

impl<C, T> Iterator for Map<C, T>
where
    C: Iterator,
    C::Item: Task<Item = T>,
{
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        loop {
            match self.next_within(None) {
                Within::Item(next) => return Some(next),
                Within::End => return None,
                Within::Later => {}
            }
        }
    }
}

impl<C, T> Map<C, T>
where
    C: Iterator,
    C::Item: Task<Item = T>,
{
    /// The next result, as [`next`](Iterator::next), if it comes within
    /// `timeout` (`None` waits as long as it takes).
    pub(crate) fn next_within(&mut self, timeout: Option<Duration>) -> Within<Result<T>> {
        loop {
            let slots = self.engine.exchange.get_mut();
            if let Some(outcome) = slots.done.remove(&self.next) {
                self.next += 1;
                if outcome.is_err() {
                    self.end();
                }
                return Within::Item(outcome);
            }
            if self.ended {
                return Within::End;
            }
            self.engine.cursor = self.engine.cursor.max(self.next);
            match self.engine.pump_within(timeout) {
                Ok(true) => {}
                Ok(false) => {
                    self.end();
                    return Within::End;
                }
                Err(error) => {
                    self.end();
                    return Within::Item(Err(error));
                }
            }
            if timeout.is_some() && !self.engine.exchange.get_ref().done.contains_key(&self.next) {
                return Within::Later;
            }
        }
    }
}

/// Runs `f(item)` for every item in child processes, at most as many at a
/// time as there are cores, and yields the results **as they arrive**
/// (pprocess's `Queue`).
///
/// As [`Map`], but a failed item is yielded as `Err` in its place and the
/// queue goes on with the others. [`next_indexed`](Self::next_indexed)
/// tells which item each result belongs to.
///
/// # Examples
///
/// ```
/// use pproc::{parallel, Queue};
///
/// #[parallel]
/// fn square(x: u64) -> u64 {
///     assert!(x != 3, "three is unlucky");
///     x * x
/// }
///
/// # fn main() {
/// let (ok, failed): (Vec<_>, Vec<_>) = Queue::new(square::call, 0..6).partition(Result::is_ok);
/// let mut squares: Vec<u64> = ok.into_iter().map(Result::unwrap).collect();
/// squares.sort_unstable();
/// assert_eq!(squares, [0, 1, 4, 16, 25]);
/// assert_eq!(failed.len(), 1);
/// # }
/// ```
#[must_use = "a `Queue` starts its items as it is iterated, and kills its children when dropped"]
pub struct Queue<C, T> {
    engine: Engine<C, T>,
}

impl<I: Iterator, F, X, T> Queue<std::iter::Map<I, F>, T>
where
    F: FnMut(I::Item) -> X,
    X: Task<Item = T>,
{
    /// A queue of `f` over `items`. Nothing starts until the first result
    /// is asked for.
    pub fn new<II: IntoIterator<IntoIter = I>>(f: F, items: II) -> Self {
        Self {
            engine: Engine::new(items.into_iter().map(f), false),
        }
    }
}

impl<C: Iterator, T> Queue<C, T> {
    options!();

    /// Yields every value a channel-style function sends, not only its
    /// first (pprocess's `Queue(continuous=1)`): see
    /// [`Exchange::continuous`]. Each value comes with its item's index.
    pub fn continuous(mut self, continuous: bool) -> Self {
        self.engine.configure(|ex| ex.continuous(continuous));
        self
    }
}

impl<C, T> Queue<C, T>
where
    C: Iterator,
    C::Item: Task<Item = T>,
{
    /// Waits for item `i` (counted from 0 in the input) and returns it,
    /// starting the items up to it as the limit allows, whatever the
    /// window (the equivalent of pprocess's `Map.__getitem__` for a
    /// queue). It stays in the queue, to be yielded in its turn; with
    /// [`continuous`](Self::continuous), this is its first value.
    ///
    /// `None` if the input has no item `i`, or its result was yielded
    /// already.
    ///
    /// # Examples
    ///
    /// ```
    /// use pproc::{parallel, Queue};
    ///
    /// #[parallel]
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    ///
    /// # fn main() {
    /// let mut queue = Queue::new(square::call, 0..10).limit(2);
    /// assert_eq!(queue.get(9).unwrap().ok(), Some(&81));
    /// assert_eq!(queue.count(), 10); // every result is still yielded
    /// # }
    /// ```
    pub fn get(&mut self, i: usize) -> Option<Result<&T, &Error>> {
        loop {
            let arrived = self
                .engine
                .exchange
                .get_ref()
                .arrivals
                .iter()
                .any(|(index, _)| *index == i);
            if arrived {
                break;
            }
            if i < self.engine.started && self.engine.in_flight() == 0 {
                return None;
            }
            // Let the items up to `i` start, whatever the window.
            self.engine.cursor = self.engine.cursor.max(i);
            match self.engine.pump() {
                Ok(true) => {}
                Ok(false) | Err(_) => return None,
            }
        }
        self.engine
            .exchange
            .get_ref()
            .arrivals
            .iter()
            .find(|(index, _)| *index == i)
            .map(|(_, outcome)| outcome.as_ref())
    }

    /// The next result to arrive, with the index of its item in the input.
    pub fn next_indexed(&mut self) -> Option<(usize, Result<T>)> {
        loop {
            match self.next_within(None) {
                Within::Item(next) => return Some(next),
                Within::End => return None,
                Within::Later => {}
            }
        }
    }

    /// The next result to arrive, as [`next_indexed`](Self::next_indexed),
    /// if one comes within `timeout` (`None` waits as long as it takes).
    pub(crate) fn next_within(&mut self, timeout: Option<Duration>) -> Within<(usize, Result<T>)> {
        loop {
            if let Some((index, outcome)) = self.engine.exchange.get_mut().arrivals.pop_front() {
                return Within::Item((index, outcome));
            }
            match self.engine.pump_within(timeout) {
                Ok(true) => {}
                Ok(false) => {
                    // Every item is over: the workers go.
                    self.engine.stop();
                    return Within::End;
                }
                Err(error) => {
                    // The exchange itself failed: nothing more can arrive.
                    self.engine.stop();
                    return Within::Item((usize::MAX, Err(error)));
                }
            }
            if timeout.is_some() && self.engine.exchange.get_ref().arrivals.is_empty() {
                return Within::Later;
            }
        }
    }
}

impl<C, T> Iterator for Queue<C, T>
where
    C: Iterator,
    C::Item: Task<Item = T>,
{
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        self.next_indexed().map(|(_, outcome)| outcome)
    }
}

/// Maps `f` over `items` in child processes, at most as many at a time as
/// there are cores, and returns the results in input order (pprocess's
/// `pmap`).
///
/// # Errors
///
/// The first failed item's error, in input order; the other children are
/// killed and reaped.
///
/// # Examples
///
/// ```
/// use pproc::parallel;
///
/// #[parallel]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// # fn main() -> pproc::Result<()> {
/// assert_eq!(pproc::pmap(square::call, [1, 2, 3])?, [1, 4, 9]);
/// # Ok(())
/// # }
/// ```
pub fn pmap<I, F, X>(f: F, items: I) -> Result<Vec<X::Item>>
where
    I: IntoIterator,
    F: FnMut(I::Item) -> X,
    X: Task,
{
    Map::new(f, items).collect()
}

impl<C: Iterator, T> fmt::Debug for Map<C, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Map")
            .field("next", &self.next)
            .field("started", &self.engine.started)
            .field("held", &self.engine.held())
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl<C: Iterator, T> fmt::Debug for Queue<C, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("started", &self.engine.started)
            .field("held", &self.engine.held())
            .finish_non_exhaustive()
    }
}
