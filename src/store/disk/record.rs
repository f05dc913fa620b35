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
//! Where the record cannot be used (not Unix, or the file cannot be opened as a regular file),
//! the store falls back to counting in this process alone, as before.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

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
            return locked(file, true, f);
        }
        let mut total = self.local.load(Ordering::Acquire);
        let out = f(&mut total);
        self.local.store(total, Ordering::Release);
        out
    }

    /// The total now.
    pub(super) fn get(&self) -> u64 {
        #[cfg(unix)]
        if let Some(file) = &self.file {
            let _threads = self
                .threads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            return locked(file, false, |total| *total);
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
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        // Never through a link planted under the record's name.
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(dir.join(RECORD))
        .ok()?;
    file.metadata().ok()?.is_file().then_some(file)
}

/// `f` over the record's total under an exclusive lock: the stored value is read (0 when the
/// file is short or unreadable: the next eviction pass measures it), `f` changes it, the result
/// is written back.
#[cfg(unix)]
fn locked<T>(file: &std::fs::File, write: bool, f: impl FnOnce(&mut u64) -> T) -> T {
    use rustix::fs::{flock, FlockOperation};
    use std::os::unix::fs::FileExt;
    let mode = if write {
        FlockOperation::LockExclusive
    } else {
        FlockOperation::LockShared
    };
    let locked = flock(file, mode).is_ok();
    let mut bytes = [0u8; 8];
    let mut total = match file.read_at(&mut bytes, 0) {
        Ok(8) => u64::from_be_bytes(bytes),
        _ => 0,
    };
    let out = f(&mut total);
    if write {
        let _ = file.write_at(&total.to_be_bytes(), 0);
    }
    if locked {
        let _ = flock(file, FlockOperation::Unlock);
    }
    out
}

/// Who wrote a temporary file, from its name: the writer's pid namespace and pid.
pub(super) struct Writer {
    pub(super) namespace: u64,
    pub(super) pid: u32,
}

/// This process's pid namespace (Linux: the inode of `/proc/self/ns/pid`), 0 where unknown.
pub(super) fn pid_namespace() -> u64 {
    std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .and_then(|target| {
            let text = target.to_string_lossy().into_owned();
            text.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()
        })
        .unwrap_or(0)
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
