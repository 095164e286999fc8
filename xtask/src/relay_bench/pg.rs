//! The PostgreSQL side of `cargo xtask relay-bench`: a throwaway server (`testpg`) checked to
//! be as durable as production (`fsync`, `synchronous_commit` on), a fresh database per
//! scenario, and what the server did during a burst (CPU of its processes,
//! transaction ids, WAL bytes), read with `psql` and /proc.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use testpg::TestPg;

use super::cpu_ticks;

/// The server, and how to reach it with `psql`.
pub(crate) struct Server {
    pg: TestPg,
    psql: PathBuf,
    /// What `SHOW` said about durability, for the report.
    pub(crate) settings: String,
    databases: usize,
}

/// What the server did between two [`Server::snapshot`]s of one database.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Snapshot {
    /// Transaction ids handed out: one per transaction that wrote, and one per savepoint
    /// (subtransaction) that wrote.
    xid: i64,
    /// `pg_current_wal_lsn()` in bytes.
    wal: i64,
    /// utime + stime of the postmaster and its children, in clock ticks.
    cpu: u64,
}

impl Snapshot {
    /// (transaction ids, WAL bytes, CPU ticks) from `self` to `later`; the snapshot's own
    /// transaction id is not counted.
    pub(crate) fn delta(self, later: Snapshot) -> (i64, i64, u64) {
        (
            later.xid - self.xid - 1,
            later.wal - self.wal,
            later.cpu.saturating_sub(self.cpu),
        )
    }
}

impl Server {
    pub(crate) fn start() -> Result<Server> {
        let pg = TestPg::start().context("cannot start the throwaway PostgreSQL (testpg)")?;
        let mut server = Server {
            pg,
            psql: psql(),
            settings: String::new(),
            databases: 0,
        };
        server.settings = server.check_durable()?;
        Ok(server)
    }

    /// A new empty database; returns the relay's URL for it.
    pub(crate) fn fresh_database(&mut self) -> Result<(String, String)> {
        self.databases += 1;
        let name = format!("relay_bench_{}", self.databases);
        self.pg.create_database(&name)?;
        Ok((format!("{}?sslmode=disable", self.pg.url(&name)), name))
    }

    /// Refuses to measure a server that would not survive a power cut: the relay answers 2xx
    /// after its commit, which means something only with `fsync` and `synchronous_commit` on.
    fn check_durable(&self) -> Result<String> {
        let out = self.query(
            "postgres",
            "SELECT current_setting('fsync') || ' ' || current_setting('synchronous_commit') \
             || ' ' || current_setting('full_page_writes') || ' ' \
             || current_setting('wal_sync_method') || ' ' || current_setting('commit_delay') \
             || ' ' || current_setting('server_version')",
        )?;
        let f: Vec<&str> = out.split_whitespace().collect();
        let [fsync, sync_commit, fpw, method, delay, version, ..] = f[..] else {
            bail!("unexpected settings from PostgreSQL: {out:?}");
        };
        if fsync != "on" || sync_commit != "on" {
            bail!(
                "the PostgreSQL server is not durable (fsync={fsync}, synchronous_commit={sync_commit}): refusing to measure"
            );
        }
        let fs = super::filesystem(&self.pg.data_dir());
        Ok(format!(
            "PostgreSQL {version}: fsync={fsync} synchronous_commit={sync_commit} full_page_writes={fpw} wal_sync_method={method} commit_delay={delay}, data on {fs}"
        ))
    }

    pub(crate) fn snapshot(&self, db: &str) -> Result<Snapshot> {
        let cpu = self.cpu()?;
        let out = self.query(
            db,
            "SELECT pg_current_xact_id()::text::bigint || ' ' \
             || pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint",
        )?;
        let mut f = out.split_whitespace().map(str::parse::<i64>);
        let (Some(Ok(xid)), Some(Ok(wal))) = (f.next(), f.next()) else {
            bail!("unexpected answer from PostgreSQL: {out:?}");
        };
        Ok(Snapshot { xid, wal, cpu })
    }

    /// CPU ticks of the postmaster and every process it started (backends, WAL writer,
    /// checkpointer, …).
    fn cpu(&self) -> Result<u64> {
        let file = self.pg.data_dir().join("postmaster.pid");
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let postmaster: u32 = text.lines().next().unwrap_or_default().trim().parse()?;
        let mut total = cpu_ticks(postmaster).unwrap_or(0);
        for entry in std::fs::read_dir("/proc")?.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if parent(pid) == Some(postmaster) {
                total += cpu_ticks(pid).unwrap_or(0);
            }
        }
        Ok(total)
    }

    fn query(&self, db: &str, sql: &str) -> Result<String> {
        let out = Command::new(&self.psql)
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.pg.url(db))
            .args(["-c", sql])
            .output()
            .with_context(|| format!("cannot run {}", self.psql.display()))?;
        if !out.status.success() {
            bail!(
                "psql failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

/// The newest `/usr/lib/postgresql/N/bin/psql`, else `psql` on PATH.
fn psql() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, e.path().join("bin/psql")))
        })
        .filter(|(_, p)| p.is_file())
        .collect();
    versions.sort();
    versions
        .pop()
        .map_or_else(|| PathBuf::from("psql"), |(_, p)| p)
}

/// The parent's pid, from /proc/PID/stat (the field after the state, after the command name).
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
