//! Reading the configuration files the checks look at, the way their programs read them:
//! systemd units and `*.conf` drop-ins, `sshd_config` with `Include`, chrony with `confdir`
//! and `include`, systemd environment files. Parsing is pure (text in, settings out); the
//! `load_*` functions only gather the files under the root filesystem prefix.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use crate::collector::CollectError;
use crate::paths::Paths;

/// Why a configuration could not be read: the check becomes SKIP with this text.
pub(crate) type Reason = String;

fn io_reason(path: &Path, e: &io::Error) -> Reason {
    format!("cannot read {}: {e}", path.display())
}

/// Reads a file that may be absent: `Ok(None)` when it does not exist, `Err` when it exists
/// but cannot be read (permissions, not UTF-8, a directory).
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, Reason> {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| format!("{} is not UTF-8 text", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_reason(path, &e)),
    }
}

/// Whether a path exists (following nothing: a dangling enable symlink still counts).
pub(crate) fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// The sorted entry names of a directory; an absent directory is empty.
pub(crate) fn list_names(dir: &Path) -> Result<Vec<String>, Reason> {
    match crate::collector::parse::list_dir(dir) {
        Err(CollectError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            Ok(Vec::new())
        }
        result => result.map_err(|e| format!("cannot read {e}")),
    }
}

/// Shell-style wildcard match of one path component (`*` and `?`), as glob(3) does for the
/// `Include` patterns of sshd and chrony.
pub(crate) fn wildcard(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    // Hidden files are not matched by a leading wildcard, as in glob(3).
    (pattern.starts_with('.') || !name.starts_with('.')) && go(pattern.as_bytes(), name.as_bytes())
}

/// The files a glob pattern (wildcards in the last component only) names, sorted; host paths,
/// read through the rootfs prefix.
fn glob(paths: &Paths, pattern: &str) -> Result<Vec<String>, Reason> {
    let Some((dir, file)) = pattern.rsplit_once('/') else {
        return Ok(Vec::new());
    };
    if !file.contains(['*', '?']) {
        return Ok(vec![pattern.to_owned()]);
    }
    let dir = if dir.is_empty() { "/" } else { dir };
    Ok(list_names(&paths.rooted(dir))?
        .into_iter()
        .filter(|name| wildcard(file, name))
        .map(|name| format!("{}/{name}", dir.trim_end_matches('/')))
        .collect())
}

// ---------------------------------------------------------------------------------------------
// systemd: unit files, drop-ins, system.conf and journald.conf

/// Where systemd looks for unit files and drop-ins, highest priority first (`man
/// systemd.unit`, system mode; generator directories left out: they are only filled at boot,
/// and /lib for systems without a merged /usr).
pub(crate) const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system.control",
    "/run/systemd/system.control",
    "/run/systemd/transient",
    "/etc/systemd/system",
    "/etc/systemd/system.attached",
    "/run/systemd/system",
    "/run/systemd/system.attached",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// Settings of an INI-style systemd file after all assignments: `section.Key` → values in order.
/// An empty assignment clears what came before, which resets list settings (`ExecStart=`) and
/// returns single-value settings to their default; for those the last value wins.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Settings(BTreeMap<String, Vec<String>>);

impl Settings {
    /// Applies the assignments of one file.
    pub(crate) fn apply(&mut self, text: &str) {
        let mut section = String::new();
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            let mut line = line.trim().to_owned();
            // A trailing backslash continues the line; comment lines inside are skipped and the
            // continuation goes on past them.
            if line.ends_with('\\') {
                line.pop();
                line.push(' ');
                while let Some(next) = lines.next().map(str::trim) {
                    if next.starts_with(['#', ';']) {
                        continue;
                    }
                    line.push_str(next);
                    if !line.ends_with('\\') {
                        break;
                    }
                    line.pop();
                    line.push(' ');
                }
            }
            let line = line.trim();
            if line.is_empty() || line.starts_with(['#', ';']) {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_owned();
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let values = self
                .0
                .entry(format!("{section}.{}", key.trim()))
                .or_default();
            let value = value.trim();
            if value.is_empty() {
                values.clear();
            } else {
                values.push(value.to_owned());
            }
        }
    }

    /// The effective value of a single-value setting.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.last()).map(String::as_str)
    }

    /// All values of a list setting.
    pub(crate) fn all(&self, key: &str) -> &[String] {
        self.0.get(key).map_or(&[], Vec::as_slice)
    }
}

/// A unit as systemd loads it: the file it found and the drop-ins it applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unit {
    pub(crate) file: String,
    pub(crate) dropins: Vec<String>,
    pub(crate) settings: Settings,
}

/// The `*.conf` files of `dirs` (host paths, highest priority first): a file name in a higher
/// directory hides the same name below, and the result is in lexical order of file name, the
/// order systemd (and chrony's `confdir`) applies them.
fn conf_files<S: AsRef<str>>(paths: &Paths, dirs: &[S]) -> Result<Vec<String>, Reason> {
    let mut chosen: BTreeMap<String, String> = BTreeMap::new();
    for dir in dirs {
        let dir = dir.as_ref();
        for file in list_names(&paths.rooted(dir))? {
            if file.ends_with(".conf") {
                chosen
                    .entry(file.clone())
                    .or_insert_with(|| format!("{dir}/{file}"));
            }
        }
    }
    Ok(chosen.into_values().collect())
}

/// Drop-in files of the unit `name`, searched as systemd does: in each unit directory by
/// priority, `<name>.d`, then the dash prefixes (`alert-.service.d` for `alert-relay.service`,
/// longest first), then `service.d` for every service; of files with the same name the first
/// found wins.
fn dropins(paths: &Paths, name: &str) -> Result<Vec<String>, Reason> {
    let mut subdirs = vec![format!("{name}.d")];
    if let Some((stem, kind)) = name.rsplit_once('.') {
        subdirs.extend(
            stem.match_indices('-')
                .rev()
                .map(|(i, _)| format!("{}-.{kind}.d", &stem[..i])),
        );
        subdirs.push(format!("{kind}.d"));
    }
    let dirs: Vec<String> = UNIT_DIRS
        .iter()
        .flat_map(|dir| subdirs.iter().map(move |sub| format!("{dir}/{sub}")))
        .collect();
    conf_files(paths, &dirs)
}

/// The unit file that masks `name` (a link to /dev/null in a unit directory), if one does.
fn masked_by(paths: &Paths, name: &str) -> Option<String> {
    UNIT_DIRS
        .iter()
        .map(|dir| format!("{dir}/{name}"))
        .find(|host| {
            std::fs::read_link(paths.rooted(host)).is_ok_and(|t| t == Path::new("/dev/null"))
        })
}

/// Loads a unit the way systemd layers it. `Ok(None)` when it is not installed; masked units
/// (a link to /dev/null) are an error naming that.
pub(crate) fn load_unit(paths: &Paths, name: &str) -> Result<Option<Unit>, Reason> {
    if let Some(host) = masked_by(paths, name) {
        return Err(format!("{name} is masked ({host} → /dev/null)"));
    }
    let mut found = None;
    for dir in UNIT_DIRS {
        let host = format!("{dir}/{name}");
        let path = paths.rooted(&host);
        if let Some(text) = read_optional(&path)? {
            found = Some((host, text));
            break;
        }
    }
    let Some((file, text)) = found else {
        return Ok(None);
    };
    let mut settings = Settings::default();
    settings.apply(&text);
    let dropins = dropins(paths, name)?;
    for dropin in &dropins {
        if let Some(text) = read_optional(&paths.rooted(dropin))? {
            settings.apply(&text);
        }
    }
    Ok(Some(Unit {
        file,
        dropins,
        settings,
    }))
}

/// A daemon configuration such as `/etc/systemd/system.conf` with its `system.conf.d/*.conf`
/// drop-ins from /usr/lib, /usr/local/lib, /run and /etc (`man systemd-system.conf`).
pub(crate) fn load_daemon_config(paths: &Paths, name: &str) -> Result<Settings, Reason> {
    let mut settings = Settings::default();
    if let Some(text) = read_optional(&paths.rooted(&format!("/etc/systemd/{name}")))? {
        settings.apply(&text);
    }
    let dirs = [
        "/etc/systemd",
        "/run/systemd",
        "/usr/local/lib/systemd",
        "/usr/lib/systemd",
    ]
    .map(|dir| format!("{dir}/{name}.d"));
    for path in conf_files(paths, &dirs)? {
        if let Some(text) = read_optional(&paths.rooted(&path))? {
            settings.apply(&text);
        }
    }
    Ok(settings)
}

/// Whether a unit is enabled: a link to it in some `*.wants/` or `*.requires/` directory under
/// /etc/systemd/system, which is what `systemctl enable` creates, and the unit installed and
/// not masked (a link left behind by a removed package starts nothing).
pub(crate) fn unit_enabled(paths: &Paths, name: &str) -> Result<bool, Reason> {
    let dir = paths.rooted("/etc/systemd/system");
    let mut linked = false;
    for entry in list_names(&dir)? {
        if (entry.ends_with(".wants") || entry.ends_with(".requires"))
            && exists(&dir.join(&entry).join(name))
        {
            linked = true;
            break;
        }
    }
    if !linked || masked_by(paths, name).is_some() {
        return Ok(false);
    }
    Ok(load_unit(paths, name)?.is_some())
}

/// Parses a systemd environment file (`KEY=VALUE`, `#`/`;` comments, single or double quotes).
pub(crate) fn parse_environment_file(text: &str) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        if let Some((key, value)) = line.split_once('=') {
            let value = value.trim();
            let unquoted = ['"', '\'']
                .iter()
                .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
                .unwrap_or(value);
            vars.insert(key.trim().to_owned(), unquoted.to_owned());
        }
    }
    vars
}

/// Splits an `ExecStart=` command line into words as systemd does for the cases units use:
/// the `-@:+!` prefixes dropped, double- and single-quoted words, `$VAR` expanded into several
/// words and `${VAR}` into one.
pub(crate) fn exec_words(line: &str, env: &BTreeMap<String, String>) -> Vec<String> {
    let line = line.trim_start_matches(['-', '@', ':', '+', '!']);
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else {
            break;
        };
        if first == '"' || first == '\'' {
            chars.next();
            let word: String = chars.by_ref().take_while(|&c| c != first).collect();
            words.push(word);
            continue;
        }
        let word: String = std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace())).collect();
        if let Some(name) = word.strip_prefix("${").and_then(|w| w.strip_suffix('}')) {
            words.push(env.get(name).cloned().unwrap_or_default());
        } else if let Some(name) = word.strip_prefix('$') {
            words.extend(
                env.get(name)
                    .map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
                    .unwrap_or_default(),
            );
        } else {
            words.push(word);
        }
    }
    words
}

/// The command line a unit starts (its last `ExecStart=`), with `Environment=` and
/// `EnvironmentFile=` variables expanded.
pub(crate) fn unit_command(paths: &Paths, unit: &Unit) -> Result<Vec<String>, Reason> {
    let mut env = BTreeMap::new();
    for assignment in unit.settings.all("Service.Environment") {
        for word in exec_words(assignment, &BTreeMap::new()) {
            if let Some((k, v)) = word.split_once('=') {
                env.insert(k.to_owned(), v.to_owned());
            }
        }
    }
    for file in unit.settings.all("Service.EnvironmentFile") {
        // `-` before the path: a missing file is not an error.
        let (optional, file) = match file.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, file.as_str()),
        };
        match read_optional(&paths.rooted(file))? {
            Some(text) => env.extend(parse_environment_file(&text)),
            None if optional => {}
            None => {
                return Err(format!(
                    "EnvironmentFile {file} of {} is missing",
                    unit.file
                ));
            }
        }
    }
    let exec = unit
        .settings
        .all("Service.ExecStart")
        .last()
        .ok_or_else(|| format!("{} has no ExecStart", unit.file))?;
    Ok(exec_words(exec, &env))
}

// ---------------------------------------------------------------------------------------------
// OpenSSH server

/// What sshd_config says about logins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Sshd {
    /// The global settings, lower-cased keyword → the first value given, as sshd takes it.
    pub(crate) settings: BTreeMap<String, String>,
    /// Password or keyboard-interactive logins turned on (anything but `no`) inside a `Match`
    /// block: `PasswordAuthentication yes (Match Address 10.0.0.0/8)`.
    pub(crate) match_enabled: Vec<String>,
}

/// Keywords of sshd that let a password in.
const SSHD_PASSWORD_KEYWORDS: [&str; 2] =
    ["passwordauthentication", "kbdinteractiveauthentication"];

/// sshd_config as sshd reads it. `Include` is followed (relative patterns under /etc/ssh) with
/// the `Match` state saved and restored around each included file, as sshd does; `Match`
/// blocks are conditional: only the password keywords in them are noted.
pub(crate) fn load_sshd(paths: &Paths) -> Result<Option<Sshd>, Reason> {
    let main = "/etc/ssh/sshd_config";
    let Some(text) = read_optional(&paths.rooted(main))? else {
        return Ok(None);
    };
    let mut sshd = Sshd::default();
    let mut in_match = None;
    sshd_apply(paths, main, &text, &mut sshd, &mut in_match, 0)?;
    Ok(Some(sshd))
}

fn sshd_apply(
    paths: &Paths,
    file: &str,
    text: &str,
    sshd: &mut Sshd,
    in_match: &mut Option<String>,
    depth: usize,
) -> Result<(), Reason> {
    // sshd's own limit on nested includes.
    if depth > 16 {
        return Err(format!("{file}: Include nested too deeply"));
    }
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (keyword, value) = line
            .split_once(|c: char| c.is_whitespace() || c == '=')
            .map(|(k, v)| {
                (
                    k,
                    v.trim_start_matches(|c: char| c.is_whitespace() || c == '='),
                )
            })
            .unwrap_or((line, ""));
        let mut keyword = keyword.to_ascii_lowercase();
        // The old name of the same setting (the first of either wins).
        if keyword == "challengeresponseauthentication" {
            keyword = "kbdinteractiveauthentication".to_owned();
        }
        if keyword == "match" {
            *in_match = Some(line.to_owned());
            continue;
        }
        if let Some(block) = in_match.as_deref() {
            let value = value.trim();
            if SSHD_PASSWORD_KEYWORDS.contains(&keyword.as_str())
                && !value.eq_ignore_ascii_case("no")
            {
                sshd.match_enabled
                    .push(format!("{keyword} {value} ({block})"));
            }
            if keyword != "include" {
                continue;
            }
        }
        if keyword == "include" {
            for pattern in value.split_whitespace() {
                let pattern = if pattern.starts_with('/') {
                    pattern.to_owned()
                } else {
                    format!("/etc/ssh/{pattern}")
                };
                for included in glob(paths, &pattern)? {
                    if let Some(text) = read_optional(&paths.rooted(&included))? {
                        // A `Match` in the included file ends with it.
                        let saved = in_match.clone();
                        sshd_apply(paths, &included, &text, sshd, in_match, depth + 1)?;
                        *in_match = saved;
                    }
                }
            }
            continue;
        }
        sshd.settings
            .entry(keyword)
            .or_insert_with(|| value.trim().to_ascii_lowercase());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// chrony

/// The directives of chrony's configuration (`/etc/chrony/chrony.conf` or `/etc/chrony.conf`
/// with `include` and `confdir` files), as (file, directive line), in no particular order: the
/// checks only ask whether a directive is there. `Ok(None)`: no chrony.
pub(crate) fn load_chrony(paths: &Paths) -> Result<Option<Vec<(String, String)>>, Reason> {
    let mut main = None;
    for candidate in ["/etc/chrony/chrony.conf", "/etc/chrony.conf"] {
        if let Some(text) = read_optional(&paths.rooted(candidate))? {
            main = Some((candidate.to_owned(), text));
            break;
        }
    }
    let Some((file, text)) = main else {
        return Ok(None);
    };
    let mut directives = Vec::new();
    let mut pending = vec![(file, text)];
    let mut read = 0;
    while let Some((file, text)) = pending.pop() {
        read += 1;
        if read > 64 {
            return Err("chrony configuration includes too many files".into());
        }
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with(['#', '!', ';', '%']) {
                continue;
            }
            let mut words = line.split_whitespace();
            match words.next().map(str::to_ascii_lowercase).as_deref() {
                Some("include") => {
                    for pattern in words {
                        for included in glob(paths, pattern)? {
                            if let Some(text) = read_optional(&paths.rooted(&included))? {
                                pending.push((included, text));
                            }
                        }
                    }
                }
                // Files of the directories, sorted by name across directories.
                Some("confdir") => {
                    let dirs: Vec<&str> = words.collect();
                    for included in conf_files(paths, &dirs)? {
                        if let Some(text) = read_optional(&paths.rooted(&included))? {
                            pending.push((included, text));
                        }
                    }
                }
                _ => directives.push((file.clone(), line.to_owned())),
            }
        }
    }
    Ok(Some(directives))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> (tempfile::TempDir, Paths) {
        let dir = tempfile::tempdir().expect("tempdir");
        for (path, text) in files {
            let path = dir.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        }
        let paths = Paths {
            rootfs: dir.path().to_owned(),
            ..Paths::default()
        };
        (dir, paths)
    }

    #[test]
    fn systemd_layers_etc_over_lib_and_dropins_in_lexical_order() {
        let (_dir, paths) = tree(&[
            (
                "/usr/lib/systemd/system/demo.service",
                "[Unit]\nStartLimitBurst=3\n[Service]\nRestart=no\nExecStart=/bin/a\nWatchdogSec=10s\n",
            ),
            (
                "/usr/lib/systemd/system/demo.service.d/20-lib.conf",
                "[Service]\nRestart=on-failure\n",
            ),
            // Hides the /usr/lib file of the same name.
            (
                "/etc/systemd/system/demo.service.d/20-lib.conf",
                "[Service]\nRestart=always\n",
            ),
            (
                "/run/systemd/system/demo.service.d/10-run.conf",
                "[Service]\nRestart=no\nExecStart=\nExecStart=/bin/b \\\n  --flag\n",
            ),
            (
                "/etc/systemd/system/demo.service.d/30-etc.conf",
                "[Service]\nWatchdogSec=\n",
            ),
            (
                "/etc/systemd/system/demo.service.d/notes.txt",
                "[Service]\nRestart=no\n",
            ),
        ]);
        let unit = load_unit(&paths, "demo.service")
            .expect("readable")
            .expect("installed");
        assert_eq!(unit.file, "/usr/lib/systemd/system/demo.service");
        assert_eq!(unit.dropins.len(), 3);
        assert_eq!(unit.settings.get("Service.Restart"), Some("always"));
        assert_eq!(unit.settings.all("Service.ExecStart"), ["/bin/b  --flag"]);
        assert_eq!(unit.settings.get("Service.WatchdogSec"), None, "reset");
        assert_eq!(unit.settings.get("Unit.StartLimitBurst"), Some("3"));
        assert_eq!(load_unit(&paths, "absent.service"), Ok(None));
    }

    #[test]
    fn dropins_are_found_where_systemd_looks_and_the_first_of_a_name_wins() {
        let (_dir, paths) = tree(&[
            (
                "/usr/lib/systemd/system/alert-relay.service",
                "[Service]\nRestart=no\n",
            ),
            // Same file name: the unit's own directory comes before service.d, and
            // system.control before /etc.
            (
                "/etc/systemd/system/service.d/10-x.conf",
                "[Service]\nRestart=on-failure\n",
            ),
            (
                "/etc/systemd/system/alert-relay.service.d/10-x.conf",
                "[Service]\nRestart=always\n",
            ),
            (
                "/etc/systemd/system/alert-.service.d/20-prefix.conf",
                "[Service]\nWatchdogSec=30s\n",
            ),
            (
                "/etc/systemd/system.control/alert-relay.service.d/30-limit.conf",
                "[Unit]\nStartLimitBurst=5\n",
            ),
            (
                "/etc/systemd/system/alert-relay.service.d/30-limit.conf",
                "[Unit]\nStartLimitBurst=9\n",
            ),
        ]);
        let unit = load_unit(&paths, "alert-relay.service")
            .expect("readable")
            .expect("installed");
        assert_eq!(unit.settings.get("Service.Restart"), Some("always"));
        assert_eq!(unit.settings.get("Service.WatchdogSec"), Some("30s"));
        assert_eq!(unit.settings.get("Unit.StartLimitBurst"), Some("5"));
        assert_eq!(
            unit.dropins,
            [
                "/etc/systemd/system/alert-relay.service.d/10-x.conf",
                "/etc/systemd/system/alert-.service.d/20-prefix.conf",
                "/etc/systemd/system.control/alert-relay.service.d/30-limit.conf",
            ]
        );
    }

    #[test]
    fn a_masked_unit_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let etc = dir.path().join("etc/systemd/system");
        std::fs::create_dir_all(&etc).expect("mkdir");
        std::os::unix::fs::symlink("/dev/null", etc.join("demo.service")).expect("link");
        let paths = Paths {
            rootfs: dir.path().to_owned(),
            ..Paths::default()
        };
        let err = load_unit(&paths, "demo.service").expect_err("masked");
        assert!(err.contains("masked"), "{err}");
    }

    #[test]
    fn exec_start_expands_environment_files() {
        let env = parse_environment_file(
            "# comment\nPI_EXPORTER_ARGS=\"--web.listen-address=:9831 --ups.board=nut\"\nONE='a b'\n",
        );
        assert_eq!(
            exec_words(
                "-/usr/bin/pi-exporter $PI_EXPORTER_ARGS ${ONE} \"x y\"",
                &env
            ),
            [
                "/usr/bin/pi-exporter",
                "--web.listen-address=:9831",
                "--ups.board=nut",
                "a b",
                "x y"
            ]
        );
    }

    #[test]
    fn sshd_takes_the_first_value_and_follows_includes() {
        let (_dir, paths) = tree(&[
            (
                "/etc/ssh/sshd_config",
                "Include /etc/ssh/sshd_config.d/*.conf\nPasswordAuthentication yes\nMatch User x\nKbdInteractiveAuthentication yes\n",
            ),
            (
                "/etc/ssh/sshd_config.d/10-hardening.conf",
                "passwordauthentication=no\n",
            ),
            (
                "/etc/ssh/sshd_config.d/.hidden.conf",
                "KbdInteractiveAuthentication yes\n",
            ),
        ]);
        let settings = load_sshd(&paths)
            .expect("readable")
            .expect("installed")
            .settings;
        assert_eq!(
            settings.get("passwordauthentication").map(String::as_str),
            Some("no")
        );
        assert_eq!(settings.get("kbdinteractiveauthentication"), None);
    }

    #[test]
    fn chrony_reads_confdir_and_include() {
        let (_dir, paths) = tree(&[
            (
                "/etc/chrony/chrony.conf",
                "pool 2.debian.pool.ntp.org iburst\nconfdir /etc/chrony/conf.d\ninclude /etc/chrony/extra/*.conf\n",
            ),
            ("/etc/chrony/conf.d/pifleet.conf", "makestep 1 3\n"),
            ("/etc/chrony/extra/a.conf", "rtcsync\n"),
        ]);
        let directives = load_chrony(&paths).expect("readable").expect("installed");
        let lines: Vec<&str> = directives.iter().map(|(_, l)| l.as_str()).collect();
        assert!(lines.contains(&"makestep 1 3"), "{lines:?}");
        assert!(lines.contains(&"rtcsync"), "{lines:?}");
    }

    #[test]
    fn wildcards_match_like_glob() {
        assert!(wildcard("*.conf", "a.conf"));
        assert!(!wildcard("*.conf", "a.conf.bak"));
        assert!(!wildcard("*.conf", ".a.conf"));
        assert!(wildcard("a?c", "abc"));
    }
}
