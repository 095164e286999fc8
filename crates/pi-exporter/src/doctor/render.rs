//! The doctor's output: a table for people, JSON for provisioning scripts.

use std::fmt::Write as _;

use super::{Finding, Verdict};

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

pub fn render(findings: &[Finding], format: Format) -> String {
    match format {
        Format::Table => table(findings),
        Format::Json => json(findings),
    }
}

fn verdict_text(f: &Finding) -> String {
    if f.reason.is_empty() {
        f.verdict.label().to_owned()
    } else {
        format!("{}: {}", f.verdict.label(), f.reason)
    }
}

/// One row per check under a heading per category; columns check, verdict (with the reason),
/// found, fix.
fn table(findings: &[Finding]) -> String {
    let width = |column: &dyn Fn(&Finding) -> usize, title: &str| {
        findings
            .iter()
            .map(column)
            .chain([title.chars().count()])
            .max()
            .unwrap_or(0)
    };
    let check_w = width(&|f| f.check.len(), "CHECK");
    let verdict_w = width(&|f| verdict_text(f).chars().count(), "VERDICT");
    let found_w = width(&|f| f.found.chars().count(), "FOUND");
    let mut out = String::new();
    let row = |out: &mut String, check: &str, verdict: &str, found: &str, fix: &str| {
        let pad =
            |s: &str, w: usize| format!("{s}{}", " ".repeat(w.saturating_sub(s.chars().count())));
        let line = format!(
            "{}  {}  {}  {fix}",
            pad(check, check_w),
            pad(verdict, verdict_w),
            pad(found, found_w)
        );
        out.push_str(line.trim_end());
        out.push('\n');
    };
    row(&mut out, "CHECK", "VERDICT", "FOUND", "FIX");
    let mut category = None;
    for f in findings {
        if category != Some(f.category) {
            category = Some(f.category);
            let _ = writeln!(out, "[{}]", f.category.label());
        }
        row(&mut out, f.check, &verdict_text(f), &f.found, &f.fix);
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

fn json(findings: &[Finding]) -> String {
    let count = |v: Verdict| findings.iter().filter(|f| f.verdict == v).count();
    let document = serde_json::json!({
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
