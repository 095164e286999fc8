//! Small helpers for reading /proc and /sys files and for reporting what went wrong.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use super::CollectError;

/// Reads a whole (small) file and trims surrounding whitespace.
pub fn read_trimmed(path: &Path) -> Result<String, CollectError> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| CollectError::io(path, e))
}

/// Reads a file holding one unsigned decimal integer.
pub fn read_u64(path: &Path) -> Result<u64, CollectError> {
    read_parsed(path, "an unsigned integer", |text| text.parse().ok())
}

/// Reads a file and parses its trimmed text; `expected` names what it should have held, for the
/// error when `parse` rejects it.
pub(crate) fn read_parsed<T>(
    path: &Path,
    expected: &str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<T, CollectError> {
    let text = read_trimmed(path)?;
    parse(&text).ok_or_else(|| {
        CollectError::malformed(
            path,
            format!("expected {expected}, found {:?}", excerpt(&text)),
        )
    })
}

/// The start of `text`, so a garbled multi-kilobyte file (a broken `/proc/stat`) does not turn
/// into an equally long error message.
fn excerpt(text: &str) -> String {
    const MAX_CHARS: usize = 64;
    match text.char_indices().nth(MAX_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// The errors of a collector that reads several sources independently: a failed source is
/// recorded and skipped, the others are still reported, and the collector fails once at the end.
#[derive(Debug, Default)]
pub(crate) struct Failures(Vec<CollectError>);

impl Failures {
    /// Passes a successful read through; records a failed one and yields `None`.
    pub(crate) fn record<T>(&mut self, result: Result<T, CollectError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                self.0.push(error);
                None
            }
        }
    }

    pub(crate) fn push(&mut self, error: CollectError) {
        self.0.push(error);
    }

    /// Records that `count` lines of a one-record-per-line file were skipped, if any were.
    pub(crate) fn skipped_lines(&mut self, path: &Path, count: usize) {
        if count > 0 {
            self.push(CollectError::malformed(
                path,
                format!("skipped {count} malformed line(s)"),
            ));
        }
    }

    /// `Ok` if nothing failed, the error itself if one thing did, else all of them in one message.
    pub(crate) fn finish(mut self) -> Result<(), CollectError> {
        if self.0.len() <= 1 {
            return self.0.pop().map_or(Ok(()), Err);
        }
        let messages: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        Err(CollectError::Other(messages.join("; ")))
    }
}

/// Unwraps the read of a file that may legitimately be absent (an SD card has no wear
/// attributes; a filesystem may be unmounted between listing and reading): `None` when absent,
/// and also when unreadable or malformed, which is recorded in `failures`.
pub(crate) fn if_present<T>(failures: &mut Failures, read: Result<T, CollectError>) -> Option<T> {
    match read {
        Ok(value) => Some(value),
        Err(CollectError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => None,
        Err(error) => {
            failures.push(error);
            None
        }
    }
}

/// The entry names of a directory, sorted so samples come out in a stable order.
pub(crate) fn list_dir(dir: &Path) -> Result<Vec<String>, CollectError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| CollectError::io(dir, e))? {
        let entry = entry.map_err(|e| CollectError::io(dir, e))?;
        // Kernel device names are ASCII; anything else is not a device this collector knows.
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    names.sort_unstable();
    Ok(names)
}

/// Parses a file of one record per line (`/proc/diskstats`, `/proc/swaps`, the mount table):
/// the records `parse` accepts, and how many non-blank lines it rejected.
pub(crate) fn parse_lines<'a, T>(
    lines: impl Iterator<Item = &'a str>,
    mut parse: impl FnMut(&'a str) -> Option<T>,
) -> (Vec<T>, usize) {
    let mut records = Vec::new();
    let mut malformed = 0;
    for line in lines.filter(|l| !l.trim().is_empty()) {
        match parse(line) {
            Some(record) => records.push(record),
            None => malformed += 1,
        }
    }
    (records, malformed)
}

/// Remembers a yes/no verdict per name (a regex match on a device name, say): the same few
/// names come back every scrape, and regex-lite matches without a DFA.
#[derive(Debug, Default)]
pub(crate) struct VerdictMemo(Mutex<HashMap<String, bool>>);

impl VerdictMemo {
    /// Bound on remembered names, against a source that invents new names forever.
    const CAPACITY: usize = 1024;

    pub(crate) fn get_or(&self, name: &str, decide: impl FnOnce() -> bool) -> bool {
        let mut verdicts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(&verdict) = verdicts.get(name) {
            return verdict;
        }
        if verdicts.len() >= Self::CAPACITY {
            verdicts.clear();
        }
        let verdict = decide();
        verdicts.insert(name.to_owned(), verdict);
        verdict
    }
}

/// Undoes the kernel's escaping of paths in `/proc/self/mounts` and `/proc/swaps`, which write
/// space, tab, newline and backslash as `\ooo` octal.
pub(crate) fn unescape_octal(field: &str) -> String {
    if !field.contains('\\') {
        return field.to_owned();
    }
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                let v = u32::from(d[0] - b'0') * 64
                    + u32::from(d[1] - b'0') * 8
                    + u32::from(d[2] - b'0');
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_memo_decides_each_name_once() {
        let memo = VerdictMemo::default();
        let mut calls = 0;
        assert!(memo.get_or("loop0", || {
            calls += 1;
            true
        }));
        assert!(memo.get_or("loop0", || {
            calls += 1;
            false
        }));
        assert!(!memo.get_or("mmcblk0", || false));
        assert_eq!(calls, 1);
    }

    #[test]
    fn read_parsed_reports_a_short_excerpt_of_what_it_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("value");
        fs::write(&path, format!("{}\n", "x".repeat(500))).expect("write");
        let err = read_u64(&path).expect_err("not a number");
        let message = err.to_string();
        assert!(
            message.contains("expected an unsigned integer"),
            "{message}"
        );
        assert!(message.len() < 200, "{message}");

        fs::write(&path, " 42\n").expect("write");
        assert_eq!(read_u64(&path).ok(), Some(42));
        assert!(matches!(
            read_u64(&dir.path().join("missing")),
            Err(CollectError::Io { .. })
        ));
    }

    #[test]
    fn failures_keep_a_single_error_as_is_and_join_several() {
        assert!(Failures::default().finish().is_ok());

        let mut one = Failures::default();
        assert_eq!(one.record(Ok::<_, CollectError>(3)), Some(3));
        assert_eq!(
            one.record(Err::<u8, _>(CollectError::malformed(
                Path::new("/a"),
                "bad"
            ))),
            None
        );
        assert!(matches!(one.finish(), Err(CollectError::Malformed { .. })));

        let mut two = Failures::default();
        two.skipped_lines(Path::new("/proc/swaps"), 0);
        two.push(CollectError::malformed(Path::new("/a"), "bad"));
        two.skipped_lines(Path::new("/proc/swaps"), 2);
        let err = two.finish().expect_err("two failures");
        assert_eq!(
            err.to_string(),
            "/a: bad; /proc/swaps: skipped 2 malformed line(s)"
        );
    }

    #[test]
    fn unescapes_octal_sequences_only() {
        assert_eq!(unescape_octal("/mnt/usb\\040disk"), "/mnt/usb disk");
        assert_eq!(unescape_octal("a\\134b\\0"), "a\\b\\0");
        assert_eq!(unescape_octal("\\777x"), "?x");
        assert_eq!(unescape_octal("/var/swap"), "/var/swap");
    }
}
