//! The numbers that the manager adds to atomically, in shared values, maps
//! and arrays.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The numeric types shared values and arrays do arithmetic with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum NumKind {
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    F32,
    F64,
}

/// A number that shared values, maps and arrays can add to atomically, in
/// the manager: the integer and float primitives.
pub trait Number: Serialize + DeserializeOwned + Copy + Send + Sync + 'static {
    /// The type, as the manager does arithmetic with it.
    #[doc(hidden)]
    const KIND: NumKind;
}

macro_rules! numbers {
    ($($t:ty => $kind:ident),*) => {
        $(impl Number for $t {
            const KIND: NumKind = NumKind::$kind;
        })*
    };
}

numbers!(i8 => I8, i16 => I16, i32 => I32, i64 => I64, u8 => U8, u16 => U16, u32 => U32, u64 => U64, f32 => F32, f64 => F64);
