//! The test bed for remote children works: real sshd hosts and a real
//! Slurm cluster on this machine (`pproc_workspace::testbed`). Where the
//! software is not installed each test prints one `skipped: …` line and
//! passes.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use pproc_workspace::testbed;

/// `ConnectTimeout` in the generated `ssh_config`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// What a loaded two-core machine may add to an expected delay.
const SLACK: Duration = Duration::from_secs(3);

fn run(cmd: &mut std::process::Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn ssh_runs_a_command_on_node_a_and_prints_only_its_output() {
    let Some(bed) = testbed::sshd() else { return };
    assert_eq!(bed.hosts()[0], "node-a");
    let out = run(bed.ssh("node-a").arg("true"));
    assert!(out.status.success(), "{out:?}");
    // The remote shell's start-up prints nothing: a protocol on stdout
    // starts with the first byte.
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    let out = run(bed.ssh("node-a").arg("echo $((6 * 7))"));
    assert_eq!(stdout(&out), "42", "{out:?}");
}

#[test]
fn ssh_passes_the_exit_status_back() {
    let Some(bed) = testbed::sshd() else { return };
    let out = run(bed.ssh("node-a").arg("exit 7"));
    assert_eq!(out.status.code(), Some(7), "{out:?}");
}

#[test]
fn node_b_has_its_own_hostname() {
    let Some(bed) = testbed::sshd() else { return };
    let Some(_up) = bed.hold_node_b() else { return };
    assert_eq!(bed.hosts(), ["node-a", "node-b"]);
    let out = run(bed.ssh("node-b").arg("hostname"));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "node-b");
}

#[test]
fn a_cut_link_fails_connections_within_the_connect_timeout_until_restored() {
    let Some(bed) = testbed::sshd() else { return };
    let Some(cut) = bed.cut_node_b() else { return };
    let start = Instant::now();
    let out = run(bed.ssh("node-b").arg("true"));
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("timed out"),
        "{out:?}"
    );
    assert!(took < CONNECT_TIMEOUT + SLACK, "failed after {took:?}");
    let _up = cut.restore();
    let out = run(bed.ssh("node-b").arg("true"));
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn a_link_cut_under_a_running_command_ends_ssh_within_the_keepalive_limit() {
    let Some(bed) = testbed::sshd() else { return };
    let Some(up) = bed.hold_node_b() else { return };
    // node-b shares this filesystem and pid space: the remote shell writes
    // its pid where this test can read it, and this test ends it, since
    // sshd on node-b never notices the cut.
    let dir = std::env::temp_dir().join(format!("pproc-testbed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pid_file = dir.join("remote.pid");
    let mut ssh = bed
        .ssh("node-b")
        .arg(format!("echo $$ > {} && exec sleep 60", pid_file.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let remote: u32 = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break pid;
        }
        if ssh.try_wait().unwrap().is_some() || Instant::now() >= deadline {
            let _ = ssh.kill();
            let out = ssh.wait_with_output().unwrap();
            std::fs::remove_dir_all(&dir).unwrap();
            panic!("the remote command did not start: {out:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    drop(up);
    let cut = bed.cut_node_b().unwrap();
    let start = Instant::now();
    let out = ssh.wait_with_output().unwrap();
    let took = start.elapsed();
    drop(cut.restore());
    let remote = nix::unistd::Pid::from_raw(i32::try_from(remote).unwrap());
    let _ = nix::sys::signal::kill(remote, nix::sys::signal::Signal::SIGKILL);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    // ServerAliveInterval 1 x ServerAliveCountMax 3.
    assert!(
        took < Duration::from_secs(3) + SLACK,
        "ssh ended {took:?} after the cut"
    );
}

#[test]
fn srun_runs_a_task_on_one_node() {
    let Some(bed) = testbed::slurm(false) else {
        return;
    };
    assert_eq!(bed.nodes(), ["localhost"]);
    let out = run(bed.srun().args(["-n1", "echo", "from slurm"]));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "from slurm");
}

#[test]
fn srun_reaches_both_nodes_of_two() {
    let Some(bed) = testbed::slurm(true) else {
        return;
    };
    assert_eq!(bed.nodes().len(), 2);
    let out = run(bed
        .srun()
        .args(["-N2", "-n2", "-l", "printenv", "SLURMD_NODENAME"]));
    assert!(out.status.success(), "{out:?}");
    let mut seen: Vec<String> = stdout(&out)
        .lines()
        .filter_map(|l| l.split_once(": ").map(|(_, n)| n.trim().to_owned()))
        .collect();
    seen.sort();
    assert_eq!(seen, bed.nodes());
}
