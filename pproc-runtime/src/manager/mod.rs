//! Shared objects in a server process (multiprocessing's manager objects),
//! reached through proxies, locally or over the network with an
//! authentication key.
//!
//! A [`Manager`] is a server process that owns shared objects; this
//! program, its children and other programs use them through typed
//! proxies: [`Map`], [`List`], [`Queue`], [`Value`], [`Namespace`],
//! [`Lock`] (also reentrant), [`Semaphore`] (also bounded), [`Condition`],
//! [`Event`], [`Array`] of numbers, and [`Shared`] for types of your own
//! registered with `pproc::shared!`. Each call on a proxy is one
//! round trip to the manager, which runs it under the object's lock: many
//! processes hammering one object lose no update.
//!
//! Proxies are serializable: pass one to a `#[parallel]` function and the
//! child uses the same object. Each proxy has its own connection, opened on
//! first use; a lock is held by the proxy that acquired it, and a lock or
//! semaphore held by a client that goes away (its process died) is given
//! back, waking the next waiter.
//!
//! ```
//! use pproc::{parallel, manager::{Manager, Map}};
//!
//! #[parallel]
//! fn tally(words: Map<String, u64>, text: String) {
//!     for word in text.split_whitespace() {
//!         words.add(&word.to_owned(), 1).unwrap();
//!     }
//! }
//!
//! # fn main() -> pproc::Result<()> {
//! let manager = Manager::start()?;
//! let words = manager.map::<String, u64>()?;
//! let handles = ["a b a", "b a c"]
//!     .map(|text| tally::start(words.clone(), text.into()).unwrap());
//! for h in handles {
//!     h.join()?;
//! }
//! assert_eq!(words.get(&"a".into())?, Some(3));
//! assert_eq!(words.len()?, 3);
//! manager.shutdown()?;
//! # Ok(())
//! # }
//! ```
//!
//! # Across machines
//!
//! [`Manager::serve`] runs a manager on a TCP address, and
//! [`Manager::connect`] reaches it from another program, here or on
//! another machine, with the same key. Both ends authenticate each other by
//! challenge and response (HMAC-SHA256 of random challenges, compared in
//! constant time); nothing is served, and nothing larger than a challenge
//! is read, before a client has proved it knows the key.
//!
//! **The key authenticates; it does not encrypt.** Everything after the
//! handshake, your values included, crosses the network in the clear, and
//! someone on the path could read it or take over an authenticated
//! connection. On a network you do not trust, bind the manager to loopback
//! and reach it through an encrypted tunnel (`ssh -L`, `WireGuard`, `stunnel`),
//! and use a long random key (see [`Manager::key`]).

mod auth;
mod client;
mod number;
pub(crate) mod objects;
mod protocol;
mod server;
mod transport;

use std::fmt;
use std::net::ToSocketAddrs;
use std::sync::Mutex;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use number::{NumKind, Number};
pub use objects::array::Array;
pub use objects::condition::Condition;
pub use objects::custom::{Shared, SharedType};
pub use objects::event::Event;
pub use objects::list::List;
pub use objects::lock::{Guard, Lock};
pub use objects::map::Map;
pub use objects::namespace::Namespace;
pub use objects::queue::Queue;
pub use objects::semaphore::Semaphore;
pub use objects::value::Value;
pub use transport::Address;

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use server::{fuzz_handshake, fuzz_requests};

use crate::child::prelude::first_frame;
use crate::error::{Error, Result};
use crate::lock::lock;
use crate::parent::builder::Builder;
use crate::parent::handle::Handle;
use crate::wire::codec::{decode, encode};
use crate::wire::conn::Conn;
use crate::wire::frame::EXIT_PROTOCOL;
use crate::wire::frame::tag;
use crate::wire::spec::Mode;
use client::{Client, Line, Proxy, Target};
use objects::custom::NewCustom;
use objects::lock::NewLock;
use objects::semaphore::NewSemaphore;
use protocol::{Kind, Op};
use transport::Listener;

/// The manager process, which reports where it listens (or why it cannot).
type ServerProcess = Handle<(), (), std::result::Result<Address, String>>;

/// A manager: a server process that owns shared objects (multiprocessing's
/// `Manager`), and a connection to it that creates them.
///
/// See the [module documentation](self). A child process reaches the same
/// manager with [`connect_to`](Self::connect_to), given its
/// [`address`](Self::address) and [`key`](Self::key): [`start`](Self::start)
/// shows a `#[parallel]` function doing so.
///
/// # Examples
///
/// ```
/// # fn main() -> pproc::Result<()> {
/// let manager = pproc::Manager::start()?;
/// let hits = manager.named("hits").value(&0_u64)?;
/// hits.add(2)?;
/// // The same name, the same object: for this program, its children and
/// // any program that connects with the key.
/// assert_eq!(manager.named("hits").value(&0_u64)?.get()?, 2);
/// manager.shutdown()?;
/// assert!(hits.get().is_err(), "its objects are gone with it");
/// # Ok(())
/// # }
/// ```
#[must_use = "a `Manager` shuts its server down when it is dropped"]
pub struct Manager {
    target: Target,
    line: Line,
    /// The server process, when this manager started it.
    process: Mutex<Option<ServerProcess>>,
    pid: Option<u32>,
}

impl Manager {
    /// Starts a manager process for this program and its children, on a
    /// local address (Linux's abstract socket namespace) with a random
    /// 32-byte key. It dies with this program.
    ///
    /// # Examples
    ///
    /// ```
    /// use pproc::{parallel, Manager};
    ///
    /// #[parallel]
    /// fn bump(address: pproc::manager::Address, key: Vec<u8>) -> u64 {
    ///     let manager = Manager::connect_to(address, key).unwrap();
    ///     manager.named("hits").value(&0_u64).unwrap().add(1).unwrap()
    /// }
    ///
    /// # fn main() -> pproc::Result<()> {
    /// let manager = Manager::start()?;
    /// let hits = manager.named("hits").value(&0_u64)?;
    /// let (address, key) = (manager.address().clone(), manager.key().to_vec());
    /// bump::start(address, key)?.join()?;
    /// assert_eq!(hits.get()?, 1);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] if the process cannot start, [`Error::Io`] if it
    /// cannot listen.
    pub fn start() -> Result<Self> {
        let nonce = auth::random().map_err(Error::Io)?;
        let name = nonce[..8].iter().fold(String::new(), |mut name, b| {
            use fmt::Write as _;
            let _ = write!(name, "{b:02x}");
            name
        });
        let address = Address::Local(format!("pproc-manager-{}-{name}", std::process::id()));
        Self::launch(&address, auth::random().map_err(Error::Io)?.to_vec())
    }

    /// Starts a manager process that listens on the TCP address `addr`
    /// (port 0 picks a free one: see [`address`](Self::address)), for
    /// clients that know `key`. It dies with this program.
    ///
    /// Read the [module documentation](self#across-machines) on what the
    /// key does and does not protect.
    ///
    /// # Examples
    ///
    /// ```
    /// use pproc::Manager;
    ///
    /// # fn main() -> pproc::Result<()> {
    /// // Loopback, a free port: another program on this machine connects with the key.
    /// let server = Manager::serve("127.0.0.1:0", b"a shared secret")?;
    /// let pproc::manager::Address::Tcp(at) = server.address().clone() else { unreachable!() };
    /// let client = Manager::connect(at, b"a shared secret")?;
    /// client.named("greeting").value(&"hello".to_string())?;
    /// assert_eq!(server.named("greeting").value(&String::new())?.get()?, "hello");
    /// assert!(Manager::connect(at, b"a wrong key").is_err());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    pub fn serve(addr: impl ToSocketAddrs, key: impl AsRef<[u8]>) -> Result<Self> {
        Self::launch(&Address::tcp(addr)?, key.as_ref().to_vec())
    }

    /// Runs a manager in this process, on `address`, until an error stops
    /// it (multiprocessing's `serveForever`): for a program whose only job
    /// is to serve. Clients create what they share by name
    /// ([`named`](Self::named)).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if it cannot listen, or if accepting fails for good.
    pub fn serve_forever(address: &Address, key: impl AsRef<[u8]>) -> Result<()> {
        let listener = Listener::bind(address).map_err(Error::Io)?;
        server::Server::new(key.as_ref().to_vec())
            .run(&listener)
            .map_err(Error::Io)
    }

    /// Connects to the manager at the TCP address `addr` with `key`
    /// (multiprocessing's `fromAddress`).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if nothing listens there, [`Error::Authentication`] if
    /// the keys differ.
    pub fn connect(addr: impl ToSocketAddrs, key: impl AsRef<[u8]>) -> Result<Self> {
        Self::connect_to(Address::tcp(addr)?, key)
    }

    /// Connects to the manager at `address` with `key`.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub fn connect_to(address: Address, key: impl AsRef<[u8]>) -> Result<Self> {
        let target = Target {
            address,
            key: key.as_ref().to_vec(),
        };
        let client = Client::connect(&target.address, &target.key)?;
        Ok(Self {
            target,
            line: Line(Mutex::new(Some(client))),
            process: Mutex::new(None),
            pid: None,
        })
    }

    fn launch(address: &Address, key: Vec<u8>) -> Result<Self> {
        let args = encode(&(address, &key))?;
        let handle = Builder::new().start_role(Mode::Manager, &args)?;
        let handle: ServerProcess = handle.cast();
        let address = handle.recv()?.map_err(|message| {
            Error::Io(std::io::Error::other(format!(
                "the manager cannot listen on {address}: {message}"
            )))
        })?;
        let mut manager = Self::connect_to(address, key)?;
        manager.pid = Some(handle.pid());
        *lock(&manager.process) = Some(handle);
        Ok(manager)
    }

    /// Where the manager listens.
    #[must_use]
    pub fn address(&self) -> &Address {
        &self.target.address
    }

    /// The key that clients must know. [`start`](Self::start) picks 32
    /// random bytes; keep it secret.
    #[must_use]
    pub fn key(&self) -> &[u8] {
        &self.target.key
    }

    /// The manager process's id, when this manager started it.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Stops the manager process, if this manager started it; its objects
    /// are gone, and proxies to them fail with [`Error::Disconnected`] or
    /// [`Error::Io`]. Calling it again does nothing; a manager reached with
    /// [`connect`](Self::connect) is left running.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> pproc::Result<()> {
    /// let manager = pproc::Manager::start()?;
    /// let count = manager.value(&1_u32)?;
    /// manager.shutdown()?;
    /// assert!(count.get().is_err(), "its objects are gone");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the process could not be stopped.
    pub fn shutdown(&self) -> Result<()> {
        let process = lock(&self.process).take();
        if let Some(process) = process {
            process.kill()?;
            // Reaps it.
            drop(process);
        }
        Ok(())
    }

    /// Objects by name: creators that return the object of that name if it
    /// exists (checking it is of the same kind and types), and create it
    /// otherwise, with the initial values and capacity given (ignored for an
    /// object that exists). Programs that connect to one manager share
    /// objects so. Objects, named or not, live as long as the manager.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> pproc::Result<()> {
    /// let manager = pproc::Manager::start()?;
    /// let first = manager.named("jobs").queue::<u32>(None)?;
    /// // The same queue: its name is taken, so the capacity given is ignored.
    /// let again = manager.named("jobs").queue::<u32>(Some(1))?;
    /// first.put(&7)?;
    /// assert_eq!(again.get()?, 7);
    /// // Another kind under a taken name is refused.
    /// assert!(manager.named("jobs").value(&0_u32).is_err());
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn named(&self, name: impl Into<String>) -> Named<'_> {
        Named {
            manager: self,
            name: name.into(),
        }
    }

    fn create<P>(
        &self,
        kind: Kind,
        types: &str,
        name: Option<String>,
        wrap: fn(Proxy) -> P,
    ) -> Result<P> {
        let op = Op::Create {
            kind,
            types: types.to_owned(),
            name,
        };
        let id: u64 = decode(&self.line.ask(&self.target, &op)?)?;
        Ok(wrap(Proxy {
            target: self.target.clone(),
            id,
            line: Line::default(),
        }))
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("address", &self.target.address)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

/// Creators of objects by name, from [`Manager::named`].
///
/// A program that connects to the manager (a child, as in
/// [`Manager::start`], or another program) finds an object by its name.
///
/// # Examples
///
/// ```
/// # fn main() -> pproc::Result<()> {
/// let manager = pproc::Manager::start()?;
/// let totals = manager.named("totals").map::<String, u32>()?;
/// totals.insert(&"ada".into(), &1)?;
/// let again = manager.named("totals").map::<String, u32>()?;
/// assert_eq!(again.get(&"ada".into())?, Some(1));
/// // The name is taken by a map of other types.
/// assert!(manager.named("totals").map::<String, i64>().is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Named<'a> {
    manager: &'a Manager,
    name: String,
}

/// The creators, on [`Manager`] (a new object each time) and [`Named`]
/// (the object of that name).
macro_rules! creators {
    ($on:ty, $get:literal, |$this:ident| ($manager:expr, $name:expr)) => {
        impl $on {
            /// A shared map.
            ///
            /// # Examples
            ///
            /// ```
            /// # fn main() -> pproc::Result<()> {
            /// let manager = pproc::Manager::start()?;
            #[doc = concat!("let counts = ", $get, ".map::<String, u32>()?;")]
            /// counts.insert(&"apples".to_string(), &3)?;
            /// assert_eq!(counts.add(&"apples".to_string(), 2)?, 5);
            /// assert_eq!(counts.get(&"pears".to_string())?, None);
            /// # Ok(())
            /// # }
            /// ```
            ///
            /// # Errors
            ///
            /// [`Error::Remote`] if a named object of another kind or
            /// types exists; [`Error::Disconnected`] if the manager is gone.
            pub fn map<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned>(
                &self,
            ) -> Result<Map<K, V>> {
                let $this = self;
                $manager.create(
                    Kind::Map(()),
                    std::any::type_name::<Map<K, V>>(),
                    $name,
                    Map::wrap,
                )
            }

            /// A shared list holding `values`.
            ///
            /// # Examples
            ///
            /// ```
            /// # fn main() -> pproc::Result<()> {
            /// let manager = pproc::Manager::start()?;
            #[doc = concat!("let names = ", $get, ".list(&[\"ada\".to_string()])?;")]
            /// names.push(&"grace".to_string())?;
            /// assert_eq!(names.to_vec()?, ["ada", "grace"]);
            /// # Ok(())
            /// # }
            /// ```
            ///
            /// # Errors
            ///
            /// As [`map`](Self::map).
            pub fn list<'v, T: Serialize + DeserializeOwned + 'v>(
                &self,
                values: impl IntoIterator<Item = &'v T>,
            ) -> Result<List<T>> {
                let $this = self;
                let values = values.into_iter().map(encode).collect::<Result<Vec<_>>>()?;
                $manager.create(
                    Kind::List(values),
                    std::any::type_name::<List<T>>(),
                    $name,
                    List::wrap,
                )
            }

            /// A shared queue, holding at most `capacity` values if set.
            ///
            /// # Examples
            ///
            /// ```
            /// # fn main() -> pproc::Result<()> {
            /// let manager = pproc::Manager::start()?;
            #[doc = concat!("let jobs = ", $get, ".queue::<u32>(Some(8))?;")]
            /// jobs.put(&7)?;
            /// assert_eq!(jobs.get()?, 7);
            /// assert_eq!(jobs.try_get()?, None);
            /// # Ok(())
            /// # }
            /// ```
            ///
            /// # Errors
            ///
            /// As [`map`](Self::map).
            pub fn queue<T: Serialize + DeserializeOwned>(
                &self,
                capacity: Option<usize>,
            ) -> Result<Queue<T>> {
                let $this = self;
                $manager.create(
                    Kind::Queue(capacity),
                    std::any::type_name::<Queue<T>>(),
                    $name,
                    Queue::wrap,
                )
            }

            /// A shared value, starting as `value`.
            ///
            /// # Examples
            ///
            /// ```
            /// # fn main() -> pproc::Result<()> {
            /// let manager = pproc::Manager::start()?;
            #[doc = concat!("let total = ", $get, ".value(&10_u64)?;")]
            /// assert_eq!(total.add(5)?, 15);
            /// total.set(&0)?;
            /// assert_eq!(total.get()?, 0);
            /// # Ok(())
            /// # }
            /// ```
            ///
            /// # Errors
            ///
            /// As [`map`](Self::map).
            pub fn value<T: Serialize + DeserializeOwned>(&self, value: &T) -> Result<Value<T>> {
                let $this = self;
                $manager.create(
                    Kind::Value(encode(value)?),
                    std::any::type_name::<Value<T>>(),
                    $name,
                    Value::wrap,
                )
            }

            /// A shared namespace.
            ///
            /// # Examples
            ///
            /// ```
            /// # fn main() -> pproc::Result<()> {
            /// let manager = pproc::Manager::start()?;
            #[doc = concat!("let config = ", $get, ".namespace()?;")]
            /// config.set("depth", &3_u32)?;
            /// assert_eq!(config.get::<u32>("depth")?, Some(3));
            /// assert_eq!(config.names()?, ["depth"]);
            /// # Ok(())
            /// # }
            /// ```
            ///
            /// # Errors
            ///
            /// As [`map`](Self::map).
            pub fn namespace(&self) -> Result<Namespace> {
                let $this = self;
                $manager.create(Kind::Namespace(()), "Namespace", $name, Namespace::wrap)
            }

            /// A shared lock (not reentrant: a proxy that holds it cannot
            /// take it again).
            ///
            /// # Examples
            ///
            /// ```
            /// # fn main() -> pproc::Result<()> {
            /// let manager = pproc::Manager::start()?;
            #[doc = concat!("let lock = ", $get, ".lock()?;")]
            /// {
            ///     let _held = lock.lock()?; // released when the guard drops
            /// }
            /// lock.acquire()?;
            /// lock.release()?;
            /// # Ok(())
            /// # }
            /// ```
            ///
            /// # Errors
            ///
            /// As [`map`](Self::map).
            pub fn lock(&self) -> Result<Lock> {
                let $this = self;
                $manager.create(
                    Kind::Lock(NewLock { reentrant: false }),
                    "Lock",
                    $name,
                    Lock::wrap,
                )
            }

            /// A shared reentrant lock: the proxy that holds it may take it
            /// again, and releases it as many times.
            ///
            /// # Examples
            ///
            /// ```
            /// # fn main() -> pproc::Result<()> {
            /// let manager = pproc::Manager::start()?;
            #[doc = concat!("let lock = ", $get, ".rlock()?;")]
            /// lock.acquire()?;
            /// lock.acquire()?; // again, by the same proxy
            /// lock.release()?;
            /// lock.release()?;
            /// # Ok(())
            /// # }
            /// ```
            ///
            /// # Errors
            ///
            /// As [`map`](Self::map).
            pub fn rlock(&self) -> Result<Lock> {
                let $this = self;
                $manager.create(
                    Kind::Lock(NewLock { reentrant: true }),
                    "RLock",
                    $name,
                    Lock::wrap,
                )
            }

            /// A shared semaphore with a count of `value`.
            ///
            /// # Examples
            ///
            /// ```
            /// # fn main() -> pproc::Result<()> {
            /// let manager = pproc::Manager::start()?;
            #[doc = concat!("let slots = ", $get, ".semaphore(2)?;")]
            /// slots.acquire()?;
            /// assert_eq!(slots.value()?, 1);
            /// slots.release()?;
            /// # Ok(())
            /// # }
            /// ```
            ///
            /// # Errors
            ///
            /// As [`map`](Self::map).
            pub fn semaphore(&self, value: u64) -> Result<Semaphore> {
                let $this = self;
                $manager.create(
                    Kind::Semaphore(NewSemaphore {
                        value,
                        bounded: false,
                    }),
                    "Semaphore",
                    $name,
                    Semaphore::wrap,
                )
            }

            /// A shared semaphore with a count of `value` that may never be
            /// released past it.
            ///
            /// # Examples
            ///
            /// ```
            /// # fn main() -> pproc::Result<()> {
            /// let manager = pproc::Manager::start()?;
            #[doc = concat!("let slots = ", $get, ".bounded_semaphore(1)?;")]
            /// slots.acquire()?;
            /// slots.release()?;
            /// assert!(slots.release().is_err(), "past its bound");
            /// # Ok(())
            /// # }
            /// ```
            ///
            /// # Errors
            ///
            /// As [`map`](Self::map).
            pub fn bounded_semaphore(&self, value: u64) -> Result<Semaphore> {
                let $this = self;
                $manager.create(
                    Kind::Semaphore(NewSemaphore {
                        value,
                        bounded: true,
                    }),
                    "BoundedSemaphore",
                    $name,
                    Semaphore::wrap,
                )
            }

            /// A shared condition variable over `lock` (a shared lock of
            /// this manager), or over a new reentrant lock of its own.
            ///
            /// # Examples
            ///
            /// ```
            /// # fn main() -> pproc::Result<()> {
            /// let manager = pproc::Manager::start()?;
            #[doc = concat!("let ready = ", $get, ".condition(None)?;")]
            /// ready.notify(1)?; // no one waits: nothing happens
            /// # Ok(())
            /// # }
            /// ```
            ///
            /// # Errors
            ///
            /// As [`map`](Self::map).
            pub fn condition(&self, lock: Option<&Lock>) -> Result<Condition> {
                let $this = self;
                let kind = Kind::Condition(lock.map(|l| l.proxy.id));
                $manager.create(kind, "Condition", $name, Condition::wrap)
            }

            /// A shared event, not set.
            ///
            /// # Examples
            ///
            /// ```
            /// # fn main() -> pproc::Result<()> {
            /// let manager = pproc::Manager::start()?;
            #[doc = concat!("let go = ", $get, ".event()?;")]
            /// assert!(!go.is_set()?);
            /// go.set()?;
            /// assert!(go.wait(None)?);
            /// # Ok(())
            /// # }
            /// ```
            ///
            /// # Errors
            ///
            /// As [`map`](Self::map).
            pub fn event(&self) -> Result<Event> {
                let $this = self;
                $manager.create(Kind::Event(()), "Event", $name, Event::wrap)
            }

            /// A shared array of numbers holding `values`.
            ///
            /// # Examples
            ///
            /// ```
            /// # fn main() -> pproc::Result<()> {
            /// let manager = pproc::Manager::start()?;
            #[doc = concat!("let hits = ", $get, ".array([0_i64; 4])?;")]
            /// assert_eq!(hits.add(2, 5)?, 5);
            /// assert_eq!(hits.to_vec()?, [0, 0, 5, 0]);
            /// # Ok(())
            /// # }
            /// ```
            ///
            /// # Errors
            ///
            /// As [`map`](Self::map).
            pub fn array<T: Number>(
                &self,
                values: impl IntoIterator<Item = T>,
            ) -> Result<Array<T>> {
                let $this = self;
                let values = values
                    .into_iter()
                    .map(|v| encode(&v))
                    .collect::<Result<Vec<_>>>()?;
                $manager.create(
                    Kind::Array(values),
                    std::any::type_name::<Array<T>>(),
                    $name,
                    Array::wrap,
                )
            }

            /// A shared value of a type of your own, registered with
            /// `pproc::shared!` in the manager's program, starting
            /// as `value`.
            ///
            /// # Errors
            ///
            /// [`Error::Remote`] if the manager's program does not register
            /// `T`, or as [`map`](Self::map).
            pub fn shared<T: SharedType>(&self, value: &T) -> Result<Shared<T>> {
                let $this = self;
                $manager.create(
                    Kind::Custom(NewCustom {
                        name: T::NAME.to_owned(),
                        value: encode(value)?,
                    }),
                    T::NAME,
                    $name,
                    Shared::wrap,
                )
            }
        }
    };
}

creators!(Manager, "manager", |this| (this, None));
creators!(Named<'_>, "manager.named(\"shared\")", |this| (
    this.manager,
    Some(this.name.clone())
));

/// The manager process's side: runs from the dispatcher with its channel to
/// the starting program. Returns the exit status.
pub(crate) fn serve_child(conn: &mut Conn) -> i32 {
    let Some(args) = first_frame(conn) else {
        return EXIT_PROTOCOL;
    };
    let Ok((address, key)) = args.decode::<(Address, Vec<u8>)>() else {
        return EXIT_PROTOCOL;
    };
    let bound = Listener::bind(&address).and_then(|l| l.address(&address).map(|a| (l, a)));
    let listener = match bound {
        Ok((listener, bound)) => {
            if conn.send_value(tag::DATA, &Ok::<_, String>(bound)).is_err() {
                return 0;
            }
            listener
        }
        Err(err) => {
            let _ = conn.send_value(tag::DATA, &Err::<Address, _>(err.to_string()));
            return 0;
        }
    };
    let server = server::Server::new(key);
    let serving = std::thread::Builder::new()
        .name("pproc-manager".into())
        .spawn(move || server.run(&listener));
    if serving.is_err() {
        return EXIT_PROTOCOL;
    }
    // Serve until the starting program closes the channel (it also kills
    // this process when it shuts the manager down, or dies).
    while !conn.is_eof() {
        if conn.wait(None, crate::wire::wait::Deadline::Never).is_err() || conn.fill().is_err() {
            break;
        }
    }
    0
}
