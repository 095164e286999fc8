//! Acknowledgement by SMS reply: Twilio POSTs the reply form-encoded to
//! `public_url/inbound/twilio/{channel}`. The request is genuine only if `X-Twilio-Signature`
//! is base64(HMAC-SHA1(auth token, the full URL + every POST parameter sorted by name, each
//! name followed by its value)); the URL is `public_url` + the path, as Twilio sees it. Only the
//! channel's own `to:` numbers may acknowledge. `ACK 1234` (any case, `#` optional) acks
//! incident 1234.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// `application/x-www-form-urlencoded` pairs, decoded.
pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    let decode = |s: &str| -> String {
        let b = s.replace('+', " ").into_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%'
                && let Some(v) = std::str::from_utf8(&b[i + 1..(i + 3).min(b.len())])
                    .ok()
                    .filter(|h| h.len() == 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
            out.push(b[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

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

/// Twilio's signature of a request (for tests and fakes).
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        auth_token.as_bytes(),
    );
    STANDARD.encode(ring::hmac::sign(&key, &signed_data(url, params)).as_ref())
}

/// Constant-time check of `X-Twilio-Signature`.
pub fn twilio_verify(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    signature: &str,
) -> bool {
    let Ok(tag) = STANDARD.decode(signature.trim()) else {
        return false;
    };
    let key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        auth_token.as_bytes(),
    );
    ring::hmac::verify(&key, &signed_data(url, params), &tag).is_ok()
}

/// `ACK 1234`, `ack #1234`, `1234 ack` → 1234.
pub fn parse_ack(text: &str) -> Option<i64> {
    ack_target(text)?.parse().ok()
}

/// The word beside `ack` in a two-word reply (`ACK 12`, `#12 ack`), lower case, without `#`.
pub(crate) fn ack_target(text: &str) -> Option<String> {
    let mut words: Vec<String> = text
        .split_whitespace()
        .map(|w| w.trim_start_matches('#').to_ascii_lowercase())
        .collect();
    match words.as_slice() {
        [a, _] if a == "ack" => words.pop(),
        [_, a] if a == "ack" => Some(words.swap_remove(0)),
        _ => None,
    }
}

/// TwiML answer with one reply SMS (or none).
pub fn twiml(reply: Option<&str>) -> String {
    match reply {
        Some(text) => format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Message>{}</Message></Response>",
            crate::render::text::escape_html(text)
        ),
        None => "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let url = "https://example.com/myapp.php?foo=1&bar=2";
        let sig = twilio_signature("12345", url, &params);
        assert_eq!(sig, "vNe7KK2kJwCsxc9K3OLkkKB3qqI=");
        assert!(twilio_verify("12345", url, &params, &sig));
        assert!(!twilio_verify("54321", url, &params, &sig));
        assert!(!twilio_verify("12345", "https://evil/", &params, &sig));
        assert!(!twilio_verify("12345", url, &params, "bm9wZQ=="));
        assert!(!twilio_verify("12345", url, &params, "%%%"));
    }

    #[test]
    fn ack_commands_and_forms() {
        assert_eq!(parse_ack("ACK 1234"), Some(1234));
        assert_eq!(parse_ack(" ack #7 "), Some(7));
        assert_eq!(parse_ack("12 Ack"), Some(12));
        assert_eq!(parse_ack("ACK"), None);
        assert_eq!(parse_ack("STOP"), None);
        assert_eq!(
            parse_form(b"Body=ACK+12&From=%2B447700900123&x=%zz"),
            [
                ("Body".to_owned(), "ACK 12".to_owned()),
                ("From".to_owned(), "+447700900123".to_owned()),
                ("x".to_owned(), "%zz".to_owned())
            ]
        );
    }
}
