//! User types shared through a manager, registered with `pproc::shared!`.

use std::any::Any;

/// Creates a shared value from its serialized initial value.
pub(crate) type Create = fn(&[u8]) -> Result<Box<dyn Any + Send>, String>;
/// Runs an exposed method on a shared value: its name, its serialized
/// arguments; returns its serialized result.
pub(crate) type Dispatch = fn(&mut (dyn Any + Send), &str, &[u8]) -> Result<Vec<u8>, String>;

/// A registered shared type: its name, the methods it exposes, and how the
/// manager creates one and calls its methods.
///
/// Not public API: `pproc::shared!` submits one per type.
#[doc(hidden)]
#[derive(Debug)]
pub struct Entry {
    pub(crate) name: &'static str,
    pub(crate) methods: &'static [&'static str],
    pub(crate) create: Create,
    pub(crate) dispatch: Dispatch,
}

impl Entry {
    /// A registration.
    #[must_use]
    pub const fn new(
        name: &'static str,
        methods: &'static [&'static str],
        create: Create,
        dispatch: Dispatch,
    ) -> Self {
        Self {
            name,
            methods,
            create,
            dispatch,
        }
    }
}

inventory::collect!(Entry);

/// The type registered as `name`.
pub(crate) fn lookup(name: &str) -> Option<&'static Entry> {
    inventory::iter::<Entry>
        .into_iter()
        .find(|entry| entry.name == name)
}

/// Creates the shared value from its serialized initial value.
///
/// Not public API: used by code that `pproc::shared!` generates.
#[doc(hidden)]
pub fn create<T>(init: &[u8]) -> Result<Box<dyn Any + Send>, String>
where
    T: serde::de::DeserializeOwned + Send + 'static,
{
    crate::conn::decode::<T>(init)
        .map(|value| Box::new(value) as Box<dyn Any + Send>)
        .map_err(|err| err.to_string())
}

/// Decodes a method's arguments, calls it on the shared value, encodes its
/// result.
///
/// Not public API: used by code that `pproc::shared!` generates.
#[doc(hidden)]
pub fn invoke<T, A, R>(
    value: &mut (dyn Any + Send),
    args: &[u8],
    f: impl FnOnce(&mut T, A) -> R,
) -> Result<Vec<u8>, String>
where
    T: 'static,
    A: serde::de::DeserializeOwned,
    R: serde::Serialize,
{
    let value = value
        .downcast_mut::<T>()
        .ok_or_else(|| format!("the shared value is not a `{}`", std::any::type_name::<T>()))?;
    let args = crate::conn::decode::<A>(args)
        .map_err(|err| format!("arguments that do not decode: {err}"))?;
    crate::conn::encode(&f(value, args)).map_err(|err| err.to_string())
}
