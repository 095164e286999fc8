//! `/health`: a JSON summary for humans and load balancers, derived from a scrape so it can never
//! disagree with `/metrics`. A field whose collector is absent is left out, never invented.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::collector::filesystem::LOW_SPACE_RATIO;
use crate::metrics::MetricSet;

#[derive(Debug, Serialize, PartialEq)]
pub struct HealthReport {
    /// `ok`, or `warning` when anything below is flagged.
    pub status: &'static str,
    /// Human-readable reasons for a `warning`.
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soc_temperature_celsius: Option<f64>,
    /// Throttling conditions active now (`rpi_throttled`), by condition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttled: Option<BTreeMap<String, bool>>,
    /// Throttling conditions seen since boot (`rpi_throttled_since_boot`), by condition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttled_since_boot: Option<BTreeMap<String, bool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filesystems: Option<Vec<FilesystemHealth>>,
    /// Whether each collector succeeded in this scrape.
    pub collectors: BTreeMap<String, bool>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct FilesystemHealth {
    pub mountpoint: String,
    pub device: String,
    pub fstype: String,
    pub size_bytes: f64,
    pub avail_bytes: f64,
    pub avail_ratio: f64,
    pub readonly: bool,
    /// Less than 15 % of the filesystem is available.
    pub low_space: bool,
}

fn by_label(set: &MetricSet, family: &str, key: &str) -> Option<BTreeMap<String, bool>> {
    let family = set.get(family)?;
    Some(
        family
            .samples
            .iter()
            .filter_map(|s| Some((s.label(key)?.to_owned(), s.value != 0.0)))
            .collect(),
    )
}

/// Summarises one scrape.
pub fn health_report(set: &MetricSet) -> HealthReport {
    let mut warnings = Vec::new();

    let soc_temperature_celsius = set
        .get("rpi_soc_temperature_celsius")
        .and_then(|f| f.samples.first())
        .map(|s| s.value);

    let throttled = by_label(set, "rpi_throttled", "condition");
    if let Some(active) = &throttled {
        for (condition, _) in active.iter().filter(|(_, on)| **on) {
            warnings.push(format!("{condition} now"));
        }
    }
    let throttled_since_boot = by_label(set, "rpi_throttled_since_boot", "condition");

    let filesystems = set.get("rpi_filesystem_readonly").map(|readonly| {
        let value_for = |family: &str, mountpoint: &str| {
            set.get(family)?
                .samples
                .iter()
                .find(|s| s.label("mountpoint") == Some(mountpoint))
                .map(|s| s.value)
        };
        readonly
            .samples
            .iter()
            .filter_map(|s| {
                let mountpoint = s.label("mountpoint")?;
                let size = value_for("rpi_filesystem_size_bytes", mountpoint)?;
                let avail = value_for("rpi_filesystem_avail_bytes", mountpoint)?;
                let avail_ratio = if size > 0.0 { avail / size } else { 1.0 };
                Some(FilesystemHealth {
                    mountpoint: mountpoint.to_owned(),
                    device: s.label("device").unwrap_or_default().to_owned(),
                    fstype: s.label("fstype").unwrap_or_default().to_owned(),
                    size_bytes: size,
                    avail_bytes: avail,
                    avail_ratio,
                    readonly: s.value != 0.0,
                    low_space: size > 0.0 && avail_ratio < LOW_SPACE_RATIO,
                })
            })
            .collect::<Vec<_>>()
    });
    for fs in filesystems.iter().flatten() {
        if fs.readonly {
            warnings.push(format!("{} is mounted read-only", fs.mountpoint));
        }
        if fs.low_space {
            warnings.push(format!(
                "{} has {:.0} % available",
                fs.mountpoint,
                fs.avail_ratio * 100.0
            ));
        }
    }

    let collectors =
        by_label(set, "rpi_exporter_collector_success", "collector").unwrap_or_default();
    for (name, _) in collectors.iter().filter(|(_, ok)| !**ok) {
        warnings.push(format!("collector {name} failed"));
    }

    HealthReport {
        status: if warnings.is_empty() { "ok" } else { "warning" },
        warnings,
        soc_temperature_celsius,
        throttled,
        throttled_since_boot,
        filesystems,
        collectors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs(set: &mut MetricSet, mountpoint: &str, readonly: f64, size: f64, avail: f64) {
        let labels = [
            ("device", "/dev/x"),
            ("fstype", "ext4"),
            ("mountpoint", mountpoint),
        ];
        set.gauge("rpi_filesystem_readonly", "")
            .sample(labels, readonly);
        set.gauge("rpi_filesystem_size_bytes", "")
            .sample(labels, size);
        set.gauge("rpi_filesystem_avail_bytes", "")
            .sample(labels, avail);
    }

    #[test]
    fn flags_low_space_read_only_and_failed_collectors() {
        let mut set = MetricSet::new();
        fs(&mut set, "/", 1.0, 1000.0, 500.0);
        fs(&mut set, "/var/log", 0.0, 1000.0, 100.0);
        set.gauge("rpi_exporter_collector_success", "")
            .sample([("collector", "storage")], 0.0);
        let report = health_report(&set);
        assert_eq!(report.status, "warning");
        assert_eq!(
            report.warnings,
            [
                "/ is mounted read-only",
                "/var/log has 10 % available",
                "collector storage failed"
            ]
        );
        let fss = report.filesystems.expect("filesystems");
        assert!(!fss[0].low_space && fss[0].readonly);
        assert!(fss[1].low_space);
    }

    #[test]
    fn absent_collectors_leave_fields_out() {
        let mut set = MetricSet::new();
        set.gauge("rpi_exporter_collector_success", "")
            .sample([("collector", "system")], 1.0);
        let report = health_report(&set);
        assert_eq!(report.status, "ok");
        let json = serde_json::to_string(&report).expect("json");
        assert!(!json.contains("soc_temperature"), "{json}");
        assert!(!json.contains("throttled"), "{json}");
        assert!(!json.contains("filesystems"), "{json}");
    }

    #[test]
    fn reports_temperature_and_throttling_when_present() {
        let mut set = MetricSet::new();
        set.gauge("rpi_soc_temperature_celsius", "")
            .sample([], 71.5);
        set.gauge("rpi_throttled", "")
            .sample([("condition", "under_voltage")], 1.0);
        set.gauge("rpi_throttled", "")
            .sample([("condition", "throttled")], 0.0);
        let report = health_report(&set);
        assert_eq!(report.soc_temperature_celsius, Some(71.5));
        assert_eq!(report.warnings, ["under_voltage now"]);
    }
}
