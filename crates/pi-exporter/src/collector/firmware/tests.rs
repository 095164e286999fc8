//! Collector-level tests: the simulated firmware of the shipped board files on the fixture trees,
//! the probe, the cache and the fallbacks.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

pub(crate) fn fixture_root(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The `--path.*` roots of a fixture tree (which has no `dev/`).
pub(crate) fn fixture_paths(name: &str) -> Paths {
    let root = fixture_root(name);
    Paths {
        procfs: root.join("proc"),
        sysfs: root.join("sys"),
        rootfs: root.join("rootfs"),
        devfs: root.join("dev"),
    }
}

/// Writes `files` (path relative to the root, content) into a fresh tree.
pub(crate) fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (rel, content) in files {
        let path = dir.path().join(rel);
        fs::create_dir_all(path.parent().expect("file has a parent")).expect("mkdir");
        fs::write(path, content).expect("write");
    }
    dir
}

fn shipped_board(name: &str) -> simulate::FirmwareBoard {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("boards")
        .join(format!("{name}.yaml"));
    crate::collector::board::load(&path)
        .expect("shipped board file is valid")
        .firmware
        .expect("has a firmware section")
}

fn simulated(board: simulate::FirmwareBoard) -> Arc<SimulatedFirmware> {
    Arc::new(SimulatedFirmware::new(board))
}

fn collector(fixture: &str, firmware: &Arc<SimulatedFirmware>, ttl: Duration) -> FirmwareCollector {
    FirmwareCollector::with_devices(
        fixture_paths(fixture),
        Some(Devices::simulated(Arc::clone(firmware))),
        ttl,
    )
}

/// The value of `name` for the sample carrying every label in `labels`.
fn value(set: &MetricSet, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    set.get(name)?
        .samples
        .iter()
        .find(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
        .map(|s| s.value)
}

fn count(set: &MetricSet, name: &str) -> usize {
    set.get(name).map_or(0, |f| f.samples.len())
}

fn scrape(c: &FirmwareCollector) -> (MetricSet, Result<(), CollectError>) {
    let mut set = MetricSet::new();
    let result = c.collect(&mut set);
    (set, result)
}

#[test]
fn throttled_words_decode_bit_by_bit() {
    let decode = |word| {
        throttled_conditions(word).map(|(c, now, since)| (c, u8::from(now), u8::from(since)))
    };
    let uv = "under_voltage";
    let cap = "arm_frequency_capped";
    let thr = "throttled";
    let soft = "soft_temperature_limit";
    for (word, expected) in [
        (0x0, [(uv, 0, 0), (cap, 0, 0), (thr, 0, 0), (soft, 0, 0)]),
        // Under-voltage and throttling occurred, nothing active now.
        (
            0x50000,
            [(uv, 0, 1), (cap, 0, 0), (thr, 0, 1), (soft, 0, 0)],
        ),
        // ... and both active now: the kernel's "Under-voltage detected! (0x00050005)".
        (
            0x50005,
            [(uv, 1, 1), (cap, 0, 0), (thr, 1, 1), (soft, 0, 0)],
        ),
        // Throttled now without history (a reader cleared the sticky bits).
        (0x4, [(uv, 0, 0), (cap, 0, 0), (thr, 1, 0), (soft, 0, 0)]),
        // Soft temperature limit now and since boot.
        (
            0x80008,
            [(uv, 0, 0), (cap, 0, 0), (thr, 0, 0), (soft, 1, 1)],
        ),
        (
            0x20002,
            [(uv, 0, 0), (cap, 1, 1), (thr, 0, 0), (soft, 0, 0)],
        ),
        (
            0xf000f,
            [(uv, 1, 1), (cap, 1, 1), (thr, 1, 1), (soft, 1, 1)],
        ),
        // Bits the reference does not name are ignored.
        (
            0xfff0_fff0,
            [(uv, 0, 0), (cap, 0, 0), (thr, 0, 0), (soft, 0, 0)],
        ),
    ] {
        assert_eq!(decode(word), expected, "{word:#x}");
    }
}

#[test]
fn pi4_throttled_board_exports_every_series_in_one_ioctl_per_scrape() {
    let firmware = simulated(shipped_board("pi4-throttled"));
    let c = collector("pi4-sd", &firmware, Duration::ZERO);
    let probes = firmware.ioctls();
    // 6 single readings, 16 clock rates, 12 measured clocks of the clocks present, 4 voltages,
    // and GENCMD pmic_read_adc, which a Pi 4 does not have.
    assert_eq!(probes, 6 + 16 + 12 + 4 + 1);

    let (set, result) = scrape(&c);
    result.expect("every reading answered");
    assert_eq!(
        firmware.ioctls(),
        probes + 1,
        "one batched ioctl per scrape"
    );

    assert_eq!(
        value(&set, "rpi_firmware_source", &[("source", "mailbox")]),
        Some(1.0)
    );
    assert_eq!(value(&set, "rpi_soc_temperature_celsius", &[]), Some(71.54));
    assert_eq!(
        value(&set, "rpi_soc_temperature_limit_celsius", &[]),
        Some(85.0)
    );
    for (condition, now, since_boot) in [
        ("under_voltage", 1.0, 1.0),
        ("arm_frequency_capped", 0.0, 0.0),
        ("throttled", 1.0, 1.0),
        ("soft_temperature_limit", 0.0, 0.0),
    ] {
        let labels = [("condition", condition)];
        assert_eq!(
            value(&set, "rpi_throttled", &labels),
            Some(now),
            "{condition}"
        );
        assert_eq!(
            value(&set, "rpi_throttled_since_boot", &labels),
            Some(since_boot)
        );
    }
    assert_eq!(
        value(&set, "rpi_clock_hertz", &[("clock", "arm")]),
        Some(1.8e9)
    );
    assert_eq!(
        value(&set, "rpi_clock_measured_hertz", &[("clock", "arm")]),
        Some(600_117_184.0)
    );
    assert_eq!(count(&set, "rpi_clock_hertz"), 12);
    assert_eq!(count(&set, "rpi_clock_measured_hertz"), 12);
    assert_eq!(
        value(&set, "rpi_voltage_volts", &[("rail", "core")]),
        Some(0.825)
    );
    assert_eq!(
        value(&set, "rpi_voltage_volts", &[("rail", "sdram_p")]),
        Some(1.1)
    );
    assert_eq!(
        value(
            &set,
            "rpi_board_info",
            &[
                ("model", "Raspberry Pi 4 Model B"),
                ("revision", "c03114"),
                ("memory", "4GB"),
                ("manufacturer", "Sony UK"),
                ("processor", "BCM2711"),
                ("serial", "10000000e5f6a7b8"),
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&set, "rpi_firmware_build_timestamp_seconds", &[]),
        Some(1_712_916_186.0)
    );
    for absent in [
        "rpi_pmic_rail_volts",
        "rpi_power_watts",
        "rpi_input_voltage_volts",
        "rpi_fan_speed_rpm",
        "rpi_under_voltage_alarm",
    ] {
        assert!(set.get(absent).is_none(), "{absent}");
    }
    // Clear mask 0: the board's sticky bits survive every read.
    scrape(&c).1.expect("ok");
    assert_eq!(firmware.throttled(), Some(0x50005));
}

#[test]
fn concurrent_scrapes_share_one_reading() {
    let firmware = simulated(shipped_board("pi4-healthy"));
    let c = collector("pi4-sd", &firmware, Duration::from_secs(60));
    let after_probe = firmware.ioctls();
    let (first, _) = scrape(&c);
    let (second, _) = scrape(&c);
    assert_eq!(firmware.ioctls(), after_probe + 1);
    assert_eq!(first.families(), second.families());
}

#[test]
fn a_snapshot_that_may_block_called_fresh_is_still_fresh_at_the_run() {
    let firmware = simulated(shipped_board("pi4-healthy"));
    let c = collector("pi4-sd", &firmware, Duration::from_millis(400));
    // A test thread descheduled for longer than the margin breaks the premise, not the code:
    // such an attempt is run again.
    for _ in 0..5 {
        scrape(&c).1.expect("ok");
        let after_read = firmware.ioctls();
        // The last moment the scraper would send a run to the serving thread.
        let mut last_inline = None;
        while !c.may_block() {
            last_inline = Some(Instant::now());
            std::thread::sleep(Duration::from_millis(5));
        }
        let Some(last_inline) = last_inline else {
            // That scrape found an old snapshot (a retry): let it expire, then start again.
            std::thread::sleep(Duration::from_millis(400));
            continue;
        };
        // That run starts a little later (a descheduled serving thread): it must not read.
        std::thread::sleep(
            (last_inline + Duration::from_millis(50)).saturating_duration_since(Instant::now()),
        );
        scrape(&c).1.expect("ok");
        if last_inline.elapsed() >= INLINE_MARGIN {
            continue;
        }
        assert_eq!(
            firmware.ioctls(),
            after_read,
            "read the mailbox on the serving thread"
        );
        return;
    }
    panic!("the test thread was descheduled for longer than {INLINE_MARGIN:?} five times");
}

#[test]
fn pi5_board_gets_what_its_firmware_answers_and_the_rest_elsewhere() {
    let firmware = simulated(shipped_board("pi5"));
    let c = collector("pi5-nvme", &firmware, Duration::ZERO);
    let probes = firmware.ioctls();
    let (set, result) = scrape(&c);
    result.expect("rejected tags are not sent again");
    // The batch and pmic_read_adc.
    assert_eq!(firmware.ioctls(), probes + 2);

    assert_eq!(
        value(&set, "rpi_firmware_source", &[("source", "mailbox")]),
        Some(1.0)
    );
    // GET_BOARD_REVISION fails on this firmware: the identity comes from /proc/cpuinfo, the
    // serial from the mailbox, printed alike.
    assert_eq!(
        value(
            &set,
            "rpi_board_info",
            &[
                ("model", "Raspberry Pi 5 Model B"),
                ("revision", "d04170"),
                ("memory", "8GB"),
                ("processor", "BCM2712"),
                ("serial", "9c1b2e5a7d3f4e60"),
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&set, "rpi_throttled", &[("condition", "under_voltage")]),
        Some(0.0)
    );
    assert_eq!(
        value(
            &set,
            "rpi_throttled_since_boot",
            &[("condition", "under_voltage")]
        ),
        Some(1.0)
    );
    assert_eq!(count(&set, "rpi_clock_hertz"), 7);
    assert_eq!(value(&set, "rpi_clock_hertz", &[("clock", "h264")]), None);
    assert_eq!(count(&set, "rpi_voltage_volts"), 1);
    assert_eq!(count(&set, "rpi_pmic_rail_volts"), 14);
    assert_eq!(count(&set, "rpi_pmic_rail_amperes"), 12);
    assert_eq!(
        value(&set, "rpi_pmic_rail_amperes", &[("rail", "vdd_core")]),
        Some(0.9287199)
    );
    assert_eq!(value(&set, "rpi_input_voltage_volts", &[]), Some(5.171059));
    let watts = value(&set, "rpi_power_watts", &[]).expect("power");
    assert!((1.0..2.0).contains(&watts), "{watts}");
    assert_eq!(value(&set, "rpi_fan_speed_rpm", &[]), Some(2963.0));
    assert_eq!(value(&set, "rpi_fan_pwm_ratio", &[]), Some(75.0 / 255.0));
}

#[test]
fn rejected_and_unknown_tags_are_probed_once_and_never_sent_again() {
    let board: simulate::FirmwareBoard = serde_saphyr::from_str(
        "
temperature_millicelsius: 50000
throttled: 0
clocks: { arm: { rate: 1500000000, measured: 1500000000 } }
voltages_microvolts: { core: 850000 }
errors: [voltage, max_temperature]
unsupported: [clock_measured]
",
    )
    .expect("valid");
    let firmware = simulated(board);
    let c = collector("pi4-sd", &firmware, Duration::ZERO);
    // Each rejected or unknown tag once, not once per clock or voltage id: firmware revision,
    // board revision, serial, temperature, max temperature, throttled, 16 clock rates, the
    // measured ARM clock, the core voltage, pmic_read_adc.
    assert_eq!(firmware.ioctls(), 6 + 16 + 1 + 1 + 1);
    let probed = c.mailbox.as_ref().expect("mailbox usable");
    assert_eq!(
        probed.batch.properties(),
        [
            Property::Temperature,
            Property::Throttled,
            Property::ClockRate(Clock::Arm)
        ]
    );
    for _ in 0..3 {
        let (set, result) = scrape(&c);
        result.expect("no EINVAL at scrape time");
        assert_eq!(value(&set, "rpi_soc_temperature_celsius", &[]), Some(50.0));
        assert!(set.get("rpi_voltage_volts").is_none());
        // Identity from /proc/cpuinfo, as the mailbox does not answer it.
        assert_eq!(
            value(&set, "rpi_board_info", &[("serial", "10000000b3a1c2d4")]),
            Some(1.0)
        );
    }
}

#[test]
fn gencmd_get_throttled_stands_in_for_an_unanswered_tag() {
    let board: simulate::FirmwareBoard = serde_saphyr::from_str(
        "
throttled: 0x50000
unsupported: [throttled]
gencmd: { get_throttled: throttled=0x50000 }
",
    )
    .expect("valid");
    let firmware = simulated(board);
    let c = collector("pi5-nvme", &firmware, Duration::ZERO);
    let probes = firmware.ioctls();
    let (set, result) = scrape(&c);
    result.expect("ok");
    assert_eq!(
        firmware.ioctls(),
        probes + 1,
        "GENCMD only: no property tag is left"
    );
    assert_eq!(
        value(
            &set,
            "rpi_throttled_since_boot",
            &[("condition", "throttled")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&set, "rpi_firmware_source", &[("source", "mailbox")]),
        Some(1.0)
    );
    // Temperature is not answered: the thermal zone stands in.
    assert_eq!(value(&set, "rpi_soc_temperature_celsius", &[]), Some(61.2));
}

/// A mailbox that starts failing after `ok_calls` calls, as when the firmware starts rejecting a
/// tag it answered at start-up.
struct FailsAfter {
    inner: Arc<SimulatedFirmware>,
    ok_calls: usize,
    calls: AtomicUsize,
}

impl Mailbox for FailsAfter {
    fn property(&self, buf: &mut [u32]) -> io::Result<()> {
        if self.calls.fetch_add(1, Ordering::Relaxed) >= self.ok_calls {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        self.inner.property(buf)
    }
}

#[test]
fn a_failing_batch_falls_back_to_sysfs_for_that_scrape() {
    let firmware = simulated(shipped_board("pi4-healthy"));
    let failing = Arc::new(FailsAfter {
        inner: Arc::clone(&firmware),
        ok_calls: 39,
        calls: AtomicUsize::new(0),
    });
    let devices = Devices {
        property: failing.clone(),
        gencmd: failing,
        name: "/dev/vcio".into(),
    };
    let c = FirmwareCollector::with_devices(fixture_paths("pi4-sd"), Some(devices), Duration::ZERO);
    assert!(c.mailbox.is_some());
    let (set, result) = scrape(&c);
    let err = result.expect_err("the mailbox failed");
    assert!(err.to_string().contains("/dev/vcio"), "{err}");
    assert_eq!(
        value(&set, "rpi_firmware_source", &[("source", "sysfs")]),
        Some(1.0)
    );
    assert_eq!(
        value(&set, "rpi_soc_temperature_celsius", &[]),
        Some(52.582)
    );
    assert!(set.get("rpi_clock_hertz").is_none());
}

#[test]
fn without_a_mailbox_sysfs_serves_what_it_knows_on_the_pi4_fixture() {
    let c = FirmwareCollector::new(&BuildContext {
        paths: fixture_paths("pi4-sd"),
        options: crate::collector::CollectorOptions::default(),
        board: None,
    });
    assert!(c.mailbox.is_none(), "the fixture has no dev/vcio");
    let (set, result) = scrape(&c);
    result.expect("fixture is well formed");
    assert_eq!(
        value(&set, "rpi_firmware_source", &[("source", "sysfs")]),
        Some(1.0)
    );
    assert_eq!(
        value(&set, "rpi_soc_temperature_celsius", &[]),
        Some(52.582)
    );
    // The attribute's 50000: live bits only; the kernel clears the sticky bits at every read.
    assert_eq!(count(&set, "rpi_throttled"), 4);
    assert!(set.get("rpi_throttled_since_boot").is_none());
    assert_eq!(value(&set, "rpi_under_voltage_alarm", &[]), Some(0.0));
    assert_eq!(
        value(
            &set,
            "rpi_board_info",
            &[
                ("model", "Raspberry Pi 4 Model B"),
                ("serial", "10000000b3a1c2d4")
            ]
        ),
        Some(1.0)
    );
    assert!(set.get("rpi_firmware_build_timestamp_seconds").is_none());
}

#[test]
fn a_board_file_without_firmware_means_no_mailbox() {
    let c = FirmwareCollector::new(&BuildContext {
        paths: fixture_paths("pi5-nvme"),
        options: crate::collector::CollectorOptions::default(),
        board: Some(Arc::new(crate::collector::board::BoardFile::default())),
    });
    assert!(c.mailbox.is_none());
    let (set, result) = scrape(&c);
    result.expect("sysfs works");
    assert_eq!(
        value(&set, "rpi_firmware_source", &[("source", "sysfs")]),
        Some(1.0)
    );
    assert_eq!(value(&set, "rpi_fan_speed_rpm", &[]), Some(2963.0));
    assert!(
        set.get("rpi_throttled").is_none(),
        "no get_throttled on a Pi 5"
    );
}

#[test]
fn nothing_to_read_is_an_error_not_a_panic() {
    let dir = tree(&[("proc/cpuinfo", "Revision\t: zz\n")]);
    let paths = Paths {
        procfs: dir.path().join("proc"),
        sysfs: dir.path().join("sys"),
        rootfs: dir.path().join("rootfs"),
        devfs: dir.path().join("dev"),
    };
    let c = FirmwareCollector::with_devices(paths, None, CACHE_TTL);
    let (set, result) = scrape(&c);
    assert!(
        result
            .expect_err("no source")
            .to_string()
            .contains("no firmware source")
    );
    assert!(set.families().is_empty());
}

#[test]
fn a_mailbox_that_answers_nothing_is_not_used() {
    let firmware = simulated(simulate::FirmwareBoard::default());
    let c = collector("pi4-sd", &firmware, Duration::ZERO);
    assert!(c.mailbox.is_none());
    let after_probe = firmware.ioctls();
    let (set, _) = scrape(&c);
    assert_eq!(firmware.ioctls(), after_probe);
    assert_eq!(
        value(&set, "rpi_firmware_source", &[("source", "sysfs")]),
        Some(1.0)
    );
}

#[test]
fn open_failures_say_what_to_do() {
    let path = Path::new("/dev/vcio");
    let denied = open_failure(path, &io::Error::from(io::ErrorKind::PermissionDenied));
    assert!(denied.contains("/dev/vcio"), "{denied}");
    assert!(denied.contains("`video`"), "{denied}");
    let missing = open_failure(path, &io::Error::from(io::ErrorKind::NotFound));
    assert!(missing.starts_with("no /dev/vcio"), "{missing}");
}
