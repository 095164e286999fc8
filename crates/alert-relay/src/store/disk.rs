//! What a disk can refuse the SQLite backend, in words an operator acts on: a database file
//! (or its `-wal`/`-shm` file, or their directory) the relay's user cannot write, and a full
//! disk. SQLite opens a file it may not write read-only without a word, and says "unable to
//! open database file" for a directory; the file system says which file and why.

use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use rusqlite::ErrorCode;

use super::StoreError;

/// The start-up error for `e`, met opening `path` or committing the start-up probe.
pub(super) fn start_error(path: &Path, e: rusqlite::Error) -> StoreError {
    let blocked = first_unwritable(path);
    let full = is_full(&e)
        || blocked
            .as_ref()
            .is_some_and(|(_, io)| io.kind() == ErrorKind::StorageFull);
    if full {
        return StoreError::DiskFull(e.to_string());
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let code = e.sqlite_error().map(|f| f.extended_code);
    let (file, why) = match (blocked, dir, code) {
        (Some((file, io)), _, _) => (file, io.to_string()),
        (None, Some(dir), Some(rusqlite::ffi::SQLITE_READONLY_DIRECTORY)) => (
            dir.to_owned(),
            format!("the directory is not writable, so SQLite cannot create the -wal file ({e})"),
        ),
        (None, _, _) if is_access(&e) => (path.to_owned(), e.to_string()),
        _ => return StoreError::Db(e),
    };
    StoreError::NotWritable(format!(
        "{}: {why}{}",
        file.display(),
        owner_and_mode(&file)
    ))
}

fn is_access(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied)
    )
}

/// The first of the database's files that exists and cannot be opened for writing, with why
/// (permissions, a read-only mount, a directory in its place). Only on the way to a start-up
/// error: closing another descriptor of an open database drops SQLite's POSIX locks on it.
fn first_unwritable(path: &Path) -> Option<(PathBuf, std::io::Error)> {
    let mut files = vec![path.to_owned()];
    for suffix in ["-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        files.push(PathBuf::from(name));
    }
    files.into_iter().find_map(|file| {
        if !file.exists() {
            return None;
        }
        // Opening for writing neither creates nor truncates: nothing changes on disk.
        let opened = std::fs::OpenOptions::new().write(true).open(&file);
        opened.err().map(|e| (file, e))
    })
}

/// ` (owner uid 0, mode 444)`, or nothing when the file cannot be looked at.
fn owner_and_mode(file: &Path) -> String {
    std::fs::metadata(file).map_or_else(
        |_| String::new(),
        |m| format!(" (owner uid {}, mode {:o})", m.uid(), m.mode() & 0o7777),
    )
}

/// Whether `e` says the disk is full: SQLite maps ENOSPC to SQLITE_FULL when it writes, but to
/// a plain "disk I/O error" (SQLITE_IOERR_SHMSIZE) when it cannot grow the `-shm` file, which is
/// what opening on a full disk meets first.
pub(super) fn is_full(e: &rusqlite::Error) -> bool {
    e.sqlite_error().is_some_and(|f| {
        f.code == ErrorCode::DiskFull || f.extended_code == rusqlite::ffi::SQLITE_IOERR_SHMSIZE
    })
}

/// A commit's failure as the health check and the logs say it: "disk full" first when it is.
pub(super) fn explain(e: &rusqlite::Error) -> String {
    if is_full(e) {
        format!("disk full ({e})")
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::ffi;

    use super::*;
    use crate::store::sqlite::Sqlite;
    use crate::store::{Backend as _, Write};

    #[test]
    fn a_directory_in_place_of_a_database_file_refuses_start_up() {
        // Not even root can open a directory for writing, so this holds wherever tests run.
        for name in ["relay.db", "relay.db-wal", "relay.db-shm"] {
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::create_dir(dir.path().join(name)).expect("mkdir");
            let err = Sqlite::open(&dir.path().join("relay.db")).expect_err(name);
            let text = err.to_string();
            assert!(matches!(err, StoreError::NotWritable(_)), "{name}: {text}");
            assert!(text.contains(&format!("{name}: ")), "names {name}: {text}");
            assert!(text.contains("directory"), "{text}");
        }
    }

    #[test]
    fn a_full_disk_says_so() {
        let path = Path::new("/nonexistent/relay.db");
        for code in [ffi::SQLITE_FULL, ffi::SQLITE_IOERR_SHMSIZE] {
            let e = || rusqlite::Error::SqliteFailure(ffi::Error::new(code), None);
            assert!(explain(&e()).starts_with("disk full"), "{code}");
            let err = start_error(path, e());
            assert!(matches!(err, StoreError::DiskFull(_)), "{code}: {err}");
            assert!(err.to_string().starts_with("disk full"), "{err}");
        }
        let other = rusqlite::Error::SqliteFailure(ffi::Error::new(ffi::SQLITE_CONSTRAINT), None);
        assert!(!explain(&other).contains("disk full"));
    }

    #[test]
    fn recovery_truncates_the_write_ahead_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("relay.db");
        let mut db = Sqlite::open(&path).expect("open");
        let writes = (0..50)
            .map(|i| Write::SetMetaInt {
                key: format!("k{i}"),
                value: i,
            })
            .collect();
        assert!(db.write_batch(writes).iter().all(Result::is_ok));
        let wal = dir.path().join("relay.db-wal");
        assert!(std::fs::metadata(&wal).expect("wal").len() > 0);
        db.recover().expect("checkpoint");
        assert_eq!(std::fs::metadata(&wal).expect("wal").len(), 0);
    }
}
