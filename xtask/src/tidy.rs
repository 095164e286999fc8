//! `cargo xtask tidy`: no two top-level modules of a crate may import each other, directly or
//! through others, and no function under `crates/*/src` is over 120 lines without a written
//! reason (in the style of rust-analyzer's `xtask/src/tidy.rs`: a plain text scan, no parser).
//!
//! For each crate under `crates/`, the top-level modules are `src/foo.rs` and `src/foo/`; the
//! crate root `lib.rs` is the module `crate` (its inline modules belong to it). A module
//! depends on another when its files name it: `crate::b::…` anywhere in code (`use`, `pub
//! use`, expressions, grouped `use crate::{b::X, c::Y}`), `super::b::…` resolving to the crate
//! root, and in `lib.rs` a path starting with a module's name (`b::run()`). A path to an item
//! of `lib.rs` itself (`crate::Live`, `super::Live` from `src/a.rs`) depends on `crate`;
//! `mod b;` alone is no dependency. Comments and string literals are blanked first; test code
//! is skipped: items under `#[cfg(test)]` (brace-matched), files named `tests.rs`, files under
//! a `tests/` directory and files declared by `#[cfg(test)] mod name;`. The strongly connected
//! components of the graph (Tarjan) are the cycles; each edge in one is reported on a cycle
//! with the file and line of one use per step.
//!
//! It also fails on a function longer than [`FN_LIMIT`] lines (from the line with `fn` to the
//! line of its closing brace) in any `.rs` file under `crates/*/src`, test code included,
//! unless the section `## Long functions` of the workspace's `ARCHITECTURE.md` names it with a
//! reason (see [`parse_allowlist`] for the format). The scan is the same as above: comments and
//! literals blanked, then a function's body is the first `{` after `fn name` outside
//! parentheses and brackets (a `;` first means no body) up to its matching `}`. An exception
//! that no longer matches a long function fails too, so the list does not outlive its reasons.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use crate::root;

/// The crate root's name in the graph and in reports.
const ROOT: &str = "crate";

pub(crate) fn run(args: &[String]) -> Result<()> {
    match args {
        [] => check_all(),
        [flag, name] if flag == "--graph" => print_graph(name),
        _ => bail!("usage: cargo xtask tidy [--graph CRATE] (got {args:?})"),
    }
}

/// `--graph CRATE`: every edge between the crate's top-level modules, with its first use, so
/// a cycle can be taken apart edge by edge.
fn print_graph(name: &str) -> Result<()> {
    let src = root().join("crates").join(name).join("src");
    let files = read_tree(&src)?;
    for (from, edges) in graph(&files) {
        for (to, u) in edges {
            println!("{from} -> {to}  ({}:{} uses {})", u.file, u.line, u.path);
        }
    }
    Ok(())
}

/// The longest a function under `crates/*/src` may be, in lines, unless `ARCHITECTURE.md`
/// says why (issue 13).
const FN_LIMIT: usize = 120;

/// The heading of the `ARCHITECTURE.md` section that lists the long functions allowed.
const ALLOWLIST_HEADING: &str = "## Long functions";

/// Both checks, each printing its findings; fails when either finds something.
fn check_all() -> Result<()> {
    let crates = crate_dirs()?;
    let cycles = check_cycles(&crates)?;
    let long = check_fn_lengths(&crates)?;
    match (cycles, long) {
        (0, 0) => Ok(()),
        (c, 0) => bail!("{c} import cycles between top-level modules (see above)"),
        (0, l) => bail!("{l} functions over {FN_LIMIT} lines or stale exceptions (see above)"),
        (c, l) => bail!(
            "{c} import cycles between top-level modules and {l} functions over {FN_LIMIT} \
             lines or stale exceptions (see above)"
        ),
    }
}

/// Every directory under `crates/`, sorted, with its name.
fn crate_dirs() -> Result<Vec<(String, PathBuf)>> {
    let crates = root().join("crates");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&crates)
        .with_context(|| format!("cannot list {}", crates.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    dirs.sort();
    Ok(dirs
        .into_iter()
        .filter(|d| d.is_dir())
        .map(|dir| {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, dir)
        })
        .collect())
}

/// The import-cycle check of every library crate; prints its report, returns the number of
/// cycles.
fn check_cycles(crates: &[(String, PathBuf)]) -> Result<usize> {
    let mut cycles = 0;
    for (name, dir) in crates {
        let src = dir.join("src");
        if !src.join("lib.rs").is_file() {
            continue;
        }
        let files = read_tree(&src)?;
        let (lines, n) = check_crate(name, &files);
        if n == 0 {
            println!("crate {name}: no import cycle between top-level modules");
        }
        for line in lines {
            println!("{line}");
        }
        cycles += n;
    }
    Ok(cycles)
}

/// The function-length check of every crate's `src/` against `ARCHITECTURE.md`'s exceptions;
/// prints its report, returns the number of findings.
fn check_fn_lengths(crates: &[(String, PathBuf)]) -> Result<usize> {
    let md_path = root().join("ARCHITECTURE.md");
    let md = std::fs::read_to_string(&md_path)
        .with_context(|| format!("cannot read {}", md_path.display()))?;
    let allowed = parse_allowlist(&md)?;
    let mut sources = Vec::new();
    for (name, dir) in crates {
        let src = dir.join("src");
        if !src.is_dir() {
            continue;
        }
        for (rel, text) in read_tree(&src)? {
            let file = format!(
                "crates/{name}/src/{}",
                rel.to_string_lossy().replace('\\', "/")
            );
            sources.push(Source {
                krate: name.clone(),
                file,
                text,
            });
        }
    }
    let (lines, n) = fn_length_report(&sources, &allowed);
    for line in lines {
        println!("{line}");
    }
    Ok(n)
}

/// One source file for the function-length check.
struct Source {
    krate: String,
    /// Relative to the workspace root, with `/`: `crates/x/src/a.rs`.
    file: String,
    text: String,
}

/// One exception of `ARCHITECTURE.md`'s `## Long functions`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Allowed {
    /// Relative to the workspace root: `crates/x/src/a.rs`.
    file: String,
    name: String,
    /// Its line in `ARCHITECTURE.md`, for a stale entry's report.
    line: usize,
}

/// The exceptions listed under `## Long functions` (up to the next `## ` heading), one bullet
/// each: `` - `crates/x/src/file.rs` `fn_name`: why it is long `` (the reason may wrap onto
/// indented lines; it must not be empty). An exception covers every function of that name in
/// that file (`new` of two `impl`s alike). Any other bullet in the section is an error, so a
/// typo cannot silently allow nothing.
fn parse_allowlist(md: &str) -> Result<Vec<Allowed>> {
    let mut out = Vec::new();
    let mut inside = false;
    for (i, line) in md.lines().enumerate() {
        if line.starts_with("## ") || line.starts_with("# ") {
            inside = line.trim_end() == ALLOWLIST_HEADING;
            continue;
        }
        let Some(entry) = line.strip_prefix("- ").filter(|_| inside) else {
            continue;
        };
        let parsed = (|| {
            let rest = entry.strip_prefix('`')?;
            let (file, rest) = rest.split_once('`')?;
            let rest = rest.strip_prefix(" `")?;
            let (name, rest) = rest.split_once('`')?;
            let reason = rest.strip_prefix(':')?.trim();
            let ok = !file.is_empty() && !name.is_empty() && !reason.is_empty();
            ok.then(|| (file.to_owned(), name.to_owned()))
        })();
        let Some((file, name)) = parsed else {
            bail!(
                "ARCHITECTURE.md:{}: expected \"- `crates/x/src/file.rs` `fn_name`: why\" under \
                 {ALLOWLIST_HEADING:?}, got {line:?}",
                i + 1
            );
        };
        out.push(Allowed {
            file,
            name,
            line: i + 1,
        });
    }
    Ok(out)
}

/// One function longer than the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LongFn {
    name: String,
    /// The line with `fn`.
    line: usize,
    /// From the line with `fn` to the line of its closing brace, both included.
    lines: usize,
}

/// Every function with a body in `text` longer than `limit` lines, nested ones included (an
/// outer function's count includes them), in order.
fn long_fns(text: &str, limit: usize) -> Vec<LongFn> {
    let toks = tokens(&blank(text));
    let mut out = Vec::new();
    for (i, (tok, line)) in toks.iter().enumerate() {
        if *tok != Tok::Ident("fn".into()) {
            continue;
        }
        // `fn(u8) -> u8` is a type, `r#fn` no function.
        let Some((Tok::Ident(name), _)) = toks.get(i + 1) else {
            continue;
        };
        let Some(open) = body_start(&toks, i + 2) else {
            continue;
        };
        let end = item_end(&toks, open);
        let last = toks.get(end.saturating_sub(1)).map_or(*line, |t| t.1);
        let lines = last - line + 1;
        if lines > limit {
            out.push(LongFn {
                name: name.clone(),
                line: *line,
                lines,
            });
        }
    }
    out
}

/// The index of a function's opening brace, searching from `i` (after its name): the first
/// `{` outside parentheses and brackets; `None` when a `;` comes first (a declaration).
fn body_start(toks: &[(Tok, usize)], mut i: usize) -> Option<usize> {
    let mut nest = 0usize;
    while let Some((t, _)) = toks.get(i) {
        match t {
            Tok::Punct('(' | '[') => nest += 1,
            Tok::Punct(')' | ']') => nest = nest.saturating_sub(1),
            Tok::Punct(';') if nest == 0 => return None,
            Tok::Punct('{') if nest == 0 => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// The function-length report of all sources and how many findings it names: one line per
/// function over [`FN_LIMIT`] that no exception covers, one per exception that covers none
/// (stale), and a clean line per crate without a long function.
fn fn_length_report(sources: &[Source], allowed: &[Allowed]) -> (Vec<String>, usize) {
    let mut out = Vec::new();
    let mut findings = 0;
    let mut used = vec![false; allowed.len()];
    let mut krates: Vec<&str> = sources.iter().map(|s| s.krate.as_str()).collect();
    krates.dedup();
    for krate in krates {
        let mut clean = true;
        for source in sources.iter().filter(|s| s.krate == krate) {
            for f in long_fns(&source.text, FN_LIMIT) {
                let exception = allowed
                    .iter()
                    .position(|a| a.file == source.file && a.name == f.name);
                if let Some(k) = exception {
                    used[k] = true;
                    continue;
                }
                clean = false;
                findings += 1;
                out.push(format!(
                    "crate {krate}: {}:{} fn {} is {} lines (limit {FN_LIMIT})",
                    source.file, f.line, f.name, f.lines
                ));
            }
        }
        if clean {
            out.push(format!(
                "crate {krate}: no function longer than {FN_LIMIT} lines outside the exceptions"
            ));
        }
    }
    for (a, used) in allowed.iter().zip(used) {
        if !used {
            findings += 1;
            out.push(format!(
                "ARCHITECTURE.md:{}: exception for {} fn {} matches no function over \
                 {FN_LIMIT} lines: remove it",
                a.line, a.file, a.name
            ));
        }
    }
    (out, findings)
}

/// Every `.rs` file under `src`, as (path relative to `src`, contents), sorted by path.
fn read_tree(src: &Path) -> Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let rel = path.strip_prefix(src).unwrap_or(&path).to_path_buf();
                out.push((rel, text));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// One use that makes a module depend on another.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Use {
    file: String,
    line: usize,
    /// As reported: `crate::b` or `crate::Item`.
    path: String,
}

/// The cycle report of one crate and how many cycles it names: one line per cycle, with a
/// summary line before each group of more than two modules. Empty when there is no cycle.
fn check_crate(name: &str, files: &[(PathBuf, String)]) -> (Vec<String>, usize) {
    let graph = graph(files);
    let mut out = Vec::new();
    let mut cycles = 0;
    for scc in tarjan(&graph) {
        if scc.len() < 2 {
            continue;
        }
        if scc.len() > 2 {
            let members: Vec<&str> = scc.iter().map(String::as_str).collect();
            out.push(format!(
                "crate {name}: {} modules import each other: {}",
                scc.len(),
                members.join(", ")
            ));
        }
        for cycle in cover(&graph, &scc) {
            let steps: Vec<String> = cycle
                .windows(2)
                .map(|w| {
                    let u = &graph[&w[0]][&w[1]];
                    format!("{}:{} uses {}", u.file, u.line, u.path)
                })
                .collect();
            out.push(format!(
                "crate {name}: modules {} form a cycle ({})",
                cycle.join(" -> "),
                steps.join(", ")
            ));
            cycles += 1;
        }
    }
    (out, cycles)
}

type Graph = BTreeMap<String, BTreeMap<String, Use>>;

/// The dependency graph of a crate's top-level modules (every module a node), with the first
/// use (by file, then line) of each edge.
fn graph(files: &[(PathBuf, String)]) -> Graph {
    let mut modules = BTreeSet::new();
    let mut scanned = Vec::new();
    for (rel, text) in files {
        let Some(module) = top_module(rel) else {
            continue;
        };
        modules.insert(module.clone());
        scanned.push((rel, module, Scan::new(text)));
    }
    modules.insert(ROOT.to_owned());
    // Files that a `#[cfg(test)] mod name;` declares, as path prefixes (`a/name.rs`, `a/name/`).
    let mut test_files = Vec::new();
    for (rel, _, scan) in &scanned {
        let dir = module_dir(rel);
        for name in &scan.test_mods {
            test_files.push(dir.join(format!("{name}.rs")));
            test_files.push(dir.join(name));
        }
    }
    let mut graph: Graph = modules
        .iter()
        .map(|m| (m.clone(), BTreeMap::new()))
        .collect();
    for (rel, module, scan) in &scanned {
        if scan.whole_file_test
            || is_test_file(rel)
            || test_files.iter().any(|t| rel.starts_with(t))
        {
            continue;
        }
        let file = rel.to_string_lossy().replace('\\', "/");
        for (target, line, path) in scan.uses(module_depth(rel), &modules) {
            if target == *module {
                continue;
            }
            let edges = graph.entry(module.clone()).or_default();
            let use_ = Use {
                file: file.clone(),
                line,
                path,
            };
            match edges.get(&target) {
                Some(old) if (old.file.as_str(), old.line) <= (use_.file.as_str(), use_.line) => {}
                _ => {
                    edges.insert(target, use_);
                }
            }
        }
    }
    graph
}

/// The top-level module a file belongs to: `a.rs` and `a/…` are `a`, `lib.rs` is the root;
/// `main.rs` and `bin/` are other crates.
fn top_module(rel: &Path) -> Option<String> {
    let mut parts = rel.iter().map(|p| p.to_string_lossy());
    let first = parts.next()?;
    let rest = parts.next().is_some();
    match (&*first, rest) {
        ("lib.rs", false) => Some(ROOT.to_owned()),
        ("main.rs", false) | ("bin", true) => None,
        (file, false) => file.strip_suffix(".rs").map(str::to_owned),
        (dir, true) => Some(dir.to_owned()),
    }
}

/// How deep the file's module is below the crate root: `lib.rs` 0, `a.rs` and `a/mod.rs` 1,
/// `a/b.rs` 2.
fn module_depth(rel: &Path) -> usize {
    let n = rel.iter().count();
    if rel
        .file_name()
        .is_some_and(|f| f == "lib.rs" || f == "mod.rs")
    {
        n - 1
    } else {
        n
    }
}

/// Where the file's `mod name;` declarations live: `src/` for `lib.rs`, `a/` for `a.rs` and
/// `a/mod.rs`.
fn module_dir(rel: &Path) -> PathBuf {
    let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
    match rel.file_name().and_then(|f| f.to_str()) {
        Some("lib.rs" | "mod.rs") | None => parent,
        Some(file) => parent.join(file.strip_suffix(".rs").unwrap_or(file)),
    }
}

fn is_test_file(rel: &Path) -> bool {
    rel.file_name().is_some_and(|f| f == "tests.rs")
        || rel.parent().is_some_and(|p| p.iter().any(|c| c == "tests"))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// `::`
    Path,
    Punct(char),
}

/// A file's tokens outside comments, string and character literals and `#[cfg(test)]` items.
#[derive(Debug)]
struct Scan {
    toks: Vec<(Tok, usize)>,
    /// `#[cfg(test)] mod name;`
    test_mods: Vec<String>,
    /// `#![cfg(test)]`
    whole_file_test: bool,
}

impl Scan {
    fn new(text: &str) -> Self {
        let toks = tokens(&blank(text));
        let mut out = Vec::with_capacity(toks.len());
        let mut test_mods = Vec::new();
        let mut whole_file_test = false;
        let mut i = 0;
        while i < toks.len() {
            if let Some(after) = cfg_test(&toks, i, false) {
                let end = item_end(&toks, after);
                if let Some(name) = declared_mod(&toks[after..end]) {
                    test_mods.push(name);
                }
                i = end;
            } else if cfg_test(&toks, i, true).is_some() {
                whole_file_test = true;
                break;
            } else {
                out.push(toks[i].clone());
                i += 1;
            }
        }
        Self {
            toks: out,
            test_mods,
            whole_file_test,
        }
    }

    /// The modules this file names, as (module, line, reported path). `depth` is the file's
    /// module depth; `modules` the crate's top-level modules.
    fn uses(&self, depth: usize, modules: &BTreeSet<String>) -> Vec<(String, usize, String)> {
        let toks = &self.toks;
        let ident = |i: usize| match toks.get(i) {
            Some((Tok::Ident(s), _)) => Some(s.as_str()),
            _ => None,
        };
        let is = |i: usize, t: &Tok| toks.get(i).is_some_and(|(x, _)| x == t);
        let mut out = Vec::new();
        // Inline `mod name { … }` blocks: the brace depth each one closes at.
        let mut inline: Vec<usize> = Vec::new();
        let mut braces = 0usize;
        let mut i = 0;
        while i < toks.len() {
            let line = toks[i].1;
            match &toks[i].0 {
                Tok::Punct('{') => {
                    braces += 1;
                    i += 1;
                    continue;
                }
                Tok::Punct('}') => {
                    braces = braces.saturating_sub(1);
                    if inline.last() == Some(&braces) {
                        inline.pop();
                    }
                    i += 1;
                    continue;
                }
                Tok::Ident(k)
                    if k == "mod" && ident(i + 1).is_some() && is(i + 2, &Tok::Punct('{')) =>
                {
                    inline.push(braces);
                    braces += 1;
                    i += 3;
                    continue;
                }
                _ => {}
            }
            let here = depth + inline.len();
            let Some(first) = ident(i) else {
                i += 1;
                continue;
            };
            // Only the start of a path: `a::b::crate` is no path to the crate root.
            if (i > 0 && is(i - 1, &Tok::Path)) || !is(i + 1, &Tok::Path) {
                i += 1;
                continue;
            }
            // The level the path resolves to (0: the crate root) and where its rest starts.
            let (level, mut j) = match first {
                "crate" => (Some(0), i + 2),
                "self" => (Some(here), i + 2),
                "super" => {
                    let mut level = Some(here);
                    let mut j = i;
                    while ident(j) == Some("super") && is(j + 1, &Tok::Path) {
                        level = level.and_then(|l: usize| l.checked_sub(1));
                        j += 2;
                    }
                    (level, j)
                }
                name if here == 0 && modules.contains(name) => (Some(0), i),
                _ => (None, i + 1),
            };
            if level != Some(0) {
                i = j.max(i + 1);
                continue;
            }
            let mut names = Vec::new();
            match toks.get(j).map(|t| &t.0) {
                Some(Tok::Ident(name)) => names.push(name.clone()),
                Some(Tok::Punct('*')) => names.push("*".to_owned()),
                Some(Tok::Punct('{')) => {
                    // `crate::{a::X, b::{Y, Z}, Item}`: the first name of each member.
                    let mut depth = 0usize;
                    let mut expect = true;
                    while let Some((t, _)) = toks.get(j) {
                        match t {
                            Tok::Punct('{') => {
                                depth += 1;
                                expect = depth == 1;
                            }
                            Tok::Punct('}') => {
                                depth -= 1;
                                if depth == 0 {
                                    break;
                                }
                            }
                            Tok::Punct(',') if depth == 1 => expect = true,
                            Tok::Ident(name) if expect && depth == 1 => {
                                names.push(name.clone());
                                expect = false;
                            }
                            Tok::Punct('*') if expect && depth == 1 => {
                                names.push("*".to_owned());
                                expect = false;
                            }
                            _ => {}
                        }
                        j += 1;
                    }
                }
                _ => {}
            }
            for name in names {
                if name == "self" {
                    continue;
                }
                let target = if modules.contains(&name) && name != ROOT {
                    name.clone()
                } else {
                    ROOT.to_owned()
                };
                out.push((target, line, format!("crate::{name}")));
            }
            i = j.max(i + 1);
        }
        out
    }
}

/// If an outer (`inner`: inner) `#[cfg(test)]` starts at `i`, the index after it.
fn cfg_test(toks: &[(Tok, usize)], i: usize, inner: bool) -> Option<usize> {
    let mut want = vec![Tok::Punct('#')];
    if inner {
        want.push(Tok::Punct('!'));
    }
    want.extend([
        Tok::Punct('['),
        Tok::Ident("cfg".into()),
        Tok::Punct('('),
        Tok::Ident("test".into()),
        Tok::Punct(')'),
        Tok::Punct(']'),
    ]);
    let got = toks.get(i..i + want.len())?;
    got.iter()
        .map(|(t, _)| t)
        .eq(want.iter())
        .then_some(i + want.len())
}

/// The end (exclusive) of the item, field, variant or statement starting at `i`: its further
/// attributes, then through a `;` or `,` outside brackets or the matching `}` of its first
/// block, or up to the bracket that closes the enclosing one.
fn item_end(toks: &[(Tok, usize)], mut i: usize) -> usize {
    let mut nest = 0usize;
    while let Some((t, _)) = toks.get(i) {
        match t {
            Tok::Punct('(' | '[') => nest += 1,
            Tok::Punct(')' | ']' | '}') if nest == 0 => return i,
            Tok::Punct(')' | ']') => nest -= 1,
            Tok::Punct(';' | ',') if nest == 0 => return i + 1,
            Tok::Punct('{') if nest == 0 => {
                let mut depth = 0usize;
                while let Some((t, _)) = toks.get(i) {
                    match t {
                        Tok::Punct('{') => depth += 1,
                        Tok::Punct('}') => {
                            depth -= 1;
                            if depth == 0 {
                                return i + 1;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                return i;
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// `[pub[(…)]] mod name;` → `name`.
fn declared_mod(item: &[(Tok, usize)]) -> Option<String> {
    let toks: Vec<&Tok> = item.iter().map(|(t, _)| t).collect();
    let at = toks.iter().position(|t| **t == Tok::Ident("mod".into()))?;
    match (toks.get(at + 1), toks.get(at + 2), toks.len() == at + 3) {
        (Some(Tok::Ident(name)), Some(Tok::Punct(';')), true) => Some(name.clone()),
        _ => None,
    }
}

/// The text with comments and string, byte-string, raw-string and character literals blanked
/// to spaces (newlines kept, so lines still count).
fn blank(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = b.to_vec();
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80;
    let wipe = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to.min(b.len())] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        let prev_ident = i > 0 && is_ident(b[i - 1]);
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let end = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |p| i + p);
                wipe(&mut out, i, end);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0usize;
                let mut j = i;
                while j < b.len() {
                    if b[j] == b'/' && b.get(j + 1) == Some(&b'*') {
                        depth += 1;
                        j += 2;
                    } else if b[j] == b'*' && b.get(j + 1) == Some(&b'/') {
                        depth -= 1;
                        j += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        j += 1;
                    }
                }
                wipe(&mut out, i, j);
                i = j;
            }
            b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                wipe(&mut out, i, j + 1);
                i = j + 1;
            }
            // `r"…"`, `r#"…"#`, `br"…"`, `cr#"…"#` (not `r#ident`).
            b'r' if !prev_ident
                || ((i == 1 || !is_ident(b[i - 2])) && matches!(b[i - 1], b'b' | b'c')) =>
            {
                let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
                if b.get(i + 1 + hashes) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let mut close = vec![b'"'];
                close.extend(std::iter::repeat_n(b'#', hashes));
                let start = i + 2 + hashes;
                let end = b[start..]
                    .windows(close.len())
                    .position(|w| w == close.as_slice())
                    .map_or(b.len(), |p| start + p + close.len());
                wipe(&mut out, i, end);
                i = end;
            }
            // A character literal, not a lifetime or label.
            b'\'' => {
                if b.get(i + 1) == Some(&b'\\') {
                    // Past the escaped character: `'\''` ends at the third quote.
                    let mut j = i + 3;
                    while j < b.len() && b[j] != b'\'' {
                        j += 1;
                    }
                    wipe(&mut out, i, j + 1);
                    i = j + 1;
                } else {
                    let len = text[i + 1..].chars().next().map_or(0, char::len_utf8);
                    if len > 0 && b.get(i + 1 + len) == Some(&b'\'') {
                        wipe(&mut out, i, i + 2 + len);
                        i += 2 + len;
                    } else {
                        i += 1;
                    }
                }
            }
            _ => i += 1,
        }
    }
    // Only whole UTF-8 sequences were blanked, so this is still UTF-8.
    String::from_utf8_lossy(&out).into_owned()
}

fn tokens(text: &str) -> Vec<(Tok, usize)> {
    let mut out = Vec::new();
    let mut line = 1;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\n' {
            line += 1;
        } else if c.is_whitespace() {
        } else if c.is_alphanumeric() || c == '_' {
            let mut word = String::from(c);
            while let Some(&n) = chars.peek() {
                if !(n.is_alphanumeric() || n == '_') {
                    break;
                }
                word.push(n);
                chars.next();
            }
            out.push((Tok::Ident(word), line));
        } else if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            out.push((Tok::Path, line));
        } else {
            out.push((Tok::Punct(c), line));
        }
    }
    out
}

/// Tarjan's strongly connected components, each sorted, in order of their first member.
fn tarjan(graph: &Graph) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph[v].keys() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                scc.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            scc.sort();
            s.out.push(scc);
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out.sort();
    s.out
}

/// Cycles inside one strongly connected component that together take every edge in it: for
/// each edge not yet on a reported cycle, the edge and the shortest way back.
fn cover(graph: &Graph, scc: &[String]) -> Vec<Vec<String>> {
    let inside: BTreeSet<&str> = scc.iter().map(String::as_str).collect();
    let mut covered = BTreeSet::new();
    let mut cycles = Vec::new();
    for from in scc {
        for to in graph[from].keys() {
            if !inside.contains(to.as_str()) || covered.contains(&(from.as_str(), to.as_str())) {
                continue;
            }
            let Some(back) = shortest(graph, &inside, to, from) else {
                continue;
            };
            let mut cycle = vec![from.clone()];
            cycle.extend(back);
            for w in cycle.windows(2) {
                covered.insert((
                    inside.get(w[0].as_str()).copied().unwrap_or_default(),
                    inside.get(w[1].as_str()).copied().unwrap_or_default(),
                ));
            }
            cycles.push(cycle);
        }
    }
    cycles
}

/// The shortest path `from` … `to` inside `inside` (both ends included).
fn shortest(graph: &Graph, inside: &BTreeSet<&str>, from: &str, to: &str) -> Option<Vec<String>> {
    let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([from]);
    let mut seen = BTreeSet::from([from]);
    while let Some(v) = queue.pop_front() {
        if v == to {
            let mut path = vec![to.to_owned()];
            let mut at = to;
            while at != from {
                at = prev[at];
                path.push(at.to_owned());
            }
            path.reverse();
            return Some(path);
        }
        for w in graph[v].keys() {
            let w = w.as_str();
            if inside.contains(w) && seen.insert(w) {
                prev.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, &str)]) -> Vec<(PathBuf, String)> {
        list.iter()
            .map(|(p, t)| (PathBuf::from(p), (*t).to_owned()))
            .collect()
    }

    fn report(list: &[(&str, &str)]) -> Vec<String> {
        let (lines, n) = check_crate("k", &files(list));
        assert_eq!(
            n,
            lines.iter().filter(|l| l.contains("form a cycle")).count()
        );
        lines
    }

    /// The edges of a crate, as `from -> to`.
    fn edges(list: &[(&str, &str)]) -> Vec<String> {
        graph(&files(list))
            .iter()
            .flat_map(|(from, to)| to.keys().map(move |t| format!("{from} -> {t}")))
            .collect()
    }

    const LIB: &str = "pub mod a;\npub mod b;\npub mod c;\n";

    #[test]
    fn a_direct_cycle_is_reported_with_a_line_for_each_step() {
        let r = report(&[
            ("lib.rs", LIB),
            ("a.rs", "use std::fmt;\nuse crate::b::B;\npub struct A;\n"),
            ("b/mod.rs", "mod x;\n"),
            ("b/x.rs", "\n\n\nfn f() { let _ = crate::a::A; }\n"),
        ]);
        assert_eq!(
            r,
            [
                "crate k: modules a -> b -> a form a cycle (a.rs:2 uses crate::b, b/x.rs:4 uses crate::a)"
            ]
        );
    }

    #[test]
    fn an_indirect_cycle_is_reported() {
        let r = report(&[
            ("lib.rs", LIB),
            ("a.rs", "use crate::b::B;\n"),
            ("b.rs", "pub use crate::c::C;\n"),
            ("c.rs", "fn f() -> super::a::A { todo() }\n"),
        ]);
        assert_eq!(
            r,
            [
                "crate k: 3 modules import each other: a, b, c",
                "crate k: modules a -> b -> c -> a form a cycle (a.rs:1 uses crate::b, b.rs:1 uses crate::c, c.rs:1 uses crate::a)",
            ]
        );
    }

    #[test]
    fn the_crate_root_is_a_module() {
        let r = report(&[
            (
                "lib.rs",
                "pub mod a;\npub mod b;\npub struct Live;\n\nfn run() { a::start(); }\n",
            ),
            ("a.rs", "use crate::Live;\npub fn start() {}\n"),
            ("b.rs", "use super::Live;\n"),
        ]);
        assert_eq!(
            r,
            [
                "crate k: modules a -> crate -> a form a cycle (a.rs:1 uses crate::Live, lib.rs:5 uses crate::a)"
            ]
        );
        // `b` uses the root, but the root merely declares `b`.
        assert_eq!(
            edges(&[("lib.rs", "pub mod b;\n"), ("b.rs", "use super::X;\n")]),
            ["b -> crate"]
        );
    }

    #[test]
    fn grouped_imports_name_every_module() {
        assert_eq!(
            edges(&[
                ("lib.rs", LIB),
                (
                    "a.rs",
                    "use crate::{\n    b::{self, B},\n    c::C,\n    Root,\n};\n"
                ),
                ("b.rs", ""),
                ("c.rs", ""),
            ]),
            ["a -> b", "a -> c", "a -> crate"]
        );
        assert_eq!(
            report(&[
                ("lib.rs", LIB),
                ("a.rs", "pub use crate::{c::C, b::B};\n"),
                ("b.rs", "use crate::a;\n"),
                ("c.rs", ""),
            ]),
            [
                "crate k: modules a -> b -> a form a cycle (a.rs:1 uses crate::b, b.rs:1 uses crate::a)"
            ]
        );
    }

    #[test]
    fn super_paths_resolve_by_depth() {
        assert_eq!(
            edges(&[
                ("lib.rs", LIB),
                // `b/x.rs` is `b::x`: `super` is `b`, `super::super` the root.
                ("b/x.rs", "use super::Y;\nuse super::super::c::C;\n"),
                (
                    "b/mod.rs",
                    "mod x;\nmod inner { use super::x::X; use super::super::a::A; }\n"
                ),
                ("a.rs", ""),
                ("c.rs", ""),
            ]),
            ["b -> a", "b -> c"]
        );
    }

    #[test]
    fn comments_strings_and_test_code_make_no_edges() {
        let a = r##"
// use crate::b::B;
/// See [`crate::b::B`].
/* use crate::b::B; /* nested crate::b */ still a comment crate::b::B */
const S: &str = "crate::b::B";
const R: &str = r#"use crate::b::"B";"#;
const C: char = '"'; const D: u8 = b'\''; fn f<'a>(x: &'a str) -> &'a str { x }
const Q: [char; 3] = ['\'','"','\\']; const E: &str = "crate::b";
#[cfg(test)]
mod tests {
    use crate::b::B;
    fn g() { if true { crate::b::f(); } }
}
#[cfg(test)]
use crate::b::B;
#[cfg(test)]
mod planted;
pub struct A {
    #[cfg(test)]
    jump: crate::b::Jump,
}
pub fn a(#[cfg(test)] b: crate::b::B) { match 1 { #[cfg(test)] 2 => crate::b::f(), _ => {} } }
"##;
        let list = [
            ("lib.rs", LIB),
            ("a.rs", a),
            ("a/tests.rs", "use crate::b::B;"),
            ("a/planted.rs", "use crate::b::B;"),
            ("a/tests/more.rs", "use crate::b::B;"),
            (
                "b.rs",
                "use crate::a::A;\n#[cfg(test)]\nfn t() { let _ = \"}\"; crate::c::C; }\n",
            ),
        ];
        assert_eq!(edges(&list), ["b -> a"]);
        assert!(report(&list).is_empty());
        // A test-only field ends at its comma: the code after it is scanned.
        let mut field = list;
        field[1].1 =
            "struct A {\n    #[cfg(test)]\n    j: X,\n}\nimpl A { fn f() { crate::b::g() } }\n";
        assert_eq!(edges(&field), ["a -> b", "b -> a"]);
        // The same use outside the comment is a cycle, on the line it is on.
        let mut cyclic = list;
        cyclic[1].1 = "\n\nuse crate::b::B; // crate::c\n";
        assert_eq!(
            report(&cyclic),
            [
                "crate k: modules a -> b -> a form a cycle (a.rs:3 uses crate::b, b.rs:1 uses crate::a)"
            ]
        );
    }

    #[test]
    fn an_acyclic_tree_passes_and_main_is_another_crate() {
        let list = [
            (
                "lib.rs",
                "pub mod a;\npub mod b;\npub mod c;\npub use a::A;\nfn run() { b::go(); }\n",
            ),
            ("main.rs", "use k::a::A; fn main() { crate::x(); }\n"),
            ("a.rs", "use crate::c::C;\npub struct A;\n"),
            (
                "b/mod.rs",
                "use crate::{a::A, c};\nuse self::inner::I;\nmod inner;\n",
            ),
            ("b/inner.rs", "pub use super::super::c::C;\n"),
            (
                "c.rs",
                "pub struct C(pub std::time::Duration, pub a::b::crate::X);\n",
            ),
        ];
        assert_eq!(
            edges(&list),
            ["a -> c", "b -> a", "b -> c", "crate -> a", "crate -> b"]
        );
        assert!(report(&list).is_empty());
    }

    #[test]
    fn a_planted_cycle_on_disk_is_found() {
        let dir = std::env::temp_dir().join(format!("xtask-tidy-{}", std::process::id()));
        let src = dir.join("src");
        std::fs::create_dir_all(src.join("b")).expect("temp dir");
        for (path, text) in [
            ("lib.rs", LIB),
            ("a.rs", "use crate::b::B;\n"),
            ("b/mod.rs", "mod x;\npub struct B;\n"),
            ("b/x.rs", "use crate::c::C;\n"),
            ("c.rs", "\nuse crate::a;\n"),
        ] {
            std::fs::write(src.join(path), text).expect("write");
        }
        let files = read_tree(&src);
        std::fs::remove_dir_all(&dir).expect("clean up");
        let (lines, n) = check_crate("planted", &files.expect("read"));
        assert_eq!(n, 1);
        assert_eq!(
            lines.last().map(String::as_str),
            Some(
                "crate planted: modules a -> b -> c -> a form a cycle (a.rs:1 uses crate::b, b/x.rs:1 uses crate::c, c.rs:2 uses crate::a)"
            )
        );
    }

    /// A function `name` of `n` lines (`fn` line to closing brace) with braces, `fn` and
    /// quotes in comments and literals on its lines.
    fn planted(name: &str, n: usize) -> String {
        let mut f = format!("pub fn {name}(x: [u8; 2]) -> Option<u8> {{\n");
        let noise = [
            "    let _ = \"}} fn fake() { {\";",
            "    // } fn comment() {",
            "    let _ = r#\"}\" fn raw() { \"#;",
            "    /* } fn block() { */ let _ = '}';",
            "    if x[0] > 1 { let _ = '{'; }",
        ];
        for i in 0..n - 2 {
            f.push_str(noise[i % noise.len()]);
            f.push('\n');
        }
        f.push_str("}\n");
        assert_eq!(f.lines().count(), n);
        f
    }

    fn sources(list: &[(&str, &str, String)]) -> Vec<Source> {
        list.iter()
            .map(|(k, f, t)| Source {
                krate: (*k).to_owned(),
                file: (*f).to_owned(),
                text: t.clone(),
            })
            .collect()
    }

    #[test]
    fn a_function_over_the_limit_is_reported_and_one_at_it_is_not() {
        let text = format!(
            "//! doc {{\n\n{}\n{}\ntrait T {{ fn decl(&self) -> [u8; 3]; }}\n",
            planted("at_limit", 120),
            planted("over", 121)
        );
        // `at_limit` starts on line 3, `over` two lines after it ends.
        assert_eq!(
            long_fns(&text, FN_LIMIT),
            [LongFn {
                name: "over".into(),
                line: 124,
                lines: 121
            }]
        );
        let (lines, n) = fn_length_report(
            &sources(&[
                ("k", "crates/k/src/a.rs", text),
                ("k", "crates/k/src/b.rs", planted("short", 3)),
                ("m", "crates/m/src/lib.rs", planted("fine", 120)),
            ]),
            &[],
        );
        assert_eq!(n, 1);
        assert_eq!(
            lines,
            [
                "crate k: crates/k/src/a.rs:124 fn over is 121 lines (limit 120)",
                "crate m: no function longer than 120 lines outside the exceptions",
            ]
        );
    }

    #[test]
    fn braces_and_fn_in_strings_and_comments_are_not_code() {
        // Unbalanced braces in literals and comments would end the body early or late, and a
        // `fn` in them would be a function of its own.
        let text = format!(
            "const S: &str = \"fn s() {{\";\n// fn c() {{\n{}const R: &str = r##\"}}\"#}}\"##;\n{}",
            planted("f", 121),
            "fn g(f: fn(u8) -> u8) -> u8 { f(1) }\n"
        );
        assert_eq!(
            long_fns(&text, FN_LIMIT),
            [LongFn {
                name: "f".into(),
                line: 3,
                lines: 121
            }]
        );
        // A nested function counts on its own, and in its outer function's lines.
        let nested = format!("fn outer() {{\n{}}}\n", planted("inner", 121));
        let names: Vec<(String, usize)> = long_fns(&nested, FN_LIMIT)
            .into_iter()
            .map(|f| (f.name, f.lines))
            .collect();
        assert_eq!(names, [("outer".into(), 123), ("inner".into(), 121)]);
    }

    #[test]
    fn an_allowlisted_function_is_not_reported_and_a_stale_exception_is() {
        let md = "# Architecture\n\n## Code map\n\n- `crates/k/src/a.rs` `over`: not an exception here\n\n## Long functions\n\nOne bullet each.\n\n- `crates/k/src/a.rs` `over`: a table, one arm per\n  register, reads best in one piece\n- `crates/k/src/gone.rs` `old`: was split\n\n## Invariants\n\n- `crates/k/src/b.rs` `other`: not in the section\n";
        let allowed = parse_allowlist(md).expect("parses");
        assert_eq!(
            allowed,
            [
                Allowed {
                    file: "crates/k/src/a.rs".into(),
                    name: "over".into(),
                    line: 11
                },
                Allowed {
                    file: "crates/k/src/gone.rs".into(),
                    name: "old".into(),
                    line: 13
                },
            ]
        );
        let (lines, n) = fn_length_report(
            &sources(&[
                ("k", "crates/k/src/a.rs", planted("over", 200)),
                ("k", "crates/k/src/b.rs", planted("over", 121)),
            ]),
            &allowed,
        );
        assert_eq!(n, 2);
        assert_eq!(
            lines,
            [
                "crate k: crates/k/src/b.rs:1 fn over is 121 lines (limit 120)",
                "ARCHITECTURE.md:13: exception for crates/k/src/gone.rs fn old matches no function over 120 lines: remove it",
            ]
        );
        // An exception without a reason, or not in the format, is an error.
        for bad in [
            "- `crates/k/src/a.rs` `over`:",
            "- crates/k/src/a.rs over: why",
        ] {
            let md = format!("## Long functions\n\n{bad}\n");
            let err = parse_allowlist(&md).expect_err(bad).to_string();
            assert!(err.starts_with("ARCHITECTURE.md:3: expected"), "{err}");
        }
    }

    #[test]
    fn the_workspace_allowlist_parses() {
        let md = std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("read");
        assert!(md.contains(&format!("\n{ALLOWLIST_HEADING}\n")));
        parse_allowlist(&md).expect("ARCHITECTURE.md's exceptions parse");
    }
}
