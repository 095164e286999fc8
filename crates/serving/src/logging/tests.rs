use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::*;

/// A `MakeWriter` over a shared buffer: what the subscriber wrote, for the test to read.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl io::Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffer {
    type Writer = Buffer;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The lines `log` writes at debug level in `format`, to the journal or not.
fn lines(format: Format, journal: bool, log: impl FnOnce()) -> Vec<String> {
    let buffer = Buffer::default();
    let options = Options {
        level: Level::DEBUG,
        format,
    };
    tracing::subscriber::with_default(subscriber(options, journal, buffer.clone()), log);
    let bytes = buffer
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    String::from_utf8(bytes)
        .expect("utf-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `line` without its leading `ts=...Z `, checking the timestamp's shape on the way.
fn without_ts(line: &str) -> &str {
    let rest = line.strip_prefix("ts=").expect("starts with ts=");
    let (ts, rest) = rest.split_once(' ').expect("a pair after ts");
    assert_timestamp(ts);
    rest
}

fn assert_timestamp(ts: &str) {
    assert_eq!(ts.len(), 24, "{ts}");
    let digits: String = ts.chars().filter(char::is_ascii_digit).collect();
    assert_eq!(digits.len(), 17, "{ts}");
    assert_eq!(
        ts.replace(|c: char| c.is_ascii_digit(), "0"),
        "0000-00-00T00:00:00.000Z"
    );
}

#[test]
fn logfmt_lines_have_prometheus_keys_in_order() {
    let out = lines(Format::Logfmt, false, || {
        tracing::info!(address = %"127.0.0.1:9831", "listening");
        tracing::warn!(collector = "rtc", "collector failed: no such device");
    });
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(
        without_ts(&out[0]),
        "level=info msg=listening address=127.0.0.1:9831"
    );
    assert_eq!(
        without_ts(&out[1]),
        "level=warn msg=\"collector failed: no such device\" collector=rtc"
    );
}

#[test]
fn logfmt_quotes_and_escapes_as_go_logfmt() {
    let out = lines(Format::Logfmt, false, || {
        tracing::error!(
            path = "a b",
            pair = "k=v",
            quote = "say \"hi\" \\o/",
            empty = "",
            null = "null",
            newline = "one\ntwo\r\tthree\u{1b}[31m",
            n = -5,
            ratio = 1.5,
            nan = f64::NAN,
            ok = true,
            list = ?["x", "y z"],
            "two\nlines"
        );
    });
    assert_eq!(out.len(), 1, "a newline never ends a line early: {out:?}");
    assert_eq!(
        without_ts(&out[0]),
        "level=error msg=\"two\\nlines\" path=\"a b\" pair=\"k=v\" \
         quote=\"say \\\"hi\\\" \\\\o/\" empty= null=\"null\" \
         newline=\"one\\ntwo\\r\\tthree\\u001b[31m\" n=-5 ratio=1.5 nan=NaN ok=true \
         list=\"[\\\"x\\\", \\\"y z\\\"]\""
    );
}

#[test]
fn span_names_and_fields_are_kept() {
    let out = lines(Format::Logfmt, false, || {
        let _doctor = tracing::info_span!("doctor").entered();
        tracing::info!("probing");
        let conn = tracing::info_span!("conn", peer = "10.0.0.1:5000");
        conn.record("peer", "10.0.0.2:5000");
        let _conn = conn.entered();
        tracing::debug!(bytes = 10u64, "read");
    });
    assert_eq!(without_ts(&out[0]), "level=info msg=probing span=doctor");
    assert_eq!(
        without_ts(&out[1]),
        "level=debug msg=read span=doctor:conn peer=10.0.0.1:5000 peer=10.0.0.2:5000 bytes=10"
    );
}

#[test]
fn json_lines_parse_back_with_the_same_keys() {
    let tricky = "quote \" backslash \\ newline \n nul \u{0} bell \u{7} del \u{7f} é ✓";
    let out = lines(Format::Json, false, || {
        let _span = tracing::info_span!("doctor", check = "clock").entered();
        tracing::warn!(
            text = tricky,
            n = 3u64,
            neg = -2,
            ratio = 0.25,
            inf = f64::INFINITY,
            ok = false,
            "message {}",
            tricky
        );
    });
    assert_eq!(out.len(), 1, "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out[0]).expect("one JSON object a line");
    assert_timestamp(v["ts"].as_str().expect("ts"));
    assert_eq!(v["level"], "warn");
    assert_eq!(v["msg"], format!("message {tricky}"));
    assert_eq!(v["span"], "doctor");
    assert_eq!(v["check"], "clock");
    assert_eq!(v["text"], tricky);
    assert_eq!(v["n"], 3);
    assert_eq!(v["neg"], -2);
    assert_eq!(v["ratio"], 0.25);
    assert_eq!(v["inf"], "inf");
    assert_eq!(v["ok"], false);
    let keys: Vec<&str> = out[0]
        .split("\":")
        .filter_map(|s| s.rsplit_once('"').map(|(_, k)| k))
        .take(4)
        .collect();
    assert_eq!(keys, ["ts", "level", "msg", "span"], "{}", out[0]);
}

#[test]
fn the_journal_gets_priorities_and_no_timestamps() {
    let log = || {
        tracing::error!("e");
        tracing::warn!("w");
        tracing::info!(address = "127.0.0.1:1", "listening");
        tracing::debug!("d");
    };
    assert_eq!(
        lines(Format::Logfmt, true, log),
        [
            "<3>level=error msg=e",
            "<4>level=warn msg=w",
            "<6>level=info msg=listening address=127.0.0.1:1",
            "<7>level=debug msg=d",
        ]
    );
    let json = lines(Format::Json, true, log);
    assert_eq!(json[1], "<4>{\"level\":\"warn\",\"msg\":\"w\"}");
    for line in &json {
        let object = line.get(3..).expect("prefix");
        let v: serde_json::Value = serde_json::from_str(object).expect("JSON after the prefix");
        assert!(v.get("ts").is_none(), "{line}");
    }
}

#[test]
fn the_level_filters() {
    let buffer = Buffer::default();
    let options = Options {
        level: Level::WARN,
        format: Format::Logfmt,
    };
    tracing::subscriber::with_default(subscriber(options, true, buffer.clone()), || {
        tracing::info!("hidden");
        tracing::warn!("shown");
    });
    let text = String::from_utf8(buffer.0.lock().expect("buffer").clone()).expect("utf-8");
    assert_eq!(text, "<4>level=warn msg=shown\n");
}

#[test]
fn timestamps_are_rfc3339_utc_with_milliseconds() {
    let at = |secs: u64, millis: u64| {
        let mut out = String::new();
        let t = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis);
        write_timestamp(&mut out, t).expect("format");
        out
    };
    assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
    assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
    assert_eq!(at(1_796_666_400, 123), "2026-12-07T18:00:00.123Z");
    assert_eq!(at(4_102_531_199, 999), "2100-01-01T23:59:59.999Z");
    assert_eq!(at(253_402_300_799, 0), "9999-12-31T23:59:59.000Z");
}

#[test]
fn journal_stream_names_one_file() {
    let dir = std::env::temp_dir();
    let (a, b) = (dir.join("serving-journal-a"), dir.join("serving-journal-b"));
    let files = [&a, &a, &b].map(|p| std::fs::File::create(p).expect("create"));
    let names = files
        .each_ref()
        .map(|f| read::journal_stream(f).expect("fstat"));
    assert_eq!(names[0], names[1]);
    assert_ne!(names[0], names[2]);
    let (dev, ino) = names[0].split_once(':').expect("device:inode");
    assert!(
        dev.parse::<u64>().is_ok() && ino.parse::<u64>().is_ok(),
        "{}",
        names[0]
    );
    let _ = (std::fs::remove_file(a), std::fs::remove_file(b));
}

#[test]
fn fields_are_read_back_from_either_format() {
    let log = || {
        let _span = tracing::info_span!("doctor").entered();
        tracing::warn!(
            decoy = "address=10.0.0.1:1 \"address\":\"10.0.0.1:1\"",
            address = "127.0.0.1:9831",
            n = 5,
            paths = "Paths{a}",
            "listening"
        );
    };
    for (format, journal) in [(Format::Logfmt, false), (Format::Json, true)] {
        let line = &lines(format, journal, log)[0];
        assert_eq!(read::priority(line), journal.then_some(4), "{line}");
        assert_eq!(
            read::field(line, "address"),
            Some("127.0.0.1:9831"),
            "{line}"
        );
        assert_eq!(read::field(line, "msg"), Some("listening"), "{line}");
        assert_eq!(read::field(line, "span"), Some("doctor"), "{line}");
        assert_eq!(read::field(line, "n"), Some("5"), "{line}");
        assert_eq!(read::field(line, "paths"), Some("Paths{a}"), "{line}");
        assert_eq!(read::field(line, "decoy"), None, "escaped: {line}");
        assert_eq!(read::field(line, "ts").is_some(), !journal, "{line}");
        assert_eq!(read::field(line, "missing"), None, "{line}");
    }
    assert_eq!(read::field("level=info msg=\"unterminated", "msg"), None);
    assert_eq!(read::priority("level=info"), None);
}

#[test]
fn flags_parse_and_refuse_unknown_values() {
    let command = || clap::Command::new("t").args(args());
    let m = command().try_get_matches_from(["t"]).expect("defaults");
    assert_eq!(options(&m), Options::default());
    let m = command()
        .try_get_matches_from(["t", "--log.level=debug", "--log.format", "json"])
        .expect("parse");
    assert_eq!(
        options(&m),
        Options {
            level: Level::DEBUG,
            format: Format::Json
        }
    );
    for bad in [
        "--log.level=verbose",
        "--log.format=text",
        "--log.level=INFO",
    ] {
        let e = command().try_get_matches_from(["t", bad]).expect_err(bad);
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue, "{bad}");
        assert!(e.to_string().contains("possible values"), "{e}");
    }
}
