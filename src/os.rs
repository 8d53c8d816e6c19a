//! The operating system calls that need `unsafe`, each wrapped once behind a safe function that returns
//! `io::Result`. The capture shells (`capture::afpacket`, `capture::dpdk`) keep their own; everything else
//! comes here, so the unsafe code outside them is this one file.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::time::Duration;

/// Size and free space of a file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsSpace {
    /// Bytes the file system holds in all.
    pub total: u64,
    /// Bytes free for an unprivileged user (`f_bavail`, not the root reserve).
    pub available: u64,
}

/// Size and free space of the file system holding `path` (statvfs).
pub fn fs_space(path: &Path) -> io::Result<FsSpace> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: a zeroed statvfs is a valid out-parameter; the path is a NUL-terminated string alive for the call.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let f = s.f_frsize as u64;
    Ok(FsSpace { total: s.f_blocks as u64 * f, available: s.f_bavail as u64 * f })
}

/// A set of CPUs, for thread affinity.
#[derive(Clone, Copy)]
pub struct CpuSet(libc::cpu_set_t);

impl CpuSet {
    /// The set holding `cpu` alone. Panics when `cpu` is beyond the set's size (1024), as CPU_SET would overrun.
    pub fn single(cpu: usize) -> CpuSet {
        // SAFETY: cpu_set_t is plain data, all zeroes is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        assert!(cpu < libc::CPU_SETSIZE as usize, "CPU {cpu} is beyond the affinity mask");
        // SAFETY: cpu is within the set (checked above).
        unsafe { libc::CPU_SET(cpu, &mut set) };
        CpuSet(set)
    }

    /// The CPUs in the set, in order.
    pub fn cpus(&self) -> Vec<usize> {
        // SAFETY: every index is below CPU_SETSIZE.
        (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &self.0) }).collect()
    }
}

impl std::fmt::Debug for CpuSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CpuSet").field(&self.cpus()).finish()
    }
}

/// The CPUs the calling thread may run on.
pub fn thread_affinity() -> io::Result<CpuSet> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity on the calling thread (0) writes at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(CpuSet(set))
}

/// Restricts the calling thread to `cpus` (threads it starts afterwards inherit that).
pub fn set_thread_affinity(cpus: &CpuSet) -> io::Result<()> {
    // SAFETY: sched_setaffinity on the calling thread (0) reads a cpu_set_t of the size passed.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &cpus.0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Clock ticks per second of the kernel's process accounting (`/proc/*/stat` times).
pub fn clock_ticks_per_sec() -> io::Result<i64> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(hz as i64)
}

fn clock(id: libc::clockid_t) -> io::Result<Duration> {
    // SAFETY: a zeroed timespec is a valid out-parameter; clock_gettime writes only into it.
    let mut t: libc::timespec = unsafe { std::mem::zeroed() };
    if unsafe { libc::clock_gettime(id, &mut t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Duration::new(t.tv_sec as u64, t.tv_nsec as u32))
}

/// CPU time the calling thread has used (CLOCK_THREAD_CPUTIME_ID).
pub fn thread_cpu_time() -> io::Result<Duration> {
    clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// Time since an unspecified start that wall-clock steps do not move (CLOCK_MONOTONIC).
pub fn monotonic() -> io::Result<Duration> {
    clock(libc::CLOCK_MONOTONIC)
}

/// The host's local broken-down time of `secs` since the epoch (localtime_r, with the host's time zone).
pub fn localtime(secs: i64) -> io::Result<libc::tm> {
    let tt = secs as libc::time_t;
    // SAFETY: localtime_r only writes into the tm we hand it; a zeroed tm is a valid initial value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&tt, &mut tm) }.is_null() {
        return Err(io::Error::last_os_error());
    }
    Ok(tm)
}

/// Takes an exclusive lock on `file` without waiting (flock); fails with `WouldBlock` when another holds it.
/// The lock lasts as long as the file stays open.
pub fn try_lock_exclusive(file: &File) -> io::Result<()> {
    // SAFETY: flock on a descriptor the borrowed file keeps open for the call.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The group id of group `name` from the system's group database; `None` when there is no such group.
pub fn group_id(name: &CStr) -> io::Result<Option<u32>> {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    loop {
        // SAFETY: getgrnam_r writes the entry into `grp` and its strings into `buf`, both owned here and sized as
        // passed; `found` is set to null or to `grp`.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        let rc = unsafe { libc::getgrnam_r(name.as_ptr(), &mut grp, buf.as_mut_ptr(), buf.len(), &mut found) };
        // A group with many members needs a larger buffer: grow it, within reason.
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        return Ok((!found.is_null()).then_some(grp.gr_gid));
    }
}

/// Asks the kernel for a receive buffer of `bytes` on a socket (SO_RCVBUF; the kernel may cap it).
pub fn set_recv_buffer(socket: &impl AsRawFd, bytes: i32) -> io::Result<()> {
    let bytes: libc::c_int = bytes;
    // SAFETY: a socket descriptor alive for the call and a c_int option value of the stated size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &bytes as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Maps a whole file read-only, asking the kernel to read it in at once (MAP_POPULATE).
///
/// A file truncated under the map by another process makes reading past its new end raise SIGBUS: the
/// accepted risk of every mmap-based capture reader (libpcap reads, tshark does the same with its own I/O).
pub fn map_readonly(file: &File) -> io::Result<memmap2::Mmap> {
    // SAFETY: the map is read-only and never handed out mutably; see above for a file changed underneath.
    unsafe { memmap2::MmapOptions::new().populate().map(file) }
}

/// The flag SIGTERM and SIGINT set (null until one of the `stop_on_signals` functions is called).
static STOP_FLAG: AtomicPtr<AtomicBool> = AtomicPtr::new(std::ptr::null_mut());

extern "C" fn on_stop_signal(_: libc::c_int) {
    // Only atomic loads and stores: async-signal-safe.
    let p = STOP_FLAG.load(Ordering::Relaxed);
    if !p.is_null() {
        // SAFETY: the pointer came from a `&'static AtomicBool`.
        unsafe { &*p }.store(true, Ordering::Relaxed);
    }
}

/// From now on SIGTERM and SIGINT set `flag` (the process goes on; its loops look at the flag).
pub fn stop_on_signals(flag: &'static AtomicBool) -> io::Result<()> {
    STOP_FLAG.store(flag as *const AtomicBool as *mut AtomicBool, Ordering::Relaxed);
    let handler = on_stop_signal as extern "C" fn(libc::c_int);
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only does atomic loads and stores, which is async-signal-safe.
        if unsafe { libc::signal(sig, handler as libc::sighandler_t) } == libc::SIG_ERR {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// As `stop_on_signals`, for the first signal only: the handler resets, so a second SIGTERM or SIGINT ends
/// the process at once (no SA_RESTART either: a blocked call returns EINTR).
pub fn stop_on_first_signal(flag: &'static AtomicBool) -> io::Result<()> {
    STOP_FLAG.store(flag as *const AtomicBool as *mut AtomicBool, Ordering::Relaxed);
    // SAFETY: sigaction with a zeroed struct, an empty mask and a handler that only does atomic loads and stores.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESETHAND;
        libc::sigemptyset(&mut sa.sa_mask);
        for sig in [libc::SIGTERM, libc::SIGINT] {
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statvfs_of_root() {
        let s = fs_space(Path::new("/")).unwrap();
        assert!(s.total > 0 && s.available <= s.total, "{s:?}");
        assert!(fs_space(Path::new("/no/such/folder/here")).is_err());
    }

    #[test]
    fn affinity_round_trip_on_this_thread() {
        // On a thread of its own: the test pins it.
        std::thread::spawn(|| {
            let all = thread_affinity().unwrap();
            let first = all.cpus()[0];
            set_thread_affinity(&CpuSet::single(first)).unwrap();
            assert_eq!(thread_affinity().unwrap().cpus(), vec![first]);
            set_thread_affinity(&all).unwrap();
            assert_eq!(thread_affinity().unwrap().cpus(), all.cpus());
        })
        .join()
        .unwrap();
    }

    #[test]
    fn clocks_move_forward() {
        let (a, b) = (monotonic().unwrap(), monotonic().unwrap());
        assert!(b >= a);
        assert!(thread_cpu_time().is_ok());
        assert!(clock_ticks_per_sec().unwrap() > 0);
    }

    #[test]
    fn lock_is_exclusive_between_open_files() {
        let p = std::env::temp_dir().join(format!("voxtap-os-lock-{}", std::process::id()));
        let a = File::create(&p).unwrap();
        let b = File::open(&p).unwrap();
        try_lock_exclusive(&a).unwrap();
        assert_eq!(try_lock_exclusive(&b).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        drop(a);
        try_lock_exclusive(&b).unwrap();
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn root_group_and_a_missing_one() {
        assert_eq!(group_id(c"root").unwrap(), Some(0));
        assert_eq!(group_id(c"voxtap-no-such-group").unwrap(), None);
    }
}
