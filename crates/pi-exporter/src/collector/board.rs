//! The board file of `--simulate.board`: one optional section per hardware collector, each
//! with the schema its collector owns (`docs/simulated-board.md`), and its loader. It sits in
//! the collector layer because its sections are the collectors' own types; `simulate.rs`
//! re-exports it as the public entry.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A whole board file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardFile {
    /// What the board stands for, e.g. "Pi 4 with a weak power supply"; logged at start-up.
    #[serde(default)]
    pub description: Option<String>,
    /// The VideoCore firmware behind `/dev/vcio`.
    #[serde(default)]
    pub firmware: Option<super::firmware::simulate::FirmwareBoard>,
    /// DS3231 register maps on a simulated I2C bus.
    #[serde(default)]
    pub rtc: Option<super::rtc::RtcBoard>,
    /// UPS chips on a simulated I2C bus and the power-loss GPIO lines.
    #[serde(default)]
    pub ups: Option<super::ups::UpsBoard>,
    /// The kernel clock's NTP state (what `adjtimex` returns) for the time collector.
    #[serde(default)]
    pub time: Option<super::time::Timex>,
    /// The `rpi_volt` under-voltage alarm, pulsing, for the history collector's event count.
    #[serde(default)]
    pub power: Option<super::history::power::PowerBoard>,
    /// `statvfs` answers by mount point for the filesystem collector; other mounts are real.
    #[serde(default)]
    pub filesystems: Option<std::collections::BTreeMap<String, super::filesystem::FsStats>>,
}

#[derive(Debug, thiserror::Error)]
pub enum BoardFileError {
    #[error("cannot read board file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid board file {}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

/// Loads and validates a board file.
pub fn load(path: &Path) -> Result<BoardFile, BoardFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| BoardFileError::Io {
        path: path.to_owned(),
        source,
    })?;
    serde_saphyr::from_str(&text).map_err(|e| BoardFileError::Invalid {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_sections_are_errors_naming_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("board.yaml");
        std::fs::write(&path, "description: test\nfirmwre: {}\n").expect("write");
        let err = load(&path).expect_err("typo must be rejected");
        assert!(err.to_string().contains("firmwre"), "{err}");
        std::fs::write(&path, "description: demo\n").expect("write");
        assert_eq!(
            load(&path).expect("valid").description.as_deref(),
            Some("demo")
        );
        assert!(matches!(
            load(&dir.path().join("missing.yaml")),
            Err(BoardFileError::Io { .. })
        ));
    }
}
