//! The registry of `#[parallel]` functions, filled by `inventory` before
//! `main`, and the build fingerprint that parent and child compare.

use std::sync::OnceLock;

use crate::process::setup;
use crate::wire::conn::SharedConn;
use crate::wire::shm::Payload;

/// What a registered function's shim gets: its arguments and the channel.
///
/// Not public API.
#[doc(hidden)]
#[derive(Debug)]
pub struct Context {
    args: Payload,
    conn: SharedConn,
}

impl Context {
    pub(crate) fn new(args: impl Into<Payload>, conn: SharedConn) -> Self {
        Self {
            args: args.into(),
            conn,
        }
    }

    /// The serialized arguments and the channel.
    pub(crate) fn into_parts(self) -> (Payload, SharedConn) {
        (self.args, self.conn)
    }

    /// The serialized arguments.
    pub(crate) fn args(&self) -> &[u8] {
        self.args.bytes()
    }
}

/// One registered `#[parallel]` function.
///
/// Not public API: `#[parallel]` submits one per function.
#[doc(hidden)]
#[derive(Debug)]
pub struct Entry {
    name: &'static str,
    signature: &'static str,
    run: fn(Context),
}

impl Entry {
    /// A registration: the function's full path, its signature as written
    /// (part of the build fingerprint) and its child-side shim.
    #[must_use]
    pub const fn new(name: &'static str, signature: &'static str, run: fn(Context)) -> Self {
        Self {
            name,
            signature,
            run,
        }
    }

    pub(crate) fn run(&self, cx: Context) {
        setup::running(self.name);
        (self.run)(cx);
    }

    /// The function's registered name.
    pub(crate) fn name(&self) -> &'static str {
        self.name
    }
}

inventory::collect!(Entry);

/// A function that every child of this program runs before its first
/// call: `pproc::setup!` submits one.
///
/// Not public API.
#[doc(hidden)]
#[derive(Debug)]
pub struct Setup {
    name: &'static str,
    run: fn(),
}

impl Setup {
    /// A registration: the function's full path, and the function.
    #[must_use]
    pub const fn new(name: &'static str, run: fn()) -> Self {
        Self { name, run }
    }

    /// The function's registered name.
    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    pub(crate) fn run(&self) {
        (self.run)();
    }
}

inventory::collect!(Setup);

/// The setup functions every child runs, in the order of their names.
pub(crate) fn setups() -> Vec<&'static Setup> {
    let mut setups: Vec<_> = inventory::iter::<Setup>.into_iter().collect();
    setups.sort_by_key(|setup| setup.name);
    setups
}

/// The entry registered under `name`: none if two functions are (see
/// [`registered_twice`]), for a child must not run the wrong one.
pub(crate) fn lookup(name: &str) -> Option<&'static Entry> {
    let mut found = inventory::iter::<Entry>
        .into_iter()
        .filter(|entry| entry.name == name);
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// Whether two `#[parallel]` functions are registered as `name`: two
/// functions of one name in two function bodies of one module.
pub(crate) fn registered_twice(name: &str) -> bool {
    inventory::iter::<Entry>
        .into_iter()
        .filter(|entry| entry.name == name)
        .nth(1)
        .is_some()
}

/// Whether a `#[parallel]` function named `name` is registered in this
/// executable.
#[must_use]
pub fn is_registered(name: &str) -> bool {
    lookup(name).is_some()
}

/// The names of every `#[parallel]` function registered in this executable,
/// sorted.
#[must_use]
pub fn registered() -> Vec<&'static str> {
    let mut names: Vec<_> = inventory::iter::<Entry>
        .into_iter()
        .map(|entry| entry.name)
        .collect();
    names.sort_unstable();
    names
}

/// Identifies this build: the linker's GNU build-id where there is one, and
/// the registered names and signatures. Parent and child must agree on it.
pub(crate) fn fingerprint() -> u64 {
    static FINGERPRINT: OnceLock<u64> = OnceLock::new();
    *FINGERPRINT.get_or_init(|| {
        let mut entries: Vec<_> = inventory::iter::<Entry>
            .into_iter()
            .map(|entry| (entry.name, entry.signature))
            .collect();
        entries.sort_unstable();
        let mut hash = Fnv::new();
        hash.write(&build_id().unwrap_or_default());
        for (name, signature) in entries {
            hash.write(name.as_bytes());
            hash.write(&[0]);
            hash.write(signature.as_bytes());
            hash.write(&[0]);
        }
        hash.0
    })
}

/// 64-bit FNV-1a: tiny, stable across Rust versions (unlike `DefaultHasher`),
/// and good enough to tell builds apart.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The main executable as it is loaded: where, its build-id, and where its
/// code lies.
#[derive(Debug, Default)]
struct Image {
    /// The load bias: what the loader added to every address the linker
    /// gave.
    base: usize,
    build_id: Option<Vec<u8>>,
    /// The executable segments, as loaded.
    code: Vec<std::ops::Range<usize>>,
}

/// The main executable, read once.
fn image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(read_image)
}

/// The main executable's `NT_GNU_BUILD_ID` note, if the linker wrote one.
fn build_id() -> Option<Vec<u8>> {
    image().build_id.clone()
}

/// Where the code at `addr` lies in the main executable: its distance
/// from the load address, the same in every process of this build. `None`
/// if `addr` is not in the executable's code, or the build has no
/// build-id, without which a child of another build could not be told
/// from one of this.
pub(crate) fn code_offset(addr: usize) -> Option<u64> {
    let image = image();
    image.build_id.as_ref()?;
    image
        .code
        .iter()
        .any(|range| range.contains(&addr))
        .then(|| u64::try_from(addr - image.base).ok())
        .flatten()
}

/// The address of the code at `offset` from the load address (see
/// [`code_offset`]), if that lies in the main executable's code.
pub(crate) fn code_at(offset: u64) -> Option<usize> {
    let image = image();
    image.build_id.as_ref()?;
    let addr = usize::try_from(offset).ok()?.checked_add(image.base)?;
    image
        .code
        .iter()
        .any(|range| range.contains(&addr))
        .then_some(addr)
}

fn read_image() -> Image {
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: `dl_iterate_phdr` passes a valid `dl_phdr_info` for each
        // loaded object, and `data` is the `Image` we passed below. The
        // first object is the main executable; its program headers and the
        // segments they describe are mapped for the life of the process.
        unsafe {
            let info = &*info;
            let out = &mut *data.cast::<Image>();
            let Ok(base) = usize::try_from(info.dlpi_addr) else {
                return 1;
            };
            out.base = base;
            let headers = std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum));
            for header in headers {
                let (Ok(offset), Ok(len)) = (
                    usize::try_from(header.p_vaddr),
                    usize::try_from(header.p_memsz),
                ) else {
                    continue;
                };
                let Some(start) = base.checked_add(offset) else {
                    continue;
                };
                if header.p_type == libc::PT_LOAD && header.p_flags & libc::PF_X != 0 {
                    out.code.push(start..start.saturating_add(len));
                }
                if header.p_type == libc::PT_NOTE && out.build_id.is_none() {
                    let notes = std::slice::from_raw_parts(start as *const u8, len);
                    out.build_id = find_build_id(notes).map(<[u8]>::to_vec);
                }
            }
        }
        // Stop after the main executable.
        1
    }
    let mut out = Image::default();
    // SAFETY: `visit` only reads the structures the loader hands it and
    // writes to `out`, which outlives the call.
    unsafe {
        libc::dl_iterate_phdr(Some(visit), (&raw mut out).cast());
    }
    out
}

/// Walks ELF notes (`namesz`, `descsz`, `type`, name, desc, each 4-aligned)
/// for the GNU build-id.
fn find_build_id(mut notes: &[u8]) -> Option<&[u8]> {
    const NT_GNU_BUILD_ID: usize = 3;
    let word = |b: &[u8], i: usize| -> Option<usize> {
        Some(u32::from_ne_bytes(b.get(i..i + 4)?.try_into().ok()?) as usize)
    };
    while notes.len() >= 12 {
        let (namesz, descsz, kind) = (word(notes, 0)?, word(notes, 4)?, word(notes, 8)?);
        let name_end = 12 + namesz.next_multiple_of(4);
        let desc_end = name_end + descsz.next_multiple_of(4);
        let name = notes.get(12..12 + namesz)?;
        let desc = notes.get(name_end..name_end + descsz)?;
        if kind == NT_GNU_BUILD_ID && name == b"GNU\0" {
            return Some(desc);
        }
        notes = notes.get(desc_end..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_has_a_build_id() {
        let id = build_id().expect("the linker writes a build-id");
        assert!(id.len() >= 8, "{id:?}");
        assert_eq!(fingerprint(), fingerprint());
    }

    #[test]
    fn code_is_found_again_from_its_offset() {
        let addr = fingerprint as fn() -> u64 as usize;
        let offset = code_offset(addr).expect("a function is in the executable's code");
        assert_eq!(code_at(offset), Some(addr));
        let data = &raw const IMAGE_PROBE as usize;
        assert_eq!(code_offset(data), None, "a static is not code");
        assert_eq!(code_at(u64::MAX), None);
    }

    static IMAGE_PROBE: u8 = 0;

    #[test]
    fn notes_are_walked_past_other_kinds() {
        let mut notes = Vec::new();
        for (kind, name, desc) in [
            (1u32, &b"GNU\0"[..], &[1u8, 2, 3][..]),
            (3, b"GNU\0", &[9, 8, 7, 6, 5]),
        ] {
            notes.extend_from_slice(&u32::try_from(name.len()).unwrap().to_ne_bytes());
            notes.extend_from_slice(&u32::try_from(desc.len()).unwrap().to_ne_bytes());
            notes.extend_from_slice(&kind.to_ne_bytes());
            notes.extend_from_slice(name);
            notes.extend_from_slice(desc);
            notes.resize(notes.len().next_multiple_of(4), 0);
        }
        assert_eq!(find_build_id(&notes), Some(&[9, 8, 7, 6, 5][..]));
        assert_eq!(find_build_id(&notes[..20]), None);
    }
}
