//! Real sshd and Slurm daemons on this machine, for tests of children on
//! other hosts: [`sshd`] and [`slurm`] start them once per process through
//! `ci/scaleout/setup-sshd.sh` and `ci/scaleout/setup-slurm.sh`, and return
//! `None` (after one `skipped: …` line on stderr) where the software is not
//! installed (`bash ci/scaleout/install.sh` installs it).
//!
//! The daemons keep running after the tests, so the next test binary finds
//! them up; `bash ci/scaleout/setup-sshd.sh --stop` and
//! `bash ci/scaleout/setup-slurm.sh --stop` end them. Both scripts take a
//! file lock, so any number of threads and test binaries may call these at
//! once. State lives under `$PPROC_SCALEOUT_DIR`, by default
//! `${TMPDIR:-/tmp}/pproc-scaleout`.
//!
//! ```no_run
//! let Some(bed) = pproc_workspace::testbed::sshd() else { return };
//! let out = bed.ssh("node-a").arg("hostname").output().unwrap();
//! assert!(out.status.success());
//! ```

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The second ssh host's network namespace and the veth end inside it, as
/// `setup-sshd.sh` names them.
const NODE_B_NETNS: &str = "pproc-b";
const NODE_B_VETH: &str = "pproc-vb";
/// The veth end in this namespace: it is up exactly when the link carries
/// packets again.
const NODE_B_PEER: &str = "pproc-va";

/// The setup scripts' exit status when software is missing.
const MISSING: i32 = 3;
/// Their exit status when a second host needs namespaces that are not
/// possible here.
const NO_NAMESPACES: i32 = 4;

/// A private OpenSSH server: host `node-a` on loopback and, where
/// namespaces are allowed (root), host `node-b` in a network and UTS
/// namespace of its own, with its own address and hostname. Both share
/// this machine's filesystem and pids, like a cluster with a shared
/// filesystem. Log in with `ssh -F` [`config`](Sshd::config) (or
/// [`Sshd::ssh`]): keys, user and timeouts are set there, and the remote
/// shell reads no rc files.
#[derive(Clone, Debug)]
pub struct Sshd {
    config: PathBuf,
    hosts: Vec<String>,
    /// Why there is no node-b, when there is none.
    no_node_b: Option<String>,
    /// Held shared while node-b is in use, exclusively while it is cut.
    link_lock: PathBuf,
}

/// Starts the private sshd (once per process; later calls reuse it) with
/// node-b where namespaces are allowed, or returns `None` after printing
/// one line to stderr where sshd or ssh is not installed.
///
/// # Panics
///
/// If the software is there but the daemons do not start: the message
/// quotes the setup script.
#[must_use]
pub fn sshd() -> Option<Sshd> {
    static SSHD: OnceLock<Result<Sshd, String>> = OnceLock::new();
    match SSHD.get_or_init(start_sshd) {
        Ok(bed) => Some(bed.clone()),
        Err(reason) => skip(reason),
    }
}

fn start_sshd() -> Result<Sshd, String> {
    let state = base_dir().join("sshd");
    std::fs::create_dir_all(&state)
        .unwrap_or_else(|e| panic!("cannot make {}: {e}", state.display()));
    let link_lock = state.join("node-b.lock");
    // The script brings a cut link back up: never run it during a cut.
    let hold = lock(&link_lock, false);
    let mut no_node_b = None;
    let mut out = setup("setup-sshd.sh", &["--netns"]);
    if out.status.code() == Some(NO_NAMESPACES) {
        no_node_b = Some(reason(&out));
        out = setup("setup-sshd.sh", &[]);
    }
    drop(hold);
    let config = PathBuf::from(checked("setup-sshd.sh", &out, "ssh_config: ")?);
    let mut hosts = vec!["node-a".to_owned()];
    match &no_node_b {
        None => hosts.push("node-b".to_owned()),
        Some(why) => note(&format!("no node-b here: {why}")),
    }
    Ok(Sshd {
        config,
        hosts,
        no_node_b,
        link_lock,
    })
}

impl Sshd {
    /// The `ssh_config` file to pass to `ssh -F`: it names `node-a` and
    /// `node-b` and sets the user, the key, `BatchMode`, no host key
    /// checks, `ConnectTimeout 2` and `ServerAliveInterval 1` with
    /// `ServerAliveCountMax 3`.
    #[must_use]
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// The hosts that are up: `node-a`, then `node-b` where namespaces are
    /// allowed.
    #[must_use]
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    /// Whether `node-b` is up, and so can be cut.
    #[must_use]
    pub fn has_node_b(&self) -> bool {
        self.no_node_b.is_none()
    }

    /// `ssh -F config host`: add the remote command with `arg`.
    #[must_use]
    pub fn ssh(&self, host: &str) -> Command {
        let mut ssh = Command::new("ssh");
        ssh.arg("-F").arg(&self.config).arg(host);
        ssh
    }

    /// Keeps node-b's link up while the guard lives: a
    /// [`cut_node_b`](Sshd::cut_node_b) in any thread or process waits for
    /// it. Tests that use node-b hold one, since a test elsewhere may cut
    /// it; a thread that holds one must not cut (it would wait for
    /// itself).
    /// `None` (after one `skipped: …` line on stderr) where there is no
    /// node-b.
    ///
    /// # Panics
    ///
    /// If the lock file cannot be opened or locked.
    #[must_use]
    pub fn hold_node_b(&self) -> Option<LinkHold> {
        if let Some(why) = &self.no_node_b {
            return skip(&format!("no node-b here: {why}"));
        }
        Some(self.hold())
    }

    fn hold(&self) -> LinkHold {
        let lock = lock(&self.link_lock, false);
        // Every cut is restored before its lock goes, unless its process
        // was killed: a link still down now is such a cut.
        if !link_is_up() {
            set_link("up").unwrap_or_else(|e| panic!("cannot restore node-b: {e}"));
        }
        LinkHold { _lock: lock }
    }

    /// Cuts node-b's link (its veth end goes down): connections to it time
    /// out, and open ones see no more packets, until
    /// [`LinkCut::restore`] or the guard's drop. Waits until no other test
    /// holds or cuts node-b. `None` (after one `skipped: …` line on
    /// stderr) where there is no node-b.
    ///
    /// # Panics
    ///
    /// If the lock cannot be taken or `ip` fails.
    #[must_use]
    pub fn cut_node_b(&self) -> Option<LinkCut> {
        if let Some(why) = &self.no_node_b {
            return skip(&format!("no node-b here: {why}"));
        }
        let lock = lock(&self.link_lock, true);
        set_link("down").unwrap_or_else(|e| panic!("cannot cut node-b: {e}"));
        Some(LinkCut {
            lock: Some(lock),
            sshd: self.clone(),
        })
    }
}

/// Keeps node-b's link up while it lives (see [`Sshd::hold_node_b`]).
#[derive(Debug)]
pub struct LinkHold {
    _lock: File,
}

/// Node-b's link, cut until [`restore`](LinkCut::restore) or drop (see
/// [`Sshd::cut_node_b`]).
#[derive(Debug)]
pub struct LinkCut {
    /// The exclusive lock; `None` once restored.
    lock: Option<File>,
    sshd: Sshd,
}

impl LinkCut {
    /// Brings the link back up, waits (at most 5 s) until it carries
    /// packets again, and returns a hold that keeps it up: another test
    /// may cut it as soon as this cut's lock goes.
    ///
    /// # Panics
    ///
    /// If `ip` fails or the link does not come up.
    #[must_use = "without the hold another test may cut the link again at once"]
    pub fn restore(mut self) -> LinkHold {
        set_link("up").unwrap_or_else(|e| panic!("cannot restore node-b: {e}"));
        drop(self.lock.take());
        self.sshd.hold()
    }
}

impl Drop for LinkCut {
    fn drop(&mut self) {
        if self.lock.is_some()
            && let Err(e) = set_link("up")
        {
            note(&format!("cannot restore node-b: {e}"));
        }
    }
}

/// `ip -n pproc-b link set pproc-vb up|down`; after `up`, waits until this
/// end of the pair has carrier again.
fn set_link(state: &str) -> Result<(), String> {
    let out = Command::new("ip")
        .args(["-n", NODE_B_NETNS, "link", "set", NODE_B_VETH, state])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip link set {state}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    if state == "up" {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !link_is_up() {
            if Instant::now() >= deadline {
                return Err(format!(
                    "{NODE_B_PEER} is not up 5 s after `ip link set up`"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(())
}

/// Whether this end of node-b's veth pair has carrier, which it has when
/// both ends are up.
fn link_is_up() -> bool {
    std::fs::read_to_string(format!("/sys/class/net/{NODE_B_PEER}/operstate"))
        .is_ok_and(|s| s.trim() == "up")
}

/// A private Slurm cluster: `munged`, `slurmctld` and one `slurmd` per
/// node, with every file in its own state directory. Run `srun`, `salloc`
/// or `sinfo` through [`Slurm::command`], which points them at this
/// cluster.
#[derive(Clone, Debug)]
pub struct Slurm {
    conf: PathBuf,
    nodes: Vec<String>,
}

/// Starts a private Slurm cluster (once per process for each kind; later
/// calls reuse it), or returns `None` after printing one line to stderr
/// where Slurm or munge is not installed. One node is `localhost`. Two
/// nodes are `node-a` and `node-b`, the second in a network and UTS
/// namespace of its own where namespaces are allowed, or else `n1` and
/// `n2`, two `slurmd` on this host. The one-node and the two-node
/// clusters are separate and can run side by side.
///
/// # Panics
///
/// If the software is there but the daemons do not start: the message
/// quotes the setup script.
#[must_use]
pub fn slurm(two_nodes: bool) -> Option<Slurm> {
    static ONE: OnceLock<Result<Slurm, String>> = OnceLock::new();
    static TWO: OnceLock<Result<Slurm, String>> = OnceLock::new();
    let bed = if two_nodes {
        TWO.get_or_init(|| start_slurm(true))
    } else {
        ONE.get_or_init(|| start_slurm(false))
    };
    match bed {
        Ok(bed) => Some(bed.clone()),
        Err(reason) => skip(reason),
    }
}

fn start_slurm(two_nodes: bool) -> Result<Slurm, String> {
    let (out, nodes) = if two_nodes {
        let out = setup("setup-slurm.sh", &["--two"]);
        if out.status.code() == Some(NO_NAMESPACES) {
            note(&format!(
                "two slurmd on this host instead: {}",
                reason(&out)
            ));
            (
                setup("setup-slurm.sh", &["--multi"]),
                ["n1", "n2"].as_slice(),
            )
        } else {
            (out, ["node-a", "node-b"].as_slice())
        }
    } else {
        (setup("setup-slurm.sh", &[]), ["localhost"].as_slice())
    };
    let conf = PathBuf::from(checked("setup-slurm.sh", &out, "SLURM_CONF=")?);
    Ok(Slurm {
        conf,
        nodes: nodes.iter().map(|&n| n.to_owned()).collect(),
    })
}

impl Slurm {
    /// The cluster's `slurm.conf`, which `SLURM_CONF` names.
    #[must_use]
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// The node names, as `srun -w` takes them.
    #[must_use]
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// `program` (`srun`, `salloc`, `sbatch`, `sinfo`, …) with `SLURM_CONF`
    /// set to this cluster and no `SLURM_*` variable inherited from a job
    /// the tests may run inside.
    #[must_use]
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        for (key, _) in std::env::vars_os() {
            if key.as_encoded_bytes().starts_with(b"SLURM_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("SLURM_CONF", &self.conf);
        cmd
    }

    /// [`command`](Slurm::command)`("srun")`.
    #[must_use]
    pub fn srun(&self) -> Command {
        self.command("srun")
    }

    /// [`command`](Slurm::command)`("salloc")`.
    #[must_use]
    pub fn salloc(&self) -> Command {
        self.command("salloc")
    }
}

/// `${PPROC_SCALEOUT_DIR:-${TMPDIR:-/tmp}/pproc-scaleout}`, as the scripts
/// compute it; passed to them so that both sides agree.
fn base_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PPROC_SCALEOUT_DIR") {
        return dir.into();
    }
    std::env::var_os("TMPDIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from("/tmp"), PathBuf::from)
        .join("pproc-scaleout")
}

/// Runs `bash ci/scaleout/<script> <args>` and returns what it did.
fn setup(script: &str, args: &[&str]) -> Output {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("ci/scaleout")
        .join(script);
    Command::new("bash")
        .arg(&path)
        .args(args)
        .env("PPROC_SCALEOUT_DIR", base_dir())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run bash {}: {e}", path.display()))
}

/// The value of the script's `prefix` line when it succeeded; `Err` with the
/// reason when software is missing.
///
/// # Panics
///
/// If the script failed otherwise, or printed no such line.
fn checked(script: &str, out: &Output, prefix: &str) -> Result<String, String> {
    if out.status.code() == Some(MISSING) {
        return Err(reason(out));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let found = stdout.lines().find_map(|l| l.strip_prefix(prefix));
    match found {
        Some(value) if out.status.success() => Ok(value.to_owned()),
        _ => panic!(
            "{script} failed ({}): {}\n{stdout}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}

/// The script's last line on stderr, without its name.
fn reason(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
    let last = last.split_once(".sh: ").map_or(last, |(_, why)| why);
    last.to_owned()
}

/// Prints `skipped: why` and returns `None`.
fn skip<T>(why: &str) -> Option<T> {
    note(&format!("skipped: {why}"));
    None
}

/// One line on the process's stderr, past the test harness's capture, so
/// that a skip shows in CI logs.
fn note(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Opens `path` and locks it, shared or exclusive (flock, so across
/// processes too); the lock goes with the file.
fn lock(path: &Path, exclusive: bool) -> File {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let locked = if exclusive {
        file.lock()
    } else {
        file.lock_shared()
    };
    locked.unwrap_or_else(|e| panic!("cannot lock {}: {e}", path.display()));
    file
}
