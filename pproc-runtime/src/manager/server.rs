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
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{getsockopt, sockopt};

use super::auth;
use super::objects::{CallResult, Caller, ClientId, Fault, Object, Table, done};
use super::protocol::{Answer, Kind, Op};
use super::transport::{Listener, Stream};
use crate::lock::lock;
use crate::wire::codec;
use crate::wire::codec::{decode, encode};

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
struct Handshakes {
    /// By arrival number: the first is the oldest, and expires first.
    greetings: BTreeMap<u64, Greeting>,
    /// Each bounded peer's arrival numbers, oldest first, at most
    /// [`PEER_SHARE`] of them.
    peers: HashMap<Peer, VecDeque<u64>>,
    arrivals: u64,
    /// The server's own user (see [`Peer::of`]).
    owner: libc::uid_t,
}

impl Handshakes {
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

/// The server's state, shared by its connection threads.
pub(crate) struct Server {
    key: Vec<u8>,
    objects: Table,
    /// Named objects: id, kind and types.
    names: Mutex<HashMap<String, (u64, &'static str, String)>>,
    next_client: AtomicU64,
    clients: AtomicUsize,
}

impl Server {
    pub(crate) fn new(key: Vec<u8>) -> Arc<Self> {
        Arc::new(Self {
            key,
            objects: Table::new(),
            names: Mutex::default(),
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
        let mut pending = Handshakes::new();
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
    fn accept_some(
        self: &Arc<Self>,
        listener: &Listener,
        pending: &mut Handshakes,
    ) -> io::Result<()> {
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
    fn greet(self: &Arc<Self>, stream: Stream, pending: &mut Handshakes) {
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

    /// Ends a handshake to make room (see [`Handshakes::evict`]).
    fn evict(self: &Arc<Self>, pending: &mut Handshakes, arrival: u64) {
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
        for object in self.objects.all() {
            object.release(client);
        }
    }

    fn handle(&self, op: Op, caller: &Caller<'_>) -> CallResult {
        match op {
            Op::Create { kind, types, name } => {
                let id = self.create(kind, types, name)?;
                done(&id)
            }
            Op::Call { object, op } => {
                let target = self
                    .objects
                    .get(object)
                    .ok_or_else(|| format!("no shared object {object} on this manager"))?;
                target.call(op, caller)
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
        let (id, _) = self.objects.insert(Object::build(kind, &self.objects)?);
        if let Some(name) = name {
            names.insert(name, (id, kind_name, types));
        }
        Ok(id)
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
