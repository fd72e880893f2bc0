//! Process trees: a kill or a graceful terminate takes a child's
//! descendants with it; Ctrl-C at the terminal and the parent's death end
//! the whole tree; `children`, `tree` and `parent` report it.
//!
//! Tests count this process's children: every test holds `serial()`.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use pproc::{Builder, Channel, Error, parallel};
use pproc_workspace::{children, nest, open_fds, process_state, serial, wait_gone};

fn alive(pid: u32) -> bool {
    matches!(process_state(pid), Some(state) if state != 'Z' && state != 'X')
}

/// Starts a `nest` (a child with two grandchildren) with `builder` and
/// returns its handle and the grandchildren's pids.
fn nest_with(
    builder: &Builder,
    ignore_term: bool,
) -> (pproc::Handle<(), (), Vec<u32>, pproc::Streams>, Vec<u32>) {
    let h = builder.start(nest::call(ignore_term)).unwrap();
    let grandchildren = h.recv().unwrap();
    for pid in &grandchildren {
        assert!(alive(*pid), "grandchild {pid} runs");
    }
    (h, grandchildren)
}

#[test]
fn kill_takes_the_grandchildren_with_it() {
    let _serial = serial();
    let fds = open_fds();
    let (h, grandchildren) = nest_with(&Builder::new(), false);
    h.kill().unwrap();
    assert!(matches!(h.join(), Err(Error::Signaled { signal: 9 })));
    for pid in grandchildren {
        wait_gone(pid);
    }
    assert_eq!(children(), Vec::<u32>::new());
    assert_eq!(
        fds.opened_since(),
        Vec::<String>::new(),
        "descriptors leaked"
    );
}

#[test]
fn dropping_a_running_child_takes_its_tree_too() {
    let _serial = serial();
    let (h, grandchildren) = nest_with(&Builder::new(), false);
    drop(h);
    for pid in grandchildren {
        wait_gone(pid);
    }
}

#[test]
fn without_a_group_of_its_own_a_kill_ends_the_child_alone() {
    let _serial = serial();
    let (h, grandchildren) = nest_with(&Builder::new().process_group(false), false);
    let (sleeper, grandchild) = (grandchildren[0], grandchildren[1]);
    h.kill().unwrap();
    assert!(matches!(h.join(), Err(Error::Signaled { signal: 9 })));
    // The pproc grandchild dies with its parent (its death signal); the
    // plain `sleep` was in the same group as everyone and lives on.
    wait_gone(grandchild);
    assert!(alive(sleeper), "a kill without a group reached the sleeper");
    // SAFETY: kill(2) on a process that the test checked is alive.
    unsafe { libc::kill(i32::try_from(sleeper).unwrap(), libc::SIGKILL) };
    wait_gone(sleeper);
}

#[test]
fn terminate_stops_a_child_that_handles_sigterm_by_dying() {
    let _serial = serial();
    let (h, grandchildren) = nest_with(&Builder::new(), false);
    h.terminate(Duration::from_secs(30)).unwrap();
    assert!(matches!(h.join(), Err(Error::Signaled { signal: 15 })));
    for pid in grandchildren {
        wait_gone(pid);
    }
}

#[test]
fn terminate_kills_a_tree_that_ignores_sigterm_after_the_grace() {
    let _serial = serial();
    let (h, grandchildren) = nest_with(&Builder::new(), true);
    h.terminate(Duration::from_millis(200)).unwrap();
    assert!(matches!(h.join(), Err(Error::Signaled { signal: 9 })));
    for pid in grandchildren {
        wait_gone(pid);
    }
    assert_eq!(children(), Vec::<u32>::new());
}

/// Runs the probe in a process group of its own, as a shell runs a job,
/// and returns it with every pid of the trees it started.
fn probe_trees() -> (std::process::Child, Vec<u32>) {
    let mut probe = Command::new(env!("CARGO_BIN_EXE_pproc-probe"))
        .arg("tree")
        .process_group(0)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(probe.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pids: Vec<u32> = line
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 6, "two children, four grandchildren: {line}");
    for pid in &pids {
        assert!(alive(*pid), "{pid} runs");
    }
    (probe, pids)
}

#[test]
fn ctrl_c_at_the_terminal_stops_the_whole_tree() {
    let _serial = serial();
    let (mut probe, pids) = probe_trees();
    // What the terminal does on Ctrl-C: SIGINT to the foreground group,
    // here the probe's. Its children lead groups of their own.
    let group = i32::try_from(probe.id()).unwrap();
    // SAFETY: kill(2) with a negative pid signals that process group.
    assert_eq!(unsafe { libc::kill(-group, libc::SIGINT) }, 0);
    let status = probe.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGINT)
    );
    for pid in pids {
        wait_gone(pid);
    }
}

#[test]
fn nothing_outlives_a_parent_killed_outright() {
    let _serial = serial();
    let (mut probe, pids) = probe_trees();
    probe.kill().unwrap();
    probe.wait().unwrap();
    for pid in pids {
        wait_gone(pid);
    }
}

/// Reports its parent, then the tree below it as `(level, name)` pairs.
#[parallel]
fn family(ch: Channel<Vec<(usize, String)>, ()>) -> Option<u32> {
    let child = nest::start(false).expect("a child starts");
    let _grandchildren = child.recv().expect("the child reports");
    let tree = pproc::tree()
        .into_iter()
        .map(|node| (node.level, node.name))
        .collect();
    ch.send(&tree).expect("the parent listens");
    let _ = ch.recv(); // until the parent is done looking
    pproc::parent()
}

#[test]
fn children_tree_and_parent_report_the_family() {
    let _serial = serial();
    assert_eq!(pproc::parent(), None, "the test runs as nobody's child");
    let h = family::start().unwrap();
    let ours = pproc::children();
    assert!(
        ours.iter()
            .any(|c| c.pid == h.pid() && c.name == family::NAME)
    );
    let below = h.recv().unwrap();
    assert_eq!(below[0], (0, nest::NAME.to_owned()), "{below:?}");
    // The nest's two children: `sleep` by its command name, the pproc
    // grandchild by its function's; either may come first.
    let mut rest = below[1..].to_vec();
    rest.sort();
    assert_eq!(
        rest,
        [
            (1, pproc_workspace::slumber::NAME.to_owned()),
            (1, "sleep".to_owned())
        ],
        "the tree below the child: {below:?}"
    );
    // The whole tree from here: one more level.
    let tree = pproc::tree();
    assert!(tree.iter().any(|n| n.pid == h.pid() && n.level == 0));
    assert_eq!(tree.iter().filter(|n| n.level == 2).count(), 2, "{tree:?}");
    drop(h.send(&()));
    assert_eq!(h.join().unwrap(), Some(std::process::id()));
    assert!(pproc::children().iter().all(|c| c.name != family::NAME));
}
