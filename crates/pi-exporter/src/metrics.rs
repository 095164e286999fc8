//! The exporter's own metric model and its two text encodings.
//!
//! Collectors fill a [`MetricSet`] with plain families and samples; nothing here does I/O.
//! A scrape is rendered either as OpenMetrics (through `prometheus-client`, what Prometheus asks
//! for) or as the classic Prometheus text format 0.0.4 (what `curl`, `promtool check metrics` and
//! older scrapers get), chosen by the request's `Accept` header.

use std::fmt::{self, Write as _};

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// Content type of the OpenMetrics exposition.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the classic Prometheus text exposition.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Gauge,
    /// A monotonically increasing value; its name must end in `_total`.
    Counter,
}

/// One labelled value of a family.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of the label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A metric family: name, help, type and its samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// Full exposition name; counters include the `_total` suffix.
    pub name: &'static str,
    pub help: &'static str,
    pub kind: MetricKind,
    pub samples: Vec<Sample>,
}

impl Family {
    /// The name without the counter suffix, as OpenMetrics names the family.
    fn openmetrics_name(&self) -> &'static str {
        match self.kind {
            MetricKind::Counter => self.name.strip_suffix("_total").unwrap_or(self.name),
            MetricKind::Gauge => self.name,
        }
    }
}

/// What collectors write into: an ordered list of families.
#[derive(Debug, Default, Clone)]
pub struct MetricSet {
    families: Vec<Family>,
}

/// Handle to push samples into one family of a [`MetricSet`].
#[derive(Debug)]
pub struct FamilyWriter<'a> {
    family: &'a mut Family,
}

impl FamilyWriter<'_> {
    /// Adds a sample. Labels are written in the order given.
    pub fn sample<const N: usize>(&mut self, labels: [(&'static str, &str); N], value: f64) {
        self.family.samples.push(Sample {
            labels: labels.iter().map(|&(k, v)| (k, v.to_owned())).collect(),
            value,
        });
    }

    /// Adds a sample with owned label values (avoids a copy when the caller built them).
    pub fn sample_owned(&mut self, labels: Vec<(&'static str, String)>, value: f64) {
        self.family.samples.push(Sample { labels, value });
    }
}

impl MetricSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens (or re-opens) a gauge family.
    pub fn gauge(&mut self, name: &'static str, help: &'static str) -> FamilyWriter<'_> {
        self.family(name, help, MetricKind::Gauge)
    }

    /// Opens (or re-opens) a counter family; `name` must end in `_total`.
    pub fn counter(&mut self, name: &'static str, help: &'static str) -> FamilyWriter<'_> {
        debug_assert!(
            name.ends_with("_total"),
            "counter {name} must end in _total"
        );
        self.family(name, help, MetricKind::Counter)
    }

    fn family(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: MetricKind,
    ) -> FamilyWriter<'_> {
        let index = match self.families.iter().position(|f| f.name == name) {
            Some(i) => i,
            None => {
                self.families.push(Family {
                    name,
                    help,
                    kind,
                    samples: Vec::new(),
                });
                self.families.len() - 1
            }
        };
        FamilyWriter {
            family: &mut self.families[index],
        }
    }

    /// Moves every family of `other` to the end of this set (merging same-named families).
    pub fn append(&mut self, other: MetricSet) {
        for family in other.families {
            match self.families.iter_mut().find(|f| f.name == family.name) {
                Some(existing) => existing.samples.extend(family.samples),
                None => self.families.push(family),
            }
        }
    }

    pub fn families(&self) -> &[Family] {
        &self.families
    }

    /// The samples of one family, if it was written.
    pub fn get(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|f| f.name == name)
    }

    /// Renders the classic Prometheus text format (0.0.4).
    pub fn encode_text(&self, out: &mut String) {
        for family in self.families.iter().filter(|f| !f.samples.is_empty()) {
            let kind = match family.kind {
                MetricKind::Gauge => "gauge",
                MetricKind::Counter => "counter",
            };
            out.push_str("# HELP ");
            out.push_str(family.name);
            out.push(' ');
            escape_help(family.help, out);
            out.push_str("\n# TYPE ");
            out.push_str(family.name);
            out.push(' ');
            out.push_str(kind);
            out.push('\n');
            for sample in &family.samples {
                out.push_str(family.name);
                if !sample.labels.is_empty() {
                    out.push('{');
                    for (i, (key, value)) in sample.labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str(key);
                        out.push_str("=\"");
                        escape_label_value(value, out);
                        out.push('"');
                    }
                    out.push('}');
                }
                out.push(' ');
                write_value(sample.value, out);
                out.push('\n');
            }
        }
    }

    /// Renders OpenMetrics text through `prometheus-client`, ending in `# EOF`.
    pub fn encode_openmetrics(self, out: &mut String) -> fmt::Result {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(OpenMetricsView(self)));
        prometheus_client::encoding::text::encode(out, &registry)
    }
}

/// Adapter so `prometheus-client` encodes a finished [`MetricSet`].
#[derive(Debug)]
struct OpenMetricsView(MetricSet);

impl prometheus_client::collector::Collector for OpenMetricsView {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        for family in self.0.families.iter().filter(|f| !f.samples.is_empty()) {
            let metric_type = match family.kind {
                MetricKind::Gauge => MetricType::Gauge,
                MetricKind::Counter => MetricType::Counter,
            };
            let mut metric = encoder.encode_descriptor(
                family.openmetrics_name(),
                family.help,
                None,
                metric_type,
            )?;
            for sample in &family.samples {
                let labels: &[(&'static str, String)] = &sample.labels;
                let sample_encoder = metric.encode_family(&labels)?;
                match family.kind {
                    MetricKind::Gauge => ConstGauge::new(sample.value).encode(sample_encoder)?,
                    MetricKind::Counter => {
                        ConstCounter::new(sample.value).encode(sample_encoder)?
                    }
                }
            }
        }
        Ok(())
    }
}

fn escape_help(help: &str, out: &mut String) {
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_label_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn write_value(value: f64, out: &mut String) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        // `{}` prints the shortest representation that round-trips, integral values without ".0".
        let _ = write!(out, "{value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_set() -> MetricSet {
        let mut set = MetricSet::new();
        set.gauge("rpi_filesystem_readonly", "1 when mounted read-only")
            .sample([("device", "/dev/mmcblk0p2"), ("mountpoint", "/")], 1.0);
        set.counter("rpi_disk_written_bytes_total", "Bytes written")
            .sample([("device", "mmcblk0")], 1.5e9);
        set.gauge("rpi_weird", "Help with \\ backslash")
            .sample([("label", "quote \" and \\ and\nnewline")], f64::INFINITY);
        set
    }

    #[test]
    fn text_format_is_exact() {
        let mut out = String::new();
        sample_set().encode_text(&mut out);
        assert_eq!(
            out,
            "# HELP rpi_filesystem_readonly 1 when mounted read-only\n\
             # TYPE rpi_filesystem_readonly gauge\n\
             rpi_filesystem_readonly{device=\"/dev/mmcblk0p2\",mountpoint=\"/\"} 1\n\
             # HELP rpi_disk_written_bytes_total Bytes written\n\
             # TYPE rpi_disk_written_bytes_total counter\n\
             rpi_disk_written_bytes_total{device=\"mmcblk0\"} 1500000000\n\
             # HELP rpi_weird Help with \\\\ backslash\n\
             # TYPE rpi_weird gauge\n\
             rpi_weird{label=\"quote \\\" and \\\\ and\\nnewline\"} +Inf\n"
        );
    }

    #[test]
    fn openmetrics_names_counters_without_suffix_and_ends_in_eof() {
        let mut out = String::new();
        sample_set().encode_openmetrics(&mut out).expect("encode");
        assert!(
            out.contains("# TYPE rpi_disk_written_bytes counter\n"),
            "{out}"
        );
        assert!(
            out.contains("rpi_disk_written_bytes_total{device=\"mmcblk0\"} 1500000000"),
            "{out}"
        );
        assert!(
            out.contains("label=\"quote \\\" and \\\\ and\\nnewline\""),
            "{out}"
        );
        assert!(out.ends_with("# EOF\n"));
    }

    #[test]
    fn empty_families_are_not_rendered_and_reopening_appends() {
        let mut set = MetricSet::new();
        set.gauge("rpi_empty", "nothing");
        set.gauge("rpi_x", "x").sample([], 1.0);
        set.gauge("rpi_x", "x").sample([("a", "b")], 2.0);
        let mut out = String::new();
        set.encode_text(&mut out);
        assert!(!out.contains("rpi_empty"));
        assert_eq!(set.get("rpi_x").map(|f| f.samples.len()), Some(2));
    }
}
