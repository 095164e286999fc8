//! Whether the trees the doctor reads (`--path.rootfs`, `--path.procfs`, `--path.sysfs`) exist
//! and look like what their flags say. A check that reads a tree that does not is SKIPped with
//! the tree's problem as its reason: an empty or wrong tree would only give guesses (no mounts,
//! no configuration: WARNs about nothing).

use std::path::Path;

use crate::paths::Paths;

/// A tree the checks read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Root {
    Rootfs,
    Procfs,
    Sysfs,
}

impl Root {
    fn flag(self) -> &'static str {
        match self {
            Self::Rootfs => "--path.rootfs",
            Self::Procfs => "--path.procfs",
            Self::Sysfs => "--path.sysfs",
        }
    }

    /// Entries of which at least one is in every such tree, and what the tree should be.
    fn landmarks(self) -> (&'static [&'static str], &'static str) {
        match self {
            Self::Rootfs => (&["etc"], "a Linux root filesystem"),
            Self::Procfs => (&["self", "stat"], "a procfs"),
            Self::Sysfs => (&["class", "devices"], "a sysfs"),
        }
    }
}

/// A tree that is missing or does not look like what its flag names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootProblem {
    pub(crate) root: Root,
    /// One line for the top of the report, e.g. `--path.procfs=/x does not exist`.
    pub message: String,
}

/// The problems of the three trees, in the order rootfs, procfs, sysfs; empty when all look
/// right.
pub fn problems(paths: &Paths) -> Vec<RootProblem> {
    [
        (Root::Rootfs, &paths.rootfs),
        (Root::Procfs, &paths.procfs),
        (Root::Sysfs, &paths.sysfs),
    ]
    .into_iter()
    .filter_map(|(root, dir)| {
        problem(root, dir).map(|why| RootProblem {
            root,
            message: format!("{}={} {why}", root.flag(), dir.display()),
        })
    })
    .collect()
}

/// Why `dir` is not a usable `root`, if it is not.
fn problem(root: Root, dir: &Path) -> Option<String> {
    let (landmarks, what) = root.landmarks();
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Some("does not exist".to_owned());
        }
        Err(e) => return Some(format!("cannot be read: {e}")),
        Ok(m) if !m.is_dir() => return Some("is not a directory".to_owned()),
        Ok(_) => {}
    }
    if landmarks.iter().any(|l| dir.join(l).exists()) {
        return None;
    }
    let names: Vec<String> = landmarks.iter().map(|l| format!("{l}/")).collect();
    Some(format!(
        "does not look like {what} (it has no {})",
        names.join(" or ")
    ))
}

/// The reason a check that reads `reads` cannot run, if one of those trees has a problem.
pub(crate) fn skip_reason(reads: &[Root], problems: &[RootProblem]) -> Option<String> {
    let hit: Vec<&str> = problems
        .iter()
        .filter(|p| reads.contains(&p.root))
        .map(|p| p.message.as_str())
        .collect();
    (!hit.is_empty()).then(|| format!("not checked: {}", hit.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tree_and_a_tree_of_the_wrong_kind_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let proc = dir.path().join("proc");
        std::fs::create_dir_all(proc.join("self")).expect("mkdir");
        // A sysfs without class/ or devices/, and no rootfs at all.
        let sys = dir.path().join("sys");
        std::fs::create_dir_all(sys.join("firmware")).expect("mkdir");
        let paths = Paths {
            procfs: proc,
            sysfs: sys.clone(),
            rootfs: dir.path().join("nowhere"),
            devfs: dir.path().join("dev"),
        };
        let found = problems(&paths);
        let messages: Vec<&str> = found.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                format!(
                    "--path.rootfs={} does not exist",
                    dir.path().join("nowhere").display()
                ),
                format!(
                    "--path.sysfs={} does not look like a sysfs (it has no class/ or devices/)",
                    sys.display()
                ),
            ]
        );
        assert_eq!(skip_reason(&[Root::Procfs], &found), None, "procfs is fine");
        let reason = skip_reason(&[Root::Procfs, Root::Rootfs], &found).expect("skipped");
        assert!(
            reason.starts_with("not checked: --path.rootfs="),
            "{reason}"
        );
    }

    #[test]
    fn the_host_trees_look_right() {
        assert_eq!(problems(&Paths::default()), []);
    }
}
