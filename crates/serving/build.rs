//! Records the git revision and compiler version for `rpi_exporter_build_info` and
//! `alert_relay_build_info` (`serving::build`).

use std::process::Command;

fn output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn main() {
    // PI_EXPORTER_REVISION: the name this override had when only the exporter reported it.
    let overridden = ["PIFLEET_REVISION", "PI_EXPORTER_REVISION"];
    let revision = overridden
        .iter()
        .find_map(|name| std::env::var(name).ok())
        .or_else(|| output("git", &["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = output(&rustc, &["--version"])
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=PIFLEET_REVISION={revision}");
    println!("cargo:rustc-env=PIFLEET_RUSTC={rustc_version}");
    for name in overridden {
        println!("cargo:rerun-if-env-changed={name}");
    }
    // Asked of git, as a worktree keeps HEAD apart from the shared refs. Only existing paths:
    // cargo reruns a build script on every build while one it watches is missing.
    for path in ["HEAD", "refs/heads", "packed-refs"] {
        if let Some(path) = output("git", &["rev-parse", "--git-path", path])
            && std::path::Path::new(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
