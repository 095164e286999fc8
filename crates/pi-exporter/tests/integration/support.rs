//! Starting the binary and talking raw HTTP/1.1 to it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serving::logging::read::journal_stream;

pub(crate) fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The exporter running as a child process; killed on drop.
pub(crate) struct Exporter {
    child: Child,
    pub(crate) addr: SocketAddr,
    log: mpsc::Receiver<String>,
    /// Lines logged before the listening address (the start-up inventory, say), not yet read.
    startup_log: std::cell::RefCell<Vec<String>>,
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Exporter {
    /// Starts the binary on 127.0.0.1 with an OS-chosen port, reading the port from its log.
    pub(crate) fn start(args: &[&str]) -> Exporter {
        Self::start_with_env(args, &[])
    }

    /// As [`Exporter::start`], with extra environment variables (e.g. systemd's).
    pub(crate) fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Exporter {
        let mut command = Self::command(args);
        command.envs(env.iter().copied()).stderr(Stdio::piped());
        Self::spawn(command, None)
    }

    /// As [`Exporter::start`], with stderr a pipe that `JOURNAL_STREAM` names, as systemd
    /// starts a service whose output goes to the journal.
    pub(crate) fn start_under_journal(args: &[&str]) -> Exporter {
        let (reader, writer) = std::io::pipe().expect("pipe");
        let writer = std::fs::File::from(std::os::fd::OwnedFd::from(writer));
        let mut command = Self::command(args);
        command
            .env(
                "JOURNAL_STREAM",
                journal_stream(&writer).expect("fstat the pipe"),
            )
            .stderr(writer);
        Self::spawn(command, Some(reader))
    }

    fn command(args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pi-exporter"));
        command
            .arg("--web.listen-address=127.0.0.1:0")
            .args(args)
            .stdout(Stdio::piped());
        command
    }

    /// Starts `command` and reads its address from the log (`stderr`, if not piped in `command`).
    fn spawn(mut command: Command, stderr: Option<std::io::PipeReader>) -> Exporter {
        let mut child = command.spawn().expect("start pi-exporter");
        // Our copy of a pipe's write end would keep its reader from ever seeing the end.
        drop(command);
        let (tx, log) = mpsc::channel();
        let outputs = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            stderr.map(|s| Box::new(s) as Box<dyn Read + Send>),
        ];
        for stream in outputs.into_iter().flatten() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        // Owned from here on, so a failed start still kills the child.
        let mut exporter = Exporter {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            startup_log: std::cell::RefCell::default(),
            log,
        };
        loop {
            let line = match exporter.log.recv_timeout(Duration::from_secs(20)) {
                Ok(line) => line,
                Err(_) => panic!(
                    "pi-exporter did not report its address; log so far:\n{}",
                    exporter.startup_log.borrow().join("\n")
                ),
            };
            if let Some(address) = listening_address(&line) {
                exporter.addr = address;
            }
            // Kept: tests read the listening line's format too.
            exporter.startup_log.borrow_mut().push(line);
            if exporter.addr.port() != 0 {
                return exporter;
            }
        }
    }

    /// Starts the binary on a fixture tree.
    pub(crate) fn on_fixture(name: &str, extra: &[&str]) -> Exporter {
        let root = fixture(name);
        let procfs = format!("--path.procfs={}", root.join("proc").display());
        let sysfs = format!("--path.sysfs={}", root.join("sys").display());
        let rootfs = format!("--path.rootfs={}", root.join("rootfs").display());
        // Fixtures have no dev/: the host's devices (a real /dev/vcio on a Pi) stay out of tests.
        let devfs = format!("--path.devfs={}", root.join("dev").display());
        let mut args = vec![
            procfs.as_str(),
            sysfs.as_str(),
            rootfs.as_str(),
            devfs.as_str(),
        ];
        args.extend_from_slice(extra);
        Self::start(&args)
    }

    /// Log lines printed so far.
    /// Log lines not read yet, start-up lines included.
    pub(crate) fn log_lines(&self) -> Vec<String> {
        let mut lines = std::mem::take(&mut *self.startup_log.borrow_mut());
        lines.extend(self.log.try_iter());
        lines
    }

    pub(crate) fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("\r\n");
        self.raw(request.as_bytes())
    }

    /// Sends raw bytes and reads one response until the server closes.
    pub(crate) fn raw(&self, request: &[u8]) -> Response {
        let mut stream = TcpStream::connect(self.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        stream.write_all(request).expect("write");
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes);
        Response::parse(&bytes)
    }
}

#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Response {
    fn parse(bytes: &[u8]) -> Response {
        let split = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("complete response head");
        let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .expect("status");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let mut body = bytes[split + 4..].to_vec();
        if headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v == "chunked")
        {
            body = dechunk(&body);
        }
        Response {
            status,
            headers,
            body,
        }
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("utf-8 body")
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..end]).unwrap_or("0").trim(), 16)
                .unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[end + 4 + size..];
    }
}

/// The address of the `listening` log line, in either log format.
pub(crate) fn listening_address(line: &str) -> Option<SocketAddr> {
    serving::logging::read::field(line, "address")?.parse().ok()
}

/// Runs `promtool check metrics` on an exposition; fails the test with install advice if absent.
pub(crate) fn promtool_check(exposition: &str) {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!(
            "promtool is needed for this test ({e}); install the Debian package `prometheus`"
        ),
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool output");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of the first sample whose line starts with `prefix` (name and labels).
pub(crate) fn sample_value(exposition: &str, prefix: &str) -> Option<f64> {
    exposition
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

impl Exporter {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub(crate) fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = i32::try_from(self.child.id()).expect("pid fits");
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let until = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                std::time::Instant::now() < until,
                "no exit within 10 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
