//! Getting the program onto a host that does not have it: a copy named by
//! the SHA-256 of its bytes, in a cache directory there, written under a
//! temporary name, checked for its length and renamed (see
//! [`Binary`](super::Binary)).
//!
//! Both steps run through the host's launcher, as `sh -c` scripts: a
//! probe that says where the copy is and whether it is there, then, on a
//! miss, a copy fed on the launcher's standard input.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::launcher::Launcher;
use crate::error::{Error, Result};

/// Says `have PATH` or `miss PATH`, PATH the copy's absolute path on the
/// host: `$1` is the cache directory (empty for the default), `$2` the
/// copy's name.
const PROBE: &str = r#"d=${1:-$HOME/.cache/pproc}; mkdir -p "$d" && cd "$d" && d=$(pwd -P) || exit 1; if test -x "$d/$2"; then echo "have $d/$2"; else echo "miss $d/$2"; fi"#;

/// Writes its standard input to `$1` by way of a temporary name, once it
/// holds `$2` bytes.
const COPY: &str = r#"t="$1.part.$$"; if cat > "$t" && test "$(wc -c < "$t")" -eq "$2" && chmod 755 "$t" && mv -f "$t" "$1"; then exit 0; fi; rm -f "$t"; exit 1"#;

/// This program's content hash (hex) and length, computed once.
fn fingerprint(exe: &Path) -> Result<&'static (String, u64)> {
    static HASH: OnceLock<(String, u64)> = OnceLock::new();
    if let Some(hash) = HASH.get() {
        return Ok(hash);
    }
    let mut file = std::fs::File::open(exe).map_err(Error::Io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(Error::Io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    let mut hex = String::with_capacity(64);
    for byte in hasher.finalize() {
        let _ = write!(hex, "{byte:02x}");
    }
    Ok(HASH.get_or_init(|| (hex, len)))
}

/// Puts a copy of this program (at `exe` here) on `launcher`'s host, if it
/// is not there yet; returns its path there.
pub(super) fn place(launcher: &dyn Launcher, exe: &Path) -> Result<OsString> {
    let host = launcher.host();
    let failed = |message: String| Error::Launch {
        host: host.clone(),
        message,
    };
    let (hash, len) = fingerprint(exe)?;
    let dir = launcher.cache_dir().map(OsString::from).unwrap_or_default();
    let probe = [
        OsString::from("sh"),
        OsString::from("-c"),
        OsString::from(PROBE),
        OsString::from("sh"),
        dir,
        OsString::from(hash),
    ];
    let (status, said) = run(launcher, &probe, None)?;
    let line = said.lines().next().unwrap_or_default().to_owned();
    let (found, path) = match line.split_once(' ') {
        Some(("have", path)) if status.success() => (true, path.to_owned()),
        Some(("miss", path)) if status.success() => (false, path.to_owned()),
        _ => {
            return Err(failed(format!(
                "cannot find the cache directory on the host ({status}): {said:?}"
            )));
        }
    };
    if !found {
        let copy = [
            OsString::from("sh"),
            OsString::from("-c"),
            OsString::from(COPY),
            OsString::from("sh"),
            OsString::from(&path),
            OsString::from(len.to_string()),
        ];
        let program = std::fs::File::open(exe).map_err(Error::Io)?;
        let (status, said) = run(launcher, &copy, Some(program))?;
        if !status.success() {
            return Err(failed(format!(
                "cannot copy the program to `{path}` ({status}): {said:?}"
            )));
        }
    }
    Ok(OsString::from(path))
}

/// Runs `argv` on the host with `input` on its standard input (or none),
/// within the launcher's connect timeout; returns how it exited and what
/// it printed (standard output, then standard error).
fn run(
    launcher: &dyn Launcher,
    argv: &[OsString],
    input: Option<std::fs::File>,
) -> Result<(ExitStatus, String)> {
    let host = launcher.host();
    let mut command = launcher.command(argv);
    command
        .stdin(input.map_or_else(Stdio::null, Stdio::from))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command.spawn().map_err(|err| Error::Launch {
        host: host.clone(),
        message: format!("cannot run `{program}`: {err}"),
    })?;
    drop(command);
    let (Some(mut out), Some(mut err)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(Error::Io(std::io::Error::other("no pipes to the launcher")));
    };
    // Read on threads, so that a full pipe does not stall the command.
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        let _ = err.read_to_string(&mut text);
        text
    });
    let until = Instant::now() + launcher.connect_timeout();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(Error::Io)? {
            break status;
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Launch {
                host,
                message: format!("`{program}` did not finish in time"),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let said = reader.join().unwrap_or_default();
    Ok((status, said))
}
