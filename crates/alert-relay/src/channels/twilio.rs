//! `type: twilio`: one SMS per number (each number is its own destination), form-encoded,
//! HTTP Basic with the account SID. The text is folded to GSM-7 and kept short so it fits one
//! or two segments; `Body` never exceeds 1600 characters. Error 20429 and HTTP 429 are safe to
//! retry; 30532 (unregistered US traffic) and other 4xx are not.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::settings::{ChannelKind, Input, Key, Kind, Provider, Rate};
use super::{Outcome, Request, RequestAuth, Response, classify_status};
use crate::payload::Status;
use crate::render::Message;
use crate::render::escape;
use crate::render::text::{to_gsm7, truncate_chars};
use crate::secret::keys::{ConfigError, Problems};

const DEFAULT_API: &str = "https://api.twilio.com";
/// Two concatenated GSM-7 segments.
const SMS_MAX: usize = 306;

/// The signed bytes: the full URL, then every POST parameter sorted by name, each name
/// followed by its value, with no separators.
fn signed_data(url: &str, params: &[(String, String)]) -> Vec<u8> {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut data = url.as_bytes().to_vec();
    for (k, v) in sorted {
        data.extend_from_slice(k.as_bytes());
        data.extend_from_slice(v.as_bytes());
    }
    data
}

/// Twilio's signature of a request: the one computation behind every check of
/// `X-Twilio-Signature` (SMS replies, the voice channel's callbacks) and the tests' fakes.
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        auth_token.as_bytes(),
    );
    STANDARD.encode(ring::hmac::sign(&key, &signed_data(url, params)).as_ref())
}

/// Constant-time check of `X-Twilio-Signature`.
pub fn verify(auth_token: &str, url: &str, params: &[(String, String)], signature: &str) -> bool {
    let Ok(tag) = STANDARD.decode(signature.trim()) else {
        return false;
    };
    let key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        auth_token.as_bytes(),
    );
    ring::hmac::verify(&key, &signed_data(url, params), &tag).is_ok()
}

pub fn text(msg: &Message) -> String {
    // The badge leads: the title goes without its `[FIRING] `, `[ACKNOWLEDGED] `, ….
    let mut parts = vec![msg.badge(), msg.title_after_badge()];
    if let Some(b) = &msg.body {
        parts.push(b.clone());
    } else {
        // A resolved SMS says how long it fired, not the summary worded as current.
        match (msg.status, &msg.firing_for) {
            (Status::Firing, _) => parts.push(msg.summary.clone()),
            (Status::Resolved, Some(d)) => parts.push(format!("lasted {d}")),
            (Status::Resolved, None) => {}
        }
        let ctx = msg.context_line();
        if !ctx.is_empty() {
            parts.push(ctx);
        }
    }
    // Nothing renders in an SMS; `clean` drops what would fold to `?` without being text.
    let text = to_gsm7(&escape::clean(&parts.join(" - ")));
    if text.chars().count() <= SMS_MAX {
        return text;
    }
    // `…` is not GSM-7.
    let cut: String = text.chars().take(SMS_MAX - 3).collect();
    format!("{cut}...")
}

pub fn request(
    sid: &str,
    token: &str,
    from: Option<&str>,
    service: Option<&str>,
    to: &str,
    api_url: Option<&str>,
    msg: &Message,
) -> Request {
    let mut fields = vec![
        ("To".to_owned(), to.to_owned()),
        ("Body".to_owned(), truncate_chars(&text(msg), 1600)),
    ];
    match (from, service) {
        (Some(f), _) => fields.push(("From".into(), f.into())),
        (None, Some(s)) => fields.push(("MessagingServiceSid".into(), s.into())),
        (None, None) => {}
    }
    Request::form(
        format!(
            "{}/2010-04-01/Accounts/{sid}/Messages.json",
            api_url.unwrap_or(DEFAULT_API)
        ),
        fields,
    )
    .with_auth(RequestAuth::Basic(sid.to_owned(), token.to_owned()))
}

pub fn classify(resp: &Response) -> Outcome {
    let v = resp.json();
    let code = v.as_ref().and_then(|v| v["code"].as_i64());
    match classify_status(resp) {
        Outcome::Delivered { .. } => Outcome::delivered(
            v.as_ref()
                .and_then(|v| v["sid"].as_str())
                .map(str::to_owned),
        ),
        Outcome::Permanent { detail, .. } if code == Some(20429) => Outcome::Retry {
            reason: "rate_limited",
            after: None,
            detail,
        },
        other => other,
    }
}

/// A Twilio channel's keys, default rate and validation.
pub const PROVIDER: Provider = Provider {
    name: "twilio",
    keys: &[
        Key::Plain("account_sid", Kind::Str),
        Key::Secret("auth_token"),
        Key::Plain("from", Kind::Str),
        Key::Plain("to", Kind::List),
        Key::Plain("messaging_service_sid", Kind::Str),
    ],
    // One message per second per long-code sender.
    rate: Rate::new(1.0, 1),
    refuses_api_url: None,
    from_raw,
};

fn from_raw(input: &Input<'_>) -> Result<ChannelKind, ConfigError> {
    let mut problems = Problems::default();
    let account_sid = problems.keep(input.required("account_sid"));
    let to = problems.keep(numbers(input));
    let from = input.keys.str("from");
    let messaging_service_sid = input.keys.str("messaging_service_sid");
    if let Some(f) = from
        && !is_e164(f)
        && !f.chars().all(|c| c.is_ascii_alphanumeric())
    {
        problems.push(input.invalid(
            "from",
            "must be an E.164 number or an alphanumeric sender id",
        ));
    }
    if from.is_some() == messaging_service_sid.is_some() {
        problems.push(input.invalid("from", "set exactly one of from and messaging_service_sid"));
    }
    let auth_token = problems.keep(input.required_secret("auth_token"));
    let (Some(account_sid), Some(to), Some(auth_token)) = (account_sid, to, auth_token) else {
        return Err(input.failed(problems));
    };
    problems.finish(ChannelKind::Twilio {
        account_sid,
        auth_token,
        from: from.cloned(),
        messaging_service_sid: messaging_service_sid.cloned(),
        to,
    })
}

/// The `to:` list: at least one number, each E.164, every wrong one reported (shared with
/// `twilio_voice`).
pub(super) fn numbers(input: &Input<'_>) -> Result<Vec<String>, ConfigError> {
    let to = input.keys.list("to").cloned().unwrap_or_default();
    if to.is_empty() {
        return Err(input.invalid("to", "needs at least one number"));
    }
    let mut problems = Problems::default();
    for (i, n) in to.iter().enumerate() {
        if !is_e164(n) {
            problems.push(input.invalid(
                &format!("to[{i}]"),
                format!("{n:?} is not an E.164 number like +447700900123"),
            ));
        }
    }
    problems.finish(to)
}

pub(super) fn is_e164(n: &str) -> bool {
    n.strip_prefix('+')
        .is_some_and(|d| (8..=15).contains(&d.len()) && d.chars().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::RequestBody;
    use crate::channels::testing::{message, response};

    #[test]
    fn sms_text_is_short_gsm7() {
        let msg = message(true);
        assert_eq!(
            text(&msg),
            "FIRING CRITICAL - PiHot on pi-17:9831 - CPU at 85 deg C - site=wh-2"
        );
        let r = request(
            "AC1",
            "tok",
            Some("+15005550006"),
            None,
            "+447700900123",
            Some("http://127.0.0.1:1"),
            &msg,
        );
        assert_eq!(
            r.url,
            "http://127.0.0.1:1/2010-04-01/Accounts/AC1/Messages.json"
        );
        assert_eq!(r.auth, RequestAuth::Basic("AC1".into(), "tok".into()));
        let RequestBody::Form(f) = &r.body else {
            panic!("form")
        };
        assert_eq!(f[0], ("To".into(), "+447700900123".into()));
        assert_eq!(f[2], ("From".into(), "+15005550006".into()));
        let mut long = message(false);
        long.summary = "é🔥".repeat(1000);
        assert!(text(&long).chars().count() <= SMS_MAX);
    }

    #[test]
    fn twilio_signature_is_hmac_sha1_over_url_and_sorted_params() {
        // Expected value computed independently with Python's hmac/hashlib over
        // url + "CallSidCA1234567890ABCDE" + "Caller+12349013030" + … (sorted by name).
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
        // Twilio's documented example (the security guide's validation example,
        // https://www.twilio.com/docs/usage/webhooks/webhooks-security): this URL, these
        // parameters and auth token 12345 sign as `0/KCTR6DLpKmkAf8muzZqo1nDgQ=`.
        let documented = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(
            signature("12345", documented, &params),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
        assert!(verify(
            "12345",
            documented,
            &params,
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
        let url = "https://example.com/myapp.php?foo=1&bar=2";
        let sig = signature("12345", url, &params);
        assert_eq!(sig, "vNe7KK2kJwCsxc9K3OLkkKB3qqI=");
        assert!(verify("12345", url, &params, &sig));
        assert!(!verify("54321", url, &params, &sig));
        assert!(!verify("12345", "https://evil/", &params, &sig));
        assert!(!verify("12345", url, &params, "bm9wZQ=="));
        assert!(!verify("12345", url, &params, "%%%"));
    }

    #[test]
    fn responses() {
        assert_eq!(
            classify(&response(201, &[], r#"{"sid":"SM1"}"#)),
            Outcome::delivered(Some("SM1".into()))
        );
        assert!(matches!(
            classify(&response(
                400,
                &[],
                r#"{"code":20429,"message":"Too many"}"#
            )),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            classify(&response(400, &[], r#"{"code":30532}"#)),
            Outcome::Permanent {
                reason: "rejected",
                ..
            }
        ));
        assert!(matches!(
            classify(&response(401, &[], r#"{"code":20003}"#)),
            Outcome::Permanent { reason: "auth", .. }
        ));
    }
}
