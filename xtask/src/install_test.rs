//! `cargo xtask install-test`: installs both packages of `cargo xtask dist` (this machine's
//! architecture) as docs/install.md says, by running the doc's command blocks marked
//! `<!-- install-test -->` in the order written, then checks what they left: the users, the
//! relay's `/etc/alert-relay/` (root:alert-relay 0750) and `/etc/default/alert-relay`, the
//! files the doc writes (owners, modes), completions and man pages at their Debian paths, the
//! enabled units, and `alert-relay check-config` passing as the service's user; then README.md's
//! `check-config` command, which must work as written from a checkout, and its walk-through: the
//! relay started as README.md says, its stand-in chat, the sample alert posted, and the firing
//! alert printed by the chat.
//!
//! The scratch root is an overlay of this machine's root directory (its files read-only below,
//! every write in a temporary upper directory), entered with `chroot`: the packages'
//! dependencies and the doc's `apt install prometheus ...` are satisfied by what this machine has
//! installed (`.ci/run` installs them), so no network is needed, and nothing the doc's commands
//! do reaches the machine itself. `sudo` is the root shell itself there (`sudo -u USER` is
//! `runuser`); systemd does not run inside, so `systemctl` works offline (`SYSTEMD_OFFLINE=1`,
//! and `policy-rc.d` for the maintainer scripts): units are enabled, nothing is started, and
//! what the services do once started is the e2e's part. Needs root for the mounts (CI runs as
//! root).

use std::os::unix::fs::MetadataExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail, ensure};

use crate::root;

/// The line that marks the next fenced block of docs/install.md as run by this test.
const MARK: &str = "<!-- install-test -->";

/// The shell around the doc's blocks: `sudo` as the scratch root's root shell is; `systemctl`
/// as it works where systemd does not run: units are enabled, none is started (`--now`,
/// `start`, `restart` say so and do nothing).
const PRELUDE: &str = r#"set -euo pipefail
sudo() {
    if [ "${1-}" = -u ]; then
        local user=$2
        shift 2
        runuser -u "$user" -- "$@"
    else
        "$@"
    fi
}
systemctl() {
    local args=() arg
    for arg in "$@"; do
        [ "$arg" = --now ] && echo "install-test: no systemd here, not starting: systemctl $*" >&2 || args+=("$arg")
    done
    case "${args[0]-}" in
        start | restart | reload | stop) echo "install-test: no systemd here: systemctl $* skipped" >&2 ;;
        *) command systemctl "${args[@]}" ;;
    esac
}
"#;

pub(crate) fn run(args: &[String]) -> Result<()> {
    if let Some(other) = args.first() {
        bail!("usage: cargo xtask install-test (unknown {other:?})");
    }
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .context("cannot run id")?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        bail!(
            "install-test needs root (an overlay mount and chroot; CI runs as root): \
             run it as root, e.g. `sudo -E cargo xtask install-test`"
        );
    }
    let doc = std::fs::read_to_string(root().join("docs/install.md"))?;
    let blocks = marked_blocks(&doc)?;
    let debs = packages()?;
    let scratch = Scratch::mount()?;
    let readme = std::fs::read_to_string(root().join("README.md"))?;
    let relay_check = readme_relay_check(&readme)?;
    let walkthrough = readme_walkthrough(&readme)?;
    let result = install(&scratch, &blocks, &debs)
        .and_then(|()| check(&scratch))
        .and_then(|()| {
            // README.md's relay commands from a checkout, with the installed binary.
            let out = scratch.shell(Path::new(WORK), &format!("set -eu\n{relay_check}"))?;
            eprintln!("README.md's check-config:\n{out}");
            let out = scratch.shell(Path::new(WORK), &walkthrough)?;
            eprintln!("README.md's walk-through (a firing alert in the stand-in chat):\n{out}");
            Ok(())
        });
    let unmounted = scratch.unmount();
    result?;
    unmounted?;
    eprintln!(
        "ok: docs/install.md ({} blocks) installs both packages as documented",
        blocks.len()
    );
    Ok(())
}

/// Where the doc's commands run in the scratch root: a checkout's files are there.
const WORK: &str = "/root/pifleet";

/// README.md's commands that check the relay's configuration (the `export`s and the
/// `check-config` line of "Run the alert relay"), with `cargo run ... --` as the installed
/// binary.
fn readme_relay_check(readme: &str) -> Result<String> {
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Run the alert relay"))
        .context("README.md has no \"Run the alert relay\" section")?;
    let lines: Vec<String> = section
        .lines()
        .filter(|l| l.starts_with("export ") || l.contains(" check-config "))
        .map(|l| l.replace("cargo run --release -p alert-relay --", "alert-relay"))
        .collect();
    ensure!(
        lines
            .iter()
            .any(|l| l.starts_with("alert-relay check-config ")),
        "README.md's \"Run the alert relay\" has no `cargo run --release -p alert-relay -- check-config` line"
    );
    Ok(lines.join("\n"))
}

/// The line that marks README.md's walk-through: a stand-in chat, then an alert posted to the
/// relay that "Run the alert relay" starts.
const WALKTHROUGH: &str = "<!-- walkthrough -->";

/// README.md's walk-through as one script: the relay's `run` line and the chat's line (the
/// block's first), each started in the background as a terminal of their own would hold them,
/// then the block's other lines as written; it fails unless the chat prints the firing alert
/// within 10 s.
fn readme_walkthrough(readme: &str) -> Result<String> {
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Run the alert relay"))
        .context("README.md has no \"Run the alert relay\" section")?;
    let run = section
        .lines()
        .find(|l| l.contains(" run --config "))
        .context("README.md's \"Run the alert relay\" has no `run --config` line")?
        .replace("cargo run --release -p alert-relay --", "alert-relay");
    let block = blocks_after("README.md", section, WALKTHROUGH)?
        .into_iter()
        .next()
        .context("README.md's \"Run the alert relay\" has no walk-through block")?;
    let (chat, rest) = block
        .split_once('\n')
        .context("README.md's walk-through block is empty")?;
    // The relay's terminal: the exports that come before its `run` line.
    let exports: Vec<&str> = section
        .lines()
        .take_while(|l| !l.contains(" run --config "))
        .filter(|l| l.starts_with("export "))
        .collect();
    let exports = exports.join("\n");
    Ok(format!(
        "set -eu\n{exports}\n\
         {chat} > /tmp/walkthrough-chat.log 2>&1 &\nchat=$!\n\
         {run} > /tmp/walkthrough-relay.log 2>&1 &\nrelay=$!\n\
         trap 'kill $chat $relay 2>/dev/null; wait $chat $relay 2>/dev/null || true' EXIT\n\
         for _ in $(seq 100); do curl -sf http://127.0.0.1:9832/healthz >/dev/null && break; sleep 0.1; done\n\
         {rest}\n\
         for _ in $(seq 100); do grep -q 'FIRING.*PiUnderVoltage' /tmp/walkthrough-chat.log && break; sleep 0.1; done\n\
         cat /tmp/walkthrough-chat.log\n\
         grep -q 'FIRING.*PiUnderVoltage' /tmp/walkthrough-chat.log || {{ cat /tmp/walkthrough-relay.log; exit 1; }}\n"
    ))
}

/// The fenced `sh` blocks each directly after a [`MARK`] line, in order.
fn marked_blocks(doc: &str) -> Result<Vec<String>> {
    let blocks = blocks_after("docs/install.md", doc, MARK)?;
    ensure!(
        blocks.len() >= 3,
        "docs/install.md marks {} blocks with {MARK}; expected the version, the exporter and the relay",
        blocks.len()
    );
    Ok(blocks)
}

/// The fenced `sh` blocks of `doc` (named `name` in errors) each directly after a `mark` line.
fn blocks_after(name: &str, doc: &str, mark: &str) -> Result<Vec<String>> {
    let mut blocks = Vec::new();
    let mut lines = doc.lines().enumerate();
    while let Some((number, line)) = lines.next() {
        if line.trim() != mark {
            continue;
        }
        let fence = lines.next().map(|(_, l)| l.trim());
        ensure!(
            fence == Some("```sh"),
            "{name}:{}: {mark} is not followed by a ```sh block",
            number + 1
        );
        let mut block = String::new();
        let mut closed = false;
        for (_, line) in lines.by_ref() {
            if line.trim() == "```" {
                closed = true;
                break;
            }
            block.push_str(line);
            block.push('\n');
        }
        ensure!(closed, "{name}:{}: the block is not closed", number + 1);
        blocks.push(block);
    }
    Ok(blocks)
}

/// Both `.deb`s of `cargo xtask dist` for this machine.
fn packages() -> Result<Vec<PathBuf>> {
    let target_dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    let out = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .context("cannot run dpkg")?;
    let arch = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let version = crate::dist::crate_version()?;
    ["pi-exporter", "alert-relay"]
        .into_iter()
        .map(|p| crate::dist::find_deb(&target_dir.join("debian"), p, &version, &arch))
        .collect()
}

/// The overlay root and what is mounted in it.
struct Scratch {
    base: PathBuf,
    root: PathBuf,
    /// Mounted so far, innermost last.
    mounted: Vec<PathBuf>,
}

impl Scratch {
    fn mount() -> Result<Self> {
        let base = std::env::temp_dir().join(format!("xtask-install-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let root = base.join("root");
        for dir in ["upper", "work", "root"] {
            std::fs::create_dir_all(base.join(dir))?;
        }
        let mut scratch = Self {
            base: base.clone(),
            root: root.clone(),
            mounted: Vec::new(),
        };
        let overlay = format!(
            "lowerdir=/,upperdir={},workdir={}",
            base.join("upper").display(),
            base.join("work").display()
        );
        let mounts: [(&[&str], PathBuf); 3] = [
            (
                &["-t", "overlay", "overlay", "-o", overlay.as_str()],
                root.clone(),
            ),
            (&["-t", "proc", "proc"], root.join("proc")),
            (&["--bind", "/dev"], root.join("dev")),
        ];
        for (args, at) in mounts {
            let status = Command::new("mount").args(args).arg(&at).status();
            if !status.as_ref().is_ok_and(|s| s.success()) {
                let _ = scratch.unmount();
                bail!("mount {args:?} {} failed: {status:?}", at.display());
            }
            scratch.mounted.push(at);
        }
        Ok(scratch)
    }

    /// A path of the scratch root, e.g. `path("/etc/alert-relay")`.
    fn path(&self, absolute: &str) -> PathBuf {
        self.root.join(absolute.trim_start_matches('/'))
    }

    /// Runs `script` with bash inside the scratch root, in `dir`, as root.
    fn shell(&self, dir: &Path, script: &str) -> Result<String> {
        let out = Command::new("chroot")
            .arg(&self.root)
            .args(["/usr/bin/env", "-i"])
            .args([
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME=/root",
                "LANG=C.UTF-8",
                "DEBIAN_FRONTEND=noninteractive",
                "SYSTEMD_OFFLINE=1",
            ])
            .args(["/bin/bash", "-c"])
            .arg(format!("cd {} && {script}", shell_quote(dir)))
            .output()
            .context("cannot run chroot")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(
            out.status.success(),
            "{} in the scratch root:\n{text}",
            out.status
        );
        Ok(text)
    }

    fn unmount(mut self) -> Result<()> {
        let mut failed = Vec::new();
        while let Some(at) = self.mounted.pop() {
            let ok = Command::new("umount")
                .arg(&at)
                .status()
                .is_ok_and(|s| s.success());
            // Something still open inside: detach it now, the kernel frees it when closed.
            let lazy = ok
                || Command::new("umount")
                    .arg("-l")
                    .arg(&at)
                    .status()
                    .is_ok_and(|s| s.success());
            if !lazy {
                failed.push(at);
            }
        }
        ensure!(failed.is_empty(), "cannot unmount {failed:?}");
        std::fs::remove_dir_all(&self.base)
            .with_context(|| format!("removing {}", self.base.display()))
    }
}

fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// The doc's blocks, in a working directory that holds the repository's files (the doc runs
/// from a checkout) and the packages, as its download steps would leave them.
fn install(scratch: &Scratch, blocks: &[String], debs: &[PathBuf]) -> Result<()> {
    let work = Path::new(WORK);
    let here = scratch.path(&work.display().to_string());
    std::fs::create_dir_all(&here)?;
    for dir in ["prometheus", "grafana", "deploy"] {
        let status = Command::new("cp")
            .arg("-a")
            .arg(root().join(dir))
            .arg(&here)
            .status()?;
        ensure!(
            status.success(),
            "copying {dir} into the scratch root failed"
        );
    }
    for deb in debs {
        let name = deb.file_name().context("a package without a name")?;
        std::fs::copy(deb, here.join(name))?;
    }
    // `apt install` asks before it installs more than the package (the doc's reader answers),
    // and would upgrade an installed package named on its command line (no network here).
    std::fs::write(
        scratch.path("/etc/apt/apt.conf.d/99install-test"),
        "APT::Get::Assume-Yes \"true\";\nAPT::Get::Upgrade \"false\";\n",
    )?;
    // The Debian way to keep maintainer scripts from starting services in a chroot.
    let policy = scratch.path("/usr/sbin/policy-rc.d");
    std::fs::write(&policy, "#!/bin/sh\nexit 101\n")?;
    std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o755))?;
    let script = format!("{PRELUDE}{}", blocks.concat());
    let output = scratch.shell(work, &script)?;
    eprintln!("{output}");
    Ok(())
}

/// The numeric id of `name` in the scratch root's `passwd` or `group` file.
fn id_of(scratch: &Scratch, file: &str, name: &str) -> Result<u32> {
    let text = std::fs::read_to_string(scratch.path(file))?;
    text.lines()
        .find_map(|l| {
            let mut fields = l.split(':');
            (fields.next() == Some(name)).then(|| fields.nth(1)?.parse().ok())?
        })
        .with_context(|| format!("no {name} in {file}"))
}

/// `path` is owned by `uid:gid` with `mode`.
fn owned(scratch: &Scratch, path: &str, uid: u32, gid: u32, mode: u32) -> Result<()> {
    let meta = std::fs::metadata(scratch.path(path)).with_context(|| path.to_owned())?;
    let found = (meta.uid(), meta.gid(), meta.permissions().mode() & 0o7777);
    ensure!(
        found == (uid, gid, mode),
        "{path} is {}:{} {:04o}, expected {uid}:{gid} {mode:04o}",
        found.0,
        found.1,
        found.2
    );
    Ok(())
}

fn check(scratch: &Scratch) -> Result<()> {
    id_of(scratch, "/etc/passwd", "pi-exporter")?;
    id_of(scratch, "/etc/passwd", "alert-relay")?;
    let relay = id_of(scratch, "/etc/group", "alert-relay")?;
    let prometheus = id_of(scratch, "/etc/passwd", "prometheus")?;
    owned(scratch, "/etc/alert-relay", 0, relay, 0o750)?;
    for file in ["token", "slack", "relay.yml"] {
        owned(
            scratch,
            &format!("/etc/alert-relay/{file}"),
            0,
            relay,
            0o640,
        )?;
    }
    let meta = std::fs::metadata(scratch.path("/etc/prometheus/alert-relay.token"))?;
    ensure!(
        meta.uid() == prometheus && meta.permissions().mode() & 0o077 == 0,
        "/etc/prometheus/alert-relay.token is not the prometheus user's alone"
    );
    ensure!(
        std::fs::read(scratch.path("/etc/alert-relay/token"))?
            == std::fs::read(scratch.path("/etc/prometheus/alert-relay.token"))?,
        "Alertmanager's token differs from the relay's"
    );
    for (shipped, source) in [
        ("/etc/default/alert-relay", "deploy/default/alert-relay"),
        ("/etc/default/pi-exporter", "deploy/default/pi-exporter"),
    ] {
        ensure!(
            std::fs::read(scratch.path(shipped))? == std::fs::read(root().join(source))?,
            "{shipped} differs from {source}"
        );
    }
    for name in ["pi-exporter", "alert-relay"] {
        for path in [
            format!("/usr/bin/{name}"),
            format!("/usr/share/bash-completion/completions/{name}"),
            format!("/usr/share/zsh/vendor-completions/_{name}"),
            format!("/usr/share/fish/vendor_completions.d/{name}.fish"),
            format!("/usr/share/man/man1/{name}.1.gz"),
        ] {
            ensure!(scratch.path(&path).is_file(), "{path} is not installed");
        }
        let wants = format!("/etc/systemd/system/multi-user.target.wants/{name}.service");
        ensure!(
            scratch.path(&wants).is_symlink(),
            "{name}.service is not enabled ({wants})"
        );
    }
    // Installed as the package manager sees it, and the relay's configuration readable by it.
    let status = scratch.shell(
        Path::new("/"),
        "dpkg-query -W -f='${Package} ${db:Status-Abbrev}\\n' pi-exporter alert-relay",
    )?;
    ensure!(
        status
            .lines()
            .filter(|l| l.trim_end().ends_with("ii"))
            .count()
            == 2,
        "not both installed: {status}"
    );
    scratch.shell(
        Path::new("/"),
        "runuser -u alert-relay -- alert-relay check-config \"$(. /etc/default/alert-relay; echo $ALERT_RELAY_CONFIG)\"",
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_readme_relay_check_becomes_the_installed_binary() {
        let readme = "# x\n\n## Run the alert relay\n\n```sh\nexport T=1   # why\n\
                      cargo run --release -p alert-relay -- check-config a.yml\n\
                      cargo run --release -p alert-relay -- run --config a.yml\n```\n\n## Next\n\
                      cargo run --release -p alert-relay -- check-config other.yml\n";
        assert_eq!(
            super::readme_relay_check(readme).expect("found"),
            "export T=1   # why\nalert-relay check-config a.yml"
        );
        assert!(super::readme_relay_check("## Run the alert relay\nnothing\n").is_err());
    }

    #[test]
    fn the_readme_walkthrough_starts_relay_and_chat_then_posts() {
        let readme = "# x\n\n## Run the alert relay\n\n```sh\nexport T=1\n\
                      cargo run --release -p alert-relay -- run --config a.yml\n```\n\
                      <!-- walkthrough -->\n```sh\npython3 chat.py\ncurl x\n```\n";
        let script = super::readme_walkthrough(readme).expect("found");
        let at = |needle: &str| {
            script
                .find(needle)
                .unwrap_or_else(|| panic!("{needle}: {script}"))
        };
        assert!(at("export T=1") < at("python3 chat.py > /tmp/walkthrough-chat.log 2>&1 &"));
        assert!(at("python3 chat.py") < at("alert-relay run --config a.yml > /tmp/"));
        assert!(at("/healthz") < at("curl x") && at("curl x") < at("grep -q 'FIRING"));
        let without = "# x\n## Run the alert relay\n```sh\ncargo run --release -p alert-relay -- run --config a.yml\n```\n";
        assert!(super::readme_walkthrough(without).is_err());
    }

    #[test]
    fn marked_blocks_are_taken_in_order_and_others_left_out() {
        let doc = "intro\n<!-- install-test -->\n```sh\na=1\n```\n```sh\nwget x\n```\n\
                   <!-- install-test -->\n```sh\nb=2\nc=3\n```\n<!-- install-test -->\n```sh\nd\n```\n";
        let blocks = super::marked_blocks(doc).expect("blocks");
        assert_eq!(blocks, ["a=1\n", "b=2\nc=3\n", "d\n"]);
        assert!(super::marked_blocks("<!-- install-test -->\ntext\n").is_err());
        assert!(super::marked_blocks("<!-- install-test -->\n```sh\nopen\n").is_err());
    }
}
