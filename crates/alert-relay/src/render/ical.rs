//! A rotation's shifts as an iCalendar feed (RFC 5545) that phone and desktop calendars can
//! subscribe to: one `VEVENT` per stretch of one person on call, in UTC (the calendar shows
//! it in the reader's zone), named by rotation and start so a refetch updates, not adds. Pure.

use jiff::Timestamp;

use crate::rotation::{Rotation, Shift};

/// Longest content line in octets, before the line break (RFC 5545 §3.1).
const LINE_OCTETS: usize = 75;

/// `VCALENDAR` of `shifts` of `rotation`; `stamp` is when it was made (`DTSTAMP`). A shift
/// that never ends is cut at a year after its start (calendars want an end).
pub fn rotation_calendar(rotation: &Rotation, shifts: &[Shift<'_>], stamp: Timestamp) -> String {
    let mut out = String::new();
    let mut line = |text: &str| fold_into(&mut out, text);
    line("BEGIN:VCALENDAR");
    line("VERSION:2.0");
    line("PRODID:-//pifleet//alert-relay//EN");
    line("CALSCALE:GREGORIAN");
    line("METHOD:PUBLISH");
    line(&format!(
        "X-WR-CALNAME:{}",
        text(&format!("On call: {}", rotation.name))
    ));
    for shift in shifts {
        let end = if shift.end == Timestamp::MAX {
            shift
                .start
                .checked_add(jiff::SignedDuration::from_hours(24 * 365))
                .unwrap_or(shift.end)
        } else {
            shift.end
        };
        line("BEGIN:VEVENT");
        line(&format!(
            "UID:{}-{}@alert-relay",
            uid_part(&rotation.name),
            shift.start.as_second()
        ));
        line(&format!("DTSTAMP:{}", utc(stamp)));
        line(&format!("DTSTART:{}", utc(shift.start)));
        line(&format!("DTEND:{}", utc(end)));
        line(&format!(
            "SUMMARY:{}",
            text(&format!(
                "{} on call ({})",
                shift.person.name, rotation.name
            ))
        ));
        line(&format!(
            "DESCRIPTION:{}",
            text(&format!(
                "Rotation {} ({}): pages reach {} through {}.",
                rotation.name,
                rotation.time_zone_name,
                shift.person.name,
                shift.person.notify.join(", ")
            ))
        ));
        line("TRANSP:TRANSPARENT");
        line("END:VEVENT");
    }
    line("END:VCALENDAR");
    out
}

/// `20260329T070000Z`.
fn utc(t: Timestamp) -> String {
    t.strftime("%Y%m%dT%H%M%SZ").to_string()
}

/// A TEXT value: backslash, semicolon, comma and line breaks escaped (RFC 5545 §3.3.11);
/// other control characters dropped.
fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | ';' | ',' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The rotation's name in a UID: letters, digits, `-`, `_` and `.`; anything else as `_`.
fn uid_part(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Appends `line` folded at [`LINE_OCTETS`] octets, never inside a character (a folded line
/// continues after CRLF and one space), ending with CRLF.
fn fold_into(out: &mut String, line: &str) {
    let mut width = 0;
    for c in line.chars() {
        if width + c.len_utf8() > LINE_OCTETS {
            out.push_str("\r\n ");
            width = 1;
        }
        out.push(c);
        width += c.len_utf8();
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use jiff::tz::TimeZone;
    use jiff::{SignedDuration, civil};

    use super::*;
    use crate::rotation::Person;

    fn rotation(name: &str) -> Rotation {
        let person = |n: &str| Person {
            name: n.into(),
            notify: vec![format!("{n}-sms"), "slack".into()],
        };
        Rotation {
            name: name.into(),
            time_zone_name: "Europe/Berlin".into(),
            time_zone: TimeZone::get("Europe/Berlin").expect("tz database"),
            first: civil::date(2026, 3, 26).at(9, 0, 0, 0),
            shift: SignedDuration::from_hours(24),
            people: vec![person("alice"), person("bob")],
            overrides: Vec::new(),
        }
    }

    fn unfold(feed: &str) -> Vec<String> {
        feed.replace("\r\n ", "")
            .split("\r\n")
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn one_event_per_shift_in_utc_across_a_dst_change() {
        let r = rotation("primary");
        let from: Timestamp = "2026-03-28T10:00:00Z".parse().expect("ts");
        let until: Timestamp = "2026-03-30T10:00:00Z".parse().expect("ts");
        let shifts = r.shifts(from, until);
        let feed = rotation_calendar(&r, &shifts, from);
        assert!(feed.ends_with("END:VCALENDAR\r\n"), "{feed}");
        let lines = unfold(&feed);
        let starts: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("DTSTART:"))
            .collect();
        // 09:00 CET is 08:00 UTC; after spring forward 09:00 CEST is 07:00 UTC.
        assert_eq!(
            starts,
            ["20260328T080000Z", "20260329T070000Z", "20260330T070000Z"]
        );
        let summaries: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("SUMMARY:"))
            .collect();
        assert_eq!(
            summaries,
            [
                "alice on call (primary)",
                "bob on call (primary)",
                "alice on call (primary)"
            ]
        );
        assert!(lines.contains(&"UID:primary-1774684800@alert-relay".to_owned()));
        assert!(lines.contains(&"DTEND:20260329T070000Z".to_owned()));
        assert!(
            lines.contains(
                &"DESCRIPTION:Rotation primary (Europe/Berlin): pages reach bob through bob-sms\\, slack."
                    .to_owned()
            ),
            "{lines:#?}"
        );
    }

    #[test]
    fn long_lines_fold_between_characters_and_text_is_escaped() {
        let mut out = String::new();
        let long = format!("SUMMARY:{}", "é".repeat(60));
        fold_into(&mut out, &long);
        for l in out.split("\r\n") {
            assert!(l.len() <= LINE_OCTETS, "{} octets: {l}", l.len());
        }
        assert_eq!(unfold(&out)[0], long);
        assert_eq!(text("a;b,c\\d\ne\u{7}"), "a\\;b\\,c\\\\d\\ne");
        assert_eq!(uid_part("on call/ops ü"), "on_call_ops__");
    }

    #[test]
    fn an_endless_shift_ends_a_year_later() {
        let mut r = rotation("solo");
        r.people.truncate(1);
        let at: Timestamp = "2026-05-01T00:00:00Z".parse().expect("ts");
        let feed = rotation_calendar(&r, &r.shifts(at, at), at);
        assert!(feed.contains("DTEND:20270430T070000Z\r\n"), "{feed}");
    }
}
