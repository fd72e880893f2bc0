//! [`Bytes`], a byte buffer that crosses a channel as one block.

use std::borrow::{Borrow, BorrowMut};
use std::fmt;
use std::ops::{Deref, DerefMut};

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde::{Serialize, Serializer};

/// A byte buffer that is sent as one block: a `Vec<u8>` that serializes
/// with `serialize_bytes` and deserializes from a byte buffer.
///
/// serde treats a plain `Vec<u8>` as a sequence like any other, so it is
/// encoded and decoded one element at a time. A `Bytes` (or a `Vec<u8>`
/// field marked `#[serde(with = "serde_bytes")]`) is copied in one go
/// instead: over a pproc channel that is a `memcpy` at each end, and a
/// large one is written to the socket straight from the buffer you hand to
/// `send`. Use it for any byte payload larger than a few hundred bytes.
///
/// It derefs to `Vec<u8>`, so a `Bytes` is used as the vector it wraps, and
/// converts from and into one without copying.
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
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes(Vec<u8>);

impl Bytes {
    /// An empty buffer.
    #[must_use]
    pub const fn new() -> Self {
        Self(Vec::new())
    }

    /// An empty buffer with room for `capacity` bytes.
    #[must_use]
    pub fn with_capacity(capacity: usize) -> Self {
        Self(Vec::with_capacity(capacity))
    }

    /// The vector inside.
    #[must_use]
    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bytes")
            .field("len", &self.0.len())
            .finish_non_exhaustive()
    }
}

impl Deref for Bytes {
    type Target = Vec<u8>;

    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl DerefMut for Bytes {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl AsMut<[u8]> for Bytes {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl Borrow<[u8]> for Bytes {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl BorrowMut<[u8]> for Bytes {
    fn borrow_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
}

impl From<&[u8]> for Bytes {
    fn from(bytes: &[u8]) -> Self {
        Self(bytes.to_vec())
    }
}

impl<const N: usize> From<[u8; N]> for Bytes {
    fn from(bytes: [u8; N]) -> Self {
        Self(bytes.to_vec())
    }
}

impl From<Bytes> for Vec<u8> {
    fn from(bytes: Bytes) -> Self {
        bytes.0
    }
}

impl FromIterator<u8> for Bytes {
    fn from_iter<I: IntoIterator<Item = u8>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl Extend<u8> for Bytes {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

impl PartialEq<[u8]> for Bytes {
    fn eq(&self, other: &[u8]) -> bool {
        self.0 == other
    }
}

impl PartialEq<Vec<u8>> for Bytes {
    fn eq(&self, other: &Vec<u8>) -> bool {
        &self.0 == other
    }
}

impl<const N: usize> PartialEq<[u8; N]> for Bytes {
    fn eq(&self, other: &[u8; N]) -> bool {
        self.0 == other
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_byte_buf(BytesVisitor)
    }
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Bytes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte buffer")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
        Ok(Bytes(v.to_vec()))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
        Ok(Bytes(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Bytes, E> {
        Ok(Bytes(v.as_bytes().to_vec()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Bytes, E> {
        Ok(Bytes(v.into_bytes()))
    }

    /// Formats without a byte type (JSON, say) write bytes as a sequence.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
        // A hint is the peer's word: reserve no more than a page for it.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(byte) = seq.next_element()? {
            out.push(byte);
        }
        Ok(Bytes(out))
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
