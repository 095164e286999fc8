//! Small helpers for reading one-value files in /proc and /sys.

use std::fs;
use std::path::Path;

use super::CollectError;

/// Reads a whole (small) file and trims surrounding whitespace.
pub fn read_trimmed(path: &Path) -> Result<String, CollectError> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| CollectError::io(path, e))
}

/// Reads a file holding one unsigned decimal integer.
pub fn read_u64(path: &Path) -> Result<u64, CollectError> {
    let text = read_trimmed(path)?;
    text.parse().map_err(|_| {
        CollectError::malformed(
            path,
            format!("expected an unsigned integer, found {text:?}"),
        )
    })
}
