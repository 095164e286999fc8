//! Noticing that the config file or a file it names changed, by `stat` alone.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Files as they were when last read.
#[derive(Debug)]
pub(super) struct WatchedFiles {
    files: Vec<(PathBuf, Option<FileStamp>)>,
}

impl WatchedFiles {
    /// Stamps `paths` now; call before reading them.
    pub(super) fn new<P: AsRef<Path>>(paths: impl IntoIterator<Item = P>) -> Self {
        let mut watched = Self { files: Vec::new() };
        watched.extend(paths);
        watched
    }

    /// Stamps more `paths` now; call before reading them.
    pub(super) fn extend<P: AsRef<Path>>(&mut self, paths: impl IntoIterator<Item = P>) {
        self.files.extend(paths.into_iter().map(|path| {
            let path = path.as_ref();
            (path.to_owned(), FileStamp::of(path))
        }));
    }

    /// Whether any file now differs from its stamp (appeared, vanished, or was written,
    /// replaced or chmod-ed).
    pub(super) fn changed(&self) -> bool {
        self.files
            .iter()
            .any(|(path, stamp)| FileStamp::of(path) != *stamp)
    }
}

/// What `stat` says about a file that changes whenever its content can have changed. Besides
/// mtime and size, the inode catches a file replaced by `rename` (how editors and config
/// managers write) and ctime catches `chmod` (making an unreadable key readable) as well as
/// writes that restore an old mtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    /// `None` if the file cannot be stat-ed (typically: it does not exist), which is itself a
    /// state to compare: the file appearing is a change.
    fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        Some(Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_writes_replacement_creation_and_removal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let present = dir.path().join("present");
        let absent = dir.path().join("absent");
        std::fs::write(&present, "one").expect("write");

        let watched = WatchedFiles::new([&present, &absent]);
        assert!(!watched.changed());

        std::fs::write(&present, "three").expect("rewrite");
        assert!(watched.changed(), "size change");

        let watched = WatchedFiles::new([&present, &absent]);
        let replacement = dir.path().join("replacement");
        std::fs::write(&replacement, "three").expect("write");
        std::fs::rename(&replacement, &present).expect("rename");
        assert!(watched.changed(), "same size, new inode");

        let watched = WatchedFiles::new([&present, &absent]);
        std::fs::write(&absent, "").expect("create");
        assert!(watched.changed(), "file appeared");

        let watched = WatchedFiles::new([&present, &absent]);
        std::fs::remove_file(&present).expect("remove");
        assert!(watched.changed(), "file vanished");
    }
}
