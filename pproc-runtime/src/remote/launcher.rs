//! How the agent gets onto a host: a command that runs the agent's argv
//! there with its standard input and output connected to the parent.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// How long starting an agent and hearing its hello may take, by default.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long either end of a link goes on without hearing from the other,
/// by default: generous, since a loaded host may be slow to answer, and a
/// short bound would call busy hosts lost.
const HOST_TIMEOUT: Duration = Duration::from_secs(30);

/// A way to run a command on another host with its standard input and
/// output connected to this process: ssh ([`Ssh`]), Slurm's `srun`
/// ([`Srun`]), or any command prefix ([`Prefix`]). A
/// [`Builder::launcher`](crate::Builder::launcher) starts its children
/// through one.
///
/// pproc starts one agent per host through it (the same program, from
/// the same path or from a copy: see [`Binary`]), and the agent starts the
/// children on its host. A launcher is known by its `Debug` form: two that print
/// alike share one agent.
pub trait Launcher: fmt::Debug + Send + Sync + 'static {
    /// The host, as errors name it ([`Error::HostLost`](crate::Error::HostLost)).
    fn host(&self) -> String;

    /// A command that runs `argv` on the host, its standard input and
    /// output connected to ours. pproc sets those two, and passes the
    /// environment the agent needs in `argv` (`env NAME=value program`).
    fn command(&self, argv: &[OsString]) -> Command;

    /// How long starting the agent and hearing from it may take before
    /// [`Error::Launch`](crate::Error::Launch).
    fn connect_timeout(&self) -> Duration {
        CONNECT_TIMEOUT
    }

    /// How long either end of the link goes on without hearing from the
    /// other (each says something every second): past it, the parent ends
    /// the host's children with [`Error::HostLost`](crate::Error::HostLost)
    /// and the agent stops them. A link that closes is noticed at once.
    fn host_timeout(&self) -> Duration {
        HOST_TIMEOUT
    }

    /// How the program gets to the host ([`Binary::SamePathOrCopy`] by
    /// default).
    fn binary(&self) -> Binary {
        Binary::SamePathOrCopy
    }

    /// Where on the host copies of the program are kept, by their content
    /// hash: `~/.cache/pproc` by default.
    fn cache_dir(&self) -> Option<PathBuf> {
        None
    }
}

/// How the program gets to another host, for its agent.
///
/// A copy is named by the SHA-256 of the program's bytes, in a cache
/// directory on the host ([`Launcher::cache_dir`]), and is written under a
/// temporary name, checked for its length and renamed: parents that copy
/// at once do not clash, a cut copy is never run, and later runs of the
/// same build reuse it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    /// The program at the path it has here: hosts that share a
    /// filesystem, or where it is installed alike.
    SamePath,
    /// A copy, always.
    Copy,
    /// The same path where the program is there and is this build (the
    /// agent's hello says), a copy otherwise.
    SamePathOrCopy,
}

/// The settings every launcher has.
#[derive(Clone, Debug)]
struct Common {
    /// How long connecting may take, and the link may be silent.
    timeout: Duration,
    silence: Duration,
    /// Where the program comes from on the host.
    binary: Binary,
    cache: Option<PathBuf>,
}

impl Default for Common {
    fn default() -> Self {
        Self {
            timeout: CONNECT_TIMEOUT,
            silence: HOST_TIMEOUT,
            binary: Binary::SamePathOrCopy,
            cache: None,
        }
    }
}

/// The setters of [`Common`], for a launcher's inherent impl.
macro_rules! common_settings {
    () => {
        /// How long starting the agent and hearing from it may take (30 s
        /// by default; see [`Launcher::connect_timeout`]).
        #[must_use]
        pub fn connect_timeout(mut self, timeout: Duration) -> Self {
            self.common.timeout = timeout;
            self
        }

        /// How long either end of the link goes on without hearing from
        /// the other (30 s by default; see [`Launcher::host_timeout`]).
        #[must_use]
        pub fn host_timeout(mut self, timeout: Duration) -> Self {
            self.common.silence = timeout;
            self
        }

        /// How the program gets to the host (see [`Binary`]).
        #[must_use]
        pub fn binary(mut self, binary: Binary) -> Self {
            self.common.binary = binary;
            self
        }

        /// Where on the host copies of the program are kept
        /// (`~/.cache/pproc` by default).
        #[must_use]
        pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
            self.common.cache = Some(dir.into());
            self
        }
    };
}

/// The [`Launcher`] methods that read [`Common`].
macro_rules! common_getters {
    () => {
        fn connect_timeout(&self) -> Duration {
            self.common.timeout
        }

        fn host_timeout(&self) -> Duration {
            self.common.silence
        }

        fn binary(&self) -> Binary {
            self.common.binary
        }

        fn cache_dir(&self) -> Option<PathBuf> {
            self.common.cache.clone()
        }
    };
}

/// Children on a host reached through OpenSSH's `ssh`, which must log in
/// without a prompt (keys, an agent; `BatchMode` is on).
///
/// The remote command runs in a POSIX shell: pproc quotes it. ssh's own
/// configuration applies (`~/.ssh/config`, or [`config`](Self::config)),
/// and options given with [`option`](Self::option) come before pproc's
/// defaults, so they win (ssh takes the first value of an option). The
/// defaults: `BatchMode`, a `ConnectTimeout` of the connect timeout, a
/// keep-alive every 5 s, and one multiplexed connection per host
/// (`ControlMaster=auto`, kept 5 s after its last use), so that copying
/// the program and starting the agent cost one handshake; turn that off
/// with `option("ControlPath=none")`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// use pproc::{Builder, Ssh};
///
/// let builder = Builder::new().launcher(
///     Ssh::new("node-b")
///         .port(2222)
///         .option("IdentityFile=~/.ssh/pproc")
///         .connect_timeout(Duration::from_secs(5)),
/// );
/// # let _ = builder;
/// ```
#[derive(Clone, Debug)]
pub struct Ssh {
    host: String,
    port: Option<u16>,
    config: Option<PathBuf>,
    options: Vec<String>,
    common: Common,
}

impl Ssh {
    /// The host, as ssh takes it: `name`, `user@name`, or an alias of the
    /// ssh configuration.
    pub fn new(host: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            port: None,
            config: None,
            options: Vec::new(),
            common: Common::default(),
        }
    }

    /// The port of the host's sshd (`-p`).
    #[must_use]
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// An ssh configuration file to use instead of the user's (`-F`).
    #[must_use]
    pub fn config(mut self, path: impl Into<PathBuf>) -> Self {
        self.config = Some(path.into());
        self
    }

    /// An ssh option, as `Name=value` (`-o`).
    #[must_use]
    pub fn option(mut self, option: impl Into<String>) -> Self {
        self.options.push(option.into());
        self
    }

    common_settings!();
}

impl Launcher for Ssh {
    fn host(&self) -> String {
        self.host.clone()
    }

    fn command(&self, argv: &[OsString]) -> Command {
        let mut command = Command::new("ssh");
        // No terminal, no X11 or agent forwarding: a byte pipe.
        command.args(["-T", "-x", "-a"]);
        if let Some(config) = &self.config {
            command.arg("-F").arg(config);
        }
        if let Some(port) = self.port {
            command.arg("-p").arg(port.to_string());
        }
        for option in &self.options {
            command.arg("-o").arg(option);
        }
        let timeout = self.common.timeout.as_secs().max(1);
        // One connection per host for this process: its first command
        // (a probe, or the agent) opens it, and the others (a copy, the
        // agent, an agent again after a loss) ride on it instead of
        // paying a handshake each. It outlives its last use by seconds.
        let mut control = std::env::temp_dir().into_os_string();
        control.push(format!("/pproc-ssh-{}-%C", std::process::id()));
        let mut path = OsString::from("ControlPath=");
        path.push(control);
        command
            .args(["-o", "BatchMode=yes"])
            .arg("-o")
            .arg(format!("ConnectTimeout={timeout}"))
            // A dead link is noticed in seconds, not never.
            .args(["-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"])
            .args(["-o", "ControlMaster=auto", "-o", "ControlPersist=5", "-o"])
            .arg(path)
            .arg(&self.host)
            .arg("--")
            .arg(shell_command(argv));
        command
    }

    common_getters!();
}

/// Children on a node of a Slurm allocation, through `srun` (always
/// `-N1 -n1 -u --quiet`: one task, unbuffered, so that a frame is not held
/// until a newline).
///
/// # Examples
///
/// ```
/// use pproc::{Builder, Srun};
///
/// let builder = Builder::new().launcher(Srun::new().node("n2").arg("--partition=debug"));
/// # let _ = builder;
/// ```
#[derive(Clone, Debug, Default)]
pub struct Srun {
    node: Option<String>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    common: Common,
}

impl Srun {
    /// On whichever node Slurm picks.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// On the node `name` (`-w`).
    #[must_use]
    pub fn node(mut self, name: impl Into<String>) -> Self {
        self.node = Some(name.into());
        self
    }

    /// One more argument for `srun`, before the command.
    #[must_use]
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// A variable in `srun`'s environment (`SLURM_CONF`, say), which Slurm
    /// passes on to the task.
    #[must_use]
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    common_settings!();
}

impl Launcher for Srun {
    fn host(&self) -> String {
        self.node.clone().unwrap_or_else(|| "srun".to_owned())
    }

    fn command(&self, argv: &[OsString]) -> Command {
        let mut command = Command::new("srun");
        command.args(["-N1", "-n1", "-u", "--quiet"]);
        if let Some(node) = &self.node {
            command.arg("-w").arg(node);
        }
        command.args(&self.args).args(argv);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    common_getters!();
}

/// Children through any command that runs the argv it is given with its
/// standard input and output connected: `kubectl exec -i pod --`,
/// `docker exec -i box`, `mpirun -np 1`, or `env` for this very host.
///
/// # Examples
///
/// ```
/// use pproc::{parallel, Builder, Prefix};
///
/// #[parallel]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// # fn main() -> pproc::Result<()> {
/// // `env` runs its argv here: the child runs under an agent all the same.
/// let builder = Builder::new().launcher(Prefix::new(["env"]).host("here"));
/// assert_eq!(builder.start(square::call(9))?.join()?, 81);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Prefix {
    argv: Vec<OsString>,
    host: Option<String>,
    common: Common,
}

impl Prefix {
    /// The prefix: a program and its first arguments.
    ///
    /// # Panics
    ///
    /// If `argv` is empty: a prefix needs a program.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let argv: Vec<OsString> = argv.into_iter().map(|a| a.as_ref().to_owned()).collect();
        assert!(!argv.is_empty(), "a launcher prefix needs a program");
        Self {
            argv,
            host: None,
            common: Common::default(),
        }
    }

    /// The name errors give the host (the prefix itself by default).
    #[must_use]
    pub fn host(mut self, name: impl Into<String>) -> Self {
        self.host = Some(name.into());
        self
    }

    common_settings!();
}

impl Launcher for Prefix {
    fn host(&self) -> String {
        self.host.clone().unwrap_or_else(|| {
            let words: Vec<_> = self.argv.iter().map(|a| a.to_string_lossy()).collect();
            words.join(" ")
        })
    }

    fn command(&self, argv: &[OsString]) -> Command {
        let mut command = Command::new(&self.argv[0]);
        command.args(&self.argv[1..]).args(argv);
        command
    }

    common_getters!();
}

/// `argv` as one command line for a POSIX shell, which runs it in its
/// place (`exec`).
fn shell_command(argv: &[OsString]) -> OsString {
    let mut line = b"exec".to_vec();
    for arg in argv {
        line.push(b' ');
        line.push(b'\'');
        for &byte in arg.as_bytes() {
            if byte == b'\'' {
                line.extend_from_slice(b"'\\''");
            } else {
                line.push(byte);
            }
        }
        line.push(b'\'');
    }
    <OsString as std::os::unix::ffi::OsStringExt>::from_vec(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shell_runs_the_quoted_argv_as_it_was() {
        let argv: Vec<OsString> = ["printf", "%s|", "it's", "a b", "$HOME", "\"q\"", ""]
            .into_iter()
            .map(OsString::from)
            .collect();
        let out = Command::new("sh")
            .arg("-c")
            .arg(shell_command(&argv))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "it's|a b|$HOME|\"q\"||"
        );
    }

    fn words(command: &Command) -> Vec<String> {
        command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn launchers_build_their_commands() {
        let agent = [OsString::from("env"), OsString::from("X=1")];
        let ssh = Ssh::new("node-b")
            .port(2222)
            .option("User=me")
            .command(&agent);
        assert_eq!(ssh.get_program(), "ssh");
        let said = words(&ssh);
        assert!(
            said.starts_with(&["-T", "-x", "-a", "-p", "2222", "-o", "User=me"].map(String::from))
        );
        assert_eq!(said[said.len() - 3..], ["node-b", "--", "exec 'env' 'X=1'"]);
        let srun = Srun::new().node("n2").command(&agent);
        assert_eq!(
            words(&srun),
            ["-N1", "-n1", "-u", "--quiet", "-w", "n2", "env", "X=1"]
        );
        let prefix = Prefix::new(["kubectl", "exec", "-i", "w0", "--"]);
        assert_eq!(Launcher::host(&prefix), "kubectl exec -i w0 --");
        assert_eq!(
            words(&prefix.command(&agent)),
            ["exec", "-i", "w0", "--", "env", "X=1"]
        );
    }
}
