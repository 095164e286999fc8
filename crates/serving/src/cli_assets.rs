//! Shell completions (bash, zsh, fish) and man pages generated from a binary's clap definition.
//! `cargo xtask dist` builds each binary with the `cli-assets` feature, runs its hidden
//! `generate-cli-assets DIR` and packages what it wrote; the shipped binaries lack this module,
//! and no `build.rs` slows every build with it.

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Command;
use clap_complete::Shell;

/// The hidden first argument that writes the assets instead of running the binary.
pub const SUBCOMMAND: &str = "generate-cli-assets";

/// Where each asset goes below the directory given to [`write`] (the package maps these to the
/// Debian paths: `/usr/share/bash-completion/completions/`, `/usr/share/zsh/vendor-completions/`,
/// `/usr/share/fish/vendor_completions.d/`, `/usr/share/man/man1/`).
pub const SHELLS: [(Shell, &str); 3] = [
    (Shell::Bash, "bash"),
    (Shell::Zsh, "zsh"),
    (Shell::Fish, "fish"),
];

/// If the arguments are `generate-cli-assets DIR`, writes the assets of `command` into `DIR`,
/// prints each file written and returns the exit status (`None`: run the binary as usual).
pub fn run_if_asked(
    args: &[std::ffi::OsString],
    command: impl FnOnce() -> Command,
) -> Option<ExitCode> {
    let dir = match args {
        [_, first, dir] if first.as_os_str() == SUBCOMMAND => Path::new(dir),
        [_, first, ..] if first.as_os_str() == SUBCOMMAND => {
            eprintln!("usage: {SUBCOMMAND} DIR");
            return Some(ExitCode::from(2));
        }
        _ => return None,
    };
    let command = command();
    let name = command.get_name().to_owned();
    Some(match write(command, dir) {
        Ok(files) => {
            for file in files {
                println!("{}", file.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{name} {SUBCOMMAND}: {}: {e}", dir.display());
            ExitCode::from(2)
        }
    })
}

/// Writes `DIR/bash/NAME.bash`, `DIR/zsh/_NAME`, `DIR/fish/NAME.fish` and `DIR/man/NAME.1` plus one
/// page per subcommand (`NAME-SUB.1`).
pub fn write(mut command: Command, dir: &Path) -> io::Result<Vec<PathBuf>> {
    let name = command.get_name().to_owned();
    let mut written = Vec::new();
    // Pages first: completing builds the command, which adds the `help` subcommand that the
    // pages leave out (it is completed, not documented).
    let man = dir.join("man");
    std::fs::create_dir_all(&man)?;
    clap_mangen::generate_to(command.clone(), &man)?;
    for entry in std::fs::read_dir(&man)? {
        written.push(entry?.path());
    }
    for (shell, sub) in SHELLS {
        let out = dir.join(sub);
        std::fs::create_dir_all(&out)?;
        written.push(clap_complete::generate_to(
            shell,
            &mut command,
            &name,
            &out,
        )?);
    }
    written.sort();
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_completions_for_each_shell_and_a_page_per_subcommand() {
        let dir = tempfile::tempdir().expect("tempdir");
        let command = Command::new("demo")
            .about("A demo")
            .arg(clap::Arg::new("flag").long("flag"))
            .subcommand(Command::new("check").about("Checks"));
        let written = write(command, dir.path()).expect("write");
        let names: Vec<String> = written
            .iter()
            .map(|p| {
                p.strip_prefix(dir.path())
                    .expect("below dir")
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(
            names,
            [
                "bash/demo.bash",
                "fish/demo.fish",
                "man/demo-check.1",
                "man/demo.1",
                "zsh/_demo"
            ]
        );
        let fish = std::fs::read_to_string(dir.path().join("fish/demo.fish")).expect("fish");
        assert!(fish.contains("-l flag"), "{fish}");
        let page = std::fs::read_to_string(dir.path().join("man/demo.1")).expect("man");
        assert!(page.contains("demo\\-check(1)"), "{page}");
    }

    #[test]
    fn only_the_exact_arguments_ask_for_assets() {
        let args = |a: &[&str]| {
            a.iter()
                .map(Into::into)
                .collect::<Vec<std::ffi::OsString>>()
        };
        let demo = || Command::new("demo");
        assert!(run_if_asked(&args(&["demo", "run"]), demo).is_none());
        assert!(run_if_asked(&args(&["demo"]), demo).is_none());
        let usage = run_if_asked(&args(&["demo", SUBCOMMAND]), demo).expect("asked");
        assert_eq!(usage, ExitCode::from(2));
        let dir = tempfile::tempdir().expect("tempdir");
        let dir = dir.path().to_string_lossy().into_owned();
        let done = run_if_asked(&args(&["demo", SUBCOMMAND, &dir]), demo).expect("asked");
        assert_eq!(done, ExitCode::SUCCESS);
        assert!(Path::new(&dir).join("zsh/_demo").is_file());
    }
}
