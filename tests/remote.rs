//! Children on another host through a launcher. Here the launcher is a
//! command prefix (`env`, or a shell), which runs the agent on this very
//! host: every path of the agent and the link runs for real, and the
//! tests can see both sides' processes. The ssh and Slurm launchers have
//! tests of their own against a real sshd and a real Slurm.

use std::time::{Duration, Instant};

use pproc::{Builder, Channel, Error, Map, Prefix, parallel};
use pproc_workspace::wait_gone;

#[parallel]
fn square(x: u64) -> u64 {
    x * x
}

/// Its pid and its parent's: the agent's, on the host.
#[parallel]
fn whoami() -> (u32, u32) {
    (std::process::id(), std::os::unix::process::parent_id())
}

#[parallel]
fn count_to(ch: Channel<u64, u64>, n: u64) -> u64 {
    for i in 0..n {
        ch.send(&i).unwrap();
    }
    // An echo, to show both ways work.
    ch.recv().unwrap() + 1
}

#[parallel]
fn fails(code: i32) -> u8 {
    if code == 0 {
        panic!("asked to panic");
    }
    std::process::exit(code);
}

/// Says its pid and its agent's, then sleeps.
#[parallel]
fn sleeps(ch: Channel<(u32, u32)>) {
    ch.send(&(std::process::id(), std::os::unix::process::parent_id()))
        .unwrap();
    ch.flush().unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

/// The agent on this host, under its own name so that no other test's
/// agent is shared.
fn host(name: &str) -> Builder {
    Builder::new().launcher(Prefix::new(["env"]).host(name))
}

static REMOTE_SCALE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A builder's initializer runs on the other host, in each process, before
/// its call; one that fails there fails the call with `Error::Setup`.
#[test]
fn an_initializer_runs_on_another_host() {
    use std::sync::atomic::Ordering;
    let init = pproc::call(6_u64, |s: u64| REMOTE_SCALE.store(s, Ordering::Relaxed));
    let b = host("initializer").initializer(init);
    let scaled = |x: u64| pproc::call(x, |x: u64| x * REMOTE_SCALE.load(Ordering::Relaxed));
    assert_eq!(b.start(scaled(7)).unwrap().join().unwrap(), 42);
    let got: Vec<u64> = Map::new(scaled, 0..20)
        .builder(b)
        .collect::<pproc::Result<_>>()
        .unwrap();
    assert_eq!(got, (0..20).map(|x| 6 * x).collect::<Vec<_>>());

    let failing = host("initializer").initializer(pproc::call((), |()| panic!("not here")));
    match failing.start(scaled(1)).unwrap().join() {
        Err(Error::Setup { message, .. }) => assert_eq!(message, "not here"),
        other => panic!("{other:?}"),
    }
}

/// A closure that captures nothing runs on another host as on this one:
/// the agent's child is the same build, so its code lies at the same
/// offset.
#[test]
fn a_closure_runs_on_another_host() {
    let b = host("closures");
    let h = b
        .start(pproc::call((6_u64, 7_u64), |(a, b): (u64, u64)| {
            (a * b, std::os::unix::process::parent_id())
        }))
        .unwrap();
    let (product, parent) = h.join().unwrap();
    assert_eq!(product, 42);
    assert_ne!(
        parent,
        std::process::id(),
        "the agent is the child's parent"
    );
}

#[test]
fn a_remote_child_returns_streams_and_fails_as_a_local_one() {
    let b = host("values");
    assert_eq!(b.start(square::call(12)).unwrap().join().unwrap(), 144);

    let h = b.start(whoami::call()).unwrap();
    let pid = h.pid();
    let (child, agent) = h.join().unwrap();
    assert_eq!(child, pid, "the handle knows the child's pid on its host");
    assert_ne!(agent, std::process::id(), "the agent is the child's parent");

    let h = b.start(count_to::call(1000)).unwrap();
    let got: Vec<u64> = (0..1000).map(|_| h.recv().unwrap()).collect();
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
    h.send(&41).unwrap();
    assert_eq!(h.join().unwrap(), 42);

    match b.start(fails::call(0)).unwrap().join() {
        Err(Error::Panicked { message, .. }) => assert_eq!(message, "asked to panic"),
        other => panic!("{other:?}"),
    }
    match b.start(fails::call(7)).unwrap().join() {
        Err(Error::Exited { code: 7 }) => {}
        other => panic!("{other:?}"),
    }
    let h = b.start(sleeps::call()).unwrap();
    let (child, _) = h.recv().unwrap();
    h.kill().unwrap();
    match h.join() {
        Err(Error::Signaled { signal }) => assert_eq!(signal, libc::SIGKILL),
        other => panic!("{other:?}"),
    }
    wait_gone(child);
    // A dropped handle kills its child there too.
    let h = b.start(sleeps::call()).unwrap();
    let (child, _) = h.recv().unwrap();
    drop(h);
    wait_gone(child);
}

#[test]
fn remote_workers_run_a_map() {
    let squares: Vec<u64> = Map::new(square::call, 0..200u64)
        .builder(host("workers"))
        .collect::<pproc::Result<_>>()
        .unwrap();
    assert_eq!(squares, (0..200u64).map(|x| x * x).collect::<Vec<_>>());
}

#[test]
fn a_lost_host_fails_its_children_with_host_lost_and_leaves_none() {
    let b = host("doomed");
    let h = b.start(sleeps::call()).unwrap();
    let other = b.start(sleeps::call()).unwrap();
    let (child, agent) = h.recv().unwrap();
    let (sibling, same_agent) = other.recv().unwrap();
    assert_eq!(agent, same_agent, "one agent per host");
    // The agent dies at once: it cannot stop its children, which die with
    // it all the same.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.cast_signed()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let started = Instant::now();
    for h in [h, other] {
        match h.join() {
            Err(Error::HostLost { host }) => assert_eq!(host, "doomed"),
            other => panic!("{other:?}"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    for pid in [agent, child, sibling] {
        wait_gone(pid);
    }
    // The next child starts a new agent.
    assert_eq!(b.start(square::call(3)).unwrap().join().unwrap(), 9);
}

#[test]
fn a_shell_that_prints_first_is_skipped() {
    let chatty =
        Prefix::new(["sh", "-c", "echo 'Welcome to the host'; exec \"$@\"", "sh"]).host("chatty");
    let b = Builder::new().launcher(chatty);
    assert_eq!(b.start(square::call(5)).unwrap().join().unwrap(), 25);
}

#[test]
fn a_host_that_cannot_be_reached_is_a_launch_error() {
    let b = Builder::new().launcher(Prefix::new(["/nonexistent/launcher"]).host("nowhere"));
    match b.start(square::call(1)) {
        Err(Error::Launch { host, message }) => {
            assert_eq!(host, "nowhere");
            assert!(message.contains("cannot run"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // A launcher that fails, and says why on its standard error.
    let refusing = Prefix::new([
        "sh",
        "-c",
        "echo 'ssh: connect: Connection refused' >&2; exit 255",
    ])
    .host("refusing");
    match Builder::new().launcher(refusing).start(square::call(1)) {
        Err(Error::Launch { host, message }) => {
            assert_eq!(host, "refusing");
            assert!(message.contains("Connection refused"), "{message}");
            assert!(message.contains("exited with 255"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Nothing answers at all: the connect timeout ends the wait.
    let silent = Prefix::new(["sh", "-c", "exec sleep 30"])
        .host("silent")
        .connect_timeout(Duration::from_secs(1));
    let started = Instant::now();
    match Builder::new().launcher(silent).start(square::call(1)) {
        Err(Error::Launch { message, .. }) => assert!(message.contains("in time"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn an_agent_of_another_build_is_version_skew() {
    // `pproc-probe` is another program linking pproc: its build differs.
    let probe = env!("CARGO_BIN_EXE_pproc-probe");
    let other = Prefix::new(["sh", "-c", "exec env PPROC_AGENT=1 \"$0\"", probe])
        .host("old")
        .binary(pproc::Binary::SamePath);
    match Builder::new().launcher(other).start(square::call(1)) {
        Err(Error::VersionSkew {
            host,
            parent,
            child,
        }) => {
            assert_eq!(host.as_deref(), Some("old"));
            assert_ne!(parent, child);
        }
        other => panic!("{other:?}"),
    }
}

/// Allocates and touches `mib` MiB; returns how many.
#[parallel]
fn hoard(mib: usize) -> usize {
    let block = vec![1_u8; mib << 20];
    std::hint::black_box(&block);
    mib
}

#[test]
fn limits_and_deadlines_hold_on_the_host() {
    let b = host("limited").deadline(Duration::from_millis(300));
    let started = Instant::now();
    let h = b.start(sleeps::call()).unwrap();
    let (child, _) = h.recv().unwrap();
    assert!(matches!(h.join(), Err(Error::Timeout)));
    assert!(started.elapsed() < Duration::from_secs(20));
    wait_gone(child);
    let limit = 256 << 20;
    let b = host("limited").memory_limit(limit);
    assert_eq!(b.start(hoard::call(16)).unwrap().join().unwrap(), 16);
    match b.start(hoard::call(1024)).unwrap().join() {
        Err(Error::LimitExceeded(pproc::Limit::Memory { bytes })) => assert_eq!(bytes, limit),
        other => panic!("{other:?}"),
    }
}

/// Prints `n` lines to its standard output and one to its error.
#[parallel]
fn chatty(n: u32) -> u32 {
    for i in 0..n {
        println!("line {i}");
    }
    eprintln!("done");
    n
}

#[test]
fn a_remote_childs_output_is_captured_as_a_local_ones() {
    let b = host("capture").capture_output(true);
    // More than a pipe holds, and more than a link's window.
    let n = 300_000;
    let out = b.start(chatty::call(n)).unwrap().join_output();
    assert_eq!(out.result.unwrap(), n);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), n as usize);
    assert_eq!(
        stdout.lines().last(),
        Some(format!("line {}", n - 1).as_str())
    );
    assert_eq!(out.stderr, b"done\n");

    // How it ended travels as from a local child, beside its output.
    let out = b.start(fails::call(7)).unwrap().join_output();
    assert!(matches!(out.result, Err(Error::Exited { code: 7 })));
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
}

#[test]
fn a_remote_child_runs_from_another_program_of_the_same_build() {
    let me = std::env::current_exe().unwrap();
    let b = host("program").program(&me);
    assert_eq!(b.start(square::call(9)).unwrap().join().unwrap(), 81);
    let probe = env!("CARGO_BIN_EXE_pproc-probe");
    let err = host("program")
        .program(probe)
        .start(square::call(1))
        .unwrap()
        .join()
        .unwrap_err();
    assert!(matches!(err, Error::VersionSkew { .. }), "{err}");
    match host("program")
        .program("/nonexistent/program")
        .start(square::call(1))
    {
        Err(Error::Spawn(err)) => assert!(err.to_string().contains("No such file"), "{err}"),
        other => panic!("{other:?}"),
    }
}

/// Starts a sleeper on a host of its own, tells the test its pid and its
/// agent's, then waits to be killed.
#[parallel]
fn middle(ch: Channel<(u32, u32)>) {
    let quick = Prefix::new(["env"])
        .host("orphaned")
        .host_timeout(Duration::from_secs(3));
    let h = Builder::new()
        .launcher(quick)
        .start(sleeps::call())
        .unwrap();
    ch.send(&h.recv().unwrap()).unwrap();
    ch.flush().unwrap();
    std::thread::sleep(Duration::from_secs(60));
    drop(h);
}

#[test]
fn a_parent_killed_leaves_no_child_on_the_host() {
    let h = middle::start().unwrap();
    let (child, agent) = h.recv().unwrap();
    h.kill().unwrap();
    assert!(matches!(h.join(), Err(Error::Signaled { .. })));
    // The link ended with the parent: the agent stops its children and
    // exits.
    wait_gone(child);
    wait_gone(agent);
}

#[test]
fn a_parent_that_hangs_is_noticed_by_the_agent() {
    let h = middle::start().unwrap();
    let (child, agent) = h.recv().unwrap();
    // Stopped, the parent says nothing, and its link stays open.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(h.pid().cast_signed()),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let started = Instant::now();
    wait_gone(child);
    wait_gone(agent);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "not before the timeout: {took:?}"
    );
    h.kill().unwrap();
    assert!(matches!(h.join(), Err(Error::Signaled { .. })));
}

#[test]
fn an_agent_that_hangs_is_a_lost_host() {
    let quick = Prefix::new(["env"])
        .host("hanging")
        .host_timeout(Duration::from_secs(3));
    let h = Builder::new()
        .launcher(quick)
        .start(sleeps::call())
        .unwrap();
    let (child, agent) = h.recv().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.cast_signed()),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let started = Instant::now();
    match h.join() {
        Err(Error::HostLost { host }) => assert_eq!(host, "hanging"),
        other => panic!("{other:?}"),
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "not before the timeout: {took:?}"
    );
    assert!(took < Duration::from_secs(20), "{took:?}");
    // The launcher (here the agent itself) is killed, and the child with it.
    wait_gone(agent);
    wait_gone(child);
}

/// A fresh cache directory for copies of the program.
fn cache(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pproc-cache-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The program an agent runs, from the agent's pid.
fn program_of(pid: u32) -> std::path::PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap()
}

#[test]
fn a_copy_is_made_once_and_run_from_the_cache() {
    let dir = cache("copy");
    let copied = |name: &str| {
        Builder::new().launcher(
            Prefix::new(["env"])
                .host(name)
                .binary(pproc::Binary::Copy)
                .cache_dir(&dir),
        )
    };
    let (_, agent) = copied("copy-1")
        .start(whoami::call())
        .unwrap()
        .join()
        .unwrap();
    let program = program_of(agent);
    assert!(
        program.starts_with(dir.canonicalize().unwrap()),
        "{program:?}"
    );
    let name = program.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(name.len(), 64, "named by its SHA-256: {name}");
    let made = std::fs::metadata(&program).unwrap();
    assert_eq!(
        made.len(),
        std::fs::metadata(std::env::current_exe().unwrap())
            .unwrap()
            .len()
    );
    // Another host with the same cache finds the copy there.
    let (_, again) = copied("copy-2")
        .start(whoami::call())
        .unwrap()
        .join()
        .unwrap();
    assert_ne!(again, agent);
    assert_eq!(program_of(again), program);
    let found = std::fs::metadata(&program).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&found),
        std::os::unix::fs::MetadataExt::ino(&made),
        "not copied again"
    );
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1, "no temporary left: {left:?}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_host_without_the_program_or_with_another_build_gets_a_copy() {
    let exe = std::env::current_exe().unwrap().display().to_string();
    let probe = env!("CARGO_BIN_EXE_pproc-probe");
    for (name, instead) in [
        // The program is not at this path there.
        (
            "missing",
            "echo \"sh: $last: not found\" >&2; exit 127".to_owned(),
        ),
        // Another build is.
        ("stale", format!("exec env PPROC_AGENT=30000 '{probe}'")),
    ] {
        let dir = cache(name);
        let script = format!(
            "for a; do last=$a; done; if [ \"$last\" = '{exe}' ]; then {instead}; fi; exec \"$@\""
        );
        let launcher = Prefix::new(["sh", "-c", &script, "sh"])
            .host(name)
            .cache_dir(&dir);
        let h = Builder::new()
            .launcher(launcher)
            .start(whoami::call())
            .unwrap();
        let (_, agent) = h.join().unwrap();
        assert!(
            program_of(agent).starts_with(dir.canonicalize().unwrap()),
            "{name}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
    // Told to use the same path only, the stale host is an error.
    let script = format!(
        "for a; do last=$a; done; if [ \"$last\" = '{exe}' ]; then exec env PPROC_AGENT=30000 '{probe}'; fi; exec \"$@\""
    );
    let launcher = Prefix::new(["sh", "-c", &script, "sh"])
        .host("stale-only")
        .binary(pproc::Binary::SamePath);
    assert!(matches!(
        Builder::new().launcher(launcher).start(whoami::call()),
        Err(Error::VersionSkew { .. })
    ));
}

#[test]
fn a_cluster_spreads_workers_over_its_hosts_by_slots() {
    let cluster = pproc::Cluster::new()
        .host(Prefix::new(["env"]).host("left"), 1)
        .host(Prefix::new(["env"]).host("right"), 3);
    cluster.connect().unwrap();
    let pool = pproc::Pool::on(&cluster).unwrap();
    let running: Vec<(String, usize, bool)> = cluster
        .hosts()
        .into_iter()
        .map(|h| (h.name, h.running, h.up))
        .collect();
    assert_eq!(
        running,
        [("left".to_owned(), 1, true), ("right".to_owned(), 3, true)]
    );
    let agents: std::collections::BTreeSet<u32> = pool
        .map(|()| whoami::call(), std::iter::repeat_n((), 400))
        .unwrap()
        .into_iter()
        .map(|(_, agent)| agent)
        .collect();
    assert_eq!(agents.len(), 2, "both hosts ran items");
    pool.shutdown().unwrap();
    let running: Vec<usize> = cluster.hosts().iter().map(|h| h.running).collect();
    assert_eq!(running, [0, 0]);
    // Disconnected, the agents exit; a child on the cluster starts one.
    let h = Builder::new()
        .cluster(&cluster)
        .start(whoami::call())
        .unwrap();
    let (_, agent) = h.join().unwrap();
    cluster.disconnect();
    wait_gone(agent);
    assert!(cluster.hosts().iter().all(|h| !h.up));
    assert_eq!(
        Builder::new()
            .cluster(&cluster)
            .start(square::call(4))
            .unwrap()
            .join()
            .unwrap(),
        16
    );
}

#[test]
fn a_cluster_passes_over_a_host_it_cannot_reach() {
    let cluster = pproc::Cluster::new()
        .host(Prefix::new(["/nonexistent/launcher"]).host("gone"), 4)
        .host(Prefix::new(["env"]).host("there"), 1);
    cluster.connect().unwrap();
    let up: Vec<bool> = cluster.hosts().iter().map(|h| h.up).collect();
    assert_eq!(up, [false, true]);
    let squares: Vec<u64> = Map::new(square::call, 0..50u64)
        .cluster(&cluster)
        .collect::<pproc::Result<_>>()
        .unwrap();
    assert_eq!(squares, (0..50u64).map(|x| x * x).collect::<Vec<_>>());
    // No host at all: the first host's error.
    let none = pproc::Cluster::new().host(Prefix::new(["/nonexistent/launcher"]).host("gone"), 1);
    assert!(matches!(none.connect(), Err(Error::Launch { .. })));
}

/// Adds to a counter and a list it shares with its parent, from its host.
#[parallel]
fn tally(counter: pproc::manager::Value<u64>, list: pproc::manager::List<u32>, n: u64) -> u64 {
    for _ in 0..n {
        counter.add(1).unwrap();
    }
    list.push(&std::process::id()).unwrap();
    counter.get().unwrap()
}

/// Tries a manager its parent has never reached.
#[parallel]
fn stray(port: u16) -> String {
    match pproc::Manager::connect(("127.0.0.1", port), b"any key") {
        Ok(_) => "connected".into(),
        Err(err) => err.to_string(),
    }
}

#[test]
fn a_managers_objects_work_from_remote_children_through_the_link() {
    // On loopback TCP: a child on another host reaches it only through
    // its agent's link and its parent.
    let manager = pproc::Manager::serve("127.0.0.1:0", b"tunnel key").unwrap();
    let counter = manager.value(&0_u64).unwrap();
    let list = manager.list::<u32>(&[]).unwrap();
    let b = host("tunnel");
    let hs: Vec<_> = (0..3)
        .map(|_| {
            b.start(tally::call(counter.clone(), list.clone(), 200))
                .unwrap()
        })
        .collect();
    let pids: Vec<u32> = hs.iter().map(pproc::Handle::pid).collect();
    for h in hs {
        assert!(h.join().unwrap() >= 200);
    }
    assert_eq!(counter.get().unwrap(), 600, "no update was lost");
    let mut pushed = list.to_vec().unwrap();
    pushed.sort_unstable();
    let mut expected = pids;
    expected.sort_unstable();
    assert_eq!(pushed, expected);

    // A manager this process never reached is not reached for a child.
    let idle = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = idle.local_addr().unwrap().port();
    let started = Instant::now();
    let said = b.start(stray::call(port)).unwrap().join().unwrap();
    assert_ne!(said, "connected");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused at once: {said}"
    );
    assert!(
        idle.set_nonblocking(true).is_ok() && idle.accept().is_err(),
        "nothing connected to it"
    );
}

/// `x`, and the pid of the agent it ran under, after a tenth of a second.
#[parallel]
fn slow_where(x: u64) -> (u64, u32) {
    std::thread::sleep(Duration::from_millis(100));
    (x, std::os::unix::process::parent_id())
}

/// Maps 30 slow items over a cluster of two hosts and kills the agent of
/// the host that ran the first item once it is in: what each item gave.
fn map_losing_a_host(name: &str, retry: usize) -> Vec<pproc::Result<(u64, u32)>> {
    let cluster = pproc::Cluster::new()
        .host(Prefix::new(["env"]).host(format!("{name}-a")), 2)
        .host(Prefix::new(["env"]).host(format!("{name}-b")), 2);
    let mut items = Map::new(slow_where::call, 0..30)
        .cluster(&cluster)
        .retry_lost(retry);
    let first = items.next().unwrap().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.1.cast_signed()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let mut got = vec![Ok(first)];
    got.extend(items);
    cluster.disconnect();
    got
}

#[test]
fn lost_calls_run_again_elsewhere_only_when_asked() {
    let got = map_losing_a_host("retry", 2);
    let values: Vec<u64> = got.iter().map(|r| r.as_ref().unwrap().0).collect();
    assert_eq!(values, (0..30).collect::<Vec<_>>(), "every item, in order");

    let got = map_losing_a_host("no-retry", 0);
    assert!(
        got.iter().any(|r| matches!(r, Err(Error::HostLost { .. }))),
        "{got:?}"
    );
}
