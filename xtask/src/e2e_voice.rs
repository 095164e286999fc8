//! The e2e's fake of Twilio's Calls API: it answers the relay's call request with a call SID,
//! then plays the call back to the relay as Twilio would, each request form-encoded and
//! signed (`X-Twilio-Signature`, HMAC-SHA1 over the full URL and the sorted parameters):
//! it fetches the TwiML from the call's `Url`, presses 1 on the `<Gather>`'s `action` and
//! posts the call's end to its `StatusCallback`.

use std::io::Write as _;
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;

/// The auth token of the e2e's voice channel.
pub(crate) const TOKEN: &str = "voice-tok";

/// The calls played: one line each, the menu the relay served and its answer to the key press.
#[derive(Clone, Default)]
pub(crate) struct Calls(Arc<Mutex<Vec<String>>>);

impl Calls {
    /// A Calls API request (`body`, form-encoded): the new call's JSON, and the call played on
    /// a thread of its own.
    pub(crate) fn create(&self, body: &str) -> String {
        let form = pairs(body);
        let sid = {
            let n = self.0.lock().map_or(0, |v| v.len());
            format!("CA{:032}", n + 1)
        };
        let (calls, call_sid) = (self.clone(), sid.clone());
        std::thread::spawn(move || {
            let line = match play(&call_sid, &form) {
                Ok(said) => format!("{call_sid}: {said}"),
                Err(e) => format!("{call_sid}: FAILED: {e:#}"),
            };
            if let Ok(mut v) = calls.0.lock() {
                v.push(line);
            }
        });
        format!(r#"{{"sid":"{sid}","status":"queued"}}"#)
    }

    /// The calls about `alert` on `instance` that the relay acknowledged by key press.
    pub(crate) fn acknowledged(&self, alert: &str, instance: &str) -> usize {
        self.0.lock().map_or(0, |v| {
            v.iter()
                .filter(|l| l.contains(&format!(" alert {alert} on {instance}.")))
                .filter(|l| l.contains("acknowledged. Goodbye."))
                .count()
        })
    }

    pub(crate) fn log(&self) -> Vec<String> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// Answers the call, hears the menu, presses 1; the menu and what the relay said to the key.
fn play(sid: &str, form: &[(String, String)]) -> Result<String> {
    let get = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .with_context(|| format!("the call request has no {k}"))
    };
    let (to, from, url, status_url) = (
        get("To")?,
        get("From")?,
        get("Url")?,
        get("StatusCallback")?,
    );
    // The phone rings; the relay records the call's SID meanwhile.
    std::thread::sleep(Duration::from_millis(500));
    let params = |extra: &[(&str, &str)]| -> Vec<(String, String)> {
        let fixed = [
            ("AccountSid", "AC00000000000000000000000000000000"),
            ("CallSid", sid),
            ("From", from.as_str()),
            ("To", to.as_str()),
            ("Direction", "outbound-api"),
        ];
        fixed
            .iter()
            .chain(extra)
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let human = [("CallStatus", "in-progress"), ("AnsweredBy", "human")];
    let (status, menu) = post(&url, &params(&human))?;
    if status != 200 || !menu.contains("Press 1 to acknowledge") {
        bail!("the menu: HTTP {status}: {menu}");
    }
    let action = gather_action(&menu).with_context(|| format!("no <Gather action>: {menu}"))?;
    let press = [("CallStatus", "in-progress"), ("Digits", "1")];
    let (status, said) = post(&action, &params(&press))?;
    if status != 200 {
        bail!("the key press: HTTP {status}: {said}");
    }
    let (status, _) = post(&status_url, &params(&[("CallStatus", "completed")]))?;
    if status != 200 {
        bail!("the status callback: HTTP {status}");
    }
    Ok(format!("{menu} -> {said}"))
}

/// Twilio's request signature: base64(HMAC-SHA1(token, url + each sorted name and value)).
fn signature(token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut data = url.to_owned();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, token.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&key, data.as_bytes()))
}

/// HTTP/1.0 POST of `params`, signed, to `url` (`http://127.0.0.1:port/…`): (status, body).
fn post(url: &str, params: &[(String, String)]) -> Result<(u16, String)> {
    let rest = url.strip_prefix("http://").context("not an http:// URL")?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let body = params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let mut s = TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "POST {path} HTTP/1.0\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         X-Twilio-Signature: {}\r\nContent-Length: {}\r\n\r\n{body}",
        signature(TOKEN, url, params),
        body.len()
    )?;
    crate::e2e::read_response(&mut s)
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn pairs(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (super::e2e::form_decode(k), super::e2e::form_decode(v))
        })
        .collect()
}

/// The `action` of the TwiML's `<Gather>`, unescaped.
fn gather_action(twiml: &str) -> Option<String> {
    let rest = &twiml[twiml.find("<Gather ")?..];
    let start = rest.find("action=\"")? + "action=\"".len();
    let end = rest[start..].find('"')?;
    Some(rest[start..start + end].replace("&amp;", "&"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn signs_as_twilio_documents() {
        // Twilio's documented example (the security guide's validation example): this URL,
        // these parameters and auth token 12345 sign as `0/KCTR6DLpKmkAf8muzZqo1nDgQ=`.
        let params: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(
            super::signature("12345", url, &params),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
        assert_eq!(super::encode("+44 7&x"), "%2B44%207%26x");
        assert_eq!(
            super::gather_action(r#"<Gather numDigits="1" action="http://h/k?a=1&amp;b=2">"#)
                .as_deref(),
            Some("http://h/k?a=1&b=2")
        );
    }
}
