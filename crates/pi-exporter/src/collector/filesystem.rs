//! `filesystem`: size, free space, inodes and read-only state of every real mount.
//!
//! Mounts come from `<procfs>/self/mountinfo` (or `self/mounts`, see below); sizes from `statvfs` on the mount point seen through
//! `--path.rootfs`. `statvfs` runs on a worker thread and is waited for at most
//! `--collector.filesystem.mount-timeout`: a mount whose call does not return (dead NFS server,
//! wedged USB disk) is reported with `rpi_filesystem_device_error 1` and skipped on later scrapes
//! until that call finally returns.
//!
//! The exception: a mount of a type that answers `statvfs` from counters in memory
//! ([`IN_MEMORY_STATFS`]), not at an automount point (an `autofs` entry for the same target),
//! once one call of it has returned through the worker, is asked directly. When every mount of
//! the last scrape was such a one and the mount table is the one that scrape read, the collector
//! does not block ([`Collector::may_block`]) and runs on the serving thread; a changed table
//! (a new mount) sends the scrape to the pool, which measures the new mount through the worker.
//! A run on the serving thread never waits for the worker: a mount that appeared in the
//! microseconds between that check and the run is reported without sizes or `device_error` (not
//! a failure: it is measured by the next scrape, on the pool).
//! Mounts are recognised by their mount ID (`<procfs>/self/mountinfo`; a procfs without it, such
//! as some fixture trees, is read through `self/mounts` and mounts are recognised by device and
//! mount point), so a different filesystem mounted at the same place is a new mount.

use std::collections::{HashSet, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use clap::{Arg, ArgMatches};
use regex_lite::Regex;

use super::flags::{self, FlagError};
use super::parse::{Failures, parse_lines, unescape_octal};
use super::{BuildContext, CollectError, Collector};
use crate::metrics::MetricSet;
use crate::paths::Paths;

/// node_exporter's defaults, so the same mounts appear in both.
pub const DEFAULT_MOUNT_POINTS_EXCLUDE: &str =
    "^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)";
pub const DEFAULT_FS_TYPES_EXCLUDE: &str = "^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|erofs|sysfs|tracefs)$";

/// Filesystem types whose `statvfs` reads counters the kernel keeps in memory for the mount, so
/// it cannot wait on a disk or a server, once a first call has returned (vfat and exfat count
/// their free clusters on disk at the first call after mounting). Network and FUSE filesystems
/// ask their server on every call; every type not listed is treated like them.
pub const IN_MEMORY_STATFS: &[&str] = &[
    "btrfs", "exfat", "ext2", "ext3", "ext4", "f2fs", "msdos", "ramfs", "tmpfs", "vfat", "xfs",
];

/// Below this share of available space a filesystem is low (`/health` flags it, the doctor's
/// `free_space` fails).
pub const LOW_SPACE_RATIO: f64 = 0.15;

#[derive(Debug, Clone)]
pub struct Options {
    pub mount_points_exclude: Regex,
    pub mount_points_include: Option<Regex>,
    pub fs_types_exclude: Regex,
    pub fs_types_include: Option<Regex>,
    pub mount_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            mount_points_exclude: Regex::new(DEFAULT_MOUNT_POINTS_EXCLUDE)
                .expect("valid default regex"),
            mount_points_include: None,
            fs_types_exclude: Regex::new(DEFAULT_FS_TYPES_EXCLUDE).expect("valid default regex"),
            fs_types_include: None,
            mount_timeout: Duration::from_secs(2),
        }
    }
}

/// The filesystem collector's flags.
pub fn args() -> Vec<Arg> {
    vec![
        Arg::new("collector.filesystem.mount-points-exclude")
            .long("collector.filesystem.mount-points-exclude")
            .value_name("REGEX")
            .default_value(DEFAULT_MOUNT_POINTS_EXCLUDE)
            .value_parser(flags::regex)
            .help("Mount points to leave out"),
        Arg::new("collector.filesystem.mount-points-include")
            .long("collector.filesystem.mount-points-include")
            .value_name("REGEX")
            .value_parser(flags::regex)
            .help("Only these mount points (applied before the exclude)"),
        Arg::new("collector.filesystem.fs-types-exclude")
            .long("collector.filesystem.fs-types-exclude")
            .value_name("REGEX")
            .default_value(DEFAULT_FS_TYPES_EXCLUDE)
            .value_parser(flags::regex)
            .help("Filesystem types to leave out"),
        Arg::new("collector.filesystem.fs-types-include")
            .long("collector.filesystem.fs-types-include")
            .value_name("REGEX")
            .value_parser(flags::regex)
            .help("Only these filesystem types (applied before the exclude)"),
        Arg::new("collector.filesystem.mount-timeout")
            .long("collector.filesystem.mount-timeout")
            .value_name("DURATION")
            .default_value("2s")
            .value_parser(serving::duration::parse)
            .help("How long to wait for statvfs on one mount before marking it stuck"),
    ]
}

/// `--collector.filesystem.*` into [`Options`].
pub fn options(m: &ArgMatches) -> Result<Options, FlagError> {
    let defaults = Options::default();
    Ok(Options {
        mount_points_exclude: flags::one(m, "collector.filesystem.mount-points-exclude")?
            .unwrap_or(defaults.mount_points_exclude),
        mount_points_include: flags::regex_unless_empty(
            m,
            "collector.filesystem.mount-points-include",
        )?,
        fs_types_exclude: flags::one(m, "collector.filesystem.fs-types-exclude")?
            .unwrap_or(defaults.fs_types_exclude),
        fs_types_include: flags::regex_unless_empty(m, "collector.filesystem.fs-types-include")?,
        mount_timeout: flags::one(m, "collector.filesystem.mount-timeout")?
            .unwrap_or(defaults.mount_timeout),
    })
}

impl Options {
    fn wants(&self, mount: &Mount) -> bool {
        let mp = mount.mountpoint.as_str();
        let fs = mount.fstype.as_str();
        self.mount_points_include
            .as_ref()
            .is_none_or(|re| re.is_match(mp))
            && !self.mount_points_exclude.is_match(mp)
            && self
                .fs_types_include
                .as_ref()
                .is_none_or(|re| re.is_match(fs))
            && !self.fs_types_exclude.is_match(fs)
    }
}

/// One line of `/proc/self/mounts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub device: String,
    pub mountpoint: String,
    pub fstype: String,
    pub readonly: bool,
    /// The mount options as the kernel lists them (`rw,noatime,data=journal`).
    pub options: String,
}

/// Parses the mounts table; lines that are not four or more fields are reported, not fatal.
pub fn parse_mounts(text: &str) -> (Vec<Mount>, usize) {
    parse_lines(text.lines(), |line| {
        let mut fields = line.split_ascii_whitespace();
        let (device, mountpoint, fstype, options) = (
            fields.next()?,
            fields.next()?,
            fields.next()?,
            fields.next()?,
        );
        Some(Mount {
            device: unescape_octal(device),
            mountpoint: unescape_octal(mountpoint),
            fstype: fstype.to_owned(),
            readonly: options.split(',').any(|o| o == "ro"),
            options: options.to_owned(),
        })
    })
}

/// Parses `/proc/self/mountinfo` into each mount's ID and the [`Mount`] `/proc/self/mounts`
/// would list (read-only when the mount or its superblock is); malformed lines are counted.
pub fn parse_mountinfo(text: &str) -> (Vec<(String, Mount)>, usize) {
    parse_lines(text.lines(), |line| {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        let dash = fields.iter().skip(6).position(|f| *f == "-")? + 6;
        let (id, mountpoint, mount_options) = (fields[0], fields.get(4)?, fields.get(5)?);
        let (fstype, device, super_options) = (
            fields.get(dash + 1)?,
            fields.get(dash + 2)?,
            fields.get(dash + 3)?,
        );
        let readonly = [mount_options, super_options]
            .iter()
            .any(|o| o.split(',').any(|o| o == "ro"));
        let rest = mount_options
            .split(',')
            .chain(super_options.split(','))
            .filter(|o| !matches!(*o, "ro" | "rw" | ""));
        let options = std::iter::once(if readonly { "ro" } else { "rw" })
            .chain(rest)
            .collect::<Vec<_>>()
            .join(",");
        Some((
            id.to_owned(),
            Mount {
                device: unescape_octal(device),
                mountpoint: unescape_octal(mountpoint),
                fstype: (*fstype).to_owned(),
                readonly,
                options,
            },
        ))
    })
}

/// What `statvfs` says about a filesystem, in bytes and inodes (also a board file's
/// `filesystems:` entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsStats {
    pub size_bytes: u64,
    pub free_bytes: u64,
    pub avail_bytes: u64,
    pub files: u64,
    pub files_free: u64,
}

/// The `statvfs` call, replaceable so tests can simulate a mount that never answers.
pub trait StatFs: Send + Sync + 'static {
    fn statvfs(&self, path: &Path) -> io::Result<FsStats>;
}

/// The real `statvfs(2)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SysStatFs;

impl StatFs for SysStatFs {
    fn statvfs(&self, path: &Path) -> io::Result<FsStats> {
        let st = rustix::fs::statvfs(path).map_err(io::Error::from)?;
        let frsize = st.f_frsize;
        Ok(FsStats {
            size_bytes: st.f_blocks.saturating_mul(frsize),
            free_bytes: st.f_bfree.saturating_mul(frsize),
            avail_bytes: st.f_bavail.saturating_mul(frsize),
            files: st.f_files,
            files_free: st.f_ffree,
        })
    }
}

/// A board file's `filesystems:` answers by mount point; `statvfs` for the others.
#[derive(Debug)]
struct SimulatedStatFs {
    paths: Paths,
    mounts: std::collections::BTreeMap<String, FsStats>,
}

impl StatFs for SimulatedStatFs {
    fn statvfs(&self, path: &Path) -> io::Result<FsStats> {
        let mountpoint = path
            .to_str()
            .map(|p| self.paths.strip_rootfs(p).to_owned())
            .unwrap_or_default();
        match self.mounts.get(&mountpoint) {
            Some(stats) => Ok(*stats),
            None => SysStatFs.statvfs(path),
        }
    }
}

/// One `statvfs` result, tagged with the index of its mount in the batch.
type StatReply = mpsc::Sender<(usize, io::Result<FsStats>)>;

/// A thread that runs a scrape's `statvfs` calls one after another (one hand-off per scrape, not
/// per mount), replaced when one of them hangs.
#[derive(Debug)]
struct StatWorker {
    jobs: mpsc::Sender<(Vec<(usize, PathBuf)>, StatReply)>,
}

impl StatWorker {
    fn spawn(statfs: Arc<dyn StatFs>, stuck: Arc<Mutex<HashSet<PathBuf>>>) -> io::Result<Self> {
        let (jobs, rx) = mpsc::channel::<(Vec<(usize, PathBuf)>, StatReply)>();
        std::thread::Builder::new()
            .name("statvfs".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                for (batch, reply) in rx {
                    for (index, path) in batch {
                        let result = statfs.statvfs(&path);
                        // If the collector gave up on this call, the mount is usable again now.
                        // Unmarked and answered under one lock, so a collector that times out
                        // at this moment either sees the answer or has its mark removed.
                        let mut stuck = stuck.lock().unwrap_or_else(PoisonError::into_inner);
                        stuck.remove(&path);
                        if reply.send((index, result)).is_err() {
                            // The collector moved on without us (we were stuck): drop the rest.
                            break;
                        }
                    }
                }
            })?;
        Ok(Self { jobs })
    }
}

pub struct FilesystemCollector {
    paths: Paths,
    options: Options,
    statfs: Arc<dyn StatFs>,
    worker: Mutex<Option<StatWorker>>,
    stuck: Arc<Mutex<HashSet<PathBuf>>>,
    /// The mounts selected from the last mount table read, keyed by its text: the table rarely
    /// changes, and parsing and filtering it (two regexes per mount) is most of this collector's
    /// own work.
    selection: Mutex<Option<Arc<Selection>>>,
    /// Mounts (mount ID or device, target) of an [`IN_MEMORY_STATFS`] type whose `statvfs` has returned
    /// through the worker: asked directly from now on.
    answered: Mutex<HashSet<(String, PathBuf)>>,
    /// Every mount of the last scrape was in `answered`: the next scrape cannot block.
    all_answered: AtomicBool,
    /// `may_block`'s last check found a mount table other than the selection's: the run it
    /// announced is on the pool and measures the new mounts through the worker.
    table_changed: AtomicBool,
}

/// The mounts to report, derived from one version of the mount table.
#[derive(Debug, Clone)]
struct Selection {
    table: String,
    mounts: Vec<Mount>,
    /// Per mount: what identifies it in `answered`: its mount ID from `mountinfo` (a new mount
    /// at the same place under the same device name gets a new one), else its device.
    ids: Vec<String>,
    /// Per mount: its mount point is also an `autofs` trigger.
    automounted: Vec<bool>,
    malformed: usize,
}

impl std::fmt::Debug for FilesystemCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilesystemCollector")
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

enum StatOutcome {
    Stats(FsStats),
    Failed(String),
    /// New since the last scrape, seen by a run on the serving thread, which does not wait for
    /// the worker: measured by the next scrape, on the blocking pool.
    NotMeasured,
}

impl FilesystemCollector {
    pub fn new(ctx: &BuildContext) -> Self {
        match ctx.board.as_ref().and_then(|b| b.filesystems.clone()) {
            Some(mounts) => Self::with_statfs(
                ctx,
                Arc::new(SimulatedStatFs {
                    paths: ctx.paths.clone(),
                    mounts,
                }),
            ),
            None => Self::with_statfs(ctx, Arc::new(SysStatFs)),
        }
    }

    pub fn with_statfs(ctx: &BuildContext, statfs: Arc<dyn StatFs>) -> Self {
        let mounts_path = ctx.paths.proc("self/mounts");
        if !mounts_path.exists() {
            tracing::warn!(path = %mounts_path.display(), "filesystem: mount table not found");
        }
        Self {
            paths: ctx.paths.clone(),
            options: ctx.options.filesystem.clone(),
            statfs,
            worker: Mutex::new(None),
            stuck: Arc::new(Mutex::new(HashSet::new())),
            selection: Mutex::new(None),
            answered: Mutex::new(HashSet::new()),
            all_answered: AtomicBool::new(false),
            table_changed: AtomicBool::new(false),
        }
    }

    /// `statvfs` on every path: those marked `direct` here, the others on the worker, each
    /// waited for at most the mount timeout. Without `wait` (a run on the serving thread), only
    /// the direct ones are asked and the others are not measured.
    fn stat_all(&self, paths: &[PathBuf], direct: &[bool], wait: bool) -> Vec<StatOutcome> {
        let mut outcomes: Vec<Option<StatOutcome>> = paths.iter().map(|_| None).collect();
        let mut pending: VecDeque<usize> = VecDeque::with_capacity(paths.len());
        let mut here = Vec::new();
        {
            let stuck = self.stuck.lock().unwrap_or_else(PoisonError::into_inner);
            for (index, path) in paths.iter().enumerate() {
                if direct[index] {
                    here.push(index);
                } else if stuck.contains(path) {
                    outcomes[index] = Some(StatOutcome::Failed(
                        "an earlier statvfs is still hanging".into(),
                    ));
                } else if !wait {
                    outcomes[index] = Some(StatOutcome::NotMeasured);
                } else {
                    pending.push_back(index);
                }
            }
        }
        let mut worker = self.worker.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(&first) = pending.front() {
            let jobs = match worker.as_ref() {
                Some(w) => w.jobs.clone(),
                None => {
                    match StatWorker::spawn(Arc::clone(&self.statfs), Arc::clone(&self.stuck)) {
                        Ok(w) => worker.insert(w).jobs.clone(),
                        Err(e) => {
                            let reason = format!("cannot start statvfs thread: {e}");
                            for index in pending.drain(..) {
                                outcomes[index] = Some(StatOutcome::Failed(reason.clone()));
                            }
                            break;
                        }
                    }
                }
            };
            let (reply, answers) = mpsc::channel();
            let batch = pending.iter().map(|&i| (i, paths[i].clone())).collect();
            if jobs.send((batch, reply)).is_err() {
                // The thread died; the next round starts a new one.
                *worker = None;
                outcomes[first] = Some(StatOutcome::Failed("statvfs thread exited".into()));
                pending.pop_front();
                continue;
            }
            // While the worker runs, the direct ones are asked here.
            for index in here.drain(..) {
                outcomes[index] = Some(self.stat_here(&paths[index]));
            }
            // Results arrive in batch order, so a timeout blames the mount at the front.
            while let Some(&expected) = pending.front() {
                match answers.recv_timeout(self.options.mount_timeout) {
                    Ok((index, result)) => {
                        outcomes[index] = Some(match result {
                            Ok(stats) => StatOutcome::Stats(stats),
                            Err(e) => StatOutcome::Failed(e.to_string()),
                        });
                        pending.retain(|&i| i != index);
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        // Leave the hung thread behind (it clears the mark when its call
                        // returns); the remaining mounts get a fresh one in the next round.
                        let mut stuck = self.stuck.lock().unwrap_or_else(PoisonError::into_inner);
                        stuck.insert(paths[expected].clone());
                        // The call returned between the timeout and the mark: nothing will
                        // clear the mark later.
                        if answers.try_recv().is_ok() {
                            stuck.remove(&paths[expected]);
                        }
                        drop(stuck);
                        outcomes[expected] = Some(StatOutcome::Failed(format!(
                            "statvfs did not return within {:?}",
                            self.options.mount_timeout
                        )));
                        pending.pop_front();
                        *worker = None;
                        break;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        *worker = None;
                        outcomes[expected] =
                            Some(StatOutcome::Failed("statvfs thread exited".into()));
                        pending.pop_front();
                        break;
                    }
                }
            }
        }
        for index in here {
            outcomes[index] = Some(self.stat_here(&paths[index]));
        }
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| StatOutcome::Failed("not measured".into())))
            .collect()
    }

    fn stat_here(&self, path: &Path) -> StatOutcome {
        match self.statfs.statvfs(path) {
            Ok(stats) => StatOutcome::Stats(stats),
            Err(e) => StatOutcome::Failed(e.to_string()),
        }
    }

    /// Which mounts are asked directly; remembers the in-memory ones that just answered.
    fn note_answers(&self, keys: Vec<(String, PathBuf)>, fast: &[bool], outcomes: &[StatOutcome]) {
        let mut answered = self.answered.lock().unwrap_or_else(PoisonError::into_inner);
        let mut current = HashSet::with_capacity(keys.len());
        for ((key, &fast), outcome) in keys.into_iter().zip(fast).zip(outcomes) {
            if fast && matches!(outcome, StatOutcome::Stats(_)) {
                answered.insert(key.clone());
            }
            current.insert(key);
        }
        // Forget unmounted ones, so a new filesystem at the same place starts over.
        answered.retain(|key| current.contains(key));
        self.all_answered
            .store(answered.len() == current.len(), Ordering::Release);
    }
}

impl FilesystemCollector {
    /// The mount table: `mountinfo` for the mount IDs; a procfs without it (some fixture trees)
    /// has `mounts`. Returns its path, its text and whether it is `mountinfo`.
    fn read_table(&self) -> Result<(PathBuf, String, bool), CollectError> {
        let info_path = self.paths.proc("self/mountinfo");
        match std::fs::read_to_string(&info_path) {
            Ok(text) => Ok((info_path, text, true)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let path = self.paths.proc("self/mounts");
                let text =
                    std::fs::read_to_string(&path).map_err(|e| CollectError::io(&path, e))?;
                Ok((path, text, false))
            }
            Err(e) => Err(CollectError::io(&info_path, e)),
        }
    }

    /// The mounts to report from this mount table (`mountinfo` when `info`, else `mounts`).
    fn select(&self, table: String, info: bool) -> Arc<Selection> {
        let mut cache = self
            .selection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(selection) = cache.as_ref().filter(|s| s.table == table) {
            return Arc::clone(selection);
        }
        let (mounts, malformed) = if info {
            parse_mountinfo(&table)
        } else {
            let (mounts, malformed) = parse_mounts(&table);
            let keyed = mounts.into_iter().map(|m| (m.device.clone(), m)).collect();
            (keyed, malformed)
        };
        let autofs: HashSet<String> = mounts
            .iter()
            .filter(|(_, m)| m.fstype == "autofs")
            .map(|(_, m)| self.paths.strip_rootfs(&m.mountpoint).to_owned())
            .collect();
        // A mount point mounted over shows up twice; the last entry is the visible one.
        let mut seen = HashSet::new();
        let mut selected = Vec::new();
        let mut ids = Vec::new();
        for (id, mut mount) in mounts.into_iter().rev() {
            mount.mountpoint = self.paths.strip_rootfs(&mount.mountpoint).to_owned();
            if self.options.wants(&mount) && seen.insert(mount.mountpoint.clone()) {
                selected.push(mount);
                ids.push(id);
            }
        }
        selected.reverse();
        ids.reverse();
        let automounted = selected
            .iter()
            .map(|m| autofs.contains(&m.mountpoint))
            .collect();
        let selection = Arc::new(Selection {
            table,
            mounts: selected,
            ids,
            automounted,
            malformed,
        });
        *cache = Some(Arc::clone(&selection));
        selection
    }
}

impl Collector for FilesystemCollector {
    fn collect(&self, out: &mut MetricSet) -> Result<(), CollectError> {
        // What `may_block` answered for this run (the scraper checks it under the run lock
        // before an inline run): a run on the serving thread never waits for the worker.
        let wait = !self.all_answered.load(Ordering::Acquire)
            || self.table_changed.load(Ordering::Acquire);
        let (path, text, info) = self.read_table()?;
        let selection = self.select(text, info);
        let (selected, automounted, malformed) = (
            &selection.mounts,
            &selection.automounted,
            selection.malformed,
        );

        let targets: Vec<PathBuf> = selected
            .iter()
            .map(|m| self.paths.rooted(&m.mountpoint))
            .collect();
        let keys: Vec<(String, PathBuf)> = selection
            .ids
            .iter()
            .zip(&targets)
            .map(|(id, t)| (id.clone(), t.clone()))
            .collect();
        // An automount point may have expired since the table was read: asking it mounts the
        // filesystem again, so it is never asked directly.
        let fast: Vec<bool> = selected
            .iter()
            .zip(automounted)
            .map(|(m, &auto)| !auto && IN_MEMORY_STATFS.contains(&m.fstype.as_str()))
            .collect();
        let direct: Vec<bool> = {
            let answered = self.answered.lock().unwrap_or_else(PoisonError::into_inner);
            keys.iter().map(|k| answered.contains(k)).collect()
        };
        let outcomes = self.stat_all(&targets, &direct, wait);
        self.note_answers(keys, &fast, &outcomes);

        let mut failures = Failures::default();
        for (mount, outcome) in selected.iter().zip(outcomes) {
            let labels = || {
                vec![
                    ("device", mount.device.clone()),
                    ("fstype", mount.fstype.clone()),
                    ("mountpoint", mount.mountpoint.clone()),
                ]
            };
            out.gauge(
                "rpi_filesystem_readonly",
                "Whether the filesystem is mounted read-only (1), as a Pi remounts its root after corruption",
            )
            .sample_owned(labels(), f64::from(u8::from(mount.readonly)));
            if !matches!(outcome, StatOutcome::NotMeasured) {
                let error = matches!(outcome, StatOutcome::Failed(_));
                out.gauge(
                    "rpi_filesystem_device_error",
                    "Whether statvfs on the mount failed or did not return (1)",
                )
                .sample_owned(labels(), f64::from(u8::from(error)));
            }
            match outcome {
                StatOutcome::Stats(st) => {
                    let values = [
                        (
                            "rpi_filesystem_size_bytes",
                            "Filesystem size in bytes",
                            st.size_bytes,
                        ),
                        (
                            "rpi_filesystem_free_bytes",
                            "Free bytes, including those reserved for root",
                            st.free_bytes,
                        ),
                        (
                            "rpi_filesystem_avail_bytes",
                            "Bytes available to unprivileged users",
                            st.avail_bytes,
                        ),
                        ("rpi_filesystem_files", "Total inodes", st.files),
                        ("rpi_filesystem_files_free", "Free inodes", st.files_free),
                    ];
                    for (name, help, value) in values {
                        #[allow(clippy::cast_precision_loss)]
                        out.gauge(name, help).sample_owned(labels(), value as f64);
                    }
                }
                StatOutcome::Failed(reason) => {
                    failures.push(CollectError::Other(format!(
                        "{}: {reason}",
                        mount.mountpoint
                    )));
                }
                // Mounted between `may_block`'s look at the table and this run: the next
                // scrape measures it on the pool; nothing failed.
                StatOutcome::NotMeasured => tracing::debug!(
                    mountpoint = %mount.mountpoint,
                    "filesystem: new mount, measured from the next scrape on"
                ),
            }
        }
        failures.skipped_lines(&path, malformed);
        failures.finish()
    }

    /// Blocks until every mount is of an in-memory type, not at an automount point, and has
    /// answered once, and whenever the mount table changed since the last run (a new mount is
    /// measured through the worker by the scrape that first sees it). Reading the table here
    /// costs one read of kernel memory per scrape.
    fn may_block(&self) -> bool {
        if !self.all_answered.load(Ordering::Acquire) {
            return true;
        }
        let changed = match self.read_table() {
            Ok((_, text, _)) => self
                .selection
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .is_none_or(|s| s.table != text),
            // The run fails on the same read, at once: no reason to use the pool.
            Err(_) => false,
        };
        self.table_changed.store(changed, Ordering::Release);
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::CollectorOptions;

    const MOUNTS: &str = "\
/dev/root / ext4 ro,relatime 0 0
devtmpfs /dev devtmpfs rw,relatime,size=1800000k 0 0
proc /proc proc rw,relatime 0 0
/dev/mmcblk0p1 /boot/firmware vfat rw,relatime,fmask=0022 0 0
tmpfs /run tmpfs rw,nosuid,nodev,size=380000k,mode=755 0 0
/dev/sda1 /mnt/usb\\040disk ext4 rw,noatime 0 0
garbage-line
/dev/sda2 /mnt/over ext4 rw 0 0
/dev/sda3 /mnt/over ext4 ro 0 0
";

    #[test]
    fn parses_mounts_with_escapes_and_counts_garbage() {
        let (mounts, malformed) = parse_mounts(MOUNTS);
        assert_eq!(malformed, 1);
        assert_eq!(mounts.len(), 8);
        assert!(mounts[0].readonly);
        assert!(!mounts[3].readonly);
        assert_eq!(mounts[5].mountpoint, "/mnt/usb disk");
    }

    #[test]
    fn default_filters_drop_pseudo_filesystems_only() {
        let (mounts, _) = parse_mounts(MOUNTS);
        let options = Options::default();
        let kept: Vec<_> = mounts
            .iter()
            .filter(|m| options.wants(m))
            .map(|m| m.mountpoint.as_str())
            .collect();
        assert_eq!(
            kept,
            [
                "/",
                "/boot/firmware",
                "/run",
                "/mnt/usb disk",
                "/mnt/over",
                "/mnt/over"
            ]
        );
    }

    /// Answers instantly except for paths containing "hang", which block until released.
    struct FakeStatFs {
        release: Mutex<mpsc::Receiver<()>>,
    }

    impl StatFs for FakeStatFs {
        fn statvfs(&self, path: &Path) -> io::Result<FsStats> {
            let p = path.to_string_lossy();
            if p.contains("hang") {
                let _ = self.release.lock().map(|rx| rx.recv());
            }
            if p.contains("usb") {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            Ok(FsStats {
                size_bytes: 1000,
                free_bytes: 400,
                avail_bytes: 300,
                files: 10,
                files_free: 5,
            })
        }
    }

    fn collector(
        mounts: &str,
        statfs: Arc<dyn StatFs>,
    ) -> (tempfile::TempDir, FilesystemCollector) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("proc/self")).expect("mkdir");
        std::fs::write(dir.path().join("proc/self/mounts"), mounts).expect("write");
        let mut options = CollectorOptions::default();
        // Long enough that a healthy mount's worker is never late on a loaded machine.
        options.filesystem.mount_timeout = Duration::from_secs(1);
        let ctx = BuildContext {
            paths: Paths {
                procfs: dir.path().join("proc"),
                rootfs: "/host".into(),
                ..Paths::default()
            },
            options,
            board: None,
        };
        let c = FilesystemCollector::with_statfs(&ctx, statfs);
        (dir, c)
    }

    fn value(set: &MetricSet, name: &str, mountpoint: &str) -> Option<f64> {
        set.get(name)?
            .samples
            .iter()
            .find(|s| {
                s.labels
                    .iter()
                    .any(|(k, v)| *k == "mountpoint" && v == mountpoint)
            })
            .map(|s| s.value)
    }

    #[test]
    fn reports_each_mount_and_survives_a_hanging_and_a_failing_one() {
        let (release, rx) = mpsc::channel();
        let mounts = "/dev/root /host ext4 ro 0 0\nnfs:/x /host/hang nfs rw 0 0\n/dev/sda1 /host/usb ext4 rw 0 0\n/dev/sdb1 /host/data ext4 rw 0 0\n";
        let (_dir, c) = collector(
            mounts,
            Arc::new(FakeStatFs {
                release: Mutex::new(rx),
            }),
        );

        let mut set = MetricSet::new();
        let err = c
            .collect(&mut set)
            .expect_err("hang and EIO must fail the collector");
        assert!(err.to_string().contains("/hang"), "{err}");
        assert_eq!(value(&set, "rpi_filesystem_readonly", "/"), Some(1.0));
        assert_eq!(value(&set, "rpi_filesystem_size_bytes", "/"), Some(1000.0));
        assert_eq!(
            value(&set, "rpi_filesystem_device_error", "/hang"),
            Some(1.0)
        );
        assert_eq!(value(&set, "rpi_filesystem_size_bytes", "/hang"), None);
        assert_eq!(
            value(&set, "rpi_filesystem_device_error", "/usb"),
            Some(1.0)
        );
        // Mounts after the hung one still got a (new) worker.
        assert_eq!(
            value(&set, "rpi_filesystem_avail_bytes", "/data"),
            Some(300.0)
        );

        // While it hangs, the mount is skipped at once.
        let started = std::time::Instant::now();
        let mut again = MetricSet::new();
        let _ = c.collect(&mut again);
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "stuck mount must be skipped, not waited for: {:?}",
            started.elapsed()
        );
        assert_eq!(
            value(&again, "rpi_filesystem_device_error", "/hang"),
            Some(1.0)
        );

        // Once the call returns, the mount is measured again.
        release.send(()).expect("release");
        release.send(()).expect("release next call");
        let mut recovered = false;
        for _ in 0..500 {
            let mut set = MetricSet::new();
            let _ = c.collect(&mut set);
            if value(&set, "rpi_filesystem_device_error", "/hang") == Some(0.0) {
                recovered = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(recovered);
    }

    /// Records which thread asked for each path.
    #[derive(Default)]
    struct ThreadRecorder(Mutex<Vec<(PathBuf, Option<String>)>>);

    impl StatFs for ThreadRecorder {
        fn statvfs(&self, path: &Path) -> io::Result<FsStats> {
            let thread = std::thread::current().name().map(str::to_owned);
            self.0.lock().expect("lock").push((path.to_owned(), thread));
            Ok(FsStats {
                size_bytes: 1,
                free_bytes: 1,
                avail_bytes: 1,
                files: 1,
                files_free: 1,
            })
        }
    }

    #[test]
    fn in_memory_filesystems_are_asked_directly_once_they_have_answered() {
        let recorder = Arc::new(ThreadRecorder::default());
        let (dir, c) = collector(
            "/dev/root /host ext4 rw 0 0\ntmpfs /host/run tmpfs rw 0 0\n",
            Arc::clone(&recorder) as Arc<dyn StatFs>,
        );
        let worker = Some("statvfs".to_owned());
        let threads = |recorder: &ThreadRecorder| -> Vec<Option<String>> {
            let mut calls = recorder.0.lock().expect("lock");
            calls.drain(..).map(|(_, thread)| thread).collect()
        };

        assert!(c.may_block(), "nothing has answered yet");
        c.collect(&mut MetricSet::new()).expect("collect");
        assert_eq!(threads(&recorder), [worker.clone(), worker.clone()]);
        assert!(!c.may_block());

        c.collect(&mut MetricSet::new()).expect("collect");
        let here = std::thread::current().name().map(str::to_owned);
        assert_eq!(threads(&recorder), [here.clone(), here.clone()]);

        // A network mount appears after the scraper chose this thread: the run leaves it out
        // (not a failure) and sends the next scrape to the pool, where only it goes through
        // the worker, and scrapes keep blocking.
        std::fs::write(
            dir.path().join("proc/self/mounts"),
            "/dev/root /host ext4 rw 0 0\ntmpfs /host/run tmpfs rw 0 0\nnas:/x /host/nas nfs4 rw 0 0\n",
        )
        .expect("rewrite");
        c.collect(&mut MetricSet::new())
            .expect("nas not measured yet");
        assert!(c.may_block());
        assert_eq!(threads(&recorder), [here.clone(), here.clone()]);
        c.collect(&mut MetricSet::new()).expect("collect");
        let calls = recorder.0.lock().expect("lock").clone();
        let nas = calls
            .iter()
            .find(|(path, _)| path.ends_with("nas"))
            .expect("nas asked");
        assert_eq!(nas.1, worker);
        assert!(c.may_block());
    }

    #[test]
    fn a_run_on_the_serving_thread_never_waits_for_a_new_mount() {
        let (release, rx) = mpsc::channel::<()>();
        let (dir, mut c) = collector(
            "/dev/root /host ext4 rw 0 0\n",
            Arc::new(FakeStatFs {
                release: Mutex::new(rx),
            }),
        );
        c.options.mount_timeout = Duration::from_secs(5);
        c.collect(&mut MetricSet::new()).expect("collect");
        assert!(!c.may_block());

        // A dead NFS mount appears after the scraper decided to run us here.
        std::fs::write(
            dir.path().join("proc/self/mounts"),
            "/dev/root /host ext4 rw 0 0\nnas:/x /host/hang nfs4 rw 0 0\n",
        )
        .expect("rewrite");
        let started = std::time::Instant::now();
        let mut set = MetricSet::new();
        c.collect(&mut set)
            .expect("a mount not measured yet is not a failure");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "waited {:?} on the serving thread",
            started.elapsed()
        );
        assert_eq!(value(&set, "rpi_filesystem_size_bytes", "/"), Some(1000.0));
        assert_eq!(value(&set, "rpi_filesystem_readonly", "/hang"), Some(0.0));
        assert_eq!(value(&set, "rpi_filesystem_device_error", "/hang"), None);
        assert_eq!(value(&set, "rpi_filesystem_size_bytes", "/hang"), None);
        assert!(c.may_block(), "the next scrape measures it on the pool");
        drop(release);
    }

    #[test]
    fn an_automount_point_is_never_asked_directly() {
        let recorder = Arc::new(ThreadRecorder::default());
        let (_dir, c) = collector(
            "/dev/root /host ext4 rw 0 0\nsystemd-1 /host/media autofs rw 0 0\n/dev/sda1 /host/media ext4 rw 0 0\n",
            Arc::clone(&recorder) as Arc<dyn StatFs>,
        );
        for _ in 0..2 {
            c.collect(&mut MetricSet::new()).expect("collect");
            assert!(c.may_block());
        }
        let calls = recorder.0.lock().expect("lock").clone();
        let media: Vec<_> = calls.iter().filter(|(p, _)| p.ends_with("media")).collect();
        assert_eq!(media.len(), 2);
        assert!(media.iter().all(|(_, t)| t.as_deref() == Some("statvfs")));
    }

    #[test]
    fn mountinfo_gives_what_mounts_would_and_the_mount_id() {
        let (mounts, malformed) = parse_mountinfo(
            "22 1 179:2 / / rw,noatime shared:1 - ext4 /dev/root ro,commit=60\n\
             30 22 8:1 / /mnt/usb\\040disk rw,relatime - vfat /dev/sda1 rw,fmask=0022\n\
             garbage - x\n",
        );
        assert_eq!(malformed, 1);
        assert_eq!(mounts[0].0, "22");
        assert!(mounts[0].1.readonly, "superblock read-only");
        assert_eq!(mounts[0].1.options, "ro,noatime,commit=60");
        assert_eq!(mounts[0].1.device, "/dev/root");
        assert_eq!(mounts[1].1.mountpoint, "/mnt/usb disk");
        assert_eq!(mounts[1].1.fstype, "vfat");
        assert!(!mounts[1].1.readonly);
    }

    #[test]
    fn a_new_mount_at_the_same_place_under_the_same_device_is_not_asked_directly() {
        let recorder = Arc::new(ThreadRecorder::default());
        let (dir, c) = collector("", Arc::clone(&recorder) as Arc<dyn StatFs>);
        let info = dir.path().join("proc/self/mountinfo");
        std::fs::write(&info, "30 1 8:1 / /host/media rw - vfat /dev/sda1 rw\n").expect("write");
        c.collect(&mut MetricSet::new())
            .expect("through the worker");
        c.collect(&mut MetricSet::new()).expect("directly");
        assert!(!c.may_block());
        recorder.0.lock().expect("lock").clear();

        // Another stick, same device name and place: a new mount ID.
        std::fs::write(&info, "31 1 8:1 / /host/media rw - vfat /dev/sda1 rw\n").expect("write");
        assert!(c.may_block(), "a changed table sends the run to the pool");
        c.collect(&mut MetricSet::new())
            .expect("through the worker");
        let calls = recorder.0.lock().expect("lock").clone();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].1.as_deref(), Some("statvfs"));
    }

    #[test]
    fn a_changed_mount_table_is_picked_up() {
        let (release, rx) = mpsc::channel();
        drop(release);
        let (dir, c) = collector(
            "/dev/root /host ext4 rw 0 0\n",
            Arc::new(FakeStatFs {
                release: Mutex::new(rx),
            }),
        );
        let mut before = MetricSet::new();
        c.collect(&mut before).expect("collect");
        assert_eq!(value(&before, "rpi_filesystem_readonly", "/"), Some(0.0));
        assert_eq!(value(&before, "rpi_filesystem_readonly", "/data"), None);

        // The root remounted read-only and a disk appeared: both must show on the next scrape.
        std::fs::write(
            dir.path().join("proc/self/mounts"),
            "/dev/root /host ext4 ro 0 0\n/dev/sdb1 /host/data ext4 rw 0 0\n",
        )
        .expect("rewrite");
        let mut after = MetricSet::new();
        let _ = c.collect(&mut after);
        assert_eq!(value(&after, "rpi_filesystem_readonly", "/"), Some(1.0));
        assert_eq!(value(&after, "rpi_filesystem_readonly", "/data"), Some(0.0));
    }

    /// A disk plugged in between two scrapes: the next scrape measures it (on the pool, through
    /// the worker) and the collector does not fail for it.
    #[test]
    fn a_new_mount_is_measured_by_the_next_scrape_without_failing() {
        let recorder = Arc::new(ThreadRecorder::default());
        let (dir, c) = collector(
            "/dev/root /host ext4 rw 0 0\n",
            Arc::clone(&recorder) as Arc<dyn StatFs>,
        );
        c.collect(&mut MetricSet::new())
            .expect("through the worker");
        c.collect(&mut MetricSet::new()).expect("directly");
        assert!(
            !c.may_block(),
            "an unchanged table of answered mounts runs inline"
        );
        recorder.0.lock().expect("lock").clear();

        std::fs::write(
            dir.path().join("proc/self/mounts"),
            "/dev/root /host ext4 rw 0 0\n/dev/sda1 /host/media vfat rw 0 0\n",
        )
        .expect("rewrite");
        assert!(
            c.may_block(),
            "the scrape that sees the new mount runs on the pool"
        );
        let mut set = MetricSet::new();
        c.collect(&mut set)
            .expect("the new mount is measured, nothing failed");
        assert_eq!(
            value(&set, "rpi_filesystem_size_bytes", "/media"),
            Some(1.0)
        );
        assert_eq!(
            value(&set, "rpi_filesystem_device_error", "/media"),
            Some(0.0)
        );
        assert_eq!(value(&set, "rpi_filesystem_size_bytes", "/"), Some(1.0));
        let calls = recorder.0.lock().expect("lock").clone();
        let media: Vec<_> = calls.iter().filter(|(p, _)| p.ends_with("media")).collect();
        assert_eq!(media.len(), 1);
        assert_eq!(media[0].1.as_deref(), Some("statvfs"), "through the worker");
        // Answered once now: back on the serving thread.
        assert!(!c.may_block());
    }

    /// As the exporter runs it, through the scraper: the scrape after a disk is plugged in
    /// measures it, and the collector stays successful (a failure is what logs a WARN).
    #[tokio::test]
    async fn through_the_scraper_a_new_mount_is_measured_and_nothing_fails() {
        let recorder = Arc::new(ThreadRecorder::default());
        let (dir, c) = collector(
            "/dev/root /host ext4 rw 0 0\n",
            Arc::clone(&recorder) as Arc<dyn StatFs>,
        );
        let scraper = crate::collector::Scraper::new(
            vec![("filesystem", Arc::new(c) as Arc<dyn Collector>)],
            Duration::from_secs(5),
        );
        let success = |set: &MetricSet| {
            set.get("rpi_exporter_collector_success")?
                .samples
                .iter()
                .find(|s| s.labels.iter().any(|(_, v)| v == "filesystem"))
                .map(|s| s.value)
        };
        for _ in 0..2 {
            let set = scraper.scrape(None).await;
            assert_eq!(success(&set), Some(1.0));
        }
        std::fs::write(
            dir.path().join("proc/self/mounts"),
            "/dev/root /host ext4 rw 0 0\n/dev/sda1 /host/media exfat rw 0 0\n",
        )
        .expect("rewrite");
        let set = scraper.scrape(None).await;
        assert_eq!(success(&set), Some(1.0), "the new mount failed the scrape");
        assert_eq!(
            value(&set, "rpi_filesystem_size_bytes", "/media"),
            Some(1.0)
        );
        assert_eq!(
            value(&set, "rpi_filesystem_device_error", "/media"),
            Some(0.0)
        );
        let set = scraper.scrape(None).await;
        assert_eq!(success(&set), Some(1.0));
        assert_eq!(
            value(&set, "rpi_filesystem_size_bytes", "/media"),
            Some(1.0)
        );
    }

    #[test]
    fn missing_mount_table_is_an_error_not_a_panic() {
        let ctx = BuildContext {
            paths: Paths {
                procfs: "/nonexistent/proc".into(),
                ..Paths::default()
            },
            options: CollectorOptions::default(),
            board: None,
        };
        let c = FilesystemCollector::new(&ctx);
        let mut set = MetricSet::new();
        assert!(c.collect(&mut set).is_err());
        assert!(set.families().is_empty());
    }
}
