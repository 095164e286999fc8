//! Everything the checks look at, read once per run. Kernel-derived facts come from the
//! exporter's own collectors (their samples), configuration from files under the rootfs prefix.

use std::time::Duration;

use super::config::{self, Reason, Settings, Sshd, Unit};
use super::{Exposure, Inputs};
use crate::collector::filesystem::{self, Mount};
use crate::collector::history::{self, reset::Cause, state::Record};
use crate::collector::system::{self, SwapArea};
use crate::collector::{BuildContext, Collector, firmware, rtc, storage, time, ups};
use crate::metrics::{MetricSet, Sample};

/// A fact, or why it could not be read.
pub(crate) type Fact<T> = Result<T, Reason>;

/// The collectors whose samples the checks read, built once and run once per doctor run: the
/// RTC without its offset thread, the UPS (only when one is configured) without a shutdown
/// guard and read at the doctor's pace.
pub struct Sources {
    collectors: Vec<(&'static str, Box<dyn Collector>)>,
    ups_configured: bool,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.collectors.iter().map(|(n, _)| *n).collect();
        f.debug_struct("Sources")
            .field("collectors", &names)
            .finish()
    }
}

impl Sources {
    /// `ups_interval`: how often the private UPS reader reads (the doctor's interval).
    pub fn build(ctx: &BuildContext, ups_interval: Duration) -> Self {
        let mut ctx = ctx.clone();
        ctx.options.rtc.offset_interval = Duration::ZERO;
        ctx.options.ups.shutdown.enable = false;
        ctx.options.ups.interval = ups_interval;
        let ups_configured = ctx.options.ups.board.is_some()
            || !ctx.options.ups.units.is_empty()
            || ctx
                .board
                .as_ref()
                .and_then(|b| b.ups.as_ref())
                .is_some_and(|u| u.board.is_some());
        let mut collectors: Vec<(&'static str, Box<dyn Collector>)> = vec![
            (
                "filesystem",
                Box::new(filesystem::FilesystemCollector::new(&ctx)),
            ),
            ("storage", Box::new(storage::StorageCollector::new(&ctx))),
            ("firmware", Box::new(firmware::FirmwareCollector::new(&ctx))),
            ("rtc", Box::new(rtc::RtcCollector::new(&ctx))),
            ("time", Box::new(time::TimeCollector::new(&ctx))),
        ];
        if ups_configured {
            collectors.push(("ups", Box::new(ups::UpsCollector::new(&ctx))));
        }
        Self {
            collectors,
            ups_configured,
        }
    }

    /// Runs every source once. A failing collector still gives what it read; the checks that
    /// need what it lacked SKIP.
    fn collect(&self) -> MetricSet {
        let mut all = MetricSet::new();
        for (name, collector) in &self.collectors {
            let mut set = MetricSet::new();
            if let Err(e) = collector.collect(&mut set) {
                tracing::debug!(collector = name, "doctor: source incomplete: {e}");
            }
            all.append(set);
        }
        all
    }
}

/// The samples of one family.
pub(crate) fn samples<'a>(set: &'a MetricSet, name: &str) -> &'a [Sample] {
    set.get(name).map_or(&[], |f| f.samples.as_slice())
}

/// The value of the sample of `name` whose `key` label is `value`.
fn value_where(set: &MetricSet, name: &str, key: &str, value: &str) -> Option<f64> {
    samples(set, name)
        .iter()
        .find(|s| s.label(key) == Some(value))
        .map(|s| s.value)
}

/// An SD card or eMMC, from the storage collector.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Card {
    pub(crate) device: String,
    /// `SD` or `MMC`.
    pub(crate) kind: String,
    /// The larger of the type A and B life time estimates (share of rated life used).
    pub(crate) life_used: Option<f64>,
    /// EXT_CSD pre-EOL: 1 normal, 2 warning, 3 urgent.
    pub(crate) pre_eol: Option<f64>,
}

/// A mounted filesystem's size, from the filesystem collector.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Space {
    pub(crate) mountpoint: String,
    pub(crate) size: f64,
    pub(crate) avail: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rtc {
    pub(crate) device: String,
    pub(crate) valid: bool,
    pub(crate) hctosys: Option<bool>,
}

/// A firmware throttling condition: now, and since boot when the source keeps history.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Condition {
    pub(crate) name: String,
    pub(crate) now: bool,
    pub(crate) since_boot: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum UpsState {
    /// Why the configuration is not known.
    Unknown(String),
    NotConfigured,
    /// Configured; `None` when it gave no on-battery reading.
    OnBattery(Option<bool>),
}

/// What the firewall check looks at; see `docs/doctor.md`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Firewall {
    /// nftables.service enabled and /etc/nftables.conf has a chain on the input hook.
    pub(crate) nftables: bool,
    /// ufw with `ENABLED=yes` in /etc/ufw/ufw.conf.
    pub(crate) ufw: bool,
    /// firewalld.service enabled.
    pub(crate) firewalld: bool,
    /// netfilter-persistent.service enabled and /etc/iptables/rules.v4 has INPUT rules.
    pub(crate) iptables_persistent: bool,
    /// What exists without being a loaded ruleset (for the message).
    pub(crate) notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Logrotate {
    pub(crate) config: bool,
    /// logrotate.timer enabled or /etc/cron.daily/logrotate present.
    pub(crate) scheduled: bool,
}

/// The web configuration's protection.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Served {
    pub(crate) exposure: Exposure,
    pub(crate) protection: Option<serving::web_config::Protection>,
}

#[derive(Debug)]
pub(crate) struct Facts {
    pub(crate) mounts: Fact<Vec<Mount>>,
    pub(crate) cards: Vec<Card>,
    /// Block devices with an ext4 journal (`<procfs>/fs/jbd2/<device>-8`).
    pub(crate) journaled: Fact<Vec<String>>,
    pub(crate) swaps: Fact<Vec<SwapArea>>,
    pub(crate) space: Vec<Space>,
    /// Mount points the filesystem collector listed without a size (statvfs failed, hung or
    /// not measured in that run).
    pub(crate) unmeasured: Vec<String>,
    pub(crate) journald: Fact<Settings>,
    pub(crate) logrotate: Fact<Logrotate>,
    pub(crate) throttled: Vec<Condition>,
    pub(crate) temperature: Option<f64>,
    pub(crate) temperature_limit: Option<f64>,
    pub(crate) ups: UpsState,
    pub(crate) rtcs: Vec<Rtc>,
    pub(crate) synchronized: Option<bool>,
    pub(crate) chrony: Fact<Option<Vec<(String, String)>>>,
    /// chrony.service or chronyd.service installed and enabled (its configuration can outlive
    /// the package).
    pub(crate) chrony_enabled: Fact<bool>,
    pub(crate) timesyncd_enabled: Fact<bool>,
    pub(crate) watchdog_devices: Fact<Vec<String>>,
    pub(crate) system_conf: Fact<Settings>,
    pub(crate) units: Vec<(&'static str, Fact<Option<Unit>>)>,
    pub(crate) interfaces: Fact<Vec<String>>,
    pub(crate) sshd: Fact<Option<Sshd>>,
    pub(crate) firewall: Fact<Firewall>,
    pub(crate) served: Fact<Served>,
    /// Devices given a rated endurance (`--collector.storage.rated-endurance`).
    pub(crate) rated_endurance: Vec<String>,
    /// The history collector's state file, read only (`None`: there is none).
    pub(crate) shutdown: Fact<Option<Record>>,
    /// This boot's reset cause and the property it came from, if the device tree has one.
    pub(crate) reset_cause: Option<(Cause, &'static str)>,
}

/// The state file as the history collector left it, read through the rootfs prefix like the
/// other files the doctor checks; never written here.
fn shutdown_record(inputs: &Inputs) -> Fact<Option<Record>> {
    let file = &inputs.context.options.history.state_file;
    let path = inputs.context.paths.rooted(&file.to_string_lossy());
    let Some(text) = config::read_optional(&path)? else {
        return Ok(None);
    };
    history::state::parse(&text)
        .map(Some)
        .map_err(|why| format!("{} is corrupt: {why}", path.display()))
}

/// The units the recovery checks read.
pub(crate) const UNITS: [&str; 2] = ["pi-exporter.service", "alert-relay.service"];

/// Reads every fact once: the sources' samples first, then the files under the rootfs prefix.
/// Each fact has its own reader below, so one that cannot be read costs only its checks.
pub(crate) fn gather(inputs: &Inputs, sources: &Sources) -> Facts {
    let paths = &inputs.context.paths;
    let set = sources.collect();

    let mounts = mounts(paths);
    let cards = cards(&set);
    let journaled = journaled(paths);
    let swaps = swaps(paths);
    let space = space(&set);
    let unmeasured = unmeasured(&set);
    let logrotate = logrotate(paths);
    let throttled = throttled(&set);
    let ups = ups_state(inputs, sources, &set);
    let rtcs = rtcs(&set);
    let watchdog_devices = watchdog_devices(paths);
    let interfaces = config::list_names(&paths.sys("class/net"));

    Facts {
        mounts,
        cards,
        journaled,
        swaps,
        space,
        unmeasured,
        journald: config::load_daemon_config(paths, "journald.conf"),
        logrotate,
        throttled,
        temperature: samples(&set, "rpi_soc_temperature_celsius")
            .first()
            .map(|s| s.value),
        temperature_limit: samples(&set, "rpi_soc_temperature_limit_celsius")
            .first()
            .map(|s| s.value),
        ups,
        rtcs,
        synchronized: samples(&set, "rpi_time_synchronized")
            .first()
            .map(|s| s.value != 0.0),
        chrony: config::load_chrony(paths),
        chrony_enabled: chrony_enabled(paths),
        timesyncd_enabled: config::unit_enabled(paths, "systemd-timesyncd.service"),
        watchdog_devices,
        system_conf: config::load_daemon_config(paths, "system.conf"),
        units: UNITS
            .iter()
            .map(|name| (*name, config::load_unit(paths, name)))
            .collect(),
        interfaces,
        sshd: config::load_sshd(paths),
        rated_endurance: (inputs.context.options.storage.rated_endurance.iter())
            .map(|(device, _)| device.clone())
            .collect(),
        shutdown: shutdown_record(inputs),
        reset_cause: history::boot_reset(paths).map(|(boot, _)| (boot.cause, boot.source)),
        firewall: firewall(paths),
        served: served(inputs),
    }
}

/// The mount table, with mount points relative to the rootfs prefix and aliased sources
/// (`/dev/root`) under their kernel names, so the checks can match them to cards.
fn mounts(paths: &crate::paths::Paths) -> Fact<Vec<Mount>> {
    config::read_optional(&paths.proc("self/mounts")).and_then(|text| {
        let text = text.ok_or_else(|| "no mount table (proc/self/mounts)".to_owned())?;
        let (mut mounts, _) = filesystem::parse_mounts(&text);
        let kernel_names = kernel_names(paths);
        for mount in &mut mounts {
            mount.mountpoint = paths.strip_rootfs(&mount.mountpoint).to_owned();
            if let Some(name) = kernel_names.get(&mount.device) {
                mount.device = format!("/dev/{name}");
            }
        }
        Ok(mounts)
    })
}

/// The SD cards and eMMCs the storage collector found, with their wear.
fn cards(set: &MetricSet) -> Vec<Card> {
    samples(set, "rpi_mmc_info")
        .iter()
        .filter_map(|s| {
            let device = s.label("device")?.to_owned();
            let life_used = samples(set, "rpi_mmc_life_time_used_ratio")
                .iter()
                .filter(|l| l.label("device") == Some(device.as_str()))
                .map(|l| l.value)
                .reduce(f64::max);
            Some(Card {
                kind: s.label("type")?.to_owned(),
                life_used,
                pre_eol: value_where(set, "rpi_mmc_pre_eol_state", "device", &device),
                device,
            })
        })
        .collect()
}

/// The block devices with an ext4 journal.
fn journaled(paths: &crate::paths::Paths) -> Fact<Vec<String>> {
    // The directory exists whenever the kernel has jbd2, journals or not; a procfs without it
    // (a container's, a partial tree) cannot tell.
    let jbd2 = paths.proc("fs/jbd2");
    if config::exists(&jbd2) {
        config::list_names(&jbd2)
    } else {
        Err(format!(
            "no {}: cannot tell which ext4 filesystems have a journal",
            jbd2.display()
        ))
    }
    .map(|names| {
        names
            .into_iter()
            // `mmcblk0p2-8`: the device and the journal's inode.
            .filter_map(|n| n.rsplit_once('-').map(|(dev, _)| dev.to_owned()))
            .collect()
    })
}

/// The swap areas; a malformed line fails the fact rather than hide an area.
fn swaps(paths: &crate::paths::Paths) -> Fact<Vec<SwapArea>> {
    config::read_optional(&paths.proc("swaps")).and_then(|text| {
        let text = text.ok_or_else(|| "no proc/swaps".to_owned())?;
        let (areas, malformed) = system::parse_swaps(&text);
        if malformed > 0 {
            return Err(format!("{malformed} malformed line(s) in proc/swaps"));
        }
        Ok(areas)
    })
}

/// Size and available bytes of each filesystem the filesystem collector measured.
fn space(set: &MetricSet) -> Vec<Space> {
    samples(set, "rpi_filesystem_size_bytes")
        .iter()
        .filter_map(|s| {
            let mountpoint = s.label("mountpoint")?;
            Some(Space {
                mountpoint: mountpoint.to_owned(),
                size: s.value,
                avail: value_where(set, "rpi_filesystem_avail_bytes", "mountpoint", mountpoint)?,
            })
        })
        .collect()
}

/// Mount points the filesystem collector listed (every mount has `readonly`) without a size.
fn unmeasured(set: &MetricSet) -> Vec<String> {
    samples(set, "rpi_filesystem_readonly")
        .iter()
        .filter_map(|s| s.label("mountpoint"))
        .filter(|mp| value_where(set, "rpi_filesystem_size_bytes", "mountpoint", mp).is_none())
        .map(str::to_owned)
        .collect()
}

/// Whether logrotate is configured and something runs it.
fn logrotate(paths: &crate::paths::Paths) -> Fact<Logrotate> {
    // Debian's cron script does nothing where systemd runs (the timer's job then).
    let cron = config::read_optional(&paths.rooted("/etc/cron.daily/logrotate"))?
        .is_some_and(|script| !script.contains("/run/systemd/system"));
    Ok(Logrotate {
        config: config::read_optional(&paths.rooted("/etc/logrotate.conf"))?.is_some(),
        scheduled: config::unit_enabled(paths, "logrotate.timer")? || cron,
    })
}

/// The firmware's throttling conditions, now and since boot.
fn throttled(set: &MetricSet) -> Vec<Condition> {
    samples(set, "rpi_throttled")
        .iter()
        .filter_map(|s| {
            let name = s.label("condition")?;
            Some(Condition {
                name: name.to_owned(),
                now: s.value != 0.0,
                since_boot: value_where(set, "rpi_throttled_since_boot", "condition", name)
                    .map(|v| v != 0.0),
            })
        })
        .collect()
}

/// Whether a UPS is configured and, if so, on battery.
fn ups_state(inputs: &Inputs, sources: &Sources, set: &MetricSet) -> UpsState {
    if let Some(reason) = &inputs.ups_unknown {
        UpsState::Unknown(reason.clone())
    } else if sources.ups_configured {
        // Several UPSes: on battery if any is.
        let readings = samples(set, "rpi_ups_on_battery");
        UpsState::OnBattery((!readings.is_empty()).then(|| readings.iter().any(|s| s.value != 0.0)))
    } else {
        UpsState::NotConfigured
    }
}

/// The real-time clocks the RTC collector found.
fn rtcs(set: &MetricSet) -> Vec<Rtc> {
    samples(set, "rpi_rtc_time_valid")
        .iter()
        .filter_map(|s| {
            let device = s.label("device")?;
            Some(Rtc {
                device: device.to_owned(),
                valid: s.value != 0.0,
                hctosys: value_where(set, "rpi_rtc_hctosys", "device", device).map(|v| v != 0.0),
            })
        })
        .collect()
}

/// The watchdog device nodes under devfs.
fn watchdog_devices(paths: &crate::paths::Paths) -> Fact<Vec<String>> {
    config::list_names(&paths.devfs).map(|names| {
        names
            .into_iter()
            .filter(|n| n.starts_with("watchdog"))
            .collect()
    })
}

/// chrony enabled under either name its unit goes by (`chrony.service`, `chronyd.service`).
fn chrony_enabled(paths: &crate::paths::Paths) -> Fact<bool> {
    config::unit_enabled(paths, "chrony.service")
        .and_then(|enabled| Ok(enabled || config::unit_enabled(paths, "chronyd.service")?))
}

/// How the exporter is exposed and what its web configuration protects it with.
fn served(inputs: &Inputs) -> Fact<Served> {
    inputs.exposure.clone().and_then(|exposure| {
        let protection = match &exposure.web_config {
            Some(path) => Some(
                serving::web_config::protection(path)
                    .map_err(|e| format!("web configuration unusable: {e}"))?,
            ),
            None => None,
        };
        Ok(Served {
            exposure,
            protection,
        })
    })
}

/// The kernel names of mount sources that are aliases (`/dev/root`, `/dev/mapper/*`), through
/// their device numbers in `<procfs>/self/mountinfo` and the links of `<sysfs>/dev/block`; an
/// alias that cannot be resolved stays as it is (the checks then SKIP).
fn kernel_names(paths: &crate::paths::Paths) -> std::collections::HashMap<String, String> {
    let mut names = std::collections::HashMap::new();
    let Ok(Some(text)) = config::read_optional(&paths.proc("self/mountinfo")) else {
        return names;
    };
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(numbers), Some(source)) = (fields.get(2), fields.get(dash + 2)) else {
            continue;
        };
        if !(*source == "/dev/root" || source.starts_with("/dev/mapper/")) {
            continue;
        }
        if let Ok(target) = std::fs::read_link(paths.sys(&format!("dev/block/{numbers}")))
            && let Some(name) = target.file_name().and_then(|n| n.to_str())
        {
            names.insert((*source).to_owned(), name.to_owned());
        }
    }
    names
}

fn firewall(paths: &crate::paths::Paths) -> Fact<Firewall> {
    let mut found = Firewall::default();
    let nft_conf = config::read_optional(&paths.rooted("/etc/nftables.conf"))?;
    let nft_enabled = config::unit_enabled(paths, "nftables.service")?;
    let nft_input = nft_conf.as_deref().is_some_and(nft_filters_input);
    found.nftables = nft_enabled && nft_input;
    if nft_conf.is_some() && !found.nftables {
        found.notes.push(
            if nft_enabled {
                "nftables.service enabled but /etc/nftables.conf has no input hook chain that drops or rejects"
            } else {
                "/etc/nftables.conf present but nftables.service not enabled"
            }
            .to_owned(),
        );
    }
    if let Some(text) = config::read_optional(&paths.rooted("/etc/ufw/ufw.conf"))? {
        found.ufw = config::parse_environment_file(&text)
            .get("ENABLED")
            .is_some_and(|v| v.eq_ignore_ascii_case("yes"));
        if !found.ufw {
            found.notes.push("ufw installed but not enabled".to_owned());
        }
    }
    found.firewalld = config::unit_enabled(paths, "firewalld.service")?;
    if config::unit_enabled(paths, "netfilter-persistent.service")? {
        let rules = config::read_optional(&paths.rooted("/etc/iptables/rules.v4"))?;
        found.iptables_persistent = rules.as_deref().is_some_and(|r| {
            r.lines()
                .any(|l| l.starts_with("-A INPUT") || l.starts_with(":INPUT DROP"))
        });
    }
    // The legacy iptables tables the kernel has loaded (Docker's NAT table counts too, so this
    // alone proves no filtering).
    if let Ok(Some(tables)) = config::read_optional(&paths.proc("net/ip_tables_names"))
        && !tables.trim().is_empty()
    {
        found.notes.push(format!(
            "iptables tables loaded: {}",
            tables.split_whitespace().collect::<Vec<_>>().join(",")
        ));
    }
    Ok(found)
}

/// Whether an nftables ruleset has a chain on the input hook that filters: `policy drop` or a
/// `drop`/`reject` rule. Debian's default file has an input chain that accepts everything.
pub(crate) fn nft_filters_input(text: &str) -> bool {
    let text: String = text
        .lines()
        .map(|line| line.split_once('#').map_or(line, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n");
    // Each `chain NAME { ... }` body, by brace depth.
    let mut filters = false;
    let mut rest = text.as_str();
    while let Some(at) = find_word(rest, "chain") {
        let after = &rest[at + "chain".len()..];
        let Some(open) = after.find('{') else {
            break;
        };
        let mut depth = 0usize;
        let mut end = after.len();
        for (i, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let body: Vec<&str> = after[open + 1..end]
            .split(|c: char| c.is_whitespace() || matches!(c, ';' | '{' | '}'))
            .filter(|t| !t.is_empty())
            .collect();
        let input = body.windows(2).any(|w| w == ["hook", "input"]);
        let drops = body.windows(2).any(|w| w == ["policy", "drop"])
            || body.iter().enumerate().any(|(i, t)| {
                matches!(*t, "drop" | "reject") && (i == 0 || body[i - 1] != "policy")
            });
        filters |= input && drops;
        rest = &after[end.min(after.len())..];
    }
    filters
}

/// The byte offset of `word` standing alone (not inside another word) in `text`.
fn find_word(text: &str, word: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = text[from..].find(word).map(|i| i + from) {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        let boundary = |c: Option<char>| c.is_none_or(|c| !c.is_alphanumeric() && c != '_');
        if boundary(before) && boundary(after) {
            return Some(i);
        }
        from = i + word.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::nft_filters_input;

    #[test]
    fn an_input_chain_must_drop_or_reject() {
        // Debian's default /etc/nftables.conf.
        let debian = "#!/usr/sbin/nft -f\n\nflush ruleset\n\ntable inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter;\n\t}\n\tchain forward {\n\t\ttype filter hook forward priority filter;\n\t}\n\tchain output {\n\t\ttype filter hook output priority filter;\n\t}\n}\n";
        assert!(!nft_filters_input(debian));
        let commented = "table inet filter {\n chain input {\n  type filter hook input priority 0; # policy drop;\n }\n}\n";
        assert!(!nft_filters_input(commented));
        let accept = "table inet filter { chain input { type filter hook input priority 0; policy accept; } }";
        assert!(!nft_filters_input(accept));
        let forward_drop = "table inet filter { chain input { type filter hook input priority 0; } chain forward { type filter hook forward priority 0; policy drop; } }";
        assert!(!nft_filters_input(forward_drop));
        let policy = "table inet filter { chain input { type filter hook input priority 0; policy drop; iif lo accept } }";
        assert!(nft_filters_input(policy));
        let rule = "table inet filter {\n chain input {\n  type filter hook input priority 0;\n  iif lo accept\n  tcp dport 22 accept\n  reject with icmpx type port-unreachable\n }\n}\n";
        assert!(nft_filters_input(rule));
    }
}
