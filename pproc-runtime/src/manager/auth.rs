//! The challenge-response handshake that opens every connection to a
//! manager: both sides prove they know the key (HMAC-SHA256 of the other's
//! random challenge, compared in constant time).
//!
//! The handshake reads and writes fixed-size messages only, so nothing
//! larger than a challenge is allocated before a peer has proved it knows
//! the key; frames, whose size the peer chooses, come after. The client's
//! half blocks ([`connect_handshake`]); the server runs its half without
//! blocking, from [`hello`] and [`check_answer`].

use std::io::{self, Read, Write};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::transport::{Address, Stream};
use crate::error::{Error, Result};

/// Opens every handshake: identifies the protocol and its version.
const MAGIC: &[u8; 8] = b"PPROCMGR";
const VERSION: u8 = 2;
pub(crate) const CHALLENGE: usize = 32;
const TAG: usize = 32;
/// The server's greeting's length.
const HELLO: usize = MAGIC.len() + 1 + CHALLENGE;
/// The client's answer's length: its tag and its own challenge.
pub(crate) const ANSWER: usize = TAG + CHALLENGE;

/// 32 random bytes from the kernel.
pub(crate) fn random() -> io::Result<[u8; CHALLENGE]> {
    let mut bytes = [0; CHALLENGE];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: getrandom writes at most the given length into the buffer.
        let n = unsafe {
            libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0)
        };
        if let Ok(n) = usize::try_from(n) {
            filled += n;
        } else {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
    Ok(bytes)
}

fn mac(key: &[u8], role: &[u8], challenge: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(role);
    mac.update(challenge);
    mac
}

/// The server's greeting: the protocol, its version and a challenge.
pub(crate) fn hello(challenge: &[u8; CHALLENGE]) -> [u8; HELLO] {
    let mut hello = [0; HELLO];
    hello[..8].copy_from_slice(MAGIC);
    hello[8] = VERSION;
    hello[9..].copy_from_slice(challenge);
    hello
}

/// Checks a client's answer to `challenge` (its tag, then its own
/// challenge), comparing in constant time. If it knows the key: the reply
/// that accepts it and proves the server knows it too.
pub(crate) fn check_answer(key: &[u8], challenge: &[u8], answer: &[u8]) -> Option<Vec<u8>> {
    let (tag, theirs) = answer.split_at(TAG);
    mac(key, b"pproc client", challenge)
        .verify_slice(tag)
        .ok()?;
    let proof = mac(key, b"pproc server", theirs).finalize().into_bytes();
    let mut reply = Vec::with_capacity(1 + TAG);
    reply.push(1);
    reply.extend_from_slice(&proof);
    Some(reply)
}

/// The reply to a client that does not know the key.
pub(crate) fn refusal() -> Vec<u8> {
    vec![0]
}

/// The client's side of the handshake.
pub(crate) fn connect_handshake(stream: &mut Stream, key: &[u8], address: &Address) -> Result<()> {
    let auth = |message: String| Error::Authentication { message };
    let mut hello = [0; HELLO];
    stream.read_exact(&mut hello).map_err(Error::Io)?;
    if &hello[..8] != MAGIC {
        return Err(auth(format!("{address} is not a pproc manager")));
    }
    if hello[8] != VERSION {
        return Err(auth(format!(
            "the manager at {address} speaks version {} of the protocol, this program {VERSION}",
            hello[8]
        )));
    }
    let ours = random().map_err(Error::Io)?;
    let tag = mac(key, b"pproc client", &hello[9..])
        .finalize()
        .into_bytes();
    let mut answer = Vec::with_capacity(TAG + CHALLENGE);
    answer.extend_from_slice(&tag);
    answer.extend_from_slice(&ours);
    stream.write_all(&answer).map_err(Error::Io)?;
    let mut status = [0; 1];
    match stream.read_exact(&mut status) {
        Ok(()) if status[0] == 1 => {}
        Ok(()) => return Err(auth(format!("the manager at {address} refused the key"))),
        // Closed without a verdict: a manager whose handshake table is
        // full of others' connections lets the oldest go.
        Err(err) => {
            return Err(Error::Io(io::Error::new(
                err.kind(),
                format!(
                    "the manager at {address} closed the connection during the handshake (busy, or the answer came too late): {err}"
                ),
            )));
        }
    }
    let mut proof = [0; TAG];
    stream.read_exact(&mut proof).map_err(Error::Io)?;
    if mac(key, b"pproc server", &ours)
        .verify_slice(&proof)
        .is_err()
    {
        return Err(auth(format!(
            "the manager at {address} does not know the key: it may be an impostor"
        )));
    }
    Ok(())
}
