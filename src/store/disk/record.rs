//! The directory's size record, shared by every process that uses the directory.
//!
//! Each process used to count only its own writes, so four processes over one directory filled
//! it to several times its bound. Now the total lives in a file, `.size` at the directory's root
//! (eight bytes, big endian), read and updated under an exclusive `flock` on that file by every
//! write and removal of every process (four system calls around a write that already creates,
//! `fsync`s and renames a file). A process killed between renaming an entry and updating the
//! record leaves it a little off; every eviction pass measures the directory and corrects it.
//!
//! Whoever can write the directory can write the record: setting it high makes the next write
//! run an eviction pass (which measures and corrects it), setting it low lets the directory
//! grow past the bound until a pass (or `cleanup`) measures it again. Neither can make an entry
//! be served that should not be.
//!
//! The lock is never waited for long: a holder that does not let go (a stopped process, or
//! someone running `flock` on the file) makes an update go without it after
//! [`LOCK_PATIENCE`] (the record is then not written, and the next eviction pass corrects it),
//! never block the store. Reading the total takes no lock.
//!
//! The record is created `0600`, opened without following links and without blocking, and used
//! only if it is a regular file with one link, owned by this user: other users' processes
//! sharing the directory (and a planted link, FIFO or hard link) make the store fall back to
//! counting in this process alone, as before, with a warning.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The longest an update waits for the record's lock before it goes without it.
pub(super) const LOCK_PATIENCE: Duration = Duration::from_millis(200);

/// The name of the record file, at the directory's root.
pub(super) const RECORD: &str = ".size";

pub(super) struct SizeRecord {
    local: AtomicU64,
    /// `flock` excludes other open files of the record, not other threads using this one.
    threads: std::sync::Mutex<()>,
    #[cfg(unix)]
    file: Option<std::fs::File>,
}

impl SizeRecord {
    /// Opens (or creates) the record of `dir`; without it, a record of this process only.
    pub(super) fn open(dir: &Path) -> Self {
        Self {
            local: AtomicU64::new(0),
            threads: std::sync::Mutex::new(()),
            #[cfg(unix)]
            file: open_file(dir),
        }
    }

    /// Whether processes share it (the record file is in use).
    pub(super) fn shared(&self) -> bool {
        #[cfg(unix)]
        {
            self.file.is_some()
        }
        #[cfg(not(unix))]
        {
            false
        }
    }

    /// Runs `f` on the total and stores what it leaves, excluding every other update of every
    /// process meanwhile: an eviction pass measures and removes inside it, so that no write
    /// changes the total between its measurement and its result.
    pub(super) fn update<T>(&self, f: impl FnOnce(&mut u64) -> T) -> T {
        let _threads = self
            .threads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        #[cfg(unix)]
        if let Some(file) = &self.file {
            return locked(file, f);
        }
        let mut total = self.local.load(Ordering::Acquire);
        let out = f(&mut total);
        self.local.store(total, Ordering::Release);
        out
    }

    /// The total now (read without the lock: eight bytes written at once).
    pub(super) fn get(&self) -> u64 {
        #[cfg(unix)]
        if let Some(file) = &self.file {
            return read_total(file);
        }
        self.local.load(Ordering::Acquire)
    }

    /// Sets the total (a measurement).
    #[cfg(test)]
    pub(super) fn set(&self, value: u64) {
        self.update(|total| *total = value);
    }

    /// Adds `grow` and removes `shrink` (saturating); the new total.
    pub(super) fn change(&self, grow: u64, shrink: u64) -> u64 {
        self.update(|total| {
            *total = total.saturating_add(grow).saturating_sub(shrink);
            *total
        })
    }
}

#[cfg(unix)]
fn open_file(dir: &Path) -> Option<std::fs::File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        // Never through a link planted under the record's name, never blocking on a FIFO.
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
        .open(dir.join(RECORD));
    let usable = opened.and_then(|file| {
        let meta = file.metadata()?;
        let ours = meta.uid() == rustix::process::geteuid().as_raw();
        if meta.is_file() && meta.nlink() == 1 && ours {
            Ok(file)
        } else {
            Err(std::io::Error::other(
                "not a regular file with one link owned by this user",
            ))
        }
    });
    match usable {
        Ok(file) => Some(file),
        Err(e) => {
            tracing::warn!(
                path = %dir.join(RECORD).display(),
                error = %e,
                "the disk store's size record cannot be used; this process counts its own writes only, and the bound may be exceeded by other processes"
            );
            None
        }
    }
}

/// The record's total, 0 when it is short or unreadable (the next eviction pass measures it).
#[cfg(unix)]
fn read_total(file: &std::fs::File) -> u64 {
    use std::os::unix::fs::FileExt;
    let mut bytes = [0u8; 8];
    match file.read_at(&mut bytes, 0) {
        Ok(8) => u64::from_be_bytes(bytes),
        _ => 0,
    }
}

/// `f` over the record's total under an exclusive lock, the result written back. The lock is
/// waited for [`LOCK_PATIENCE`] at most; without it `f` runs on the value as read and nothing is
/// written (a lost update the next eviction pass corrects, rather than a store that blocks).
#[cfg(unix)]
fn locked<T>(file: &std::fs::File, f: impl FnOnce(&mut u64) -> T) -> T {
    use rustix::fs::{flock, FlockOperation};
    use std::os::unix::fs::FileExt;
    let started = std::time::Instant::now();
    let locked = loop {
        match flock(file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => break true,
            Err(rustix::io::Errno::WOULDBLOCK | rustix::io::Errno::INTR)
                if started.elapsed() < LOCK_PATIENCE =>
            {
                // A blocking-pool thread: a short nap, not a spin.
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(_) => break false,
        }
    };
    let mut total = read_total(file);
    let out = f(&mut total);
    if locked {
        let _ = file.write_at(&total.to_be_bytes(), 0);
        let _ = flock(file, FlockOperation::Unlock);
    } else {
        tracing::debug!("the disk store's size record stayed locked; not updated this time");
    }
    out
}

/// Who wrote a temporary file, from its name: the writer's pid namespace and pid.
pub(super) struct Writer {
    pub(super) namespace: u64,
    pub(super) pid: u32,
}

/// Which pids mean the same processes as ours: this boot of this machine (Linux's `boot_id`:
/// a directory shared over the network by several hosts has the same initial namespace inode
/// on each) and this pid namespace (the inode of `/proc/self/ns/pid`), hashed into 64 bits;
/// 0 where either is unknown (then no temporary file is judged by its pid).
pub(super) fn pid_namespace() -> u64 {
    let namespace = std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .and_then(|target| {
            let text = target.to_string_lossy().into_owned();
            text.strip_prefix("pid:[")?
                .strip_suffix(']')?
                .parse::<u64>()
                .ok()
        });
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok();
    let (Some(namespace), Some(boot)) = (namespace, boot) else {
        return 0;
    };
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(boot.trim().as_bytes());
    ctx.update(&namespace.to_be_bytes());
    let digest = ctx.finish();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(first).max(1)
}

/// Whether the writer of a temporary file is certainly gone: it ran in this pid namespace (so
/// its pid means the same process here) and no process has that pid now. A reused pid keeps the
/// file until it is old; a writer in another namespace (another container) is never judged by
/// its pid.
pub(super) fn writer_is_gone(writer: &Writer, ours: u64) -> bool {
    if writer.namespace == 0 || writer.namespace != ours || writer.pid == 0 {
        return false;
    }
    #[cfg(unix)]
    {
        let Ok(pid) = i32::try_from(writer.pid) else {
            return false;
        };
        let Some(pid) = rustix::process::Pid::from_raw(pid) else {
            return false;
        };
        matches!(
            rustix::process::test_kill_process(pid),
            Err(rustix::io::Errno::SRCH)
        )
    }
    #[cfg(not(unix))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_is_shared_by_every_store_of_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let a = SizeRecord::open(dir.path());
        let b = SizeRecord::open(dir.path());
        assert!(a.shared() && b.shared());
        assert_eq!(a.change(100, 0), 100);
        assert_eq!(b.change(50, 0), 150, "b sees a's writes");
        assert_eq!(a.change(0, 500), 0, "saturates at zero");
        b.set(42);
        assert_eq!(a.get(), 42);
    }

    #[test]
    fn a_held_lock_delays_an_update_by_its_patience_at_most() {
        let dir = tempfile::tempdir().unwrap();
        let r = SizeRecord::open(dir.path());
        r.change(10, 0);
        // Someone else holds the lock and never lets go.
        let other = std::fs::File::open(dir.path().join(RECORD)).unwrap();
        rustix::fs::flock(&other, rustix::fs::FlockOperation::LockExclusive).unwrap();
        let started = std::time::Instant::now();
        assert_eq!(r.change(5, 0), 15, "computed on the value as read");
        assert!(started.elapsed() < LOCK_PATIENCE * 10);
        assert_eq!(r.get(), 10, "not written without the lock");
        drop(other);
        assert_eq!(r.change(5, 0), 15);
        assert_eq!(r.get(), 15);
    }

    #[test]
    fn a_hard_link_under_the_records_name_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("victim");
        std::fs::write(&target, b"keep me!").unwrap();
        std::fs::hard_link(&target, dir.path().join(RECORD)).unwrap();
        let r = SizeRecord::open(dir.path());
        assert!(!r.shared());
        r.change(7, 0);
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me!");
    }

    #[test]
    fn a_link_under_the_records_name_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("victim");
        std::fs::write(&target, b"keep me").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join(RECORD)).unwrap();
        let r = SizeRecord::open(dir.path());
        assert!(!r.shared(), "falls back to counting alone");
        r.change(7, 0);
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    }

    #[test]
    fn only_a_writer_of_this_namespace_without_a_process_is_gone() {
        let ours = pid_namespace();
        let me = Writer {
            namespace: ours,
            pid: std::process::id(),
        };
        assert!(!writer_is_gone(&me, ours));
        // A child that has exited and been reaped: its pid is free.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let dead = Writer {
            namespace: ours,
            pid,
        };
        assert_eq!(writer_is_gone(&dead, ours), ours != 0);
        let elsewhere = Writer {
            namespace: ours.wrapping_add(1),
            pid,
        };
        assert!(!writer_is_gone(&elsewhere, ours));
    }
}
