//! [`Bytes`], a byte buffer that crosses a channel as one block.

use std::borrow::{Borrow, BorrowMut};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde::{Serialize, Serializer};

use super::codec;
use super::shm::Mapping;

/// A byte buffer that is sent as one block, and from 4 MiB on through
/// shared memory.
///
/// serde treats a plain `Vec<u8>` as a sequence like any other, so it is
/// encoded and decoded one element at a time. A `Bytes` (or a `Vec<u8>`
/// field marked `#[serde(with = "serde_bytes")]`) is copied in one go
/// instead: over a pproc channel that is a `memcpy` at each end, and a
/// large one is written to the socket straight from the buffer you hand to
/// `send`. Where one of 1 MiB or more comes through the socket (from a
/// host without shared memory, and `serde_bytes` buffers and `String`s
/// always), the receiver reads it straight into the vector the value
/// keeps: the kernel's copy is the only one. Use it for any byte payload
/// larger than a few hundred bytes.
///
/// A value that holds a buffer of 4 MiB or more crosses in shared memory:
/// the sender copies it once, and the socket carries only a descriptor. A
/// parent copies into a slab of memory it keeps for reuse and lends to the
/// child (see [`free_shared_memory`](crate::free_shared_memory)), so the
/// copy goes at `memcpy` speed; a child copies into a sealed `memfd` of
/// its own. A `Bytes` decoded from such a frame is a view of that memory,
/// not a copy ([`is_shared`](Self::is_shared)); writing to it makes the
/// bytes this process's own (page by page in a child, all at once in the
/// parent, whose slab others read), and a `Bytes` sent on unchanged, as
/// the whole of a value, goes out as the same memory, so a child that
/// passes large buffers along copies none of them. A receiver checks
/// every such descriptor (a memfd, sealed, of the announced size, within
/// the frame limit) before it reads a byte, and a parent checks that a
/// slab a child sends back is one it lent.
///
/// It derefs to `[u8]`; [`as_mut_vec`](Self::as_mut_vec) gives the vector
/// to grow or shrink, and it converts from a `Vec<u8>` without copying (and
/// into one without copying unless it is shared).
///
/// # Examples
///
/// ```
/// use pproc::{parallel, Bytes, Channel};
///
/// #[parallel]
/// fn reverse(ch: Channel<Bytes, Bytes>) {
///     while let Ok(mut block) = ch.recv() {
///         block.reverse();
///         ch.send(&block).unwrap();
///     }
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let h = reverse::start()?;
/// h.send(&Bytes::from(vec![1, 2, 3]))?;
/// let back: Vec<u8> = h.recv()?.into();
/// assert_eq!(back, [3, 2, 1]);
/// # Ok(())
/// # }
/// ```
pub struct Bytes(Repr);

/// Where a [`Bytes`]'s bytes live.
enum Repr {
    /// In a vector of its own.
    Owned(Vec<u8>),
    /// In the shared memory its frame arrived in: `len` bytes at `at`.
    Mapped {
        mapping: Arc<Mapping>,
        at: usize,
        len: usize,
    },
}

impl Bytes {
    /// An empty buffer.
    #[must_use]
    pub const fn new() -> Self {
        Self(Repr::Owned(Vec::new()))
    }

    /// An empty buffer with room for `capacity` bytes.
    #[must_use]
    pub fn with_capacity(capacity: usize) -> Self {
        Self(Repr::Owned(Vec::with_capacity(capacity)))
    }

    /// The bytes as a vector: the one inside, or a copy of the shared
    /// memory they arrived in.
    #[must_use]
    pub fn into_vec(self) -> Vec<u8> {
        match self.0 {
            Repr::Owned(vec) => vec,
            Repr::Mapped { .. } => codec::copy_of(&self),
        }
    }

    /// The bytes as a vector to change in place (to grow or shrink them):
    /// bytes that arrived in shared memory are copied into one first.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut bytes = pproc::Bytes::from(vec![1, 2]);
    /// bytes.as_mut_vec().push(3);
    /// assert_eq!(bytes, [1, 2, 3]);
    /// ```
    pub fn as_mut_vec(&mut self) -> &mut Vec<u8> {
        if let Repr::Mapped { .. } = self.0 {
            self.0 = Repr::Owned(codec::copy_of(self));
        }
        match &mut self.0 {
            Repr::Owned(vec) => vec,
            Repr::Mapped { .. } => unreachable!("copied above"),
        }
    }

    /// Whether the bytes are a view of the shared memory they arrived in,
    /// not a copy: a frame with a buffer of 4 MiB or more crosses a
    /// channel that way (see the type's documentation).
    #[must_use]
    pub fn is_shared(&self) -> bool {
        matches!(self.0, Repr::Mapped { .. })
    }
}

impl Default for Bytes {
    fn default() -> Self {
        Self::new()
    }
}

impl Clone for Bytes {
    /// A copy in a vector of its own, as a vector's clone is.
    fn clone(&self) -> Self {
        Self(Repr::Owned(self.to_vec()))
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bytes")
            .field("len", &self.len())
            .field("shared", &self.is_shared())
            .finish_non_exhaustive()
    }
}

impl Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            Repr::Owned(vec) => vec,
            Repr::Mapped { mapping, at, len } => &mapping.bytes()[*at..*at + *len],
        }
    }
}

impl DerefMut for Bytes {
    /// The bytes, to change in place. Bytes that arrived in shared memory
    /// become this process's own as they are written: page by page, or,
    /// where they are a slab this process lent (a buffer a child sent
    /// back), copied into a vector first.
    fn deref_mut(&mut self) -> &mut [u8] {
        if let Repr::Mapped { mapping, .. } = &self.0
            && !mapping.writable()
        {
            // Memory others read too: the bytes become a vector first.
            return self.as_mut_vec();
        }
        match &mut self.0 {
            Repr::Owned(vec) => vec,
            // SAFETY: this `Bytes` is the only owner of its range of the
            // mapping (a clone copies), and `&mut self` is borrowed for as
            // long as the slice lives.
            Repr::Mapped { mapping, at, len } => unsafe { mapping.slice_mut(*at, *len) },
        }
    }
}

impl PartialEq for Bytes {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Bytes {}

impl PartialOrd for Bytes {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Bytes {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (**self).cmp(&**other)
    }
}

impl Hash for Bytes {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (**self).hash(state);
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl AsMut<[u8]> for Bytes {
    fn as_mut(&mut self) -> &mut [u8] {
        self
    }
}

impl Borrow<[u8]> for Bytes {
    fn borrow(&self) -> &[u8] {
        self
    }
}

impl BorrowMut<[u8]> for Bytes {
    fn borrow_mut(&mut self) -> &mut [u8] {
        self
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(bytes: Vec<u8>) -> Self {
        Self(Repr::Owned(bytes))
    }
}

impl From<&[u8]> for Bytes {
    fn from(bytes: &[u8]) -> Self {
        Self::from(bytes.to_vec())
    }
}

impl<const N: usize> From<[u8; N]> for Bytes {
    fn from(bytes: [u8; N]) -> Self {
        Self::from(bytes.to_vec())
    }
}

impl From<Bytes> for Vec<u8> {
    fn from(bytes: Bytes) -> Self {
        bytes.into_vec()
    }
}

impl FromIterator<u8> for Bytes {
    fn from_iter<I: IntoIterator<Item = u8>>(iter: I) -> Self {
        Self::from(iter.into_iter().collect::<Vec<u8>>())
    }
}

impl Extend<u8> for Bytes {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, iter: I) {
        self.as_mut_vec().extend(iter);
    }
}

impl PartialEq<[u8]> for Bytes {
    fn eq(&self, other: &[u8]) -> bool {
        **self == *other
    }
}

impl PartialEq<Vec<u8>> for Bytes {
    fn eq(&self, other: &Vec<u8>) -> bool {
        **self == **other
    }
}

impl<const N: usize> PartialEq<[u8; N]> for Bytes {
    fn eq(&self, other: &[u8; N]) -> bool {
        **self == *other
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        codec::mark_bytes(self);
        serializer.serialize_bytes(self)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Asked for as borrowed bytes, so that bytes in the shared memory
        // of the frame being decoded are kept where they are.
        deserializer.deserialize_bytes(BytesVisitor)
    }
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Bytes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte buffer")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
        if let Some((mapping, at)) = Mapping::decoded(v) {
            return Ok(Bytes(Repr::Mapped {
                mapping,
                at,
                len: v.len(),
            }));
        }
        Ok(Bytes::from(codec::copy_of(v)))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
        Ok(Bytes::from(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Bytes, E> {
        Ok(Bytes::from(v.as_bytes()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Bytes, E> {
        Ok(Bytes::from(v.into_bytes()))
    }

    /// Formats without a byte type (JSON, say) write bytes as a sequence.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
        // A hint is the peer's word: reserve no more than a page for it.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(byte) = seq.next_element()? {
            out.push(byte);
        }
        Ok(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::codec::{decode, encode};

    #[test]
    fn bytes_are_a_length_and_the_bytes() {
        let bytes = Bytes::from(vec![1, 2, 44]);
        let encoded = encode(&bytes).unwrap();
        assert_eq!(encoded, [3, 1, 2, 44]);
        assert_eq!(decode::<Bytes>(&encoded).unwrap(), bytes);
        // The same bytes as a `Vec<u8>`, which bincode writes element by
        // element to the same effect.
        assert_eq!(decode::<Vec<u8>>(&encoded).unwrap(), *bytes);
        assert_eq!(
            decode::<Bytes>(&encode(&vec![7u8; 9]).unwrap()).unwrap(),
            [7; 9]
        );
    }

    #[test]
    fn a_lying_length_is_an_error() {
        let mut lie = vec![253];
        lie.extend_from_slice(&(1u64 << 40).to_le_bytes());
        lie.extend_from_slice(b"abc");
        assert!(decode::<Bytes>(&lie).is_err());
        assert!(decode::<Bytes>(&[]).is_err());
    }
}
