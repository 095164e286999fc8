//! Where the exporter reads the system from (`--path.*` flags), so every collector can run on a
//! fixture tree in tests and on a host's tree from inside a container.

use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub procfs: PathBuf,
    pub sysfs: PathBuf,
    pub rootfs: PathBuf,
    pub devfs: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Self {
            procfs: "/proc".into(),
            sysfs: "/sys".into(),
            rootfs: "/".into(),
            devfs: "/dev".into(),
        }
    }
}

impl Paths {
    /// A path below procfs, e.g. `proc("self/mounts")`.
    pub fn proc(&self, rel: &str) -> PathBuf {
        self.procfs.join(rel)
    }

    /// A path below sysfs, e.g. `sys("fs/ext4")`.
    pub fn sys(&self, rel: &str) -> PathBuf {
        self.sysfs.join(rel)
    }

    /// A path below devfs, e.g. `dev("vcio")`.
    pub fn dev(&self, rel: &str) -> PathBuf {
        self.devfs.join(rel)
    }

    /// An absolute host path seen through the root filesystem prefix.
    pub fn rooted(&self, absolute: &str) -> PathBuf {
        self.rootfs.join(absolute.trim_start_matches('/'))
    }

    /// The paths that differ from the machine's own, as `procfs PATH, rootfs PATH` for the
    /// start-up log; `None` when all are the defaults.
    pub fn describe_non_default(&self) -> Option<String> {
        let default = Self::default();
        let parts: Vec<String> = [
            ("procfs", &self.procfs, &default.procfs),
            ("sysfs", &self.sysfs, &default.sysfs),
            ("rootfs", &self.rootfs, &default.rootfs),
            ("devfs", &self.devfs, &default.devfs),
        ]
        .into_iter()
        .filter(|(_, path, default)| path != default)
        .map(|(name, path, _)| format!("{name} {}", path.display()))
        .collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    }

    /// Removes the rootfs prefix from a mount point as the kernel reports it, so a containerised
    /// exporter with `--path.rootfs=/host` reports `/boot`, not `/host/boot`.
    pub fn strip_rootfs<'a>(&self, mountpoint: &'a str) -> &'a str {
        let root = self.rootfs.to_str().unwrap_or("/").trim_end_matches('/');
        if root.is_empty() {
            return mountpoint;
        }
        match mountpoint.strip_prefix(root) {
            Some("") => "/",
            Some(rest) if rest.starts_with('/') => rest,
            _ => mountpoint,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_rootfs_prefix_only_on_component_boundary() {
        let paths = Paths {
            rootfs: "/host".into(),
            ..Paths::default()
        };
        assert_eq!(paths.strip_rootfs("/host"), "/");
        assert_eq!(paths.strip_rootfs("/host/boot/firmware"), "/boot/firmware");
        assert_eq!(paths.strip_rootfs("/hostile"), "/hostile");
        assert_eq!(paths.strip_rootfs("/run"), "/run");
        let default = Paths::default();
        assert_eq!(default.strip_rootfs("/boot"), "/boot");
        assert_eq!(paths.rooted("/boot"), PathBuf::from("/host/boot"));
    }

    #[test]
    fn describes_only_the_paths_that_differ() {
        assert_eq!(Paths::default().describe_non_default(), None);
        let paths = Paths {
            procfs: "/host/proc".into(),
            rootfs: "/host".into(),
            ..Paths::default()
        };
        assert_eq!(
            paths.describe_non_default().as_deref(),
            Some("procfs /host/proc, rootfs /host")
        );
    }
}
