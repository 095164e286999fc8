//! `cargo xtask dist [--target TRIPLE [--glibc 2.31]] [--runner "CMD ARGS"]`: release build of
//! both binaries, their shell completions and man pages (generated from the clap definitions by
//! a host build with the `cli-assets` feature), their Debian packages (cargo-deb, `--no-build`)
//! under `target/[TRIPLE/]debian/`, and a check of what each package holds: files, conffiles,
//! maintainer scripts, dependencies, the architecture, the binary's ELF machine (and ARMv6 for
//! `armhf`), the glibc floor with `--glibc`, and that the packaged binary runs (`--version`:
//! natively for this machine's architecture, else through `--runner`, e.g.
//! `qemu-arm -cpu arm1176 -L SYSROOT`; without one a foreign binary is not run, and this says so).
//! With `--glibc`, the build is `cargo zigbuild --target TRIPLE.GLIBC` (the glibc floor).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail, ensure};

use crate::e2e::tool;
use crate::root;

/// The oldest glibc the packages declare (Raspberry Pi OS Bullseye has 2.31, Bookworm 2.36).
const GLIBC_FLOOR: &str = "libc6 (>= 2.31)";

/// A target the packages are built for: its Debian architecture and ELF machine (`e_machine`).
struct Arch {
    triple: &'static str,
    debian: &'static str,
    elf_machine: u16,
}

/// `armhf` is built for ARMv6 + VFP (`arm-unknown-linux-gnueabihf`): Raspberry Pi OS's 32-bit
/// userland, which runs on every Pi from the Pi 1 and Zero on; an ARMv7 binary does not.
const ARCHES: &[Arch] = &[
    Arch {
        triple: "x86_64-unknown-linux-gnu",
        debian: "amd64",
        elf_machine: 62,
    },
    Arch {
        triple: "aarch64-unknown-linux-gnu",
        debian: "arm64",
        elf_machine: 183,
    },
    Arch {
        triple: "arm-unknown-linux-gnueabihf",
        debian: "armhf",
        elf_machine: 40,
    },
];

/// What one package must ship: files (path in the package, source in the repository if it is
/// installed verbatim) and conffiles.
struct Expected {
    package: &'static str,
    files: &'static [(&'static str, Option<&'static str>)],
    conffiles: &'static [&'static str],
    /// The unit's `StateDirectory=`, where the binary's default state lives (`/var/lib/<it>`).
    state_directory: &'static str,
    /// Dependencies `Depends:` must name besides the glibc floor.
    depends: &'static [&'static str],
    /// Lines the postinst must run after cargo-deb's snippets (which create the user).
    postinst_after_user: &'static [&'static str],
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
        depends: &[],
        postinst_after_user: &[],
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
            (
                "etc/default/alert-relay",
                Some("deploy/default/alert-relay"),
            ),
        ],
        conffiles: &["/etc/default/alert-relay"],
        state_directory: "alert-relay",
        // Every provider call verifies TLS against the system's roots.
        depends: &["ca-certificates"],
        // /etc/alert-relay for relay.yml and its secrets: root:alert-relay 0750.
        postinst_after_user: &["install -d -o root -g alert-relay -m 0750 /etc/alert-relay"],
    },
];

/// What `cargo xtask dist` was asked for.
struct Request {
    arch: &'static Arch,
    /// Given: a cross build (`--target`), packages under `target/TRIPLE/debian/`.
    target: Option<String>,
    glibc: Option<String>,
    runner: Option<String>,
}

fn parse(args: &[String]) -> Result<Request> {
    let mut target = None;
    let mut glibc = None;
    let mut runner = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--target" => target = Some(it.next().context("--target needs a triple")?.clone()),
            "--glibc" => glibc = Some(it.next().context("--glibc needs a version")?.clone()),
            "--runner" => runner = Some(it.next().context("--runner needs a command")?.clone()),
            other => bail!(
                "usage: cargo xtask dist [--target TRIPLE [--glibc 2.31]] [--runner CMD] \
                 (unknown {other:?})"
            ),
        }
    }
    if glibc.is_some() && target.is_none() {
        bail!("--glibc needs --target");
    }
    let triple = target.as_deref().unwrap_or(host_triple());
    let arch = ARCHES
        .iter()
        .find(|a| a.triple == triple)
        .with_context(|| {
            let known: Vec<_> = ARCHES.iter().map(|a| a.triple).collect();
            format!("no package architecture for {triple}; known: {known:?}")
        })?;
    Ok(Request {
        arch,
        target,
        glibc,
        runner,
    })
}

/// This machine's triple (the packages' target without `--target`).
fn host_triple() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "aarch64-unknown-linux-gnu",
        "arm" => "arm-unknown-linux-gnueabihf",
        _ => "x86_64-unknown-linux-gnu",
    }
}

pub(crate) fn dist(args: &[String]) -> Result<()> {
    let request = parse(args)?;
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
    let zig_target = request
        .glibc
        .as_ref()
        .map(|g| format!("{}.{g}", request.arch.triple));
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
    if let Some(t) = zig_target.as_ref().or(request.target.as_ref()) {
        build.extend(["--target", t.as_str()]);
    }
    crate::cargo(&build)?;

    let target_dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    let out_dir = match &request.target {
        Some(t) => target_dir.join(t),
        None => target_dir.clone(),
    };
    generate_cli_assets(&target_dir, &out_dir.join("release/cli-assets"))?;
    for pkg in PACKAGES {
        let mut deb = vec!["deb", "--no-build", "--no-strip", "-p", pkg.package];
        if let Some(t) = &request.target {
            deb.extend(["--target", t.as_str()]);
        }
        crate::cargo(&deb)?;
    }

    let debian = out_dir.join("debian");
    let version = crate_version()?;
    for pkg in PACKAGES {
        let found = find_deb(&debian, pkg.package, &version, request.arch.debian)?;
        let assets = out_dir.join("release/cli-assets").join(pkg.package);
        verify(pkg, &found, &request, &assets)
            .with_context(|| format!("checking {}", found.display()))?;
        eprintln!("ok: {}", found.display());
    }
    Ok(())
}

/// The `.deb` of `package` at `version` for `arch` in `dir`.
pub(crate) fn find_deb(dir: &Path, package: &str, version: &str, arch: &str) -> Result<PathBuf> {
    let name = format!("{package}_{version}-1_{arch}.deb");
    let path = dir.join(&name);
    ensure!(
        path.is_file(),
        "no {name} in {} (cargo xtask dist makes it)",
        dir.display()
    );
    Ok(path)
}

/// Completions and man pages of both binaries, from a host build with the `cli-assets`
/// feature (the shipped binaries lack it, and a cross-built one cannot run here), into
/// `out/<binary>/{bash,zsh,fish,man}`; man pages gzipped as Debian ships them.
fn generate_cli_assets(target_dir: &Path, out: &Path) -> Result<()> {
    crate::cargo(&[
        "build",
        "--locked",
        "-p",
        "pi-exporter",
        "-p",
        "alert-relay",
        "--features",
        "pi-exporter/cli-assets,alert-relay/cli-assets",
    ])?;
    for pkg in PACKAGES {
        let dir = out.join(pkg.package);
        let _ = std::fs::remove_dir_all(&dir);
        let bin = target_dir.join("debug").join(pkg.package);
        let status = Command::new(&bin)
            .arg("generate-cli-assets")
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .status()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        ensure!(
            status.success(),
            "{} generate-cli-assets: {status}",
            bin.display()
        );
        let gzip = Command::new(tool("gzip", "gzip")?)
            .arg("-9nf")
            .args(pages(&dir.join("man"), ".1")?)
            .status()?;
        ensure!(gzip.success(), "gzip of the man pages failed: {gzip}");
    }
    Ok(())
}

/// The files in `dir` whose names end with `suffix`, sorted.
fn pages(dir: &Path, suffix: &str) -> Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    found.sort();
    Ok(found)
}

/// The workspace's version (both crates share it).
pub(crate) fn crate_version() -> Result<String> {
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
fn verify(pkg: &Expected, deb: &Path, request: &Request, assets: &Path) -> Result<()> {
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
    let result = check_control(pkg, &dir, request.arch)
        .and_then(|()| check_files(pkg, &dir))
        .and_then(|()| check_scripts(pkg, &dir))
        .and_then(|()| check_cli_assets(pkg, &dir, assets))
        .and_then(|()| check_binary(pkg, &dir, request));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn control_file(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join("DEBIAN").join(name)).unwrap_or_default()
}

fn check_control(pkg: &Expected, dir: &Path, arch: &Arch) -> Result<()> {
    let control = control_file(dir, "control");
    let field = |name: &str| {
        control
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
            .unwrap_or_default()
            .to_owned()
    };
    let depends = field("Depends");
    ensure!(
        depends.contains(GLIBC_FLOOR),
        "Depends does not declare the glibc floor {GLIBC_FLOOR}:\n{control}"
    );
    for needed in pkg.depends {
        ensure!(
            depends.split(',').any(|d| d.trim() == *needed),
            "Depends lacks {needed}:\n{control}"
        );
    }
    ensure!(
        field("Architecture") == arch.debian,
        "Architecture is {:?}, expected {} for {}",
        field("Architecture"),
        arch.debian,
        arch.triple
    );
    let conffiles = control_file(dir, "conffiles");
    let declared: Vec<&str> = conffiles.lines().filter(|l| !l.is_empty()).collect();
    ensure!(
        declared == pkg.conffiles,
        "conffiles are {declared:?}, expected {:?}",
        pkg.conffiles
    );
    Ok(())
}

fn check_files(pkg: &Expected, dir: &Path) -> Result<()> {
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
    let unit_file = format!("usr/lib/systemd/system/{}.service", pkg.package);
    let unit_text = std::fs::read_to_string(dir.join(&unit_file)).unwrap_or_default();
    let state = format!("StateDirectory={}", pkg.state_directory);
    ensure!(
        unit_text.lines().any(|l| l.trim() == state),
        "{unit_file} lacks {state}, where the binary keeps its state"
    );
    // Its arguments come from the package's /etc/default file.
    let environment = format!("EnvironmentFile=-/etc/default/{}", pkg.package);
    ensure!(
        unit_text.lines().any(|l| l.trim() == environment),
        "{unit_file} lacks {environment}"
    );
    Ok(())
}

fn check_scripts(pkg: &Expected, dir: &Path) -> Result<()> {
    // The system user is created exactly once, by the sysusers snippet cargo-deb adds.
    let postinst = control_file(dir, "postinst");
    let lines: Vec<&str> = postinst.lines().map(str::trim).collect();
    let sysusers: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("systemd-sysusers"))
        .collect();
    ensure!(
        sysusers.len() == 1,
        "postinst runs systemd-sysusers {} times:\n{postinst}",
        sysusers.len()
    );
    for step in pkg.postinst_after_user {
        let at = lines.iter().position(|l| l.contains(step));
        ensure!(
            at.is_some_and(|at| at > sysusers[0]),
            "postinst does not run `{step}` after creating the user:\n{postinst}"
        );
    }
    let unit = format!("deb-systemd-helper update-state {}.service", pkg.package);
    ensure!(
        postinst.contains(&unit),
        "postinst does not register {}.service with systemd:\n{postinst}",
        pkg.package
    );
    Ok(())
}

/// The completions at the Debian paths, identical to what the binary generated, and one man
/// page per generated page (the binary and each subcommand), gzipped.
fn check_cli_assets(pkg: &Expected, dir: &Path, assets: &Path) -> Result<()> {
    let name = pkg.package;
    let completions = [
        (
            format!("usr/share/bash-completion/completions/{name}"),
            format!("bash/{name}.bash"),
        ),
        (
            format!("usr/share/zsh/vendor-completions/_{name}"),
            format!("zsh/_{name}"),
        ),
        (
            format!("usr/share/fish/vendor_completions.d/{name}.fish"),
            format!("fish/{name}.fish"),
        ),
    ];
    for (shipped, generated) in completions {
        let text = std::fs::read_to_string(dir.join(&shipped))
            .with_context(|| format!("{shipped} is missing"))?;
        ensure!(
            text == std::fs::read_to_string(assets.join(&generated))?,
            "{shipped} differs from the generated {generated}"
        );
        ensure!(text.contains(name), "{shipped} does not complete {name}");
    }
    let generated: Vec<String> = pages(&assets.join("man"), ".1.gz")?
        .iter()
        .filter_map(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
        .collect();
    ensure!(
        generated.contains(&format!("{name}.1.gz")),
        "no {name}.1.gz generated: {generated:?}"
    );
    let man1 = dir.join("usr/share/man/man1");
    let shipped: Vec<String> = pages(&man1, ".1.gz")?
        .iter()
        .filter_map(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
        .collect();
    ensure!(
        shipped == generated,
        "man pages {shipped:?}, generated {generated:?}"
    );
    let test = Command::new(tool("gzip", "gzip")?)
        .arg("-t")
        .args(pages(&man1, ".1.gz")?)
        .status()?;
    ensure!(test.success(), "a man page is not valid gzip");
    Ok(())
}

/// The packaged binary: its ELF machine is the target's; an `armhf` one is built for ARMv6
/// (`readelf -A`: `Tag_CPU_arch: v6`), so it runs on a Pi 1 or Zero; with `--glibc`, it needs
/// no newer glibc; and it runs (`--version`) natively or through `--runner`.
fn check_binary(pkg: &Expected, dir: &Path, request: &Request) -> Result<()> {
    let bin = dir.join("usr/bin").join(pkg.package);
    let bytes = std::fs::read(&bin).with_context(|| format!("{}", bin.display()))?;
    ensure!(
        bytes.starts_with(b"\x7fELF"),
        "{} is not an ELF file",
        bin.display()
    );
    let machine = bytes
        .get(18..20)
        .map(|m| u16::from_le_bytes([m[0], m[1]]))
        .context("truncated ELF header")?;
    ensure!(
        machine == request.arch.elf_machine,
        "{} is for ELF machine {machine}, expected {} ({})",
        bin.display(),
        request.arch.elf_machine,
        request.arch.triple
    );
    if request.arch.debian == "armhf" {
        let out = Command::new(tool("readelf", "binutils")?)
            .arg("-A")
            .arg(&bin)
            .output()?;
        let attributes = String::from_utf8_lossy(&out.stdout);
        ensure!(
            attributes.lines().any(|l| matches!(
                l.trim(),
                "Tag_CPU_arch: v6" | "Tag_CPU_arch: v6K" | "Tag_CPU_arch: v6KZ"
            )),
            "{} is not built for ARMv6 (a Pi 1 or Zero cannot run it):\n{attributes}",
            bin.display()
        );
    }
    if let Some(floor) = &request.glibc {
        let out = Command::new(tool("readelf", "binutils")?)
            .arg("--version-info")
            .arg(&bin)
            .output()?;
        let newest = newest_glibc(&String::from_utf8_lossy(&out.stdout));
        ensure!(
            newest.as_ref().is_none_or(|v| *v <= version_parts(floor)),
            "{} needs glibc {newest:?}, newer than the floor {floor}",
            bin.display()
        );
    }
    run_version(pkg, &bin, request)
}

/// `BIN --version` prints the package's name: natively, or through the runner for a foreign
/// architecture (a foreign binary without a runner is not run, and this says so).
fn run_version(pkg: &Expected, bin: &Path, request: &Request) -> Result<()> {
    let mut command = match (&request.runner, request.arch.triple == host_triple()) {
        (Some(runner), _) => {
            let mut words = runner.split_whitespace();
            let mut c = Command::new(words.next().context("empty --runner")?);
            c.args(words).arg(bin);
            c
        }
        (None, true) => Command::new(bin),
        (None, false) => {
            eprintln!(
                "note: {} not run: it is for {}; give --runner (qemu-user) to run it",
                pkg.package, request.arch.triple
            );
            return Ok(());
        }
    };
    let out = command
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && stdout.starts_with(pkg.package),
        "{command:?} failed ({}): {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("ran: {}", stdout.trim());
    Ok(())
}

/// The newest `GLIBC_x.y` version that `readelf --version-info` lists.
fn newest_glibc(version_info: &str) -> Option<Vec<u32>> {
    version_info
        .split(|c: char| c.is_whitespace())
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter(|v| v.starts_with(|c: char| c.is_ascii_digit()))
        .map(version_parts)
        .max()
}

fn version_parts(version: &str) -> Vec<u32> {
    version.split('.').filter_map(|p| p.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use crate::root;

    /// actionlint checks the workflow's syntax; this, what it must do: one job per package
    /// architecture through `cargo xtask dist`, each ARM binary run under qemu-user (ARMv6 as
    /// the Pi 1 and Zero's core), and no ARMv7 build left anywhere.
    #[test]
    fn the_release_workflow_builds_and_runs_every_architecture() {
        let release = std::fs::read_to_string(root().join(".github/workflows/release.yml"))
            .expect("release.yml");
        for arch in super::ARCHES {
            let line = format!("target: {}, arch: {}", arch.triple, arch.debian);
            assert!(release.contains(&line), "release.yml lacks `{line}`");
        }
        for runner in ["qemu-aarch64", "qemu-arm -cpu arm1176", "--runner"] {
            assert!(
                release.contains(runner),
                "release.yml does not use {runner}"
            );
        }
        assert!(release.contains("cargo xtask dist --target"));
        for file in [
            ".github/workflows/release.yml",
            ".github/workflows/ci.yml",
            ".cargo/config.toml",
            "docs/install.md",
        ] {
            let text = std::fs::read_to_string(root().join(file)).expect("read");
            assert!(
                !text.contains("armv7-unknown"),
                "{file} still builds for ARMv7"
            );
        }
    }

    #[test]
    fn the_newest_glibc_is_compared_by_number() {
        let info =
            "0x0010:   Name: GLIBC_2.9  Flags: none\n  Name: GLIBC_2.28 \n Name: GLIBC_PRIVATE";
        assert_eq!(super::newest_glibc(info), Some(vec![2, 28]));
        assert!(super::version_parts("2.28") <= super::version_parts("2.31"));
        assert!(super::version_parts("2.9") < super::version_parts("2.28"));
    }
}
