//! The power-loss line, through the GPIO character device (uAPI v2, `gpiocdev`), input only.
//!
//! Lines are found by name (`GPIO6`) on every `<devfs>/gpiochip*`, so the gpiochip0/gpiochip4
//! change and the sysfs +512 renumbering do not matter. A line some other process holds (a
//! vendor daemon) is reported with its consumer and left alone; the line is requested as an
//! input for one read and released at once, so this exporter never holds it against others.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// What reading a line gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineState {
    /// The physical level: `true` is high.
    Level(bool),
    /// Another consumer holds the line.
    Busy {
        consumer: String,
    },
    /// No gpiochip has a line of that name (or there is no gpiochip at all).
    Missing,
    Error(String),
}

/// Where line levels come from.
pub trait LineSource: Send + Sync + std::fmt::Debug {
    fn read(&self, name: &str) -> LineState;
}

/// The real lines under `<devfs>`.
#[derive(Debug)]
pub struct DevLines {
    pub devfs: PathBuf,
}

impl LineSource for DevLines {
    #[cfg(target_os = "linux")]
    fn read(&self, name: &str) -> LineState {
        linux::read(&self.devfs, name)
    }

    #[cfg(not(target_os = "linux"))]
    fn read(&self, _name: &str) -> LineState {
        LineState::Missing
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::path::Path;

    use gpiocdev::chip::Chip;
    use gpiocdev::line::Value;
    use gpiocdev::request::Request;

    use super::LineState;

    pub(super) fn read(devfs: &Path, name: &str) -> LineState {
        let Ok(entries) = std::fs::read_dir(devfs) else {
            return LineState::Missing;
        };
        let mut chips: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("gpiochip"))
            })
            .collect();
        chips.sort();
        let mut errors = Vec::new();
        for path in chips {
            let chip = match Chip::from_path(&path) {
                Ok(chip) => chip,
                Err(e) => {
                    errors.push(format!("{}: {e}", path.display()));
                    continue;
                }
            };
            let Ok(lines) = chip.line_info_iter() else {
                continue;
            };
            let Some(info) = lines.flatten().find(|info| info.name == name) else {
                continue;
            };
            if info.used {
                return LineState::Busy {
                    consumer: info.consumer,
                };
            }
            let request = Request::builder()
                .on_chip(&path)
                .with_consumer("pi-exporter")
                .with_line(info.offset)
                .as_input()
                .request();
            return match request.and_then(|r| r.value(info.offset)) {
                Ok(Value::Active) => LineState::Level(true),
                Ok(Value::Inactive) => LineState::Level(false),
                // EBUSY ("Device or resource busy"): taken between line_info and the request.
                Err(e) if e.to_string().to_lowercase().contains("busy") => LineState::Busy {
                    consumer: String::new(),
                },
                Err(e) => LineState::Error(format!("{}: {name}: {e}", path.display())),
            };
        }
        if errors.is_empty() {
            LineState::Missing
        } else {
            LineState::Error(errors.join("; "))
        }
    }
}

/// A line in the board file's `ups.gpio` map.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SimulatedLine {
    High,
    Low,
    /// Held by another process, e.g. `{busy: x728-pwr}`.
    Busy(String),
}

/// The simulated lines: those named in the board file exist, others are missing.
#[derive(Debug, Default, Clone)]
pub struct SimulatedLines(pub BTreeMap<String, SimulatedLine>);

impl LineSource for SimulatedLines {
    fn read(&self, name: &str) -> LineState {
        match self.0.get(name) {
            Some(SimulatedLine::High) => LineState::Level(true),
            Some(SimulatedLine::Low) => LineState::Level(false),
            Some(SimulatedLine::Busy(consumer)) => LineState::Busy {
                consumer: consumer.clone(),
            },
            None => LineState::Missing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_chips_and_lines_are_reported_not_fatal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lines = DevLines {
            devfs: dir.path().to_owned(),
        };
        assert_eq!(lines.read("GPIO6"), LineState::Missing);
        let lines = DevLines {
            devfs: dir.path().join("nope"),
        };
        assert_eq!(lines.read("GPIO6"), LineState::Missing);
        // A file named like a chip that is not one is an error, not a panic.
        std::fs::write(dir.path().join("gpiochip0"), "").expect("write");
        let lines = DevLines {
            devfs: dir.path().to_owned(),
        };
        assert!(matches!(lines.read("GPIO6"), LineState::Error(_)));
    }

    #[test]
    fn simulated_lines_come_from_the_board_file() {
        let lines: BTreeMap<String, SimulatedLine> =
            serde_saphyr::from_str("GPIO6: high\nGPIO4: low\nGPIO5: {busy: x728-pwr}\n")
                .expect("yaml");
        let lines = SimulatedLines(lines);
        assert_eq!(lines.read("GPIO6"), LineState::Level(true));
        assert_eq!(lines.read("GPIO4"), LineState::Level(false));
        assert_eq!(
            lines.read("GPIO5"),
            LineState::Busy {
                consumer: "x728-pwr".to_owned()
            }
        );
        assert_eq!(lines.read("GPIO7"), LineState::Missing);
    }
}
