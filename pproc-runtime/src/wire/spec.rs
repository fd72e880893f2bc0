//! The `PPROC_CHILD` variable: how a parent tells a re-executed program to
//! act as a child, and which role it plays.
//!
//! Its value is `"<fd> <parent pid> <fingerprint> <mode> <name>"`. The child
//! removes it before running user code, so processes it starts do not
//! inherit it. One definition serves both ends: the parent
//! [`render`](Spec::render)s it, the child [`parse`](Spec::parse)s it.

use std::os::fd::RawFd;

/// The environment variable that makes a program a child.
pub(crate) const ENV: &str = "PPROC_CHILD";

/// The descriptor at which a child finds its channel (or, in the
/// background, its listening socket).
pub(crate) const CHILD_FD: RawFd = 3;

/// The role a child plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Runs the registered function its name names, once, tied to its
    /// parent: its descriptor is its channel.
    Call,
    /// A reusable worker: runs the functions that `CALL` frames name, one
    /// after the other, until its parent closes the channel. With `log`,
    /// it writes its answers into the shared log at
    /// [`LOG_FD`](super::log::LOG_FD).
    Worker { log: bool },
    /// A manager's server process.
    Manager,
    /// In the background, detached from its parent: its descriptor is a
    /// listening socket, and it keeps its results for whoever connects.
    /// `streams` tells whether they are the values it sends or the one it
    /// returns.
    Background { streams: bool },
}

impl Mode {
    /// The name a built-in role's handle reports; `None` for roles that
    /// run a registered function.
    pub(crate) fn role_name(self) -> Option<&'static str> {
        match self {
            Self::Worker { .. } => Some("pproc::__worker"),
            Self::Manager => Some("pproc::__manager"),
            Self::Call | Self::Background { .. } => None,
        }
    }

    pub(crate) fn letter(self) -> char {
        match self {
            Self::Call => 'c',
            Self::Worker { log: false } => 'w',
            Self::Worker { log: true } => 'l',
            Self::Manager => 'm',
            Self::Background { streams: false } => 'r',
            Self::Background { streams: true } => 's',
        }
    }

    pub(crate) fn from_letter(letter: &str) -> Option<Self> {
        match letter {
            "c" => Some(Self::Call),
            "w" => Some(Self::Worker { log: false }),
            "l" => Some(Self::Worker { log: true }),
            "m" => Some(Self::Manager),
            "r" => Some(Self::Background { streams: false }),
            "s" => Some(Self::Background { streams: true }),
            _ => None,
        }
    }
}

/// The parsed `PPROC_CHILD` variable.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Spec<'a> {
    pub(crate) fd: RawFd,
    pub(crate) parent: i32,
    pub(crate) fingerprint: u64,
    pub(crate) mode: Mode,
    pub(crate) name: &'a str,
}

impl<'a> Spec<'a> {
    /// The `NAME=value` pair that a child is started with.
    pub(crate) fn render(&self) -> String {
        format!(
            "{ENV}={} {} {:016x} {} {}",
            self.fd,
            self.parent,
            self.fingerprint,
            self.mode.letter(),
            self.name
        )
    }

    /// Reads the variable's value; `None` if it is malformed.
    pub(crate) fn parse(value: &'a str) -> Option<Self> {
        let mut parts = value.splitn(5, ' ');
        Some(Self {
            fd: parts.next()?.parse().ok()?,
            parent: parts.next()?.parse().ok()?,
            fingerprint: u64::from_str_radix(parts.next()?, 16).ok()?,
            mode: Mode::from_letter(parts.next()?)?,
            name: parts.next()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_round_trip_names_with_colons() {
        let spec = Spec::parse("3 42 00000000000000ff c my_crate::m::add").unwrap();
        assert_eq!((spec.fd, spec.parent, spec.fingerprint), (3, 42, 255));
        assert_eq!(spec.mode, Mode::Call);
        assert_eq!(spec.name, "my_crate::m::add");
        let spec = Spec::parse("3 42 00000000000000ff s my_crate::m::add").unwrap();
        assert_eq!(spec.mode, Mode::Background { streams: true });
        for mode in [
            Mode::Call,
            Mode::Worker { log: false },
            Mode::Worker { log: true },
            Mode::Manager,
            Mode::Background { streams: false },
            Mode::Background { streams: true },
        ] {
            let spec = Spec {
                fd: CHILD_FD,
                parent: 7,
                fingerprint: u64::MAX,
                mode,
                name: "a::b",
            };
            let rendered = spec.render();
            let value = rendered.strip_prefix("PPROC_CHILD=").unwrap();
            assert_eq!(Spec::parse(value), Some(spec));
        }
        assert!(Spec::parse("3 42 00000000000000ff x name").is_none());
        assert!(Spec::parse("3 42 zz c name").is_none());
        assert!(Spec::parse("3 42").is_none());
    }
}
