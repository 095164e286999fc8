//! The state file (`--collector.history.state-file`): which boot the exporter last started in,
//! whether it was stopped cleanly, and the counters that must survive reboots.
//!
//! No kernel file says whether the previous boot ended cleanly, so the exporter keeps its own
//! marker: the boot id at start, "stopped cleanly" at SIGTERM. A previous boot id without the
//! clean-stop mark means that boot ended without the service being stopped (power loss, crash,
//! hard reset). The file is written twice per run, at start and at a clean stop, never per
//! scrape: SD cards wear.
//!
//! `Record`, `parse`, `render` and `next_start` are pure; `load` and `write_atomic` do the I/O.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

/// First line of the file: a foreign file (or a later format) is recognised, not misread.
const MAGIC: &str = "pi-exporter-history 1";

/// What the file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// `/proc/sys/kernel/random/boot_id` of the boot the exporter last started in.
    pub boot_id: String,
    /// Boots counted since the file was created, this one included.
    pub boots: u64,
    /// Boots that ended without a clean stop of the exporter.
    pub unclean_shutdowns: u64,
    /// How the boot before `boot_id` ended; `None` when there was no record of it.
    pub last_shutdown_clean: Option<bool>,
    /// Set at a clean stop, cleared at start.
    pub clean_stop: bool,
    /// Unix time of the write, to notice a clock stepped back.
    pub written_at: u64,
}

/// The boot id as the kernel prints it: a lower-case UUID.
pub fn valid_boot_id(text: &str) -> bool {
    text.len() == 36
        && text.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_digit() || ('a'..='f').contains(&c),
        })
}

/// Parses the file; `Err` says why it is corrupt or foreign.
pub fn parse(text: &str) -> Result<Record, String> {
    let mut lines = text.lines();
    if lines.next() != Some(MAGIC) {
        return Err(format!("first line is not {MAGIC:?}"));
    }
    let mut fields = std::collections::BTreeMap::new();
    for line in lines {
        let (key, value) = line
            .split_once(' ')
            .ok_or_else(|| format!("line {line:?} is not `key value`"))?;
        fields.insert(key, value);
    }
    let field = |key: &str| fields.get(key).copied().ok_or(format!("no {key}"));
    let number = |key: &str| -> Result<u64, String> {
        field(key)?
            .parse()
            .map_err(|_| format!("{key} is not a number"))
    };
    let flag = |key: &str| match field(key)? {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => Err(format!("{key} is not 0 or 1")),
    };
    let boot_id = field("boot_id")?;
    if !valid_boot_id(boot_id) {
        return Err("boot_id is not a UUID".into());
    }
    let last_shutdown_clean = match field("last_shutdown_clean")? {
        "unknown" => None,
        _ => Some(flag("last_shutdown_clean")?),
    };
    Ok(Record {
        boot_id: boot_id.to_owned(),
        boots: number("boots")?,
        unclean_shutdowns: number("unclean_shutdowns")?,
        last_shutdown_clean,
        clean_stop: flag("clean_stop")?,
        written_at: number("written_at")?,
    })
}

pub fn render(record: &Record) -> String {
    let last = match record.last_shutdown_clean {
        None => "unknown",
        Some(true) => "1",
        Some(false) => "0",
    };
    format!(
        "{MAGIC}\nboot_id {}\nboots {}\nunclean_shutdowns {}\nlast_shutdown_clean {last}\nclean_stop {}\nwritten_at {}\n",
        record.boot_id,
        record.boots,
        record.unclean_shutdowns,
        u8::from(record.clean_stop),
        record.written_at
    )
}

/// The record of a start in boot `boot_id` at `now`, following `previous`. A start in the same
/// boot (the service restarted) is not a new boot and changes no counter.
pub fn next_start(previous: Option<&Record>, boot_id: &str, now: u64) -> Record {
    let (boots, unclean_shutdowns, last_shutdown_clean) = match previous {
        None => (1, 0, None),
        Some(p) if p.boot_id == boot_id => (p.boots, p.unclean_shutdowns, p.last_shutdown_clean),
        Some(p) => (
            p.boots.saturating_add(1),
            p.unclean_shutdowns + u64::from(!p.clean_stop),
            Some(p.clean_stop),
        ),
    };
    Record {
        boot_id: boot_id.to_owned(),
        boots,
        unclean_shutdowns,
        last_shutdown_clean,
        clean_stop: false,
        written_at: now,
    }
}

/// What was found at the state file's path.
#[derive(Debug)]
pub enum Loaded {
    Absent,
    Valid(Record),
    /// Corrupt or foreign, moved aside to this path.
    MovedAside(PathBuf, String),
}

/// Reads the file. A corrupt one is renamed to `<file>.corrupt-<now>` so its counters can still
/// be recovered by hand, and never overwritten.
pub fn load(path: &Path, now: u64) -> io::Result<Loaded> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Loaded::Absent),
        Err(e) => return Err(e),
    };
    let parsed = std::str::from_utf8(&bytes)
        .map_err(|_| "not UTF-8".to_owned())
        .and_then(parse);
    match parsed {
        Ok(record) => Ok(Loaded::Valid(record)),
        Err(why) => {
            let aside = sibling(path, &format!("corrupt-{now}"));
            fs::rename(path, &aside)?;
            Ok(Loaded::MovedAside(aside, why))
        }
    }
}

/// `<file>.<suffix>` in the same directory (so a rename stays on one filesystem).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".");
    name.push(suffix);
    path.with_file_name(name)
}

/// Replaces the file atomically: a temporary file, fsync, rename, fsync of the directory, so a
/// power cut leaves either the old or the new record, never a torn one.
pub fn write_atomic(path: &Path, text: &str) -> io::Result<()> {
    let temporary = sibling(path, "tmp");
    let mut file = fs::File::create(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temporary, path)?;
    let directory = path.parent().filter(|p| !p.as_os_str().is_empty());
    fs::File::open(directory.unwrap_or(Path::new(".")))?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOT_A: &str = "0f4b1c5e-2d3a-4b6c-8d9e-0a1b2c3d4e5f";
    const BOOT_B: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";

    #[test]
    fn records_round_trip_and_garbage_is_named() {
        let record = next_start(None, BOOT_A, 1_718_214_012);
        assert_eq!(parse(&render(&record)), Ok(record.clone()));
        let stopped = Record {
            clean_stop: true,
            last_shutdown_clean: Some(false),
            ..record
        };
        assert_eq!(parse(&render(&stopped)), Ok(stopped));
        for (bad, why) in [
            ("", "first line"),
            ("{\"boots\": 3}", "first line"),
            ("pi-exporter-history 1\nboot_id nope\n", "no boots"),
            ("pi-exporter-history 1\nboots x\n", "no boot_id"),
        ] {
            let err = parse(bad).expect_err(bad);
            assert!(err.contains(why) || err.contains("UUID"), "{bad:?}: {err}");
        }
        assert!(valid_boot_id(BOOT_B));
        assert!(!valid_boot_id(&BOOT_B.to_uppercase()));
        assert!(!valid_boot_id(""));
    }

    #[test]
    fn a_restart_in_the_same_boot_counts_nothing() {
        let first = next_start(None, BOOT_A, 10);
        let again = next_start(Some(&first), BOOT_A, 20);
        assert_eq!((again.boots, again.unclean_shutdowns), (1, 0));
        assert_eq!(again.last_shutdown_clean, None);
        let next_boot = next_start(Some(&again), BOOT_B, 30);
        assert_eq!((next_boot.boots, next_boot.unclean_shutdowns), (2, 1));
        assert_eq!(next_boot.last_shutdown_clean, Some(false));
    }
}
