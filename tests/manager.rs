//! The manager: every kind of shared object used from real child
//! processes, updates that are never lost, locks given back by clients that
//! die, custom types, named objects, and authentication against wrong keys
//! and hostile clients on loopback.

use std::io::{Read, Write};
use std::net::TcpStream;
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
