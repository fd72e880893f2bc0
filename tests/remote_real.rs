//! Children on other hosts through a real sshd and a real Slurm: the
//! private daemons of `ci/scaleout/` (see `pproc_workspace::testbed`),
//! with node-b in a network namespace whose link a test cuts. Where sshd
//! or Slurm is not installed, each test says so in one line and passes.

use std::time::{Duration, Instant};

use pproc::{Binary, Builder, Channel, Cluster, Error, Map, Srun, Ssh, parallel};
use pproc_workspace::testbed::{self, Sshd};
use pproc_workspace::wait_gone;

/// The host it runs on, its pid and its parent's (the agent's).
#[parallel]
fn whereabouts() -> (String, u32, u32) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    (
        host.trim().to_owned(),
        std::process::id(),
        std::os::unix::process::parent_id(),
    )
}

#[parallel]
fn square(x: u64) -> u64 {
    x * x
}

/// Says where it runs, then sleeps.
#[parallel]
fn sleeps(ch: Channel<(String, u32, u32)>) {
    ch.send(&whereabouts()).unwrap();
    ch.flush().unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

/// Ssh to `host`, on a link of `test`'s own: a link that another test's
/// cut of node-b ended may linger until its heartbeats say so.
fn ssh(bed: &Sshd, host: &str, test: &str) -> Ssh {
    Ssh::new(host)
        .config(bed.config())
        .option(format!("HostKeyAlias={test}-{host}"))
        .connect_timeout(Duration::from_secs(10))
}

#[test]
fn a_call_runs_on_each_ssh_host() {
    let Some(bed) = testbed::sshd() else { return };
    let _link = bed.hold_node_b();
    for host in bed.hosts() {
        let b = Builder::new().launcher(ssh(&bed, host, "each"));
        assert_eq!(b.start(square::call(11)).unwrap().join().unwrap(), 121);
        let (name, _, agent) = b.start(whereabouts::call()).unwrap().join().unwrap();
        if host == "node-b" {
            assert_eq!(name, "node-b", "it ran in node-b's namespace");
        }
        assert_ne!(agent, std::process::id());
    }
}

#[test]
fn a_map_spreads_over_two_ssh_hosts() {
    let Some(bed) = testbed::sshd() else { return };
    let Some(_link) = bed.hold_node_b() else {
        eprintln!("skipped: no node-b here (it needs network namespaces)");
        return;
    };
    let cluster = Cluster::new()
        .host(ssh(&bed, "node-a", "map"), 2)
        .host(ssh(&bed, "node-b", "map"), 2);
    cluster.connect().unwrap();
    let hosts: std::collections::BTreeSet<String> = Map::new(|_| whereabouts::call(), 0..300)
        .cluster(&cluster)
        .map(|r| r.unwrap().0)
        .collect();
    assert!(hosts.contains("node-b"), "{hosts:?}");
    assert_eq!(hosts.len(), 2, "{hosts:?}");
    cluster.disconnect();
}

#[test]
fn a_host_without_the_program_gets_a_copy_over_ssh_once() {
    let Some(bed) = testbed::sshd() else { return };
    let dir = std::env::temp_dir().join(format!("pproc-ssh-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let copied = |name: &str| {
        // Two aliases of one host, so that each connects on its own.
        Ssh::new("node-a")
            .config(bed.config())
            .option(format!("HostKeyAlias={name}"))
            .binary(Binary::Copy)
            .cache_dir(&dir)
    };
    let run = |name: &str| {
        let (_, _, agent) = Builder::new()
            .launcher(copied(name))
            .start(whereabouts::call())
            .unwrap()
            .join()
            .unwrap();
        std::fs::read_link(format!("/proc/{agent}/exe")).unwrap()
    };
    let first = run("copy-a");
    assert!(first.starts_with(dir.canonicalize().unwrap()), "{first:?}");
    let made = std::fs::metadata(&first).unwrap();
    let second = run("copy-b");
    assert_eq!(second, first);
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&second).unwrap()),
        std::os::unix::fs::MetadataExt::ino(&made),
        "the second host found the copy"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_unreachable_host_is_a_launch_error_on_time() {
    let Some(bed) = testbed::sshd() else { return };
    let Some(cut) = bed.cut_node_b() else {
        eprintln!("skipped: no node-b here (it needs network namespaces)");
        return;
    };
    let started = Instant::now();
    let launcher = Ssh::new("node-b")
        .config(bed.config())
        .option("ConnectTimeout=2")
        .connect_timeout(Duration::from_secs(5));
    match Builder::new().launcher(launcher).start(square::call(2)) {
        Err(Error::Launch { host, message }) => {
            assert_eq!(host, "node-b");
            // ssh gives up (255), or, over a connection it still holds
            // open, the agent does not answer in time.
            assert!(
                message.contains("255") || message.contains("in time"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(8));
    drop(cut.restore());
}

#[test]
fn a_link_cut_mid_call_is_a_lost_host_and_leaves_no_process() {
    let Some(bed) = testbed::sshd() else { return };
    if !bed.has_node_b() {
        eprintln!("skipped: no node-b here (it needs network namespaces)");
        return;
    }
    let launcher = Ssh::new("node-b")
        .config(bed.config())
        .option("HostKeyAlias=cut-mid-call")
        .host_timeout(Duration::from_secs(3));
    let (h, child, agent) = {
        let _link = bed.hold_node_b();
        let h = Builder::new()
            .launcher(launcher)
            .start(sleeps::call())
            .unwrap();
        let (host, child, agent) = h.recv().unwrap();
        assert_eq!(host, "node-b");
        (h, child, agent)
    };
    let cut = bed.cut_node_b().unwrap();
    let started = Instant::now();
    match h.join() {
        Err(Error::HostLost { host }) => assert_eq!(host, "node-b"),
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    // The agent on node-b hears nothing either, and stops its child; the
    // pid space is shared, so this side sees it go.
    wait_gone(child);
    wait_gone(agent);
    drop(cut.restore());
}

#[test]
fn an_agent_killed_over_ssh_is_a_lost_host() {
    let Some(bed) = testbed::sshd() else { return };
    let launcher = Ssh::new("node-a")
        .config(bed.config())
        .option("HostKeyAlias=killed-agent");
    let h = Builder::new()
        .launcher(launcher)
        .start(sleeps::call())
        .unwrap();
    let (_, child, agent) = h.recv().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.cast_signed()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(matches!(h.join(), Err(Error::HostLost { .. })));
    wait_gone(child);
}

#[test]
fn a_call_runs_through_srun() {
    let Some(bed) = testbed::slurm(false) else {
        return;
    };
    let launcher = Srun::new().env("SLURM_CONF", bed.conf());
    let b = Builder::new().launcher(launcher);
    assert_eq!(b.start(square::call(12)).unwrap().join().unwrap(), 144);
    let h = b.start(sleeps::call()).unwrap();
    let (_, child, _) = h.recv().unwrap();
    h.kill().unwrap();
    assert!(matches!(h.join(), Err(Error::Signaled { .. })));
    wait_gone(child);
}

/// Set in the environment of this test binary run under `salloc`.
const INSIDE: &str = "PPROC_TEST_INSIDE_SALLOC";

#[test]
fn a_cluster_from_a_two_node_slurm_allocation() {
    if std::env::var_os(INSIDE).is_some() {
        return inside_the_allocation();
    }
    let Some(bed) = testbed::slurm(true) else {
        return;
    };
    let out = bed
        .salloc()
        .args(["-N2", "--quiet"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_cluster_from_a_two_node_slurm_allocation",
            "--nocapture",
        ])
        .env(INSIDE, "1")
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("ran on 2 nodes"), "{said}");
}

/// Under `salloc -N2`: a cluster of the allocation's nodes runs a map on
/// both.
fn inside_the_allocation() {
    let cluster = Cluster::from_slurm().unwrap();
    assert_eq!(cluster.hosts().len(), 2);
    let hosts: std::collections::BTreeSet<String> = Map::new(|_| whereabouts::call(), 0..200)
        .cluster(&cluster)
        .map(|r| r.unwrap().0)
        .collect();
    println!("ran on {} nodes: {hosts:?}", hosts.len());
    cluster.disconnect();
}

/// Appends where it runs to a list its parent shares, and reads the list.
#[parallel]
fn sign(list: pproc::manager::List<String>) -> usize {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    list.push(&host.trim().to_owned()).unwrap();
    list.len().unwrap()
}

#[test]
fn a_managers_objects_work_from_another_network_namespace() {
    let Some(bed) = testbed::sshd() else { return };
    let Some(_link) = bed.hold_node_b() else {
        eprintln!("skipped: no node-b here (it needs network namespaces)");
        return;
    };
    // In Linux's abstract namespace, which node-b's network namespace
    // cannot see: only the link reaches it.
    let manager = pproc::Manager::start().unwrap();
    let list = manager.list::<String>(&[]).unwrap();
    let b = Builder::new().launcher(ssh(&bed, "node-b", "tunnel"));
    for expected in 1..=3 {
        assert_eq!(
            b.start(sign::call(list.clone())).unwrap().join().unwrap(),
            expected
        );
    }
    assert_eq!(list.to_vec().unwrap(), vec!["node-b".to_owned(); 3]);
}

/// Prints where it runs, to each stream.
#[parallel]
fn announce() -> u8 {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    println!("out from {}", host.trim());
    eprintln!("err from {}", host.trim());
    7
}

#[test]
fn output_over_ssh_is_captured() {
    let Some(bed) = testbed::sshd() else { return };
    let _link = bed.hold_node_b();
    for host in bed.hosts() {
        let b = Builder::new()
            .launcher(ssh(&bed, host, "capture"))
            .capture_output(true);
        let out = b.start(announce::call()).unwrap().join_output();
        assert_eq!(out.result.unwrap(), 7);
        let name = String::from_utf8(out.stdout).unwrap();
        assert!(name.starts_with("out from "), "{name:?}");
        if host == "node-b" {
            assert_eq!(name, "out from node-b\n");
        }
        assert!(
            String::from_utf8(out.stderr)
                .unwrap()
                .starts_with("err from ")
        );
    }
}
