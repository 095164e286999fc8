//! Durations as Prometheus users write them, in flags and in the web configuration: Go's
//! `time.ParseDuration` syntax (`500ms`, `1m30s`, `1.5s`) plus Prometheus' `d`, `w` and `y`.

use std::time::Duration;

/// Parses a duration as exporter-toolkit (Go's `time.ParseDuration`) and Prometheus write them:
/// a sequence of decimal numbers with units, e.g. `500ms`, `1s`, `1m30s`, `1.5s`, `1d`; or `0`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {text:?} (expected e.g. 500ms, 1s, 1m30s)");
    match text {
        "0" => return Ok(Duration::ZERO),
        "" => return Err(invalid()),
        _ => {}
    }
    let mut rest = text;
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let (number, tail) = rest.split_at(number_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let nanos = nanos_per_unit(unit).ok_or_else(invalid)?;
        total_nanos = scaled(number, nanos)
            .and_then(|nanos| total_nanos.checked_add(nanos))
            .ok_or_else(invalid)?;
        rest = tail;
    }
    let nanos = u64::try_from(total_nanos).map_err(|_| invalid())?;
    Ok(Duration::from_nanos(nanos))
}

fn nanos_per_unit(unit: &str) -> Option<u128> {
    const SECOND: u128 = 1_000_000_000;
    Some(match unit {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => SECOND,
        "m" => 60 * SECOND,
        "h" => 3_600 * SECOND,
        "d" => 86_400 * SECOND,
        "w" => 7 * 86_400 * SECOND,
        "y" => 365 * 86_400 * SECOND,
        _ => return None,
    })
}

/// `number` (digits, optionally with a fraction) times `unit_nanos`, truncated to whole
/// nanoseconds; `None` if malformed or absurdly large.
fn scaled(number: &str, unit_nanos: u128) -> Option<u128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let digits = |s: &str| -> Option<u128> {
        if s.is_empty() {
            Some(0)
        } else {
            s.parse().ok()
        }
    };
    let mut nanos = digits(whole)?.checked_mul(unit_nanos)?;
    // At most 38 fraction digits fit u128; nanosecond precision needs far fewer anyway.
    let fraction = fraction.get(..fraction.len().min(30))?;
    if !fraction.is_empty() {
        let scale = 10u128.checked_pow(u32::try_from(fraction.len()).ok()?)?;
        nanos = nanos.checked_add(digits(fraction)?.checked_mul(unit_nanos)? / scale)?;
    }
    Some(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ms = Duration::from_millis;
        for (text, expected) in [
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("500ms", ms(500)),
            ("1s", ms(1_000)),
            ("1m", ms(60_000)),
            ("1m30s", ms(90_000)),
            ("1h1m1s", ms(3_661_000)),
            ("1.5s", ms(1_500)),
            (".5s", ms(500)),
            ("1d", ms(86_400_000)),
            ("1w", ms(604_800_000)),
            ("250us", Duration::from_micros(250)),
            ("250µs", Duration::from_micros(250)),
            ("7ns", Duration::from_nanos(7)),
        ] {
            assert_eq!(parse(text), Ok(expected), "{text}");
        }
        for bad in [
            "",
            "1",
            "s",
            "1x",
            "-1s",
            "1.2.3s",
            ".s",
            "1s2",
            "99999999999999y",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
