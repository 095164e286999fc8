//! Time without a time library: RFC 3339 as Alertmanager writes it, Prometheus-style durations,
//! and the short "firing for 1h 5m" form messages use. Pure.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch (negative before 1970: Go's zero time is year 1).
pub type UnixNanos = i64;

/// Now, for timestamps stored with rows (wall clock; only used for ages shown to humans).
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The wall clock the relay reads for stamps on rows, ack-link expiry and rotation look-ups
/// (escalation never reads it: see `escalation`). In production it is the system clock; unit
/// tests share one instance between components and make it jump.
#[derive(Debug, Clone, Default)]
pub struct WallClock {
    #[cfg(test)]
    jump_ms: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

impl WallClock {
    pub fn now_millis(&self) -> i64 {
        #[cfg(test)]
        return now_millis()
            .saturating_add(self.jump_ms.load(std::sync::atomic::Ordering::Relaxed));
        #[cfg(not(test))]
        now_millis()
    }

    pub fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::from_millisecond(self.now_millis()).unwrap_or(jiff::Timestamp::MAX)
    }

    /// Steps this clock (and every clone of it) by `ms`, as NTP correcting a Pi would.
    #[cfg(test)]
    pub(crate) fn jump(&self, ms: i64) {
        self.jump_ms
            .fetch_add(ms, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`; lower-case `t`/`z` and a space separator are
/// accepted as RFC 3339 allows.
pub fn parse_rfc3339(s: &str) -> Option<UnixNanos> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(range)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        part.iter()
            .try_fold(0i64, |acc, d| Some(acc * 10 + i64::from(d - b'0')))
    };
    let year = num(0..4)?;
    let month = num(5..7)?;
    let day = num(8..10)?;
    let hour = num(11..13)?;
    let minute = num(14..16)?;
    let second = num(17..19)?;
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 9 {
                nanos = nanos * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..9 {
            nanos *= 10;
        }
    }
    let offset_seconds = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let off = oh * 3600 + om * 60;
            if *sign == b'+' { off } else { -off }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second.min(59) - offset_seconds;
    seconds.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// Whether `s` is Go's zero `time.Time` (year 1, outside the nanosecond range), which
/// Alertmanager writes as `endsAt` while an alert fires: "not set".
pub fn is_go_zero(s: &str) -> bool {
    s.starts_with("0001-01-01T00:00:00")
}

/// `2026-01-02T03:04:05Z` (UTC, seconds precision) for messages and for the webhook channel.
pub fn format_rfc3339(nanos: UnixNanos) -> String {
    let secs = nanos.div_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Durations in the configuration: the one syntax of both binaries (Go's `500ms`, `1m30s`,
/// `1.5s` plus Prometheus' `d`, `w`, `y`).
pub use serving::duration::parse as parse_duration;

/// A compact human duration for messages: `45s`, `12m`, `3h 5m`, `2d 4h`.
pub fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 if s % 3600 / 60 == 0 => format!("{}h", s / 3600),
        3600..86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ if s % 86_400 / 3600 == 0 => format!("{}d", s / 86_400),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_alertmanager_times() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2026-03-01T12:30:05.123456789Z"),
            Some(1_772_368_205_123_456_789)
        );
        assert_eq!(
            parse_rfc3339("2026-03-01T14:30:05.5+02:00"),
            Some(1_772_368_205_500_000_000)
        );
        // Year 1 does not fit in i64 nanoseconds; callers test for it first.
        assert_eq!(parse_rfc3339("0001-01-01T00:00:00Z"), None);
        assert!(is_go_zero("0001-01-01T00:00:00Z"));
        for bad in [
            "",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00+0200",
            "2026-01-01T24:00:00Z",
            "２０２６-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats_round_trip() {
        for s in [
            "1970-01-01T00:00:00Z",
            "2000-02-29T23:59:59Z",
            "1700-01-01T00:00:00Z",
        ] {
            let n = parse_rfc3339(s).expect("valid");
            assert_eq!(format_rfc3339(n), s);
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("1x").is_err());
        assert!(parse_duration("m").is_err());
        assert_eq!(humanize(Duration::from_secs(42)), "42s");
        assert_eq!(humanize(Duration::from_secs(3 * 3600 + 300)), "3h 5m");
        assert_eq!(humanize(Duration::from_secs(2 * 86_400)), "2d");
    }

    proptest::proptest! {
        #[test]
        fn rfc3339_never_panics(s in "\\PC{0,40}") {
            let _ = parse_rfc3339(&s);
        }

        #[test]
        fn rfc3339_round_trips(secs in -9_000_000_000i64..9_000_000_000i64) {
            let nanos = secs * 1_000_000_000;
            proptest::prop_assert_eq!(parse_rfc3339(&format_rfc3339(nanos)), Some(nanos));
        }
    }
}
