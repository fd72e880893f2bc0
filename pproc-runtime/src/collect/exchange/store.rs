//! What users implement and see of an exchange: the [`Store`] a result
//! goes to, the [`Route`] by which a function's values reach it (checked
//! when the program compiles), the [`Origin`] a value came from, a
//! [`Failure`]; and the job that carries a call's static types to its
//! store.

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::parent::delivery::Delivery;
use crate::wire::codec::decode;

/// Where a stored value came from.
///
/// # Examples
///
/// ```
/// use pproc::{parallel, Exchange, Origin, Store};
///
/// #[parallel]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// /// Each value with the index of its call, and whether it had a child.
/// #[derive(Default)]
/// struct Log(Vec<(usize, u64, bool)>);
///
/// impl Store<u64> for Log {
///     fn store(&mut self, value: u64, origin: &Origin<'_>) -> pproc::Result<()> {
///         assert_eq!(origin.name(), square::NAME);
///         self.0.push((origin.index(), value, origin.pid().is_some()));
///         Ok(())
///     }
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let mut ex = Exchange::new(Log::default());
/// for x in [3, 4, 5] {
///     ex.start(square::call(x))?;
/// }
/// let mut log = ex.finish()?.0;
/// log.sort_unstable();
/// assert_eq!(log, [(0, 9, true), (1, 16, true), (2, 25, true)]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Origin<'a> {
    name: &'a str,
    index: usize,
    pid: Option<u32>,
}

impl Origin<'_> {
    /// The registered name of the function that produced the value.
    #[must_use]
    pub fn name(&self) -> &str {
        self.name
    }

    /// The position of the call among those given to the exchange (by
    /// [`Exchange::start`](crate::Exchange::start) or [`Exchange::add`](crate::Exchange::add)), from 0.
    #[must_use]
    pub fn index(&self) -> usize {
        self.index
    }

    /// The child's process id, or `None` if the call never started.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }
}

/// A call of an exchange that failed, as a `#[store(errors)]` field
/// collects it.
///
/// # Examples
///
/// ```
/// use pproc::{parallel, Exchange, Failure};
///
/// #[parallel]
/// fn invert(x: u32) -> u32 {
///     100 / x
/// }
///
/// #[derive(Default, Exchange)]
/// struct Results {
///     #[store]
///     values: Vec<u32>,
///     #[store(errors)]
///     failures: Vec<Failure>,
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let mut ex = Exchange::new(Results::default());
/// for x in [5, 0, 20] {
///     ex.start(invert::call(x))?;
/// }
/// let results = ex.finish()?; // the failure did not stop the others
/// assert_eq!(results.values.len(), 2);
/// let failure = &results.failures[0];
/// assert_eq!((failure.name.as_str(), failure.index), (invert::NAME, 1));
/// assert!(failure.error.is_panic() && failure.pid.is_some());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct Failure {
    /// The registered name of the function.
    pub name: String,
    /// The call's index (see [`Origin::index`]).
    pub index: usize,
    /// The child's process id, or `None` if the call never started.
    pub pid: Option<u32>,
    /// What went wrong.
    pub error: Error,
}

impl Failure {
    /// The failure of the call at `origin`.
    #[must_use]
    pub fn new(error: Error, origin: &Origin<'_>) -> Self {
        Self {
            name: origin.name.to_owned(),
            index: origin.index,
            pid: origin.pid,
            error,
        }
    }
}

/// What an [`Exchange`](crate::Exchange) does with each result: pprocess's `store_data`.
///
/// `#[derive(Exchange)]` implements it for a struct of collections (one
/// that routes values by function gets a [`Route`] for each function
/// instead); it is implemented for `Vec<T>`, which keeps results in the
/// order they arrive.
///
/// # Examples
///
/// ```
/// use pproc::{parallel, Error, Exchange, Origin, Store};
///
/// #[parallel]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// /// Sums the results and counts the failures instead of stopping.
/// #[derive(Default)]
/// struct Sum {
///     total: u64,
///     failures: usize,
/// }
///
/// impl Store<u64> for Sum {
///     fn store(&mut self, value: u64, _origin: &Origin<'_>) -> pproc::Result<()> {
///         self.total += value;
///         Ok(())
///     }
///
///     fn failed(&mut self, _error: Error, _origin: &Origin<'_>) -> pproc::Result<()> {
///         self.failures += 1;
///         Ok(())
///     }
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let mut ex = Exchange::new(Sum::default()).limit(2);
/// for i in 0..10 {
///     ex.start(square::call(i))?;
/// }
/// let sum = ex.finish()?;
/// assert_eq!((sum.total, sum.failures), (285, 0));
/// # Ok(())
/// # }
/// ```
pub trait Store<T> {
    /// Stores one result.
    ///
    /// # Errors
    ///
    /// An error stops the exchange, as a failed call does by default.
    fn store(&mut self, value: T, origin: &Origin<'_>) -> Result<()>;

    /// Called when a call fails (a panic, a kill, a result that does not
    /// decode, a child that could not start). The default returns the
    /// error, which stops the exchange: the other children are killed and
    /// reaped and the method that met the failure returns it. Return
    /// `Ok(())` to record the failure and go on.
    ///
    /// # Errors
    ///
    /// As [`store`](Self::store).
    fn failed(&mut self, error: Error, origin: &Origin<'_>) -> Result<()> {
        let _ = origin;
        Err(error)
    }

    /// Called once when a call is over, after its value (or its last
    /// value, with [`Exchange::continuous`](crate::Exchange::continuous)) or its failure. The default
    /// does nothing; a store that counts calls in flight, or closes a
    /// record per call, uses it.
    ///
    /// # Errors
    ///
    /// As [`store`](Self::store).
    fn ended(&mut self, origin: &Origin<'_>) -> Result<()> {
        let _ = origin;
        Ok(())
    }
}

impl<T> Store<T> for Vec<T> {
    fn store(&mut self, value: T, _origin: &Origin<'_>) -> Result<()> {
        self.push(value);
        Ok(())
    }
}

/// The route of the values of a function, `Self`, of type `T`, into the
/// store `S`: what [`Exchange::start`](crate::Exchange::start) asks of a
/// call's function ([`Function`](crate::Function), or [`ByName`](crate::ByName)).
///
/// Every function's values reach every [`Store<T>`]. `#[derive(Exchange)]`
/// on a struct whose fields take `#[store(from = f)]` implements `Route<S,
/// f::Output>` for each such `f::Fn` instead, and no `Store`: a call of a
/// function that no field takes is then an error when the program
/// compiles, not when its value arrives. The functions are [`Store`]'s.
///
/// # Examples
///
/// A store that takes the values of two functions, each its own way, and
/// those of no other:
///
/// ```
/// use pproc::{parallel, Exchange, Origin, Route};
///
/// #[parallel]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// #[parallel]
/// fn label(x: u64) -> String {
///     format!("#{x}")
/// }
///
/// #[derive(Default)]
/// struct Report {
///     total: u64,
///     labels: Vec<String>,
/// }
///
/// impl Route<Report, u64> for square::Fn {
///     fn store(report: &mut Report, value: u64, _: &Origin<'_>) -> pproc::Result<()> {
///         report.total += value;
///         Ok(())
///     }
/// }
///
/// impl Route<Report, String> for label::Fn {
///     fn store(report: &mut Report, value: String, _: &Origin<'_>) -> pproc::Result<()> {
///         report.labels.push(value);
///         Ok(())
///     }
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let mut ex = Exchange::new(Report::default());
/// ex.start(square::call(3))?;
/// ex.start(square::call(4))?;
/// ex.start(label::call(5))?;
/// let report = ex.finish()?;
/// assert_eq!(report.total, 25);
/// assert_eq!(report.labels, ["#5"]);
/// # Ok(())
/// # }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{S}` does not take the values of `{Self}`",
    label = "`{S}` takes no `{T}` from `{Self}`",
    note = "a `Store<T>` takes the values of type `T` of every function; a struct that derives `Exchange` with `#[store(from = f)]` fields takes those of the functions its fields name, and a call built by name (`Call::new`) names none"
)]
pub trait Route<S, T> {
    /// Stores one value.
    ///
    /// # Errors
    ///
    /// As [`Store::store`].
    fn store(store: &mut S, value: T, origin: &Origin<'_>) -> Result<()>;

    /// Called when a call fails; the default returns the error, which stops
    /// the exchange.
    ///
    /// # Errors
    ///
    /// As [`Store::failed`].
    fn failed(store: &mut S, error: Error, origin: &Origin<'_>) -> Result<()> {
        let _ = (store, origin);
        Err(error)
    }

    /// Called once when a call is over; the default does nothing.
    ///
    /// # Errors
    ///
    /// As [`Store::ended`].
    fn ended(store: &mut S, origin: &Origin<'_>) -> Result<()> {
        let _ = (store, origin);
        Ok(())
    }
}

// Not recommended: a function that no field of a routing store takes is
// then reported as `Route`, with its message, rather than as the `Store`
// bound below.
#[diagnostic::do_not_recommend]
impl<S: Store<T>, F, T> Route<S, T> for F {
    fn store(store: &mut S, value: T, origin: &Origin<'_>) -> Result<()> {
        store.store(value, origin)
    }

    fn failed(store: &mut S, error: Error, origin: &Origin<'_>) -> Result<()> {
        store.failed(error, origin)
    }

    fn ended(store: &mut S, origin: &Origin<'_>) -> Result<()> {
        store.ended(origin)
    }
}

/// Decodes a value with its own type and hands it to the store.
type Sink<S> = fn(&mut S, Result<&[u8]>, &Origin<'_>) -> Result<()>;

fn sink<S, F: Route<S, T>, T: DeserializeOwned>(
    store: &mut S,
    result: Result<&[u8]>,
    origin: &Origin<'_>,
) -> Result<()> {
    match result.and_then(decode::<T>) {
        Ok(value) => F::store(store, value, origin),
        Err(error) => F::failed(store, error, origin),
    }
}

/// Tells the store that a call is over.
type End<S> = fn(&mut S, &Origin<'_>) -> Result<()>;

/// A call the exchange was given: what it runs and where its values go.
pub(super) struct Job<S> {
    pub(super) name: String,
    pub(super) index: usize,
    sink: Sink<S>,
    end: End<S>,
    /// Whether its values arrive on the channel ([`Streams`](crate::Streams)) rather than
    /// as its return value.
    pub(super) streams: bool,
    /// How many values it has delivered.
    pub(super) values: usize,
}

impl<S> Job<S> {
    pub(super) fn new<F: Route<S, T>, T: DeserializeOwned, K: Delivery>(
        name: String,
        index: usize,
    ) -> Self {
        Self {
            name,
            index,
            sink: sink::<S, F, T>,
            end: F::ended,
            streams: K::STREAMS,
            values: 0,
        }
    }

    pub(super) fn origin(&self, pid: Option<u32>) -> Origin<'_> {
        Origin {
            name: &self.name,
            index: self.index,
            pid,
        }
    }

    /// Hands one value of the call (or its failure) to the store.
    pub(super) fn deliver(
        &mut self,
        store: &mut S,
        value: Result<&[u8]>,
        pid: Option<u32>,
    ) -> Result<()> {
        self.values += 1;
        (self.sink)(store, value, &self.origin(pid))
    }

    /// Tells the store that the call is over.
    pub(super) fn end(&self, store: &mut S, pid: Option<u32>) -> Result<()> {
        (self.end)(store, &self.origin(pid))
    }
}
