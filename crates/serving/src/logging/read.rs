//! The lines read back, for the tests (and tools) that follow a binary's log in either format,
//! and the `JOURNAL_STREAM` value systemd sets, for tests that start a binary as systemd does.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt as _;

/// The `JOURNAL_STREAM` value that names `file`: its device and inode in decimal,
/// `device:inode` (systemd.exec(5)).
pub fn journal_stream(file: &File) -> io::Result<String> {
    let metadata = file.metadata()?;
    Ok(format!("{}:{}", metadata.dev(), metadata.ino()))
}

/// The syslog priority a line starts with under the journal (`<4>`: 4).
pub fn priority(line: &str) -> Option<u8> {
    let (digits, _) = line.strip_prefix('<')?.split_once('>')?;
    digits.parse().ok()
}

/// The value of `key` in a logfmt or JSON line (after any priority): a bare value, or a quoted
/// one that holds no escape (`None` for one that does: it is not unescaped here).
pub fn field<'l>(line: &'l str, key: &str) -> Option<&'l str> {
    let line = match priority(line) {
        Some(_) => line.split_once('>')?.1,
        None => line,
    };
    let mut rest = line.strip_prefix('{').unwrap_or(line);
    let json = rest.len() < line.len();
    while !rest.is_empty() {
        let (name, after) = if json {
            let (name, after) = rest.strip_prefix('"')?.split_once("\":")?;
            (name, after)
        } else {
            rest.split_once('=')?
        };
        let (value, next) = value(after, json)?;
        if name == key {
            return value;
        }
        rest = next;
    }
    None
}

/// Splits a value off `text`: a quoted one up to its closing quote, a bare one up to the next
/// pair (or the end of a JSON object). The value is `None` if it holds an escape.
fn value(text: &str, json: bool) -> Option<(Option<&str>, &str)> {
    let ends: &[char] = if json { &[',', '}'] } else { &[' '] };
    let (value, rest) = match text.strip_prefix('"') {
        Some(quoted) => {
            let end = closing_quote(quoted)?;
            let inner = &quoted[..end];
            ((!inner.contains('\\')).then_some(inner), &quoted[end + 1..])
        }
        None => {
            let end = text.find(ends).unwrap_or(text.len());
            (Some(&text[..end]), &text[end..])
        }
    };
    Some((value, rest.trim_start_matches(ends)))
}

/// The index of the first quote in `text` that no backslash escapes.
fn closing_quote(text: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, byte) in text.bytes().enumerate() {
        match byte {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'"' => return Some(i),
            _ => {}
        }
    }
    None
}
