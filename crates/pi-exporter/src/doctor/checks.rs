//! The checks: pure functions from [`Facts`] to a verdict. `docs/doctor.md` says why each
//! matters; keep the two in step.

use super::config::{Settings, Unit};
use super::facts::{Facts, Space, UpsState};
use super::roots::{self, Root, RootProblem};
use super::{Category, Finding, Verdict};
use crate::collector::filesystem::{LOW_SPACE_RATIO, Mount};
use crate::listen::ListenAddress;

/// The firmware throttles at 85 °C on every Pi 4 and 5; used when it does not report a limit.
pub(crate) const DEFAULT_TEMPERATURE_LIMIT_CELSIUS: f64 = 85.0;
/// Headroom to the limit below which the temperature warns, and below which it fails.
pub(crate) const TEMPERATURE_WARN_HEADROOM: f64 = 15.0;
pub(crate) const TEMPERATURE_FAIL_HEADROOM: f64 = 5.0;
/// eMMC life time used from which the wear check warns, and fails.
pub(crate) const WEAR_WARN_RATIO: f64 = 0.7;
pub(crate) const WEAR_FAIL_RATIO: f64 = 0.9;

/// What a check function returns; the table adds the name and category.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Outcome {
    verdict: Verdict,
    reason: String,
    found: String,
}

fn pass(found: impl Into<String>) -> Outcome {
    Outcome {
        verdict: Verdict::Pass,
        reason: String::new(),
        found: found.into(),
    }
}

fn not(verdict: Verdict, reason: impl Into<String>, found: impl Into<String>) -> Outcome {
    Outcome {
        verdict,
        reason: reason.into(),
        found: found.into(),
    }
}

fn skip(reason: impl Into<String>) -> Outcome {
    not(Verdict::Skip, reason, "-")
}

/// One entry of the checklist.
pub(crate) struct Check {
    pub(crate) name: &'static str,
    pub(crate) category: Category,
    /// The fix in one line, shown on WARN and FAIL.
    pub(crate) fix: &'static str,
    /// The trees its facts come from: where one of them is missing or wrong, the check SKIPs.
    /// `clock_sync` reads none: the kernel's clock state comes from a system call.
    pub(crate) reads: &'static [Root],
    run: fn(&Facts) -> Outcome,
}

/// The checklist, in display order.
pub(crate) const CHECKS: &[Check] = &[
    Check {
        name: "boot_media",
        reads: &[Root::Procfs, Root::Sysfs],
        category: Category::Storage,
        fix: "boot from a USB SSD or NVMe (rpi-eeprom-config: BOOT_ORDER=0xf416) or use an industrial (pSLC) SD card",
        run: boot_media,
    },
    Check {
        name: "flash_wear",
        reads: &[Root::Sysfs],
        category: Category::Storage,
        fix: "replace the eMMC module/Pi before it reaches end of life; move write-heavy data off it",
        run: flash_wear,
    },
    Check {
        name: "rated_endurance",
        reads: &[Root::Procfs, Root::Sysfs],
        category: Category::Storage,
        fix: "declare the card's rated endurance: PI_EXPORTER_ARGS=\"... --collector.storage.rated-endurance=mmcblk0=117TB\" (the vendor's figure; docs/metrics.md lists some)",
        run: rated_endurance,
    },
    Check {
        name: "root_readonly",
        reads: &[Root::Procfs],
        category: Category::Storage,
        fix: "raspi-config nonint enable_overlayfs (or mount / ro in /etc/fstab) and keep state on a journaled data partition",
        run: root_readonly,
    },
    Check {
        name: "write_safety",
        reads: &[Root::Procfs],
        category: Category::Storage,
        fix: "writable data on ext4 with a journal (tune2fs -O has_journal DEV) and the default data=ordered, not data=writeback or vfat",
        run: write_safety,
    },
    Check {
        name: "noatime",
        reads: &[Root::Procfs],
        category: Category::Storage,
        fix: "add noatime to the options of every writable filesystem in /etc/fstab",
        run: noatime,
    },
    Check {
        name: "swap_on_flash",
        reads: &[Root::Procfs, Root::Sysfs],
        category: Category::Storage,
        fix: "apt purge dphys-swapfile; use zram (apt install systemd-zram-generator)",
        run: swap_on_flash,
    },
    Check {
        name: "free_space",
        reads: &[Root::Procfs, Root::Rootfs],
        category: Category::Storage,
        fix: "free space (journalctl --vacuum-size=50M, apt clean) or grow the filesystem",
        run: free_space,
    },
    Check {
        name: "log_volume",
        reads: &[Root::Procfs, Root::Rootfs],
        category: Category::Storage,
        fix: "/etc/systemd/journald.conf.d/50-size.conf: [Journal] SystemMaxUse=50M (or Storage=volatile, or /var/log on tmpfs)",
        run: log_volume,
    },
    Check {
        name: "logrotate",
        reads: &[Root::Rootfs],
        category: Category::Storage,
        fix: "apt install logrotate && systemctl enable --now logrotate.timer",
        run: logrotate,
    },
    Check {
        name: "throttling",
        reads: &[Root::Sysfs],
        category: Category::Power,
        fix: "use the official 5 V supply (5.1 V 3 A Pi 4, 5 A Pi 5) and a short thick cable; add a heatsink/fan",
        run: throttling,
    },
    Check {
        name: "temperature",
        reads: &[Root::Sysfs],
        category: Category::Power,
        fix: "add a heatsink and fan (Pi 5: the Active Cooler), ventilate the enclosure, keep it out of the sun",
        run: temperature,
    },
    Check {
        name: "last_shutdown",
        reads: &[Root::Rootfs, Root::Sysfs],
        category: Category::Power,
        fix: "find why power was lost (rpi_boot_reset_info, rpi_under_voltage_events_total): check the supply and cable, fit a UPS HAT, shut down with poweroff before unplugging",
        run: last_shutdown,
    },
    Check {
        name: "ups",
        reads: &[Root::Rootfs],
        category: Category::Power,
        fix: "fit a UPS HAT and name it: PI_EXPORTER_ARGS=\"... --ups.board=<board>\" in /etc/default/pi-exporter",
        run: ups,
    },
    Check {
        name: "rtc",
        reads: &[Root::Sysfs],
        category: Category::Time,
        fix: "fit a DS3231 with a coin cell: dtoverlay=i2c-rtc,ds3231 in /boot/firmware/config.txt (Pi 5: a battery on the RTC connector)",
        run: rtc,
    },
    Check {
        name: "hctosys",
        reads: &[Root::Sysfs],
        category: Category::Time,
        fix: "let the kernel driver own the RTC (dtoverlay=i2c-rtc,ds3231) and apt purge fake-hwclock; set the RTC once with hwclock -w",
        run: hctosys,
    },
    Check {
        name: "clock_sync",
        reads: &[],
        category: Category::Time,
        fix: "check the NTP client: chronyc tracking (or timedatectl timesync-status); allow UDP 123 out",
        run: clock_sync,
    },
    Check {
        name: "time_step",
        reads: &[Root::Rootfs],
        category: Category::Time,
        fix: "echo 'makestep 1 3' > /etc/chrony/conf.d/makestep.conf (or systemctl enable systemd-timesyncd)",
        run: time_step,
    },
    Check {
        name: "hardware_watchdog",
        reads: &[Root::Rootfs, Root::Sysfs],
        category: Category::Recovery,
        fix: "dtparam=watchdog=on in /boot/firmware/config.txt; RuntimeWatchdogSec=15s in /etc/systemd/system.conf.d/watchdog.conf",
        run: hardware_watchdog,
    },
    Check {
        name: "unit_pi_exporter",
        reads: &[Root::Rootfs],
        category: Category::Recovery,
        fix: "systemctl edit pi-exporter: [Unit] StartLimitIntervalSec=600 StartLimitBurst=5 [Service] Restart=always WatchdogSec=30s",
        run: unit_pi_exporter,
    },
    Check {
        name: "unit_alert_relay",
        reads: &[Root::Rootfs],
        category: Category::Recovery,
        fix: "systemctl edit alert-relay: [Unit] StartLimitIntervalSec=600 StartLimitBurst=5 [Service] Restart=always WatchdogSec=30s",
        run: unit_alert_relay,
    },
    Check {
        name: "remote_access",
        reads: &[Root::Rootfs, Root::Sysfs],
        category: Category::Access,
        fix: "set up WireGuard (wg-quick@wg0) or Tailscale and test logging in through it before deploying",
        run: remote_access,
    },
    Check {
        name: "ssh_password",
        reads: &[Root::Rootfs],
        category: Category::Access,
        fix: "echo 'PasswordAuthentication no' > /etc/ssh/sshd_config.d/10-no-passwords.conf (keys only), systemctl reload ssh",
        run: ssh_password,
    },
    Check {
        name: "firewall",
        reads: &[Root::Rootfs],
        category: Category::Access,
        fix: "apt install nftables; an input chain with policy drop in /etc/nftables.conf; systemctl enable --now nftables",
        run: firewall,
    },
    Check {
        name: "exporter_exposure",
        reads: &[Root::Rootfs],
        category: Category::Access,
        fix: "--web.listen-address=127.0.0.1:9831 or a VPN address, or TLS and basic_auth_users in --web.config.file",
        run: exporter_exposure,
    },
];

/// Runs the checklist; a check that reads a tree with one of `problems` SKIPs instead.
pub(crate) fn all(facts: &Facts, problems: &[RootProblem]) -> Vec<Finding> {
    CHECKS
        .iter()
        .map(|check| {
            let outcome = match roots::skip_reason(check.reads, problems) {
                Some(reason) => skip(reason),
                None => (check.run)(facts),
            };
            Finding {
                check: check.name,
                category: check.category,
                fix: if matches!(outcome.verdict, Verdict::Warn | Verdict::Fail) {
                    check.fix.to_owned()
                } else {
                    String::new()
                },
                verdict: outcome.verdict,
                reason: outcome.reason,
                found: outcome.found,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Storage

/// The whole disk of a block device: `/dev/mmcblk0p2` → `mmcblk0`, `/dev/sda2` → `sda`.
fn disk_of(device: &str) -> Option<&str> {
    let name = device.strip_prefix("/dev/")?;
    if name.starts_with("mmcblk") || name.starts_with("nvme") {
        return Some(match name.rfind('p') {
            Some(i)
                if i + 1 < name.len()
                    && name[i + 1..].bytes().all(|b| b.is_ascii_digit())
                    && name[..i].bytes().last().is_some_and(|b| b.is_ascii_digit()) =>
            {
                &name[..i]
            }
            _ => name,
        });
    }
    if name.starts_with("sd") || name.starts_with("vd") {
        return Some(name.trim_end_matches(|c: char| c.is_ascii_digit()));
    }
    Some(name)
}

/// Whether the kernel name of a device is known from its path: `/dev/root` (the kernel's alias
/// for `root=`, Raspberry Pi OS Bullseye and earlier) and `/dev/mapper/*` names are not the
/// names under `proc/fs/jbd2` or `sys/block`.
fn named_by_kernel(device: &str) -> bool {
    !(device == "/dev/root" || device.starts_with("/dev/mapper/"))
}

/// The device holding the root filesystem; with Raspberry Pi OS' overlay root, the read-only
/// lower layer's.
fn root_device(mounts: &[Mount]) -> Option<&Mount> {
    let root = mounts.iter().rev().find(|m| m.mountpoint == "/")?;
    if root.fstype == "overlay" {
        return mounts
            .iter()
            .rev()
            .find(|m| m.mountpoint == "/media/root-ro")
            .or(Some(root));
    }
    Some(root)
}

fn has_option(mount: &Mount, option: &str) -> bool {
    mount.options.split(',').any(|o| o == option)
}

/// Writable filesystems on block devices: where power loss and wear matter.
fn writable_block(mounts: &[Mount]) -> impl Iterator<Item = &Mount> {
    mounts
        .iter()
        .filter(|m| !m.readonly && m.device.starts_with("/dev/"))
}

/// What kind of medium a disk is: `SD card`, `eMMC`, ..., from the storage collector's cards.
fn medium(facts: &Facts, disk: &str) -> (&'static str, Verdict) {
    if disk.starts_with("mmcblk") {
        return match facts
            .cards
            .iter()
            .find(|c| c.device == disk)
            .map(|c| c.kind.as_str())
        {
            Some("MMC") => ("eMMC", Verdict::Pass),
            Some(_) => ("SD card", Verdict::Warn),
            None => ("SD card or eMMC", Verdict::Warn),
        };
    }
    if disk.starts_with("nvme") {
        return ("NVMe SSD", Verdict::Pass);
    }
    if disk.starts_with("sd") {
        return ("USB/SATA drive", Verdict::Pass);
    }
    ("unknown medium", Verdict::Skip)
}

fn boot_media(facts: &Facts) -> Outcome {
    let mounts = match &facts.mounts {
        Ok(m) => m,
        Err(e) => return skip(e.clone()),
    };
    let Some(root) = root_device(mounts) else {
        return skip("no root filesystem in the mount table");
    };
    let Some(disk) = disk_of(&root.device) else {
        return skip(format!("root is on {}, not a block device", root.device));
    };
    let (kind, verdict) = medium(facts, disk);
    let found = format!("/ on {} ({kind})", root.device);
    match verdict {
        Verdict::Pass => pass(found),
        Verdict::Skip => skip(format!("cannot tell what {} is", root.device)),
        _ => not(
            verdict,
            "consumer SD cards wear out and corrupt on power loss",
            found,
        ),
    }
}

fn flash_wear(facts: &Facts) -> Outcome {
    let emmc: Vec<_> = facts
        .cards
        .iter()
        .filter(|c| c.life_used.is_some() || c.pre_eol.is_some())
        .collect();
    if emmc.is_empty() {
        return skip(if facts.cards.is_empty() {
            "no SD card or eMMC"
        } else {
            "SD cards report no wear; only eMMC does"
        });
    }
    let mut worst = Verdict::Pass;
    let mut found = Vec::new();
    for card in emmc {
        let life = card.life_used.unwrap_or(0.0);
        let eol = card.pre_eol.unwrap_or(1.0);
        let verdict = if life >= WEAR_FAIL_RATIO || eol >= 3.0 {
            Verdict::Fail
        } else if life >= WEAR_WARN_RATIO || eol >= 2.0 {
            Verdict::Warn
        } else {
            Verdict::Pass
        };
        worst = worst.max(verdict);
        found.push(format!(
            "{}: life used ≤{:.0} %, pre-EOL {}",
            card.device,
            life * 100.0,
            match eol as u8 {
                1 => "normal",
                2 => "warning",
                _ => "urgent",
            }
        ));
    }
    let found = found.join("; ");
    match worst {
        Verdict::Pass => pass(found),
        v => not(v, "the eMMC is near the end of its rated life", found),
    }
}

/// SD cards report no wear, so their life is projected from bytes written against a rating
/// only the operator can declare.
fn rated_endurance(facts: &Facts) -> Outcome {
    let sd: Vec<&str> = (facts.cards.iter())
        .filter(|c| c.kind.starts_with("SD"))
        .map(|c| c.device.as_str())
        .collect();
    if sd.is_empty() {
        return pass("no SD card (eMMC and SSDs report their own wear)");
    }
    let missing: Vec<&str> = (sd.iter().copied())
        .filter(|d| !facts.rated_endurance.iter().any(|r| r == d))
        .collect();
    if missing.is_empty() {
        return pass(format!("rated endurance declared for {}", sd.join(", ")));
    }
    not(
        Verdict::Warn,
        "no rated endurance for an SD card: its remaining life cannot be projected",
        format!(
            "SD card {} without --collector.storage.rated-endurance",
            missing.join(", ")
        ),
    )
}

fn last_shutdown(facts: &Facts) -> Outcome {
    let record = match &facts.shutdown {
        Err(reason) => return skip(reason.clone()),
        Ok(None) => return skip("no state file: the exporter has not recorded a boot yet"),
        Ok(Some(record)) => record,
    };
    let cause = match facts.reset_cause {
        Some((cause, source)) => format!("reset cause {} ({source})", cause.label()),
        None => "reset cause unknown (no device tree)".to_owned(),
    };
    let found = format!(
        "{cause}; {} unclean of {} boots",
        record.unclean_shutdowns, record.boots
    );
    match record.last_shutdown_clean {
        None => skip("no record of the previous boot"),
        Some(true) => pass(found),
        Some(false) => not(
            Verdict::Warn,
            "the last shutdown was unclean: the previous boot ended without a clean stop (power loss, crash, hard reset)",
            found,
        ),
    }
}

fn root_readonly(facts: &Facts) -> Outcome {
    let mounts = match &facts.mounts {
        Ok(m) => m,
        Err(e) => return skip(e.clone()),
    };
    let Some(root) = mounts.iter().rev().find(|m| m.mountpoint == "/") else {
        return skip("no root filesystem in the mount table");
    };
    if root.fstype == "overlay" {
        return pass("/ is an overlay (changes in RAM)");
    }
    if root.readonly {
        return pass(format!("/ ({}) mounted ro", root.fstype));
    }
    not(
        Verdict::Warn,
        "a power cut during a write can corrupt the root filesystem",
        format!("/ ({}) mounted rw", root.fstype),
    )
}

fn write_safety(facts: &Facts) -> Outcome {
    let mounts = match &facts.mounts {
        Ok(m) => m,
        Err(e) => return skip(e.clone()),
    };
    let mut worst = Verdict::Pass;
    let mut problems = Vec::new();
    let mut checked = Vec::new();
    for mount in writable_block(mounts) {
        let device = mount.device.trim_start_matches("/dev/");
        let ext = matches!(mount.fstype.as_str(), "ext4" | "ext3");
        if ext && !named_by_kernel(&mount.device) {
            return skip(format!(
                "cannot tell which journal is {}'s ({})",
                mount.mountpoint, mount.device
            ));
        }
        let journaled = match (&facts.journaled, ext) {
            (Ok(journals), true) => journals.iter().any(|j| j == device),
            (Err(e), true) => return skip(e.clone()),
            (_, false) => false,
        };
        let problem = match mount.fstype.as_str() {
            "ext4" | "ext3" if !journaled => Some((Verdict::Fail, "ext4 without a journal")),
            "ext4" | "ext3" if has_option(mount, "data=writeback") => {
                Some((Verdict::Fail, "data=writeback"))
            }
            "ext2" => Some((Verdict::Fail, "ext2 has no journal")),
            "vfat" | "exfat" | "msdos" | "ntfs" | "ntfs3" => {
                Some((Verdict::Warn, "no journal (FAT/NTFS)"))
            }
            _ => None,
        };
        match problem {
            Some((verdict, what)) => {
                worst = worst.max(verdict);
                problems.push(format!("{} {what}", mount.mountpoint));
            }
            None => checked.push(format!("{} {}", mount.mountpoint, mount.fstype)),
        }
    }
    if problems.is_empty() {
        return pass(if checked.is_empty() {
            "no writable filesystem on a block device".to_owned()
        } else {
            format!("journaled: {}", checked.join(", "))
        });
    }
    not(
        worst,
        "a power cut can leave a writable filesystem inconsistent",
        problems.join(", "),
    )
}

fn noatime(facts: &Facts) -> Outcome {
    let mounts = match &facts.mounts {
        Ok(m) => m,
        Err(e) => return skip(e.clone()),
    };
    let (with, without): (Vec<&Mount>, Vec<&Mount>) =
        writable_block(mounts).partition(|m| has_option(m, "noatime"));
    if without.is_empty() {
        return pass(if with.is_empty() {
            "no writable filesystem on a block device".to_owned()
        } else {
            format!(
                "noatime: {}",
                with.iter()
                    .map(|m| m.mountpoint.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        });
    }
    not(
        Verdict::Warn,
        "every read also writes the access time to flash",
        format!(
            "without noatime: {}",
            without
                .iter()
                .map(|m| m.mountpoint.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
}

/// The mount holding a path: the longest mount point that is a prefix of it.
fn mount_of<'a>(mounts: &'a [Mount], path: &str) -> Option<&'a Mount> {
    mounts
        .iter()
        .filter(|m| {
            m.mountpoint == "/"
                || path == m.mountpoint
                || path
                    .strip_prefix(m.mountpoint.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        })
        .max_by_key(|m| m.mountpoint.len())
}

fn swap_on_flash(facts: &Facts) -> Outcome {
    let swaps = match &facts.swaps {
        Ok(s) => s,
        Err(e) => return skip(e.clone()),
    };
    if swaps.is_empty() {
        return pass("no swap");
    }
    let mut on_flash = Vec::new();
    let mut elsewhere = Vec::new();
    let mut unknown = Vec::new();
    for area in swaps {
        let device = if area.kind == "file" {
            let Ok(mounts) = &facts.mounts else {
                return skip("swap file with an unreadable mount table");
            };
            mount_of(mounts, &area.device).map(|m| m.device.as_str())
        } else {
            Some(area.device.as_str())
        };
        match device.filter(|d| named_by_kernel(d)).and_then(disk_of) {
            Some(d) if d.starts_with("mmcblk") => on_flash.push(area.device.clone()),
            Some(d)
                if ["nvme", "sd", "vd", "zram"]
                    .iter()
                    .any(|p| d.starts_with(p)) =>
            {
                elsewhere.push(area.device.clone());
            }
            _ => unknown.push(format!(
                "{} (on {})",
                area.device,
                device.unwrap_or("no mount")
            )),
        }
    }
    if on_flash.is_empty() {
        if !unknown.is_empty() {
            return skip(format!(
                "cannot tell which disk holds swap {}",
                unknown.join(", ")
            ));
        }
        return pass(format!("swap on {}", elsewhere.join(", ")));
    }
    not(
        Verdict::Warn,
        "swapping wears the SD card/eMMC and stalls the Pi",
        format!("swap on flash: {}", on_flash.join(", ")),
    )
}

fn free_space(facts: &Facts) -> Outcome {
    let mounts = match &facts.mounts {
        Ok(m) => m,
        Err(e) => return skip(e.clone()),
    };
    let watched: Vec<&Space> = facts
        .space
        .iter()
        .filter(|s| {
            s.size > 0.0
                && mounts.iter().any(|m| {
                    m.mountpoint == s.mountpoint
                        && (m.mountpoint == "/" || !m.readonly)
                        && m.device.starts_with("/dev/")
                })
        })
        .collect();
    let unmeasured: Vec<&str> = facts
        .unmeasured
        .iter()
        .filter(|mp| {
            mounts.iter().any(|m| {
                &m.mountpoint == *mp
                    && (m.mountpoint == "/" || !m.readonly)
                    && m.device.starts_with("/dev/")
            })
        })
        .map(String::as_str)
        .collect();
    if watched.is_empty() && unmeasured.is_empty() {
        return skip("no filesystem sizes (filesystem collector found no writable disk)");
    }
    let low: Vec<String> = watched
        .iter()
        .filter(|s| s.avail / s.size < LOW_SPACE_RATIO)
        .map(|s| format!("{} {:.0} % free", s.mountpoint, s.avail / s.size * 100.0))
        .collect();
    if low.is_empty() && !unmeasured.is_empty() {
        return skip(format!(
            "no size for {} (statvfs failed, hung or not run yet)",
            unmeasured.join(", ")
        ));
    }
    if low.is_empty() {
        let least = watched
            .iter()
            .min_by(|a, b| (a.avail / a.size).total_cmp(&(b.avail / b.size)))
            .map(|s| {
                format!(
                    "least free: {} {:.0} %",
                    s.mountpoint,
                    s.avail / s.size * 100.0
                )
            })
            .unwrap_or_default();
        return pass(least);
    }
    not(
        Verdict::Fail,
        "a full filesystem stops logging, updates and databases",
        low.join(", "),
    )
}

fn log_volume(facts: &Facts) -> Outcome {
    if let Ok(mounts) = &facts.mounts
        && let Some(m) = mounts
            .iter()
            .rev()
            .find(|m| m.mountpoint == "/var/log" && m.fstype == "tmpfs")
    {
        return pass(format!("/var/log on tmpfs ({})", m.device));
    }
    let journald = match &facts.journald {
        Ok(j) => j,
        Err(e) => return skip(e.clone()),
    };
    if let Some(storage) = journald.get("Journal.Storage")
        && (storage == "volatile" || storage == "none")
    {
        return pass(format!("journald Storage={storage}"));
    }
    if let Some(max) = journald.get("Journal.SystemMaxUse") {
        return pass(format!("journald SystemMaxUse={max}"));
    }
    not(
        Verdict::Warn,
        "the journal may grow to 10 % of the filesystem and write to flash constantly",
        "/var/log on flash, no SystemMaxUse",
    )
}

fn logrotate(facts: &Facts) -> Outcome {
    match &facts.logrotate {
        Err(e) => skip(e.clone()),
        Ok(l) if l.config && l.scheduled => pass("logrotate.conf, scheduled"),
        Ok(l) if l.config => not(
            Verdict::Warn,
            "logrotate is configured but never runs",
            "no logrotate.timer or cron.daily entry",
        ),
        Ok(_) => not(
            Verdict::Warn,
            "log files grow until the filesystem is full",
            "no /etc/logrotate.conf",
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Power and heat

fn throttling(facts: &Facts) -> Outcome {
    if facts.throttled.is_empty() {
        return skip("no throttling state (firmware mailbox and get_throttled unreadable)");
    }
    let now: Vec<&str> = facts
        .throttled
        .iter()
        .filter(|c| c.now)
        .map(|c| c.name.as_str())
        .collect();
    if !now.is_empty() {
        return not(
            Verdict::Fail,
            "the Pi is throttled or under-voltage now: corruption and crashes follow",
            format!("now: {}", now.join(", ")),
        );
    }
    let since: Vec<&str> = facts
        .throttled
        .iter()
        .filter(|c| c.since_boot == Some(true))
        .map(|c| c.name.as_str())
        .collect();
    if !since.is_empty() {
        return not(
            Verdict::Warn,
            "it happened since boot: the supply or cooling is marginal",
            format!("since boot: {}", since.join(", ")),
        );
    }
    let history = facts.throttled.iter().any(|c| c.since_boot.is_some());
    pass(if history {
        "never since boot"
    } else {
        "none now (no since-boot history from this source)"
    })
}

fn temperature(facts: &Facts) -> Outcome {
    let Some(celsius) = facts.temperature else {
        return skip("no SoC temperature");
    };
    let limit = facts
        .temperature_limit
        .unwrap_or(DEFAULT_TEMPERATURE_LIMIT_CELSIUS);
    let headroom = limit - celsius;
    let found = format!("{celsius:.1} °C, {headroom:.1} °C below the {limit:.0} °C limit");
    if headroom >= TEMPERATURE_WARN_HEADROOM {
        pass(found)
    } else if headroom >= TEMPERATURE_FAIL_HEADROOM {
        not(
            Verdict::Warn,
            "little headroom: a warm day throttles it",
            found,
        )
    } else {
        not(Verdict::Fail, "at or near the throttling limit", found)
    }
}

fn ups(facts: &Facts) -> Outcome {
    match &facts.ups {
        UpsState::Unknown(reason) => skip(reason.clone()),
        UpsState::NotConfigured => not(
            Verdict::Warn,
            "a power cut stops the Pi mid-write",
            "no UPS configured (--ups.board/--ups.config)",
        ),
        UpsState::OnBattery(None) => not(
            Verdict::Warn,
            "the UPS gave no reading",
            "UPS configured, state unknown",
        ),
        UpsState::OnBattery(Some(false)) => pass("UPS on mains"),
        UpsState::OnBattery(Some(true)) => {
            not(Verdict::Fail, "running on battery now", "UPS on battery")
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Time

fn rtc(facts: &Facts) -> Outcome {
    if facts.rtcs.is_empty() {
        return not(
            Verdict::Warn,
            "without an RTC an offline boot starts at the last shutdown's time",
            "no RTC",
        );
    }
    let valid: Vec<&str> = facts
        .rtcs
        .iter()
        .filter(|r| r.valid)
        .map(|r| r.device.as_str())
        .collect();
    if valid.is_empty() {
        return not(
            Verdict::Fail,
            "the RTC's time is not valid (battery flat or never set)",
            format!(
                "invalid: {}",
                facts
                    .rtcs
                    .iter()
                    .map(|r| r.device.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    pass(format!("valid: {}", valid.join(", ")))
}

fn hctosys(facts: &Facts) -> Outcome {
    if facts.rtcs.is_empty() {
        return skip("no RTC");
    }
    if let Some(r) = facts.rtcs.iter().find(|r| r.hctosys == Some(true)) {
        return pass(format!("{} set the clock at boot", r.device));
    }
    if facts.rtcs.iter().all(|r| r.hctosys.is_none()) {
        return skip("no kernel-owned RTC reports hctosys");
    }
    not(
        Verdict::Warn,
        "no RTC set the system clock at boot",
        "hctosys 0 on every RTC",
    )
}

fn clock_sync(facts: &Facts) -> Outcome {
    match facts.synchronized {
        None => skip("adjtimex unavailable"),
        Some(true) => pass("kernel clock synchronised"),
        Some(false) => not(
            Verdict::Fail,
            "timestamps, TLS and schedules go wrong with an unsynchronised clock",
            "kernel clock not synchronised",
        ),
    }
}

fn time_step(facts: &Facts) -> Outcome {
    let chrony = match (&facts.chrony, &facts.chrony_enabled) {
        (Ok(c), Ok(enabled)) => c.as_ref().filter(|_| *enabled),
        (Err(e), _) | (_, Err(e)) => return skip(e.clone()),
    };
    if let Some(directives) = chrony {
        return match directives
            .iter()
            .find(|(_, line)| line.split_whitespace().next() == Some("makestep"))
        {
            Some((file, line)) => pass(format!("chrony {line:?} ({file})")),
            None => not(
                Verdict::Fail,
                "without makestep chrony slews a wrong boot time for hours",
                "chrony without makestep",
            ),
        };
    }
    match &facts.timesyncd_enabled {
        Err(e) => skip(e.clone()),
        Ok(true) => pass("systemd-timesyncd enabled (steps large offsets)"),
        Ok(false) => not(
            Verdict::Fail,
            "nothing corrects the clock after an offline boot",
            "chrony not enabled, timesyncd not enabled",
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Recovery

/// Whether a systemd time span is set to a duration other than zero: `0`, `0ms`, `off` and a
/// value systemd cannot parse (it ignores the assignment) are unset; so is `infinity` where it
/// means "never" (`infinity_unset`, as for `WatchdogSec=`).
fn timespan_set(value: Option<&str>, infinity_unset: bool) -> bool {
    match value.map(str::trim) {
        None | Some("" | "off") => false,
        Some("infinity") => !infinity_unset,
        Some(v) => timespan_micros(v).is_some_and(|us| us > 0),
    }
}

/// A systemd time span (`1min 30s`, `500ms`, `2h`; a bare number is seconds) in microseconds.
fn timespan_micros(text: &str) -> Option<u128> {
    const UNITS: &[(&[&str], u128)] = &[
        (&["us", "usec", "µs"], 1),
        (&["ms", "msec"], 1_000),
        (&["", "s", "sec", "second", "seconds"], 1_000_000),
        (&["m", "min", "minute", "minutes"], 60_000_000),
        (&["h", "hr", "hour", "hours"], 3_600_000_000),
        (&["d", "day", "days"], 86_400_000_000),
        (&["w", "week", "weeks"], 604_800_000_000),
        (&["M", "month", "months"], 2_629_800_000_000),
        (&["y", "year", "years"], 31_557_600_000_000),
    ];
    let mut rest = text.trim();
    let mut total: u128 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let number: u128 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        // `1.5s`: the fraction, to at most nanoseconds.
        let mut fraction = (0u128, 1u128);
        if let Some(after) = rest.strip_prefix('.') {
            let len = after
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after.len());
            let kept = &after[..len.min(9)];
            if !kept.is_empty() {
                fraction = (
                    kept.parse().ok()?,
                    10u128.pow(u32::try_from(kept.len()).ok()?),
                );
            }
            rest = &after[len..];
        }
        rest = rest.trim_start();
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c.is_whitespace())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let factor = UNITS.iter().find(|(names, _)| names.contains(&unit))?.1;
        total = total.checked_add(number.checked_mul(factor)?)?;
        total = total.checked_add(fraction.0.checked_mul(factor)? / fraction.1)?;
        rest = rest[unit_len..].trim_start();
    }
    Some(total)
}

fn hardware_watchdog(facts: &Facts) -> Outcome {
    let devices = match &facts.watchdog_devices {
        Ok(d) => d,
        Err(e) => return skip(e.clone()),
    };
    let conf: &Settings = match &facts.system_conf {
        Ok(c) => c,
        Err(e) => return skip(e.clone()),
    };
    let runtime = conf.get("Manager.RuntimeWatchdogSec");
    let runtime_set =
        runtime.is_some_and(|v| v.trim() == "default") || timespan_set(runtime, false);
    match (devices.is_empty(), runtime_set) {
        (true, _) => not(
            Verdict::Fail,
            "a hung kernel stays hung until someone power-cycles it",
            "no /dev/watchdog",
        ),
        (false, false) => not(
            Verdict::Fail,
            "nothing pings the watchdog, so it never resets a hung Pi",
            format!("{}, RuntimeWatchdogSec unset", devices.join(", ")),
        ),
        (false, true) => pass(format!(
            "{}, RuntimeWatchdogSec={}",
            devices.join(", "),
            runtime.unwrap_or_default()
        )),
    }
}

/// A service unit's restart policy: Restart=always, WatchdogSec, start limits.
fn unit_check(facts: &Facts, name: &str, required: bool) -> Outcome {
    let Some((_, unit)) = facts.units.iter().find(|(n, _)| *n == name) else {
        return skip("not examined");
    };
    let unit: &Unit = match unit {
        Err(e) => return skip(e.clone()),
        Ok(None) if required => {
            return not(
                Verdict::Warn,
                format!("{name} is not installed"),
                "no unit file",
            );
        }
        Ok(None) => return skip(format!("{name} not installed")),
        Ok(Some(u)) => u,
    };
    let s = &unit.settings;
    let mut fail = Vec::new();
    let mut warn = Vec::new();
    match s.get("Service.Restart") {
        Some("always") => {}
        Some(other @ ("on-failure" | "on-abnormal" | "on-watchdog" | "on-abort")) => {
            warn.push(format!("Restart={other}"));
        }
        other => fail.push(format!("Restart={}", other.unwrap_or("no"))),
    }
    if !timespan_set(s.get("Service.WatchdogSec"), true) {
        fail.push("no WatchdogSec".to_owned());
    }
    // The legacy names, and [Service] placement, that systemd still accepts.
    let interval = s
        .get("Unit.StartLimitIntervalSec")
        .or_else(|| s.get("Unit.StartLimitInterval"))
        .or_else(|| s.get("Service.StartLimitInterval"))
        .or_else(|| s.get("Service.StartLimitIntervalSec"));
    let burst = s
        .get("Unit.StartLimitBurst")
        .or_else(|| s.get("Service.StartLimitBurst"));
    if interval.is_none() || burst.is_none() {
        warn.push("default start limits".to_owned());
    }
    let layered = if unit.dropins.is_empty() {
        unit.file.clone()
    } else {
        format!("{} + {} drop-in(s)", unit.file, unit.dropins.len())
    };
    if !fail.is_empty() {
        fail.extend(warn);
        return not(
            Verdict::Fail,
            "a crashed or hung service stays down",
            format!("{}: {layered}", fail.join(", ")),
        );
    }
    if !warn.is_empty() {
        return not(
            Verdict::Warn,
            "systemd may give up restarting it",
            format!("{}: {layered}", warn.join(", ")),
        );
    }
    pass(format!(
        "Restart=always WatchdogSec={} StartLimitBurst={}: {layered}",
        s.get("Service.WatchdogSec").unwrap_or_default(),
        burst.unwrap_or_default()
    ))
}

fn unit_pi_exporter(facts: &Facts) -> Outcome {
    unit_check(facts, "pi-exporter.service", true)
}

fn unit_alert_relay(facts: &Facts) -> Outcome {
    unit_check(facts, "alert-relay.service", false)
}

// ---------------------------------------------------------------------------------------------
// Access and security

fn remote_access(facts: &Facts) -> Outcome {
    let interfaces = match &facts.interfaces {
        Ok(i) => i,
        Err(e) => return skip(e.clone()),
    };
    let tunnels: Vec<&str> = interfaces
        .iter()
        .filter(|i| i.starts_with("wg") || i.starts_with("tailscale"))
        .map(String::as_str)
        .collect();
    if tunnels.is_empty() {
        return not(
            Verdict::Warn,
            "no way in when the site's network changes",
            "no wg*/tailscale* interface",
        );
    }
    pass(tunnels.join(", "))
}

fn ssh_password(facts: &Facts) -> Outcome {
    let sshd = match &facts.sshd {
        Err(e) => return skip(e.clone()),
        Ok(None) => return skip("OpenSSH server not installed (no /etc/ssh/sshd_config)"),
        Ok(Some(s)) => s,
    };
    let get = |k: &str| sshd.settings.get(k).map(String::as_str);
    let password = get("passwordauthentication").unwrap_or("yes");
    // Keyboard-interactive through PAM asks for the same password (ChallengeResponse-
    // Authentication is read as its old name).
    let kbd = get("kbdinteractiveauthentication").unwrap_or("yes");
    let pam = get("usepam").unwrap_or("no");
    if password != "no" {
        return not(
            Verdict::Fail,
            "password logins invite brute force on a reachable Pi",
            format!("PasswordAuthentication {password}"),
        );
    }
    if kbd != "no" && pam == "yes" {
        return not(
            Verdict::Fail,
            "keyboard-interactive with PAM still accepts passwords",
            format!("KbdInteractiveAuthentication {kbd}, UsePAM yes"),
        );
    }
    if !sshd.match_enabled.is_empty() {
        return not(
            Verdict::Warn,
            "a Match block lets password logins in for some clients",
            format!("enabled for Match: {}", sshd.match_enabled.join("; ")),
        );
    }
    pass("PasswordAuthentication no")
}

fn firewall(facts: &Facts) -> Outcome {
    let fw = match &facts.firewall {
        Ok(f) => f,
        Err(e) => return skip(e.clone()),
    };
    let mut active = Vec::new();
    if fw.nftables {
        active.push("nftables.service with an input chain");
    }
    if fw.ufw {
        active.push("ufw enabled");
    }
    if fw.firewalld {
        active.push("firewalld enabled");
    }
    if fw.iptables_persistent {
        active.push("netfilter-persistent with INPUT rules");
    }
    if !active.is_empty() {
        return pass(active.join(", "));
    }
    not(
        Verdict::Warn,
        "every listening service is open to the network",
        if fw.notes.is_empty() {
            "no firewall configured to load at boot".to_owned()
        } else {
            fw.notes.join("; ")
        },
    )
}

fn is_local(address: &ListenAddress) -> bool {
    match address {
        ListenAddress::AllInterfaces(_) => false,
        ListenAddress::Socket(a) => a.ip().is_loopback(),
    }
}

fn describe(address: &ListenAddress) -> String {
    match address {
        ListenAddress::AllInterfaces(port) => format!(":{port}"),
        ListenAddress::Socket(a) => a.to_string(),
    }
}

fn exporter_exposure(facts: &Facts) -> Outcome {
    let served = match &facts.served {
        Ok(s) => s,
        Err(e) => return skip(e.clone()),
    };
    let exposure = &served.exposure;
    let listen = exposure
        .listen
        .iter()
        .map(describe)
        .collect::<Vec<_>>()
        .join(" ");
    if exposure.listen.is_empty() {
        return skip(format!("no listen address ({})", exposure.origin));
    }
    if exposure.listen.iter().all(is_local) {
        return pass(format!("{listen} (loopback only; {})", exposure.origin));
    }
    let (tls, auth) = served.protection.map_or((false, false), |p| {
        (p.tls, p.basic_auth || p.client_certificates)
    });
    let found = format!(
        "{listen}{}{}; {}",
        if tls { " TLS" } else { " plain HTTP" },
        if auth { " with auth" } else { " without auth" },
        exposure.origin
    );
    if tls && auth {
        return pass(found);
    }
    not(
        Verdict::Warn,
        "anyone on the network can read the Pi's details",
        found,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks_of_partitions() {
        assert_eq!(disk_of("/dev/mmcblk0p2"), Some("mmcblk0"));
        assert_eq!(disk_of("/dev/mmcblk0"), Some("mmcblk0"));
        assert_eq!(disk_of("/dev/nvme0n1p2"), Some("nvme0n1"));
        assert_eq!(disk_of("/dev/sda2"), Some("sda"));
        assert_eq!(disk_of("/dev/zram0"), Some("zram0"));
        assert_eq!(disk_of("tmpfs"), None);
    }

    #[test]
    fn timespans_off_are_unset() {
        assert!(timespan_set(Some("15s"), true));
        assert!(timespan_set(Some("1min 30s"), true));
        assert!(timespan_set(Some("500ms"), true));
        assert!(timespan_set(Some("30"), true));
        assert!(timespan_set(Some("0.5s"), true));
        assert!(!timespan_set(Some("0.0s"), true));
        assert!(timespan_set(Some("infinity"), false));
        for unset in [
            "0",
            "off",
            "0ms",
            "0min",
            "0 s",
            "0h0m",
            "infinity",
            "bogus",
            "5 parsecs",
        ] {
            assert!(!timespan_set(Some(unset), true), "{unset}");
        }
        assert!(!timespan_set(None, true));
    }
}
