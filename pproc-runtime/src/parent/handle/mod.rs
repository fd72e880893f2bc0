//! The parent's end of a child: its process, its channel and its result.
//! This file is the public face; [`read`] reads the channel, [`rpc`]
//! matches replies to requests.

mod read;
mod rpc;

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use nix::sys::socket::Shutdown;
use nix::unistd::Pid;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub(crate) use self::read::Event;
use self::read::{Ahead, Inner};
use super::delivery::{Returns, Types};
use crate::error::{Error, Result};
use crate::lock::{Slot, Taken, lock};
use crate::process::capture::Capture;
use crate::process::child::Child;
use crate::process::limits::{self, Limits};
use crate::process::spawn::Spawned;
use crate::process::tree;
use crate::wire::codec::decode;
use crate::wire::conn::Conn;
use crate::wire::frame::tag;
use crate::wire::outbox::{Outbox, Pushed};
use crate::wire::recv::{Iter, batch, optional};
use crate::wire::wait::Deadline;

/// A running (or finished) child process started by pproc, with the
/// parent's end of its channel.
///
/// `R` is the function's return type; `S` is what the parent sends and `V`
/// what it receives, the mirror of the child's [`Channel<V, S>`](crate::Channel).
/// Functions without a channel have `S = V = ()`. `K` is how the call
/// delivers its values to an exchange ([`Returns`] or
/// [`Streams`](crate::Streams)), which `#[parallel]` picks.
///
/// A `Handle` owns its child: **dropping it kills the child** if it is
/// still running, and reaps it, so no zombie and no descriptor is left
/// behind. This is unlike `std::thread::JoinHandle` and
/// `std::process::Child`, whose thread or process runs on: keep the handle
/// until [`join`](Self::join) (or another way of waiting) returns, or let
/// the child go with [`detach`](Self::detach). `f::start(x)?;` alone starts
/// a child and kills it at once, and the compiler warns about it.
///
/// # Examples
///
/// ```
/// use pproc::{parallel, Handle};
///
/// #[parallel]
/// fn add(a: i64, b: i64) -> i64 {
///     a + b
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let h: Handle<i64> = add::start(2, 3)?;
/// assert_eq!(h.join()?, 5);
/// # Ok(())
/// # }
/// ```
#[must_use = "the child is killed when its handle is dropped: keep the handle and `join` it, or `detach` it"]
pub struct Handle<R, S = (), V = (), K = Returns> {
    inner: Mutex<Inner>,
    /// Values read ahead of `inner`, which a receive takes without its
    /// lock (see [`Ahead`]).
    ahead: Slot<Ahead>,
    /// The socket under the channel, and the pidfd: lent without the lock.
    socket: Arc<OwnedFd>,
    /// What was sent and not written yet: a send only takes its lock.
    out: Arc<Outbox>,
    pidfd: Option<Arc<OwnedFd>>,
    /// Signalled when a reply is filed in the book, or its reader stops.
    news: Condvar,
    name: String,
    pid: Pid,
    _types: Types<R, S, V, K>,
}

impl<R, S, V, K> Handle<R, S, V, K> {
    pub(crate) fn new(name: String, conn: Conn, spawned: Spawned) -> Self {
        tree::enter(spawned.pid, &name);
        let pidfd = spawned.pidfd.map(Arc::new);
        Self {
            name: name.clone(),
            pid: spawned.pid,
            news: Condvar::new(),
            socket: conn.shared_fd(),
            out: conn.outbox(),
            pidfd: pidfd.clone(),
            inner: Mutex::new(Inner::new(name, conn, Child::new(spawned.pid, pidfd))),
            ahead: Slot::new(Ahead::default()),
            _types: PhantomData,
        }
    }

    /// The handle of a child on another host, whose frames `conn` carries
    /// and whose end `end` knows (see [`remote`](crate::remote)).
    pub(crate) fn remote(
        name: String,
        conn: Conn,
        pid: Pid,
        end: Arc<crate::remote::link::End>,
    ) -> Self {
        let exit = end.exit();
        Self {
            name: name.clone(),
            pid,
            news: Condvar::new(),
            socket: conn.shared_fd(),
            out: conn.outbox(),
            pidfd: Some(exit),
            inner: Mutex::new(Inner::new(name, conn, Child::remote(pid, end))),
            ahead: Slot::new(Ahead::default()),
            _types: PhantomData,
        }
    }

    /// The same handle with other type parameters: an exchange holds
    /// handles of many functions, and decodes each with its own types.
    pub(crate) fn cast<R2, S2, V2, K2>(self) -> Handle<R2, S2, V2, K2> {
        Handle {
            inner: self.inner,
            ahead: self.ahead,
            socket: self.socket,
            out: self.out,
            pidfd: self.pidfd,
            news: self.news,
            name: self.name,
            pid: self.pid,
            _types: PhantomData,
        }
    }

    /// The state, with the values read ahead of it put back in front.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.lock_ahead().0
    }

    /// The state, and the values read ahead of it, which it holds now.
    fn lock_ahead(&self) -> (MutexGuard<'_, Inner>, Taken<'_, Ahead>) {
        let mut inner = lock(&self.inner);
        let ahead = self.take_ahead(&mut inner);
        (inner, ahead)
    }

    /// Puts the values read ahead back in front of `inner`'s, for a
    /// reader that holds its lock, and hands over the emptied box.
    fn take_ahead(&self, inner: &mut Inner) -> Taken<'_, Ahead> {
        let mut ahead = self.ahead.wait();
        ahead.put_back(&mut inner.conn, &mut inner.pending);
        ahead
    }

    fn inner_mut(&mut self) -> &mut Inner {
        let inner = self
            .inner
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.ahead
            .get_mut()
            .put_back(&mut inner.conn, &mut inner.pending);
        inner
    }

    /// The next value read ahead, if there is one.
    #[inline]
    fn recv_ahead(&self) -> Option<Result<V>>
    where
        V: DeserializeOwned,
    {
        let mut ahead = self.ahead.take()?;
        ahead.next().map(decode::<V>)
    }

    /// Sends a `DATA` frame holding `value`, whatever the handle's types,
    /// and writes it out: a request's reply is awaited next.
    pub(crate) fn send_data<T: Serialize>(&self, value: &T) -> Result<()> {
        let mut inner = self.lock();
        inner.conn.send_value(tag::DATA, value)?;
        inner.conn.flush()
    }

    /// Sends a `DATA` or `ERROR` frame holding `value`: into the outbox
    /// when it takes it, otherwise through the connection.
    fn send_frame<T: Serialize + ?Sized>(&self, tag: u8, value: &T) -> Result<()> {
        // Writing reads nothing out of the state: the values read ahead
        // stay where they are.
        match self.out.push(tag, value)? {
            Pushed::Held => Ok(()),
            Pushed::Full => lock(&self.inner).conn.flush(),
            Pushed::Refused => lock(&self.inner).conn.send_value(tag, value),
        }
    }

    /// For `select`: whether the child has exited, or what to poll for it.
    pub(crate) fn exit_state(&self) -> Result<Exit<'_>> {
        if self.lock().child.wait_exited(Deadline::Now)? {
            return Ok(Exit::Done);
        }
        Ok(self
            .pidfd
            .as_deref()
            .map_or(Exit::Blind, |fd| Exit::Fd(fd.as_fd())))
    }

    /// The pidfd, readable once the child has exited; `None` on kernels
    /// without pidfds (before 5.3).
    pub(crate) fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_deref().map(AsFd::as_fd)
    }

    /// The socket under the channel, without writing out what waits.
    #[cfg(feature = "tokio")]
    pub(crate) fn socket(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// Sends `value` as a `DATA` frame without waiting for room: what the
    /// socket does not take now waits in the outbox. Returns whether
    /// bytes still wait ([`flush_now`](Self::flush_now) writes more).
    #[cfg(feature = "tokio")]
    pub(crate) fn send_nowait<T: Serialize + ?Sized>(&self, value: &T) -> Result<bool> {
        self.out.push_nowait(tag::DATA, value)?;
        Ok(self.out.is_dirty())
    }

    /// Writes what the socket takes now of what waits; whether bytes
    /// still wait.
    #[cfg(feature = "tokio")]
    pub(crate) fn flush_now(&self) -> Result<bool> {
        self.out.flush_now();
        self.out.lock()?.check()?;
        Ok(self.out.is_dirty())
    }

    /// Shuts the channel down both ways: the child's sends and receives
    /// fail with `Disconnected` from now on, and a reusable worker exits.
    pub(crate) fn close_channel(&self) {
        // Only fails if the socket is not connected any more: closed is
        // what we want.
        let _ = nix::sys::socket::shutdown(self.socket.as_raw_fd(), Shutdown::Both);
    }

    /// The child leads its own process group.
    pub(crate) fn set_group(&mut self, group: bool) {
        self.inner_mut().child.group = group;
    }

    /// The worker writes its answers to `log`.
    pub(crate) fn set_log(&mut self, log: crate::wire::log::Reader) {
        self.inner_mut().log = Some(log);
    }

    /// The child's output is captured.
    pub(crate) fn set_capture(&mut self, capture: Capture) {
        self.inner_mut().capture = Some(capture);
    }

    /// The limits a child on another host was started with there: they
    /// tell how it ended.
    pub(crate) fn note_limits(&mut self, limits: Limits) {
        self.inner_mut().limits = limits;
    }

    /// Applies resource limits to the child, and watches its deadline. On
    /// failure the child is killed.
    pub(crate) fn limit(&mut self, limits: Limits) -> Result<()> {
        let inner = self.inner_mut();
        inner.limits = limits;
        limits::apply(&mut inner.child, limits)
    }

    /// Sends the `INIT` frame, where there is an initializer, then the
    /// arguments.
    pub(crate) fn send_args(&self, init: Option<&[u8]>, args: &[u8]) -> Result<()> {
        let mut inner = self.lock();
        let sent = match init {
            Some(init) => inner.conn.send_bytes(tag::INIT, init),
            None => Ok(()),
        };
        match sent.and_then(|()| inner.conn.send_bytes(tag::ARGS, args)) {
            // The child refused to start (and said why): `join` reports it.
            Err(Error::Disconnected) | Ok(()) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// The child's process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.pid.as_raw().cast_unsigned()
    }

    /// The registered name of the function the child runs.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the child process has exited. Never blocks.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the process could not be waited for.
    pub fn is_finished(&self) -> Result<bool> {
        match self.lock().child.wait(Deadline::Now) {
            Ok(_) => Ok(true),
            Err(Error::Timeout) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Lets the child run on its own, for fire-and-forget work: the handle
    /// is given up without killing the child, and pproc reaps the child
    /// when it exits, so no zombie is left.
    ///
    /// The parent's end of the channel closes: sends of the child's fail
    /// with [`Error::Disconnected`] from then on, and its result is not
    /// read. A [`Builder::deadline`](crate::Builder::deadline) still kills
    /// it when it passes. A detached child still ends when this process
    /// does, as every child of pproc does (its parent-death signal), so
    /// keep the handle for work that must finish.
    ///
    /// # Examples
    ///
    /// ```
    /// use pproc::parallel;
    ///
    /// #[parallel]
    /// fn touch(path: String) {
    ///     std::fs::write(path, b"done").unwrap();
    /// }
    ///
    /// # fn main() -> pproc::Result<()> {
    /// let path = std::env::temp_dir().join(format!("pproc-detach-{}", std::process::id()));
    /// touch::start(path.display().to_string())?.detach()?;
    /// // The child runs on without its handle; this process waits for its file.
    /// let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    /// while !path.exists() && std::time::Instant::now() < until {
    ///     std::thread::sleep(std::time::Duration::from_millis(5));
    /// }
    /// assert!(path.exists());
    /// # std::fs::remove_file(&path).ok();
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] if the thread that reaps detached children cannot
    /// be started (or, in a child made by
    /// [`Exchange::create`](crate::Exchange::create)'s fork, does not
    /// exist there): the child is then killed and reaped, as on drop.
    pub fn detach(self) -> Result<()> {
        let inner = self
            .inner
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Inner { child, conn, .. } = inner;
        drop(conn);
        crate::process::reaper::adopt(child)
    }

    /// Kills the child with `SIGKILL`, and with it the processes it
    /// started, when it leads its own process group (the default; see
    /// [`Builder::process_group`](crate::Builder::process_group)). A later
    /// [`join`](Self::join) returns [`Error::Signaled`], unless the child had
    /// already sent its result. Killing a child that has exited does
    /// nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the signal could not be sent.
    pub fn kill(&self) -> Result<()> {
        self.lock().child.kill()
    }

    /// Stops the child gracefully: sends `SIGTERM` (to its process group,
    /// when it leads one), waits up to `grace` for it to exit, then sends
    /// `SIGKILL`. Descendants still in its group when it exits are killed
    /// too, so nothing of the tree is left running. The child is reaped; a
    /// later [`join`](Self::join) reports how it ended (usually
    /// [`Error::Signaled`] with `SIGTERM` or `SIGKILL`). A child that has
    /// exited already is only reaped.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use pproc::{parallel, Error};
    ///
    /// #[parallel]
    /// fn forever() {
    ///     loop {
    ///         std::thread::park();
    ///     }
    /// }
    ///
    /// # fn main() -> pproc::Result<()> {
    /// let h = forever::start()?;
    /// h.terminate(Duration::from_secs(1))?;
    /// assert!(matches!(h.join(), Err(Error::Signaled { signal: 15 })));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if a signal could not be sent or the child could not
    /// be waited for.
    pub fn terminate(&self, grace: Duration) -> Result<()> {
        self.lock().child.terminate(grace).map(drop)
    }

    /// Closes the parent's sending end: once the child has received what
    /// was sent before, its receives fail with [`Error::Disconnected`] (a
    /// serving child's [`Channel::serve`](crate::Channel::serve) returns).
    /// The child can still send, and its result still comes back.
    pub fn close(&self) {
        // What was sent goes first. A child that is gone has nothing to
        // read, and a closed socket is what we want.
        let _ = self.flush();
        let _ = nix::sys::socket::shutdown(self.socket.as_raw_fd(), Shutdown::Write);
    }

    /// Writes out the values sent so far that still wait in the handle's
    /// buffer.
    ///
    /// Values are gathered into one write of up to 64 KiB, which goes out
    /// when it fills, when this end waits to receive or join, on
    /// [`close`](Self::close), and once the oldest value has waited
    /// [`DEFAULT_FLUSH_AFTER`](crate::DEFAULT_FLUSH_AFTER) (see
    /// [`set_flush_after`](Self::set_flush_after)). Flush before waiting on
    /// the socket in an event loop of your own.
    ///
    /// # Examples
    ///
    /// ```
    /// use pproc::{parallel, Channel};
    ///
    /// #[parallel]
    /// fn sum(ch: Channel<u64, u64>) -> u64 {
    ///     ch.iter().map(Result::unwrap).sum()
    /// }
    ///
    /// # fn main() -> pproc::Result<()> {
    /// let h = sum::start()?;
    /// for n in 1..=100 {
    ///     h.send(&n)?;
    /// }
    /// h.flush()?;
    /// h.close();
    /// assert_eq!(h.join()?, 5050);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] if the child is gone. Once a write has
    /// failed, every later send and flush fails the same way.
    pub fn flush(&self) -> Result<()> {
        match self.inner.try_lock() {
            Ok(mut inner) => inner.conn.flush(),
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner().conn.flush(),
            // Another thread holds the handle: it reads as it waits, so the
            // child is drained while this one waits for room.
            Err(TryLockError::WouldBlock) => self.out.flush_waiting(),
        }
    }

    /// Sets how long a value sent on this handle may wait in its buffer
    /// before it is written out, however busy the sender is:
    /// [`DEFAULT_FLUSH_AFTER`](crate::DEFAULT_FLUSH_AFTER) unless set.
    /// [`Duration::ZERO`] writes every value at once, one write each;
    /// [`Duration::MAX`] leaves values waiting until the buffer fills, a
    /// receive waits, or a flush.
    pub fn set_flush_after(&self, after: Duration) {
        self.out.set_after(after);
    }

    /// Sends an error in place of a value: the child's next receive on its
    /// [`Channel`](crate::Channel) returns it as [`Error::Remote`] with this
    /// message.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] if the child is gone.
    pub fn send_error(&self, error: impl fmt::Display) -> Result<()> {
        self.send_frame(tag::ERROR, &error.to_string())
    }
}

impl<R: DeserializeOwned, S, V, K> Handle<R, S, V, K> {
    /// Waits for the child to finish and returns its result. Values the
    /// child sent that were not received are dropped.
    ///
    /// # Errors
    ///
    /// [`Error::Panicked`] if the child panicked, [`Error::Signaled`] if it
    /// was killed, [`Error::StackOverflow`] if it overflowed its stack,
    /// [`Error::Exited`] if it exited without a result,
    /// [`Error::Codec`] if the result does not decode, and the errors of
    /// starting a child ([`Error::Unregistered`], [`Error::VersionSkew`]).
    pub fn join(mut self) -> Result<R> {
        let inner = self.inner_mut();
        let status = inner.settle(Deadline::Never, false)?;
        inner.result(status)
    }

    /// Waits at most `timeout` for the child to finish and returns its
    /// result. On [`Error::Timeout`] the child keeps running and the handle
    /// stays usable: values it sent meanwhile can still be received.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`], or as [`join`](Self::join).
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<R> {
        let inner = self.inner_mut();
        let status = inner.settle(Deadline::after(timeout), true)?;
        inner.result(status)
    }

    /// The result, or `None` if `deadline` passed first (the child runs
    /// on).
    pub(crate) fn join_until(&mut self, deadline: Deadline) -> Option<Result<R>> {
        let inner = self.inner_mut();
        match inner.settle(deadline, true) {
            Ok(status) => Some(inner.result(status)),
            Err(Error::Timeout) => None,
            Err(err) => Some(Err(err)),
        }
    }

    /// Waits for the child to finish, and returns its result with what it
    /// wrote to its standard output and error, as
    /// [`std::process::Command::output`] does. The streams are empty unless
    /// the child was started with
    /// [`Builder::capture_output`](crate::Builder::capture_output).
    ///
    /// # Examples
    ///
    /// ```
    /// use pproc::{parallel, Builder};
    ///
    /// #[parallel]
    /// fn chatty(n: u32) -> u32 {
    ///     println!("working on {n}");
    ///     eprintln!("a warning");
    ///     n + 1
    /// }
    ///
    /// # fn main() -> pproc::Result<()> {
    /// let out = Builder::new().capture_output(true).start(chatty::call(41))?.join_output();
    /// assert_eq!(out.result?, 42);
    /// assert_eq!(out.stdout, b"working on 41\n");
    /// assert_eq!(out.stderr, b"a warning\n");
    /// # Ok(())
    /// # }
    /// ```
    #[must_use = "the output holds the child's result"]
    pub fn join_output(mut self) -> Output<R> {
        let inner = self.inner_mut();
        let result = inner
            .settle(Deadline::Never, false)
            .and_then(|status| inner.result(status));
        let (stdout, stderr) = inner
            .capture
            .take()
            .map(Capture::finish)
            .unwrap_or_default();
        Output {
            result,
            stdout,
            stderr,
        }
    }
}

/// A child's result with its captured standard output and error, from
/// [`Handle::join_output`].
///
/// # Examples
///
/// ```
/// use pproc::{parallel, Builder};
///
/// #[parallel]
/// fn steps(n: u32) -> u32 {
///     for step in 1..=n {
///         println!("step {step}");
///     }
///     assert!(n < 3, "too many steps");
///     n
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let capture = Builder::new().capture_output(true);
/// let out = capture.start(steps::call(2))?.join_output();
/// assert_eq!((out.result?, out.stdout), (2, b"step 1\nstep 2\n".to_vec()));
/// // What a failed child wrote is kept too.
/// let out = capture.start(steps::call(3))?.join_output();
/// assert!(out.result.is_err_and(|err| err.is_panic()));
/// assert!(out.stdout.ends_with(b"step 3\n"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
#[must_use = "the output holds the child's result"]
pub struct Output<R> {
    /// What [`Handle::join`] would have returned.
    pub result: Result<R>,
    /// Everything the child wrote to its standard output.
    pub stdout: Vec<u8>,
    /// Everything the child wrote to its standard error.
    pub stderr: Vec<u8>,
}

impl<R, S: Serialize, V, K> Handle<R, S, V, K> {
    /// Sends a value to the child.
    ///
    /// The value may wait in the handle's buffer, with others, for a
    /// millisecond at most: see [`flush`](Self::flush). Values arrive in
    /// the order they were sent.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] if the child is gone (possibly only at a
    /// later send, for a value that waited), [`Error::Codec`] if the value
    /// does not serialize.
    pub fn send(&self, value: &S) -> Result<()> {
        self.send_frame(tag::DATA, value)
    }
}

impl<R, S, V: DeserializeOwned, K> Handle<R, S, V, K> {
    /// Waits for the next value from the child.
    ///
    /// # Errors
    ///
    /// Once the child is done and everything it sent was received:
    /// [`Error::Disconnected`] if it returned normally, otherwise how it
    /// ended ([`Error::Panicked`], [`Error::Signaled`], [`Error::Exited`]).
    /// [`Error::Codec`] for a value that does not decode as `V`;
    /// [`Error::Remote`] for an error the child sent in place of a value
    /// (the next receive goes on with the next one).
    #[inline]
    pub fn recv(&self) -> Result<V> {
        if let Some(mut ahead) = self.ahead.take()
            && let Some(body) = ahead.next()
        {
            return decode::<V>(body);
        }
        self.recv_locked()
    }

    /// [`recv`](Self::recv) once nothing read ahead is left: reads ahead
    /// again, or waits.
    #[inline(never)]
    fn recv_locked(&self) -> Result<V> {
        let (mut inner, mut ahead) = self.lock_ahead();
        if inner.pending.is_empty() {
            if let Some(body) = ahead.fill(&mut inner.conn) {
                return decode::<V>(body);
            }
            drop(ahead);
            if let Some(body) = inner.conn.next_data() {
                return decode::<V>(body);
            }
        }
        inner.recv(Deadline::Never)
    }

    /// Waits at most `timeout` for the next value.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if nothing arrived in time, otherwise as
    /// [`recv`](Self::recv).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<V> {
        if let Some(value) = self.recv_ahead() {
            return value;
        }
        self.lock().recv(Deadline::after(timeout))
    }

    /// Returns the next value if one has arrived, without waiting.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    pub fn try_recv(&self) -> Result<Option<V>> {
        if let Some(value) = self.recv_ahead() {
            return value.map(Some);
        }
        optional(self.lock().recv(Deadline::Now))
    }

    /// Waits for a first value, then up to `timeout` more to fill a batch
    /// of at most `max` values (concurrence's `receive_batch`).
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv) for the first value; an error met after it
    /// ends the batch and is returned by the next receive.
    pub fn recv_batch(&self, max: usize, timeout: Duration) -> Result<Vec<V>> {
        let mut inner = self.lock();
        let mut deferred = None;
        let out = batch(
            max,
            timeout,
            |deadline| inner.recv(deadline),
            |err| {
                deferred = Some(err);
            },
        );
        if let Some(err) = deferred {
            inner.conn.defer(err);
        }
        out
    }

    /// An iterator over the values the child sends. It ends when the child
    /// is done sending; an abnormal end (a panic, a kill) is yielded as a
    /// last `Err`.
    #[must_use]
    pub fn iter(&self) -> Iter<'_, V> {
        Iter::new(move || self.recv())
    }

    /// Calls `f` with each value the child sends, until it is done sending
    /// (concurrence's `receiver`). Values the child sent before it exited
    /// are all delivered. Errors the child sent in place of values
    /// ([`Error::Remote`]) are handed to `f` too; run it on a scoped thread
    /// to keep sending to the child meanwhile (a `Handle` is `Sync`).
    ///
    /// # Examples
    ///
    /// ```
    /// use pproc::{parallel, Channel};
    ///
    /// #[parallel]
    /// fn countdown(ch: Channel<u32>, from: u32) {
    ///     for n in (0..=from).rev() {
    ///         ch.send(&n).unwrap();
    ///     }
    /// }
    ///
    /// # fn main() -> pproc::Result<()> {
    /// let h = countdown::start(3)?;
    /// let mut seen = Vec::new();
    /// h.for_each(|n| seen.push(n.unwrap()))?;
    /// assert_eq!(seen, [3, 2, 1, 0]);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// How the child ended, if not normally ([`Error::Panicked`],
    /// [`Error::Signaled`], ...), or [`Error::Codec`] for a value that does
    /// not decode.
    pub fn for_each(&self, mut f: impl FnMut(Result<V>)) -> Result<()> {
        loop {
            match self.recv() {
                Ok(value) => f(Ok(value)),
                Err(sent @ Error::Remote { .. }) => f(Err(sent)),
                Err(Error::Disconnected) => return Ok(()),
                Err(err) => return Err(err),
            }
        }
    }
}

impl<'a, R, S, V: DeserializeOwned, K> IntoIterator for &'a Handle<R, S, V, K> {
    type Item = Result<V>;
    type IntoIter = Iter<'a, V>;

    fn into_iter(self) -> Iter<'a, V> {
        self.iter()
    }
}

impl<R, S, V, K> AsFd for Handle<R, S, V, K> {
    /// The socket under the channel, borrowed for as long as the handle:
    /// for registering it with an event loop of your own (`poll`, `epoll`,
    /// tokio's `AsyncFd`) without `unsafe`. It is readable when a frame
    /// may be there; [`try_recv`](Self::try_recv) takes what arrived, and
    /// may find more than one value. Reading or writing it directly breaks
    /// the framing.
    ///
    /// The values sent before are written out first, as far as the
    /// socket takes them now: [`flush`](Self::flush) to be sure of all.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::os::fd::AsFd;
    ///
    /// use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    /// use pproc::{parallel, Channel};
    ///
    /// #[parallel]
    /// fn hello(ch: Channel<String>) {
    ///     ch.send(&"hello".to_owned()).unwrap();
    /// }
    ///
    /// # fn main() -> pproc::Result<()> {
    /// let h = hello::start()?;
    /// let mut fds = [PollFd::new(h.as_fd(), PollFlags::POLLIN)];
    /// poll(&mut fds, PollTimeout::NONE).unwrap();
    /// assert_eq!(h.try_recv()?.as_deref(), Some("hello"));
    /// h.join()?;
    /// # Ok(())
    /// # }
    /// ```
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.out.flush_now();
        self.socket.as_fd()
    }
}

impl<R, S, V, K> AsRawFd for Handle<R, S, V, K> {
    /// The socket under the channel, for polling it in an event loop of
    /// your own. Reading or writing it directly breaks the framing.
    ///
    /// The values sent before are written out first, as far as the
    /// socket takes them now: [`flush`](Self::flush) to be sure of all.
    fn as_raw_fd(&self) -> RawFd {
        self.out.flush_now();
        self.socket.as_raw_fd()
    }
}

/// What [`select`](crate::select) watches of one child.
pub(crate) enum Exit<'a> {
    /// It has finished.
    Done,
    /// Its pidfd, readable once it exits.
    Fd(BorrowedFd<'a>),
    /// No pidfd: check again later.
    Blind,
}

impl<R, S, V, K> fmt::Debug for Handle<R, S, V, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("name", &self.name)
            .field("pid", &self.pid.as_raw())
            .finish_non_exhaustive()
    }
}
