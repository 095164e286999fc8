//! The doctor's output: a table for people, JSON for provisioning scripts.

use std::fmt::Write as _;

use super::roots::RootProblem;
use super::{Finding, Verdict};

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

/// The report; `problems` (trees that are missing or of the wrong kind) come first, as the
/// reason for the SKIPs below them.
pub fn render(findings: &[Finding], problems: &[RootProblem], format: Format) -> String {
    match format {
        Format::Table => {
            let mut out = String::new();
            for p in problems {
                let _ = writeln!(
                    out,
                    "NOT CHECKED: {}; the checks that read it SKIP",
                    p.message
                );
            }
            if !problems.is_empty() {
                out.push('\n');
            }
            out + &table(findings)
        }
        Format::Json => json(findings, problems),
    }
}

/// One row per check under a heading per category: check, verdict and what was found, with the
/// reason (`why:`) and the fix (`fix:`) on lines of their own below it, so a long fix does not
/// stretch every row beyond the terminal. Where nothing was found (a SKIP), the reason stands in
/// its place.
fn table(findings: &[Finding]) -> String {
    let check_w = findings
        .iter()
        .map(|f| f.check.len())
        .chain(["CHECK".len()])
        .max()
        .unwrap_or(0);
    let indent = " ".repeat(check_w + 2 + "VERDICT".len() + 2);
    let mut out = String::new();
    let _ = writeln!(out, "{:check_w$}  VERDICT  FOUND", "CHECK");
    let mut category = None;
    for f in findings {
        if category != Some(f.category) {
            category = Some(f.category);
            let _ = writeln!(out, "[{}]", f.category.label());
        }
        let found_shown = !f.found.is_empty() && f.found != "-";
        let first = if found_shown { &f.found } else { &f.reason };
        let line = format!("{:check_w$}  {:7}  {first}", f.check, f.verdict.label());
        out.push_str(line.trim_end());
        out.push('\n');
        if found_shown && !f.reason.is_empty() {
            let _ = writeln!(out, "{indent}why: {}", f.reason);
        }
        if !f.fix.is_empty() {
            let _ = writeln!(out, "{indent}fix: {}", f.fix);
        }
    }
    let count = |v: Verdict| findings.iter().filter(|f| f.verdict == v).count();
    let _ = writeln!(
        out,
        "\n{} pass, {} warn, {} fail, {} skip",
        count(Verdict::Pass),
        count(Verdict::Warn),
        count(Verdict::Fail),
        count(Verdict::Skip)
    );
    out
}

fn json(findings: &[Finding], problems: &[RootProblem]) -> String {
    let count = |v: Verdict| findings.iter().filter(|f| f.verdict == v).count();
    let roots: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
    let document = serde_json::json!({
        "roots": roots,
        "checks": findings,
        "summary": {
            "pass": count(Verdict::Pass),
            "warn": count(Verdict::Warn),
            "fail": count(Verdict::Fail),
            "skip": count(Verdict::Skip),
        },
    });
    let mut text = serde_json::to_string_pretty(&document).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Category;

    fn finding(
        check: &'static str,
        verdict: Verdict,
        reason: &str,
        found: &str,
        fix: &str,
    ) -> Finding {
        Finding {
            check,
            category: Category::Storage,
            verdict,
            reason: reason.into(),
            found: found.into(),
            fix: fix.into(),
        }
    }

    #[test]
    fn the_table_puts_reason_and_fix_under_the_finding() {
        let table = render(
            &[
                finding("noatime", Verdict::Pass, "", "noatime: /data", ""),
                finding(
                    "boot_media",
                    Verdict::Warn,
                    "SD cards wear out",
                    "/ on /dev/mmcblk0p2 (SD card)",
                    "boot from a USB SSD",
                ),
                finding(
                    "flash_wear",
                    Verdict::Skip,
                    "SD cards report no wear",
                    "-",
                    "",
                ),
            ],
            &[],
            Format::Table,
        );
        assert_eq!(
            table,
            "CHECK       VERDICT  FOUND\n\
             [storage]\n\
             noatime     PASS     noatime: /data\n\
             boot_media  WARN     / on /dev/mmcblk0p2 (SD card)\n\
             \x20                    why: SD cards wear out\n\
             \x20                    fix: boot from a USB SSD\n\
             flash_wear  SKIP     SD cards report no wear\n\
             \n1 pass, 1 warn, 0 fail, 1 skip\n"
        );
    }
}
