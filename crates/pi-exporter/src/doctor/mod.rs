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
pub mod collector;
pub(crate) mod config;
pub(crate) mod facts;
pub mod render;
pub mod roots;

use std::path::PathBuf;

use serde::Serialize;

use crate::collector::BuildContext;
use crate::listen::ListenAddress;

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

    /// The `status` label of `rpi_doctor_check` and the `verdict` label of `rpi_doctor_checks`.
    pub fn status(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Warn => "warn",
            Self::Fail => "fail",
            Self::Skip => "skip",
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
    /// Why the UPS configuration is not known (the unit's `ExecStart` does not parse): SKIP.
    pub ups_unknown: Option<String>,
}

/// Runs every check once; the checks that read a tree [`roots::problems`] finds wrong SKIP.
pub fn run(inputs: &Inputs, sources: &facts::Sources) -> Vec<Finding> {
    let problems = roots::problems(&inputs.context.paths);
    let facts = facts::gather(inputs, sources);
    checks::all(&facts, &problems)
}

/// The verdict a whole report gives: 1 when anything FAILs.
pub fn exit_status(findings: &[Finding]) -> u8 {
    u8::from(findings.iter().any(|f| f.verdict == Verdict::Fail))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::collector::fixture;

    /// `pi-exporter doctor` on a tree laid out like the fixtures, plus extra flags.
    fn doctor(tree: &Path, extra: &[&str]) -> Vec<Finding> {
        let mut args = vec!["pi-exporter".to_owned(), "doctor".to_owned()];
        for (flag, dir) in [
            ("procfs", "proc"),
            ("sysfs", "sys"),
            ("rootfs", "rootfs"),
            ("devfs", "dev"),
        ] {
            args.push(format!("--path.{flag}={}", tree.join(dir).display()));
        }
        args.push(format!(
            "--simulate.board={}",
            tree.join("board.yaml").display()
        ));
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let config = crate::cli::try_parse(args).expect("flags parse");
        let command = config.doctor.expect("the doctor subcommand");
        crate::doctor_findings(&config, command).expect("doctor runs")
    }

    fn verdicts(findings: &[Finding]) -> Vec<(&'static str, Verdict)> {
        findings.iter().map(|f| (f.check, f.verdict)).collect()
    }

    fn verdict_of(findings: &[Finding], check: &str) -> Finding {
        findings
            .iter()
            .find(|f| f.check == check)
            .cloned()
            .unwrap_or_else(|| panic!("no check {check}"))
    }

    /// A writable copy of a fixture tree (symlinks kept as they are).
    fn copy_of(name: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(fixture(name).join("."))
            .arg(dir.path())
            .status()
            .expect("cp");
        assert!(status.success());
        dir
    }

    #[test]
    fn a_prepared_pi_passes_every_check() {
        let findings = doctor(&fixture("doctor-prepared"), &[]);
        assert_eq!(findings.len(), checks::CHECKS.len());
        for f in &findings {
            assert_eq!(f.verdict, Verdict::Pass, "{f:?}");
            assert!(f.fix.is_empty() && f.reason.is_empty(), "{f:?}");
        }
        assert_eq!(exit_status(&findings), 0);
        let exposure = verdict_of(&findings, "exporter_exposure");
        assert!(
            exposure
                .found
                .contains("TLS with auth; pi-exporter.service"),
            "{exposure:?}"
        );
    }

    #[test]
    fn a_neglected_pi_fails_each_check_for_its_own_reason() {
        use Verdict::{Fail, Skip, Warn};
        let findings = doctor(&fixture("doctor-neglected"), &[]);
        assert_eq!(
            verdicts(&findings),
            [
                ("boot_media", Warn),
                // An SD card reports no wear; a worn eMMC has its own test.
                ("flash_wear", Skip),
                // ... so its life is projected, but no rated endurance is declared.
                ("rated_endurance", Warn),
                ("root_readonly", Warn),
                ("write_safety", Fail),
                ("noatime", Warn),
                ("swap_on_flash", Warn),
                ("free_space", Fail),
                ("log_volume", Warn),
                ("logrotate", Warn),
                ("throttling", Fail),
                ("temperature", Fail),
                // The state file says the previous boot ended without a clean stop.
                ("last_shutdown", Warn),
                ("ups", Warn),
                ("rtc", Fail),
                ("hctosys", Warn),
                ("clock_sync", Fail),
                ("time_step", Fail),
                ("hardware_watchdog", Fail),
                ("unit_pi_exporter", Fail),
                ("unit_alert_relay", Fail),
                ("remote_access", Warn),
                ("ssh_password", Fail),
                ("firewall", Warn),
                ("exporter_exposure", Warn),
            ]
        );
        assert_eq!(exit_status(&findings), 1);
        let found = |check| verdict_of(&findings, check).found;
        assert!(found("write_safety").contains("/data data=writeback"));
        assert!(found("swap_on_flash").contains("/var/swap"));
        assert_eq!(found("free_space"), "/ 1 % free");
        assert_eq!(found("throttling"), "now: under_voltage, throttled");
        // The drop-in's empty WatchdogSec= reset the unit file's 30s.
        assert!(found("unit_pi_exporter").starts_with("no WatchdogSec, Restart=on-failure"));
        // Debian's default ruleset, loaded at boot: an input chain that accepts everything.
        assert!(
            found("firewall").contains("no input hook chain that drops or rejects"),
            "{}",
            found("firewall")
        );
        // Debian's cron script exits where systemd runs.
        assert_eq!(found("logrotate"), "no logrotate.timer or cron.daily entry");
        assert_eq!(found("time_step"), "chrony without makestep");
        for f in findings.iter().filter(|f| f.verdict != Skip) {
            assert!(!f.fix.is_empty() && !f.reason.is_empty(), "{f:?}");
        }
    }

    #[test]
    fn flags_override_the_units_listen_address_and_ups() {
        let findings = doctor(
            &fixture("doctor-neglected"),
            &[
                "--web.listen-address=127.0.0.1:9831",
                "--ups.board=nut",
                "--ups.nut.port=1",
            ],
        );
        let exposure = verdict_of(&findings, "exporter_exposure");
        assert_eq!(exposure.verdict, Verdict::Pass);
        assert!(exposure.found.contains("flags"), "{exposure:?}");
        // Configured, but nothing answers on port 1.
        let ups = verdict_of(&findings, "ups");
        assert_eq!(ups.verdict, Verdict::Warn);
        assert_eq!(ups.found, "UPS configured, state unknown");
    }

    #[test]
    fn a_worn_emmc_fails() {
        let tree = copy_of("doctor-prepared");
        let card = tree.path().join("sys/block/mmcblk0/device");
        std::fs::write(card.join("life_time"), "0x0a 0x0b\n").expect("write");
        std::fs::write(card.join("pre_eol_info"), "0x02\n").expect("write");
        let wear = verdict_of(&doctor(tree.path(), &[]), "flash_wear");
        assert_eq!(wear.verdict, Verdict::Fail, "{wear:?}");
        assert_eq!(wear.found, "mmcblk0: life used ≤110 %, pre-EOL warning");
    }

    /// Writes `text` to `path` under the tree, creating directories.
    fn put(tree: &Path, path: &str, text: &str) {
        let path = tree.join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    /// Configurations that once passed though the Pi is not protected (review findings A).
    #[test]
    fn shutdown_history_and_declared_endurance() {
        let tree = copy_of("doctor-neglected");
        let root = tree.path();
        let last = verdict_of(&doctor(root, &[]), "last_shutdown");
        assert_eq!(last.verdict, Verdict::Warn, "{last:?}");
        assert_eq!(
            last.found,
            "reset cause power_on (bootloader/rsts); 4 unclean of 9 boots"
        );
        let declared = ["--collector.storage.rated-endurance=mmcblk0=117TB"];
        let endurance = verdict_of(&doctor(root, &declared), "rated_endurance");
        assert_eq!(endurance.verdict, Verdict::Pass, "{endurance:?}");

        let state = root.join("rootfs/var/lib/pi-exporter/history");
        put(
            root,
            "rootfs/var/lib/pi-exporter/history",
            "{\"boots\": 3}\n",
        );
        let corrupt = verdict_of(&doctor(root, &[]), "last_shutdown");
        assert_eq!(corrupt.verdict, Verdict::Skip, "{corrupt:?}");
        assert!(corrupt.reason.contains("corrupt"), "{corrupt:?}");
        std::fs::remove_file(&state).expect("rm");
        let absent = verdict_of(&doctor(root, &[]), "last_shutdown");
        assert_eq!(absent.verdict, Verdict::Skip, "{absent:?}");
    }

    #[test]
    fn no_false_pass_on_a_prepared_pi_that_drifted() {
        let tree = copy_of("doctor-prepared");
        let root = tree.path();
        let verdict = |check: &str| verdict_of(&doctor(root, &[]), check);

        // A Match block turns passwords back on for some clients.
        put(
            root,
            "rootfs/etc/ssh/sshd_config.d/20-lan.conf",
            "Match Address 10.0.0.0/8\nPasswordAuthentication yes\n",
        );
        let ssh = verdict("ssh_password");
        assert_eq!(ssh.verdict, Verdict::Warn, "{ssh:?}");
        assert!(ssh.found.contains("Match Address 10.0.0.0/8"), "{ssh:?}");
        // The Match ends with its included file: the main file's later lines are global.
        std::fs::remove_file(root.join("rootfs/etc/ssh/sshd_config.d/20-lan.conf")).expect("rm");
        put(
            root,
            "rootfs/etc/ssh/sshd_config.d/05-match.conf",
            "Match User backup\nX11Forwarding no\n",
        );
        let main = root.join("rootfs/etc/ssh/sshd_config");
        let text = std::fs::read_to_string(&main).expect("read");
        std::fs::write(&main, format!("{text}\nPasswordAuthentication yes\n")).expect("write");
        let ssh = verdict("ssh_password");
        assert_eq!(
            ssh.verdict,
            Verdict::Pass,
            "the drop-in's `no` came first: {ssh:?}"
        );
        std::fs::write(
            &main,
            format!("ChallengeResponseAuthentication yes\n{text}"),
        )
        .expect("write");
        let ssh = verdict("ssh_password");
        assert_eq!(
            ssh.verdict,
            Verdict::Fail,
            "old name of KbdInteractive: {ssh:?}"
        );
        std::fs::write(&main, text).expect("write");

        // A masked nftables.service loads nothing; a dangling timer link schedules nothing.
        std::os::unix::fs::symlink(
            "/dev/null",
            root.join("rootfs/etc/systemd/system/nftables.service"),
        )
        .expect("mask");
        assert_eq!(verdict("firewall").verdict, Verdict::Warn);
        std::fs::remove_file(root.join("rootfs/usr/lib/systemd/system/logrotate.timer"))
            .expect("rm");
        assert_eq!(verdict("logrotate").verdict, Verdict::Warn);

        // chrony's conffile left behind by `apt remove chrony`.
        std::fs::remove_file(root.join("rootfs/usr/lib/systemd/system/chrony.service"))
            .expect("rm");
        assert_eq!(verdict("time_step").verdict, Verdict::Fail);

        // WatchdogSec=infinity or 0ms is no watchdog.
        for value in ["infinity", "0ms", "0min"] {
            put(
                root,
                "rootfs/etc/systemd/system/pi-exporter.service.d/zz.conf",
                &format!("[Service]\nWatchdogSec={value}\n"),
            );
            let unit = verdict("unit_pi_exporter");
            assert_eq!(unit.verdict, Verdict::Fail, "{value}: {unit:?}");
        }

        // A writable disk whose statvfs fails has no size: not a PASS on the others' alone.
        let mounts = root.join("proc/self/mounts");
        let table = std::fs::read_to_string(&mounts).expect("read");
        std::fs::write(
            &mounts,
            format!("{table}/dev/sda1 /gone ext4 rw,noatime 0 0\n"),
        )
        .expect("write");
        let space = verdict("free_space");
        assert_eq!(space.verdict, Verdict::Skip, "{space:?}");
        assert!(space.reason.contains("/gone"), "{space:?}");

        // Raspberry Pi OS Bullseye mounts the root as /dev/root: unidentified, not a PASS.
        put(
            root,
            "proc/self/mounts",
            "/dev/root / ext4 rw,noatime 0 0\ntmpfs /run tmpfs rw,nosuid 0 0\n",
        );
        put(
            root,
            "proc/swaps",
            "Filename Type Size Used Priority\n/var/swap file 102396 0 -2\n",
        );
        let findings = doctor(root, &[]);
        for check in ["swap_on_flash", "write_safety"] {
            let f = verdict_of(&findings, check);
            assert_eq!(f.verdict, Verdict::Skip, "{f:?}");
        }
        // Resolved by its device number, as the kernel names it.
        put(
            root,
            "proc/self/mountinfo",
            "22 1 179:2 / / rw,noatime shared:1 - ext4 /dev/root rw\n",
        );
        std::fs::create_dir_all(root.join("sys/dev/block")).expect("mkdir");
        std::os::unix::fs::symlink(
            "../../devices/platform/emmc2bus/fe340000.mmc/mmc_host/mmc0/mmc0:0001/block/mmcblk0/mmcblk0p2",
            root.join("sys/dev/block/179:2"),
        )
        .expect("link");
        put(root, "proc/fs/jbd2/mmcblk0p2-8/info", "");
        let findings = doctor(root, &[]);
        let swap = verdict_of(&findings, "swap_on_flash");
        assert_eq!(swap.verdict, Verdict::Warn, "{swap:?}");
        let safety = verdict_of(&findings, "write_safety");
        assert_eq!(safety.verdict, Verdict::Pass, "{safety:?}");
    }

    #[test]
    fn a_continuation_goes_on_past_a_comment_line() {
        let mut settings = config::Settings::default();
        settings.apply("[Service]\nExecStart=/usr/bin/pi-exporter \\\n# a comment\n  --web.listen-address=:9831\nRestart=always\n");
        assert_eq!(
            settings.get("Service.ExecStart"),
            Some("/usr/bin/pi-exporter  --web.listen-address=:9831")
        );
        assert_eq!(settings.get("Service.Restart"), Some("always"));
    }

    #[test]
    fn unreadable_or_malformed_files_skip_with_a_reason() {
        let tree = copy_of("doctor-prepared");
        let root = tree.path().join("rootfs");
        let etc = root.join("etc");
        // A directory where a file should be: read(2) fails with EISDIR, as for any I/O error.
        let dropin = etc.join("ssh/sshd_config.d/10-pifleet.conf");
        std::fs::remove_file(&dropin).expect("rm");
        std::fs::create_dir(&dropin).expect("mkdir");
        let watchdog = etc.join("systemd/system.conf.d/50-pifleet-watchdog.conf");
        std::fs::remove_file(&watchdog).expect("rm");
        std::fs::create_dir(&watchdog).expect("mkdir");
        std::fs::write(etc.join("chrony/conf.d/pifleet.conf"), b"makestep \xff 3\n")
            .expect("write");
        std::fs::write(etc.join("pi-exporter/web.yml"), "tls_server_config: [\n").expect("write");
        std::fs::write(
            root.join("usr/lib/systemd/system/alert-relay.service"),
            b"[Service]\nRestart=\xfe\n",
        )
        .expect("write");
        std::fs::write(
            tree.path().join("proc/swaps"),
            "Filename Type\n/dev/zram0 partition lots\n",
        )
        .expect("write");
        // A procfs without jbd2 (a container's): ext4 journals unknown.
        std::fs::remove_dir_all(tree.path().join("proc/fs/jbd2")).expect("rm");
        let findings = doctor(tree.path(), &[]);
        for (check, why) in [
            ("write_safety", "cannot tell which ext4"),
            ("ssh_password", "cannot read"),
            ("hardware_watchdog", "cannot read"),
            ("time_step", "not UTF-8"),
            ("exporter_exposure", "web configuration unusable"),
            ("unit_alert_relay", "not UTF-8"),
            ("swap_on_flash", "malformed"),
        ] {
            let f = verdict_of(&findings, check);
            assert_eq!(f.verdict, Verdict::Skip, "{f:?}");
            assert!(f.reason.contains(why), "{f:?}");
        }

        // A unit whose flags the exporter would refuse: the exposure is not known.
        std::fs::write(
            etc.join("default/pi-exporter"),
            "PI_EXPORTER_ARGS=\"--web.listen-address=nowhere\"\n",
        )
        .expect("write");
        let findings = doctor(tree.path(), &[]);
        for check in ["exporter_exposure", "ups"] {
            let f = verdict_of(&findings, check);
            assert_eq!(f.verdict, Verdict::Skip, "{f:?}");
            assert!(f.reason.contains("cannot parse the ExecStart"), "{f:?}");
        }
    }

    #[test]
    fn the_units_ups_config_is_read_through_the_rootfs() {
        let tree = copy_of("doctor-prepared");
        put(
            tree.path(),
            "rootfs/etc/pi-exporter/ups.yaml",
            "ups:\n  - {name: rack, board: nut}\n",
        );
        put(
            tree.path(),
            "rootfs/etc/default/pi-exporter",
            "PI_EXPORTER_ARGS=\"--web.listen-address=127.0.0.1:9831 --ups.config=/etc/pi-exporter/ups.yaml\"\n",
        );
        let findings = doctor(tree.path(), &[]);
        let exposure = verdict_of(&findings, "exporter_exposure");
        assert_eq!(exposure.verdict, Verdict::Pass, "{exposure:?}");
        let ups = verdict_of(&findings, "ups");
        assert_ne!(ups.verdict, Verdict::Skip, "{ups:?}");
        assert_ne!(ups.verdict, Verdict::Pass, "no upsd answers: {ups:?}");
    }

    /// `pi-exporter doctor` with these trees and no board file: the report and the findings.
    fn doctor_on(procfs: &Path, sysfs: &Path, rootfs: &Path) -> (String, Vec<Finding>) {
        let args = vec![
            "pi-exporter".to_owned(),
            "doctor".to_owned(),
            format!("--path.procfs={}", procfs.display()),
            format!("--path.sysfs={}", sysfs.display()),
            format!("--path.rootfs={}", rootfs.display()),
            format!("--path.devfs={}", rootfs.join("dev").display()),
            "--collector.rtc.i2c-bus=none".to_owned(),
        ];
        let config = crate::cli::try_parse(args).expect("flags parse");
        let command = config.doctor.expect("the doctor subcommand");
        let findings = crate::doctor_findings(&config, command).expect("doctor runs");
        let (report, _) = crate::run_doctor(&config, command).expect("doctor runs");
        (report, findings)
    }

    #[test]
    fn nonexistent_trees_are_reported_first_and_their_checks_skip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let gone = dir.path().join("gone");
        let (report, findings) = doctor_on(&gone.join("proc"), &gone.join("sys"), &gone);
        let first: Vec<&str> = report.lines().take(3).collect();
        assert_eq!(
            first,
            [
                format!(
                    "NOT CHECKED: --path.rootfs={} does not exist; the checks that read it SKIP",
                    gone.display()
                ),
                format!(
                    "NOT CHECKED: --path.procfs={} does not exist; the checks that read it SKIP",
                    gone.join("proc").display()
                ),
                format!(
                    "NOT CHECKED: --path.sysfs={} does not exist; the checks that read it SKIP",
                    gone.join("sys").display()
                ),
            ],
            "{report}"
        );
        // Only the kernel's clock (a system call, no tree) is still checked: nothing is
        // guessed from an empty tree.
        for f in &findings {
            if f.check == "clock_sync" {
                assert_ne!(f.verdict, Verdict::Skip, "{f:?}");
            } else {
                assert_eq!(f.verdict, Verdict::Skip, "{f:?}");
                assert!(f.reason.starts_with("not checked: --path."), "{f:?}");
                assert!(f.fix.is_empty(), "{f:?}");
            }
        }
    }

    #[test]
    fn a_fixture_without_a_root_filesystem_skips_only_what_reads_the_root() {
        // pi4-sd's rootfs/ holds only mount points (boot/, run/), no etc/.
        let tree = fixture("pi4-sd");
        let (report, findings) =
            doctor_on(&tree.join("proc"), &tree.join("sys"), &tree.join("rootfs"));
        assert!(
            report.starts_with(&format!(
                "NOT CHECKED: --path.rootfs={} does not look like a Linux root filesystem (it has no etc/); the checks that read it SKIP\n\n",
                tree.join("rootfs").display()
            )),
            "{report}"
        );
        for f in &findings {
            let reads_root = checks::CHECKS
                .iter()
                .any(|c| c.name == f.check && c.reads.contains(&roots::Root::Rootfs));
            if reads_root {
                assert_eq!(f.verdict, Verdict::Skip, "{f:?}");
                assert!(f.reason.contains("--path.rootfs="), "{f:?}");
            }
        }
        // The kernel's trees are fine: the read-only SD root is still found.
        let ro = verdict_of(&findings, "root_readonly");
        assert_ne!(ro.verdict, Verdict::Skip, "{ro:?}");
        assert_ne!(verdict_of(&findings, "flash_wear").reason, "");
    }
}
