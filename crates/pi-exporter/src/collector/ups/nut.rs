//! A minimal NUT upsd client (`docs/net-protocol.txt`): optional `USERNAME`/`PASSWORD`, one
//! `LIST VAR <ups>`, `LOGOUT`. Plain TCP without TLS, every step under a timeout; a reply that
//! does not follow the protocol is an error naming what was wrong, never a partial reading.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use clap::{Arg, ArgMatches};

use super::chips::{ChipReading, check_percent};
use crate::collector::flags::{self, FlagError};

/// `--ups.nut.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NutOptions {
    pub host: String,
    pub port: u16,
    pub ups: String,
    pub username: Option<String>,
    /// Read from `--ups.nut.password-file`, never from the command line; not logged.
    pub password: Option<String>,
    pub timeout: Duration,
}

impl Default for NutOptions {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            port: 3493,
            ups: "ups".to_owned(),
            username: None,
            password: None,
            timeout: Duration::from_secs(2),
        }
    }
}

/// The `--ups.nut.*` flags.
pub fn args() -> Vec<Arg> {
    vec![
        Arg::new("ups.nut.host")
            .long("ups.nut.host")
            .value_name("HOST")
            .default_value("127.0.0.1")
            .help("upsd host (--ups.board=nut)"),
        Arg::new("ups.nut.port")
            .long("ups.nut.port")
            .value_name("PORT")
            .default_value("3493")
            .value_parser(clap::value_parser!(u16))
            .help("upsd port"),
        Arg::new("ups.nut.ups")
            .long("ups.nut.ups")
            .value_name("NAME")
            .default_value("ups")
            .help("UPS name on the upsd server"),
        Arg::new("ups.nut.username")
            .long("ups.nut.username")
            .value_name("USER")
            .help("upsd user (USERNAME), if the server wants one"),
        Arg::new("ups.nut.password-file")
            .long("ups.nut.password-file")
            .value_name("FILE")
            .value_parser(read_password_file)
            .help("File holding the upsd password (PASSWORD); never given on the command line"),
        Arg::new("ups.nut.timeout")
            .long("ups.nut.timeout")
            .value_name("DURATION")
            .default_value("2s")
            .value_parser(serving::duration::parse)
            .help("Timeout of each upsd connect, read and write"),
    ]
}

/// `--ups.nut.password-file`: the file's content without its final line break.
fn read_password_file(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
        .map_err(|e| format!("{path}: {e}"))
}

/// `--ups.nut.*` into [`NutOptions`].
pub fn options(m: &ArgMatches) -> Result<NutOptions, FlagError> {
    let defaults = NutOptions::default();
    Ok(NutOptions {
        host: flags::one(m, "ups.nut.host")?.unwrap_or(defaults.host),
        port: flags::one(m, "ups.nut.port")?.unwrap_or(defaults.port),
        ups: flags::one(m, "ups.nut.ups")?.unwrap_or(defaults.ups),
        username: flags::one(m, "ups.nut.username")?,
        password: flags::one(m, "ups.nut.password-file")?,
        timeout: flags::one(m, "ups.nut.timeout")?.unwrap_or(defaults.timeout),
    })
}

/// The `ups.status` flags exported as `rpi_ups_status{flag}`.
pub const STATUS_FLAGS: [&str; 6] = ["OL", "OB", "LB", "RB", "CHRG", "DISCHRG"];

/// A NUT UPS's variables, interpreted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NutReading {
    pub chip: ChipReading,
    pub input_voltage_volts: Option<f64>,
    pub load_ratio: Option<f64>,
    /// The `ups.status` tokens, if the variable was there.
    pub status: Option<Vec<String>>,
    pub model: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum NutError {
    #[error("cannot connect to upsd at {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("upsd {0}: {1}")]
    Io(String, std::io::Error),
    #[error("upsd closed the connection in the middle of a reply")]
    Closed,
    #[error("upsd answered {0}")]
    Server(String),
    #[error("upsd sent a malformed reply: {0:?}")]
    Malformed(String),
    #[error("implausible value of {var}: {value:?}")]
    Implausible { var: String, value: String },
}

/// The longest reply accepted: a real `LIST VAR` is a few kilobytes.
const MAX_REPLY_LINES: usize = 1000;
const MAX_LINE_BYTES: usize = 4096;

/// Reads every variable of the UPS.
pub fn list_vars(options: &NutOptions) -> Result<BTreeMap<String, String>, NutError> {
    let target = format!("{}:{}", options.host, options.port);
    let addresses = (options.host.as_str(), options.port)
        .to_socket_addrs()
        .map_err(|e| NutError::Connect(target.clone(), e))?;
    let mut last = None;
    let mut stream = None;
    for address in addresses {
        match TcpStream::connect_timeout(&address, options.timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let stream = stream.ok_or_else(|| {
        NutError::Connect(
            target.clone(),
            last.unwrap_or_else(|| std::io::Error::other("no address")),
        )
    })?;
    let io = |e| NutError::Io(target.clone(), e);
    stream.set_read_timeout(Some(options.timeout)).map_err(io)?;
    stream
        .set_write_timeout(Some(options.timeout))
        .map_err(io)?;
    let mut writer = stream.try_clone().map_err(io)?;
    let mut reader = BufReader::new(stream);

    let mut command = |line: String, reader: &mut BufReader<TcpStream>| -> Result<(), NutError> {
        writer
            .write_all(line.as_bytes())
            .map_err(|e| NutError::Io(target.clone(), e))?;
        let reply = read_line(reader, &target)?;
        if reply.starts_with("OK") {
            Ok(())
        } else {
            Err(server_or_malformed(reply))
        }
    };
    if let Some(user) = &options.username {
        command(format!("USERNAME {}\n", quote(user)), &mut reader)?;
        if let Some(password) = &options.password {
            command(format!("PASSWORD {}\n", quote(password)), &mut reader)?;
        }
    }
    writer
        .write_all(format!("LIST VAR {}\n", quote(&options.ups)).as_bytes())
        .map_err(io)?;
    let first = read_line(&mut reader, &target)?;
    if first != format!("BEGIN LIST VAR {}", options.ups) {
        return Err(server_or_malformed(first));
    }
    let mut vars = BTreeMap::new();
    let end = format!("END LIST VAR {}", options.ups);
    for _ in 0..MAX_REPLY_LINES {
        let line = read_line(&mut reader, &target)?;
        if line == end {
            let _ = writer.write_all(b"LOGOUT\n");
            return Ok(vars);
        }
        let (name, value) = parse_var_line(&line, &options.ups)
            .ok_or_else(|| NutError::Malformed(excerpt(&line)))?;
        vars.insert(name, value);
    }
    Err(NutError::Malformed("reply too long".to_owned()))
}

fn server_or_malformed(line: String) -> NutError {
    match line.strip_prefix("ERR ") {
        Some(error) => NutError::Server(excerpt(error)),
        None => NutError::Malformed(excerpt(&line)),
    }
}

fn excerpt(text: &str) -> String {
    text.chars().take(80).collect()
}

fn read_line(reader: &mut BufReader<TcpStream>, target: &str) -> Result<String, NutError> {
    let mut line = Vec::new();
    let read = reader
        .by_ref()
        .take(MAX_LINE_BYTES as u64)
        .read_until(b'\n', &mut line)
        .map_err(|e| NutError::Io(target.to_owned(), e))?;
    if read == 0 {
        return Err(NutError::Closed);
    }
    if line.last() != Some(&b'\n') {
        return Err(if read >= MAX_LINE_BYTES {
            NutError::Malformed("line too long".to_owned())
        } else {
            NutError::Closed
        });
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| NutError::Malformed("not UTF-8".to_owned()))
}

/// Quotes an argument the way upsd reads it.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        if c != '\n' && c != '\r' {
            out.push(c);
        }
    }
    out.push('"');
    out
}

/// `VAR <ups> <name> "<value>"` → (name, value), unescaping `\"` and `\\`.
pub fn parse_var_line(line: &str, ups: &str) -> Option<(String, String)> {
    let rest = line
        .strip_prefix("VAR ")?
        .strip_prefix(ups)?
        .strip_prefix(' ')?;
    let (name, quoted) = rest.split_once(' ')?;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let inner = quoted.strip_prefix('"')?.strip_suffix('"')?;
    let mut value = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => value.push(chars.next()?),
            '"' => return None,
            c => value.push(c),
        }
    }
    Some((name.to_owned(), value))
}

/// Interprets the standard variables. A present but unparsable or out-of-range value fails the
/// whole reading: exporting the rest as valid could hide a broken driver.
pub fn interpret(vars: &BTreeMap<String, String>) -> Result<NutReading, NutError> {
    let number = |var: &str| -> Result<Option<f64>, NutError> {
        match vars.get(var) {
            None => Ok(None),
            Some(text) => text
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .map(Some)
                .ok_or_else(|| NutError::Implausible {
                    var: var.to_owned(),
                    value: excerpt(text),
                }),
        }
    };
    let implausible = |var: &str| NutError::Implausible {
        var: var.to_owned(),
        value: vars.get(var).map(|v| excerpt(v)).unwrap_or_default(),
    };
    let charge = match number("battery.charge")? {
        Some(percent) => Some(check_percent(percent).map_err(|_| implausible("battery.charge"))?),
        None => None,
    };
    let voltage = number("battery.voltage")?;
    if voltage.is_some_and(|v| v <= 0.0) {
        return Err(implausible("battery.voltage"));
    }
    let runtime = number("battery.runtime")?;
    if runtime.is_some_and(|v| v < 0.0) {
        return Err(implausible("battery.runtime"));
    }
    let load = match number("ups.load")? {
        Some(percent) if (0.0..=1000.0).contains(&percent) => Some(percent / 100.0),
        Some(_) => return Err(implausible("ups.load")),
        None => None,
    };
    let input = number("input.voltage")?;
    if input.is_some_and(|v| v < 0.0) {
        return Err(implausible("input.voltage"));
    }
    let status: Option<Vec<String>> = vars
        .get("ups.status")
        .map(|s| s.split_whitespace().map(str::to_owned).collect());
    let has = |flag: &str| status.as_ref().map(|s| s.iter().any(|f| f == flag));
    let on_battery = match (has("OB"), has("OL")) {
        (Some(true), _) => Some(true),
        (Some(false), Some(true)) => Some(false),
        _ => None,
    };
    Ok(NutReading {
        chip: ChipReading {
            voltage_volts: voltage,
            current_amperes: number("battery.current")?,
            charge_ratio: charge,
            charging: has("CHRG"),
            on_battery,
            runtime_seconds: runtime,
        },
        input_voltage_volts: input,
        load_ratio: load,
        status,
        model: vars.get("device.model").or(vars.get("ups.model")).cloned(),
    })
}

#[cfg(test)]
pub(crate) mod fake {
    //! A fake upsd on loopback, serving canned replies per command.

    use std::io::{BufRead, BufReader, Write};
    use std::net::{SocketAddr, TcpListener};
    use std::sync::{Arc, Mutex};

    /// What the fake answers to `LIST VAR`.
    #[derive(Debug, Clone)]
    pub(crate) enum Script {
        /// These lines, each followed by a newline.
        Reply(Vec<String>),
        /// Half a reply, then the connection closes.
        DropAfter(Vec<String>),
    }

    #[derive(Debug)]
    pub(crate) struct FakeUpsd {
        pub(crate) address: SocketAddr,
        pub(crate) commands: Arc<Mutex<Vec<String>>>,
    }

    /// A standard `LIST VAR ups` reply with these variables.
    pub(crate) fn list(ups: &str, vars: &[(&str, &str)]) -> Vec<String> {
        let mut lines = vec![format!("BEGIN LIST VAR {ups}")];
        for (name, value) in vars {
            lines.push(format!("VAR {ups} {name} \"{value}\""));
        }
        lines.push(format!("END LIST VAR {ups}"));
        lines
    }

    pub(crate) fn spawn(script: Script) -> FakeUpsd {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        let commands = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&commands);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let mut writer = stream.try_clone().expect("clone");
                let reader = BufReader::new(stream);
                for line in reader.lines() {
                    let Ok(line) = line else { break };
                    log.lock().expect("log").push(line.clone());
                    if line.starts_with("USERNAME") || line.starts_with("PASSWORD") {
                        let _ = writer.write_all(b"OK\n");
                    } else if line.starts_with("LIST VAR") {
                        match &script {
                            Script::Reply(lines) => {
                                for l in lines {
                                    let _ = writer.write_all(format!("{l}\n").as_bytes());
                                }
                            }
                            Script::DropAfter(lines) => {
                                for l in lines {
                                    let _ = writer.write_all(format!("{l}\n").as_bytes());
                                }
                                break;
                            }
                        }
                    } else if line.starts_with("LOGOUT") {
                        let _ = writer.write_all(b"OK Goodbye\n");
                        break;
                    }
                }
            }
        });
        FakeUpsd { address, commands }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{Script, list, spawn};
    use super::*;

    fn options(fake: &fake::FakeUpsd) -> NutOptions {
        NutOptions {
            host: "127.0.0.1".to_owned(),
            port: fake.address.port(),
            ups: "myups".to_owned(),
            timeout: Duration::from_millis(500),
            ..NutOptions::default()
        }
    }

    const ON_BATTERY: &[(&str, &str)] = &[
        ("battery.charge", "42"),
        ("battery.runtime", "900"),
        ("battery.voltage", "12.6"),
        ("input.voltage", "0.0"),
        ("ups.load", "23"),
        ("ups.status", "OB DISCHRG"),
        ("device.model", "Back-UPS \\\"ES\\\" 700"),
    ];

    #[test]
    fn var_lines_are_unquoted_and_unescaped() {
        assert_eq!(
            parse_var_line(r#"VAR ups device.model "Back-UPS \"ES\" \\ 700""#, "ups"),
            Some((
                "device.model".to_owned(),
                r#"Back-UPS "ES" \ 700"#.to_owned()
            ))
        );
        for bad in [
            "VAR other x \"1\"",
            "VAR ups x 1",
            "VAR ups x \"1",
            "VAR ups x \"a\"b\"",
            "VAR ups  \"1\"",
            "garbage",
        ] {
            assert_eq!(parse_var_line(bad, "ups"), None, "{bad}");
        }
    }

    #[test]
    fn reads_and_interprets_a_ups_on_battery() {
        let fake = spawn(Script::Reply(list("myups", ON_BATTERY)));
        let mut opts = options(&fake);
        opts.username = Some("monitor".to_owned());
        opts.password = Some("secret".to_owned());
        let vars = list_vars(&opts).expect("list");
        let reading = interpret(&vars).expect("plausible");
        assert_eq!(reading.chip.charge_ratio, Some(0.42));
        assert_eq!(reading.chip.runtime_seconds, Some(900.0));
        assert_eq!(reading.chip.on_battery, Some(true));
        assert_eq!(reading.chip.charging, Some(false));
        assert_eq!(reading.load_ratio, Some(0.23));
        assert_eq!(reading.input_voltage_volts, Some(0.0));
        assert_eq!(reading.model.as_deref(), Some("Back-UPS \"ES\" 700"));
        let commands = fake.commands.lock().expect("log").clone();
        assert_eq!(
            commands[..3],
            [
                "USERNAME \"monitor\"".to_owned(),
                "PASSWORD \"secret\"".to_owned(),
                "LIST VAR \"myups\"".to_owned()
            ]
        );
    }

    #[test]
    fn errors_garbage_and_dropped_connections_are_errors() {
        let cases = [
            Script::Reply(vec!["ERR UNKNOWN-UPS".to_owned()]),
            Script::Reply(vec!["ERR DATA-STALE".to_owned()]),
            Script::Reply(vec!["HTTP/1.1 400 Bad Request".to_owned()]),
            Script::Reply(vec![
                "BEGIN LIST VAR myups".to_owned(),
                "VAR myups battery.charge 42".to_owned(),
            ]),
            Script::DropAfter(vec![
                "BEGIN LIST VAR myups".to_owned(),
                "VAR myups battery.charge \"42\"".to_owned(),
            ]),
        ];
        let expected = ["Server", "Server", "Malformed", "Malformed", "Closed"];
        for (script, kind) in cases.into_iter().zip(expected) {
            let fake = spawn(script);
            let err = list_vars(&options(&fake)).expect_err("must fail");
            assert!(format!("{err:?}").starts_with(kind), "{kind}: {err:?}");
        }
        // Nothing listening.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let opts = NutOptions {
            port: closed,
            timeout: Duration::from_millis(200),
            ..NutOptions::default()
        };
        assert!(matches!(list_vars(&opts), Err(NutError::Connect(..))));
    }

    #[test]
    fn implausible_values_fail_the_reading() {
        for (var, value) in [
            ("battery.charge", "142"),
            ("battery.charge", "lots"),
            ("battery.voltage", "0"),
            ("battery.runtime", "-5"),
            ("ups.load", "NaN"),
        ] {
            let mut vars = BTreeMap::new();
            vars.insert(var.to_owned(), value.to_owned());
            assert!(
                matches!(interpret(&vars), Err(NutError::Implausible { .. })),
                "{var}={value}"
            );
        }
        let mut vars = BTreeMap::new();
        vars.insert("ups.status".to_owned(), "OL CHRG".to_owned());
        let reading = interpret(&vars).expect("fine");
        assert_eq!(reading.chip.on_battery, Some(false));
        assert_eq!(reading.chip.charging, Some(true));
    }
}
