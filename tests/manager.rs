//! The manager: every kind of shared object used from real child
//! processes, updates that are never lost, locks given back by clients that
//! die, custom types, named objects, and authentication against wrong keys
//! and hostile clients on loopback, floods of them included.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use pproc::manager::{Array, Event, Lock, Manager, Map, Namespace, Queue, Semaphore, Value};
use pproc::{Channel, Error, parallel};
use pproc_workspace::{serial, wait_gone};
use serde::{Deserialize, Serialize};

/// Uses one of each kind from a child process.
#[parallel]
fn fill(
    map: Map<String, u32>,
    list: pproc::manager::List<String>,
    queue: Queue<u64>,
    ns: Namespace,
    array: Array<f64>,
    done: Event,
) {
    map.insert(&"child".into(), &7).unwrap();
    list.push(&"from the child".into()).unwrap();
    for i in 0..3 {
        queue.put(&i).unwrap();
    }
    ns.set("pid", &std::process::id()).unwrap();
    array.add(1, 0.5).unwrap();
    done.set().unwrap();
}

#[test]
fn every_kind_of_object_is_shared_with_children() {
    let manager = Manager::start().unwrap();
    let map = manager.map::<String, u32>().unwrap();
    let list = manager.list(["first".to_owned()].iter()).unwrap();
    let queue = manager.queue::<u64>(None).unwrap();
    let ns = manager.namespace().unwrap();
    let array = manager.array([1.0_f64, 2.0, 3.0]).unwrap();
    let done = manager.event().unwrap();
    let h = fill::start(
        map.clone(),
        list.clone(),
        queue.clone(),
        ns.clone(),
        array.clone(),
        done.clone(),
    )
    .unwrap();
    assert!(done.wait(Some(Duration::from_secs(60))).unwrap());
    let pid = h.pid();
    h.join().unwrap();
    assert_eq!(map.get(&"child".into()).unwrap(), Some(7));
    assert_eq!(map.items().unwrap(), [("child".to_owned(), 7)]);
    assert_eq!(list.to_vec().unwrap(), ["first", "from the child"]);
    assert_eq!(
        (0..3).map(|_| queue.get().unwrap()).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert_eq!(ns.get::<u32>("pid").unwrap(), Some(pid));
    assert_eq!(ns.names().unwrap(), ["pid"]);
    assert_eq!(array.to_vec().unwrap(), [1.0, 2.5, 3.0]);
    assert!(matches!(list.get(9), Err(Error::Remote { .. })));
    assert!(matches!(
        ns.get::<String>("pid"),
        Err(Error::Codec { .. }) | Ok(_)
    ));
}

#[parallel]
fn hammer(counter: Value<u64>, words: Map<String, u64>, slots: Array<i64>, n: u64) {
    for i in 0..n {
        counter.add(1).unwrap();
        words.add(&format!("w{}", i % 4), 1).unwrap();
        let slot = usize::try_from(i % 3).unwrap();
        slots.add(slot, 1).unwrap();
    }
}

#[parallel]
fn guarded(total: Value<u64>, lock: Lock, n: u64) {
    for _ in 0..n {
        let _held = lock.lock().unwrap();
        let now = total.get().unwrap();
        total.set(&(now + 1)).unwrap();
    }
}

#[test]
fn many_children_lose_no_update() {
    let _serial = serial();
    let manager = Manager::start().unwrap();
    let counter = manager.value(&0_u64).unwrap();
    let words = manager.map::<String, u64>().unwrap();
    let slots = manager.array([0_i64; 3]).unwrap();
    let hammers: Vec<_> = (0..8)
        .map(|_| hammer::start(counter.clone(), words.clone(), slots.clone(), 10_000).unwrap())
        .collect();
    for h in hammers {
        h.join().unwrap();
    }
    assert_eq!(counter.get().unwrap(), 80_000);
    assert_eq!(
        words.items().unwrap(),
        (0..4)
            .map(|i| (format!("w{i}"), 20_000))
            .collect::<Vec<_>>()
    );
    assert_eq!(slots.to_vec().unwrap().iter().sum::<i64>(), 80_000);

    // Read, add, write under a shared lock: no update lost either.
    let total = manager.value(&0_u64).unwrap();
    let lock = manager.lock().unwrap();
    let guards: Vec<_> = (0..4)
        .map(|_| guarded::start(total.clone(), lock.clone(), 500).unwrap())
        .collect();
    for h in guards {
        h.join().unwrap();
    }
    assert_eq!(total.get().unwrap(), 2000);
}

/// Takes the lock and a semaphore's count, says so, and holds them for
/// ever.
#[parallel]
fn holder(ch: Channel<()>, lock: Lock, sem: Semaphore) {
    lock.acquire().unwrap();
    sem.acquire().unwrap();
    ch.send(&()).unwrap();
    loop {
        std::thread::park();
    }
}

/// Waits for the lock; returns how long it waited.
#[parallel]
fn waiter(lock: Lock) -> bool {
    lock.acquire_timeout(Duration::from_secs(120)).unwrap()
}

#[test]
fn what_a_dead_client_held_is_given_back() {
    let _serial = serial();
    let manager = Manager::start().unwrap();
    let lock = manager.lock().unwrap();
    let sem = manager.semaphore(1).unwrap();
    let h = holder::start(lock.clone(), sem.clone()).unwrap();
    h.recv().unwrap();
    assert!(!lock.acquire_timeout(Duration::from_millis(50)).unwrap());
    assert_eq!(sem.value().unwrap(), 0);
    let w = waiter::start(lock.clone()).unwrap();
    h.kill().unwrap();
    assert!(matches!(h.join(), Err(Error::Signaled { signal: 9 })));
    // The waiter is woken with the lock, and the count is back.
    assert!(w.join().unwrap(), "the waiter got the lock");
    let deadline = Instant::now() + Duration::from_secs(60);
    while sem.value().unwrap() == 0 {
        assert!(
            Instant::now() < deadline,
            "the semaphore was not given back"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(sem.acquire_timeout(Duration::from_secs(60)).unwrap());
}

#[test]
fn locks_semaphores_and_conditions_keep_their_rules() {
    let manager = Manager::start().unwrap();
    let lock = manager.lock().unwrap();
    lock.acquire().unwrap();
    assert!(
        matches!(lock.acquire(), Err(Error::Remote { .. })),
        "not reentrant"
    );
    lock.release().unwrap();
    assert!(
        matches!(lock.release(), Err(Error::Remote { .. })),
        "not held"
    );

    let rlock = manager.rlock().unwrap();
    rlock.acquire().unwrap();
    rlock.acquire().unwrap();
    rlock.release().unwrap();
    let other = rlock.clone(); // another proxy: another holder
    assert!(!other.acquire_timeout(Duration::from_millis(20)).unwrap());
    rlock.release().unwrap();
    assert!(other.acquire_timeout(Duration::from_secs(60)).unwrap());

    let bounded = manager.bounded_semaphore(1).unwrap();
    assert!(matches!(bounded.release(), Err(Error::Remote { .. })));
    let sem = manager.semaphore(0).unwrap();
    sem.release().unwrap();
    assert_eq!(sem.value().unwrap(), 1);

    let queue = manager.queue::<u8>(Some(1)).unwrap();
    queue.put(&1).unwrap();
    assert!(matches!(
        queue.put_timeout(&2, Duration::from_millis(20)),
        Err(Error::Timeout)
    ));
    assert_eq!(queue.try_get().unwrap(), Some(1));
    assert_eq!(queue.try_get().unwrap(), None);
    assert!(matches!(
        queue.get_timeout(Duration::from_millis(20)),
        Err(Error::Timeout)
    ));
}

/// Waits on the condition until the value reaches `goal`.
#[parallel]
fn await_goal(cond: pproc::manager::Condition, value: Value<u32>, goal: u32) -> u32 {
    let _held = cond.lock().unwrap();
    while value.get().unwrap() < goal {
        cond.wait(Some(Duration::from_secs(60))).unwrap();
    }
    value.get().unwrap()
}

#[test]
fn a_condition_wakes_its_waiters_across_processes() {
    let manager = Manager::start().unwrap();
    let cond = manager.condition(None).unwrap();
    let value = manager.value(&0_u32).unwrap();
    let waiters: Vec<_> = (0..3)
        .map(|_| await_goal::start(cond.clone(), value.clone(), 3).unwrap())
        .collect();
    for n in 1..=3 {
        let _held = cond.lock().unwrap();
        value.set(&n).unwrap();
        cond.notify_all().unwrap();
    }
    for w in waiters {
        assert_eq!(w.join().unwrap(), 3);
    }
    // Waiting without the lock is refused.
    assert!(matches!(
        cond.wait(Some(Duration::ZERO)),
        Err(Error::Remote { .. })
    ));
}

/// A type of the test's own, shared through the manager.
#[derive(Serialize, Deserialize)]
pub struct Ledger {
    entries: Vec<(String, i64)>,
}

impl Ledger {
    fn record(&mut self, who: String, amount: i64) -> usize {
        self.entries.push((who, amount));
        self.entries.len()
    }

    fn balance(&self, who: String) -> i64 {
        self.entries
            .iter()
            .filter(|(w, _)| *w == who)
            .map(|(_, a)| a)
            .sum()
    }

    pub fn erase(&mut self) {
        self.entries.clear();
    }
}

pproc::shared! {
    /// The methods a shared `Ledger` exposes.
    pub trait LedgerProxy for Ledger {
        fn record(who: String, amount: i64) -> usize;
        fn balance(who: String) -> i64;
    }
}

#[parallel]
fn pay(ledger: pproc::manager::Shared<Ledger>, who: String, times: u32) {
    for _ in 0..times {
        ledger.record(who.clone(), 10).unwrap();
    }
}

#[test]
fn custom_types_expose_only_what_they_declare() {
    let manager = Manager::start().unwrap();
    let ledger = manager
        .shared(&Ledger {
            entries: Vec::new(),
        })
        .unwrap();
    let payers: Vec<_> = ["ada", "bob"]
        .into_iter()
        .map(|who| pay::start(ledger.clone(), who.into(), 50).unwrap())
        .collect();
    for p in payers {
        p.join().unwrap();
    }
    assert_eq!(ledger.balance("ada".into()).unwrap(), 500);
    assert_eq!(ledger.record("bob".into(), -5).unwrap(), 101);
    assert_eq!(ledger.balance("bob".into()).unwrap(), 495);
    match ledger.call::<(), ()>("erase", &()) {
        Err(Error::Remote { message }) => {
            assert!(message.contains("`erase` is not exposed"), "{message}");
            assert!(message.contains("record, balance"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn named_objects_are_shared_by_every_client_and_kept_to_their_kind() {
    let key = b"a key for named objects";
    let server = Manager::serve("127.0.0.1:0", key).unwrap();
    let Some(pproc::manager::Address::Tcp(addr)) = Some(server.address().clone()) else {
        panic!("a TCP manager");
    };
    let a = Manager::connect(addr, key).unwrap();
    let b = Manager::connect(addr, key).unwrap();
    let jobs = a.named("jobs").queue::<String>(Some(10)).unwrap();
    let same = b.named("jobs").queue::<String>(None).unwrap();
    jobs.put(&"compile".into()).unwrap();
    assert_eq!(same.get().unwrap(), "compile");
    assert!(matches!(
        b.named("jobs").map::<String, String>(),
        Err(Error::Remote { .. })
    ));
    assert!(matches!(
        b.named("jobs").queue::<u64>(None),
        Err(Error::Remote { .. })
    ));
    // Shutting down a manager reached by `connect` leaves it running.
    a.shutdown().unwrap();
    same.put(&"test".into()).unwrap();
    server.shutdown().unwrap();
    server.shutdown().unwrap();
    assert!(same.put(&"late".into()).is_err());
}

#[test]
fn a_wrong_key_is_refused_and_the_server_goes_on() {
    let server = Manager::serve("127.0.0.1:0", b"right key").unwrap();
    let pproc::manager::Address::Tcp(addr) = server.address().clone() else {
        panic!("a TCP manager");
    };
    match Manager::connect(addr, b"wrong key") {
        Err(Error::Authentication { message }) => assert!(message.contains("refused the key")),
        other => panic!("unexpected {other:?}"),
    }
    let good = Manager::connect(addr, b"right key").unwrap();
    assert_eq!(good.value(&5_i32).unwrap().add(1).unwrap(), 6);
    // Something that is not a manager is told apart.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fake = listener.local_addr().unwrap();
    let impostor = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(&[b'x'; 41]).unwrap();
    });
    assert!(matches!(
        Manager::connect(fake, b"right key"),
        Err(Error::Authentication { .. })
    ));
    impostor.join().unwrap();
}

#[test]
fn hostile_clients_leave_the_server_serving_the_others() {
    let _serial = serial();
    let server = Manager::serve("127.0.0.1:0", b"k3y").unwrap();
    let pproc::manager::Address::Tcp(addr) = server.address().clone() else {
        panic!("a TCP manager");
    };
    let client = Manager::connect(addr, b"k3y").unwrap();
    let counter = client.value(&0_u64).unwrap();
    // Silent clients that never answer the challenge.
    let silent: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    // Garbage in place of an answer; a huge length in place of a frame.
    for garbage in [
        vec![0xff; 64],
        vec![0; 7],
        u32::MAX.to_le_bytes().repeat(20),
    ] {
        let mut s = TcpStream::connect(addr).unwrap();
        let mut hello = [0; 41];
        s.read_exact(&mut hello).unwrap();
        assert_eq!(&hello[..8], b"PPROCMGR");
        let _ = s.write_all(&garbage);
    }
    // Thousands of attempts that leave at once.
    for _ in 0..2000 {
        drop(TcpStream::connect(addr).unwrap());
    }
    // The client already in and a new one are served throughout.
    assert_eq!(counter.add(1).unwrap(), 1);
    let late = Manager::connect(addr, b"k3y").unwrap();
    assert_eq!(late.value(&1_u64).unwrap().add(1).unwrap(), 2);
    assert_eq!(counter.add(1).unwrap(), 2);
    drop(silent);
}

/// Raises this process's descriptor limit to its hard limit, for tests that
/// hold more connections than the usual 1024; a manager started after
/// inherits it.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the one it is given.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) },
        0
    );
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit reads the rlimit it is given.
    assert_eq!(
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) },
        0
    );
    assert!(
        limit.rlim_cur >= 4096,
        "these tests need 4096 descriptors; the hard limit is {}",
        limit.rlim_cur
    );
}

/// A TCP connection to `to` from the loopback address `from` (any of
/// 127.0.0.0/8 reaches this machine), so that one test can play many hosts.
fn connect_from(from: Ipv4Addr, to: SocketAddrV4) -> TcpStream {
    let sockaddr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::sa_family_t::try_from(libc::AF_INET).unwrap(),
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = libc::socklen_t::try_from(size_of::<libc::sockaddr_in>()).unwrap();
    // SAFETY: socket takes no pointers; its descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
    // SAFETY: a new descriptor that nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let local = sockaddr(from, 0);
    // SAFETY: `local` is a sockaddr_in of `len` bytes.
    let bound = unsafe { libc::bind(socket.as_raw_fd(), (&raw const local).cast(), len) };
    assert_eq!(bound, 0, "bind {from}: {}", io::Error::last_os_error());
    let remote = sockaddr(*to.ip(), to.port());
    // SAFETY: `remote` is a sockaddr_in of `len` bytes.
    let connected = unsafe { libc::connect(socket.as_raw_fd(), (&raw const remote).cast(), len) };
    assert_eq!(connected, 0, "connect: {}", io::Error::last_os_error());
    TcpStream::from(socket)
}

/// Whether the server has closed `stream`, on which it sent nothing more
/// than what was read already.
fn closed(stream: &mut TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    match stream.read(&mut [0; 1]) {
        Ok(0) => true,
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => false,
        Err(_) => true,
        Ok(_) => panic!("more than a hello"),
    }
}

/// A manager on TCP loopback, its IPv4 address and its key.
fn tcp_manager(key: &'static [u8]) -> (Manager, SocketAddrV4) {
    let server = Manager::serve("127.0.0.1:0", key).unwrap();
    let pproc::manager::Address::Tcp(SocketAddr::V4(addr)) = server.address().clone() else {
        panic!("a TCP manager on 127.0.0.1");
    };
    (server, addr)
}

/// Silent connections held from 20 addresses, 55 from each (within an
/// address's share of 128), 1100 in all: more than the server's 1024 handshakes at
/// once, so that its table fills and its oldest make room. Between every 55,
/// new clients from 127.0.0.1, each on connections of its own, are served.
#[test]
fn a_flood_of_silent_connections_does_not_lock_out_clients() {
    let _serial = serial();
    raise_fd_limit();
    let key = b"flooded";
    let (server, addr) = tcp_manager(key);
    let counter = server.named("counter").value(&0_u64).unwrap();
    let seen = server.map::<u32, u32>().unwrap();
    let mut silent = Vec::with_capacity(1100);
    for round in 0..20_u32 {
        for i in 0..55_u8 {
            let from = Ipv4Addr::new(127, 0, 0, 2 + i % 20);
            silent.push(connect_from(from, addr));
        }
        // A new manager client (one connection) whose proxy opens another.
        let fresh = Manager::connect(addr, key).unwrap();
        let mine = fresh.named("counter").value(&0_u64).unwrap();
        assert_eq!(mine.add(1).unwrap(), u64::from(round) + 1);
        // A copy of a proxy: a connection of its own.
        let copy = seen.clone();
        assert_eq!(copy.insert(&round, &(round * 2)).unwrap(), None);
        assert_eq!(copy.get(&round).unwrap(), Some(round * 2));
    }
    assert_eq!(silent.len(), 1100);
    assert_eq!(counter.get().unwrap(), 20);
    assert_eq!(seen.len().unwrap(), 20);
    let late = seen.clone();
    assert_eq!(late.get(&19).unwrap(), Some(38));
    drop(silent);
}

/// 1100 silent connections from one address (127.0.0.2), each greeted: the
/// server keeps that address's newest 128 handshakes (its `PEER_SHARE`),
/// closing the older ones as the newer come, and a client from 127.0.0.1 is
/// served throughout.
#[test]
fn one_address_holds_no_more_than_its_share_of_handshakes() {
    const SHARE: usize = 128;
    const FLOOD: usize = 1100;
    let _serial = serial();
    raise_fd_limit();
    let key = b"shared out";
    let (server, addr) = tcp_manager(key);
    let counter = server.value(&0_u64).unwrap();
    let hog = Ipv4Addr::new(127, 0, 0, 2);
    let greeted = |_| {
        let mut stream = connect_from(hog, addr);
        let mut hello = [0; 41];
        stream.read_exact(&mut hello).unwrap();
        assert_eq!(&hello[..8], b"PPROCMGR");
        stream
    };
    let mut silent: Vec<TcpStream> = (0..FLOOD - SHARE).map(greeted).collect();
    // No handshake from here on can reach its deadline (2 s) before this
    // much has passed.
    let newest_greeted = Instant::now();
    silent.extend((0..SHARE).map(greeted));
    // Clients from elsewhere, on connections of their own, are served.
    for n in 1..=3 {
        assert_eq!(counter.clone().add(1).unwrap(), n);
    }
    let fresh = Manager::connect(addr, key).unwrap();
    assert_eq!(fresh.value(&7_u64).unwrap().add(1).unwrap(), 8);
    // Each eviction closed its victim before the next hello went out, so
    // every close is here already.
    let open: Vec<usize> = silent
        .iter_mut()
        .enumerate()
        .filter_map(|(i, stream)| (!closed(stream)).then_some(i))
        .collect();
    let in_time = newest_greeted.elapsed() < Duration::from_millis(1500);
    assert!(open.len() <= SHARE, "{} of one address held", open.len());
    assert!(
        open.iter().all(|i| *i >= FLOOD - SHARE),
        "an old handshake outlived newer ones: {open:?}"
    );
    if in_time {
        // Nothing expired yet: exactly the newest share is held. (On a
        // machine slow enough to let deadlines pass, fewer may be.)
        assert_eq!(open, (FLOOD - SHARE..FLOOD).collect::<Vec<_>>());
    }
    assert_eq!(counter.get().unwrap(), 3);
}

#[test]
fn a_manager_dies_with_its_owner() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pproc-probe"))
        .arg("manager")
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let pid: u32 = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(pid, 0);
    wait_gone(pid);
}

#[test]
fn shutdown_is_idempotent_and_proxies_then_fail() {
    let _serial = serial();
    let manager = Manager::start().unwrap();
    let pid = manager.pid().unwrap();
    let value = manager.value(&"x".to_owned()).unwrap();
    manager.shutdown().unwrap();
    manager.shutdown().unwrap();
    assert!(value.get().is_err());
    assert!(!pproc::children().iter().any(|c| c.pid == pid), "reaped");
}

#[test]
fn a_manager_can_serve_in_this_process() {
    let address = pproc::manager::Address::Local(format!("pproc-test-{}", std::process::id()));
    let key = b"served here";
    {
        let address = address.clone();
        // Serves until the test program exits.
        std::thread::spawn(move || Manager::serve_forever(&address, key));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let client = loop {
        match Manager::connect_to(address.clone(), key) {
            Ok(client) => break client,
            Err(Error::Io(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(err) => panic!("cannot reach the manager: {err}"),
        }
    };
    assert_eq!(client.pid(), None, "nothing was started");
    let names = client
        .named("names")
        .list(["ada".to_owned()].iter())
        .unwrap();
    names.push(&"grace".into()).unwrap();
    let again = Manager::connect_to(address, key).unwrap();
    let same = again.named("names").list::<String>([].iter()).unwrap();
    assert_eq!(same.to_vec().unwrap(), ["ada", "grace"]);
}
