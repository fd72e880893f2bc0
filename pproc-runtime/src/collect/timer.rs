//! Calls started later, at an interval, or at a steady rate (concurrence's
//! `later`, `interval` and `rate`), each run in a child process of its own.

use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::parent::call::Call;
use crate::parent::delivery::Returns;
use crate::parent::handle::Handle;
use crate::parent::supervise::wait_exits;
use crate::wire::wait::Deadline;

/// How many runs of a [`rate`] timer may run side by side; past it, ticks
/// are skipped (and counted, [`Timer::skipped`]).
pub const MAX_RATE_OVERLAP: usize = 16;

/// When a timer starts its runs.
#[derive(Clone, Copy, Debug)]
enum Pace {
    /// Once, after the delay.
    Once(Duration),
    /// One run at a time, each `period` after the previous one ended.
    Interval(Duration),
    /// Run `k` at `k * period` from the start, whether or not earlier runs
    /// have ended.
    Rate(Duration),
}

/// Counters shared with the timer's thread.
#[derive(Debug, Default)]
struct Counts {
    started: AtomicU64,
    skipped: AtomicU64,
}

/// Calls started on a schedule, each in a new child process: from
/// [`later`], [`interval`] or [`rate`].
///
/// The results of the runs arrive in the order the runs end; a run that
/// fails (a panic, a kill, a child that cannot start) arrives as its
/// `Err`, and the timer goes on, as concurrence's timers log a failure and
/// go on. They wait in the timer until received: receive them, or use a
/// function that returns `()`.
///
/// [`stop`](Self::stop), or dropping the timer, stops it: no run starts
/// after that, and runs still going are killed and reaped.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pproc::{parallel, Timer};
///
/// #[parallel]
/// fn shout(word: String) -> String {
///     word.to_uppercase()
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let timer: Timer<String> = pproc::interval(Duration::from_millis(10), || shout::call("tick".into()))?;
/// assert_eq!(timer.recv()??, "TICK");
/// assert_eq!(timer.recv_timeout(Duration::from_secs(10))??, "TICK");
/// assert!(timer.started() >= 2);
/// timer.stop(); // no run starts after this
/// # Ok(())
/// # }
/// ```
#[must_use = "a `Timer` stops, and kills its runs, when it is dropped"]
pub struct Timer<R> {
    /// Closing it wakes the thread and stops it.
    stop: Option<OwnedFd>,
    results: mpsc::Receiver<Result<R>>,
    thread: Option<JoinHandle<()>>,
    counts: Arc<Counts>,
}

/// Runs `call` once, in a child process started after `delay`
/// (concurrence's `later`).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pproc::parallel;
///
/// #[parallel]
/// fn ping() -> String {
///     "pong".into()
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let timer = pproc::later(Duration::from_millis(20), ping::call())?;
/// let results: Vec<_> = timer.iter().collect::<pproc::Result<_>>()?;
/// assert_eq!(results, ["pong"]);
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`Error::Spawn`] if the timer's thread cannot start.
pub fn later<R, S, V, K, F>(delay: Duration, call: Call<R, S, V, K, F>) -> Result<Timer<R>>
where
    R: DeserializeOwned + Send + 'static,
    Call<R, S, V, K>: 'static,
{
    let mut call = Some(call.retype());
    Timer::start(Pace::Once(delay), move || {
        call.take()
            .ok_or_else(|| Error::codec("a `later` call runs once"))
    })
}

/// Runs a call from `make` every `period`, one at a time: the first starts
/// a `period` after this call, each next one a `period` after the previous
/// one ended (concurrence's `interval`).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pproc::parallel;
///
/// #[parallel]
/// fn tick(n: u32) -> u32 {
///     n
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let mut n = 0;
/// let timer = pproc::interval(Duration::from_millis(10), move || {
///     n += 1;
///     tick::call(n)
/// })?;
/// let first: Vec<u32> = timer.iter().take(3).collect::<pproc::Result<_>>()?;
/// assert_eq!(first, [1, 2, 3]);
/// timer.stop();
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`Error::Spawn`] if the timer's thread cannot start.
pub fn interval<R, S, V, K, F, F2>(period: Duration, mut make: F) -> Result<Timer<R>>
where
    R: DeserializeOwned + Send + 'static,
    Call<R, S, V, K>: 'static,
    F: FnMut() -> Call<R, S, V, K, F2> + Send + 'static,
{
    Timer::start(Pace::Interval(period), move || Ok(make().retype()))
}

/// Runs a call from `make` `per_second` times a second, at a steady pace
/// (concurrence's `rate`): run `k` starts `k / per_second` seconds after
/// this call, the first at once, whether or not earlier runs have ended, so
/// slow runs do not slow the pace. At most [`MAX_RATE_OVERLAP`] run side by
/// side; a tick that finds that many still running is skipped, and so are
/// ticks missed while the machine was too busy to start them.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pproc::parallel;
///
/// #[parallel]
/// fn sample() -> u32 {
///     std::process::id()
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let timer = pproc::rate(50.0, sample::call)?;
/// let pids: Vec<u32> = timer.iter().take(5).collect::<pproc::Result<_>>()?;
/// assert_eq!(pids.len(), 5); // five runs, each its own process
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`Error::Spawn`] if the timer's thread cannot start; [`Error::Io`] if
/// `per_second` is not a positive, finite number.
pub fn rate<R, S, V, K, F, F2>(per_second: f64, mut make: F) -> Result<Timer<R>>
where
    R: DeserializeOwned + Send + 'static,
    Call<R, S, V, K>: 'static,
    F: FnMut() -> Call<R, S, V, K, F2> + Send + 'static,
{
    let period = Duration::try_from_secs_f64(1.0 / per_second)
        .ok()
        .filter(|p| per_second > 0.0 && !p.is_zero())
        .ok_or_else(|| {
            Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("a rate must be a positive number of runs per second, not {per_second}"),
            ))
        })?;
    Timer::start(Pace::Rate(period), move || Ok(make().retype()))
}

impl<R: DeserializeOwned + Send + 'static> Timer<R> {
    fn start<S, V, K>(
        pace: Pace,
        make: impl FnMut() -> Result<Call<R, S, V, K>> + Send + 'static,
    ) -> Result<Self>
    where
        Call<R, S, V, K>: 'static,
    {
        let (wake, stop) = crate::process::capture::pipe()?;
        let (tx, results) = mpsc::channel();
        let counts = Arc::new(Counts::default());
        let thread = {
            let counts = Arc::clone(&counts);
            std::thread::Builder::new()
                .name("pproc-timer".into())
                .spawn(move || run(pace, make, &wake, &tx, &counts))
                .map_err(Error::Spawn)?
        };
        Ok(Self {
            stop: Some(stop),
            results,
            thread: Some(thread),
            counts,
        })
    }
}

impl<R> Timer<R> {
    /// Waits for the next run's result. The outer `Result` is the receive's,
    /// as for [`Handle::recv`](crate::Handle::recv); the inner one is the
    /// run's own: `Ok` with what it returned, or how it failed.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use pproc::{parallel, Error};
    ///
    /// #[parallel]
    /// fn answer() -> u32 {
    ///     42
    /// }
    ///
    /// # fn main() -> pproc::Result<()> {
    /// let timer = pproc::later(Duration::from_millis(10), answer::call())?;
    /// assert_eq!(timer.recv()??, 42);
    /// // A `later` timer runs once: then it is over.
    /// assert!(matches!(timer.recv(), Err(Error::Disconnected)));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] once the timer is over (a [`later`] timer's
    /// one run has been received, or the timer was stopped).
    pub fn recv(&self) -> Result<Result<R>> {
        self.results.recv().map_err(|_| Error::Disconnected)
    }

    /// Waits at most `timeout` for the next run's result, as
    /// [`recv`](Self::recv) does.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if none came in time, [`Error::Disconnected`]
    /// once the timer is over.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Result<R>> {
        self.results.recv_timeout(timeout).map_err(|err| match err {
            mpsc::RecvTimeoutError::Timeout => Error::Timeout,
            mpsc::RecvTimeoutError::Disconnected => Error::Disconnected,
        })
    }

    /// The results that have arrived, without waiting.
    pub fn try_iter(&self) -> impl Iterator<Item = Result<R>> + '_ {
        self.results.try_iter()
    }

    /// The runs' results as they arrive; the iterator ends when the timer
    /// is over, and blocks meanwhile.
    pub fn iter(&self) -> impl Iterator<Item = Result<R>> + '_ {
        self.results.iter()
    }

    /// How many runs have started.
    #[must_use]
    pub fn started(&self) -> u64 {
        self.counts.started.load(Ordering::Relaxed)
    }

    /// How many ticks of a [`rate`] timer were skipped, because
    /// [`MAX_RATE_OVERLAP`] runs were still going or the machine was too busy.
    #[must_use]
    pub fn skipped(&self) -> u64 {
        self.counts.skipped.load(Ordering::Relaxed)
    }

    /// Stops the timer: no run starts after this, runs still going are
    /// killed and reaped. Returns the results that arrived and were not
    /// received.
    #[expect(
        clippy::must_use_candidate,
        reason = "stopping is the point; the leftovers are for who wants them"
    )]
    pub fn stop(mut self) -> Vec<Result<R>> {
        self.halt();
        self.results.try_iter().collect()
    }

    fn halt(&mut self) {
        // The thread sees the pipe close.
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl<R> Drop for Timer<R> {
    fn drop(&mut self) {
        self.halt();
    }
}

impl<R> fmt::Debug for Timer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timer")
            .field("started", &self.started())
            .field("skipped", &self.skipped())
            .finish_non_exhaustive()
    }
}

/// The timer's thread: starts runs when they are due, sends their results,
/// and stops when `wake` closes.
fn run<R, S, V, K>(
    pace: Pace,
    mut make: impl FnMut() -> Result<Call<R, S, V, K>>,
    wake: &OwnedFd,
    tx: &mpsc::Sender<Result<R>>,
    counts: &Counts,
) where
    R: DeserializeOwned,
{
    let origin = Instant::now();
    let first = match pace {
        Pace::Once(delay) => delay,
        Pace::Interval(period) => period,
        Pace::Rate(_) => Duration::ZERO,
    };
    let mut next = origin.checked_add(first);
    let mut tick: u32 = 0;
    let mut running: Vec<Handle<R, (), (), Returns>> = Vec::new();
    loop {
        let now = Instant::now();
        if next.is_some_and(|at| at <= now) {
            next = match pace {
                Pace::Once(_) | Pace::Interval(_) => None,
                Pace::Rate(period) => {
                    // The next tick after now; ticks missed are skipped.
                    let due = u32::try_from(
                        now.duration_since(origin).as_nanos() / period.as_nanos().max(1),
                    )
                    .unwrap_or(u32::MAX);
                    let missed = due.saturating_sub(tick);
                    counts
                        .skipped
                        .fetch_add(u64::from(missed), Ordering::Relaxed);
                    tick = due.saturating_add(1);
                    origin.checked_add(period.saturating_mul(tick))
                }
            };
            if matches!(pace, Pace::Rate(_)) && running.len() >= MAX_RATE_OVERLAP {
                counts.skipped.fetch_add(1, Ordering::Relaxed);
            } else {
                counts.started.fetch_add(1, Ordering::Relaxed);
                match make().and_then(Call::start) {
                    Ok(handle) => running.push(handle.cast()),
                    Err(err) => {
                        let _ = tx.send(Err(err));
                        if let Pace::Interval(period) = pace {
                            next = Instant::now().checked_add(period);
                        }
                    }
                }
            }
        }
        if matches!(pace, Pace::Once(_)) && next.is_none() && running.is_empty() {
            return;
        }
        // Wait for the next tick, a run's end, or the stop.
        let deadline = next.map_or(Deadline::Never, Deadline::At);
        let Ok(exits) = wait_exits(&running, Some(wake.as_fd()), deadline) else {
            return;
        };
        if exits.woken {
            // Stopped: dropping `running` kills and reaps the runs.
            return;
        }
        let mut done = exits.done;
        done.sort_unstable();
        for i in done.into_iter().rev() {
            let result = running.remove(i).join();
            let _ = tx.send(result);
            if let Pace::Interval(period) = pace {
                next = Instant::now().checked_add(period);
            }
        }
    }
}
