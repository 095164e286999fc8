//! Every collector the exporter knows, in the order their metrics appear in a scrape: the
//! hardware collectors of [`crate::collector`] and the doctor's ([`crate::doctor::collector`]),
//! each with its default state, its own flags (declared beside its code) and its constructor.
//! `cli` turns the list into flags and options; the crate root builds the enabled ones. It sits
//! above both `collector` and `doctor`, which is why the list is not in `collector`.

use std::fmt;
use std::sync::Arc;

use crate::collector::{
    BuildContext, Collector, CollectorOptions, FlagError, filesystem, firmware, history, rtc,
    storage, system, time, ups,
};
use crate::doctor::{self, collector::DoctorCollector};

/// Every collector's settings: the hardware collectors' and the doctor's.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub collectors: CollectorOptions,
    pub doctor: doctor::collector::Options,
}

/// What a collector's constructor gets: the hardware collectors' context (which the doctor
/// also runs its checks with) and the doctor's own options.
#[derive(Debug, Clone)]
pub struct Context {
    pub collectors: BuildContext,
    pub doctor: doctor::collector::Options,
}

/// A collector the exporter knows, with its default state and constructor.
pub struct CollectorSpec {
    pub name: &'static str,
    pub help: &'static str,
    pub enabled_by_default: bool,
    /// Probes the system once at start-up (and logs what it found) and builds the collector.
    pub build: fn(&Context) -> Arc<dyn Collector>,
    /// Its own flags, declared beside its code (`cli` adds them after the on/off switches).
    pub args: fn() -> Vec<clap::Arg>,
    /// Reads those flags into its part of the options; the error names the flag.
    pub options: fn(&clap::ArgMatches, &mut Options) -> Result<(), FlagError>,
    /// Flags that, when given, ask for this collector even if it is off by default.
    pub enabled_by: &'static [&'static str],
}

impl fmt::Debug for CollectorSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CollectorSpec")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Every collector, in the order their metrics appear in a scrape.
pub const ALL: &[CollectorSpec] = &[
    CollectorSpec {
        name: "filesystem",
        help: "Filesystem size, free space, inodes and read-only state per mount",
        enabled_by_default: true,
        build: |ctx| Arc::new(filesystem::FilesystemCollector::new(&ctx.collectors)),
        args: filesystem::args,
        options: |m, o| {
            o.collectors.filesystem = filesystem::options(m)?;
            Ok(())
        },
        enabled_by: &[],
    },
    CollectorSpec {
        name: "storage",
        help: "ext4 error counters, SD/eMMC wear and per-device I/O",
        enabled_by_default: true,
        build: |ctx| Arc::new(storage::StorageCollector::new(&ctx.collectors)),
        args: storage::args,
        options: |m, o| {
            o.collectors.storage = storage::options(m)?;
            Ok(())
        },
        enabled_by: &[],
    },
    CollectorSpec {
        name: "firmware",
        help: "SoC temperature, throttling, clocks, voltages, board identity, Pi 5 PMIC rails and fan, from the firmware mailbox (sysfs as fallback)",
        enabled_by_default: true,
        build: |ctx| Arc::new(firmware::FirmwareCollector::new(&ctx.collectors)),
        args: Vec::new,
        options: |_, _| Ok(()),
        enabled_by: &[],
    },
    CollectorSpec {
        name: "system",
        help: "Boot time, uptime, memory, swap and load",
        enabled_by_default: true,
        build: |ctx| Arc::new(system::SystemCollector::new(&ctx.collectors)),
        args: Vec::new,
        options: |_, _| Ok(()),
        enabled_by: &[],
    },
    CollectorSpec {
        name: "history",
        help: "Why the Pi last restarted (device tree), clean and unclean shutdowns and boots (--collector.history.state-file), under-voltage events, USB over-current",
        enabled_by_default: true,
        build: |ctx| Arc::new(history::HistoryCollector::new(&ctx.collectors)),
        args: history::args,
        options: |m, o| {
            o.collectors.history = history::options(m)?;
            Ok(())
        },
        enabled_by: &[],
    },
    CollectorSpec {
        name: "rtc",
        help: "Real-time clocks (kernel-owned, Pi 5, or a DS3231 read over I2C): time validity, oscillator stop, offset to the system clock, temperature, battery",
        enabled_by_default: true,
        build: |ctx| Arc::new(rtc::RtcCollector::new(&ctx.collectors)),
        args: rtc::args,
        options: |m, o| {
            o.collectors.rtc = rtc::options(m)?;
            Ok(())
        },
        enabled_by: &[],
    },
    CollectorSpec {
        name: "time",
        help: "System clock synchronisation from the kernel (adjtimex, read-only): synchronised, error bounds, offset, frequency, status flags",
        enabled_by_default: true,
        build: |ctx| Arc::new(time::TimeCollector::new(&ctx.collectors)),
        args: Vec::new,
        options: |_, _| Ok(()),
        enabled_by: &[],
    },
    CollectorSpec {
        name: "ups",
        help: "UPS HAT (I2C gauge read-only, power-loss GPIO) or NUT UPS: on battery, voltage, current, charge, runtime; opt-in shutdown guard (--ups.*)",
        enabled_by_default: false,
        build: |ctx| Arc::new(ups::UpsCollector::new(&ctx.collectors)),
        args: ups::args,
        options: |m, o| {
            o.collectors.ups = ups::options(m)?;
            Ok(())
        },
        enabled_by: &["ups.board", "ups.config"],
    },
    CollectorSpec {
        name: "doctor",
        help: "The field checklist of `pi-exporter doctor` (storage, power, time, recovery, access), run in the background every --collector.doctor.interval",
        enabled_by_default: true,
        build: |ctx| Arc::new(DoctorCollector::new(&ctx.collectors, &ctx.doctor)),
        args: doctor::collector::args,
        options: |m, o| {
            o.doctor = doctor::collector::options(m)?;
            Ok(())
        },
        enabled_by: &[],
    },
];

/// Builds the collectors that are enabled, in the order of [`ALL`].
pub fn build_enabled(ctx: &Context, enabled: &[&str]) -> Vec<(&'static str, Arc<dyn Collector>)> {
    ALL.iter()
        .filter(|spec| enabled.contains(&spec.name))
        .map(|spec| (spec.name, (spec.build)(ctx)))
        .collect()
}
