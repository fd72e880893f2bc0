//! User types shared through a manager, registered with `pproc::shared!`:
//! the proxy [`Shared`], and the registry the manager finds their methods
//! in ([`SharedEntry`]).

use std::any::Any;
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{CallResult, Caller, Fault, ServerObject, Table};
use crate::wire::codec::{decode, encode};
use crate::error::Result;
use crate::manager::client::proxy_type;

/// What a shared value of a registered type does: the methods it exposes,
/// by name, since each type exposes its own.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum CustomOp {
    /// Answers the method's result.
    Call { method: String, args: Vec<u8> },
}

/// What creating a shared value of a registered type takes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct NewCustom {
    /// The name the type is registered under.
    pub(crate) name: String,
    /// Its initial value, serialized.
    pub(crate) value: Vec<u8>,
}

/// A type of your own that a manager can hold, registered with
/// `pproc::shared!`, which implements this trait.
///
/// # Examples
///
/// `shared!` registers the type at module level, so the example has a
/// `main` of its own.
///
/// ```
/// use pproc::manager::SharedType;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Score(u32);
///
/// impl Score {
///     fn get(&self) -> u32 {
///         self.0
///     }
/// }
///
/// pproc::shared! {
///     /// What a shared `Score` offers.
///     trait ScoreProxy for Score {
///         fn get() -> u32;
///     }
/// }
///
/// fn main() -> pproc::Result<()> {
///     // Registered under its module path and name.
///     assert!(Score::NAME.ends_with("::Score"));
///     let manager = pproc::Manager::start()?;
///     assert_eq!(manager.shared(&Score(7))?.get()?, 7);
///     Ok(())
/// }
/// ```
pub trait SharedType: Serialize + DeserializeOwned + Send + 'static {
    /// The name it is registered under: its module path and name.
    const NAME: &'static str;
}

proxy_type!(
    /// A shared value of a type of your own, registered with
    /// `pproc::shared!`: only the methods it exposes can be
    /// called, through the trait that `shared!` generates or
    /// [`call`](Self::call).
    ///
    /// # Examples
    ///
    /// `shared!` registers the type at module level, so the example has a
    /// `main` of its own.
    ///
    /// ```
    /// use pproc::manager::Shared;
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Counter {
    ///     n: u64,
    /// }
    ///
    /// impl Counter {
    ///     fn bump(&mut self, by: u64) -> u64 {
    ///         self.n += by;
    ///         self.n
    ///     }
    /// }
    ///
    /// pproc::shared! {
    ///     /// What a shared `Counter` offers.
    ///     trait CounterProxy for Counter {
    ///         fn bump(by: u64) -> u64;
    ///     }
    /// }
    ///
    /// fn main() -> pproc::Result<()> {
    ///     let manager = pproc::Manager::start()?;
    ///     let counter: Shared<Counter> = manager.shared(&Counter { n: 0 })?;
    ///     assert_eq!(counter.bump(2)?, 2); // through `CounterProxy`
    ///     assert_eq!(counter.call::<_, u64>("bump", &(3_u64,))?, 5);
    ///     assert!(counter.call::<_, ()>("reset", &()).is_err(), "not exposed");
    ///     Ok(())
    /// }
    /// ```
    Shared<T>
);

impl<T: SharedType> Shared<T> {
    /// Calls the exposed method `method` with `args` (a tuple of its
    /// arguments) in the manager, and returns its result. The trait that
    /// `pproc::shared!` generates calls this, with the types
    /// checked.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`](crate::Error::Remote) if `T` does not expose
    /// `method` (the message names the methods it exposes), or as
    /// [`Map::insert`](crate::manager::Map::insert).
    pub fn call<A: Serialize, R: DeserializeOwned>(&self, method: &str, args: &A) -> Result<R> {
        decode(&self.proxy.ask_raw(CustomOp::Call {
            method: method.to_owned(),
            args: encode(args)?,
        })?)
    }
}

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
pub struct SharedEntry {
    name: &'static str,
    methods: &'static [&'static str],
    create: Create,
    dispatch: Dispatch,
}

impl SharedEntry {
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

inventory::collect!(SharedEntry);

/// The type registered as `name`.
fn lookup(name: &str) -> Option<&'static SharedEntry> {
    inventory::iter::<SharedEntry>
        .into_iter()
        .find(|entry| entry.name == name)
}

/// Creates the shared value from its serialized initial value.
///
/// Not public API: used by code that `pproc::shared!` generates.
#[doc(hidden)]
pub fn shared_create<T>(init: &[u8]) -> Result<Box<dyn Any + Send>, String>
where
    T: DeserializeOwned + Send + 'static,
{
    decode::<T>(init)
        .map(|value| Box::new(value) as Box<dyn Any + Send>)
        .map_err(|err| err.to_string())
}

/// Decodes a method's arguments, calls it on the shared value, encodes its
/// result.
///
/// Not public API: used by code that `pproc::shared!` generates.
#[doc(hidden)]
pub fn shared_invoke<T, A, R>(
    value: &mut (dyn Any + Send),
    args: &[u8],
    f: impl FnOnce(&mut T, A) -> R,
) -> Result<Vec<u8>, String>
where
    T: 'static,
    A: DeserializeOwned,
    R: Serialize,
{
    let value = value
        .downcast_mut::<T>()
        .ok_or_else(|| format!("the shared value is not a `{}`", std::any::type_name::<T>()))?;
    let args =
        decode::<A>(args).map_err(|err| format!("arguments that do not decode: {err}"))?;
    encode(&f(value, args)).map_err(|err| err.to_string())
}

/// A value of a registered type in the server, with its registration.
pub(crate) struct CustomState {
    value: Mutex<Box<dyn Any + Send>>,
    entry: &'static SharedEntry,
}

impl ServerObject for CustomState {
    const NAME: &'static str = "custom value";
    type New = NewCustom;
    type Op = CustomOp;

    fn build(new: NewCustom, _: &Table) -> Result<Self, String> {
        let NewCustom { name, value } = new;
        let entry = lookup(&name).ok_or_else(|| {
            format!("`{name}` is not registered with `pproc::shared!` in the manager's program")
        })?;
        Ok(Self {
            value: Mutex::new((entry.create)(&value)?),
            entry,
        })
    }

    fn call(&self, op: CustomOp, _: &Caller<'_>) -> CallResult {
        let CustomOp::Call { method, args } = op;
        let mut value = crate::lock::lock(&self.value);
        let entry = self.entry;
        if !entry.methods.contains(&method.as_str()) {
            return Err(Fault::Message(format!(
                "`{method}` is not exposed by `{}`; exposed: {}",
                entry.name,
                entry.methods.join(", ")
            )));
        }
        (entry.dispatch)(value.as_mut(), &method, &args).map_err(Fault::Message)
    }
}
