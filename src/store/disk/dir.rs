//! The directories under the cache directory, opened without following links.
//!
//! On Unix, every component below the cache directory is opened with `O_NOFOLLOW` (a shard
//! with `O_DIRECTORY | O_NOFOLLOW`) and every file operation is relative to the shard's open
//! directory (`openat`, `mkdirat`, `renameat`, `unlinkat`, `fstatat` without following), through
//! `rustix`'s safe wrappers. A shard directory replaced by a symbolic link (to anywhere) is
//! never entered: reads and sweeps skip it, a write replaces the link (not its target) by a real
//! directory. The cache directory itself is opened by its path, so it may be a link: that is the
//! user's configuration, not something a writer below it controls.
//!
//! Elsewhere, paths are used as they are (a linked shard is followed).

use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::SystemTime;

/// Which file a name pointed at: compared before removing, so that a file another process
/// renamed into place meanwhile is not removed in its stead.
#[derive(PartialEq, Eq)]
pub(super) struct FileId {
    #[cfg(unix)]
    inode: (u64, u64),
    pub(super) len: u64,
    #[cfg(unix)]
    modified: (i64, i64),
    #[cfg(not(unix))]
    modified: Option<SystemTime>,
}

impl FileId {
    pub(super) fn of(meta: &fs::Metadata) -> Self {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            Self {
                inode: (meta.dev(), meta.ino()),
                len: meta.len(),
                modified: (meta.mtime(), meta.mtime_nsec()),
            }
        }
        #[cfg(not(unix))]
        Self {
            len: meta.len(),
            modified: meta.modified().ok(),
        }
    }
}

/// A file found in a shard by listing it.
pub(super) struct Listed {
    pub(super) name: String,
    pub(super) id: FileId,
    pub(super) modified: SystemTime,
}

/// What is under an entry's name.
pub(super) enum Opened {
    Absent,
    /// Not a regular file (a symbolic link, a FIFO, a device, a directory): never read.
    Unusable(FileId),
    File(fs::File, fs::Metadata),
}

/// An open shard directory of the cache directory.
pub(super) struct Shard {
    /// For logs (and, on non-Unix systems, for every operation).
    path: PathBuf,
    #[cfg(unix)]
    fd: std::os::fd::OwnedFd,
}

/// Whether an error says "absent".
fn not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

impl Shard {
    /// The path of `name` in this shard, for logs.
    pub(super) fn path_of(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// What `name` is, without following a link; `None` when absent.
    pub(super) fn stat(&self, name: &str) -> io::Result<Option<FileId>> {
        match self.stat_inner(name) {
            Ok(id) => Ok(Some(id.0)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether `name` still names the file `id` describes.
    pub(super) fn is_at(&self, name: &str, id: &FileId) -> bool {
        matches!(self.stat(name), Ok(Some(now)) if now == *id)
    }

    /// Removes `name` if it is still the file `id` describes (a narrow window remains between
    /// the check and the removal; the worst outcome is one lost entry). Whether it was removed.
    pub(super) fn remove_if(&self, name: &str, id: &FileId) -> bool {
        self.is_at(name, id) && self.remove(name).is_ok()
    }

    /// Opens an entry file for reading without following a symbolic link or blocking on a FIFO
    /// (on Unix: `O_NOFOLLOW | O_NONBLOCK`, relative to the shard).
    pub(super) fn open_entry(&self, name: &str) -> io::Result<Opened> {
        match self.open_read(name) {
            Ok(file) => {
                let meta = file.metadata()?;
                Ok(if meta.is_file() {
                    Opened::File(file, meta)
                } else {
                    Opened::Unusable(FileId::of(&meta))
                })
            }
            Err(e) if not_found(&e) => Ok(Opened::Absent),
            // `O_NOFOLLOW` on a link fails with an errno that differs between systems (ELOOP on
            // Linux, EMLINK on FreeBSD, EFTYPE on NetBSD); whatever it is, a name that is not a
            // regular file is unusable.
            Err(e) => match self.stat_inner(name) {
                Ok((id, false)) => Ok(Opened::Unusable(id)),
                _ => Err(e),
            },
        }
    }
}

#[cfg(unix)]
mod imp {
    use std::fs;
    use std::io;
    use std::os::fd::OwnedFd;
    use std::path::Path;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, Stat};

    use super::{not_found, FileId, Listed, Shard};

    fn err(e: rustix::io::Errno) -> io::Error {
        io::Error::from_raw_os_error(e.raw_os_error())
    }

    const DIR_FLAGS: OFlags = OFlags::RDONLY
        .union(OFlags::DIRECTORY)
        .union(OFlags::CLOEXEC);

    // The widths of `stat` fields differ between targets: widened to one type here.
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    fn id_of(stat: &Stat) -> (FileId, bool) {
        let id = FileId {
            inode: (stat.st_dev as u64, stat.st_ino as u64),
            len: u64::try_from(stat.st_size).unwrap_or(0),
            modified: (stat.st_mtime as i64, stat.st_mtime_nsec as i64),
        };
        let is_file = FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile;
        (id, is_file)
    }

    fn system_time((secs, nanos): (i64, i64)) -> SystemTime {
        let nanos = u32::try_from(nanos).unwrap_or(0);
        match u64::try_from(secs) {
            Ok(secs) => UNIX_EPOCH + Duration::new(secs, nanos),
            Err(_) => UNIX_EPOCH,
        }
    }

    /// The cache directory, opened by its path (following a link there: the user's choice).
    fn open_root(dir: &Path) -> io::Result<OwnedFd> {
        rustix::fs::open(dir, DIR_FLAGS, Mode::empty()).map_err(err)
    }

    /// `name` in `root` as a directory, never through a link. `Ok(None)`: absent, or not a
    /// directory (a link, a file).
    fn open_child(root: &OwnedFd, name: &str) -> io::Result<Option<OwnedFd>> {
        match rustix::fs::openat(root, name, DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty()) {
            Ok(fd) => Ok(Some(fd)),
            Err(e) => {
                let e = err(e);
                if not_found(&e) {
                    return Ok(None);
                }
                match rustix::fs::statat(root, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(stat) if FileType::from_raw_mode(stat.st_mode) != FileType::Directory => {
                        Ok(None)
                    }
                    _ => Err(e),
                }
            }
        }
    }

    pub(in super::super) fn open_shard(dir: &Path, name: &str) -> io::Result<Option<Shard>> {
        let root = match open_root(dir) {
            Ok(root) => root,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(open_child(&root, name)?.map(|fd| Shard {
            path: dir.join(name),
            fd,
        }))
    }

    pub(in super::super) fn create_shard(dir: &Path, name: &str) -> io::Result<Shard> {
        let root = match open_root(dir) {
            Err(e) if not_found(&e) => {
                fs::create_dir_all(dir)?;
                open_root(dir)?
            }
            other => other?,
        };
        for _ in 0..2 {
            match rustix::fs::mkdirat(&root, name, Mode::from_raw_mode(0o777)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(err(e)),
            }
            if let Some(fd) = open_child(&root, name)? {
                return Ok(Shard {
                    path: dir.join(name),
                    fd,
                });
            }
            // A link (or a file) where the shard directory belongs: removed (the link itself,
            // never what it points at), then the directory is made again.
            tracing::warn!(path = %dir.join(name).display(), "not a directory where a shard belongs; replaced");
            match rustix::fs::unlinkat(&root, name, AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(err(e)),
            }
        }
        Err(io::Error::other("the shard directory keeps being replaced"))
    }

    pub(in super::super) fn shards(dir: &Path) -> io::Result<Vec<Shard>> {
        let root = open_root(dir)?;
        let mut out = Vec::new();
        for entry in Dir::read_from(&root).map_err(err)? {
            let entry = entry.map_err(err)?;
            let Ok(name) = entry.file_name().to_str() else {
                continue;
            };
            if name == "." || name == ".." {
                continue;
            }
            // A link or a file among the shards is skipped; a shard that cannot be opened
            // (another user's, say) too.
            if let Ok(Some(fd)) = open_child(&root, name) {
                out.push(Shard {
                    path: dir.join(name),
                    fd,
                });
            }
        }
        Ok(out)
    }

    impl Shard {
        pub(super) fn stat_inner(&self, name: &str) -> io::Result<(FileId, bool)> {
            rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)
                .map(|stat| id_of(&stat))
                .map_err(err)
        }

        pub(super) fn open_read(&self, name: &str) -> io::Result<fs::File> {
            let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
            rustix::fs::openat(&self.fd, name, flags, Mode::empty())
                .map(fs::File::from)
                .map_err(err)
        }

        /// Creates `name` for writing; fails if anything is there already.
        pub(in super::super) fn create_new(&self, name: &str) -> io::Result<fs::File> {
            let flags =
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(0o666))
                .map(fs::File::from)
                .map_err(err)
        }

        /// Renames `from` over `to`, both in this shard.
        pub(in super::super) fn rename(&self, from: &str, to: &str) -> io::Result<()> {
            rustix::fs::renameat(&self.fd, from, &self.fd, to).map_err(err)
        }

        /// Removes `name` (a link itself, never its target).
        pub(in super::super) fn remove(&self, name: &str) -> io::Result<()> {
            rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()).map_err(err)
        }

        /// Every name in this shard (`.` and `..` excepted) that can be described.
        pub(in super::super) fn list(&self) -> io::Result<Vec<Listed>> {
            let mut out = Vec::new();
            for entry in Dir::read_from(&self.fd).map_err(err)? {
                let entry = entry.map_err(err)?;
                let Ok(name) = entry.file_name().to_str() else {
                    continue;
                };
                if name == "." || name == ".." {
                    continue;
                }
                if let Ok((id, _)) = self.stat_inner(name) {
                    out.push(Listed {
                        name: name.to_owned(),
                        modified: system_time(id.modified),
                        id,
                    });
                }
            }
            Ok(out)
        }
    }
}

#[cfg(not(unix))]
mod imp {
    use std::fs;
    use std::io;
    use std::path::Path;
    use std::time::UNIX_EPOCH;

    use super::{FileId, Listed, Shard};

    pub(in super::super) fn open_shard(dir: &Path, name: &str) -> io::Result<Option<Shard>> {
        let path = dir.join(name);
        Ok(path.is_dir().then_some(Shard { path }))
    }

    pub(in super::super) fn create_shard(dir: &Path, name: &str) -> io::Result<Shard> {
        let path = dir.join(name);
        fs::create_dir_all(&path)?;
        Ok(Shard { path })
    }

    pub(in super::super) fn shards(dir: &Path) -> io::Result<Vec<Shard>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                out.push(Shard { path: entry.path() });
            }
        }
        Ok(out)
    }

    impl Shard {
        pub(super) fn stat_inner(&self, name: &str) -> io::Result<(FileId, bool)> {
            fs::symlink_metadata(self.path.join(name)).map(|m| (FileId::of(&m), m.is_file()))
        }

        pub(super) fn open_read(&self, name: &str) -> io::Result<fs::File> {
            fs::File::open(self.path.join(name))
        }

        pub(in super::super) fn create_new(&self, name: &str) -> io::Result<fs::File> {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(self.path.join(name))
        }

        pub(in super::super) fn rename(&self, from: &str, to: &str) -> io::Result<()> {
            fs::rename(self.path.join(from), self.path.join(to))
        }

        pub(in super::super) fn remove(&self, name: &str) -> io::Result<()> {
            fs::remove_file(self.path.join(name))
        }

        pub(in super::super) fn list(&self) -> io::Result<Vec<Listed>> {
            let mut out = Vec::new();
            for entry in fs::read_dir(&self.path)?.flatten() {
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                if let Ok(meta) = entry.metadata() {
                    out.push(Listed {
                        name,
                        modified: meta.modified().unwrap_or(UNIX_EPOCH),
                        id: FileId::of(&meta),
                    });
                }
            }
            Ok(out)
        }
    }
}

pub(super) use imp::{create_shard, open_shard, shards};
