//! pprocess's `Exchange`: many children at once, their results stored as
//! they arrive, with a limit on how many run at a time.

mod grain;
mod member;
mod poller;
mod store;

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use self::grain::BatchSize;
use self::grain::Grain;
use self::member::{Member, State, Worker};
use self::poller::Poller;
use self::store::Job;
pub use self::store::{Failure, Origin, Route, Store};
use super::progress::Bar;
use crate::child::channel::Channel;
use crate::child::entry::run_forked;
use crate::error::{Error, Result};
use crate::parent::builder::Builder;
use crate::parent::call::Call;
use crate::parent::delivery::{Delivery, Returns, Streams};
use crate::parent::function::ByName;
use crate::parent::handle::Handle;
use crate::process::fork::fork;
use crate::process::setup;
use crate::wire::conn::Conn;
use crate::wire::wait::Deadline;

/// The name of the children that [`Exchange::create`] forks, as their
/// handles and origins report it.
const FORKED: &str = "pproc::create";

/// A call waiting for a free place under the limit.
struct Queued<S> {
    job: Job<S>,
    args: Result<Vec<u8>, String>,
    /// How many times a lost host took it back ([`Exchange::retry_lost`]).
    lost: usize,
}

/// Runs many children and stores their results as they arrive (pprocess's
/// `Exchange`).
///
/// `S` is the store: a [`Vec`], your own [`Store`] implementation, or a
/// struct with `#[derive(Exchange)]`. With a [`limit`](Self::limit),
/// [`start`](Self::start) queues calls while the exchange is
/// [`busy`](Self::busy), and starts them as children finish: at no time do
/// more child processes live than the limit. With [`reuse`](Self::reuse), a
/// child that has delivered its result takes the next queued call instead
/// of exiting. Readiness is polled with epoll, so a wait costs the same with
/// one or a thousand idle children.
///
/// # What is stored
///
/// A function that returns its value delivers that value. A channel-style
/// function ([`Streams`]) delivers the values it sends: by default only its
/// first, after which its channel is closed (see
/// [`autoclose`](Self::autoclose)) and its place goes to the next call once
/// it has exited; with [`continuous`](Self::continuous), every value it
/// sends, until it returns. Its return value is not stored, as in pprocess;
/// a panic or a kill is a failure of the call in every case, and so is a
/// return without a value when one was owed (not `continuous`):
/// [`Error::Disconnected`]. So every call but a continuous one ends in
/// exactly one value or one failure.
///
/// # What blocks, what queues, what is reaped when
///
/// | method | blocks |
/// | --- | --- |
/// | [`start`](Self::start), [`Managed::call`] | never: over the limit the call queues, and starts when a place frees up |
/// | [`add`](Self::add), [`remove`](Self::remove) | never; `add` ignores the limit |
/// | [`add_wait`](Self::add_wait), [`wait`](Self::wait) | while [`busy`](Self::busy), storing results |
/// | [`create`](Self::create) | until a new process may start, storing results |
/// | [`store`](Self::store), [`ready`](Self::ready) | up to their timeout, until something is stored (is ready) |
/// | [`finish`](Self::finish) | until every call, queued ones included, has ended and every process has exited |
///
/// A child that returns its value is reaped when its result is stored. A
/// streaming child is reaped once it has exited, after its first value (its
/// channel closed at that value by [`autoclose`](Self::autoclose)) or, with
/// [`continuous`](Self::continuous), after its last. A reusable worker lives
/// until `finish`, which closes its channel and reaps it. Dropping the
/// exchange kills and reaps every child it still holds; so does the first
/// failure the store does not take.
///
/// # Examples
///
/// ```
/// use pproc::{parallel, Exchange};
///
/// #[parallel]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let mut ex = Exchange::new(Vec::new()).limit(2); // at most 2 children at once
/// for i in 0..20 {
///     ex.start(square::call(i))?; // queues while busy
/// }
/// let mut squares: Vec<u64> = ex.finish()?;
/// squares.sort_unstable();
/// assert_eq!(squares[7], 49);
/// # Ok(())
/// # }
/// ```
///
/// A channel-style child that streams its values, all of them stored:
///
/// ```
/// use pproc::{parallel, Channel, Exchange};
///
/// #[parallel]
/// fn row(ch: Channel<(u32, u32)>, i: u32) {
///     for j in 0..4 {
///         ch.send(&(i, i * j)).unwrap();
///     }
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let mut ex = Exchange::new(Vec::new()).limit(2).continuous(true);
/// for i in 0..3 {
///     ex.start(row::call(i))?;
/// }
/// let cells: Vec<(u32, u32)> = ex.finish()?;
/// assert_eq!(cells.len(), 12);
/// # Ok(())
/// # }
/// ```
#[must_use = "an `Exchange` kills its children when it is dropped"]
pub struct Exchange<S> {
    store: S,
    limit: Option<usize>,
    reuse: bool,
    recycle: Option<usize>,
    /// Workers kept alive at all times (a pool's size), replaced as soon as
    /// one dies or is recycled.
    keep_workers: usize,
    continuous: bool,
    autoclose: bool,
    builder: Builder,
    members: Vec<Option<Member<S>>>,
    waiting: VecDeque<Queued<S>>,
    poller: Poller,
    next_index: usize,
    bar: Bar,
    /// How many queued calls an idle worker is sent at once.
    grain: Grain,
    /// How many times a call runs again after its host was lost.
    retry_lost: usize,
}

impl<S> Exchange<S> {
    /// An exchange that stores results in `store`, with no limit.
    pub fn new(store: S) -> Self {
        Self {
            store,
            limit: None,
            reuse: false,
            recycle: None,
            keep_workers: 0,
            continuous: false,
            autoclose: true,
            builder: Builder::new(),
            members: Vec::new(),
            waiting: VecDeque::new(),
            poller: Poller::default(),
            next_index: 0,
            bar: Bar::default(),
            grain: Grain::default(),
            retry_lost: 0,
        }
    }

    /// At most `n` child processes live at once (at least one).
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n.max(1));
        self
    }

    /// Reuse processes (pprocess's `reuse`, `MakeReusable`): calls given to
    /// [`start`](Self::start) run on worker processes that take the next
    /// queued call when they finish one, instead of a new process per call.
    /// A worker that dies fails only the call it was running; a new worker
    /// takes the next one. Workers are stopped when the exchange is dropped
    /// or finished. A streaming call on a worker delivers its first value
    /// (every value with [`continuous`](Self::continuous)) and the worker
    /// moves on when the call returns.
    pub fn reuse(mut self, reuse: bool) -> Self {
        self.reuse = reuse;
        self
    }

    /// With [`reuse`](Self::reuse), a worker is replaced by a fresh
    /// process after `calls` calls (at least one), which bounds what a
    /// leaky function can accumulate in one process.
    pub fn recycle(mut self, calls: usize) -> Self {
        self.recycle = Some(calls.max(1));
        self
    }

    /// With [`reuse`](Self::reuse), a call whose worker was on a host that
    /// was lost ([`Error::HostLost`](crate::Error::HostLost)) runs again,
    /// first in line, on another worker (on a
    /// [`cluster`](crate::Builder::cluster), the host with the most slots
    /// free that can be reached), up to `times` times; only then does it
    /// fail. A streaming call that has delivered a value is not run
    /// again. None is by default: nothing runs twice unless asked, since a
    /// call may have done part of its work before its host went.
    ///
    /// Without `reuse`, each call's arguments go to its process and are
    /// not kept: a lost call fails.
    pub fn retry_lost(mut self, times: usize) -> Self {
        self.retry_lost = times;
        self
    }

    /// With [`reuse`](Self::reuse), sends idle workers queued calls in
    /// batches of this size (see [`BatchSize`]); one at a time by default.
    /// A worker runs the calls of a batch one after the other, answering
    /// each as it ends.
    pub(crate) fn batch(mut self, batch: BatchSize) -> Self {
        self.grain = Grain::new(batch);
        self
    }

    /// How many calls a batch carries now, at most: 1 without batching.
    pub(crate) fn batch_size(&self) -> usize {
        if self.reuse { self.grain.size() } else { 1 }
    }

    /// Whether calls go to workers in batches.
    pub(crate) fn batches(&self) -> bool {
        self.reuse && self.grain.batches()
    }

    /// Starts idle reusable workers until `n` processes live (or the limit
    /// is reached), so that the first calls find them ready.
    pub(crate) fn keep_workers(&mut self, n: usize) -> Result<()> {
        self.keep_workers = n;
        self.spawn_workers(n)
    }

    /// Starts workers up to the number kept, if one was set.
    fn replenish(&mut self) -> Result<()> {
        if self.keep_workers > 0 {
            self.spawn_workers(self.keep_workers)?;
        }
        Ok(())
    }

    fn spawn_workers(&mut self, n: usize) -> Result<()> {
        while self.members.iter().flatten().filter(|m| m.live()).count() < n && !self.full() {
            let handle = self.builder.start_worker()?;
            self.insert(handle, Self::idle())?;
        }
        Ok(())
    }

    /// Store every value a channel-style child sends, not only its first
    /// (pprocess's `continuous`): the child keeps its place until it
    /// returns. No effect on functions that return their value.
    pub fn continuous(mut self, continuous: bool) -> Self {
        self.continuous = continuous;
        self
    }

    /// Whether the channel of a child is closed as soon as its call has
    /// delivered its value (pprocess's `autoclose`, on by default). This
    /// matters for a channel-style child without
    /// [`continuous`](Self::continuous): after its first value, the
    /// exchange shuts its channel down (its further sends fail with
    /// [`Error::Disconnected`]) and reaps it once it exits.
    ///
    /// With `autoclose(false)` the channel stays open and the child stays
    /// in the exchange, unread, until you take its handle with
    /// [`remove`](Self::remove) to go on talking to it, or until
    /// [`finish`](Self::finish) closes it. While it lives it keeps its place
    /// under the limit.
    ///
    /// Either way, a child that goes on running after its channel closed
    /// keeps its place until it exits, and [`finish`](Self::finish) waits
    /// for it.
    pub fn autoclose(mut self, autoclose: bool) -> Self {
        self.autoclose = autoclose;
        self
    }

    /// The options children are started with. An
    /// [`initializer`](Self::initializer) set before stays, unless
    /// `builder` has one.
    pub fn builder(mut self, builder: Builder) -> Self {
        self.builder = builder.keeping_init(&self.builder);
        self
    }

    /// Runs `init` once in each process the exchange starts, before its
    /// first call: a `#[parallel]` function of no result, or a closure
    /// that captures nothing ([`pproc::call`](crate::call)). One that
    /// panics fails that process's calls with [`Error::Setup`]; see
    /// [`Builder::initializer`].
    pub fn initializer<F>(mut self, init: Call<(), (), (), Returns, F>) -> Self {
        self.builder = self.builder.initializer(init);
        self
    }

    /// Shows a progress bar on standard error, where it is a terminal:
    /// calls ended out of calls given (feature `progress`).
    #[cfg(feature = "progress")]
    #[cfg_attr(docsrs, doc(cfg(feature = "progress")))]
    pub fn progress(mut self, on: bool) -> Self {
        self.bar.show(on);
        self
    }

    /// Shows `bar`, a progress bar of yours, with the style you gave it
    /// (or in a `MultiProgress` you added it to): calls ended out of calls
    /// given (feature `progress`). pproc sets its length and position.
    ///
    /// # Examples
    ///
    /// ```
    /// use pproc::indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget};
    /// use pproc::{parallel, Exchange};
    ///
    /// #[parallel]
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    ///
    /// # fn main() -> pproc::Result<()> {
    /// let bars = MultiProgress::with_draw_target(ProgressDrawTarget::hidden());
    /// let bar = bars.add(ProgressBar::new(0));
    /// let mut ex = Exchange::new(Vec::new()).progress_bar(bar.clone());
    /// for x in 0..3 {
    ///     ex.start(square::call(x))?;
    /// }
    /// ex.finish()?;
    /// assert_eq!((bar.position(), bar.length()), (3, Some(3)));
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "progress")]
    #[cfg_attr(docsrs, doc(cfg(feature = "progress")))]
    pub fn progress_bar(mut self, bar: indicatif::ProgressBar) -> Self {
        self.bar.show_bar(bar);
        self
    }

    super::progress::without_the_feature!();

    /// The progress bar's total, known up front.
    #[cfg(feature = "progress")]
    pub(crate) fn progress_total(&mut self, calls: usize) {
        self.bar.total(calls);
    }

    /// The store, as it is now.
    pub fn get_ref(&self) -> &S {
        &self.store
    }

    /// The store, to change it while the exchange runs.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// The calls running now.
    #[must_use]
    pub fn active(&self) -> Vec<Origin<'_>> {
        self.members
            .iter()
            .flatten()
            .filter(|m| m.running())
            .filter_map(|m| Some(m.job()?.origin(Some(m.handle.pid()))))
            .collect()
    }

    fn active_count(&self) -> usize {
        self.members
            .iter()
            .flatten()
            .filter(|m| m.running())
            .count()
    }

    /// Whether as many calls run as the limit allows.
    #[must_use]
    pub fn busy(&self) -> bool {
        self.limit.is_some_and(|limit| self.active_count() >= limit)
    }

    /// Whether no new process may start: as many live processes (running,
    /// idle workers, delivered children not yet exited) as the limit
    /// allows.
    fn full(&self) -> bool {
        self.limit.is_some_and(|limit| {
            self.members.iter().flatten().filter(|m| m.live()).count() >= limit
        })
    }

    /// Whether calls are running or waiting to start.
    #[must_use]
    pub fn unfinished(&self) -> bool {
        self.active_count() > 0 || !self.waiting.is_empty()
    }

    /// Puts a started child in a free slot, in `state`, and watches it;
    /// returns the slot.
    fn insert(&mut self, handle: Handle<(), (), ()>, state: State<S>) -> Result<usize> {
        let slot = self
            .members
            .iter()
            .position(Option::is_none)
            .unwrap_or_else(|| {
                self.members.push(None);
                self.members.len() - 1
            });
        let watched = self.poller.add(slot, &handle)?;
        self.members[slot] = Some(Member {
            handle,
            state,
            watched,
        });
        Ok(slot)
    }

    /// Stops watching the socket of the member in `slot`.
    fn unwatch_socket(&mut self, slot: usize) -> Result<()> {
        match self.members.get_mut(slot).and_then(Option::as_mut) {
            Some(member) => self.poller.drop_socket(&member.handle, &mut member.watched),
            None => Ok(()),
        }
    }

    /// Stops watching the member in `slot` at all.
    fn unwatch_all(&mut self, slot: usize) -> Result<()> {
        match self.members.get_mut(slot).and_then(Option::as_mut) {
            Some(member) => self.poller.drop_all(&member.handle, &mut member.watched),
            None => Ok(()),
        }
    }

    /// Takes the member in `slot` out of the exchange.
    fn take(&mut self, slot: usize) -> Result<Option<Member<S>>> {
        self.unwatch_all(slot)?;
        Ok(self.members.get_mut(slot).and_then(Option::take))
    }

    /// Starts queued calls while there is room: on idle workers first,
    /// in batches, then in new processes.
    fn fill(&mut self) -> Result<()> {
        while !self.waiting.is_empty() {
            if self.reuse
                && let Some(slot) = self.idle_worker()
            {
                let batch = self.next_batch(slot);
                self.hand_over(slot, batch)?;
                continue;
            }
            if self.full() {
                return Ok(());
            }
            if self.reuse {
                // A new worker, idle: the next turn sends it its batch.
                match self.builder.start_worker() {
                    Ok(handle) => self.insert(handle, Self::idle()).map(drop)?,
                    Err(error) => {
                        if let Some(queued) = self.waiting.pop_front() {
                            self.fail(queued.job, error)?;
                        }
                    }
                }
            } else if let Some(queued) = self.waiting.pop_front() {
                self.launch(queued)?;
            }
        }
        Ok(())
    }

    fn idle_worker(&self) -> Option<usize> {
        self.members
            .iter()
            .position(|m| m.as_ref().is_some_and(Member::idle))
    }

    /// Takes the calls for the idle worker in `slot` off the queue: as
    /// many as the grain says, but no more than its share of what waits
    /// (so that the last calls spread over every worker), nor than it may
    /// run before it is recycled.
    fn next_batch(&mut self, slot: usize) -> VecDeque<Queued<S>> {
        let workers = self.limit.unwrap_or(1);
        let share = self.waiting.len().div_ceil(workers);
        let done = match self.members[slot].as_ref().map(|m| &m.state) {
            Some(State::Worker(worker)) => worker.calls,
            _ => 0,
        };
        let left = self.recycle.map_or(usize::MAX, |n| n.saturating_sub(done));
        let n = self.grain.size().min(share).min(left).max(1);
        self.waiting.drain(..n.min(self.waiting.len())).collect()
    }

    /// Sends queued calls to the idle worker in `slot`, in one write.
    fn hand_over(&mut self, slot: usize, batch: VecDeque<Queued<S>>) -> Result<()> {
        let mut ready = VecDeque::with_capacity(batch.len());
        for queued in batch {
            match queued.args {
                Ok(_) => ready.push_back(queued),
                Err(message) => self.fail(queued.job, Error::Codec { message })?,
            }
        }
        if ready.is_empty() {
            return Ok(());
        }
        let Some(member) = self.members[slot].as_mut() else {
            return Ok(());
        };
        let calls = ready.iter().filter_map(|queued| {
            let args = queued.args.as_ref().ok()?;
            Some((queued.job.name.as_str(), args.as_slice()))
        });
        if member.handle.send_calls(calls).is_ok() {
            if let State::Worker(worker) = &mut member.state {
                if let Some(first) = ready.front() {
                    crate::trace::dispatched(&first.job.name, member.handle.pid(), ready.len());
                }
                worker.sent(ready);
            }
            return Ok(());
        }
        // The worker died while idle: drop it, and let the calls try
        // again.
        self.take(slot)?;
        for queued in ready.into_iter().rev() {
            self.waiting.push_front(queued);
        }
        Ok(())
    }

    /// Starts a queued call in a process of its own.
    fn launch(&mut self, queued: Queued<S>) -> Result<()> {
        match self.builder.start_raw(queued.job.name.clone(), queued.args) {
            Ok(handle) => self.insert(handle, Self::running(queued.job)).map(drop),
            Err(error) => self.fail(queued.job, error),
        }
    }

    /// A fresh reusable worker's state.
    fn idle() -> State<S> {
        State::Worker(Worker::new())
    }

    /// The state of a child that runs `job` in a process of its own.
    fn running(job: Job<S>) -> State<S> {
        if job.streams {
            State::Stream(job)
        } else {
            State::Call(job)
        }
    }

    /// Hands a failure of `job` to the store.
    fn fail(&mut self, mut job: Job<S>, error: Error) -> Result<()> {
        let outcome = job
            .deliver(&mut self.store, Err(error), None)
            .and_then(|()| job.end(&mut self.store, None));
        self.bar.ended();
        self.check(outcome)
    }

    /// On an error from the store, stops every child and drops the queue,
    /// then returns the error.
    fn check(&mut self, outcome: Result<()>) -> Result<()> {
        if outcome.is_err() {
            self.waiting.clear();
            // Dropping a handle kills and reaps its child.
            self.members.clear();
            self.poller.clear();
        }
        outcome
    }

    /// Waits up to `deadline` for children with something to say; returns
    /// their slots.
    fn poll(&mut self, deadline: Deadline) -> Result<Vec<usize>> {
        if !self.members.iter().flatten().any(Member::watched) {
            return Ok(Vec::new());
        }
        // Children without a pidfd (kernels before 5.3) are checked on
        // every tick.
        let blind = |m: &Member<S>| m.watched() && !m.watched.exit;
        let ticking = self.members.iter().flatten().any(blind);
        let mut slots = self.poller.wait(deadline, ticking)?;
        if ticking {
            slots.extend(
                self.members
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| m.as_ref().is_some_and(blind))
                    .map(|(slot, _)| slot),
            );
        }
        slots.sort_unstable();
        slots.dedup();
        Ok(slots)
    }

    /// One round: waits up to `deadline`, services the children that are
    /// ready, starts queued calls. Returns how many values and failures
    /// went to the store.
    fn round(&mut self, deadline: Deadline) -> Result<usize> {
        let slots = self.poll(deadline)?;
        let mut stored = 0;
        for slot in slots {
            stored += self.service(slot)?;
        }
        self.fill()?;
        Ok(stored)
    }

    /// Waits up to `timeout` (forever with `None`) for values and for calls
    /// to end, stores each value (pprocess's `store`), and starts queued
    /// calls as places free up. Returns how many values and failures went
    /// to the store; 0 if nothing is running or waiting.
    ///
    /// # Errors
    ///
    /// The first failure the store does not take (see [`Store::failed`]),
    /// after every other child was killed and reaped.
    pub fn store(&mut self, timeout: Option<Duration>) -> Result<usize> {
        self.fill()?;
        let deadline = timeout.map_or(Deadline::Never, Deadline::after);
        loop {
            if !self.unfinished() {
                return Ok(0);
            }
            let stored = self.round(deadline)?;
            if stored > 0 || deadline.passed() {
                return Ok(stored);
            }
        }
    }

    /// Waits up to `timeout` (forever with `None`) until some calls have
    /// something to read or have ended, and returns their indices, without
    /// storing anything (pprocess's `ready`).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if polling fails.
    pub fn ready(&mut self, timeout: Option<Duration>) -> Result<Vec<usize>> {
        let deadline = timeout.map_or(Deadline::Never, Deadline::after);
        loop {
            let mut ready = Vec::new();
            for slot in self.poll(deadline)? {
                let Some(member) = self.members.get(slot).and_then(Option::as_ref) else {
                    continue;
                };
                if member.running() {
                    if let Some(job) = member.job() {
                        ready.push(job.index);
                    }
                } else {
                    // Delivered children and idle workers are the
                    // exchange's business: reap them, and wait on.
                    self.service_done(slot)?;
                }
            }
            if !ready.is_empty() || deadline.passed() || self.active_count() == 0 {
                return Ok(ready);
            }
        }
    }

    /// Blocks, storing results, until fewer calls run than the limit
    /// (pprocess's `wait`).
    ///
    /// # Errors
    ///
    /// As [`store`](Self::store).
    pub fn wait(&mut self) -> Result<()> {
        self.fill()?;
        while self.busy() {
            self.store(None)?;
        }
        Ok(())
    }

    /// Blocks, storing results, until a new process may start under the
    /// limit.
    fn make_room(&mut self) -> Result<()> {
        while self.full() {
            if let Some(slot) = self.idle_worker() {
                drop(self.take(slot)?);
                continue;
            }
            self.round(Deadline::Never)?;
        }
        Ok(())
    }

    /// Stores results until every call has finished, then closes every
    /// channel, waits for every process to exit and reaps it, and returns
    /// the store (pprocess's `finish`).
    ///
    /// Reusable workers exit when their channel closes; a child that was
    /// kept open ([`autoclose(false)`](Self::autoclose)) and not
    /// [`remove`](Self::remove)d sees its channel close and is waited for.
    ///
    /// # Errors
    ///
    /// As [`store`](Self::store).
    pub fn finish(mut self) -> Result<S> {
        while self.unfinished() {
            self.store(None)?;
        }
        self.stop_workers()?;
        self.bar.finish();
        Ok(self.store)
    }

    /// Closes every channel, waits for every process to exit and reaps
    /// it: reusable workers exit when their channel closes.
    pub(crate) fn stop_workers(&mut self) -> Result<()> {
        for member in self.members.iter_mut().flatten() {
            member.handle.close_channel();
        }
        for member in self.members.iter_mut().flatten() {
            member.handle.wait_exit(Deadline::Never)?;
        }
        self.members.clear();
        self.poller.clear();
        Ok(())
    }

    fn next_index(&mut self) -> usize {
        self.bar.given();
        let index = self.next_index;
        self.next_index += 1;
        index
    }

    /// Starts `call` in a new child (or on an idle worker with
    /// [`reuse`](Self::reuse)), or queues it while the exchange is busy; it
    /// starts when a place frees up. Never blocks. Returns the call's index
    /// (see [`Origin::index`]).
    ///
    /// The store takes the function's return value, or for a channel-style
    /// function the values it sends (see [`Delivery`]). A store that routes
    /// by function takes the calls of its functions only: any other does
    /// not compile (see [`Route`]).
    ///
    /// # Errors
    ///
    /// As [`store`](Self::store): a call that cannot start is a failure of
    /// that call.
    pub fn start<R, S2, V, K, F>(&mut self, call: Call<R, S2, V, K, F>) -> Result<usize>
    where
        K: Delivery,
        F: Route<S, K::Item<R, V>>,
        K::Item<R, V>: DeserializeOwned,
    {
        let index = self.enqueue(call);
        self.fill()?;
        Ok(index)
    }

    /// Queues `call` without starting anything yet, so that several calls
    /// can go to a worker in one batch: the next [`dispatch`](Self::dispatch)
    /// or [`store`](Self::store) starts them. Returns its index.
    pub(crate) fn enqueue<R, S2, V, K, F>(&mut self, call: Call<R, S2, V, K, F>) -> usize
    where
        K: Delivery,
        F: Route<S, K::Item<R, V>>,
        K::Item<R, V>: DeserializeOwned,
    {
        let index = self.next_index();
        let (name, args) = call.into_parts();
        self.waiting.push_back(Queued {
            job: Job::new::<F, K::Item<R, V>, K>(name, index),
            args,
            lost: 0,
        });
        index
    }

    /// Starts the queued calls there is room for.
    pub(crate) fn dispatch(&mut self) -> Result<()> {
        self.fill()
    }

    /// Adds a child started elsewhere, whatever the limit (pprocess's
    /// `add`). Returns its index.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if it cannot be polled.
    pub fn add<R, S2, V, K>(&mut self, handle: Handle<R, S2, V, K>) -> Result<usize>
    where
        K: Delivery,
        S: Store<K::Item<R, V>>,
        K::Item<R, V>: DeserializeOwned,
    {
        let index = self.next_index();
        let job = Job::new::<ByName, K::Item<R, V>, K>(handle.name().to_owned(), index);
        self.insert(handle.cast(), Self::running(job))?;
        Ok(index)
    }

    /// Takes the call at `index` out of the exchange (pprocess's `remove`).
    ///
    /// A call that has started (or delivered, and was kept open by
    /// [`autoclose(false)`](Self::autoclose)) is returned as its handle,
    /// typed as you name it: nothing more of it is stored, and the handle
    /// is yours (drop it to kill and reap the child, or go on talking to
    /// it). A call still waiting to start is cancelled, and `None` is
    /// returned, as it is for an index the exchange does not hold.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the child cannot be taken out of the poll set.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use pproc::{parallel, Exchange, Handle};
    ///
    /// #[parallel]
    /// fn nap(ms: u64) -> u64 {
    ///     std::thread::sleep(Duration::from_millis(ms));
    ///     ms
    /// }
    ///
    /// # fn main() -> pproc::Result<()> {
    /// let mut ex = Exchange::new(Vec::new());
    /// let slow = ex.start(nap::call(60_000))?;
    /// ex.start(nap::call(1))?;
    /// let handle: Handle<u64> = ex.remove(slow)?.expect("it runs");
    /// handle.kill()?;
    /// assert_eq!(ex.finish()?, vec![1]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn remove<R, S2, V, K>(&mut self, index: usize) -> Result<Option<Handle<R, S2, V, K>>> {
        if let Some(at) = self.waiting.iter().position(|q| q.job.index == index) {
            self.waiting.remove(at);
            return Ok(None);
        }
        let slot = self.members.iter().position(|m| {
            m.as_ref()
                .is_some_and(|m| m.job().is_some_and(|job| job.index == index))
        });
        let Some(slot) = slot else {
            return Ok(None);
        };
        let member = self.take(slot)?;
        let handle = member.map(|member| member.handle.cast());
        self.fill()?;
        Ok(handle)
    }

    /// Forks a child that runs `f` with its end of a new channel, and adds
    /// it to the exchange (pprocess's `create`). Waits first, storing
    /// results, until the limit lets a new process start. The values `f`
    /// sends are stored as a channel-style function's are: the first, or
    /// all with [`continuous`](Self::continuous). In the child, `f` runs
    /// under `catch_unwind` (a panic is a failure of the call), and the
    /// child then exits at once, without returning to the code that called
    /// `create` and without running destructors: only `f` runs there.
    /// Returns the call's index; [`Origin::name`] is `"pproc::create"`.
    ///
    /// Prefer [`start`](Self::start) with a `#[parallel]` function: it runs
    /// in a fresh process, costs the same whatever the parent's size, and
    /// has none of the caveats below.
    ///
    /// # Safety
    ///
    /// This is `fork(2)`, with its rules for programs that may have more
    /// than one thread. The child is a copy of the whole process with only
    /// the calling thread in it: a lock that another thread held at the
    /// fork (inside the allocator's arenas excepted, which glibc resets, or
    /// in `std::io::stdout`, a logger, a `Mutex` of your own) stays held
    /// forever in the child, and `f` deadlocks if it takes it. Call it
    /// where no other thread of yours holds locks that `f` needs, such as
    /// a single-threaded program.
    ///
    /// The child also inherits copies of every descriptor of the parent,
    /// and is killed when the thread that called `create` ends (so that
    /// it never outlives its parent): call it from a thread that lives as
    /// long as the child, such as the main thread.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] if the process could not be forked, or as
    /// [`store`](Self::store) while waiting for room.
    ///
    /// # Examples
    ///
    /// ```
    /// use pproc::Exchange;
    ///
    /// # fn main() -> pproc::Result<()> {
    /// let mut ex = Exchange::new(Vec::new()).limit(2);
    /// for i in 0..4_u64 {
    ///     // SAFETY: nothing else runs in this program while it forks.
    ///     unsafe {
    ///         ex.create(move |ch| {
    ///             ch.send(&(i * i)).unwrap();
    ///         })?;
    ///     }
    /// }
    /// let mut squares: Vec<u64> = ex.finish()?;
    /// squares.sort_unstable();
    /// assert_eq!(squares, [0, 1, 4, 9]);
    /// # Ok(())
    /// # }
    /// ```
    pub unsafe fn create<T, F>(&mut self, f: F) -> Result<usize>
    where
        T: Serialize + DeserializeOwned,
        S: Store<T>,
        F: FnOnce(Channel<T, ()>),
    {
        self.make_room()?;
        let group = self.builder.is_grouped();
        // SAFETY: the caller upholds fork's contract; the child runs `f`.
        let (fd, spawned) = unsafe {
            fork(group, |fd| {
                setup::running(FORKED);
                run_forked(fd, f)
            })?
        };
        let mut conn = Conn::new(fd)?;
        conn.set_max_frame(self.builder.max_frame_bytes());
        let mut handle = Handle::<(), (), T, Streams>::new(FORKED.to_owned(), conn, spawned);
        handle.set_group(group);
        self.add(handle)
    }

    /// A callable that starts managed calls on this exchange (pprocess's
    /// `manage`): `f` turns an argument into a [`Call`], such as a
    /// `#[parallel]` function's `call`, and each [`Managed::call`] starts or
    /// queues it as [`start`](Self::start) does.
    ///
    /// # Examples
    ///
    /// ```
    /// use pproc::{parallel, Exchange};
    ///
    /// #[parallel]
    /// fn add(a: u64, b: u64) -> u64 {
    ///     a + b
    /// }
    ///
    /// # fn main() -> pproc::Result<()> {
    /// let mut ex = Exchange::new(Vec::new()).limit(4);
    /// let mut calc = ex.manage(|(a, b)| add::call(a, b));
    /// for i in 0..10 {
    ///     calc.call((i, i))?;
    /// }
    /// let mut sums = ex.finish()?;
    /// sums.sort_unstable();
    /// assert_eq!(sums[9], 18);
    /// # Ok(())
    /// # }
    /// ```
    pub fn manage<F, A, R, S2, V, K, F2>(&mut self, f: F) -> Managed<'_, S, F>
    where
        F: FnMut(A) -> Call<R, S2, V, K, F2>,
        K: Delivery,
        F2: Route<S, K::Item<R, V>>,
        K::Item<R, V>: DeserializeOwned,
    {
        Managed { exchange: self, f }
    }

    /// Waits until the exchange is not busy, then adds `handle` (pprocess's
    /// `add_wait`).
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait).
    pub fn add_wait<R, S2, V, K>(&mut self, handle: Handle<R, S2, V, K>) -> Result<usize>
    where
        K: Delivery,
        S: Store<K::Item<R, V>>,
        K::Item<R, V>: DeserializeOwned,
    {
        self.wait()?;
        self.add(handle)
    }
}

/// A callable whose calls run on an exchange: see [`Exchange::manage`].
///
/// # Examples
///
/// ```
/// use pproc::{parallel, Exchange};
///
/// #[parallel]
/// fn double(x: u64) -> u64 {
///     2 * x
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let mut ex = Exchange::new(Vec::new()).limit(1);
/// let mut calc = ex.manage(double::call);
/// assert_eq!(calc.call(1)?, 0); // each call's index in the exchange
/// assert_eq!(calc.call(2)?, 1); // queued behind the first: limit 1
/// assert_eq!(calc.call(3)?, 2);
/// assert_eq!(ex.finish()?, [2, 4, 6]);
/// # Ok(())
/// # }
/// ```
pub struct Managed<'a, S, F> {
    exchange: &'a mut Exchange<S>,
    f: F,
}

impl<S, F> Managed<'_, S, F> {
    /// Starts (or queues) the call `f(arg)`. Returns its index.
    ///
    /// # Errors
    ///
    /// As [`Exchange::start`].
    pub fn call<A, R, S2, V, K, F2>(&mut self, arg: A) -> Result<usize>
    where
        F: FnMut(A) -> Call<R, S2, V, K, F2>,
        K: Delivery,
        F2: Route<S, K::Item<R, V>>,
        K::Item<R, V>: DeserializeOwned,
    {
        let call = (self.f)(arg);
        self.exchange.start(call)
    }
}

impl<S, F> fmt::Debug for Managed<'_, S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Managed").finish_non_exhaustive()
    }
}

impl<S: fmt::Debug> fmt::Debug for Exchange<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchange")
            .field("store", &self.store)
            .field("limit", &self.limit)
            .field("active", &self.active_count())
            .field("waiting", &self.waiting.len())
            .finish_non_exhaustive()
    }
}
