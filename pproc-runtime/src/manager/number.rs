//! The numbers that the manager adds to atomically, in shared values, maps
//! and arrays.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::wire::codec::{decode, encode};

/// The numeric types shared values and arrays do arithmetic with: each
/// [`Number`] says which it is, and the manager adds as that type.
///
/// # Examples
///
/// ```
/// use pproc::manager::{NumKind, Number};
///
/// assert_eq!(u32::KIND, NumKind::U32);
/// assert_eq!(<f64 as Number>::KIND, NumKind::F64);
/// assert_ne!(i64::KIND, u64::KIND);
/// ```
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
///
/// # Examples
///
/// ```
/// use pproc::manager::{Number, Value};
///
/// /// Adds `by` to `total`, in the manager: no update is lost.
/// fn bump<T: Number>(total: &Value<T>, by: T) -> pproc::Result<T> {
///     total.add(by)
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let manager = pproc::Manager::start()?;
/// assert_eq!(bump(&manager.value(&1_u8)?, 2)?, 3);
/// assert_eq!(bump(&manager.value(&-1_i64)?, 5)?, 4);
/// assert!(bump(&manager.value(&u8::MAX)?, 1).is_err(), "it overflows");
/// # Ok(())
/// # }
/// ```
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

/// `stored + delta` as numbers of `kind` (a missing value counts as 0),
/// serialized: the manager's arithmetic on values it keeps serialized.
pub(super) fn add(kind: NumKind, stored: Option<&[u8]>, delta: &[u8]) -> Result<Vec<u8>, String> {
    fn sum<T>(
        stored: Option<&[u8]>,
        delta: &[u8],
        plus: impl Fn(T, T) -> Option<T>,
    ) -> Result<Vec<u8>, String>
    where
        T: Serialize + DeserializeOwned + Default,
    {
        let a: T = match stored {
            Some(bytes) => decode(bytes)
                .map_err(|e| format!("the stored value is not a number of this type: {e}"))?,
            None => T::default(),
        };
        let b: T = decode(delta).map_err(|e| format!("arguments that do not decode: {e}"))?;
        let total = plus(a, b).ok_or_else(|| "the sum overflows".to_owned())?;
        encode(&total).map_err(|e| e.to_string())
    }
    match kind {
        NumKind::I8 => sum::<i8>(stored, delta, i8::checked_add),
        NumKind::I16 => sum::<i16>(stored, delta, i16::checked_add),
        NumKind::I32 => sum::<i32>(stored, delta, i32::checked_add),
        NumKind::I64 => sum::<i64>(stored, delta, i64::checked_add),
        NumKind::U8 => sum::<u8>(stored, delta, u8::checked_add),
        NumKind::U16 => sum::<u16>(stored, delta, u16::checked_add),
        NumKind::U32 => sum::<u32>(stored, delta, u32::checked_add),
        NumKind::U64 => sum::<u64>(stored, delta, u64::checked_add),
        NumKind::F32 => sum::<f32>(stored, delta, |a, b| Some(a + b)),
        NumKind::F64 => sum::<f64>(stored, delta, |a, b| Some(a + b)),
    }
}
