//! Acknowledgement by SMS reply: Twilio POSTs the reply form-encoded to
//! `public_url/inbound/twilio/{channel}`. The request is genuine only if `X-Twilio-Signature`
//! is base64(HMAC-SHA1(auth token, the full URL + every POST parameter sorted by name, each
//! name followed by its value)); the URL is `public_url` + the path, as Twilio sees it.
//! Every refused request gets the same answer ([`REFUSED`]), whatever the reason, so an
//! unauthenticated caller learns nothing, not even whether a channel exists. A genuine
//! request is acted on once per `MessageSid` (a captured request replayed changes nothing).
//! Only the channel's own `to:` numbers may acknowledge, and only what the relay sent them:
//! `ACK 1234` (any case, `#` optional) acks incident 1234, `ACK S3` storm 3. An id that does
//! not exist and one never sent to that number get one neutral answer, so no number learns ids.

pub use crate::channels::twilio::{signature as twilio_signature, verify as twilio_verify};
use crate::config::{ChannelKind, Config};
use crate::escalation::Escalator;
use crate::store::{AckTarget, Action, Store, StoreError, Transitioned};
use crate::storm::{StormAcked, Storms};

/// The body of every refused inbound request (status 403).
pub const REFUSED: &str = "Forbidden\n";

/// The reply to an SMS that is no acknowledgement.
const USAGE: &str = "Reply ACK <incident number> to acknowledge.";

/// The reply to `ACK n` or `ACK Sn` when that incident or storm does not exist or was never
/// sent to the number: byte for byte the same (the id is not even echoed), so a number learns
/// no ids.
pub const NOTHING_TO_ACK: &str = "Nothing to acknowledge from this number.";

/// Why an inbound request was refused: for the log and the reject metric, never the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    NoChannel,
    NotTwilio,
    NoPublicUrl,
    Signature,
    NoMessageSid,
    /// A voice callback's path names no callback the relay serves.
    NoRoute,
    /// A signed voice callback without a `CallSid`.
    NoCallSid,
    /// A signed voice callback for a call the relay did not make for that delivery.
    UnknownCall,
    /// A signed voice callback seen before (same call, same callback).
    Replay,
}

impl Refused {
    /// The `reason` label of `alert_relay_webhooks_rejected_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Refused::NoChannel | Refused::NotTwilio | Refused::NoPublicUrl | Refused::NoRoute => {
                "twilio_channel"
            }
            Refused::Signature | Refused::NoMessageSid | Refused::NoCallSid => "twilio_signature",
            Refused::UnknownCall => "twilio_unknown_call",
            Refused::Replay => "twilio_replay",
        }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refused::NoChannel => "no channel of that name",
            Refused::NotTwilio => "not a twilio channel",
            Refused::NoPublicUrl => "no public_url, so Twilio's signature cannot be checked",
            Refused::Signature => "missing or wrong X-Twilio-Signature",
            Refused::NoMessageSid => "signed but without a MessageSid",
            Refused::NoRoute => "no such voice callback",
            Refused::NoCallSid => "signed but without a CallSid",
            Refused::UnknownCall => "signed, but not a call the relay made for that delivery",
            Refused::Replay => "a callback seen before (same call, same request)",
        })
    }
}

/// A genuine SMS reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sms {
    pub from: String,
    pub body: String,
    pub sid: String,
    /// `From` is one of the channel's `to:` numbers.
    pub from_paged_number: bool,
}

/// Checks a request to `/inbound/twilio/{channel}` (`path` with its query, as Twilio signed
/// it after `public_url`). The signature is computed whatever the channel (with an empty key
/// when there is none to check against), so the answer takes as long for every name.
pub fn authenticate(
    config: &Config,
    channel: &str,
    path: &str,
    params: &[(String, String)],
    signature: &str,
) -> Result<Sms, Refused> {
    let twilio = match config.channels.get(channel).map(|c| &c.kind) {
        None => Err(Refused::NoChannel),
        Some(ChannelKind::Twilio { .. }) if config.public_url.is_none() => {
            Err(Refused::NoPublicUrl)
        }
        Some(ChannelKind::Twilio { auth_token, to, .. }) => Ok((auth_token.expose(), to)),
        Some(_) => Err(Refused::NotTwilio),
    };
    let token = twilio.as_ref().map_or("", |(token, _)| *token);
    let url = format!("{}{path}", config.public_url.as_deref().unwrap_or(""));
    let genuine = twilio_verify(token, &url, params, signature);
    let (_, to) = twilio?;
    if !genuine {
        return Err(Refused::Signature);
    }
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map_or(String::new(), |(_, v)| v.clone())
    };
    let sid = get("MessageSid");
    if sid.is_empty() {
        return Err(Refused::NoMessageSid);
    }
    let from = get("From");
    Ok(Sms {
        from_paged_number: to.contains(&from),
        from,
        body: get("Body"),
        sid,
    })
}

/// What an SMS asks to acknowledge: `ACK S3` (a storm) or `ACK 12`.
pub fn target(body: &str) -> Option<AckTarget> {
    parse_sms_ack(body)
        .map(AckTarget::Storm)
        .or_else(|| parse_ack(body).map(AckTarget::Incident))
}

/// The answer to `ACK n` from a number incident `n` was sent to.
pub fn incident_reply(id: i64, t: &Transitioned) -> String {
    match t {
        Transitioned::Done { .. } => format!("Incident #{id} acknowledged."),
        Transitioned::Unchanged(s) => format!("Incident #{id} is already {}.", s.as_str()),
        // Pruned since the check: as if it had never existed.
        Transitioned::NotFound => NOTHING_TO_ACK.to_owned(),
    }
}

/// The answer to `ACK Sn` from a number storm `n` was sent to.
pub fn storm_reply(id: i64, a: &StormAcked) -> String {
    match a {
        StormAcked::Done { incidents, .. } => {
            format!("Storm #{id} acknowledged ({} incidents).", incidents.len())
        }
        StormAcked::Unchanged => format!("Storm #{id} has no open incident."),
        StormAcked::NotFound => NOTHING_TO_ACK.to_owned(),
    }
}

/// Acts on a genuine, first-seen SMS from one of `channel`'s numbers; the reply text.
pub async fn answer(
    store: &Store,
    escalator: &Escalator,
    storms: &Storms,
    channel: &str,
    sms: &Sms,
) -> Result<String, StoreError> {
    let Some(target) = target(&sms.body) else {
        return Ok(USAGE.to_owned());
    };
    let destination = format!("{channel}/{}", sms.from);
    let to = destination.clone();
    if !store.read(move |b| b.sent_to(&to, target)).await? {
        return Ok(NOTHING_TO_ACK.to_owned());
    }
    let from = &sms.from;
    match target {
        AckTarget::Storm(id) => {
            let acked = storms.ack(id, format!("SMS from {from}")).await?;
            Ok(storm_reply(id, &acked))
        }
        AckTarget::Incident(id) => {
            let by = acked_by(store, id, destination, &format!("SMS from {from}")).await;
            let t = escalator.transition(id, Action::Ack, by).await?;
            Ok(incident_reply(id, &t))
        }
    }
}

/// `how` (`SMS from +44…`), or `alice (rotation primary) via SMS from +44…` when a rotation
/// paged the destination for the incident.
pub(crate) async fn acked_by(store: &Store, id: i64, destination: String, how: &str) -> String {
    let paged = store
        .read(move |b| b.incident_on_call(id))
        .await
        .unwrap_or_default();
    match paged.iter().rev().find(|(d, _, _)| *d == destination) {
        Some((_, _, who)) => format!("{who} via {how}"),
        None => how.to_owned(),
    }
}

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

/// `ACK 1234`, `ack #1234`, `1234 ack` → 1234.
pub fn parse_ack(text: &str) -> Option<i64> {
    ack_target(text)?.parse().ok()
}

/// The word beside `ack` in a two-word reply (`ACK 12`, `#12 ack`), lower case, without `#`.
/// An SMS reply acknowledging a storm: `ACK S3`, `ack #s3`, `S3 ACK` → 3.
pub fn parse_sms_ack(text: &str) -> Option<i64> {
    ack_target(text)?.strip_prefix('s')?.parse().ok()
}

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

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// A Twilio channel `sms` and a webhook channel `hook`; `head` may set `public_url`.
    fn config(head: &str) -> Config {
        let yaml = format!(
            "{head}storage: {{ sqlite: x }}\nchannels:\n\
             \x20 sms: {{ type: twilio, account_sid: AC1, auth_token: tw-token, from: '+15005550006', to: ['+447700900123'] }}\n\
             \x20 hook: {{ type: webhook, url: 'http://127.0.0.1:9/' }}\n\
             policies: {{ p: {{ steps: [ {{ notify: [sms, hook] }} ] }} }}\nroutes: [ {{ policy: p }} ]\n"
        );
        let secrets = crate::config::MapSecrets::default();
        crate::config::parse(&yaml, std::path::Path::new("/"), &secrets).expect("config")
    }

    #[test]
    fn inbound_requests_are_refused_for_a_reason_only_the_relay_sees() {
        let cfg = config("public_url: https://relay.example.org\n");
        let signed = |token: &str, path: &str, params: &[(String, String)]| {
            twilio_signature(token, &format!("https://relay.example.org{path}"), params)
        };
        let params = pairs(&[
            ("From", "+447700900123"),
            ("Body", "ACK 1"),
            ("MessageSid", "SM1"),
        ]);
        let path = "/inbound/twilio/sms";
        let sig = signed("tw-token", path, &params);
        let sms = authenticate(&cfg, "sms", path, &params, &sig).expect("genuine");
        assert_eq!((sms.sid.as_str(), sms.from_paged_number), ("SM1", true));
        let refused = |cfg: &Config, channel: &str, params: &[(String, String)], sig: &str| {
            let path = format!("/inbound/twilio/{channel}");
            authenticate(cfg, channel, &path, params, sig).err()
        };
        // The empty key checked for a name without a channel never lets anything through.
        let no_key = signed("", "/inbound/twilio/nope", &params);
        assert_eq!(
            refused(&cfg, "nope", &params, &no_key),
            Some(Refused::NoChannel)
        );
        assert_eq!(
            refused(&cfg, "hook", &params, &sig),
            Some(Refused::NotTwilio)
        );
        assert_eq!(
            refused(&config(""), "sms", &params, &sig),
            Some(Refused::NoPublicUrl)
        );
        assert_eq!(refused(&cfg, "sms", &params, ""), Some(Refused::Signature));
        let forged = signed("not-the-token", path, &params);
        assert_eq!(
            refused(&cfg, "sms", &params, &forged),
            Some(Refused::Signature)
        );
        let no_sid = pairs(&[("From", "+447700900123"), ("Body", "ACK 1")]);
        let sig = signed("tw-token", path, &no_sid);
        assert_eq!(
            refused(&cfg, "sms", &no_sid, &sig),
            Some(Refused::NoMessageSid)
        );
        assert_eq!(Refused::NoMessageSid.reason(), Refused::Signature.reason());
        // A stranger's genuine SMS is let through, to be ignored once its id is recorded.
        let stranger = pairs(&[
            ("From", "+15550100"),
            ("Body", "ACK 1"),
            ("MessageSid", "SM2"),
        ]);
        let sig = signed("tw-token", path, &stranger);
        let sms = authenticate(&cfg, "sms", path, &stranger, &sig).expect("genuine");
        assert!(!sms.from_paged_number);
    }

    #[test]
    fn unknown_and_foreign_ids_get_one_neutral_answer() {
        use AckTarget::{Incident, Storm};
        assert_eq!(target("ACK 12"), Some(Incident(12)));
        assert_eq!(target("ack #s3"), Some(Storm(3)));
        assert_eq!(target("STOP"), None);
        assert_eq!(incident_reply(5, &Transitioned::NotFound), NOTHING_TO_ACK);
        assert_eq!(storm_reply(3, &StormAcked::NotFound), NOTHING_TO_ACK);
        assert_eq!(
            incident_reply(
                5,
                &Transitioned::Unchanged(crate::store::IncidentState::Acked)
            ),
            "Incident #5 is already acked."
        );
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
