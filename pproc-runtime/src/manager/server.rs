//! The manager's server: accepts connections, authenticates them, and runs
//! each client's calls on the shared objects, one thread per connection.
//!
//! Handshakes run on the accepting thread, in a table of bounded size:
//! a flood of connections that never answer cannot lock out the clients
//! that do, since a newcomer always finds room. It takes the place of its
//! peer's oldest handshake if that peer has its share ([`PEER_SHARE`]), or
//! of the oldest of all if the table is full ([`MAX_PENDING`]); an honest
//! client answers within a round trip, long before either comes round.
//! A peer ([`Peer`]) is an IPv4 address, an IPv6 /64, or, on a Unix socket,
//! a user other than the server's; the server's own user is bounded by the
//! table alone.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv6Addr};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{getsockopt, sockopt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::auth;
use super::objects::custom;
use super::number::NumKind;
use super::protocol::{
    Answer, ArrayOp, ConditionOp, CustomOp, EventOp, Kind, ListOp, LockOp, MapOp, NamespaceOp,
    ObjectOp, Op, QueueOp, SemaphoreOp, ValueOp,
};
use super::transport::{Listener, Stream};
use crate::codec;
use crate::conn::{decode, encode};

/// How long a client may take over its half of the handshake, from its
/// greeting: an honest client answers within a round trip.
const HANDSHAKE: Duration = Duration::from_secs(2);
/// Handshakes in progress at once. Each costs a descriptor, no thread; a
/// newcomer that finds the table full takes the oldest one's place.
const MAX_PENDING: usize = 1024;
/// Handshakes in progress at once from one [`Peer`]: a newcomer from a peer
/// that has this many takes that peer's oldest one's place, so that one
/// host cannot fill the table (it takes eight) and churn everyone else's.
/// An honest program may open this many connections within one round trip:
/// a thousand threads connecting at once from one host, on two busy cores,
/// lost no handshake to a share of 128, and some to one of 64.
const PEER_SHARE: usize = 128;
/// Connections accepted per turn of the loop: the answers that came in are
/// read between batches, so that a burst of honest clients from one peer
/// can answer before its share runs out.
const ACCEPT_BATCH: usize = 32;
/// Authenticated connections at once.
const MAX_CLIENTS: usize = 4096;
/// The largest request an authenticated client may send.
pub(crate) const MAX_REQUEST: usize = 1 << 30;
/// How often a blocked call checks that its client is still there.
const PATIENCE: Duration = Duration::from_millis(100);

/// Whom a handshake in progress counts against, for [`PEER_SHARE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Peer {
    /// A TCP peer: its IPv4 address, or the /64 that its IPv6 address is in
    /// (a host is given a whole /64, and can pick any address in it).
    Ip(IpAddr),
    /// A Unix peer run by another user than the server's.
    User(libc::uid_t),
    /// A peer whose address or credentials cannot be read.
    Unknown,
}

impl Peer {
    /// Whom `stream` counts against. `None` for a Unix peer run by `owner`,
    /// the server's own user: it could stop the server anyway, so only the
    /// table bounds it, and a program's own burst of clients on
    /// [`Manager::start`](super::Manager::start)'s socket is never cut
    /// short by a share.
    fn of(stream: &Stream, owner: libc::uid_t) -> Option<Self> {
        match stream {
            Stream::Tcp(tcp) => Some(match tcp.peer_addr().map(|a| a.ip().to_canonical()) {
                Ok(IpAddr::V6(v6)) => Self::Ip(IpAddr::V6(Ipv6Addr::from_bits(
                    v6.to_bits() & !u128::from(u64::MAX),
                ))),
                Ok(v4) => Self::Ip(v4),
                Err(_) => Self::Unknown,
            }),
            Stream::Unix(unix) => match getsockopt(unix, sockopt::PeerCredentials) {
                Ok(peer) if peer.uid() == owner => None,
                Ok(peer) => Some(Self::User(peer.uid())),
                Err(_) => Some(Self::Unknown),
            },
        }
    }
}

/// A connection in its handshake.
struct Greeting {
    stream: Stream,
    /// Whom it counts against; `None`: only the table bounds it.
    peer: Option<Peer>,
    challenge: [u8; auth::CHALLENGE],
    answer: Vec<u8>,
    deadline: Instant,
}

/// Where a handshake stands after the client said something.
enum Step {
    Waiting(Greeting),
    Authenticated(Stream),
    Refused,
}

impl Greeting {
    /// Sends the challenge; `None` if the connection is unusable.
    fn start(mut stream: Stream, peer: Option<Peer>) -> Option<Self> {
        stream.set_nonblocking(true).ok()?;
        let challenge = auth::random().ok()?;
        // A fresh socket has room for the hello: a short write is a
        // broken client.
        let hello = auth::hello(&challenge);
        (stream.write(&hello).ok()? == hello.len()).then_some(())?;
        Some(Self {
            stream,
            peer,
            challenge,
            answer: Vec::with_capacity(auth::ANSWER),
            deadline: Instant::now() + HANDSHAKE,
        })
    }

    /// Reads what the client sent; checks its answer once it is whole.
    fn advance(mut self, key: &[u8]) -> Step {
        let mut buf = [0; auth::ANSWER];
        let want = auth::ANSWER - self.answer.len();
        match self.stream.read(&mut buf[..want]) {
            Ok(0) => return Step::Refused,
            Ok(n) => self.answer.extend_from_slice(&buf[..n]),
            Err(err)
                if err.kind() == io::ErrorKind::WouldBlock
                    || err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Step::Refused,
        }
        if self.answer.len() < auth::ANSWER {
            return Step::Waiting(self);
        }
        let reply = auth::check_answer(key, &self.challenge, &self.answer);
        let accepted = reply.is_some();
        let reply = reply.unwrap_or_else(auth::refusal);
        let sent = self.stream.set_nonblocking(false).is_ok()
            && self.stream.set_write_timeout(Some(HANDSHAKE)).is_ok()
            && self.stream.write_all(&reply).is_ok()
            && self.stream.set_write_timeout(None).is_ok();
        if accepted && sent {
            Step::Authenticated(self.stream)
        } else {
            Step::Refused
        }
    }
}

/// The handshakes in progress, in order of arrival.
struct Pending {
    /// By arrival number: the first is the oldest, and expires first.
    greetings: BTreeMap<u64, Greeting>,
    /// Each bounded peer's arrival numbers, oldest first, at most
    /// [`PEER_SHARE`] of them.
    peers: HashMap<Peer, VecDeque<u64>>,
    arrivals: u64,
    /// The server's own user (see [`Peer::of`]).
    owner: libc::uid_t,
}

impl Pending {
    fn new() -> Self {
        Self {
            greetings: BTreeMap::new(),
            peers: HashMap::new(),
            arrivals: 0,
            // SAFETY: geteuid has no preconditions and cannot fail.
            owner: unsafe { libc::geteuid() },
        }
    }

    fn len(&self) -> usize {
        self.greetings.len()
    }

    fn push(&mut self, greeting: Greeting) {
        let arrival = self.arrivals;
        self.arrivals += 1;
        if let Some(peer) = greeting.peer {
            self.peers.entry(peer).or_default().push_back(arrival);
        }
        self.greetings.insert(arrival, greeting);
    }

    /// The oldest handshake's arrival number.
    fn oldest(&self) -> Option<u64> {
        self.greetings.keys().next().copied()
    }

    /// `peer`'s oldest handshake, if `peer` has its share.
    fn crowded(&self, peer: Peer) -> Option<u64> {
        self.peers
            .get(&peer)
            .filter(|arrivals| arrivals.len() >= PEER_SHARE)
            .and_then(|arrivals| arrivals.front().copied())
    }

    /// When the oldest handshake runs out of time.
    fn next_deadline(&self) -> Option<Instant> {
        self.greetings.values().next().map(|g| g.deadline)
    }

    /// Closes the handshakes whose time is up: the oldest ones, since
    /// every handshake is given the same time.
    fn expire(&mut self, now: Instant) {
        while let Some(entry) = self.greetings.first_entry()
            && entry.get().deadline <= now
        {
            let (arrival, greeting) = entry.remove_entry();
            self.forget(arrival, greeting.peer);
        }
    }

    /// Reads what a handshake's client sent: its stream once it is
    /// authenticated; the handshake stays if it is not done.
    fn advance(&mut self, arrival: u64, key: &[u8]) -> Option<Stream> {
        let greeting = self.greetings.remove(&arrival)?;
        let peer = greeting.peer;
        match greeting.advance(key) {
            Step::Waiting(greeting) => {
                self.greetings.insert(arrival, greeting);
                None
            }
            Step::Authenticated(stream) => {
                self.forget(arrival, peer);
                Some(stream)
            }
            Step::Refused => {
                self.forget(arrival, peer);
                None
            }
        }
    }

    /// Ends a handshake to make room, after one last read: a client
    /// whose answer has come in is let in (its stream), any other closed.
    fn evict(&mut self, arrival: u64, key: &[u8]) -> Option<Stream> {
        let greeting = self.greetings.remove(&arrival)?;
        self.forget(arrival, greeting.peer);
        match greeting.advance(key) {
            Step::Authenticated(stream) => Some(stream),
            Step::Waiting(_) | Step::Refused => None,
        }
    }

    /// Takes a handshake that has left the table off its peer's count.
    fn forget(&mut self, arrival: u64, peer: Option<Peer>) {
        let Some(peer) = peer else {
            return;
        };
        if let Some(arrivals) = self.peers.get_mut(&peer) {
            // At most a share to look through, and mostly the first.
            if let Some(at) = arrivals.iter().position(|a| *a == arrival) {
                arrivals.remove(at);
            }
            if arrivals.is_empty() {
                self.peers.remove(&peer);
            }
        }
    }
}

/// A client connection's id: what holds locks and semaphores.
type ClientId = u64;

/// Why a call failed, before it becomes an [`Answer`].
enum Fault {
    Timeout,
    /// The client went away while the call waited.
    Gone,
    Message(String),
}

impl From<String> for Fault {
    fn from(message: String) -> Self {
        Self::Message(message)
    }
}

impl From<crate::Error> for Fault {
    fn from(err: crate::Error) -> Self {
        Self::Message(err.to_string())
    }
}

type Outcome<T = Vec<u8>> = Result<T, Fault>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A lock's state: who holds it, how many times.
#[derive(Default)]
struct Ownership {
    owner: Option<ClientId>,
    count: u64,
}

/// A semaphore's state.
struct Counter {
    value: u64,
    /// The initial value, for a bounded semaphore.
    bound: Option<u64>,
    /// What each client holds, given back if it goes away.
    held: HashMap<ClientId, u64>,
}

/// A shared object, as the server keeps it: values stay serialized, since
/// the server does not know their types.
enum Object {
    Map(Mutex<BTreeMap<Vec<u8>, Vec<u8>>>),
    List(Mutex<Vec<Vec<u8>>>),
    Queue(Mutex<VecDeque<Vec<u8>>>, Condvar, Option<usize>),
    Value(Mutex<Vec<u8>>),
    Namespace(Mutex<BTreeMap<String, Vec<u8>>>),
    Lock(Mutex<Ownership>, Condvar, bool),
    Semaphore(Mutex<Counter>, Condvar),
    Condition(Arc<Object>, Mutex<VecDeque<Arc<AtomicBool>>>, Condvar),
    Event(Mutex<bool>, Condvar),
    Array(Mutex<Vec<Vec<u8>>>),
    Custom(Mutex<Box<dyn std::any::Any + Send>>, &'static custom::Entry),
}

/// What one call sees of its client.
struct Caller<'a> {
    id: ClientId,
    stream: &'a Stream,
}

impl Caller<'_> {
    /// Whether the client has gone away (it sends nothing while it waits
    /// for an answer, so anything readable means it closed).
    fn gone(&self) -> bool {
        let mut fds = [PollFd::new(
            self.stream.as_fd(),
            PollFlags::POLLIN | PollFlags::from_bits_retain(libc::POLLRDHUP),
        )];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
    }

    /// Waits on `cond` until `ready` holds, the deadline passes, or the
    /// client goes away; checks the client every [`PATIENCE`].
    fn wait<'g, T>(
        &self,
        cond: &Condvar,
        mut guard: MutexGuard<'g, T>,
        deadline: Option<Instant>,
        mut ready: impl FnMut(&mut T) -> bool,
    ) -> Outcome<MutexGuard<'g, T>> {
        loop {
            if ready(&mut guard) {
                return Ok(guard);
            }
            let slice = match deadline {
                Some(at) => match at.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left.min(PATIENCE),
                    _ => return Err(Fault::Timeout),
                },
                None => PATIENCE,
            };
            if self.gone() {
                return Err(Fault::Gone);
            }
            guard = cond
                .wait_timeout(guard, slice)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// The server's state, shared by its connection threads.
pub(crate) struct Server {
    key: Vec<u8>,
    objects: Mutex<HashMap<u64, Arc<Object>>>,
    /// Named objects: id, kind and types.
    names: Mutex<HashMap<String, (u64, &'static str, String)>>,
    next_object: AtomicU64,
    next_client: AtomicU64,
    clients: AtomicUsize,
}

impl Server {
    pub(crate) fn new(key: Vec<u8>) -> Arc<Self> {
        Arc::new(Self {
            key,
            objects: Mutex::default(),
            names: Mutex::default(),
            next_object: AtomicU64::new(1),
            next_client: AtomicU64::new(1),
            clients: AtomicUsize::new(0),
        })
    }

    /// Accepts connections for ever. One thread (this one) accepts and
    /// runs every handshake, without blocking on any client: a slow or
    /// silent client costs a descriptor until its deadline ([`HANDSHAKE`])
    /// or until a newcomer takes its place (see the [module](self)), and
    /// cannot delay the others. Each authenticated client gets a thread of
    /// its own.
    pub(crate) fn run(self: &Arc<Self>, listener: &Listener) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        let mut pending = Pending::new();
        loop {
            let now = Instant::now();
            pending.expire(now);
            let timeout = pending
                .next_deadline()
                .map_or(PollTimeout::NONE, |deadline| {
                    let left = deadline.saturating_duration_since(now);
                    let ms = left.as_millis().saturating_add(1);
                    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
                });
            let (accept, ready) = {
                let mut fds = Vec::with_capacity(1 + pending.len());
                fds.push(PollFd::new(listener.as_fd(), PollFlags::POLLIN));
                fds.extend(
                    pending
                        .greetings
                        .values()
                        .map(|g| PollFd::new(g.stream.as_fd(), PollFlags::POLLIN)),
                );
                match poll(&mut fds, timeout) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(err) => return Err(err.into()),
                }
                let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
                let accept = ready(&fds[0]);
                // Arrival numbers, in the poll's order.
                let ready: Vec<u64> = pending
                    .greetings
                    .keys()
                    .zip(&fds[1..])
                    .filter(|(_, fd)| ready(fd))
                    .map(|(arrival, _)| *arrival)
                    .collect();
                (accept, ready)
            };
            // Answers first, then new connections.
            for arrival in ready {
                if let Some(stream) = pending.advance(arrival, &self.key) {
                    self.admit(stream);
                }
            }
            if accept {
                self.accept_some(listener, &mut pending)?;
            }
        }
    }

    /// Accepts up to [`ACCEPT_BATCH`] waiting connections and greets them.
    fn accept_some(self: &Arc<Self>, listener: &Listener, pending: &mut Pending) -> io::Result<()> {
        for _ in 0..ACCEPT_BATCH {
            let stream = match listener.accept() {
                Ok(stream) => stream,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(err) if matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    // Out of descriptors: the oldest handshake gives up
                    // its own; with none, let clients finish first.
                    if let Some(oldest) = pending.oldest() {
                        self.evict(pending, oldest);
                        continue;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                    return Ok(());
                }
                Err(err) if is_transient(&err) => {
                    // Out of memory for a moment: let clients finish
                    // before accepting more.
                    std::thread::sleep(Duration::from_millis(10));
                    return Ok(());
                }
                Err(err) => return Err(err),
            };
            self.greet(stream, pending);
        }
        Ok(())
    }

    /// Greets a new connection, making room for it first: its peer's
    /// oldest handshake goes if the peer has its share, the oldest of all
    /// if the table is full. Never the newcomer: it is the one most likely
    /// to be an honest client still on its way.
    fn greet(self: &Arc<Self>, stream: Stream, pending: &mut Pending) {
        let peer = Peer::of(&stream, pending.owner);
        if let Some(oldest) = peer.and_then(|peer| pending.crowded(peer)) {
            self.evict(pending, oldest);
        }
        if pending.len() >= MAX_PENDING
            && let Some(oldest) = pending.oldest()
        {
            self.evict(pending, oldest);
        }
        if let Some(greeting) = Greeting::start(stream, peer) {
            pending.push(greeting);
        }
    }

    /// Ends a handshake to make room (see [`Pending::evict`]).
    fn evict(self: &Arc<Self>, pending: &mut Pending, arrival: u64) {
        if let Some(stream) = pending.evict(arrival, &self.key) {
            self.admit(stream);
        }
    }

    /// Serves an authenticated client on a thread of its own.
    fn admit(self: &Arc<Self>, stream: Stream) {
        if self.clients.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
            self.clients.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let server = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("pproc-manager-client".into())
            .spawn(move || {
                server.serve_client(stream);
                server.clients.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            self.clients.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn serve_client(&self, mut stream: Stream) {
        let id = self.next_client.fetch_add(1, Ordering::Relaxed);
        // Requests until the client goes away or sends garbage.
        while let Ok(request) = codec::read_frame(&mut stream, MAX_REQUEST) {
            let Some(answer) = self.answer(&request, id, &stream) else {
                break;
            };
            let sent = encode(&answer).and_then(|bytes| codec::write_frame(&mut stream, &bytes));
            if sent.is_err() {
                break;
            }
        }
        self.release_all(id);
    }

    /// The answer to one request of client `id`, whatever its bytes;
    /// `None` once the client has gone away.
    fn answer(&self, request: &[u8], id: ClientId, stream: &Stream) -> Option<Answer> {
        let op = match decode::<Op>(request) {
            Ok(op) => op,
            Err(err) => {
                return Some(Answer::Fault(format!(
                    "a request that does not decode: {err}"
                )));
            }
        };
        match self.handle(op, &Caller { id, stream }) {
            Ok(bytes) => Some(Answer::Done(bytes)),
            Err(Fault::Timeout) => Some(Answer::Timeout),
            Err(Fault::Gone) => None,
            Err(Fault::Message(message)) => Some(Answer::Fault(message)),
        }
    }

    /// Gives back every lock and semaphore the client held, waking waiters.
    fn release_all(&self, client: ClientId) {
        let objects: Vec<Arc<Object>> = lock(&self.objects).values().cloned().collect();
        for object in objects {
            match &*object {
                Object::Lock(state, cond, _) => {
                    let mut state = lock(state);
                    if state.owner == Some(client) {
                        state.owner = None;
                        state.count = 0;
                        cond.notify_all();
                    }
                }
                Object::Semaphore(state, cond) => {
                    let mut state = lock(state);
                    if let Some(held) = state.held.remove(&client) {
                        state.value += held;
                        cond.notify_all();
                    }
                }
                _ => {}
            }
        }
    }

    fn handle(&self, op: Op, caller: &Caller<'_>) -> Outcome {
        match op {
            Op::Create { kind, types, name } => {
                let id = self.create(kind, types, name)?;
                done(&id)
            }
            Op::Call { object, op } => {
                let target = lock(&self.objects)
                    .get(&object)
                    .cloned()
                    .ok_or_else(|| format!("no shared object {object} on this manager"))?;
                call(&target, op, caller)
            }
        }
    }

    fn create(&self, kind: Kind, types: String, name: Option<String>) -> Result<u64, String> {
        let mut names = lock(&self.names);
        if let Some(name) = &name
            && let Some((id, existing, their_types)) = names.get(name)
        {
            if *existing != kind.name() || *their_types != types {
                return Err(format!(
                    "the shared object `{name}` is a {existing} of {their_types}, not a {} of {types}",
                    kind.name()
                ));
            }
            return Ok(*id);
        }
        let kind_name = kind.name();
        let object = self.build(kind)?;
        let id = self.next_object.fetch_add(1, Ordering::Relaxed);
        lock(&self.objects).insert(id, Arc::new(object));
        if let Some(name) = name {
            names.insert(name, (id, kind_name, types));
        }
        Ok(id)
    }

    fn build(&self, kind: Kind) -> Result<Object, String> {
        Ok(match kind {
            Kind::Map => Object::Map(Mutex::default()),
            Kind::List { values } => Object::List(Mutex::new(values)),
            Kind::Queue { capacity } => Object::Queue(Mutex::default(), Condvar::new(), capacity),
            Kind::Value { value } => Object::Value(Mutex::new(value)),
            Kind::Namespace => Object::Namespace(Mutex::default()),
            Kind::Lock { reentrant } => Object::Lock(Mutex::default(), Condvar::new(), reentrant),
            Kind::Semaphore { value, bounded } => Object::Semaphore(
                Mutex::new(Counter {
                    value,
                    bound: bounded.then_some(value),
                    held: HashMap::new(),
                }),
                Condvar::new(),
            ),
            Kind::Condition { lock: with } => {
                let lock_object = if let Some(id) = with {
                    let object = lock(&self.objects)
                        .get(&id)
                        .cloned()
                        .ok_or_else(|| format!("no shared lock {id} on this manager"))?;
                    if !matches!(&*object, Object::Lock(..)) {
                        return Err("a condition needs a shared `Lock` or `RLock`".into());
                    }
                    object
                } else {
                    // Listed, so that a client that dies holding it gives
                    // it back.
                    let object = Arc::new(Object::Lock(Mutex::default(), Condvar::new(), true));
                    let id = self.next_object.fetch_add(1, Ordering::Relaxed);
                    lock(&self.objects).insert(id, Arc::clone(&object));
                    object
                };
                Object::Condition(lock_object, Mutex::default(), Condvar::new())
            }
            Kind::Event => Object::Event(Mutex::new(false), Condvar::new()),
            Kind::Array { values } => Object::Array(Mutex::new(values)),
            Kind::Custom { name, value } => {
                let entry = custom::lookup(&name).ok_or_else(|| {
                    format!(
                        "`{name}` is not registered with `pproc::shared!` in the manager's program"
                    )
                })?;
                Object::Custom(Mutex::new((entry.create)(&value)?), entry)
            }
        })
    }
}

/// An error of `accept` that passes (running out of descriptors is
/// handled apart: see [`Server::accept_some`]).
fn is_transient(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::ENOBUFS | libc::ENOMEM | libc::ECONNABORTED | libc::EINTR)
    )
}

fn args<A: DeserializeOwned>(bytes: &[u8]) -> Outcome<A> {
    decode(bytes).map_err(|err| Fault::Message(format!("arguments that do not decode: {err}")))
}

fn done<T: Serialize + ?Sized>(value: &T) -> Outcome {
    encode(value).map_err(Fault::from)
}

/// A deadline from an optional timeout in milliseconds.
fn deadline(timeout_ms: Option<u64>) -> Option<Instant> {
    timeout_ms.and_then(|ms| Instant::now().checked_add(Duration::from_millis(ms)))
}

/// Runs `op` on `object`, if it is an operation of the object's kind.
fn call(object: &Object, op: ObjectOp, caller: &Caller<'_>) -> Outcome {
    match (object, op) {
        (Object::Map(map), ObjectOp::Map(op)) => map_call(map, op),
        (Object::List(list), ObjectOp::List(op)) => list_call(list, op),
        (Object::Queue(queue, cond, capacity), ObjectOp::Queue(op)) => {
            queue_call(queue, cond, *capacity, op, caller)
        }
        (Object::Value(value), ObjectOp::Value(op)) => value_call(value, op),
        (Object::Namespace(fields), ObjectOp::Namespace(op)) => namespace_call(fields, op),
        (Object::Lock(state, cond, reentrant), ObjectOp::Lock(op)) => {
            lock_call(state, cond, *reentrant, op, caller)
        }
        (Object::Semaphore(state, cond), ObjectOp::Semaphore(op)) => {
            semaphore_call(state, cond, op, caller)
        }
        (Object::Condition(with, waiters, cond), ObjectOp::Condition(op)) => {
            condition_call(with, waiters, cond, op, caller)
        }
        (Object::Event(flag, cond), ObjectOp::Event(op)) => event_call(flag, cond, op, caller),
        (Object::Array(array), ObjectOp::Array(op)) => array_call(array, op),
        (Object::Custom(value, entry), ObjectOp::Custom(CustomOp::Call { method, args })) => {
            let mut value = lock(value);
            if !entry.methods.contains(&method.as_str()) {
                return Err(Fault::Message(format!(
                    "`{method}` is not exposed by `{}`; exposed: {}",
                    entry.name,
                    entry.methods.join(", ")
                )));
            }
            (entry.dispatch)(value.as_mut(), &method, &args).map_err(Fault::Message)
        }
        (object, op) => Err(Fault::Message(format!(
            "a shared {} has no {} operations",
            object_kind(object),
            op_kind(&op)
        ))),
    }
}

/// What an object's kind is called, in messages.
fn object_kind(object: &Object) -> &'static str {
    match object {
        Object::Map(..) => "map",
        Object::List(..) => "list",
        Object::Queue(..) => "queue",
        Object::Value(..) => "value",
        Object::Namespace(..) => "namespace",
        Object::Lock(..) => "lock",
        Object::Semaphore(..) => "semaphore",
        Object::Condition(..) => "condition",
        Object::Event(..) => "event",
        Object::Array(..) => "array",
        Object::Custom(..) => "custom value",
    }
}

/// What the kind an operation is for is called, in messages.
fn op_kind(op: &ObjectOp) -> &'static str {
    match op {
        ObjectOp::Map(_) => "map",
        ObjectOp::List(_) => "list",
        ObjectOp::Queue(_) => "queue",
        ObjectOp::Value(_) => "value",
        ObjectOp::Namespace(_) => "namespace",
        ObjectOp::Lock(_) => "lock",
        ObjectOp::Semaphore(_) => "semaphore",
        ObjectOp::Condition(_) => "condition",
        ObjectOp::Event(_) => "event",
        ObjectOp::Array(_) => "array",
        ObjectOp::Custom(_) => "custom value",
    }
}

fn map_call(map: &Mutex<BTreeMap<Vec<u8>, Vec<u8>>>, op: MapOp) -> Outcome {
    let mut map = lock(map);
    match op {
        MapOp::Insert { key, value } => done(&map.insert(key, value)),
        MapOp::Get { key } => done(&map.get(&key)),
        MapOp::Remove { key } => done(&map.remove(&key)),
        MapOp::ContainsKey { key } => done(&map.contains_key(&key)),
        MapOp::Len => done(&map.len()),
        MapOp::Clear => done(&map.clear()),
        MapOp::Keys => done(&map.keys().collect::<Vec<_>>()),
        MapOp::Items => done(&map.iter().collect::<Vec<_>>()),
        MapOp::Add { key, delta, kind } => {
            let sum = add(kind, map.get(&key).map(Vec::as_slice), &delta)?;
            map.insert(key, sum.clone());
            Ok(sum)
        }
    }
}

/// `index` as an index into `len` values.
fn index(index: u64, len: usize) -> Outcome<usize> {
    usize::try_from(index)
        .ok()
        .filter(|i| *i < len)
        .ok_or_else(|| Fault::Message(format!("index {index} out of range for length {len}")))
}

fn list_call(list: &Mutex<Vec<Vec<u8>>>, op: ListOp) -> Outcome {
    let mut list = lock(list);
    match op {
        ListOp::Push { value } => {
            list.push(value);
            done(&())
        }
        ListOp::Pop => done(&list.pop()),
        ListOp::Get { index: i } => {
            let i = index(i, list.len())?;
            Ok(list[i].clone())
        }
        ListOp::Set { index: i, value } => {
            let i = index(i, list.len())?;
            list[i] = value;
            done(&())
        }
        ListOp::Insert { index: i, value } => {
            let i = usize::try_from(i)
                .ok()
                .filter(|i| *i <= list.len())
                .ok_or_else(|| format!("index {i} out of range for insertion"))?;
            list.insert(i, value);
            done(&())
        }
        ListOp::Remove { index: i } => {
            let i = index(i, list.len())?;
            Ok(list.remove(i))
        }
        ListOp::Extend { values } => {
            list.extend(values);
            done(&())
        }
        ListOp::Len => done(&list.len()),
        ListOp::Clear => done(&list.clear()),
        ListOp::ToVec => done(&*list),
    }
}

fn array_call(array: &Mutex<Vec<Vec<u8>>>, op: ArrayOp) -> Outcome {
    let mut array = lock(array);
    match op {
        ArrayOp::Get { index: i } => {
            let i = index(i, array.len())?;
            Ok(array[i].clone())
        }
        ArrayOp::Set { index: i, value } => {
            let i = index(i, array.len())?;
            array[i] = value;
            done(&())
        }
        ArrayOp::Add {
            index: i,
            delta,
            kind,
        } => {
            let i = index(i, array.len())?;
            let sum = add(kind, Some(&array[i]), &delta)?;
            array[i].clone_from(&sum);
            Ok(sum)
        }
        ArrayOp::Len => done(&array.len()),
        ArrayOp::ToVec => done(&*array),
    }
}

fn queue_call(
    queue: &Mutex<VecDeque<Vec<u8>>>,
    cond: &Condvar,
    capacity: Option<usize>,
    op: QueueOp,
    caller: &Caller<'_>,
) -> Outcome {
    match op {
        QueueOp::Put { value, timeout_ms } => {
            let guard = lock(queue);
            let mut guard = caller.wait(cond, guard, deadline(timeout_ms), |q| {
                capacity.is_none_or(|cap| q.len() < cap)
            })?;
            guard.push_back(value);
            cond.notify_all();
            done(&())
        }
        QueueOp::Get { timeout_ms } => {
            let guard = lock(queue);
            let mut guard = caller.wait(cond, guard, deadline(timeout_ms), |q| !q.is_empty())?;
            let value = guard.pop_front().unwrap_or_default();
            cond.notify_all();
            Ok(value)
        }
        QueueOp::Len => done(&lock(queue).len()),
    }
}

fn value_call(value: &Mutex<Vec<u8>>, op: ValueOp) -> Outcome {
    let mut value = lock(value);
    match op {
        ValueOp::Get => Ok(value.clone()),
        ValueOp::Set { value: new } => {
            *value = new;
            done(&())
        }
        ValueOp::Add { delta, kind } => {
            let sum = add(kind, Some(&value), &delta)?;
            value.clone_from(&sum);
            Ok(sum)
        }
    }
}

fn namespace_call(fields: &Mutex<BTreeMap<String, Vec<u8>>>, op: NamespaceOp) -> Outcome {
    let mut fields = lock(fields);
    match op {
        NamespaceOp::Get { name } => done(&fields.get(&name)),
        NamespaceOp::Set { name, value } => done(&fields.insert(name, value).is_some()),
        NamespaceOp::Remove { name } => done(&fields.remove(&name).is_some()),
        NamespaceOp::Names => done(&fields.keys().collect::<Vec<_>>()),
    }
}

fn semaphore_call(
    state: &Mutex<Counter>,
    cond: &Condvar,
    op: SemaphoreOp,
    caller: &Caller<'_>,
) -> Outcome {
    match op {
        SemaphoreOp::Acquire { timeout_ms } => {
            let guard = lock(state);
            let mut guard = caller.wait(cond, guard, deadline(timeout_ms), |s| s.value > 0)?;
            guard.value -= 1;
            *guard.held.entry(caller.id).or_default() += 1;
            done(&())
        }
        SemaphoreOp::Release => {
            let mut guard = lock(state);
            if guard.bound.is_some_and(|bound| guard.value >= bound) {
                return Err(Fault::Message(
                    "a bounded semaphore released too many times".into(),
                ));
            }
            guard.value += 1;
            if let Some(held) = guard.held.get_mut(&caller.id) {
                *held -= 1;
                if *held == 0 {
                    guard.held.remove(&caller.id);
                }
            }
            cond.notify_all();
            done(&())
        }
        SemaphoreOp::Value => done(&lock(state).value),
    }
}

fn condition_call(
    with: &Object,
    waiters: &Mutex<VecDeque<Arc<AtomicBool>>>,
    cond: &Condvar,
    op: ConditionOp,
    caller: &Caller<'_>,
) -> Outcome {
    let Object::Lock(state, lock_cond, reentrant) = with else {
        return Err(Fault::Message("a condition without a lock".into()));
    };
    match op {
        ConditionOp::Lock(op) => lock_call(state, lock_cond, *reentrant, op, caller),
        ConditionOp::Wait { timeout_ms } => {
            // Line up as a waiter while still holding the lock, so
            // that a notify made after we let it go reaches us; then
            // give the lock up, whatever its count, and wait.
            let me = Arc::new(AtomicBool::new(false));
            let count = {
                let mut state = lock(state);
                if state.owner != Some(caller.id) {
                    return Err(Fault::Message(
                        "wait on a condition whose lock is not held".into(),
                    ));
                }
                lock(waiters).push_back(Arc::clone(&me));
                let count = state.count;
                state.owner = None;
                state.count = 0;
                lock_cond.notify_all();
                count
            };
            let woken = caller
                .wait(cond, lock(waiters), deadline(timeout_ms), |_| {
                    me.load(Ordering::Acquire)
                })
                // The waiters' lock goes before the lock is taken
                // back: `wait` takes them in the other order.
                .map(drop);
            let notified = match woken {
                Ok(()) => true,
                Err(fault) => {
                    // Out of the line, so that no notify is spent on
                    // a waiter that left.
                    lock(waiters).retain(|w| !Arc::ptr_eq(w, &me));
                    match fault {
                        Fault::Timeout => me.load(Ordering::Acquire),
                        other => return Err(other),
                    }
                }
            };
            // Take the lock back, as it was.
            let guard = lock(state);
            let mut guard = caller.wait(lock_cond, guard, None, |s| s.owner.is_none())?;
            guard.owner = Some(caller.id);
            guard.count = count;
            done(&notified)
        }
        ConditionOp::Notify { n } => {
            let mut waiters = lock(waiters);
            for _ in 0..n {
                let Some(waiter) = waiters.pop_front() else {
                    break;
                };
                waiter.store(true, Ordering::Release);
            }
            cond.notify_all();
            done(&())
        }
    }
}

fn event_call(flag: &Mutex<bool>, cond: &Condvar, op: EventOp, caller: &Caller<'_>) -> Outcome {
    match op {
        EventOp::Set => {
            *lock(flag) = true;
            cond.notify_all();
            done(&())
        }
        EventOp::Clear => {
            *lock(flag) = false;
            done(&())
        }
        EventOp::IsSet => done(&*lock(flag)),
        EventOp::Wait { timeout_ms } => {
            match caller.wait(cond, lock(flag), deadline(timeout_ms), |set| *set) {
                Ok(_) => done(&true),
                Err(Fault::Timeout) => done(&false),
                Err(other) => Err(other),
            }
        }
    }
}

/// A lock's operations (reentrant or not).
fn lock_call(
    state: &Mutex<Ownership>,
    cond: &Condvar,
    reentrant: bool,
    op: LockOp,
    caller: &Caller<'_>,
) -> Outcome {
    match op {
        LockOp::Acquire { timeout_ms } => {
            let guard = lock(state);
            if guard.owner == Some(caller.id) {
                if !reentrant {
                    return Err(Fault::Message(
                        "this proxy holds the lock already (a `Lock` is not reentrant; use an `RLock`)".into(),
                    ));
                }
                let mut guard = guard;
                guard.count += 1;
                return done(&());
            }
            let mut guard =
                caller.wait(cond, guard, deadline(timeout_ms), |s| s.owner.is_none())?;
            guard.owner = Some(caller.id);
            guard.count = 1;
            done(&())
        }
        LockOp::Release => {
            let mut guard = lock(state);
            if guard.owner != Some(caller.id) {
                return Err(Fault::Message(
                    "release of a lock this proxy does not hold".into(),
                ));
            }
            guard.count -= 1;
            if guard.count == 0 {
                guard.owner = None;
                cond.notify_all();
            }
            done(&())
        }
    }
}

/// `stored + delta` as numbers of `kind` (a missing value counts as 0).
fn add(kind: NumKind, stored: Option<&[u8]>, delta: &[u8]) -> Outcome {
    fn sum<T>(stored: Option<&[u8]>, delta: &[u8], plus: impl Fn(T, T) -> Option<T>) -> Outcome
    where
        T: Serialize + DeserializeOwned + Default,
    {
        let a: T = match stored {
            Some(bytes) => decode(bytes)
                .map_err(|e| format!("the stored value is not a number of this type: {e}"))?,
            None => T::default(),
        };
        let b: T = args(delta)?;
        let total = plus(a, b).ok_or_else(|| "the sum overflows".to_owned())?;
        done(&total)
    }
    match kind {
        NumKind::I8 => sum::<i8>(stored, delta, i8::checked_add),
        NumKind::I16 => sum::<i16>(stored, delta, i16::checked_add),
        NumKind::I32 => sum::<i32>(stored, delta, i32::checked_add),
        NumKind::I64 => sum::<i64>(stored, delta, i64::checked_add),
        NumKind::U8 => sum::<u8>(stored, delta, u8::checked_add),
        NumKind::U16 => sum::<u16>(stored, delta, u16::checked_add),
        NumKind::U32 => sum::<u32>(stored, delta, u32::checked_add),
        NumKind::U64 => sum::<u64>(stored, delta, u64::checked_add),
        NumKind::F32 => sum::<f32>(stored, delta, |a, b| Some(a + b)),
        NumKind::F64 => sum::<f64>(stored, delta, |a, b| Some(a + b)),
    }
}

/// Not public API: a server's answers to the requests in `data` (frames
/// of the codec), as one authenticated client that has closed its end:
/// every decode and every operation on the objects the requests create,
/// and a blocking call ends at once, as the client is gone.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz_requests(data: &[u8]) {
    let Ok((ours, theirs)) = std::os::unix::net::UnixStream::pair() else {
        return;
    };
    drop(theirs);
    let stream = Stream::Unix(ours);
    let server = Server::new(b"fuzz".to_vec());
    let mut rest = data;
    while let Ok(Some(request)) = codec::split_frame(rest, 0, 1 << 16) {
        rest = &rest[codec::HEADER + request.len()..];
        match server.answer(request, 1, &stream) {
            Some(answer) => drop(encode(&answer)),
            None => break,
        }
    }
    server.release_all(1);
}

/// Not public API: both halves of the handshake, fed `data` as what the
/// other side says: the server reads it as a client's answer, the client
/// as a server's greeting and reply.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz_handshake(data: &[u8]) {
    use std::os::unix::net::UnixStream;
    // Our end, and theirs, which stays open for reading so that writes
    // to it succeed.
    let fed = |data: &[u8]| -> Option<(Stream, UnixStream)> {
        let (ours, mut theirs) = UnixStream::pair().ok()?;
        theirs.write_all(data).ok()?;
        // What it says, then the end: a read never waits.
        theirs.shutdown(std::net::Shutdown::Write).ok()?;
        Some((Stream::Unix(ours), theirs))
    };
    if let Some((stream, _theirs)) = fed(data)
        && let Some(mut greeting) = Greeting::start(stream, None)
    {
        // Each turn reads a byte or more, or ends the handshake.
        for _ in 0..=data.len() {
            match greeting.advance(b"fuzz") {
                Step::Waiting(next) => greeting = next,
                Step::Authenticated(_) | Step::Refused => break,
            }
        }
    }
    if let Some((mut stream, _theirs)) = fed(data) {
        let address = super::Address::Local("fuzz".into());
        let _ = auth::connect_handshake(&mut stream, b"fuzz", &address);
    }
}
