//! Log lines as Prometheus' own components write them, on stderr: logfmt by default
//! (`ts=2026-12-07T18:00:00.123Z level=info msg=listening address=127.0.0.1:9831`, quoted and
//! escaped as go-logfmt does) or one JSON object per line with the same keys
//! (`--log.format=json`). Under systemd, when stderr is the journal stream `JOURNAL_STREAM`
//! names, each line starts with its syslog priority (`<4>`, sd-daemon(3)) and has no `ts`: the
//! journal stamps every entry itself, and `journalctl -p warning` then works.
//!
//! Every value is escaped, so no field (an error from the network, say) can end a line early
//! and forge a second entry or priority.

use std::ffi::OsStr;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::builder::{PossibleValuesParser, TypedValueParser as _};
use clap::{Arg, ArgMatches};
use tracing::field::{Field, Visit};
use tracing::span::Record;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

pub mod read;

/// `--log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Logfmt,
    Json,
}

/// What `--log.level` and `--log.format` chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    pub level: Level,
    pub format: Format,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            level: Level::INFO,
            format: Format::Logfmt,
        }
    }
}

/// `--log.level` and `--log.format`, global so they work after a subcommand too.
pub fn args() -> [Arg; 2] {
    let level =
        PossibleValuesParser::new(["debug", "info", "warn", "error"]).map(|s| match s.as_str() {
            "debug" => Level::DEBUG,
            "warn" => Level::WARN,
            "error" => Level::ERROR,
            _ => Level::INFO,
        });
    let format = PossibleValuesParser::new(["logfmt", "json"]).map(|s| match s.as_str() {
        "json" => Format::Json,
        _ => Format::Logfmt,
    });
    [
        Arg::new("log.level")
            .long("log.level")
            .value_name("LEVEL")
            .default_value("info")
            .value_parser(level)
            .global(true)
            .help("Only log messages of this severity or above: debug, info, warn, error"),
        Arg::new("log.format")
            .long("log.format")
            .value_name("FORMAT")
            .default_value("logfmt")
            .value_parser(format)
            .global(true)
            .help("Log line format: logfmt or json (under systemd without timestamps, with syslog priorities)"),
    ]
}

/// The options [`args`] parsed.
pub fn options(matches: &ArgMatches) -> Options {
    let defaults = Options::default();
    Options {
        level: matches
            .get_one::<Level>("log.level")
            .copied()
            .unwrap_or(defaults.level),
        format: matches
            .get_one::<Format>("log.format")
            .copied()
            .unwrap_or(defaults.format),
    }
}

/// Logs to stderr from here on, in the journal's shape when stderr is the journal.
pub fn init(options: Options) {
    let subscriber = subscriber(options, stderr_is_journal(), std::io::stderr);
    if tracing::subscriber::set_global_default(subscriber).is_err() {
        tracing::debug!("a log subscriber was already installed");
    }
}

/// The subscriber [`init`] installs, writing to `writer` (tests give a buffer).
pub fn subscriber<W>(options: Options, journal: bool, writer: W) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_max_level(options.level)
        .with_writer(writer)
        .fmt_fields(Fields(options.format))
        .event_format(Lines {
            format: options.format,
            journal,
        })
        .finish()
}

/// Whether stderr is the stream systemd connected to the journal. `JOURNAL_STREAM` alone is not
/// enough (systemd.exec(5)): a process started from a service inherits the variable with other
/// output, so it must name stderr's device and inode.
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    // std has no fstat on a borrowed descriptor: stat a duplicate, once at start-up.
    let stderr = std::io::stderr();
    std::os::fd::AsFd::as_fd(&stderr)
        .try_clone_to_owned()
        .and_then(|fd| read::journal_stream(&std::fs::File::from(fd)))
        .is_ok_and(|names| value == OsStr::new(&names))
}

/// The syslog priority journald reads from a line's `<N>` prefix (sd-daemon(3)).
fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// The event formatter: one line per event.
#[derive(Debug, Clone, Copy)]
struct Lines {
    format: Format,
    /// Stderr is the journal: priority prefix, no timestamp.
    journal: bool,
}

impl<S> FormatEvent<S, Fields> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, Fields>,
        mut out: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = *event.metadata().level();
        let mut message = String::new();
        let mut fields = String::new();
        let mut visitor = FieldWriter::new(&mut fields, self.format, Some(&mut message));
        event.record(&mut visitor);
        visitor.result?;

        if self.journal {
            write!(out, "<{}>", priority(level))?;
        }
        let mut line = Line::open(&mut out, self.format)?;
        if !self.journal {
            line.pair("ts", Value::Timestamp(SystemTime::now()))?;
        }
        line.pair("level", Value::Text(level_name(level)))?;
        line.pair("msg", Value::Text(&message))?;
        if let Some((names, span_fields)) = spans(ctx) {
            line.pair("span", Value::Text(&names))?;
            line.out.write_str(&span_fields)?;
        }
        line.out.write_str(&fields)?;
        line.close()
    }
}

/// The names of the spans an event is in, outermost first (`doctor:probe`), and their fields as
/// [`Fields`] formatted them; `None` outside any span.
fn spans<S>(ctx: &FmtContext<'_, S, Fields>) -> Option<(String, String)>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let mut names = String::new();
    let mut fields = String::new();
    for span in ctx.event_scope()?.from_root() {
        if !names.is_empty() {
            names.push(':');
        }
        names.push_str(span.name());
        if let Some(f) = span.extensions().get::<FormattedFields<Fields>>() {
            fields.push_str(&f.fields);
        }
    }
    (!names.is_empty()).then_some((names, fields))
}

/// Level names as go-kit writes them.
fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// A line being written: its keys and values in either format.
struct Line<'a, 'w> {
    out: &'a mut Writer<'w>,
    format: Format,
    /// No pair written yet: the next one has no separator.
    first: bool,
}

impl<'a, 'w> Line<'a, 'w> {
    fn open(out: &'a mut Writer<'w>, format: Format) -> Result<Self, fmt::Error> {
        if format == Format::Json {
            out.write_char('{')?;
        }
        Ok(Self {
            out,
            format,
            first: true,
        })
    }

    fn pair(&mut self, key: &str, value: Value<'_>) -> fmt::Result {
        let separator = !std::mem::replace(&mut self.first, false);
        write_pair(self.out, self.format, separator, key, value)
    }

    fn close(self) -> fmt::Result {
        if self.format == Format::Json {
            self.out.write_char('}')?;
        }
        self.out.write_char('\n')
    }
}

/// A value as written: text is quoted as its format needs, numbers and booleans are not.
enum Value<'a> {
    Text(&'a str),
    Bare(&'a dyn fmt::Display),
    Timestamp(SystemTime),
}

/// Writes ` key=value` (logfmt) or `,"key":value` (JSON); without the separator if `separator`
/// is false.
fn write_pair(
    out: &mut dyn fmt::Write,
    format: Format,
    separator: bool,
    key: &str,
    value: Value<'_>,
) -> fmt::Result {
    match format {
        Format::Logfmt => {
            if separator {
                out.write_char(' ')?;
            }
            // go-logfmt drops what a key cannot hold rather than quoting it.
            for c in key.chars().filter(|&c| !needs_quotes(c)) {
                out.write_char(c)?;
            }
            out.write_char('=')?;
        }
        Format::Json => {
            if separator {
                out.write_char(',')?;
            }
            write_quoted(out, key)?;
            out.write_char(':')?;
        }
    }
    match value {
        Value::Text(text) if format == Format::Json || text.chars().any(needs_quotes) => {
            write_quoted(out, text)
        }
        // go-logfmt quotes the text `null`, so it never reads as a missing value.
        Value::Text("null") => out.write_str("\"null\""),
        Value::Text(text) => out.write_str(text),
        Value::Bare(value) => write!(out, "{value}"),
        Value::Timestamp(at) if format == Format::Json => {
            out.write_char('"')?;
            write_timestamp(out, at)?;
            out.write_char('"')
        }
        Value::Timestamp(at) => write_timestamp(out, at),
    }
}

/// go-logfmt's rule: a value with a space, a control character, `=`, `"` or U+FFFD is quoted.
fn needs_quotes(c: char) -> bool {
    c <= ' ' || c == '=' || c == '"' || c == char::REPLACEMENT_CHARACTER
}

/// `text` between double quotes, escaped as go-logfmt does: `\"`, `\\`, `\n`, `\r`, `\t` and
/// `\u00XX` for the other control characters. That is also a valid JSON string.
fn write_quoted(out: &mut dyn fmt::Write, text: &str) -> fmt::Result {
    out.write_char('"')?;
    let mut start = 0;
    for (i, byte) in text.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        // `i` is an ASCII byte, so both slices end on character boundaries.
        out.write_str(&text[start..i])?;
        if escape.is_empty() {
            write!(out, "\\u{byte:04x}")?;
        } else {
            out.write_str(escape)?;
        }
        start = i + 1;
    }
    out.write_str(&text[start..])?;
    out.write_char('"')
}

/// RFC 3339 in UTC with milliseconds, as Prometheus logs: `2026-12-07T18:00:00.123Z`.
fn write_timestamp(out: &mut dyn fmt::Write, at: SystemTime) -> fmt::Result {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (seconds, millis) = (since.as_secs(), since.subsec_millis());
    let (year, month, day) = civil_from_days(seconds / 86_400);
    let time = seconds % 86_400;
    write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        time / 3600,
        time % 3600 / 60,
        time % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`,
/// for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Counted from 0000-03-01, so a leap day is the last day of its year.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Formats span fields in the lines' format (the fmt layer keeps them with each span), each
/// with its separator in front, so a span's later fields simply append.
#[derive(Debug, Clone, Copy)]
struct Fields(Format);

impl<'writer> FormatFields<'writer> for Fields {
    fn format_fields<R: RecordFields>(&self, mut out: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = FieldWriter::new(&mut out, self.0, None);
        fields.record(&mut visitor);
        visitor.result
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &Record<'_>,
    ) -> fmt::Result {
        self.format_fields(current.as_writer(), fields)
    }
}

/// Writes each field as a separated pair; an event's message goes to `message` instead.
struct FieldWriter<'a> {
    out: &'a mut dyn fmt::Write,
    format: Format,
    message: Option<&'a mut String>,
    /// Where `Debug` values are formatted before they are escaped.
    scratch: String,
    result: fmt::Result,
}

impl<'a> FieldWriter<'a> {
    fn new(out: &'a mut dyn fmt::Write, format: Format, message: Option<&'a mut String>) -> Self {
        Self {
            out,
            format,
            message,
            scratch: String::new(),
            result: Ok(()),
        }
    }

    fn pair(&mut self, field: &Field, value: Value<'_>) {
        if self.result.is_ok() {
            self.result = write_pair(self.out, self.format, true, field.name(), value);
        }
    }

    /// Formats `value` into the scratch buffer and writes it as text.
    fn text(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        if scratch.write_fmt(value).is_ok() {
            self.pair(field, Value::Text(&scratch));
        }
        self.scratch = scratch;
    }
}

impl Visit for FieldWriter<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match self.message.as_deref_mut() {
            Some(message) if field.name() == "message" => {
                let _ = write!(message, "{value:?}");
            }
            _ => self.text(field, format_args!("{value:?}")),
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match self.message.as_deref_mut() {
            Some(message) if field.name() == "message" => message.push_str(value),
            _ => self.pair(field, Value::Text(value)),
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.pair(field, Value::Bare(&value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.pair(field, Value::Bare(&value));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.pair(field, Value::Bare(&value));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.pair(field, Value::Bare(&value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.pair(field, Value::Bare(&value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity: those are written as text.
        if value.is_finite() {
            self.pair(field, Value::Bare(&value));
        } else {
            self.text(field, format_args!("{value}"));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.text(field, format_args!("{}", ErrorChain(value)));
    }
}

/// An error and its sources, `outer: inner`, as anyhow's `{:#}` prints them.
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
