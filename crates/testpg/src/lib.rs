//! A throwaway PostgreSQL server for tests: `initdb` into a temporary directory, `pg_ctl` on a
//! free loopback port, trust authentication for the `postgres` superuser, gone on drop.
//!
//! Needs Debian's `postgresql` package (the binaries under `/usr/lib/postgresql/*/bin`) or
//! `initdb` and `pg_ctl` on `PATH`. PostgreSQL refuses to run as root: as root (CI), the server
//! runs as `nobody`. A watcher process stops the server and removes its directory once the
//! test process is gone, so a server kept in a `static` (never dropped) does not outlive it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// What can go wrong starting or driving the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "PostgreSQL server binaries not found (no initdb and pg_ctl under /usr/lib/postgresql/*/bin \
         or on PATH): install Debian's postgresql package (apt-get install postgresql)"
    )]
    NotInstalled,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed ({status}): {output}")]
    Failed {
        command: String,
        status: String,
        output: String,
    },
}

/// How to start the server beyond the defaults (trust authentication, no TLS).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// PEM certificate (chain) and PEM private key: the server accepts TLS (`ssl=on`).
    pub tls: Option<(String, String)>,
    /// TCP connections authenticate with this password for `postgres` (SCRAM-SHA-256);
    /// the Unix socket (the tools of this crate) stays trusted.
    pub password: Option<String>,
    /// IPv4 addresses to listen on besides 127.0.0.1 (a test that cuts one instance's
    /// network adds an address of its own to `lo`); clients from them authenticate as from
    /// loopback.
    pub listen: Vec<std::net::Ipv4Addr>,
}

/// A running server. Stops (fast) and removes its directory on drop.
#[derive(Debug)]
pub struct TestPg {
    bin: PathBuf,
    options: Options,
    /// Holds the data directory (`data/`), the socket and the log.
    dir: tempfile::TempDir,
    port: u16,
    /// `Some(user)` when the server runs as another user (the test runs as root).
    run_as: Option<String>,
    running: bool,
}

/// The user the server runs as when the tests run as root.
const UNPRIVILEGED: &str = "nobody";

impl TestPg {
    /// Creates a cluster in a new temporary directory and starts it on a free loopback port.
    pub fn start() -> Result<TestPg, Error> {
        TestPg::start_with(Options::default())
    }

    /// [`TestPg::start`] with TLS or password authentication.
    pub fn start_with(options: Options) -> Result<TestPg, Error> {
        let bin = find_bin()?;
        let run_as = (euid()? == 0).then(|| UNPRIVILEGED.to_owned());
        let dir = make_dir(run_as.as_deref())?;
        let mut pg = TestPg {
            bin,
            options,
            dir,
            port: 0,
            run_as,
            running: false,
        };
        pg.initdb()?;
        pg.allow_listen_addresses()?;
        pg.write_tls_files()?;
        pg.spawn_watcher()?;
        // Another process may take the free port between the probe and the start: retry.
        let mut last = None;
        for _ in 0..5 {
            pg.port = free_port()?;
            match pg.pg_ctl_start() {
                Ok(()) => {
                    pg.running = true;
                    return Ok(pg);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(Error::NotInstalled))
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/db` (with `:PASSWORD` when started with one).
    pub fn url(&self, db: &str) -> String {
        let password = match &self.options.password {
            Some(p) => format!(":{p}"),
            None => String::new(),
        };
        format!("postgres://postgres{password}@127.0.0.1:{}/{db}", self.port)
    }

    /// The data directory (for tests that look at the server's files or log).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Creates an empty database `name` (`createdb`).
    pub fn create_database(&self, name: &str) -> Result<(), Error> {
        let port = self.port.to_string();
        let mut cmd = Command::new(self.bin.join("createdb"));
        cmd.arg("-h")
            .arg(self.dir.path())
            .args(["-p", &port, "-U", "postgres", "--", name]);
        run(cmd)
    }

    /// Stops the server (`pg_ctl stop -m fast`): sessions are ended, the data stays.
    pub fn stop(&mut self) -> Result<(), Error> {
        self.running = false;
        self.pg_ctl(&["stop", "-m", "fast", "-w"])
    }

    /// Starts the server again on the same port after [`TestPg::stop`] or [`TestPg::kill`].
    pub fn start_again(&mut self) -> Result<(), Error> {
        // After a kill, the old server's children may still hold its shared memory briefly.
        let mut tries = 0;
        loop {
            match self.pg_ctl_start() {
                Ok(()) => break,
                Err(_) if tries < 10 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(300));
                }
                Err(e) => return Err(e),
            }
        }
        self.running = true;
        Ok(())
    }

    /// Stops (fast) and starts the server on the same port, the data kept.
    pub fn restart(&mut self) -> Result<(), Error> {
        self.stop()?;
        self.start_again()
    }

    /// Ends the server abruptly (`pg_ctl kill KILL` on the postmaster), as a crash would; the
    /// next start recovers from the write-ahead log.
    pub fn kill(&mut self) -> Result<(), Error> {
        let pid = self.postmaster_pid()?;
        self.running = false;
        self.pg_ctl(&["kill", "KILL", &pid])?;
        // Dead, or a zombie nobody reaps (PID 1 of a container may not): PostgreSQL would take
        // its pid file for a live server's, so it goes, as after a reboot.
        let stat = PathBuf::from(format!("/proc/{pid}/stat"));
        for _ in 0..100 {
            match std::fs::read_to_string(&stat) {
                Ok(text)
                    if !text
                        .rsplit(')')
                        .next()
                        .unwrap_or_default()
                        .starts_with(" Z") =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => break,
            }
        }
        let _ = std::fs::remove_file(self.data_dir().join("postmaster.pid"));
        Ok(())
    }

    fn postmaster_pid(&self) -> Result<String, Error> {
        let file = self.data_dir().join("postmaster.pid");
        let text = std::fs::read_to_string(&file).map_err(|source| Error::Io {
            what: format!("read {}", file.display()),
            source,
        })?;
        Ok(text.lines().next().unwrap_or_default().trim().to_owned())
    }

    fn initdb(&self) -> Result<(), Error> {
        let data = self.data_dir();
        let mut cmd = self.as_server_user(self.bin.join("initdb"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .args(["--locale=C", "--no-instructions"]);
        if let Some(password) = &self.options.password {
            let file = self.dir.path().join("pwfile");
            self.write_file(&file, password)?;
            cmd.arg(format!("--pwfile={}", file.display()))
                .args(["--auth-host=scram-sha-256", "--auth-local=trust"]);
        }
        run(cmd)
    }

    /// `pg_hba.conf` lines for [`Options::listen`]: the method loopback has.
    fn allow_listen_addresses(&self) -> Result<(), Error> {
        if self.options.listen.is_empty() {
            return Ok(());
        }
        let method = match self.options.password {
            Some(_) => "scram-sha-256",
            None => "trust",
        };
        let file = self.data_dir().join("pg_hba.conf");
        let mut text = std::fs::read_to_string(&file).map_err(|source| Error::Io {
            what: format!("read {}", file.display()),
            source,
        })?;
        for address in &self.options.listen {
            text.push_str(&format!("host all all {address}/32 {method}\n"));
        }
        std::fs::write(&file, text).map_err(|source| Error::Io {
            what: format!("write {}", file.display()),
            source,
        })
    }

    /// The server's certificate and key, in its directory (not the data directory: initdb
    /// wants that empty).
    fn write_tls_files(&self) -> Result<(), Error> {
        if let Some((cert, key)) = &self.options.tls {
            self.write_file(&self.dir.path().join("server.crt"), cert)?;
            self.write_file(&self.dir.path().join("server.key"), key)?;
        }
        Ok(())
    }

    /// Writes a file only the server's user may read (PostgreSQL insists for its key).
    fn write_file(&self, path: &Path, text: &str) -> Result<(), Error> {
        use std::os::unix::fs::PermissionsExt as _;
        let io = |what: String| move |source| Error::Io { what, source };
        std::fs::write(path, text).map_err(io(format!("write {}", path.display())))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(io(format!("chmod {}", path.display())))?;
        if let Some(user) = &self.run_as {
            let (uid, gid) = (id_of(user, "-u")?, id_of(user, "-g")?);
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(io(format!("chown {}", path.display())))?;
        }
        Ok(())
    }

    fn pg_ctl_start(&self) -> Result<(), Error> {
        let dir = self.dir.path().display().to_string();
        let listen: Vec<String> = std::iter::once("127.0.0.1".to_owned())
            .chain(self.options.listen.iter().map(ToString::to_string))
            .collect();
        let mut options = format!(
            "-p {} -k {dir} -c listen_addresses={} -c fsync=on -c max_connections=200",
            self.port,
            listen.join(",")
        );
        if self.options.tls.is_some() {
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key"
            ));
        }
        let log = self.dir.path().join("server.log");
        let mut cmd = self.as_server_user(self.bin.join("pg_ctl"));
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o", &options, "start"]);
        run(cmd).map_err(|e| match e {
            Error::Failed {
                command,
                status,
                output,
            } => Error::Failed {
                command,
                status,
                output: format!("{output}; server log: {}", tail(&log)),
            },
            other => other,
        })
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), Error> {
        let mut cmd = self.as_server_user(self.bin.join("pg_ctl"));
        cmd.arg("-D").arg(self.data_dir()).args(args);
        run(cmd)
    }

    /// `program`, run as the server's user.
    fn as_server_user(&self, program: PathBuf) -> Command {
        match &self.run_as {
            Some(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", user, "--"]).arg(program);
                cmd
            }
            None => Command::new(program),
        }
    }

    /// A shell that waits for this process to end, then stops the server and removes its
    /// directory: a server in a `static` is never dropped.
    fn spawn_watcher(&self) -> Result<(), Error> {
        let pg_ctl = self.bin.join("pg_ctl");
        let prefix = match &self.run_as {
            Some(user) => format!("runuser -u {user} -- "),
            None => String::new(),
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             {prefix}'{pg_ctl}' -D '{data}' stop -m immediate >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            pg_ctl = pg_ctl.display(),
            data = self.data_dir().display(),
            dir = self.dir.path().display(),
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(drop)
            .map_err(|source| Error::Io {
                what: "spawn the watcher shell".into(),
                source,
            })
    }
}

impl Drop for TestPg {
    fn drop(&mut self) {
        if self.running {
            let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
        }
    }
}

/// The newest `/usr/lib/postgresql/N/bin` with `initdb` and `pg_ctl`, else the directory of
/// `initdb` on `PATH`.
fn find_bin() -> Result<PathBuf, Error> {
    find_bin_in(Path::new("/usr/lib/postgresql"), std::env::var_os("PATH"))
}

fn find_bin_in(lib: &Path, path: Option<std::ffi::OsString>) -> Result<PathBuf, Error> {
    let usable = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(lib)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, e.path().join("bin")))
        })
        .filter(|(_, bin)| usable(bin))
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    path.iter()
        .flat_map(std::env::split_paths)
        .find(|dir| usable(dir))
        .ok_or(Error::NotInstalled)
}

fn euid() -> Result<u32, Error> {
    let out = output(Command::new("id").arg("-u"))?;
    out.trim().parse().map_err(|_| Error::Failed {
        command: "id -u".into(),
        status: "0".into(),
        output: out,
    })
}

/// A temporary directory the server's user owns, under a path it can traverse.
fn make_dir(run_as: Option<&str>) -> Result<tempfile::TempDir, Error> {
    let io = |what: &str| {
        let what = what.to_owned();
        move |source| Error::Io { what, source }
    };
    let Some(user) = run_as else {
        return tempfile::Builder::new()
            .prefix("testpg-")
            .tempdir()
            .map_err(io("create a temporary directory"));
    };
    // $TMPDIR may be private to root: /tmp is world-traversable.
    let dir = tempfile::Builder::new()
        .prefix("testpg-")
        .tempdir_in("/tmp")
        .map_err(io("create a temporary directory in /tmp"))?;
    let uid: u32 = id_of(user, "-u")?;
    let gid: u32 = id_of(user, "-g")?;
    std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
        .map_err(io(&format!("chown {} to {user}", dir.path().display())))?;
    Ok(dir)
}

fn id_of(user: &str, flag: &str) -> Result<u32, Error> {
    let out = output(Command::new("id").args([flag, user]))?;
    out.trim().parse().map_err(|_| Error::Failed {
        command: format!("id {flag} {user}"),
        status: "0".into(),
        output: out,
    })
}

fn free_port() -> Result<u16, Error> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|source| Error::Io {
        what: "bind a loopback port".into(),
        source,
    })?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|source| Error::Io {
            what: "read the bound port".into(),
            source,
        })
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` and returns its standard output; its output in the error when it fails.
fn output(cmd: &mut Command) -> Result<String, Error> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Io {
            what: format!("run {}", describe(cmd)),
            source,
        })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(Error::Failed {
            command: describe(cmd),
            status: out.status.to_string(),
            output: text.trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run(mut cmd: Command) -> Result<(), Error> {
    output(&mut cmd).map(drop)
}

/// The last lines of a log file, for an error message.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_the_binaries_the_error_says_what_to_install() {
        let empty = tempfile::tempdir().expect("tempdir");
        let err = find_bin_in(empty.path(), Some(empty.path().into())).expect_err("none");
        assert!(
            err.to_string()
                .contains("install Debian's postgresql package (apt-get install postgresql)"),
            "{err}"
        );
    }

    #[test]
    fn the_newest_version_is_preferred() {
        let lib = tempfile::tempdir().expect("tempdir");
        for v in ["9", "15", "13"] {
            let bin = lib.path().join(v).join("bin");
            std::fs::create_dir_all(&bin).expect("mkdir");
            for tool in ["initdb", "pg_ctl"] {
                std::fs::write(bin.join(tool), "").expect("touch");
            }
        }
        let found = find_bin_in(lib.path(), None).expect("found");
        assert_eq!(found, lib.path().join("15").join("bin"));
    }
}
