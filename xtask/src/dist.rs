//! `cargo xtask dist [--target TRIPLE [--glibc 2.31]]`: release build of both binaries, their
//! Debian packages (cargo-deb, `--no-build`) under `target/[TRIPLE/]debian/`, and a check of
//! what each package holds. With `--glibc`, the build is `cargo zigbuild --target
//! TRIPLE.GLIBC` (the glibc floor).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail, ensure};

use crate::e2e::tool;
use crate::root;

/// The oldest glibc the packages declare (Raspberry Pi OS Bullseye has 2.31, Bookworm 2.36).
const GLIBC_FLOOR: &str = "libc6 (>= 2.31)";

/// What one package must ship: files (path in the package, source in the repository if it is
/// installed verbatim) and conffiles.
struct Expected {
    package: &'static str,
    files: &'static [(&'static str, Option<&'static str>)],
    conffiles: &'static [&'static str],
    /// The unit's `StateDirectory=`, where the binary's default state lives (`/var/lib/<it>`).
    state_directory: &'static str,
}

const PACKAGES: &[Expected] = &[
    Expected {
        package: "pi-exporter",
        files: &[
            ("usr/bin/pi-exporter", None),
            (
                "usr/lib/systemd/system/pi-exporter.service",
                Some("deploy/systemd/pi-exporter.service"),
            ),
            (
                "usr/lib/systemd/system/pi-exporter-poweroff.path",
                Some("deploy/systemd/pi-exporter-poweroff.path"),
            ),
            (
                "usr/lib/systemd/system/pi-exporter-poweroff.service",
                Some("deploy/systemd/pi-exporter-poweroff.service"),
            ),
            (
                "usr/lib/sysusers.d/pi-exporter.conf",
                Some("deploy/sysusers/pi-exporter.conf"),
            ),
            ("usr/libexec/pi-exporter/request-poweroff", None),
            ("etc/default/pi-exporter", None),
        ],
        conffiles: &["/etc/default/pi-exporter"],
        // --collector.history.state-file defaults to /var/lib/pi-exporter/history.
        state_directory: "pi-exporter",
    },
    Expected {
        package: "alert-relay",
        files: &[
            ("usr/bin/alert-relay", None),
            (
                "usr/lib/systemd/system/alert-relay.service",
                Some("deploy/systemd/alert-relay.service"),
            ),
            (
                "usr/lib/sysusers.d/alert-relay.conf",
                Some("deploy/sysusers/alert-relay.conf"),
            ),
            (
                "usr/share/doc/alert-relay/relay.example.yml",
                Some("deploy/alert-relay.example.yml"),
            ),
        ],
        conffiles: &[],
        state_directory: "alert-relay",
    },
];

pub(crate) fn dist(args: &[String]) -> Result<()> {
    let mut target = None;
    let mut glibc = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--target" => target = Some(it.next().context("--target needs a triple")?.clone()),
            "--glibc" => glibc = Some(it.next().context("--glibc needs a version")?.clone()),
            other => bail!(
                "usage: cargo xtask dist [--target TRIPLE [--glibc 2.31]] (unknown {other:?})"
            ),
        }
    }
    let cargo_bin = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let has_deb = Command::new(&cargo_bin)
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_deb {
        bail!(
            "cargo-deb is not installed: run `cargo install cargo-deb --locked` (.ci/run does this)"
        );
    }
    let zig_target = match (&target, &glibc) {
        (Some(t), Some(g)) => Some(format!("{t}.{g}")),
        (None, Some(_)) => bail!("--glibc needs --target"),
        _ => None,
    };
    let build_cmd = if zig_target.is_some() {
        "zigbuild"
    } else {
        "build"
    };
    let mut build = vec![
        build_cmd,
        "--release",
        "--locked",
        "-p",
        "pi-exporter",
        "-p",
        "alert-relay",
    ];
    if let Some(t) = zig_target.as_ref().or(target.as_ref()) {
        build.extend(["--target", t.as_str()]);
    }
    crate::cargo(&build)?;
    for pkg in PACKAGES {
        let mut deb = vec!["deb", "--no-build", "--no-strip", "-p", pkg.package];
        if let Some(t) = &target {
            deb.extend(["--target", t.as_str()]);
        }
        crate::cargo(&deb)?;
    }

    let target_dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    let debian = match &target {
        Some(t) => target_dir.join(t).join("debian"),
        None => target_dir.join("debian"),
    };
    let version = crate_version()?;
    for pkg in PACKAGES {
        let found = std::fs::read_dir(&debian)
            .with_context(|| format!("reading {}", debian.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    n.starts_with(&format!("{}_{version}-", pkg.package)) && n.ends_with(".deb")
                })
            })
            .with_context(|| {
                format!(
                    "no {} {version} package in {}",
                    pkg.package,
                    debian.display()
                )
            })?;
        verify(pkg, &found).with_context(|| format!("checking {}", found.display()))?;
        eprintln!("ok: {}", found.display());
    }
    Ok(())
}

/// The workspace's version (both crates share it).
fn crate_version() -> Result<String> {
    let manifest = std::fs::read_to_string(root().join("crates/pi-exporter/Cargo.toml"))?;
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .map(str::to_owned)
        .context("no version in crates/pi-exporter/Cargo.toml")
}

/// Unpacks the package (`dpkg-deb --raw-extract`: files, control files under `DEBIAN/`) and
/// checks it against what the repository ships.
fn verify(pkg: &Expected, deb: &Path) -> Result<()> {
    let dir =
        std::env::temp_dir().join(format!("xtask-dist-{}-{}", pkg.package, std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(tool("dpkg-deb", "dpkg")?)
        .arg("--raw-extract")
        .arg(deb)
        .arg(&dir)
        .output()?;
    ensure!(
        out.status.success(),
        "dpkg-deb --raw-extract: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result = check_tree(pkg, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn check_tree(pkg: &Expected, dir: &Path) -> Result<()> {
    let read =
        |name: &str| std::fs::read_to_string(dir.join("DEBIAN").join(name)).unwrap_or_default();
    let control = read("control");
    ensure!(
        control
            .lines()
            .any(|l| l.starts_with("Depends:") && l.contains(GLIBC_FLOOR)),
        "Depends does not declare the glibc floor {GLIBC_FLOOR}:\n{control}"
    );
    for (path, source) in pkg.files {
        let shipped =
            std::fs::read(dir.join(path)).with_context(|| format!("{path} is missing"))?;
        if let Some(source) = source {
            ensure!(
                shipped == std::fs::read(root().join(source))?,
                "{path} differs from {source}"
            );
        }
    }
    let conffiles = read("conffiles");
    let declared: Vec<&str> = conffiles.lines().filter(|l| !l.is_empty()).collect();
    ensure!(
        declared == pkg.conffiles,
        "conffiles are {declared:?}, expected {:?}",
        pkg.conffiles
    );
    // The system user is created exactly once, by the sysusers snippet cargo-deb adds.
    let postinst = read("postinst");
    let sysusers = postinst
        .lines()
        .filter(|l| l.trim_start().starts_with("systemd-sysusers"))
        .count();
    ensure!(
        sysusers == 1,
        "postinst runs systemd-sysusers {sysusers} times:\n{postinst}"
    );
    let unit_file = format!("usr/lib/systemd/system/{}.service", pkg.package);
    let unit_text = std::fs::read_to_string(dir.join(&unit_file)).unwrap_or_default();
    let state = format!("StateDirectory={}", pkg.state_directory);
    ensure!(
        unit_text.lines().any(|l| l.trim() == state),
        "{unit_file} lacks {state}, where the binary keeps its state"
    );
    let unit = format!("deb-systemd-helper update-state {}.service", pkg.package);
    ensure!(
        postinst.contains(&unit),
        "postinst does not register {}.service with systemd:\n{postinst}",
        pkg.package
    );
    Ok(())
}
