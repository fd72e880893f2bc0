//! The parent's end: a child process, its channel and its result.

use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::call::{Limits, Returns, Types};
use crate::capture::Capture;
use crate::channel::{Iter, batch, optional};
use crate::child::{Failure, PanicReport};
use crate::conn::{Conn, Deadline, Step, decode, poll_until, remote, tag};
use crate::error::{Error, Limit, Result};
use crate::spawn::Spawned;
use crate::{rpc, tree, watchdog};

/// How long a receive that saw the channel close waits for the child's exit
/// status, to report how it ended rather than a bare `Disconnected`.
const EXIT_GRACE: Duration = Duration::from_millis(200);

/// A running (or finished) child process started by pproc, with the
/// parent's end of its channel.
///
/// `R` is the function's return type; `S` is what the parent sends and `V`
/// what it receives, the mirror of the child's [`Channel<V, S>`](crate::Channel).
/// Functions without a channel have `S = V = ()`. `K` is how the call
/// delivers its values to an exchange ([`Returns`](crate::Returns) or
/// [`Streams`](crate::Streams)), which `#[parallel]` picks.
///
/// A `Handle` owns its child: dropping it kills the child if it is still
/// running and reaps it, so no zombie and no descriptor is left behind.
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
pub struct Handle<R, S = (), V = (), K = Returns> {
    inner: Mutex<Inner>,
    /// Signalled when a reply is filed in the book, or its reader stops.
    news: Condvar,
    name: String,
    pid: Pid,
    _types: Types<R, S, V, K>,
}

#[derive(Debug)]
struct Inner {
    conn: Conn,
    child: Child,
    outcome: Option<Outcome>,
    /// Values (`DATA` frames, or errors sent in their place) read while
    /// waiting for the result, not yet received.
    pending: VecDeque<Result<Vec<u8>>>,
    /// The limits the child was started with, to tell why it died.
    limits: Limits,
    /// Its standard output and error, when captured.
    capture: Option<Capture>,
    /// Replies that arrived for requests other than the one awaited.
    pub(crate) book: rpc::Book,
}

/// How the child said it ended.
#[derive(Debug)]
enum Outcome {
    Value(Vec<u8>),
    Panic(PanicReport),
    Fail(Failure),
}

impl Outcome {
    fn from_frame(tag: u8, body: &[u8]) -> Result<Self> {
        match tag {
            tag::RESULT => Ok(Self::Value(body.to_vec())),
            tag::PANIC => decode(body).map(Self::Panic),
            tag::FAIL => decode(body).map(Self::Fail),
            other => Err(Error::codec(format_args!(
                "unexpected frame tag {other} from the child"
            ))),
        }
    }

    /// The error this outcome stands for, if it is one.
    fn error(&self) -> Option<Error> {
        match self {
            Self::Value(_) => None,
            Self::Panic(report) => Some(Error::Panicked {
                message: report.message.clone(),
                location: report.location.clone(),
                backtrace: report.backtrace.clone(),
            }),
            Self::Fail(failure) => Some(failure.clone().into()),
        }
    }
}

/// Where a reusable worker's current call stands.
pub(crate) enum Turn {
    /// Still running.
    Running,
    /// Done: its serialized result, or how it failed.
    Done(Result<Vec<u8>>),
    /// The worker is gone (killed, or its channel broke).
    Dead(Error),
}

/// What a child that streams values has for an exchange, without waiting.
pub(crate) enum Flow {
    /// The next value it sent, serialized.
    Value(Vec<u8>),
    /// An error it sent in place of a value; the stream goes on.
    Sent(Error),
    /// Nothing yet.
    Idle,
    /// It is done sending: everything it sent was read.
    End,
}

/// How the child process ended.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Status {
    Exited(i32),
    Signaled(i32),
    /// The kernel reaped it before we could: the program ignores
    /// `SIGCHLD` (`SIG_IGN`), so how it ended is not known.
    Unknown,
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        match status {
            Status::Exited(code) => Self::Exited { code },
            Status::Signaled(signal) => Self::Signaled { signal },
            Status::Unknown => Self::Disconnected,
        }
    }
}

/// The process itself: waited for once, killed on drop if still running.
#[derive(Debug)]
struct Child {
    pid: Pid,
    pidfd: Option<OwnedFd>,
    status: Option<Status>,
    /// The child leads its own process group: signals go to the group.
    group: bool,
    /// Its deadline, while it is watched.
    ticket: Option<watchdog::Ticket>,
}

impl Child {
    fn exit_fd(&self) -> Option<BorrowedFd<'_>> {
        if self.status.is_some() {
            return None;
        }
        self.pidfd.as_ref().map(AsFd::as_fd)
    }

    /// Waits until the process has exited, without reaping it. Returns
    /// `false` on timeout.
    fn wait_exited(&self, deadline: Deadline) -> Result<bool> {
        if self.status.is_some() {
            return Ok(true);
        }
        if let Some(pidfd) = &self.pidfd {
            let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
            return poll_until(&mut fds, deadline);
        }
        // No pidfd (kernels before 5.3): poll with a growing pause.
        let mut pause = Duration::from_micros(100);
        loop {
            let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
            match waitid(Id::Pid(self.pid), flags) {
                // Reaped by the kernel: the program ignores `SIGCHLD`.
                Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(Errno::ECHILD) => {
                    return Ok(true);
                }
                Err(Errno::EINTR) | Ok(_) => {}
                Err(err) => return Err(err.into()),
            }
            let now = Instant::now();
            match deadline {
                Deadline::Now => return Ok(false),
                Deadline::At(at) if now >= at => return Ok(false),
                Deadline::At(at) => std::thread::sleep(pause.min(at - now)),
                Deadline::Never => std::thread::sleep(pause),
            }
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }

    /// Waits for the process to exit and reaps it.
    fn wait(&mut self, deadline: Deadline) -> Result<Status> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        if !self.wait_exited(deadline)? {
            return Err(Error::Timeout);
        }
        // The watchdog must not signal a pid that we are about to free.
        if let Some(ticket) = &self.ticket {
            ticket.cancel();
        }
        // Reaped with the registry locked: a pid listed there is always an
        // unreaped child of ours.
        let mut live = tree::live();
        loop {
            match waitid(Id::Pid(self.pid), WaitPidFlag::WEXITED) {
                Ok(WaitStatus::Exited(_, code)) => {
                    live.remove(&self.pid.as_raw());
                    return Ok(*self.status.insert(Status::Exited(code)));
                }
                Ok(WaitStatus::Signaled(_, signal, _)) => {
                    live.remove(&self.pid.as_raw());
                    return Ok(*self.status.insert(Status::Signaled(signal as i32)));
                }
                Err(Errno::ECHILD) => {
                    // The program ignores `SIGCHLD`: the kernel reaped the
                    // child as it exited, and its status is gone.
                    live.remove(&self.pid.as_raw());
                    return Ok(*self.status.insert(Status::Unknown));
                }
                Err(Errno::EINTR) | Ok(_) => {}
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// Sends `signal` to the child, and to its process group if it leads
    /// one. Does nothing once it has been reaped.
    fn signal(&self, signal: Signal) -> Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        // While the process is not reaped, its pid, and the group id it
        // holds, cannot have been reused. A program that ignores `SIGCHLD`
        // has its children reaped by the kernel as they exit: then the
        // pidfd still names the child alone, and its group is signalled
        // only while the child is known to be unreaped.
        if self.group && self.unreaped() {
            let _ = nix::sys::signal::killpg(self.pid, signal);
        }
        let sent = match &self.pidfd {
            Some(pidfd) => watchdog::pidfd_send_signal(pidfd, signal as libc::c_int)
                .map_err(|err| Errno::from_raw(err.raw_os_error().unwrap_or(0))),
            None if self.unreaped() => kill(self.pid, signal),
            None => Ok(()),
        };
        match sent {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// Whether the process is still ours to signal: running, or exited
    /// and not reaped (by us, or by the kernel for a program that ignores
    /// `SIGCHLD`).
    fn unreaped(&self) -> bool {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        !matches!(waitid(Id::Pid(self.pid), flags), Err(Errno::ECHILD))
    }

    fn kill(&self) -> Result<()> {
        self.signal(Signal::SIGKILL)
    }

    /// `SIGTERM`, then `SIGKILL` once `grace` has passed; descendants left
    /// in the child's group are killed as it exits. Reaps the child.
    fn terminate(&mut self, grace: Duration) -> Result<Status> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        self.signal(Signal::SIGTERM)?;
        let exited = self.wait_exited(Deadline::after(grace))?;
        // Exited or not, nothing of the tree is left running: the group id
        // is still held by the unreaped child.
        if !exited || self.group {
            self.signal(Signal::SIGKILL)?;
        }
        self.wait(Deadline::Never)
    }

    /// Whether its deadline killed it.
    fn expired(&self) -> bool {
        self.ticket.as_ref().is_some_and(watchdog::Ticket::expired)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.kill();
            let _ = self.wait(Deadline::Never);
        }
        if let Some(ticket) = &self.ticket {
            ticket.cancel();
        }
    }
}

impl Inner {
    /// Reads until the child's outcome is known or it is gone, keeping
    /// `DATA` frames when `keep` is set; then reaps the child.
    fn settle(&mut self, deadline: Deadline, keep: bool) -> Result<Status> {
        let Self {
            conn,
            child,
            outcome,
            pending,
            ..
        } = self;
        while outcome.is_none() {
            let step = conn.recv_data(
                deadline,
                child.exit_fd(),
                |body| Ok(keep.then(|| Ok(body.to_vec()))),
                |tag, body| {
                    if tag == tag::ERROR {
                        if keep {
                            pending.push_back(Err(remote(body)));
                        }
                    } else {
                        *outcome = Some(Outcome::from_frame(tag, body)?);
                    }
                    Ok(())
                },
            )?;
            match step {
                Step::Data(Some(value)) => pending.push_back(value),
                Step::Data(None) => {}
                Step::Closed | Step::Exited => break,
                Step::Timeout if outcome.is_some() => break,
                Step::Timeout => return Err(Error::Timeout),
            }
        }
        child.wait(deadline)
    }

    fn result<R: DeserializeOwned>(&self, status: Status) -> Result<R> {
        decode(self.result_bytes(status)?)
    }

    /// The serialized result, or how the child failed.
    fn result_bytes(&self, status: Status) -> Result<&[u8]> {
        match &self.outcome {
            Some(Outcome::Value(bytes)) => Ok(bytes),
            Some(other) => Err(other.error().unwrap_or(Error::Disconnected)),
            None => Err(self.status_error(status)),
        }
    }

    /// The error for a child that ended with `status` without a result:
    /// its deadline, a resource limit, or the bare status.
    fn status_error(&self, status: Status) -> Error {
        status_error(status, self.child.expired(), &self.limits)
    }

    fn recv<V: DeserializeOwned>(&mut self, deadline: Deadline) -> Result<V> {
        self.recv_via(deadline, decode::<V>)
    }

    /// The next value, read by `read`.
    fn recv_via<V>(
        &mut self,
        deadline: Deadline,
        mut read: impl FnMut(&[u8]) -> Result<V>,
    ) -> Result<V> {
        if let Some(value) = self.pending.pop_front() {
            return value.and_then(|bytes| read(&bytes));
        }
        let Self {
            conn,
            child,
            outcome,
            ..
        } = self;
        let step = conn.recv_data(deadline, child.exit_fd(), read, |tag, body| {
            if tag == tag::ERROR {
                return Err(remote(body));
            }
            *outcome = Some(Outcome::from_frame(tag, body)?);
            Ok(())
        })?;
        match step {
            Step::Data(value) => Ok(value),
            Step::Timeout => Err(Error::Timeout),
            Step::Closed | Step::Exited => Err(self.end_error(deadline)),
        }
    }

    /// The error for a receive on a channel the child is done with: how the
    /// child ended, or `Disconnected` if it returned normally.
    fn end_error(&mut self, deadline: Deadline) -> Error {
        if let Some(outcome) = &self.outcome {
            return outcome.error().unwrap_or(Error::Disconnected);
        }
        let grace = Deadline::after(EXIT_GRACE);
        let deadline = match (deadline, grace) {
            (Deadline::At(at), Deadline::At(g)) if at < g => deadline,
            (Deadline::Now, _) => Deadline::Now,
            _ => grace,
        };
        match self.child.wait(deadline) {
            Ok(status) => self.status_error(status),
            Err(Error::Timeout) => Error::Disconnected,
            Err(err) => err,
        }
    }
}

/// The error for a child that ended with `status` without a result.
pub(crate) fn status_error(status: Status, expired: bool, limits: &Limits) -> Error {
    match status {
        _ if expired => Error::Timeout,
        Status::Signaled(libc::SIGXCPU) if limits.cpu.is_some() => {
            Error::LimitExceeded(Limit::CpuTime {
                seconds: limits.cpu.unwrap_or_default(),
            })
        }
        Status::Exited(crate::child::EXIT_OUT_OF_MEMORY) => match limits.memory {
            Some(bytes) => Error::LimitExceeded(Limit::Memory { bytes }),
            None => Error::OutOfMemory,
        },
        other => other.into(),
    }
}

impl<R, S, V, K> Handle<R, S, V, K> {
    pub(crate) fn new(name: String, conn: Conn, spawned: Spawned) -> Self {
        tree::enter(spawned.pid, &name);
        Self {
            name,
            pid: spawned.pid,
            news: Condvar::new(),
            inner: Mutex::new(Inner {
                conn,
                child: Child {
                    pid: spawned.pid,
                    pidfd: spawned.pidfd,
                    status: None,
                    group: false,
                    ticket: None,
                },
                outcome: None,
                pending: VecDeque::new(),
                limits: Limits::default(),
                capture: None,
                book: rpc::Book::default(),
            }),
            _types: PhantomData,
        }
    }

    /// The same handle with other type parameters: an exchange holds
    /// handles of many functions, and decodes each with its own types.
    pub(crate) fn cast<R2, S2, V2, K2>(self) -> Handle<R2, S2, V2, K2> {
        Handle {
            inner: self.inner,
            news: self.news,
            name: self.name,
            pid: self.pid,
            _types: PhantomData,
        }
    }

    /// Without blocking: the serialized result once the child has ended
    /// (or how it failed, [`Error::Timeout`] among the ways when its
    /// deadline killed it), `None` while it runs.
    pub(crate) fn poll_result(&mut self) -> Option<Result<Vec<u8>>> {
        let inner = self.inner_mut();
        match inner.settle(Deadline::Now, false) {
            Ok(status) => Some(inner.result_bytes(status).map(<[u8]>::to_vec)),
            Err(Error::Timeout) => None,
            Err(err) => Some(Err(err)),
        }
    }

    /// Without blocking: the next value the child sent, or whether it is
    /// done sending.
    pub(crate) fn poll_flow(&mut self) -> Result<Flow> {
        let inner = self.inner_mut();
        if let Some(value) = inner.pending.pop_front() {
            return Ok(value.map_or_else(Flow::Sent, Flow::Value));
        }
        let Inner {
            conn,
            child,
            outcome,
            ..
        } = inner;
        let step = conn.recv_data(
            Deadline::Now,
            child.exit_fd(),
            |body| Ok(body.to_vec()),
            |tag, body| {
                if tag == tag::ERROR {
                    return Err(remote(body));
                }
                *outcome = Some(Outcome::from_frame(tag, body)?);
                Ok(())
            },
        );
        let step = match step {
            // Only an `ERROR` frame gives this error here.
            Err(sent @ Error::Remote { .. }) => return Ok(Flow::Sent(sent)),
            other => other?,
        };
        Ok(match step {
            Step::Data(bytes) => Flow::Value(bytes),
            Step::Timeout => Flow::Idle,
            Step::Closed | Step::Exited => Flow::End,
        })
    }

    /// Shuts the channel down both ways: the child's sends and receives
    /// fail with `Disconnected` from now on, and a reusable worker exits.
    pub(crate) fn close_channel(&mut self) {
        let inner = self.inner_mut();
        // Only fails if the socket is not connected any more: closed is
        // what we want.
        let _ = nix::sys::socket::shutdown(inner.conn.raw_fd(), nix::sys::socket::Shutdown::Both);
    }

    /// Waits for the process to exit, and reaps it.
    pub(crate) fn wait_exit(&mut self, deadline: Deadline) -> Result<()> {
        self.inner_mut().child.wait(deadline).map(drop)
    }

    /// Sends a reusable worker its next call.
    pub(crate) fn send_call(&mut self, name: &str, args: &[u8]) -> Result<()> {
        self.inner_mut()
            .conn
            .send_bytes(tag::CALL, &crate::child::join_call(name, args))
    }

    /// Without blocking: where a reusable worker's current call stands.
    /// Values it sent on its channel are pushed to `values`.
    pub(crate) fn poll_turn(&mut self, values: &mut Vec<Result<Vec<u8>>>) -> Turn {
        let Inner {
            conn,
            child,
            outcome,
            limits,
            ..
        } = self.inner_mut();
        let step = loop {
            let step = conn.recv_data(
                Deadline::Now,
                child.exit_fd(),
                |body| {
                    values.push(Ok(body.to_vec()));
                    Ok(())
                },
                |tag, body| {
                    if tag == tag::ERROR {
                        return Err(remote(body));
                    }
                    *outcome = Some(Outcome::from_frame(tag, body)?);
                    Ok(())
                },
            );
            match step {
                Ok(Step::Data(())) => {}
                // Only an `ERROR` frame gives this error here.
                Err(sent @ Error::Remote { .. }) => values.push(Err(sent)),
                other => break other,
            }
        };
        if let Some(done) = outcome.take() {
            return Turn::Done(match done {
                Outcome::Value(bytes) => Ok(bytes),
                other => Err(other.error().unwrap_or(Error::Disconnected)),
            });
        }
        match step {
            Ok(Step::Closed | Step::Exited) => {
                // It is gone or going: a dead worker's channel closes as
                // it exits.
                let expired = child.expired();
                Turn::Dead(
                    child
                        .wait(Deadline::Never)
                        .map_or_else(|err| err, |status| status_error(status, expired, limits)),
                )
            }
            Ok(_) => Turn::Running,
            Err(err) => Turn::Dead(err),
        }
    }

    /// Whether nothing more can be read from the socket: the result (or
    /// the end of the stream) is in, only the exit remains to be seen.
    pub(crate) fn is_drained(&mut self) -> bool {
        let inner = self.inner_mut();
        inner.outcome.is_some() || inner.conn.is_eof()
    }

    /// The descriptors that become readable when the child has something to
    /// say (its socket) and when it exits (its pidfd, where there is one).
    pub(crate) fn watch_fds(&mut self) -> (RawFd, Option<RawFd>) {
        let inner = self.inner_mut();
        let socket = inner.conn.raw_fd();
        (socket, inner.child.exit_fd().map(|fd| fd.as_raw_fd()))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends a `DATA` frame holding `value`, whatever the handle's types.
    pub(crate) fn send_data<T: Serialize>(&self, value: &T) -> Result<()> {
        self.lock().conn.send_value(tag::DATA, value)
    }

    /// Waits for the reply whose key is `key`, filing the replies to other
    /// requests in the book for the threads that wait for them.
    ///
    /// One waiting thread at a time reads the socket, and polls it without
    /// the lock, so that other threads can send meanwhile; the others wait
    /// on `news`, which the reader signals when it files a reply or stops
    /// reading (then one of them takes over).
    pub(crate) fn await_keyed(&self, key: u64, deadline: Deadline) -> Result<Vec<u8>> {
        let mut inner = self.lock();
        loop {
            if let Some(body) = inner.book.take(key) {
                return Ok(body);
            }
            if inner.book.reading {
                // Someone else reads: wait for news.
                let wait = match deadline {
                    Deadline::Never => Duration::MAX,
                    Deadline::Now => return Err(Error::Timeout),
                    Deadline::At(at) => match at.checked_duration_since(Instant::now()) {
                        Some(left) => left,
                        None => return Err(Error::Timeout),
                    },
                };
                inner = self
                    .news
                    .wait_timeout(inner, wait)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
                continue;
            }
            // Read what is there, without waiting.
            let mut filed = false;
            let ended = loop {
                match inner.recv_via(Deadline::Now, |body| Ok(body.to_vec())) {
                    Ok(body) => {
                        let id = rpc::reply_id(&body)?;
                        if id == key {
                            if filed {
                                self.news.notify_all();
                            }
                            return Ok(body);
                        }
                        inner.book.file(id, body);
                        filed = true;
                    }
                    // Nothing more to read; if the child is gone, how it
                    // ended (its deadline's timeout among the ways).
                    Err(Error::Timeout) if inner.child.status.is_some() || inner.conn.is_eof() => {
                        break Some(inner.end_error(deadline));
                    }
                    Err(Error::Timeout) => break None,
                    // Closed: how the child ended, once its status is in.
                    Err(Error::Disconnected) => break Some(inner.end_error(deadline)),
                    Err(err) => break Some(err),
                }
            };
            if filed {
                self.news.notify_all();
            }
            if let Some(err) = ended {
                return Err(err);
            }
            if deadline.passed() {
                return Err(Error::Timeout);
            }
            // Wait for the socket without the lock.
            inner.book.reading = true;
            let socket = inner.conn.raw_fd();
            let exit = inner.child.exit_fd().map(|fd| fd.as_raw_fd());
            drop(inner);
            // SAFETY: the handle owns both descriptors until it is dropped,
            // which `&self` prevents for the length of this call.
            let (socket, exit) = unsafe {
                (
                    BorrowedFd::borrow_raw(socket),
                    exit.map(|fd| BorrowedFd::borrow_raw(fd)),
                )
            };
            let mut fds = vec![PollFd::new(socket, PollFlags::POLLIN)];
            fds.extend(exit.map(|fd| PollFd::new(fd, PollFlags::POLLIN)));
            let polled = poll_until(&mut fds, deadline);
            inner = self.lock();
            inner.book.reading = false;
            // Another waiter may take over the reading.
            self.news.notify_all();
            if !polled? {
                return Err(Error::Timeout);
            }
        }
    }

    /// Forgets a request: its reply, if it comes, is dropped.
    pub(crate) fn abandon(&self, key: u64) {
        self.lock().book.abandon(key);
    }

    /// A fresh request id.
    pub(crate) fn next_key(&self) -> u64 {
        self.lock().book.next_key()
    }

    /// For `select`: whether the child has exited, or what to poll for it.
    pub(crate) fn exit_raw_fd(&self) -> Result<crate::supervise::Exit> {
        use crate::supervise::Exit;
        let inner = self.lock();
        if inner.child.wait_exited(Deadline::Now)? {
            return Ok(Exit::Done);
        }
        Ok(match &inner.child.pidfd {
            Some(fd) => Exit::Fd(fd.as_raw_fd()),
            None => Exit::Blind,
        })
    }

    /// The child leads its own process group.
    pub(crate) fn set_group(&mut self, group: bool) {
        self.inner_mut().child.group = group;
    }

    /// The child's output is captured.
    pub(crate) fn set_capture(&mut self, capture: Capture) {
        self.inner_mut().capture = Some(capture);
    }

    /// Applies resource limits to the child, and watches its deadline. On
    /// failure the child is killed.
    pub(crate) fn limit(&mut self, limits: Limits) -> Result<()> {
        let pid = self.pid;
        let inner = self.inner_mut();
        inner.limits = limits;
        let set = |resource, value: u64, hard: u64| -> Result<()> {
            let limit = libc::rlimit {
                rlim_cur: value,
                rlim_max: hard,
            };
            // SAFETY: prlimit reads a valid rlimit for a process of ours;
            // nix only wraps setrlimit for the calling process.
            let rc = unsafe {
                libc::prlimit(
                    pid.as_raw(),
                    resource,
                    &raw const limit,
                    std::ptr::null_mut(),
                )
            };
            if rc == 0 {
                Ok(())
            } else {
                Err(Error::Spawn(std::io::Error::last_os_error()))
            }
        };
        let applied = (|| {
            if let Some(bytes) = limits.memory {
                set(libc::RLIMIT_AS, bytes, bytes)?;
            }
            if let Some(seconds) = limits.cpu {
                // SIGXCPU at the limit, SIGKILL a second later.
                set(libc::RLIMIT_CPU, seconds, seconds + 1)?;
            }
            if let Some(after) = limits.deadline {
                let Some(pidfd) = &inner.child.pidfd else {
                    return Err(Error::Spawn(std::io::Error::new(
                        std::io::ErrorKind::Unsupported,
                        "deadlines need pidfds (Linux 5.3 or later)",
                    )));
                };
                let at = Instant::now().checked_add(after);
                if let Some(at) = at {
                    inner.child.ticket =
                        Some(watchdog::watch(pidfd.as_fd(), pid, inner.child.group, at)?);
                }
            }
            Ok(())
        })();
        if applied.is_err() {
            let _ = inner.child.kill();
        }
        applied
    }

    fn inner_mut(&mut self) -> &mut Inner {
        self.inner.get_mut().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn send_args(&self, args: &[u8]) -> Result<()> {
        match self.lock().conn.send_bytes(tag::ARGS, args) {
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
        // Fails only on a socket that is not connected any more: closed
        // is what we want.
        let _ = nix::sys::socket::shutdown(
            self.lock().conn.raw_fd(),
            nix::sys::socket::Shutdown::Write,
        );
    }

    /// Sends an error in place of a value: the child's next receive on its
    /// [`Channel`](crate::Channel) returns it as [`Error::Remote`] with this
    /// message.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] if the child is gone.
    pub fn send_error(&self, error: impl fmt::Display) -> Result<()> {
        self.lock().conn.send_value(tag::ERROR, &error.to_string())
    }
}

impl<R: DeserializeOwned, S, V, K> Handle<R, S, V, K> {
    /// Waits for the child to finish and returns its result. Values the
    /// child sent that were not received are dropped.
    ///
    /// # Errors
    ///
    /// [`Error::Panicked`] if the child panicked, [`Error::Signaled`] if it
    /// was killed, [`Error::Exited`] if it exited without a result,
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
    /// # Errors
    ///
    /// [`Error::Disconnected`] if the child is gone, [`Error::Codec`] if the
    /// value does not serialize.
    pub fn send(&self, value: &S) -> Result<()> {
        self.lock().conn.send_value(tag::DATA, value)
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
    pub fn recv(&self) -> Result<V> {
        self.lock().recv(Deadline::Never)
    }

    /// Waits at most `timeout` for the next value.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if nothing arrived in time, otherwise as
    /// [`recv`](Self::recv).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<V> {
        self.lock().recv(Deadline::after(timeout))
    }

    /// Returns the next value if one has arrived, without waiting.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    pub fn try_recv(&self) -> Result<Option<V>> {
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

impl<R, S, V, K> AsRawFd for Handle<R, S, V, K> {
    /// The socket under the channel, for polling it in an event loop of
    /// your own. Reading or writing it directly breaks the framing.
    fn as_raw_fd(&self) -> RawFd {
        self.lock().conn.raw_fd()
    }
}

impl<R, S, V, K> fmt::Debug for Handle<R, S, V, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("name", &self.name)
            .field("pid", &self.pid.as_raw())
            .finish_non_exhaustive()
    }
}
