//! `pi-exporter doctor`: the field checklist for a Pi nobody can easily reach, as a command
//! (`doctor`, a table or JSON, exit status 1 on any FAIL) and as the `doctor` collector's
//! `rpi_doctor_check` series. `docs/doctor.md` describes every check.
//!
//! [`facts::gather`] reads everything once: configuration files under `--path.rootfs`, kernel
//! state under procfs, sysfs and devfs, and the samples of the exporter's own collectors
//! (firmware, storage, filesystem, system, RTC, time, UPS) run once, so the doctor decodes
//! nothing they already decode. [`checks`] turns those facts into verdicts with pure functions.
//! A fact that could not be read makes its checks SKIP with the reason, never a guess.

pub(crate) mod checks;
pub(crate) mod config;
pub(crate) mod facts;
pub mod render;

use std::path::PathBuf;

use serde::Serialize;

use crate::cli::ListenAddress;
use crate::collector::BuildContext;

/// The outcome of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Pass,
    /// Works, but is a risk the checklist advises against.
    Warn,
    /// Will cause the failure the check is about; `doctor` exits with status 1.
    Fail,
    /// Not checked: the source is unavailable or a file is unreadable or malformed.
    Skip,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Warn => "WARN",
            Self::Fail => "FAIL",
            Self::Skip => "SKIP",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Storage,
    Power,
    Time,
    Recovery,
    Access,
}

impl Category {
    pub fn label(self) -> &'static str {
        match self {
            Self::Storage => "storage",
            Self::Power => "power",
            Self::Time => "time",
            Self::Recovery => "recovery",
            Self::Access => "access",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub category: Category,
    pub verdict: Verdict,
    /// Why the verdict is not PASS (empty for PASS).
    pub reason: String,
    /// What was found, in a few words.
    pub found: String,
    /// The fix in one line (empty for PASS and SKIP).
    pub fix: String,
}

/// Where the exporter serves, for the exposure check.
#[derive(Debug, Clone, PartialEq)]
pub struct Exposure {
    pub listen: Vec<ListenAddress>,
    /// The web configuration file, as a path this process can read.
    pub web_config: Option<PathBuf>,
    /// Where these came from, for the message ("this server", "pi-exporter.service", ...).
    pub origin: String,
}

/// What the checks run against.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub context: BuildContext,
    /// `Err`: why the exposure is not known (SKIP).
    pub exposure: Result<Exposure, String>,
}

/// Runs every check once.
pub fn run(inputs: &Inputs, sources: &facts::Sources) -> Vec<Finding> {
    let facts = facts::gather(inputs, sources);
    checks::all(&facts)
}

/// The verdict a whole report gives: 1 when anything FAILs.
pub fn exit_status(findings: &[Finding]) -> u8 {
    u8::from(findings.iter().any(|f| f.verdict == Verdict::Fail))
}
