//! The one frame codec: what every pproc connection (a child's channel, a
//! pool worker's, a background call's, a manager's) sends and receives.
//!
//! A frame is a little-endian `u32` body length, then the body. Bodies
//! carry bincode values, decoded by [`decode`], which never trusts a length
//! written inside the bytes it was given: a string or a byte buffer is
//! taken from the bytes that are there (a length that claims more is an
//! error, not an allocation), the sequences and maps in a body together
//! reserve room ahead for at most as many elements as the body has bytes
//! (more elements grow them as they are decoded), and values nest at most
//! [`MAX_DEPTH`] levels deep. So decoding a frame of `n` bytes allocates
//! memory in proportion to `n`, whatever the frame says, and a body of the
//! wrong type is an [`Error::Codec`] that names the type that was expected.

use std::cell::Cell;
use std::fmt;
use std::io::{self, Read, Write};
use std::marker::PhantomData;

use bincode::enc::write::Writer;
use bincode::error::EncodeError;
use serde::Serialize;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

use crate::error::{Error, Result};

/// Bytes before a frame's body: its length.
pub(crate) const HEADER: usize = 4;

/// How deep values may nest inside one body. Only a recursive type (a
/// tree, a linked list) can nest without bound; deeper than this, the body
/// is refused rather than decoded on a stack it could exhaust.
pub(crate) const MAX_DEPTH: usize = 256;

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Serializes `value` with the wire configuration.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    bincode::serde::encode_to_vec(value, config()).map_err(Error::codec)
}

/// A byte run this long or longer is not copied by [`encode_gathered`]: it
/// is written to the socket from the value itself.
pub(crate) const LONG_RUN: usize = 64 * 1024;

/// A byte run that [`encode_gathered`] left out of an encoding: `len` bytes
/// at offset `at` of the whole encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hole {
    pub(crate) at: usize,
    pub(crate) len: usize,
    /// Whether the run is a [`Bytes`](crate::Bytes)'s, which its receiver
    /// keeps as a view of shared memory (see [`mark_bytes`]).
    pub(crate) bytes: bool,
}

thread_local! {
    /// The address of the run a [`Bytes`](crate::Bytes) is serializing.
    static BYTES_AT: Cell<usize> = const { Cell::new(0) };
}

/// Says that `bytes`, about to be serialized, are a
/// [`Bytes`](crate::Bytes)'s: a run of them may cross in shared memory,
/// where the receiving `Bytes` borrows it. Other runs (a `String`, a
/// `serde_bytes` buffer) would be copied out of it again, which costs more
/// than the socket.
pub(crate) fn mark_bytes(bytes: &[u8]) {
    BYTES_AT.set(bytes.as_ptr() as usize);
}

/// Whether `run` is the one [`mark_bytes`] named; forgets it.
fn marked(run: &[u8]) -> bool {
    BYTES_AT.replace(0) == run.as_ptr() as usize
}

/// Serializes `value` onto the end of `out`, leaving out each byte run of
/// [`LONG_RUN`] bytes or more (the bytes of a `serialize_bytes` or a
/// `serialize_str`); `holes` gets where each was. Returns the length of
/// the whole encoding, runs included: [`replay`] hands them over.
pub(crate) fn encode_gathered<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
    holes: &mut Vec<Hole>,
) -> Result<usize> {
    let mut gather = Gather { out, holes, at: 0 };
    bincode::serde::encode_into_writer(value, &mut gather, config()).map_err(Error::codec)?;
    Ok(gather.at)
}

/// Serializes `value` onto the end of `out`, as [`encode_gathered`] does
/// for a value without long byte runs: false if it has one, with `out`
/// holding part of the encoding. The short way for small values: nothing
/// is counted or recorded as the bytes go.
#[inline]
pub(crate) fn encode_plain<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<bool> {
    let mut plain = Plain { out, long: false };
    match bincode::serde::encode_into_writer(value, &mut plain, config()) {
        Ok(()) => Ok(true),
        Err(_) if plain.long => Ok(false),
        Err(err) => Err(Error::codec(err)),
    }
}

/// Serializes `value` a second time, handing `put` each run that
/// [`encode_gathered`] left out, with its index in `holes`. A value that
/// does not serialize the same way again is an [`Error::Codec`]; an error
/// of `put` ends the encoding and is returned as it is.
pub(crate) fn replay<T: Serialize + ?Sized>(
    value: &T,
    holes: &[Hole],
    len: usize,
    put: impl FnMut(usize, &[u8]) -> Result<()>,
) -> Result<()> {
    let mut replay = Replay {
        holes,
        next: 0,
        at: 0,
        put,
        failed: None,
        changed: false,
    };
    let encoded = bincode::serde::encode_into_writer(value, &mut replay, config());
    if let Some(err) = replay.failed {
        return Err(err);
    }
    if replay.changed {
        return Err(changed::<T>());
    }
    encoded.map_err(Error::codec)?;
    if replay.next != holes.len() || replay.at != len {
        return Err(changed::<T>());
    }
    Ok(())
}

fn changed<T: ?Sized>() -> Error {
    Error::codec(format_args!(
        "a `{}` serialized differently the second time",
        std::any::type_name::<T>()
    ))
}

/// The writer of [`encode_gathered`].
struct Gather<'a> {
    out: &'a mut Vec<u8>,
    holes: &'a mut Vec<Hole>,
    at: usize,
}

impl Writer for Gather<'_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        if bytes.len() >= LONG_RUN {
            self.holes.push(Hole {
                at: self.at,
                len: bytes.len(),
                bytes: marked(bytes),
            });
        } else {
            self.out.extend_from_slice(bytes);
        }
        self.at += bytes.len();
        Ok(())
    }
}

/// The writer of [`encode_plain`], which stops at a long byte run.
struct Plain<'a> {
    out: &'a mut Vec<u8>,
    long: bool,
}

impl Writer for Plain<'_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        if bytes.len() >= LONG_RUN {
            self.long = true;
            return Err(EncodeError::Other("a long byte run"));
        }
        self.out.extend_from_slice(bytes);
        Ok(())
    }
}

/// The writer of [`replay`].
struct Replay<'h, F> {
    holes: &'h [Hole],
    next: usize,
    at: usize,
    put: F,
    /// The error of `put`.
    failed: Option<Error>,
    /// A run is not where it was the first time.
    changed: bool,
}

impl<F: FnMut(usize, &[u8]) -> Result<()>> Writer for Replay<'_, F> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        if bytes.len() >= LONG_RUN {
            let here = Hole {
                at: self.at,
                len: bytes.len(),
                bytes: marked(bytes),
            };
            if self.holes.get(self.next) != Some(&here) {
                self.changed = true;
                return Err(EncodeError::Other("changed"));
            }
            if let Err(err) = (self.put)(self.next, bytes) {
                self.failed = Some(err);
                return Err(EncodeError::Other("not written"));
            }
            self.next += 1;
        }
        self.at += bytes.len();
        Ok(())
    }
}

/// Deserializes a whole body as a `T`; bytes left over mean the types
/// disagree.
#[inline]
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    decode_with::<T>(bytes, true)
}

/// Deserializes the `T` at the start of a body, ignoring what follows.
pub(crate) fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    decode_with::<T>(bytes, false)
}

#[inline]
fn decode_with<T: DeserializeOwned>(bytes: &[u8], whole: bool) -> Result<T> {
    // A value that owns nothing to drop holds no container and no
    // indirection: it can neither reserve room nor nest deeper than its
    // type, so the bounds are not needed (a stream of numbers decodes at
    // bincode's own speed, inline where it is received). What its
    // `Deserialize` builds on the way is bounded as serde bounds it: each
    // container reserves at most 1 MiB ahead.
    if !std::mem::needs_drop::<T>() {
        return match bincode::serde::decode_from_slice(bytes, config()) {
            Ok((value, read)) if !whole || read == bytes.len() => Ok(value),
            decoded => Err(not_decoded::<T>(bytes.len(), decoded.map(|(_, read)| read))),
        };
    }
    decode_bounded(bytes, whole)
}

/// [`decode_with`] for a type that may hold containers: with a budget of
/// bytes and a depth limit.
#[inline]
fn decode_bounded<T: DeserializeOwned>(bytes: &[u8], whole: bool) -> Result<T> {
    // Only such a type is located (see [`locator`]).
    if RUN.with_borrow(Option::is_some) {
        return decode_around_run(bytes, whole);
    }
    decode_body(bytes, whole)
}

/// [`decode_bounded`] of a whole body.
#[inline]
fn decode_body<T: DeserializeOwned>(bytes: &[u8], whole: bool) -> Result<T> {
    let budget = Cell::new(bytes.len());
    let seed = Bounded {
        seed: PhantomData::<T>,
        budget: &budget,
        depth: 0,
    };
    match bincode::serde::seed_decode_from_slice(seed, bytes, config()) {
        Ok((value, read)) if !whole || read == bytes.len() => Ok(value),
        decoded => Err(not_decoded::<T>(bytes.len(), decoded.map(|(_, read)| read))),
    }
}

/// The error for `len` bytes that did not decode as a whole `T`: bincode's
/// error, or how many bytes it read of them.
#[cold]
#[inline(never)]
fn not_decoded<T>(
    len: usize,
    decoded: std::result::Result<usize, bincode::error::DecodeError>,
) -> Error {
    match decoded {
        Ok(read) => Error::codec(format_args!(
            "{len} bytes do not decode as a `{}`: {} bytes are left over after it",
            std::any::type_name::<T>(),
            len - read
        )),
        Err(err) => decode_error::<T>(len, &err),
    }
}

/// The error for `len` bytes that failed to decode as a `T`.
#[cold]
fn decode_error<T>(len: usize, err: &bincode::error::DecodeError) -> Error {
    Error::codec(format_args!(
        "{len} bytes do not decode as a `{}`: {}",
        std::any::type_name::<T>(),
        Why(err)
    ))
}

/// A decode error, in words.
struct Why<'a>(&'a bincode::error::DecodeError);

impl fmt::Display for Why<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use bincode::error::DecodeError;
        match self.0 {
            DecodeError::UnexpectedEnd { additional } => {
                write!(f, "the body ends {additional} or more bytes too soon")
            }
            DecodeError::OtherString(message) => f.write_str(message),
            other => write!(f, "{other}"),
        }
    }
}

/// The length a frame's header announces, once the header is there: an
/// error if it is over `max` or too short to hold `min` bytes.
#[inline]
pub(crate) fn announced(buf: &[u8], min: usize, max: usize) -> Result<Option<usize>> {
    let Some(head) = buf.get(..HEADER) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len > max || len < min {
        return Err(misannounced(len, min, max));
    }
    Ok(Some(len))
}

#[cold]
fn misannounced(len: usize, min: usize, max: usize) -> Error {
    if len > max {
        Error::codec(format_args!(
            "a frame of {len} bytes exceeds the limit of {max} bytes"
        ))
    } else {
        Error::codec(format_args!(
            "a frame of {len} bytes is shorter than its {min}-byte tag"
        ))
    }
}

/// The length a frame at the start of `buf` announces, if it has all
/// arrived and is of `tag`: `None` otherwise, and for a length no frame
/// may have (zero, or over `max`), which the reader that checks lengths
/// reports. The short way for a stream of values, which builds no error.
#[inline]
pub(crate) fn whole_of(buf: &[u8], tag: u8, max: usize) -> Option<usize> {
    let head = buf.get(..=HEADER)?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let whole = (1..=max).contains(&len) && buf.len() - HEADER >= len;
    (whole && head[HEADER] == tag).then_some(len)
}

/// The body of the frame at the start of `buf`, once it has all arrived.
/// `min` and `max` bound the length its header may announce.
pub(crate) fn split_frame(buf: &[u8], min: usize, max: usize) -> Result<Option<&[u8]>> {
    let Some(len) = announced(buf, min, max)? else {
        return Ok(None);
    };
    Ok(buf.get(HEADER..HEADER + len))
}

/// The header of a frame whose body is `len` bytes.
#[inline]
pub(crate) fn header(len: usize) -> Result<[u8; HEADER]> {
    match u32::try_from(len) {
        Ok(len) => Ok(len.to_le_bytes()),
        Err(_) => Err(too_long(len)),
    }
}

#[cold]
fn too_long(len: usize) -> Error {
    Error::codec(format_args!(
        "a frame of {len} bytes exceeds the protocol's 4 GiB limit"
    ))
}

/// Writes one frame to a blocking stream.
pub(crate) fn write_frame(stream: &mut impl Write, body: &[u8]) -> Result<()> {
    let mut frame = Vec::with_capacity(HEADER + body.len());
    frame.extend_from_slice(&header(body.len())?);
    frame.extend_from_slice(body);
    stream.write_all(&frame).map_err(Error::Io)
}

/// Reads one frame of at most `max` bytes from a blocking stream. Memory
/// grows with the bytes that arrive, not with the length the header
/// claims: a peer that announces a gigabyte and sends ten bytes costs ten.
pub(crate) fn read_frame(stream: &mut impl Read, max: usize) -> Result<Vec<u8>> {
    let mut head = [0; HEADER];
    stream.read_exact(&mut head).map_err(Error::Io)?;
    let len = announced(&head, 0, max)?.unwrap_or_default();
    let mut body = Vec::with_capacity(len.min(READ_AHEAD));
    let got = stream
        .take(len as u64)
        .read_to_end(&mut body)
        .map_err(Error::Io)?;
    if got < len {
        return Err(Error::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the peer closed the stream {got} bytes into a frame of {len}"),
        )));
    }
    Ok(body)
}

/// What [`read_frame`] reserves before the bytes arrive.
const READ_AHEAD: usize = 64 * 1024;

/// A seed, a deserializer, a visitor or an access of the value being
/// decoded, wrapped so that every part nested in it is bounded too: the
/// whole value reserves at most `budget` elements ahead, and nests at most
/// [`MAX_DEPTH`] levels.
struct Bounded<'b, X> {
    seed: X,
    budget: &'b Cell<usize>,
    depth: usize,
}

impl<'b, X> Bounded<'b, X> {
    fn wrap<Y>(&self, inner: Y) -> Bounded<'b, Y> {
        Bounded {
            seed: inner,
            budget: self.budget,
            depth: self.depth,
        }
    }

    /// A container's length, as room to reserve: what is left of the
    /// budget at most, and spent from it.
    fn hint(&self, hint: Option<usize>) -> Option<usize> {
        let left = self.budget.get();
        let n = hint?.min(left);
        self.budget.set(left - n);
        Some(n)
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Bounded<'_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(de::Error::custom(format_args!(
                "values nest more than {MAX_DEPTH} levels deep"
            )));
        }
        let inner = Bounded {
            seed: deserializer,
            budget: self.budget,
            depth: self.depth + 1,
        };
        self.seed.deserialize(inner)
    }
}

/// Forwards `deserialize_*` methods, wrapping the visitor.
macro_rules! forward {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {
        $(
            fn $method<V: Visitor<'de>>(self $(, $arg: $ty)*, visitor: V) -> Result<V::Value, D::Error> {
                let visitor = self.wrap(visitor);
                self.seed.$method($($arg,)* visitor)
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Bounded<'_, D> {
    type Error = D::Error;

    forward! {
        deserialize_any();
        deserialize_bool();
        deserialize_i8();
        deserialize_i16();
        deserialize_i32();
        deserialize_i64();
        deserialize_i128();
        deserialize_u8();
        deserialize_u16();
        deserialize_u32();
        deserialize_u64();
        deserialize_u128();
        deserialize_f32();
        deserialize_f64();
        deserialize_char();
        deserialize_str();
        deserialize_option();
        deserialize_unit();
        deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str);
        deserialize_seq();
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map();
        deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_identifier();
        deserialize_ignored_any();
    }

    /// Taken from the body as it is, then copied: a length that claims
    /// more than the body holds fails before anything is allocated.
    /// A long run read in place (see [`Run`]) is handed over as the vector
    /// it was read into (a [`Bytes`](crate::Bytes) keeps it).
    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        HAND_OVER.set(true);
        let value = self.seed.deserialize_bytes(HandOver(visitor));
        HAND_OVER.set(false);
        value
    }

    /// A long run read in place (see [`Run`]) is handed over whole.
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        HAND_OVER.set(true);
        let value = self.seed.deserialize_str(Owned(visitor));
        HAND_OVER.set(false);
        value
    }

    /// As [`Self::deserialize_string`].
    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        HAND_OVER.set(true);
        let value = self.seed.deserialize_bytes(Owned(visitor));
        HAND_OVER.set(false);
        value
    }

    fn is_human_readable(&self) -> bool {
        self.seed.is_human_readable()
    }
}

/// Forwards `visit_*` methods that carry no nested value.
macro_rules! visit {
    ($($method:ident($ty:ty);)*) => {
        $(
            fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
                self.seed.$method(v)
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Bounded<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.seed.expecting(f)
    }

    visit! {
        visit_bool(bool);
        visit_i8(i8);
        visit_i16(i16);
        visit_i32(i32);
        visit_i64(i64);
        visit_i128(i128);
        visit_u8(u8);
        visit_u16(u16);
        visit_u32(u32);
        visit_u64(u64);
        visit_u128(u128);
        visit_f32(f32);
        visit_f64(f64);
        visit_char(char);
        visit_str(&str);
        visit_borrowed_str(&'de str);
        visit_string(String);
        visit_bytes(&[u8]);
        visit_borrowed_bytes(&'de [u8]);
        visit_byte_buf(Vec<u8>);
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.seed.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.seed.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        let inner = self.wrap(deserializer);
        self.seed.visit_some(inner)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<V::Value, D::Error> {
        let inner = self.wrap(deserializer);
        self.seed.visit_newtype_struct(inner)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let inner = self.wrap(seq);
        self.seed.visit_seq(inner)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let inner = self.wrap(map);
        self.seed.visit_map(inner)
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        let inner = self.wrap(data);
        self.seed.visit_enum(inner)
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Bounded<'_, A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        let seed = self.wrap(seed);
        self.seed.next_element_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.hint(self.seed.size_hint())
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Bounded<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let seed = self.wrap(seed);
        self.seed.next_key_seed(seed)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        let seed = self.wrap(seed);
        self.seed.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.hint(self.seed.size_hint())
    }
}

impl<'de, 'b, A: EnumAccess<'de>> EnumAccess<'de> for Bounded<'b, A> {
    type Error = A::Error;
    type Variant = Bounded<'b, A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), A::Error> {
        let (budget, depth) = (self.budget, self.depth);
        let seed = self.wrap(seed);
        let (seed, variant) = self.seed.variant_seed(seed)?;
        let variant = Bounded {
            seed: variant,
            budget,
            depth,
        };
        Ok((seed, variant))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Bounded<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.seed.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        let seed = self.wrap(seed);
        self.seed.newtype_variant_seed(seed)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        let visitor = self.wrap(visitor);
        self.seed.tuple_variant(len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        let visitor = self.wrap(visitor);
        self.seed.struct_variant(fields, visitor)
    }
}

/// A visitor for an owned string or byte buffer, fed from borrowed bytes
/// that are known to be in the body.
struct Owned<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for Owned<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<V::Value, E> {
        if let Some(run) = handed(v.as_bytes()) {
            return match String::from_utf8(run) {
                Ok(string) => self.0.visit_string(string),
                Err(err) => Err(E::custom(format_args!(
                    "a string of {} bytes that is not UTF-8: {}",
                    err.as_bytes().len(),
                    err.utf8_error()
                ))),
            };
        }
        self.0.visit_string(v.to_owned())
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<V::Value, E> {
        if let Some(run) = handed(v) {
            return self.0.visit_byte_buf(run);
        }
        self.0.visit_byte_buf(copy_of(v))
    }
}

/// A visitor of bytes that may be a run read in place: it gets the run's
/// vector, where the bytes would be.
struct HandOver<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for HandOver<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<V::Value, E> {
        match handed(v) {
            Some(run) => self.0.visit_byte_buf(run),
            None => self.0.visit_bytes(v),
        }
    }

    fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<V::Value, E> {
        match handed(v) {
            Some(run) => self.0.visit_byte_buf(run),
            None => self.0.visit_borrowed_bytes(v),
        }
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<V::Value, E> {
        self.0.visit_byte_buf(v)
    }
}

/// The run [`Around`] handed over in place of `v`, its empty stand-in.
fn handed(v: &[u8]) -> Option<Vec<u8>> {
    if v.is_empty() { HANDED.take() } else { None }
}

// ---------------------------------------------------------------------------
// Long byte runs read in place.
//
// A connection that receives a large frame asks [`locate`] where its first
// long byte run starts, decoding what has arrived as the type that will
// read it. It then reads the run from the socket straight into a vector of
// its own, and the rest of the body behind the bytes before it; the frame's
// reader decodes the two together with [`with_run`], and the `String` or
// byte buffer that the run belongs to takes the vector as it is. So a
// 64 MiB `serde_bytes::ByteBuf` costs the kernel's copy and nothing more.

/// A byte run this long or longer is read in place.
pub(crate) const IN_PLACE: usize = 1 << 20;

/// Where a body's first long byte run is, from the bytes that have
/// arrived (`head`) of a body of `len` bytes.
pub(crate) type Locate = fn(head: &[u8], len: usize) -> Located;

/// What a [`Locate`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Located {
    /// A run of `len` bytes at offset `at`, not all arrived.
    At { at: usize, len: usize },
    /// Not enough has arrived to tell.
    Short,
    /// No such run: the value has none before what arrived, or it does
    /// not decode.
    Not,
}

/// A long byte run, read in place: it belongs at offset `at` of its body.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) at: usize,
    pub(crate) bytes: Vec<u8>,
}

thread_local! {
    /// The run of the body being read (see [`with_run`]).
    static RUN: std::cell::RefCell<Option<Run>> = const { std::cell::RefCell::new(None) };
    /// Whether the next bytes taken are for an owned string or buffer.
    static HAND_OVER: Cell<bool> = const { Cell::new(false) };
    /// A run handed to the owned string or buffer that reads it.
    static HANDED: Cell<Option<Vec<u8>>> = const { Cell::new(None) };
    /// What [`decode_around_run`] starts its budget with.
    static BUDGET: Cell<usize> = const { Cell::new(0) };
}

/// The [`Locate`] of `T`, unless `T` has nothing to drop: then it holds
/// no string or buffer that could keep a run.
pub(crate) fn locator<T: DeserializeOwned>() -> Option<Locate> {
    std::mem::needs_drop::<T>().then_some(locate::<T>)
}

/// Where `T` has a long run in `head`, a body of `len` bytes of which
/// `head` has arrived.
fn locate<T: DeserializeOwned>(head: &[u8], len: usize) -> Located {
    let around = Around {
        head,
        hole: Gap::Unknown { len },
        tail: &[],
        taken: 0,
        run: None,
        located: Located::Not,
    };
    decode_in::<T>(around, len).1.located
}

/// Runs `read`, the reader of a body whose run `run` was left out of it:
/// [`decode`] and [`decode_prefix`] put it back, and [`owned_body`] too.
pub(crate) fn with_run<T>(run: Run, read: impl FnOnce() -> T) -> T {
    /// Forgets the run however `read` ends.
    struct Forget;
    impl Drop for Forget {
        fn drop(&mut self) {
            RUN.set(None);
        }
    }
    RUN.set(Some(run));
    let _forget = Forget;
    read()
}

/// A body as a vector of its own, with the run [`with_run`] left out of
/// it, if any, put back.
pub(crate) fn owned_body(body: &[u8]) -> Vec<u8> {
    match RUN.take() {
        Some(run) => flat(body, &run),
        None => body.to_vec(),
    }
}

/// `body` with `run` put back where it belongs.
fn flat(body: &[u8], run: &Run) -> Vec<u8> {
    let at = run.at.min(body.len());
    [&body[..at], &run.bytes, &body[at..]].concat()
}

/// Decodes a body whose run was left out of it (see [`with_run`]); a
/// type that reads it otherwise than as one string or byte buffer gets the
/// whole body put back together, and decodes that.
#[cold]
fn decode_around_run<T: DeserializeOwned>(body: &[u8], whole: bool) -> Result<T> {
    let Some(run) = RUN.take() else {
        return decode_body(body, whole);
    };
    let len = body.len() + run.bytes.len();
    let at = run.at.min(body.len());
    let (head, tail) = body.split_at(at);
    let around = Around {
        head,
        hole: Gap::Known(run.bytes.len()),
        tail,
        taken: 0,
        run: Some(run.bytes),
        located: Located::Not,
    };
    let (decoded, mut reader) = decode_in::<T>(around, len);
    if let Some(bytes) = reader.run.take() {
        // Read otherwise: decode it whole.
        return decode_body(&flat(body, &Run { at, bytes }), whole);
    }
    let read = len - reader.head.len() - reader.tail.len();
    match decoded {
        Ok(value) if !whole || read == len => Ok(value),
        decoded => Err(not_decoded::<T>(len, decoded.map(|_| read))),
    }
}

/// Decodes a `T` from `around`, bounded as [`decode_bounded`] bounds a
/// body of `len` bytes; gives the reader back, as the decoder left it.
fn decode_in<T: DeserializeOwned>(
    around: Around<'_>,
    len: usize,
) -> (
    std::result::Result<T, bincode::error::DecodeError>,
    Around<'_>,
) {
    let mut reading = bincode::de::DecoderImpl::new(around, config(), ());
    BUDGET.set(len);
    let value =
        <bincode::serde::BorrowCompat<Budgeted<T>> as bincode::BorrowDecode<'_, ()>>::borrow_decode(
            &mut reading,
        );
    HAND_OVER.set(false);
    HANDED.set(None);
    let spent = Around {
        head: &[],
        hole: Gap::Taken,
        tail: &[],
        taken: 0,
        run: None,
        located: Located::Not,
    };
    let around = std::mem::replace(bincode::de::Decoder::reader(&mut reading), spent);
    (value.map(|value| value.0.0), around)
}

/// A `T` decoded within the bounds of [`decode_bounded`], with the budget
/// [`BUDGET`] holds.
struct Budgeted<T>(T);

impl<'de, T: DeserializeOwned> serde::Deserialize<'de> for Budgeted<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let budget = Cell::new(BUDGET.get());
        let seed = Bounded {
            seed: PhantomData::<T>,
            budget: &budget,
            depth: 0,
        };
        seed.deserialize(deserializer).map(Budgeted)
    }
}

/// Where a body's long run is, to [`Around`].
#[derive(Clone, Copy)]
enum Gap {
    /// Not known yet: [`locate`] is looking for it in a body of `len`
    /// bytes, of which `head` has arrived.
    Unknown { len: usize },
    /// Right after `head`, this long, not taken yet.
    Known(usize),
    /// Taken: `tail` is what follows it.
    Taken,
}

/// A reader of a body with a hole where its long run goes: `head`, the
/// run, then `tail`.
struct Around<'de> {
    head: &'de [u8],
    hole: Gap,
    tail: &'de [u8],
    /// Bytes taken from `head`.
    taken: usize,
    /// The run, until it is handed over.
    run: Option<Vec<u8>>,
    /// What [`locate`] found.
    located: Located,
}

impl<'de> Around<'de> {
    /// What is read next: `head` up to the hole, then `tail`.
    fn next(&mut self) -> &mut &'de [u8] {
        if matches!(self.hole, Gap::Taken) {
            &mut self.tail
        } else {
            &mut self.head
        }
    }
}

impl Around<'_> {
    /// The error for `want` bytes where `have` are left before the hole or
    /// the end: past what arrived, to [`locate`]; into the run, to
    /// [`decode_around_run`], which reads the whole body instead; past the
    /// end, bincode's own.
    fn short(&mut self, want: usize, have: usize) -> bincode::error::DecodeError {
        match self.hole {
            Gap::Unknown { .. } => self.located = Located::Short,
            Gap::Known(_) => {}
            Gap::Taken => {
                return bincode::error::DecodeError::UnexpectedEnd {
                    additional: want - have,
                };
            }
        }
        into_hole()
    }
}

/// Bincode's error for reading into the hole: the reader takes the whole
/// body instead.
fn into_hole() -> bincode::error::DecodeError {
    bincode::error::DecodeError::Other("the body's long run is read otherwise")
}

impl bincode::de::read::Reader for Around<'_> {
    #[inline]
    fn read(&mut self, bytes: &mut [u8]) -> Result<(), bincode::error::DecodeError> {
        let next = self.next();
        let Some((now, rest)) = next.split_at_checked(bytes.len()) else {
            let have = next.len();
            return Err(self.short(bytes.len(), have));
        };
        bytes.copy_from_slice(now);
        *next = rest;
        if !matches!(self.hole, Gap::Taken) {
            self.taken += bytes.len();
        }
        Ok(())
    }

    #[inline]
    fn peek_read(&mut self, n: usize) -> Option<&[u8]> {
        self.next().get(..n)
    }

    #[inline]
    fn consume(&mut self, n: usize) {
        let next = self.next();
        *next = next.get(n..).unwrap_or_default();
        if !matches!(self.hole, Gap::Taken) {
            self.taken += n;
        }
    }
}

impl<'de> bincode::de::read::BorrowReader<'de> for Around<'de> {
    fn take_bytes(&mut self, length: usize) -> Result<&'de [u8], bincode::error::DecodeError> {
        let owned = HAND_OVER.replace(false);
        match self.hole {
            Gap::Unknown { len }
                if owned
                    && length >= IN_PLACE
                    && length > self.head.len()
                    && length <= len - self.taken =>
            {
                self.located = Located::At {
                    at: self.taken,
                    len: length,
                };
                return Err(into_hole());
            }
            Gap::Known(run) if owned && self.head.is_empty() && length == run => {
                self.hole = Gap::Taken;
                HANDED.set(self.run.take());
                return Ok(&[]);
            }
            _ => {}
        }
        let from = *self.next();
        let Some((now, rest)) = from.split_at_checked(length) else {
            return Err(self.short(length, from.len()));
        };
        if !matches!(self.hole, Gap::Taken) {
            self.taken += length;
        }
        if matches!(self.hole, Gap::Taken) {
            self.tail = rest;
        } else {
            self.head = rest;
        }
        Ok(now)
    }
}

/// A block this long or longer is copied into memory asked of the kernel
/// in huge pages: a fresh block of many megabytes otherwise costs a page
/// fault every 4 KiB, which takes longer than the copy.
const HUGE: usize = 4 << 20;

/// `bytes`, copied into a vector of its own.
pub(crate) fn copy_of(bytes: &[u8]) -> Vec<u8> {
    if bytes.len() < HUGE {
        return bytes.to_vec();
    }
    let mut out = Vec::with_capacity(bytes.len());
    advise_huge(&mut out.spare_capacity_mut()[..bytes.len()]);
    out.extend_from_slice(bytes);
    out
}

/// Asks the kernel to back `room`, memory not written yet, with huge pages
/// where it can, if it is [`HUGE`] or longer.
pub(crate) fn advise_huge(room: &mut [std::mem::MaybeUninit<u8>]) {
    const PAGE: usize = 2 << 20;
    if room.len() < HUGE {
        return;
    }
    let start = room.as_mut_ptr() as usize;
    let first = start.next_multiple_of(PAGE);
    let last = (start + room.len()) & !(PAGE - 1);
    if first < last {
        // SAFETY: madvise only advises how to back the memory: the range
        // is page-aligned, lies inside `room`, and holds nothing yet.
        unsafe {
            libc::madvise(
                first as *mut libc::c_void,
                last - first,
                libc::MADV_HUGEPAGE,
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Shape {
        Unit,
        Newtype(String),
        Tuple(u8, Vec<u16>),
        Struct { name: String, bytes: Vec<u8> },
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Everything {
        small: (i8, i16, i32, i64, i128),
        unsigned: (u8, u16, u32, u64, u128),
        floats: (f32, f64),
        flags: [bool; 3],
        letter: char,
        text: String,
        maybe: Option<Box<str>>,
        shapes: Vec<Shape>,
        table: BTreeMap<String, Vec<u64>>,
        unit: (),
        path: std::path::PathBuf,
    }

    fn everything() -> Everything {
        Everything {
            small: (-1, -300, -70_000, i64::MIN, i128::MIN),
            unsigned: (255, 65_535, u32::MAX, u64::MAX, u128::MAX),
            floats: (1.5, -2.25),
            flags: [true, false, true],
            letter: 'ß',
            text: "a string".into(),
            maybe: Some("boxed".into()),
            shapes: vec![
                Shape::Unit,
                Shape::Newtype("n".into()),
                Shape::Tuple(7, vec![1, 1000]),
                Shape::Struct {
                    name: "s".into(),
                    bytes: vec![0, 255],
                },
            ],
            table: BTreeMap::from([("k".into(), vec![1, 2, 3])]),
            unit: (),
            path: "/tmp/x".into(),
        }
    }

    #[test]
    fn every_kind_of_value_round_trips() {
        let value = everything();
        let bytes = encode(&value).unwrap();
        assert_eq!(decode::<Everything>(&bytes).unwrap(), value);
        // The same bytes as bincode's own decoder reads.
        let (theirs, used) =
            bincode::serde::decode_from_slice::<Everything, _>(&bytes, config()).unwrap();
        assert_eq!((theirs, used), (value, bytes.len()));
    }

    #[test]
    fn a_lying_string_length_is_an_error_not_an_allocation() {
        // A varint that claims 2^40 bytes, then three bytes.
        let mut bytes = vec![253];
        bytes.extend_from_slice(&(1u64 << 40).to_le_bytes());
        bytes.extend_from_slice(b"abc");
        for err in [
            decode::<String>(&bytes).unwrap_err(),
            decode::<serde_bytes_like::Buf>(&bytes).unwrap_err(),
            decode::<(String, u8)>(&bytes).unwrap_err(),
            decode::<Vec<u64>>(&bytes).unwrap_err(),
        ] {
            let Error::Codec { message } = err else {
                panic!("{err:?}")
            };
            assert!(message.contains("do not decode as a `"), "{message}");
        }
    }

    #[test]
    fn a_result_of_another_type_is_a_codec_error_that_names_it() {
        let bytes = encode(&(1u64 << 40)).unwrap();
        let Error::Codec { message } = decode::<String>(&bytes).unwrap_err() else {
            panic!()
        };
        assert!(message.contains("alloc::string::String"), "{message}");
    }

    #[test]
    fn left_over_bytes_are_an_error_unless_only_a_prefix_is_read() {
        let bytes = encode(&(1u32, 2u32)).unwrap();
        assert!(matches!(decode::<u32>(&bytes), Err(Error::Codec { .. })));
        assert_eq!(decode_prefix::<u32>(&bytes).unwrap(), 1);
        assert!(matches!(decode::<u32>(&[]), Err(Error::Codec { .. })));
    }

    #[derive(Debug, Serialize, Deserialize)]
    enum Tree {
        Leaf,
        Node(Box<Tree>),
    }

    #[test]
    fn nesting_is_bounded() {
        let mut tree = Tree::Leaf;
        for _ in 0..MAX_DEPTH - 2 {
            tree = Tree::Node(Box::new(tree));
        }
        let bytes = encode(&tree).unwrap();
        assert!(decode::<Tree>(&bytes).is_ok());
        // A million levels in a million bytes: refused, not a stack overflow.
        let mut deep = vec![1u8; 1 << 20];
        deep.push(0);
        let Error::Codec { message } = decode::<Tree>(&deep).unwrap_err() else {
            panic!()
        };
        assert!(message.contains("levels deep"), "{message}");
    }

    /// Bytes that serialize as one block, as `Bytes` does.
    struct Run<'a>(&'a [u8]);

    impl Serialize for Run<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_bytes(self.0)
        }
    }

    #[test]
    fn a_plain_encoding_is_the_encoding_and_stops_at_a_long_run() {
        let value = (5u64, 300u64, "short", vec![1u8; 100]);
        let mut out = vec![9];
        assert!(encode_plain(&value, &mut out).unwrap());
        assert_eq!(out[1..], encode(&value).unwrap()[..]);
        let run = vec![3u8; LONG_RUN];
        assert!(!encode_plain(&(1u8, Run(&run)), &mut Vec::new()).unwrap());
        assert!(!encode_plain(&"t".repeat(LONG_RUN), &mut Vec::new()).unwrap());
    }

    #[test]
    fn long_runs_are_left_out_then_handed_over_in_order() {
        let run = vec![3u8; LONG_RUN];
        let text = "t".repeat(LONG_RUN + 1);
        let value = (Run(&run), 5u8, text.as_str());
        let mut out = Vec::new();
        let mut holes = Vec::new();
        let len = encode_gathered(&value, &mut out, &mut holes).unwrap();
        let whole = encode(&value).unwrap();
        assert_eq!(len, whole.len());
        assert_eq!(out.len(), len - 2 * LONG_RUN - 1);
        assert_eq!(holes.len(), 2);
        // The pieces and the runs, put together, are the plain encoding.
        let mut joined = Vec::new();
        let mut from = 0;
        replay(&value, &holes, len, |i, bytes| {
            let upto = holes[i].at - (joined.len() - from);
            joined.extend_from_slice(&out[from..upto]);
            from = upto;
            joined.extend_from_slice(bytes);
            Ok(())
        })
        .unwrap();
        joined.extend_from_slice(&out[from..]);
        assert_eq!(joined, whole);
        // Another value in its place does not replay.
        assert!(replay(&(run, 5u8, "short"), &holes, len, |_, _| Ok(())).is_err());
        assert_eq!(copy_of(&whole), whole);
        let big = vec![1u8; 5 << 20];
        assert_eq!(copy_of(&big), big);
    }

    #[test]
    fn frame_headers_are_checked_before_the_body() {
        assert_eq!(announced(&[1, 0], 1, 16).unwrap(), None);
        assert_eq!(announced(&[5, 0, 0, 0, 9], 1, 16).unwrap(), Some(5));
        assert!(announced(&[17, 0, 0, 0], 1, 16).is_err());
        assert!(announced(&[0, 0, 0, 0], 1, 16).is_err());
        assert_eq!(announced(&[0, 0, 0, 0], 0, 16).unwrap(), Some(0));
    }

    #[test]
    fn a_blocking_frame_reader_allocates_what_arrives() {
        let mut frame = header(1 << 30).unwrap().to_vec();
        frame.extend_from_slice(b"ten bytes!");
        let err = read_frame(&mut frame.as_slice(), 1 << 30).unwrap_err();
        assert!(matches!(err, Error::Io(ref e) if e.kind() == io::ErrorKind::UnexpectedEof));
        let mut ok = Vec::new();
        write_frame(&mut ok, b"body").unwrap();
        assert_eq!(read_frame(&mut ok.as_slice(), 16).unwrap(), b"body");
        assert!(read_frame(&mut ok.as_slice(), 3).is_err());
    }

    /// Values with long runs among short fields, and the same bytes read
    /// as another type.
    type Runs = (u8, String, Vec<u16>, crate::Bytes, serde_bytes_like::Buf);
    type Other = (u8, crate::Bytes, Vec<u16>, String, Vec<u8>);

    fn runs() -> impl proptest::strategy::Strategy<Value = Runs> {
        use proptest::prelude::*;
        let len = prop_oneof![
            Just(0),
            Just(3),
            Just(IN_PLACE - 1),
            Just(IN_PLACE),
            Just(IN_PLACE + 2)
        ];
        (any::<u8>(), len.clone(), 0..40_u16, len.clone(), len).prop_map(
            |(first, text, shorts, bytes, buf)| {
                (
                    first,
                    "é".repeat(text / 2) + &"a".repeat(text % 2),
                    (0..shorts).map(|i| i * 700).collect(),
                    crate::Bytes::from(vec![first; bytes]),
                    serde_bytes_like::Buf(vec![first ^ 0xff; buf]),
                )
            },
        )
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// Whatever has arrived of a body, the run `locate` finds there,
        /// once left out and put back by `with_run`, decodes as the whole
        /// body does, as its own type and as another.
        #[test]
        fn a_body_read_around_its_run_decodes_as_the_whole_body(
            value in runs(),
            arrived in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let body = encode(&value).unwrap();
            let arrived = arrived.index(body.len() + 1);
            let (at, len) = match locate::<Runs>(&body[..arrived], body.len()) {
                Located::At { at, len } => (at, len),
                Located::Short | Located::Not => return Ok(()),
            };
            proptest::prop_assert!(len >= IN_PLACE && at + len > arrived && at + len <= body.len());
            let holed = [&body[..at], &body[at + len..]].concat();
            let run = || super::Run { at, bytes: body[at..at + len].to_vec() };
            let ours = with_run(run(), || decode::<Runs>(&holed)).unwrap();
            proptest::prop_assert_eq!(&ours, &value);
            let other = with_run(run(), || decode::<Other>(&holed));
            match (other, decode::<Other>(&body)) {
                (Ok(a), Ok(b)) => proptest::prop_assert_eq!(a, b),
                (Err(_), Err(_)) => {}
                (a, b) => proptest::prop_assert!(false, "{:?} against {:?}", a.is_ok(), b.is_ok()),
            }
            proptest::prop_assert_eq!(owned_body_of(run(), &holed), body);
        }
    }

    #[test]
    fn only_types_that_can_hold_a_run_are_located() {
        assert!(locator::<u64>().is_none());
        assert!(locator::<(u32, [u8; 16])>().is_none());
        assert!(locator::<String>().is_some());
        assert!(locator::<Runs>().is_some());
        let body = encode(&"x".repeat(IN_PLACE)).unwrap();
        assert_eq!(
            locator::<String>().unwrap()(&body[..100], body.len()),
            Located::At {
                at: 5,
                len: IN_PLACE
            }
        );
        assert_eq!(locate::<String>(&body[..3], body.len()), Located::Short);
        assert_eq!(locate::<(u8, u8)>(&body[..100], body.len()), Located::Not);
    }

    #[test]
    fn a_body_cut_short_after_its_run_is_a_codec_error_that_says_so() {
        let value = (7_u8, "r".repeat(IN_PLACE), vec![1_u16, 2, 3]);
        let body = encode(&value).unwrap();
        let Located::At { at, len } = locate::<(u8, String, Vec<u16>)>(&body[..64], body.len())
        else {
            panic!("no run found");
        };
        let cut = [&body[..at], &body[at + len..body.len() - 2]].concat();
        let run = super::Run {
            at,
            bytes: body[at..at + len].to_vec(),
        };
        match with_run(run, || decode::<(u8, String, Vec<u16>)>(&cut)) {
            Err(Error::Codec { message }) => assert!(message.contains("too soon"), "{message}"),
            other => panic!("{other:?}"),
        }
    }

    /// The body [`owned_body`] puts back together.
    fn owned_body_of(run: super::Run, holed: &[u8]) -> Vec<u8> {
        with_run(run, || owned_body(holed))
    }

    /// A byte buffer that deserializes through `deserialize_byte_buf`, as
    /// `serde_bytes::ByteBuf` does.
    mod serde_bytes_like {
        use std::fmt;

        use serde::de::{Deserialize, Deserializer, Visitor};

        #[derive(Debug, PartialEq)]
        pub(super) struct Buf(pub(super) Vec<u8>);

        impl serde::Serialize for Buf {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for Buf {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = Buf;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("bytes")
                    }
                    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Buf, E> {
                        Ok(Buf(v))
                    }
                }
                d.deserialize_byte_buf(V)
            }
        }
    }
}
