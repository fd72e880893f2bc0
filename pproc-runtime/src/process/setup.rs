//! What a child process sets up about itself before anything else runs:
//! dying with its parent, telling an out-of-memory abort from any other,
//! telling a stack overflow from any other fault, surviving writes to
//! closed pipes, and going by its program's name.

use std::ffi::CStr;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicUsize, Ordering};

use crate::wire::frame::{EXIT_OUT_OF_MEMORY, EXIT_STACK_OVERFLOW};

/// Names the process (its `comm`, what `ps`, `top` and `pkill` show) after
/// `program`, the path its parent was run as: a child is started from
/// `/proc/self/exe`, which would name it `exe`.
pub(crate) fn name_after(program: &CStr) {
    let path = program.to_bytes_with_nul();
    let base = path
        .iter()
        .rposition(|&b| b == b'/')
        .map_or(path, |slash| &path[slash + 1..]);
    // The kernel keeps the first 15 bytes.
    if let Ok(name) = CStr::from_bytes_with_nul(base)
        && !name.is_empty()
    {
        let _ = nix::sys::prctl::set_name(name);
    }
}

/// As Rust's runtime does for `main`: writes to a closed pipe fail with
/// `EPIPE` instead of killing the process.
pub(crate) fn ignore_sigpipe() {
    // SAFETY: setting a signal to SIG_IGN installs no handler code.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigIgn,
        );
    }
}

/// Tells an abort that follows a failed allocation from any other abort.
///
/// Rust's allocation-failure path (`handle_alloc_error`) prints a line and
/// calls `abort()`; stable Rust offers no hook into it (`set_alloc_error_hook`
/// and `-Z oom=panic` are unstable), and a `#[global_allocator]` is the
/// program's choice, not ours. What the path does leave is `errno`: the C
/// allocator sets it to `ENOMEM` when it fails, and neither the print nor
/// `abort()` changes it on the way. So a `SIGABRT` handler on the aborting
/// thread that finds `ENOMEM` there exits with [`EXIT_OUT_OF_MEMORY`]; any
/// other abort goes on as one (the handler resets itself, so `abort()`'s own
/// second raise kills the process with `SIGABRT`, core dump and all).
///
/// The evidence can fail one way: a print that touches `errno` (a
/// backtrace, or standard error closed) replaces it, and the abort is then
/// reported as `SIGABRT`.
pub(crate) fn watch_aborts() {
    extern "C" fn on_abort(_: libc::c_int) {
        // SAFETY: reading this thread's errno is async-signal-safe, and so
        // is `_exit`.
        unsafe {
            if *libc::__errno_location() == libc::ENOMEM {
                libc::_exit(EXIT_OUT_OF_MEMORY);
            }
        }
    }
    let handler: extern "C" fn(libc::c_int) = on_abort;
    // SAFETY: a zeroed sigaction is valid; the handler only reads errno and
    // may call `_exit`, both async-signal-safe.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler as libc::sighandler_t;
        action.sa_flags = libc::SA_RESETHAND;
        libc::sigemptyset(&raw mut action.sa_mask);
        libc::sigaction(libc::SIGABRT, &raw const action, std::ptr::null_mut());
    }
}

/// The size of the alternate stack the fault handler runs on: the
/// overflowed stack has no room left for it.
const ALT_STACK: usize = 64 << 10;

/// The thread whose stack [`watch_overflows`] knows, and the guard region
/// of that stack, `[GUARD_START, GUARD_END)`. A fault there is an
/// overflow.
static WATCHED: AtomicI32 = AtomicI32::new(0);
static GUARD_START: AtomicUsize = AtomicUsize::new(0);
static GUARD_END: AtomicUsize = AtomicUsize::new(0);

/// For the process's initial thread, an address on its stack, whose guard
/// region is found only when a fault needs it (see [`initial_guard`]); 0
/// when the region is in `GUARD_START` and `GUARD_END`.
static STACK_MARK: AtomicUsize = AtomicUsize::new(0);
/// The page size, read when the stack was watched.
static PAGE: AtomicUsize = AtomicUsize::new(0);

/// The registered name of the function the child runs, for the message:
/// set by [`running`] before it runs.
static NAME: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static NAME_LEN: AtomicUsize = AtomicUsize::new(0);

/// Records that the function registered as `name` runs now, on the thread
/// [`watch_overflows`] watches: an overflow is reported under this name.
pub(crate) fn running(name: &'static str) {
    NAME_LEN.store(0, Ordering::Relaxed);
    NAME.store(name.as_ptr().cast_mut(), Ordering::Relaxed);
    NAME_LEN.store(name.len(), Ordering::Release);
}

/// Which thread [`watch_overflows`] is called on: the process's initial
/// thread, whose stack the kernel grows up to its resource limit, or one
/// that `pthread_create` started, whose stack glibc allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Thread {
    Initial,
    Started,
}

impl Thread {
    /// The calling thread.
    pub(crate) fn current() -> Self {
        if nix::unistd::gettid() == nix::unistd::getpid() {
            Self::Initial
        } else {
            Self::Started
        }
    }
}

/// Tells a stack overflow on the calling thread, `thread`, from any other
/// fault.
///
/// std's runtime does this for `main` and the threads it spawns, but a
/// child runs its function from a constructor, before that runtime starts,
/// so without this an overflow is a bare `SIGSEGV`. As std does, this
/// gives the thread an alternate signal stack and installs a `SIGSEGV` and
/// `SIGBUS` handler that runs there. A fault whose address lies in the
/// guard region just below the stack is an overflow: the handler writes a
/// line to standard error, naming the function [`running`] recorded, and
/// exits with [`EXIT_STACK_OVERFLOW`]. Any other fault, on this thread or
/// another, goes on as one: the handler restores the default action and
/// returns, so that the fault kills the process with its signal.
///
/// The guard region is std's (see [`guard_region`]). For a started thread
/// glibc knows it at once; for the initial thread glibc would read
/// `/proc/self/maps`, which costs a new process more than the rest of its
/// start-up together, so the handler reads it instead, when a fault asks
/// (see [`initial_guard`]).
///
/// Only this thread is checked. Threads the function spawns have no
/// alternate stack: an overflow there kills the process with `SIGSEGV`, as
/// before.
pub(crate) fn watch_overflows(thread: Thread) {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|size| usize::try_from(size).ok())
        .unwrap_or(4096);
    let mark = 0u8;
    let region = match thread {
        Thread::Initial => None,
        Thread::Started => match guard_region(page) {
            Some(region) => Some(region),
            None => return,
        },
    };
    // SAFETY: an anonymous private mapping of our own, never unmapped: the
    // alternate stack lives as long as the process.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            ALT_STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return;
    }
    let alt = libc::stack_t {
        ss_sp: stack,
        ss_flags: 0,
        ss_size: ALT_STACK,
    };
    // SAFETY: `alt` describes the mapping above, which stays.
    if unsafe { libc::sigaltstack(&raw const alt, std::ptr::null_mut()) } != 0 {
        return;
    }
    WATCHED.store(nix::unistd::gettid().as_raw(), Ordering::Relaxed);
    PAGE.store(page, Ordering::Relaxed);
    match region {
        Some((start, end)) => {
            GUARD_START.store(start, Ordering::Relaxed);
            GUARD_END.store(end, Ordering::Relaxed);
            STACK_MARK.store(0, Ordering::Relaxed);
        }
        None => STACK_MARK.store((&raw const mark).addr(), Ordering::Relaxed),
    }
    let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = on_fault;
    // SAFETY: a zeroed sigaction is valid; the handler makes only
    // async-signal-safe calls (see `on_fault`).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler as libc::sighandler_t;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&raw mut action.sa_mask);
        libc::sigaction(libc::SIGSEGV, &raw const action, std::ptr::null_mut());
        libc::sigaction(libc::SIGBUS, &raw const action, std::ptr::null_mut());
    }
}

/// The guard region of the calling thread's stack, as std finds it: the
/// page (or the thread's guard size, if larger) below the lowest address
/// of the stack, and for a thread of glibc's the guard size above it too
/// (glibc before 2.27 counted the guard in the stack).
fn guard_region(page: usize) -> Option<(usize, usize)> {
    // SAFETY: a zeroed attribute object is what pthread_getattr_np fills;
    // it is destroyed once read.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &raw mut attr) != 0 {
            return None;
        }
        let mut bottom: *mut libc::c_void = std::ptr::null_mut();
        let mut size = 0;
        let mut guard = 0;
        let read = libc::pthread_attr_getstack(&raw const attr, &raw mut bottom, &raw mut size)
            == 0
            && libc::pthread_attr_getguardsize(&raw const attr, &raw mut guard) == 0;
        libc::pthread_attr_destroy(&raw mut attr);
        let end = bottom as usize;
        (read && end != 0).then(|| {
            (
                end.saturating_sub(guard.max(page)),
                end.saturating_add(guard),
            )
        })
    }
}

/// The guard region of the initial thread's stack, the one that holds
/// `mark`, found as glibc's `pthread_getattr_np` finds it, with only
/// async-signal-safe calls: the stack's mapping in `/proc/self/maps` ends
/// at its top, the kernel grows it down by at most the stack's resource
/// limit and never into the mapping below, and the page below that lowest
/// address is the guard. `None` if the mapping is not found.
fn initial_guard(mark: usize, page: usize) -> Option<(usize, usize)> {
    let (below, top) = mapping_around(mark)?;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) fills the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_STACK, &raw mut limit) } != 0 {
        return None;
    }
    let limit = usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX) & !(page - 1);
    let bottom = top.saturating_sub(limit).max(below);
    Some((bottom.saturating_sub(page), bottom))
}

/// The end of the mapping below the one that holds `addr` (0 if none),
/// and the end of that one, read from `/proc/self/maps` with open(2),
/// read(2) and close(2) through a small buffer.
fn mapping_around(addr: usize) -> Option<(usize, usize)> {
    // SAFETY: open(2) with a NUL-terminated path.
    let fd = unsafe {
        libc::open(
            c"/proc/self/maps".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    let mut lines = Ranges::default();
    let mut last_to = 0;
    let mut found = None;
    let mut buf = [0u8; 1024];
    'read: loop {
        // SAFETY: read(2) writes at most `buf.len()` bytes into `buf`.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        let Some(read) = usize::try_from(n).ok().filter(|&n| n > 0) else {
            break;
        };
        for &byte in &buf[..read] {
            if let Some((from, to)) = lines.push(byte) {
                if (from..to).contains(&addr) {
                    found = Some((last_to, to));
                    break 'read;
                }
                last_to = to;
            }
        }
    }
    // SAFETY: we opened `fd` above and close it once.
    unsafe { libc::close(fd) };
    found
}

/// Reads the address ranges off the lines of `/proc/self/maps` a byte at
/// a time, so that a line may span reads: each line starts `from-to `, in
/// hexadecimal. A line that does not is skipped.
#[derive(Debug, Default)]
struct Ranges {
    at: Field,
    from: usize,
    to: usize,
}

/// Where a [`Ranges`] is in its line.
#[derive(Clone, Copy, Debug, Default)]
enum Field {
    #[default]
    From,
    To,
    Rest,
}

impl Ranges {
    /// Takes the next byte; returns the line's range once it is read.
    fn push(&mut self, byte: u8) -> Option<(usize, usize)> {
        let digit = char::from(byte).to_digit(16).map(|d| d as usize);
        let mut range = None;
        self.at = match (self.at, byte, digit) {
            (_, b'\n', _) => {
                self.from = 0;
                self.to = 0;
                Field::From
            }
            (Field::From, _, Some(d)) => {
                self.from = self.from.wrapping_shl(4) | d;
                Field::From
            }
            (Field::From, b'-', None) => Field::To,
            (Field::To, _, Some(d)) => {
                self.to = self.to.wrapping_shl(4) | d;
                Field::To
            }
            (Field::To, b' ', None) => {
                range = Some((self.from, self.to));
                Field::Rest
            }
            (Field::From | Field::To | Field::Rest, _, _) => Field::Rest,
        };
        range
    }
}

/// The `SIGSEGV` and `SIGBUS` handler of [`watch_overflows`].
extern "C" fn on_fault(signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel hands a valid siginfo to an SA_SIGINFO handler;
    // gettid, open, read, close, getrlimit, write, _exit, sigaction and
    // raise are async-signal-safe, and the name is a `&'static str` that
    // `running` published.
    unsafe {
        let info = &*info;
        // A positive code: the kernel raised it for a fault, and `si_addr`
        // is the faulting address (a process's `kill` has none).
        let fault = info.si_code > 0;
        let addr = info.si_addr() as usize;
        if fault && libc::gettid() == WATCHED.load(Ordering::Relaxed) {
            let mark = STACK_MARK.load(Ordering::Relaxed);
            let region = if mark == 0 {
                Some((
                    GUARD_START.load(Ordering::Relaxed),
                    GUARD_END.load(Ordering::Relaxed),
                ))
            } else {
                initial_guard(mark, PAGE.load(Ordering::Relaxed))
            };
            if region.is_some_and(|(start, end)| (start..end).contains(&addr)) {
                report_overflow();
                libc::_exit(EXIT_STACK_OVERFLOW);
            }
        }
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&raw mut action.sa_mask);
        libc::sigaction(signal, &raw const action, std::ptr::null_mut());
        if !fault {
            // Sent, not raised by an instruction: returning would not
            // repeat it. Pending until we return, then fatal.
            libc::raise(signal);
        }
    }
}

/// Writes std's line for an overflow, with the function's name, to
/// standard error: one `write(2)` of a line put together on this (the
/// alternate) stack, so that the lines of children that share standard
/// error do not mix.
fn report_overflow() {
    let len = NAME_LEN.load(Ordering::Acquire);
    let name = NAME.load(Ordering::Relaxed);
    let name: &[u8] = if name.is_null() || len == 0 {
        b"?"
    } else {
        // SAFETY: `running` stored the pointer and length of a
        // `&'static str`.
        unsafe { std::slice::from_raw_parts(name, len) }
    };
    let head: &[u8] = b"\nthread 'main' of pproc child `";
    let tail: &[u8] = b"` has overflowed its stack\n";
    let mut line = [0u8; 512];
    // A name too long for the line is cut.
    let name = &name[..name.len().min(line.len() - head.len() - tail.len())];
    let mut at = 0;
    for part in [head, name, tail] {
        line[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    // SAFETY: write(2) reads the first `at` bytes of `line`.
    unsafe { libc::write(libc::STDERR_FILENO, line.as_ptr().cast(), at) };
}

/// The signal a child that leads its own process group gets when its
/// parent dies: its handler takes the whole group down.
pub(crate) fn parent_death_signal() -> libc::c_int {
    libc::SIGRTMAX()
}

/// Kills this process's group, this process included.
extern "C" fn on_parent_death(_: libc::c_int) {
    // SAFETY: kill(2) is async-signal-safe; 0 names our own group.
    unsafe { libc::kill(0, libc::SIGKILL) };
}

/// Makes this process die with `parent`, and checks for the race where the
/// parent died first (then we have been re-parented). Returns `false` if it
/// did.
///
/// A process that leads its own group takes the group with it: its
/// descendants there (processes it started with `std::process::Command`,
/// say) die too, however the parent died. Otherwise `SIGKILL` ends this
/// process alone.
pub(crate) fn tie_to_parent(parent: nix::unistd::Pid) -> bool {
    let leader = nix::unistd::getpgrp() == nix::unistd::getpid();
    let signal = if leader {
        let handler: extern "C" fn(libc::c_int) = on_parent_death;
        // SAFETY: a zeroed sigaction is valid; the handler only calls
        // kill(2), which is async-signal-safe. nix's `sigaction` takes no
        // real-time signals.
        let installed = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler as libc::sighandler_t;
            libc::sigemptyset(&raw mut action.sa_mask);
            libc::sigaction(
                parent_death_signal(),
                &raw const action,
                std::ptr::null_mut(),
            ) == 0
        };
        if installed {
            parent_death_signal()
        } else {
            libc::SIGKILL
        }
    } else {
        libc::SIGKILL
    };
    // SAFETY: PR_SET_PDEATHSIG takes a signal number; nix's wrapper takes
    // no real-time signals.
    let set = unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::c_ulong::try_from(signal).unwrap_or(9),
            0,
            0,
            0,
        )
    } == 0;
    if !set || nix::unistd::getppid() != parent {
        if leader {
            on_parent_death(signal);
        }
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges_of(text: &[u8], chunk: usize) -> Vec<(usize, usize)> {
        let mut lines = Ranges::default();
        text.chunks(chunk)
            .flat_map(|part| {
                part.iter()
                    .filter_map(|&b| lines.push(b))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn ranges_are_read_off_lines_however_they_are_cut() {
        let text = b"55d0c0a00000-55d0c0a2c000 r--p 00000000 08:01 123 /usr/bin/x\n\
            not a line of maps\n\
            7ffd1c3e0000-7ffd1c401000 rw-p 00000000 00:00 0                          [stack]\n\
            ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0 [vsyscall]\n";
        let want = vec![
            (0x55d0_c0a0_0000, 0x55d0_c0a2_c000),
            (0x7ffd_1c3e_0000, 0x7ffd_1c40_1000),
            (0xffff_ffff_ff60_0000, 0xffff_ffff_ff60_1000),
        ];
        for chunk in [1, 2, 7, 64, text.len()] {
            assert_eq!(ranges_of(text, chunk), want, "read {chunk} bytes at a time");
        }
    }

    #[test]
    fn the_initial_stack_is_found_as_the_maps_file_lists_it() {
        unsafe extern "C" {
            // glibc's: an address near the top of the initial thread's
            // stack.
            static __libc_stack_end: *const libc::c_void;
        }
        // SAFETY: the loader sets it before any code of ours runs.
        let addr = unsafe { __libc_stack_end }.addr();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let mut below = 0;
        let mut want = None;
        for line in maps.lines() {
            let (from, rest) = line.split_once('-').unwrap();
            let to = rest.split_once(' ').unwrap().0;
            let (from, to) = (
                usize::from_str_radix(from, 16).unwrap(),
                usize::from_str_radix(to, 16).unwrap(),
            );
            if (from..to).contains(&addr) {
                assert!(line.ends_with("[stack]"), "{line}");
                want = Some((below, to));
                break;
            }
            below = to;
        }
        assert_eq!(mapping_around(addr), want);
        let (below, top) = want.unwrap();
        let page = 4096;
        let (start, end) = initial_guard(addr, page).unwrap();
        assert_eq!(end - start, page);
        assert!(below <= end && end < top, "{below:x} {end:x} {top:x}");
    }
}
