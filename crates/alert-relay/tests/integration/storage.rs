//! The relay's own storage faults, through the binary: a database it cannot write stops
//! start-up with an error naming the file; a full disk fails webhooks with 5xx and makes the
//! relay unhealthy (`/healthz`, the systemd watchdog) until space is freed; the recovery lasts,
//! because the write-ahead log is checkpointed back to small; and start-up on a full disk says
//! "disk full".
//!
//! CI runs these tests as root, to whom file modes mean nothing: a database is made unwritable
//! by a read-only mount or by a directory in its place, which stop root too. The mounts are small
//! tmpfs volumes; mounting needs root with mount privileges (CAP_SYS_ADMIN), and a test that
//! cannot mount fails saying so.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{Fake, Relay, Reply, client, tempdir, webhook};

/// A tmpfs mounted for one test, unmounted when dropped.
struct Volume {
    dir: PathBuf,
}

impl Volume {
    fn mount(dir: &Path, size: &str) -> Volume {
        std::fs::create_dir_all(dir).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a {size} tmpfs at {}, which needs root with mount privileges \
             (CAP_SYS_ADMIN), as in CI; mount said: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Volume {
            dir: dir.to_owned(),
        }
    }

    fn remount_read_only(&self) {
        let out = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.dir)
            .output()
            .expect("run mount");
        assert!(out.status.success(), "remount read-only: {out:?}");
    }

    /// Fills the volume up with a file named `filler`; returns its path.
    fn fill(&self) -> PathBuf {
        use std::io::Write as _;
        let path = self.dir.join("filler");
        let mut f = std::fs::File::create(&path).expect("filler");
        let block = [0u8; 4096];
        while f.write_all(&block).is_ok() {}
        path
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        // Lazy: a mount still in use (a test that failed early) goes once it is let go.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// The relay's config with its database at `db`, delivering to `fake`.
fn config(db: &Path, fake: &Fake) -> String {
    format!(
        "listen: 127.0.0.1:0\nstorage: {{ sqlite: {} }}\n\
         channels: {{ hook: {{ type: webhook, url: '{}/h', rate_limit: {{ per_second: 1000, burst: 1000 }} }} }}\n\
         policies: {{ p: {{ steps: [ {{ notify: [hook] }} ] }} }}\nroutes: [ {{ policy: p }} ]\n",
        db.display(),
        fake.url()
    )
}

/// Starts the relay on `config` (written next to it), expecting it to refuse; its log.
fn refused(dir: &Path, config: &str) -> String {
    let path = dir.join("relay.yml");
    std::fs::write(&path, config).expect("config");
    match Relay::try_start_file(&path) {
        Ok(_) => panic!("alert-relay started on a database it cannot write"),
        Err(log) => log,
    }
}

#[tokio::test]
async fn a_directory_in_place_of_the_database_stops_start_up() {
    let fake = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let db = dir.path().join("relay.db");
    // Not even root can open a directory for writing.
    std::fs::create_dir(&db).expect("mkdir");
    let log = refused(dir.path(), &config(&db, &fake));
    let named = format!("{}: Is a directory", db.display());
    assert!(
        log.contains("not writable") && log.contains(&named),
        "{log}"
    );
}

#[tokio::test]
async fn a_database_on_a_read_only_mount_stops_start_up() {
    let fake = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let volume = Volume::mount(&dir.path().join("ro"), "4m");
    let db = volume.dir.join("relay.db");
    drop(alert_relay::store::sqlite::Sqlite::open(&db).expect("create the database"));
    // EROFS stops root as well. SQLite opens the file read-only without a word, as it does one
    // of mode 0444 for another user: before the start-up probe, this relay served 500s.
    volume.remount_read_only();
    let log = refused(dir.path(), &config(&db, &fake));
    let named = format!("{}: Read-only file system", db.display());
    assert!(
        log.contains("not writable") && log.contains(&named),
        "{log}"
    );
}

/// Collects the notifications arriving on `socket` for `within`.
fn notifications(socket: &UnixDatagram, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

fn watchdog_pinged(socket: &UnixDatagram, within: Duration) -> bool {
    notifications(socket, within)
        .iter()
        .any(|m| m.contains("WATCHDOG=1"))
}

async fn healthz(relay: &Relay) -> (u16, String) {
    let r = client()
        .get(relay.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

/// Posts `n` webhooks of new alerts `{tag}{i}`; their statuses.
async fn post_many(relay: &Relay, tag: &str, n: usize) -> Vec<u16> {
    let mut statuses = Vec::with_capacity(n);
    for i in 0..n {
        let fp = format!("{tag}{i:014x}");
        let body = webhook(&[(&fp, "firing")], "");
        statuses.push(relay.post("/webhook", body).await.0);
    }
    statuses
}

#[tokio::test]
async fn a_full_disk_is_unhealthy_until_freed_and_the_recovery_lasts() {
    let fake = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let volume = Volume::mount(&dir.path().join("vol"), "1m");
    let db = volume.dir.join("relay.db");
    let path = dir.path().join("relay.yml");
    std::fs::write(&path, config(&db, &fake)).expect("config");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let relay = Relay::try_start_with(&path, |c| {
        c.env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "1000000");
    })
    .unwrap_or_else(|log| panic!("alert-relay did not start; log:\n{log}"));
    assert_eq!(post_many(&relay, "a", 1).await, [200]);
    assert!(watchdog_pinged(&socket, Duration::from_secs(5)));

    let filler = volume.fill();
    assert_eq!(post_many(&relay, "b", 3).await, [500; 3]);
    let (status, body) = healthz(&relay).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("disk full"), "{body}");
    // Drain what was sent before the failure, then three watchdog periods of silence.
    notifications(&socket, Duration::from_millis(200));
    assert!(!watchdog_pinged(&socket, Duration::from_secs(3)));

    std::fs::remove_file(&filler).expect("free space");
    // Five times what the WAL alone once filled the volume with.
    let statuses = post_many(&relay, "c", 200).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(healthz(&relay).await.0, 200);
    assert!(watchdog_pinged(&socket, Duration::from_secs(5)));
    fake.wait_for(201, Duration::from_secs(30)).await;
    let wal = std::fs::metadata(volume.dir.join("relay.db-wal")).map_or(0, |m| m.len());
    assert!(wal <= 256 * 1024, "the WAL is {wal} bytes");
    relay.wait_log("storage commits again").await;

    // A restart onto a full disk: refused, saying why.
    assert!(relay.terminate().success());
    let filler = volume.fill();
    let log = refused(dir.path(), &config(&db, &fake));
    assert!(log.contains("disk full"), "{log}");
    std::fs::remove_file(&filler).expect("free space");
    let relay = Relay::start_file(&path);
    assert_eq!(post_many(&relay, "d", 1).await, [200]);
}
