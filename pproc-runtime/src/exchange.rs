//! pprocess's `Exchange`: many children at once, their results stored as
//! they arrive, with a limit on how many run at a time.

use std::collections::VecDeque;
use std::fmt;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use serde::de::DeserializeOwned;

use crate::call::{Builder, Call};
use crate::conn::{Deadline, decode};
use crate::error::{Error, Result};
use crate::handle::{Handle, Turn};

/// Where a stored value came from.
#[derive(Clone, Copy, Debug)]
pub struct Origin<'a> {
    name: &'a str,
    index: usize,
    pid: Option<u32>,
}

impl Origin<'_> {
    /// The registered name of the function that produced the value.
    #[must_use]
    pub fn name(&self) -> &str {
        self.name
    }

    /// The position of the call among those given to the exchange (by
    /// [`Exchange::start`] or [`Exchange::add`]), from 0.
    #[must_use]
    pub fn index(&self) -> usize {
        self.index
    }

    /// The child's process id, or `None` if the call never started.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }
}

/// A call of an exchange that failed, as a `#[store(errors)]` field
/// collects it.
#[derive(Debug)]
#[non_exhaustive]
pub struct Failure {
    /// The registered name of the function.
    pub name: String,
    /// The call's index (see [`Origin::index`]).
    pub index: usize,
    /// The child's process id, or `None` if the call never started.
    pub pid: Option<u32>,
    /// What went wrong.
    pub error: Error,
}

impl Failure {
    /// The failure of the call at `origin`.
    #[must_use]
    pub fn new(error: Error, origin: &Origin<'_>) -> Self {
        Self {
            name: origin.name.to_owned(),
            index: origin.index,
            pid: origin.pid,
            error,
        }
    }
}

/// What an [`Exchange`] does with each result: pprocess's `store_data`.
///
/// `#[derive(Exchange)]` implements it for a struct of collections; it is
/// implemented for `Vec<T>`, which keeps results in the order they arrive.
///
/// # Examples
///
/// ```
/// use pproc::{parallel, Error, Exchange, Origin, Store};
///
/// #[parallel]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// /// Sums the results and counts the failures instead of stopping.
/// #[derive(Default)]
/// struct Sum {
///     total: u64,
///     failures: usize,
/// }
///
/// impl Store<u64> for Sum {
///     fn store(&mut self, value: u64, _origin: &Origin<'_>) -> pproc::Result<()> {
///         self.total += value;
///         Ok(())
///     }
///
///     fn failed(&mut self, _error: Error, _origin: &Origin<'_>) -> pproc::Result<()> {
///         self.failures += 1;
///         Ok(())
///     }
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let mut ex = Exchange::new(Sum::default()).limit(2);
/// for i in 0..10 {
///     ex.start(square::call(i))?;
/// }
/// let sum = ex.finish()?;
/// assert_eq!((sum.total, sum.failures), (285, 0));
/// # Ok(())
/// # }
/// ```
pub trait Store<T> {
    /// Stores one result.
    ///
    /// # Errors
    ///
    /// An error stops the exchange, as a failed call does by default.
    fn store(&mut self, value: T, origin: &Origin<'_>) -> Result<()>;

    /// Called when a call fails (a panic, a kill, a result that does not
    /// decode, a child that could not start). The default returns the
    /// error, which stops the exchange: the other children are killed and
    /// reaped and the method that met the failure returns it. Return
    /// `Ok(())` to record the failure and go on.
    ///
    /// # Errors
    ///
    /// As [`store`](Self::store).
    fn failed(&mut self, error: Error, origin: &Origin<'_>) -> Result<()> {
        let _ = origin;
        Err(error)
    }
}

impl<T> Store<T> for Vec<T> {
    fn store(&mut self, value: T, _origin: &Origin<'_>) -> Result<()> {
        self.push(value);
        Ok(())
    }
}

/// Decodes a call's result with its own type and hands it to the store.
type Sink<S> = fn(&mut S, Result<Vec<u8>>, &Origin<'_>) -> Result<()>;

fn sink<S: Store<R>, R: DeserializeOwned>(
    store: &mut S,
    result: Result<Vec<u8>>,
    origin: &Origin<'_>,
) -> Result<()> {
    match result.and_then(|bytes| decode::<R>(&bytes)) {
        Ok(value) => store.store(value, origin),
        Err(error) => store.failed(error, origin),
    }
}

/// A call the exchange was given: what it runs and where its result goes.
struct Job<S> {
    name: String,
    index: usize,
    sink: Sink<S>,
}

impl<S> Job<S> {
    fn origin(&self, pid: Option<u32>) -> Origin<'_> {
        Origin {
            name: &self.name,
            index: self.index,
            pid,
        }
    }
}

/// A child in the exchange.
struct Member<S> {
    handle: Handle<(), (), ()>,
    /// The call it runs; `None` for an idle reusable worker.
    job: Option<Job<S>>,
    /// Whether it is a reusable worker, which runs call after call.
    worker: bool,
    /// Whether its socket is still in the poll set (it leaves once drained,
    /// so that an ended stream does not wake the exchange over and over).
    socket_watched: bool,
    /// Whether it has a pidfd in the poll set; without one, the exchange
    /// polls it now and then.
    exit_watched: bool,
}

/// A call waiting for a free place under the limit.
struct Queued<S> {
    job: Job<S>,
    args: Result<Vec<u8>, String>,
}

/// Readiness events taken per wait; more stay queued in the kernel (the set
/// is level-triggered) for the next one.
const EVENTS: usize = 256;

/// How often children without a pidfd (kernels before 5.3) are checked.
const EXIT_TICK: Duration = Duration::from_millis(10);

/// Runs many children and stores their results as they arrive (pprocess's
/// `Exchange`).
///
/// `S` is the store: a [`Vec`], your own [`Store`] implementation, or a
/// struct with `#[derive(Exchange)]`. With a [`limit`](Self::limit),
/// [`start`](Self::start) queues calls while the exchange is
/// [`busy`](Self::busy), and starts them as children finish. With
/// [`reuse`](Self::reuse), a child that has delivered its result takes the
/// next queued call instead of exiting. Readiness is polled with epoll, so a
/// wait costs the same with one or a thousand idle children.
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
pub struct Exchange<S> {
    store: S,
    limit: Option<usize>,
    reuse: bool,
    builder: Builder,
    members: Vec<Option<Member<S>>>,
    waiting: VecDeque<Queued<S>>,
    epoll: Option<Epoll>,
    events: Vec<EpollEvent>,
    next_index: usize,
}

impl<S> Exchange<S> {
    /// An exchange that stores results in `store`, with no limit.
    pub fn new(store: S) -> Self {
        Self {
            store,
            limit: None,
            reuse: false,
            builder: Builder::new(),
            members: Vec::new(),
            waiting: VecDeque::new(),
            epoll: None,
            events: Vec::new(),
            next_index: 0,
        }
    }

    /// At most `n` children run at once (at least one).
    #[must_use]
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n.max(1));
        self
    }

    /// Reuse processes (pprocess's `reuse`, `MakeReusable`): calls given to
    /// [`start`](Self::start) run on worker processes that take the next
    /// queued call when they finish one, instead of a new process per call.
    /// A worker that dies fails only the call it was running; a new worker
    /// takes the next one. Workers are stopped when the exchange is dropped
    /// or finished.
    #[must_use]
    pub fn reuse(mut self, reuse: bool) -> Self {
        self.reuse = reuse;
        self
    }

    /// The options children are started with.
    #[must_use]
    pub fn builder(mut self, builder: Builder) -> Self {
        self.builder = builder;
        self
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
            .filter_map(|m| Some(m.job.as_ref()?.origin(Some(m.handle.pid()))))
            .collect()
    }

    fn active_count(&self) -> usize {
        self.members
            .iter()
            .flatten()
            .filter(|m| m.job.is_some())
            .count()
    }

    /// Whether as many calls run as the limit allows.
    #[must_use]
    pub fn busy(&self) -> bool {
        self.limit.is_some_and(|limit| self.active_count() >= limit)
    }

    /// Whether no new process may start: as many processes (running or
    /// idle workers) as the limit allows.
    fn full(&self) -> bool {
        self.limit
            .is_some_and(|limit| self.members.iter().flatten().count() >= limit)
    }

    /// Whether calls are running or waiting to start.
    #[must_use]
    pub fn unfinished(&self) -> bool {
        self.active_count() > 0 || !self.waiting.is_empty()
    }

    fn epoll(&mut self) -> Result<&Epoll> {
        if self.epoll.is_none() {
            self.epoll = Some(Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?);
        }
        self.epoll
            .as_ref()
            .ok_or_else(|| Error::Io(std::io::Error::other("no epoll instance")))
    }

    /// Puts a started child in the poll set, in a free slot; returns the
    /// slot.
    fn insert(
        &mut self,
        mut handle: Handle<(), (), ()>,
        job: Option<Job<S>>,
        worker: bool,
    ) -> Result<usize> {
        let slot = self
            .members
            .iter()
            .position(Option::is_none)
            .unwrap_or_else(|| {
                self.members.push(None);
                self.members.len() - 1
            });
        let token = u64::try_from(slot).unwrap_or(u64::MAX / 2) * 2;
        let epoll = self.epoll()?;
        let (socket, exit) = handle.watch_fds();
        // SAFETY: the handle owns both descriptors and stays in `members`
        // while they are in the poll set; closing them removes them.
        let (socket, exit) = unsafe {
            (
                BorrowedFd::borrow_raw(socket),
                exit.map(|fd| BorrowedFd::borrow_raw(fd)),
            )
        };
        epoll.add(socket, EpollEvent::new(EpollFlags::EPOLLIN, token))?;
        if let Some(exit) = exit {
            epoll.add(exit, EpollEvent::new(EpollFlags::EPOLLIN, token + 1))?;
        }
        self.members[slot] = Some(Member {
            handle,
            job,
            worker,
            socket_watched: true,
            exit_watched: exit.is_some(),
        });
        Ok(slot)
    }

    /// Starts queued calls while there is room: on idle workers first,
    /// then in new processes.
    fn fill(&mut self) -> Result<()> {
        while let Some(queued) = self.waiting.pop_front() {
            if self.reuse
                && let Some(slot) = self.idle_worker()
            {
                self.hand_over(slot, queued)?;
                continue;
            }
            if self.full() {
                self.waiting.push_front(queued);
                return Ok(());
            }
            self.launch(queued)?;
        }
        Ok(())
    }

    fn idle_worker(&self) -> Option<usize> {
        self.members
            .iter()
            .position(|m| m.as_ref().is_some_and(|m| m.worker && m.job.is_none()))
    }

    /// Sends a queued call to the worker in `slot`.
    fn hand_over(&mut self, slot: usize, queued: Queued<S>) -> Result<()> {
        let args = match queued.args {
            Ok(args) => args,
            Err(message) => return self.fail(&queued.job, Error::Codec { message }, None),
        };
        let Some(member) = self.members[slot].as_mut() else {
            return Ok(());
        };
        if member.handle.send_call(&queued.job.name, &args).is_ok() {
            member.job = Some(queued.job);
            return Ok(());
        }
        // The worker died while idle: drop it, and let the call try again.
        self.members[slot] = None;
        self.waiting.push_front(Queued {
            job: queued.job,
            args: Ok(args),
        });
        Ok(())
    }

    fn launch(&mut self, queued: Queued<S>) -> Result<()> {
        if self.reuse {
            match self
                .builder
                .start_raw(crate::child::WORKER.to_owned(), Ok(Vec::new()))
            {
                Ok(handle) => {
                    let slot = self.insert(handle, None, true)?;
                    self.hand_over(slot, queued)
                }
                Err(error) => self.fail(&queued.job, error, None),
            }
        } else {
            match self.builder.start_raw(queued.job.name.clone(), queued.args) {
                Ok(handle) => self.insert(handle, Some(queued.job), false).map(drop),
                Err(error) => self.fail(&queued.job, error, None),
            }
        }
    }

    /// Hands a failure of `job` to the store.
    fn fail(&mut self, job: &Job<S>, error: Error, pid: Option<u32>) -> Result<()> {
        let outcome = (job.sink)(&mut self.store, Err(error), &job.origin(pid));
        self.check(outcome)
    }

    /// On an error from the store, stops every child and drops the queue,
    /// then returns the error.
    fn check(&mut self, outcome: Result<()>) -> Result<()> {
        if outcome.is_err() {
            self.waiting.clear();
            // Dropping a handle kills and reaps its child.
            self.members.clear();
            self.epoll = None;
        }
        outcome
    }

    /// Waits up to `deadline` for children with something to say; returns
    /// their slots.
    fn poll(&mut self, deadline: Deadline) -> Result<Vec<usize>> {
        if self.active_count() == 0 {
            return Ok(Vec::new());
        }
        let unwatched = self.members.iter().flatten().any(|m| !m.exit_watched);
        let mut events = std::mem::take(&mut self.events);
        events.resize(EVENTS, EpollEvent::empty());
        let tick = Deadline::after(EXIT_TICK);
        let wait = match deadline {
            Deadline::Now => Deadline::Now,
            Deadline::At(at) if unwatched => match tick {
                Deadline::At(t) if t < at => tick,
                _ => deadline,
            },
            _ if unwatched => tick,
            other => other,
        };
        let epoll = self.epoll()?;
        let n = loop {
            let timeout = wait.poll_timeout().unwrap_or(EpollTimeout::ZERO);
            match epoll.wait(&mut events, timeout) {
                Ok(n) => break Ok(n),
                Err(Errno::EINTR) => {}
                Err(err) => break Err(err),
            }
        };
        let slots = n.map(|n| {
            events[..n]
                .iter()
                .filter_map(|e| usize::try_from(e.data() / 2).ok())
                .collect::<Vec<_>>()
        });
        self.events = events;
        let mut slots = slots?;
        if unwatched {
            slots.extend(
                self.members
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| m.as_ref().is_some_and(|m| !m.exit_watched))
                    .map(|(slot, _)| slot),
            );
        }
        slots.sort_unstable();
        slots.dedup();
        Ok(slots)
    }

    /// Stores the result of the call in `slot` if it has ended. Returns
    /// whether it had.
    fn service(&mut self, slot: usize) -> Result<bool> {
        let Some(member) = self.members.get_mut(slot).and_then(Option::as_mut) else {
            return Ok(false);
        };
        if member.worker {
            return self.service_worker(slot);
        }
        let result = match member.handle.poll_result() {
            Err(Error::Timeout) => {
                if member.socket_watched && member.handle.is_drained() {
                    member.socket_watched = false;
                    let (socket, _) = member.handle.watch_fds();
                    // SAFETY: the handle owns the descriptor; it is open.
                    let socket = unsafe { BorrowedFd::borrow_raw(socket) };
                    if let Some(epoll) = &self.epoll {
                        epoll.delete(socket)?;
                    }
                }
                return Ok(false);
            }
            result => result,
        };
        let Some(member) = self.members[slot].take() else {
            return Ok(false);
        };
        let Some(job) = &member.job else {
            return Ok(false);
        };
        let outcome = (job.sink)(
            &mut self.store,
            result,
            &job.origin(Some(member.handle.pid())),
        );
        drop(member);
        self.check(outcome)?;
        Ok(true)
    }

    fn service_worker(&mut self, slot: usize) -> Result<bool> {
        let Some(member) = self.members.get_mut(slot).and_then(Option::as_mut) else {
            return Ok(false);
        };
        let pid = Some(member.handle.pid());
        let (job, result) = match member.handle.poll_turn() {
            Turn::Running => return Ok(false),
            Turn::Done(result) => (member.job.take(), result),
            Turn::Dead(error) => {
                let job = self.members[slot].take().and_then(|m| m.job);
                (job, Err(error))
            }
        };
        let Some(job) = job else {
            return Ok(false);
        };
        let outcome = (job.sink)(&mut self.store, result, &job.origin(pid));
        self.check(outcome)?;
        Ok(true)
    }

    /// Waits up to `timeout` (forever with `None`) for calls to end, stores
    /// each result, and starts queued calls in their place (pprocess's
    /// `store`). Returns how many results were stored; 0 if nothing is
    /// running.
    ///
    /// # Errors
    ///
    /// The first failure the store does not take (see [`Store::failed`]),
    /// after every other child was killed and reaped.
    pub fn store(&mut self, timeout: Option<Duration>) -> Result<usize> {
        self.fill()?;
        let deadline = timeout.map_or(Deadline::Never, Deadline::after);
        loop {
            let slots = self.poll(deadline)?;
            let mut stored = 0;
            for slot in slots {
                if self.service(slot)? {
                    stored += 1;
                }
            }
            self.fill()?;
            let expired = match deadline {
                Deadline::Never => false,
                Deadline::Now => true,
                Deadline::At(at) => std::time::Instant::now() >= at,
            };
            if stored > 0 || expired || self.active_count() == 0 {
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
        let slots = self.poll(timeout.map_or(Deadline::Never, Deadline::after))?;
        Ok(slots
            .into_iter()
            .filter_map(|slot| Some(self.members.get(slot)?.as_ref()?.job.as_ref()?.index))
            .collect())
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

    /// Stores results until every call has finished, stops the reusable
    /// workers, and returns the store (pprocess's `finish`).
    ///
    /// # Errors
    ///
    /// As [`store`](Self::store).
    pub fn finish(mut self) -> Result<S> {
        while self.unfinished() {
            self.store(None)?;
        }
        Ok(self.store)
    }

    fn next_index(&mut self) -> usize {
        let index = self.next_index;
        self.next_index += 1;
        index
    }

    /// Starts `call` in a new child (or on an idle worker with
    /// [`reuse`](Self::reuse)), or queues it while the exchange is busy; it
    /// starts when a call finishes. Never blocks. Returns the call's index
    /// (see [`Origin::index`]).
    ///
    /// # Errors
    ///
    /// As [`store`](Self::store): a call that cannot start is a failure of
    /// that call.
    pub fn start<R, S2, V>(&mut self, call: Call<R, S2, V>) -> Result<usize>
    where
        S: Store<R>,
        R: DeserializeOwned,
    {
        let index = self.next_index();
        let (name, args) = call.into_parts();
        self.waiting.push_back(Queued {
            job: Job {
                name,
                index,
                sink: sink::<S, R>,
            },
            args,
        });
        self.fill()?;
        Ok(index)
    }

    /// Adds a child started elsewhere, whatever the limit (pprocess's
    /// `add`). Returns its index.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if it cannot be polled.
    pub fn add<R, S2, V>(&mut self, handle: Handle<R, S2, V>) -> Result<usize>
    where
        S: Store<R>,
        R: DeserializeOwned,
    {
        let index = self.next_index();
        let job = Job {
            name: handle.name().to_owned(),
            index,
            sink: sink::<S, R>,
        };
        self.insert(handle.cast(), Some(job), false)?;
        Ok(index)
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
    pub fn manage<F, A, R, S2, V>(&mut self, f: F) -> Managed<'_, S, F>
    where
        F: FnMut(A) -> Call<R, S2, V>,
        S: Store<R>,
        R: DeserializeOwned,
    {
        Managed { exchange: self, f }
    }

    /// Waits until the exchange is not busy, then adds `handle` (pprocess's
    /// `add_wait`).
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait).
    pub fn add_wait<R, S2, V>(&mut self, handle: Handle<R, S2, V>) -> Result<usize>
    where
        S: Store<R>,
        R: DeserializeOwned,
    {
        self.wait()?;
        self.add(handle)
    }
}

/// A callable whose calls run on an exchange: see [`Exchange::manage`].
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
    pub fn call<A, R, S2, V>(&mut self, arg: A) -> Result<usize>
    where
        F: FnMut(A) -> Call<R, S2, V>,
        S: Store<R>,
        R: DeserializeOwned,
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
