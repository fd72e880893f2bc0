//! An async front for tokio (feature `tokio`): a child's result, its
//! stream of values and the sends to it as futures and streams that wait
//! on the child's socket and pidfd through tokio's reactor, so that no
//! thread blocks on a child; a pool call and a map, which pproc drives on
//! threads of its own, through tokio's blocking pool; and [`JoinSet`], to
//! await many children as they end.
//!
//! As with tokio's `kill_on_drop(true)`, a child whose [`AsyncHandle`] is
//! dropped is killed and reaped, and so is one whose `join` future is
//! dropped or aborted before it ends: a `select!` that loses, a
//! `tokio::time::timeout` that fires and an aborted task leave no process
//! behind.
//!
//! # Examples
//!
//! ```
//! use pproc::tokio::{AsyncHandle, JoinSet};
//! use pproc::parallel;
//!
//! #[parallel]
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! # fn main() -> pproc::Result<()> {
//! # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! # rt.block_on(async {
//! // One child, awaited.
//! let child = AsyncHandle::start(square::call(7))?;
//! assert_eq!(child.await?, 49);
//!
//! // Many at once, as they end.
//! let mut set = JoinSet::new();
//! for x in 1..=4 {
//!     set.spawn(square::call(x))?;
//! }
//! let mut total = 0;
//! while let Some(result) = set.join_next().await {
//!     total += result?;
//! }
//! assert_eq!(total, 1 + 4 + 9 + 16);
//! # Ok(())
//! # })
//! # }
//! ```

use std::future::{Future, IntoFuture};
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::pin::{Pin, pin};
use std::time::Duration;

use ::tokio::io::Interest;
use ::tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
use futures::future::{Either, select};
use futures::stream::{FuturesUnordered, Stream, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::collect::map::{Map, Queue, Task, Within};
use crate::collect::pool::Pending;
use crate::error::{Error, Result};
use crate::parent::builder::Builder;
use crate::parent::call::Call;
use crate::parent::delivery::Returns;
use crate::parent::handle::Handle;
use crate::wire::wait::Deadline;

/// Waits until the socket or the pidfd is readable.
async fn readable<'a>(
    socket: &'a AsyncFd<Watched>,
    exit: Option<&'a AsyncFd<Watched>>,
) -> Result<AsyncFdReadyGuard<'a, Watched>> {
    let ready = match exit {
        Some(exit) => match select(pin!(socket.readable()), pin!(exit.readable())).await {
            Either::Left((ready, _)) | Either::Right((ready, _)) => ready,
        },
        None => socket.readable().await,
    };
    ready.map_err(Error::Io)
}

/// A descriptor the handle owns, registered with tokio's reactor while
/// the handle keeps it open.
struct Watched(RawFd);

impl AsRawFd for Watched {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// The handle of a running child, for async code: [`join`](Self::join)
/// (or `.await` it), [`recv`](Self::recv), [`stream`](Self::stream) and
/// [`send`](Self::send) wait on the child's socket and pidfd through
/// tokio's reactor, and never block a runtime thread.
///
/// Dropping it kills and reaps the child, as dropping a [`Handle`] does;
/// so does dropping or aborting its `join` future before the child ends
/// (tokio's `kill_on_drop(true)`).
///
/// Made in a tokio runtime (it registers with its reactor): start the
/// child there with [`start`](Self::start), or turn a started one into an
/// `AsyncHandle` with [`new`](Self::new).
///
/// # Examples
///
/// Values a channel-style child streams, as a [`Stream`], and replies to
/// what the parent sends:
///
/// ```
/// use futures::StreamExt;
/// use pproc::tokio::AsyncHandle;
/// use pproc::{parallel, Channel};
///
/// #[parallel]
/// fn countdown(ch: Channel<u64, u64>, from: u64) -> u64 {
///     for i in (0..from).rev() {
///         ch.send(&i).unwrap();
///     }
///     ch.recv().unwrap() * 2
/// }
///
/// # fn main() -> pproc::Result<()> {
/// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
/// # rt.block_on(async {
/// let mut child = AsyncHandle::start(countdown::call(3))?;
/// let first: Vec<u64> = child.stream().take(3).map(Result::unwrap).collect().await;
/// assert_eq!(first, [2, 1, 0]);
/// child.send(&21).await?;
/// assert_eq!(child.join().await?, 42);
/// # Ok(())
/// # })
/// # }
/// ```
pub struct AsyncHandle<R, S = (), V = (), K = Returns> {
    // Fields drop in order: both leave the reactor before the handle
    // closes their descriptors.
    socket: AsyncFd<Watched>,
    exit: Option<AsyncFd<Watched>>,
    handle: Handle<R, S, V, K>,
}

impl<R, S, V, K> AsyncHandle<R, S, V, K> {
    /// Starts `call` in a new child process, as [`Call::start`] does, and
    /// returns its async handle.
    ///
    /// Starting a process is one `posix_spawn`, as tokio's own
    /// `Command::spawn` is: it does not wait for the child.
    ///
    /// # Errors
    ///
    /// As [`Builder::start`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as tokio's `AsyncFd` does.
    pub fn start<F>(call: Call<R, S, V, K, F>) -> Result<Self> {
        Self::new(Builder::new().start(call)?)
    }

    /// Starts `call` with the options of `builder`. With a launcher, the
    /// first child on a host connects to it first, a handshake (through
    /// ssh, a fraction of a second) made on this thread: connect a
    /// [`Cluster`](crate::Cluster) before, or start the first child in
    /// `spawn_blocking`.
    ///
    /// # Errors
    ///
    /// As [`Builder::start`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn start_with<F>(builder: &Builder, call: Call<R, S, V, K, F>) -> Result<Self> {
        Self::new(builder.start(call)?)
    }

    /// The async handle of a child started already.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the reactor does not take its descriptors.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn new(handle: Handle<R, S, V, K>) -> Result<Self> {
        let watch = |fd: RawFd, interest| {
            // SAFETY: the handle owns the descriptor and keeps it open for
            // as long as it lives; the `AsyncFd` is a field of the same
            // `AsyncHandle`, dropped before the handle (or in
            // `into_inner`), so the descriptor outlives its registration.
            unsafe { AsyncFd::register_with_interest(Watched(fd), interest) }
                .map_err(|err| Error::Io(err.into()))
        };
        let socket = watch(
            handle.socket().as_raw_fd(),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let exit = match handle.pidfd() {
            Some(fd) => Some(watch(fd.as_raw_fd(), Interest::READABLE)?),
            None => None,
        };
        Ok(Self {
            socket,
            exit,
            handle,
        })
    }

    /// The child's process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.handle.pid()
    }

    /// Kills the child (`SIGKILL`); its `join` then reports
    /// [`Error::Signaled`].
    ///
    /// # Errors
    ///
    /// As [`Handle::kill`].
    pub fn kill(&self) -> Result<()> {
        self.handle.kill()
    }

    /// The blocking handle, for what only it offers; still registered
    /// with nothing.
    pub fn into_inner(self) -> Handle<R, S, V, K> {
        let Self {
            socket,
            exit,
            handle,
        } = self;
        drop((socket, exit));
        handle
    }

    /// Sends `value` to the child. What the socket does not take at once
    /// waits in the handle's buffer while this waits for room; if this
    /// future is dropped first, pproc's flusher writes the rest, so a
    /// value sent is never cut short.
    ///
    /// # Errors
    ///
    /// As [`Handle::send`].
    pub async fn send(&self, value: &S) -> Result<()>
    where
        S: Serialize,
    {
        if !self.handle.send_nowait(value)? {
            return Ok(());
        }
        loop {
            let mut ready = self.socket.writable().await.map_err(Error::Io)?;
            if !self.handle.flush_now()? {
                return Ok(());
            }
            ready.clear_ready();
        }
    }
}

impl<R, S, V: DeserializeOwned, K> AsyncHandle<R, S, V, K> {
    /// Waits for the next value from the child.
    ///
    /// # Errors
    ///
    /// As [`Handle::recv`]: [`Error::Disconnected`] once the child is done
    /// and everything it sent was received, or how it ended.
    pub async fn recv(&mut self) -> Result<V> {
        let value = self.recv_now().await;
        if !matches!(value, Err(Error::Disconnected)) || self.handle.is_finished().unwrap_or(true) {
            return value;
        }
        // The channel closed before the child's end is known: how it ended
        // decides, as a blocking receive waits for it (a little while).
        if let Some(exit) = &self.exit {
            let _ = ::tokio::time::timeout(EXIT_GRACE, exit.readable()).await;
        }
        match self.handle.try_recv() {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Err(Error::Disconnected),
            Err(err) => Err(err),
        }
    }

    /// The next value, or the end as the child's channel tells it now.
    async fn recv_now(&mut self) -> Result<V> {
        let attempt = |handle: &Handle<R, S, V, K>| handle.try_recv().transpose();
        if let Some(value) = attempt(&self.handle) {
            return value;
        }
        loop {
            let mut ready = readable(&self.socket, self.exit.as_ref()).await?;
            if let Some(value) = attempt(&self.handle) {
                return value;
            }
            ready.clear_ready();
        }
    }

    /// The values the child sends, as a [`Stream`]: it ends when the child
    /// is done sending; an abnormal end (a panic, a kill) is a last `Err`,
    /// as for [`Handle::iter`].
    pub fn stream(&mut self) -> impl Stream<Item = Result<V>> + '_ {
        futures::stream::unfold(Some(self), |handle| async move {
            let handle = handle?;
            match handle.recv().await {
                Ok(value) => Some((Ok(value), Some(handle))),
                Err(Error::Disconnected) => None,
                // An error sent in place of a value: the stream goes on.
                Err(err @ Error::Remote { .. }) => Some((Err(err), Some(handle))),
                Err(err) => Some((Err(err), None)),
            }
        })
    }
}

impl<R: DeserializeOwned, S, V, K> AsyncHandle<R, S, V, K> {
    /// Waits for the child to finish and returns its result. Dropping
    /// this future before it is ready kills and reaps the child.
    ///
    /// # Errors
    ///
    /// As [`Handle::join`].
    pub async fn join(mut self) -> Result<R> {
        loop {
            if let Some(result) = self.handle.join_until(Deadline::Now) {
                return result;
            }
            // Gone (or killed by its deadline): what is left to read is
            // there now, and `join` only collects it.
            if self.handle.is_finished().unwrap_or(true) {
                return self.into_inner().join();
            }
            let mut ready = readable(&self.socket, self.exit.as_ref()).await?;
            if let Some(result) = self.handle.join_until(Deadline::Now) {
                return result;
            }
            ready.clear_ready();
        }
    }
}

/// `child.await` is `child.join().await`.
impl<R, S, V, K> IntoFuture for AsyncHandle<R, S, V, K>
where
    R: DeserializeOwned + Send + 'static,
    S: Send + 'static,
    V: Send + 'static,
    K: Send + 'static,
{
    type Output = Result<R>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<R>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.join())
    }
}

impl<R, S, V, K> AsFd for AsyncHandle<R, S, V, K> {
    /// The socket under the channel, as [`Handle`]'s.
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.handle.as_fd()
    }
}

impl<R, S, V, K> std::fmt::Debug for AsyncHandle<R, S, V, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncHandle")
            .field("pid", &self.handle.pid())
            .field("name", &self.handle.name())
            .finish_non_exhaustive()
    }
}

/// A pool call's result, awaited: `pool.start(call)?.await`. The pool's
/// workers are driven by whoever waits on them, so this waits on tokio's
/// blocking pool (`spawn_blocking`), never on a runtime thread. Dropping
/// the future abandons the result; the worker finishes the call and goes
/// on with the next.
///
/// # Examples
///
/// ```
/// use pproc::{parallel, Pool};
///
/// #[parallel]
/// fn triple(x: u64) -> u64 {
///     3 * x
/// }
///
/// # fn main() -> pproc::Result<()> {
/// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
/// # rt.block_on(async {
/// let pool = Pool::new(2)?;
/// assert_eq!(pool.start(triple::call(5))?.await?, 15);
/// # Ok(())
/// # })
/// # }
/// ```
impl<R: Send + 'static> IntoFuture for Pending<R> {
    type Output = Result<R>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<R>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            ::tokio::task::spawn_blocking(move || self.join())
                .await
                .unwrap_or_else(|err| Err(Error::Io(io::Error::other(err))))
        })
    }
}

/// A [`Map`]'s (or a [`Queue`]'s) results as a [`Stream`]: in input order
/// for a map, as they arrive for a queue. The map runs on tokio's blocking
/// pool and hands each result over as the stream is polled, one ahead:
/// the map's window holds its input back as it does for an iterator.
/// Dropping the stream drops the map when its next result is in, which
/// kills and reaps its children.
///
/// # Examples
///
/// ```
/// use futures::StreamExt;
/// use pproc::{parallel, Map};
///
/// #[parallel]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// # fn main() -> pproc::Result<()> {
/// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
/// # rt.block_on(async {
/// let squares: Vec<u64> = pproc::tokio::stream(Map::new(square::call, 1..=4))
///     .map(Result::unwrap)
///     .collect()
///     .await;
/// assert_eq!(squares, [1, 4, 9, 16]);
/// # Ok(())
/// # })
/// # }
/// ```
///
/// # Panics
///
/// Outside a tokio runtime.
pub fn stream<M, T>(map: M) -> impl Stream<Item = Result<T>> + Send + 'static
where
    M: Results<T> + Send + 'static,
    T: Send + 'static,
{
    let (sender, receiver) = ::tokio::sync::mpsc::channel(1);
    let mut map = map;
    ::tokio::task::spawn_blocking(move || {
        // A stream dropped while an item runs is noticed within a look.
        while !sender.is_closed() {
            let result = match map.next_within(LOOK) {
                Within::Later => continue,
                Within::End => return,
                Within::Item(result) => result,
            };
            if sender.blocking_send(result).is_err() {
                break;
            }
        }
        // The stream was dropped: so is the map, with its children.
    });
    futures::stream::unfold(receiver, |mut receiver| async move {
        let result = receiver.recv().await?;
        Some((result, receiver))
    })
}

/// How long a receive that finds the channel closed waits for the child's
/// exit, to tell how it ended: as long as a blocking one does.
const EXIT_GRACE: Duration = Duration::from_millis(200);

/// How long a map's thread waits for a result before it looks whether
/// its stream is still there.
const LOOK: Duration = Duration::from_millis(50);

/// A [`Map`] or a [`Queue`]: what [`stream`] takes.
pub trait Results<T>: Iterator<Item = Result<T>> + sealed::Sealed {
    /// The next result if it comes within `timeout`.
    #[doc(hidden)]
    fn next_within(&mut self, timeout: Duration) -> Within<Result<T>>;
}

impl<C, T> Results<T> for Map<C, T>
where
    C: Iterator,
    C::Item: Task<Item = T>,
{
    fn next_within(&mut self, timeout: Duration) -> Within<Result<T>> {
        Map::next_within(self, Some(timeout))
    }
}

impl<C, T> Results<T> for Queue<C, T>
where
    C: Iterator,
    C::Item: Task<Item = T>,
{
    fn next_within(&mut self, timeout: Duration) -> Within<Result<T>> {
        match Queue::next_within(self, Some(timeout)) {
            Within::Item((_, result)) => Within::Item(result),
            Within::End => Within::End,
            Within::Later => Within::Later,
        }
    }
}

mod sealed {
    pub trait Sealed {}
    impl<C, T> Sealed for super::Map<C, T> {}
    impl<C, T> Sealed for super::Queue<C, T> {}
}

/// Many children, awaited as they end, as tokio's `JoinSet` awaits tasks:
/// [`spawn`](Self::spawn) starts one, [`join_next`](Self::join_next)
/// waits for the next to end. Dropping the set kills and reaps every child
/// still in it; [`kill_all`](Self::kill_all) does so and keeps the set.
///
/// Each child waits on its own descriptors in tokio's reactor: a
/// thousand children in a set on a current-thread runtime take no thread
/// of their own.
pub struct JoinSet<R> {
    running: FuturesUnordered<Joining<R>>,
}

/// A child's `join` in a [`JoinSet`], with its pid.
type Joining<R> = Pin<Box<dyn Future<Output = (u32, Result<R>)> + Send>>;

impl<R: DeserializeOwned + Send + 'static> JoinSet<R> {
    /// An empty set.
    #[must_use]
    pub fn new() -> Self {
        Self {
            running: FuturesUnordered::new(),
        }
    }

    /// Starts `call` in a new child process, in the set; returns its pid.
    ///
    /// # Errors
    ///
    /// As [`Builder::start`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn spawn<F>(&mut self, call: Call<R, (), (), Returns, F>) -> Result<u32> {
        self.push(AsyncHandle::start(call)?)
    }

    /// Starts `call` with the options of `builder`, in the set.
    ///
    /// # Errors
    ///
    /// As [`Builder::start`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn spawn_with<F>(
        &mut self,
        builder: &Builder,
        call: Call<R, (), (), Returns, F>,
    ) -> Result<u32> {
        self.push(AsyncHandle::start_with(builder, call)?)
    }

    /// Adds a child started already; returns its pid.
    ///
    /// # Errors
    ///
    /// None yet: the `Result` leaves room for the reactor's.
    pub fn push(&mut self, child: AsyncHandle<R>) -> Result<u32> {
        let pid = child.pid();
        self.running
            .push(Box::pin(async move { (pid, child.join().await) }));
        Ok(pid)
    }

    /// Waits for the next child to end and returns its result; `None` once
    /// the set is empty.
    pub async fn join_next(&mut self) -> Option<Result<R>> {
        Some(self.join_next_with_pid().await?.1)
    }

    /// As [`join_next`](Self::join_next), with the pid of the child that
    /// ended (what [`spawn`](Self::spawn) returned for it), as tokio's
    /// `join_next_with_id` gives the task's id.
    pub async fn join_next_with_pid(&mut self) -> Option<(u32, Result<R>)> {
        self.running.next().await
    }

    /// Waits for every child, and returns their results in the order they
    /// ended.
    pub async fn join_all(mut self) -> Vec<Result<R>> {
        let mut results = Vec::with_capacity(self.len());
        while let Some(result) = self.join_next().await {
            results.push(result);
        }
        results
    }

    /// Kills and reaps every child in the set, and empties it.
    pub fn kill_all(&mut self) {
        self.running.clear();
    }

    /// How many children are in the set.
    #[must_use]
    pub fn len(&self) -> usize {
        self.running.len()
    }

    /// Whether the set is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }
}

impl<R: DeserializeOwned + Send + 'static> Default for JoinSet<R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<R> std::fmt::Debug for JoinSet<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinSet")
            .field("len", &self.running.len())
            .finish()
    }
}
