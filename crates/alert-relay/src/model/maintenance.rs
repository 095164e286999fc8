//! Maintenance windows: matchers and a time span (once, or every week) during which matching
//! alerts are stored and shown but page nobody. The window, the form that creates one and its
//! validation, and the store's maintenance writes. Pure: the clock is an argument.

use crate::matcher::{self, Matcher};
use crate::payload::Labels;

/// A week in ms: a weekly window repeats with this period.
pub const WEEK_MS: i64 = 7 * 24 * 3600 * 1000;
/// The longest reason a window keeps (characters).
pub const REASON_MAX: usize = 500;
/// The longest author name a window keeps (characters).
pub const AUTHOR_MAX: usize = 200;

/// One stored window. Times are unix ms.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Window {
    pub id: i64,
    #[serde(skip)]
    pub matchers: Vec<Matcher>,
    /// The matchers as stored (`{site="a", severity=~"warn.*"}`).
    pub matchers_text: String,
    pub starts_ms: i64,
    /// The end of the first occurrence: a weekly window lasts `ends_ms - starts_ms` each week.
    pub ends_ms: i64,
    pub weekly: bool,
    pub reason: String,
    pub author: String,
    pub created_ms: i64,
    /// Ended early by hand: no occurrence runs past this time.
    pub ended_ms: Option<i64>,
    /// Who ended it early.
    pub ended_by: Option<String>,
    /// Firing alerts it kept from paging (stored: right across restarts and instances).
    pub suppressed: i64,
}

impl Window {
    /// The occurrence in force at `now_ms`, else the next one; `None` once the window is over
    /// (its end passed, or it was ended by hand).
    pub fn current_or_next(&self, now_ms: i64) -> Option<(i64, i64)> {
        let length = self.ends_ms.checked_sub(self.starts_ms)?;
        if length <= 0 {
            return None;
        }
        let (start, end) = if self.weekly && now_ms >= self.starts_ms {
            let weeks = (now_ms - self.starts_ms) / WEEK_MS;
            let start = self.starts_ms.checked_add(weeks.checked_mul(WEEK_MS)?)?;
            let end = start.checked_add(length)?;
            if end <= now_ms {
                let next = start.checked_add(WEEK_MS)?;
                (next, next.checked_add(length)?)
            } else {
                (start, end)
            }
        } else {
            (self.starts_ms, self.ends_ms)
        };
        let end = match self.ended_ms {
            Some(ended) if ended <= now_ms => return None,
            Some(ended) => end.min(ended),
            None => end,
        };
        (end > now_ms && start < end).then_some((start, end))
    }

    /// Whether the window holds alerts at `now_ms`.
    pub fn active_at(&self, now_ms: i64) -> bool {
        self.current_or_next(now_ms)
            .is_some_and(|(start, end)| start <= now_ms && now_ms < end)
    }

    /// Whether every matcher matches `labels` (a window always has one at least).
    pub fn matches(&self, labels: &Labels) -> bool {
        !self.matchers.is_empty() && self.matchers.iter().all(|m| m.matches(labels))
    }

    /// Over for good: neither in force nor to come.
    pub fn is_over(&self, now_ms: i64) -> bool {
        self.current_or_next(now_ms).is_none()
    }
}

/// A window as validated, before the store numbers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWindow {
    pub matchers: Vec<Matcher>,
    /// The matchers written out in Alertmanager's brace form.
    pub matchers_text: String,
    pub starts_ms: i64,
    pub ends_ms: i64,
    pub weekly: bool,
    pub reason: String,
    pub author: String,
}

/// What a person fills in (the console's form, the API's JSON body, the CLI's flags).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct WindowForm {
    /// `{site="a", severity=~"warn.*"}` or a bare `site="a", severity!="info"`.
    pub matchers: String,
    /// RFC 3339; empty: now.
    pub start: String,
    /// RFC 3339; give this or `duration`.
    pub end: String,
    /// The relay's duration syntax (`2h`, `3d`, `1h30m`); give this or `end`.
    pub duration: String,
    pub weekly: bool,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("the matchers do not parse: {0}")]
    Matchers(String),
    #[error(
        "no matchers: a window without matchers would hold every alert (give e.g. {{site=\"a\"}})"
    )]
    NoMatchers,
    #[error("start {0:?} is not an RFC 3339 time (e.g. 2026-12-08T22:00:00Z)")]
    Start(String),
    #[error("end {0:?} is not an RFC 3339 time (e.g. 2026-12-09T06:00:00Z)")]
    End(String),
    #[error("duration: {0}")]
    Duration(String),
    #[error("give either an end or a duration, not both")]
    EndAndDuration,
    #[error("give an end or a duration")]
    NoEnd,
    #[error("the window ends ({end}) before or when it starts ({start})")]
    EndsBeforeStart { start: String, end: String },
    #[error("the window ends in the past ({0})")]
    EndInPast(String),
    #[error("a weekly window lasts at most 7 days; this one lasts {0}")]
    WeeklyTooLong(String),
    #[error("a reason is required")]
    NoReason,
    #[error("the reason is {0} characters long; at most {REASON_MAX} are kept")]
    ReasonTooLong(usize),
    #[error("the author is {0} characters long; at most {AUTHOR_MAX} are kept")]
    AuthorTooLong(usize),
}

/// `ms` as RFC 3339 (UTC), for messages.
fn at(ms: i64) -> String {
    crate::time::format_rfc3339(ms.saturating_mul(1_000_000))
}

fn parse_time(text: &str) -> Option<i64> {
    crate::time::parse_rfc3339(text.trim()).map(|nanos| nanos.div_euclid(1_000_000))
}

/// The matchers of a window: Alertmanager's brace form or a bare list, never empty.
pub fn parse_matchers(text: &str) -> Result<Vec<Matcher>, WindowError> {
    let trimmed = text.trim();
    let inner = trimmed
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or(trimmed);
    if inner.trim().is_empty() {
        return Err(WindowError::NoMatchers);
    }
    matcher::parse_set(trimmed).map_err(WindowError::Matchers)
}

/// Matchers in the brace form they are stored and shown in.
pub fn matchers_text(matchers: &[Matcher]) -> String {
    let parts: Vec<String> = matchers.iter().map(ToString::to_string).collect();
    format!("{{{}}}", parts.join(", "))
}

impl WindowForm {
    /// The window this form asks for, by `author` at `now_ms`; every mistake is a
    /// [`WindowError`] that says what to change.
    pub fn validate(&self, author: &str, now_ms: i64) -> Result<NewWindow, WindowError> {
        let matchers = parse_matchers(&self.matchers)?;
        let starts_ms = match self.start.trim() {
            "" => now_ms,
            s => parse_time(s).ok_or_else(|| WindowError::Start(s.to_owned()))?,
        };
        let ends_ms = match (self.end.trim(), self.duration.trim()) {
            ("", "") => return Err(WindowError::NoEnd),
            (_, d) if !d.is_empty() && !self.end.trim().is_empty() => {
                return Err(WindowError::EndAndDuration);
            }
            (e, "") => parse_time(e).ok_or_else(|| WindowError::End(e.to_owned()))?,
            (_, d) => {
                let length = serving::duration::parse(d).map_err(WindowError::Duration)?;
                let length = i64::try_from(length.as_millis())
                    .map_err(|_| WindowError::Duration(format!("{d:?} is too long")))?;
                starts_ms
                    .checked_add(length)
                    .ok_or_else(|| WindowError::Duration(format!("{d:?} is too long")))?
            }
        };
        if ends_ms <= starts_ms {
            return Err(WindowError::EndsBeforeStart {
                start: at(starts_ms),
                end: at(ends_ms),
            });
        }
        if ends_ms <= now_ms {
            return Err(WindowError::EndInPast(at(ends_ms)));
        }
        if self.weekly && ends_ms - starts_ms > WEEK_MS {
            let length = std::time::Duration::from_millis(
                u64::try_from(ends_ms - starts_ms).unwrap_or(u64::MAX),
            );
            return Err(WindowError::WeeklyTooLong(crate::time::humanize(length)));
        }
        let reason = self.reason.trim();
        if reason.is_empty() {
            return Err(WindowError::NoReason);
        }
        let chars = reason.chars().count();
        if chars > REASON_MAX {
            return Err(WindowError::ReasonTooLong(chars));
        }
        let author = author.trim();
        let author_chars = author.chars().count();
        if author_chars > AUTHOR_MAX {
            return Err(WindowError::AuthorTooLong(author_chars));
        }
        Ok(NewWindow {
            matchers_text: matchers_text(&matchers),
            matchers,
            starts_ms,
            ends_ms,
            weekly: self.weekly,
            reason: reason.to_owned(),
            author: author.to_owned(),
        })
    }
}

/// The store's maintenance writes.
#[derive(Debug, Clone)]
pub enum MaintenanceWrite {
    /// Stores a new window. Answers [`MaintenanceWritten::Created`].
    Create(NewWindow),
    /// Ends window `id` at `at` (by hand): no occurrence runs past it. The incidents it held
    /// that are not resolved are released in the same transaction (their first step is then
    /// due). Answers [`MaintenanceWritten::Ended`] (`found`: false when no such window is in
    /// force or to come).
    End { id: i64, by: String, at: i64 },
    /// Window `window` holds an incident that was escalating when it began (the escalator):
    /// no further step while it is in force. Answers [`MaintenanceWritten::Changed`].
    Hold { incident: i64, window: i64 },
    /// Window `window` is over: the incidents it held that are not resolved escalate again.
    /// Answers [`MaintenanceWritten::Changed`] with their ids.
    Release { window: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaintenanceWritten {
    Created(i64),
    Ended { found: bool, released: Vec<i64> },
    Changed(Vec<i64>),
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;
    const HOUR: i64 = 3_600_000;

    fn form(matchers: &str, end: &str, duration: &str) -> WindowForm {
        WindowForm {
            matchers: matchers.into(),
            start: String::new(),
            end: end.into(),
            duration: duration.into(),
            weekly: false,
            reason: "firmware update".into(),
        }
    }

    fn window(starts_ms: i64, ends_ms: i64, weekly: bool) -> Window {
        Window {
            id: 1,
            matchers: parse_matchers("site=\"a\"").expect("matchers"),
            matchers_text: "{site=\"a\"}".into(),
            starts_ms,
            ends_ms,
            weekly,
            reason: "r".into(),
            author: "alice".into(),
            created_ms: starts_ms,
            ended_ms: None,
            ended_by: None,
            suppressed: 0,
        }
    }

    #[test]
    fn a_form_with_a_duration_starts_now_and_keeps_its_matchers() {
        let w = form("{site=\"a\", severity=~\"warn.*\"}", "", "2h")
            .validate(" alice ", NOW)
            .expect("valid");
        assert_eq!((w.starts_ms, w.ends_ms), (NOW, NOW + 2 * HOUR));
        assert_eq!(w.matchers_text, "{site=\"a\", severity=~\"warn.*\"}");
        assert_eq!(w.author, "alice");
        assert_eq!(w.reason, "firmware update");
        // A bare list reads the same; longer than a day is fine.
        let bare = form("site=\"a\", severity=~\"warn.*\"", "", "3d")
            .validate("bob", NOW)
            .expect("valid");
        assert_eq!(bare.matchers, w.matchers);
        assert_eq!(bare.ends_ms - bare.starts_ms, 72 * HOUR);
    }

    #[test]
    fn a_form_with_a_start_and_an_end_in_rfc3339() {
        let mut f = form("site=\"a\"", "2027-01-15T10:00:00+01:00", "");
        f.start = "2027-01-15T06:00:00Z".into();
        let w = f.validate("alice", NOW).expect("valid");
        assert_eq!(
            crate::time::format_rfc3339(w.starts_ms * 1_000_000),
            "2027-01-15T06:00:00Z"
        );
        assert_eq!(w.ends_ms - w.starts_ms, 3 * HOUR);
    }

    #[test]
    fn bad_forms_say_what_is_wrong() {
        let err = |f: WindowForm| f.validate("alice", NOW).expect_err("invalid");
        assert!(matches!(
            err(form("site", "", "2h")),
            WindowError::Matchers(_)
        ));
        assert!(matches!(
            err(form("{site=~\"(\"}", "", "2h")),
            WindowError::Matchers(_)
        ));
        assert_eq!(err(form("", "", "2h")), WindowError::NoMatchers);
        assert_eq!(err(form(" { } ", "", "2h")), WindowError::NoMatchers);
        assert_eq!(err(form("a=\"b\"", "", "")), WindowError::NoEnd);
        assert_eq!(
            err(form("a=\"b\"", "2027-01-01T00:00:00Z", "2h")),
            WindowError::EndAndDuration
        );
        assert!(matches!(
            err(form("a=\"b\"", "tomorrow", "")),
            WindowError::End(_)
        ));
        assert!(matches!(
            err(form("a=\"b\"", "", "2 hours")),
            WindowError::Duration(_)
        ));
        assert!(matches!(
            err(form("a=\"b\"", "", "0")),
            WindowError::EndsBeforeStart { .. }
        ));
        let mut backwards = form("a=\"b\"", "2027-01-01T00:00:00Z", "");
        backwards.start = "2027-01-02T00:00:00Z".into();
        let e = err(backwards);
        assert_eq!(
            e.to_string(),
            "the window ends (2027-01-01T00:00:00Z) before or when it starts (2027-01-02T00:00:00Z)"
        );
        let mut bad_start = form("a=\"b\"", "", "1h");
        bad_start.start = "12:00".into();
        assert!(matches!(err(bad_start), WindowError::Start(_)));
        // Starting and ending in the past.
        let mut past = form("a=\"b\"", "", "1h");
        past.start = crate::time::format_rfc3339((NOW - 5 * HOUR) * 1_000_000);
        assert!(matches!(err(past), WindowError::EndInPast(_)));
        let mut weekly = form("a=\"b\"", "", "8d");
        weekly.weekly = true;
        assert!(matches!(err(weekly.clone()), WindowError::WeeklyTooLong(_)));
        weekly.duration = "7d".into();
        assert!(weekly.validate("alice", NOW).is_ok());
        let mut no_reason = form("a=\"b\"", "", "1h");
        no_reason.reason = "  ".into();
        assert_eq!(err(no_reason.clone()), WindowError::NoReason);
        no_reason.reason = "x".repeat(501);
        assert_eq!(err(no_reason.clone()), WindowError::ReasonTooLong(501));
        no_reason.reason = "é".repeat(500);
        assert!(no_reason.validate("alice", NOW).is_ok());
    }

    #[test]
    fn a_one_off_window_is_active_between_its_start_and_end() {
        let w = window(NOW, NOW + HOUR, false);
        assert!(!w.active_at(NOW - 1));
        assert_eq!(w.current_or_next(NOW - 1), Some((NOW, NOW + HOUR)));
        assert!(w.active_at(NOW));
        assert!(w.active_at(NOW + HOUR - 1));
        assert!(!w.active_at(NOW + HOUR));
        assert_eq!(w.current_or_next(NOW + HOUR), None);
        assert!(w.is_over(NOW + HOUR));
    }

    #[test]
    fn a_weekly_window_repeats_every_seven_days_for_its_length() {
        let w = window(NOW, NOW + 2 * HOUR, true);
        for week in 0..3 {
            let start = NOW + week * WEEK_MS;
            assert!(w.active_at(start), "week {week}");
            assert!(w.active_at(start + 2 * HOUR - 1), "week {week}");
            assert!(!w.active_at(start + 2 * HOUR), "week {week}");
            assert!(!w.active_at(start - 1), "week {week}");
            assert_eq!(
                w.current_or_next(start + 3 * HOUR),
                Some((start + WEEK_MS, start + WEEK_MS + 2 * HOUR))
            );
        }
        assert!(!w.is_over(NOW + 100 * WEEK_MS));
    }

    #[test]
    fn ending_by_hand_stops_a_window_and_its_recurrences() {
        let mut w = window(NOW, NOW + 2 * HOUR, true);
        w.ended_ms = Some(NOW + HOUR);
        assert!(w.active_at(NOW + HOUR - 1));
        assert!(!w.active_at(NOW + HOUR));
        assert!(!w.active_at(NOW + WEEK_MS));
        assert_eq!(w.current_or_next(NOW + HOUR), None);
        // Ended before it began: it never runs.
        let mut future = window(NOW + HOUR, NOW + 2 * HOUR, false);
        future.ended_ms = Some(NOW);
        assert!(!future.active_at(NOW + HOUR));
    }

    #[test]
    fn matches_needs_every_matcher() {
        let mut w = window(NOW, NOW + HOUR, false);
        w.matchers = parse_matchers("{site=\"a\", severity=~\"warn.*\"}").expect("m");
        let labels = |site: &str, sev: &str| {
            Labels::from([
                ("site".into(), site.into()),
                ("severity".into(), sev.into()),
            ])
        };
        assert!(w.matches(&labels("a", "warning")));
        assert!(!w.matches(&labels("a", "critical")));
        assert!(!w.matches(&labels("b", "warning")));
        w.matchers.clear();
        assert!(!w.matches(&labels("a", "warning")));
    }
}
