//! Not public API. Used by code that `#[parallel]` generates.

pub use crate::child::entry::{run_channel_entry, run_entry};
pub use crate::manager::objects::custom::{SharedEntry, shared_create, shared_invoke};
pub use crate::registry::{Context, Entry};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::parent::call::Call;

/// Builds the typed call of a generated `call` function.
pub fn call<R, S, V, K, A: Serialize>(name: &'static str, args: &A) -> Call<R, S, V, K> {
    Call::new(name, args)
}

/// Fails to compile, at the argument's span, unless `T` can cross a process
/// boundary.
pub const fn assert_arg<T: Serialize + DeserializeOwned>() {}

/// Fails to compile, at the return type's span, unless `T` can cross a
/// process boundary.
pub const fn assert_result<T: Serialize + DeserializeOwned>() {}

/// Fails to compile unless `T` can travel over a channel.
pub const fn assert_message<T: Serialize + DeserializeOwned>() {}

/// This build's fingerprint, as children check it.
#[must_use]
pub fn fingerprint() -> u64 {
    crate::registry::fingerprint()
}

/// Fails to compile, at the field's span, unless the field can take `T`.
pub const fn assert_extend<C: Extend<T>, T>() {}

/// The value of a routed call, as the type its function returns.
///
/// # Errors
///
/// [`Error::Codec`](crate::Error::Codec) if the call was built with another
/// result type than its function's.
pub fn downcast<V: 'static, T: 'static>(value: T, origin: &crate::Origin<'_>) -> crate::Result<V> {
    let value: Box<dyn std::any::Any> = Box::new(value);
    value
        .downcast::<V>()
        .map(|v| *v)
        .map_err(|_| crate::Error::Codec {
            message: format!(
                "the values of `{}` are not of type `{}`",
                origin.name(),
                std::any::type_name::<V>()
            ),
        })
}

/// The error for a value that no field takes.
#[must_use]
pub fn unrouted(origin: &crate::Origin<'_>) -> crate::Error {
    crate::Error::Unrouted {
        name: origin.name().to_owned(),
    }
}
