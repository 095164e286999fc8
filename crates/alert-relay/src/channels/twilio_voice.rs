//! `type: twilio_voice`: one phone call per number (each number is its own destination)
//! through Twilio's Calls API, form-encoded, HTTP Basic with the account SID like the SMS
//! channel. The call's SID is the delivery's provider reference. Twilio then fetches what to
//! say from the relay (`public_url`, see `crate::voice`): the TwiML built here, a `<Say>` of
//! the alert inside a `<Gather>` (press 1 to acknowledge, 2 to hear it again). Everything put
//! into TwiML is XML-escaped: alert text is data, never markup.
//!
//! Only a firing alert or a storm summary calls; notices and resolved messages are skipped
//! (nobody is woken to hear that a page was acknowledged). Without a `budget:` a channel gets
//! [`default_budget`], so a number is never called often enough to become harassment.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::settings::{ChannelConfig, ChannelKind, Input, Key, Kind, Provider, Rate};
use super::twilio;
use super::{Outcome, Request, RequestAuth, Response};
use crate::model::budget::Budget;
use crate::payload::Status;
use crate::render::Message;
use crate::render::escape;
use crate::render::text::truncate_chars;
use crate::secret::Secret;
use crate::secret::keys::{ConfigError, Problems, invalid};
use crate::store::DeliveryJob;

const DEFAULT_API: &str = "https://api.twilio.com";
/// What is spoken of the alert, at most (a long description would keep the phone busy).
const SPEECH_MAX: usize = 600;
/// How often the menu is played before the relay hangs up (no key, or 2 pressed each time).
pub const MAX_ROUNDS: u32 = 5;
/// Calls per window to each number when the channel sets no `budget`.
pub const DEFAULT_BUDGET_MAX: u32 = 5;
/// The window of [`DEFAULT_BUDGET_MAX`].
pub const DEFAULT_BUDGET_PER: Duration = Duration::from_secs(3600);

/// A voice channel's settings.
#[derive(Debug)]
pub struct VoiceSettings {
    pub account_sid: String,
    pub auth_token: Secret,
    pub from: String,
    pub to: Vec<String>,
    /// `<Say voice=…>` (e.g. `alice`, `Polly.Amy`); Twilio's default when absent.
    pub voice: Option<String>,
    /// `<Say language=…>` (e.g. `en-GB`); Twilio's default when absent.
    pub language: Option<String>,
}

/// The relay's callback paths of one call, after `public_url`.
pub fn callback_path(channel: &str, delivery: i64, what: &str) -> String {
    format!("/inbound/voice/{channel}/{delivery}/{what}")
}

/// The call request: `Url` is the menu's TwiML, `StatusCallback` hears the call's end
/// (`completed` covers every final status: completed, busy, no-answer, failed, canceled),
/// `MachineDetection=Enable` makes Twilio tell a voicemail from a person (`AnsweredBy`).
pub fn request(
    settings: &VoiceSettings,
    to: &str,
    api_url: Option<&str>,
    public_url: &str,
    channel: &str,
    delivery: i64,
) -> Request {
    let url = |what: &str| format!("{public_url}{}", callback_path(channel, delivery, what));
    let fields = vec![
        ("To".to_owned(), to.to_owned()),
        ("From".to_owned(), settings.from.clone()),
        ("Url".to_owned(), url("menu/0")),
        ("Method".to_owned(), "POST".to_owned()),
        ("StatusCallback".to_owned(), url("status")),
        ("StatusCallbackEvent".to_owned(), "completed".to_owned()),
        ("StatusCallbackMethod".to_owned(), "POST".to_owned()),
        ("MachineDetection".to_owned(), "Enable".to_owned()),
    ];
    let sid = &settings.account_sid;
    Request::form(
        format!(
            "{}/2010-04-01/Accounts/{sid}/Calls.json",
            api_url.unwrap_or(DEFAULT_API)
        ),
        fields,
    )
    .with_auth(RequestAuth::Basic(
        sid.clone(),
        settings.auth_token.expose().to_owned(),
    ))
}

/// Twilio answers a created call like a created message (`sid`, error codes).
pub fn classify(resp: &Response) -> Outcome {
    twilio::classify(resp)
}

/// Why this delivery makes no call, if it makes none: only a firing alert or a storm summary
/// rings a phone.
pub fn not_called(job: &DeliveryJob) -> Option<String> {
    if job.storm.is_some() {
        return None;
    }
    if job.notice.is_some() {
        return Some("a call is made for a firing alert only, not for a notice".into());
    }
    (job.event.status == Status::Resolved)
        .then(|| "a call is made for a firing alert only, not when it resolves".into())
}

/// What the call says about the message: the incident (or storm) number, the alert, its
/// summary and site. Plain text; [`menu`] escapes it.
pub fn speech(msg: &Message) -> String {
    let mut parts = Vec::new();
    match (msg.incident, msg.storm) {
        (Some(i), _) => parts.push(format!("Incident {i}.")),
        (None, Some(s)) => parts.push(format!("Alert storm {s}.")),
        (None, None) => {}
    }
    if msg.storm.is_some() && msg.incident.is_none() {
        // A summary's title and body are its text.
        parts.push(msg.title.clone());
        parts.push(msg.summary.clone());
    } else {
        let severity = msg.severity.as_deref().unwrap_or("");
        let on = msg
            .instance
            .as_deref()
            .map_or(String::new(), |i| format!(" on {i}"));
        parts.push(format!("{severity} alert {}{on}.", msg.alertname));
        parts.push(msg.summary.clone());
    }
    if let Some((_, site)) = msg.context.iter().find(|(k, _)| k == "site") {
        parts.push(format!("Site {site}."));
    }
    // A sentence each, so the voice pauses between them.
    let sentences: Vec<String> = parts
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .map(|p| {
            if p.ends_with(['.', '!', '?']) {
                p.to_owned()
            } else {
                format!("{p}.")
            }
        })
        .collect();
    let text = escape::one_line(&sentences.join(" "));
    truncate_chars(text.trim(), SPEECH_MAX)
}

/// `<Say>` with the channel's voice and language.
fn say(settings: &VoiceSettings, text: &str) -> String {
    let mut attrs = String::new();
    if let Some(v) = &settings.voice {
        attrs.push_str(&format!(" voice=\"{}\"", escape::html(v)));
    }
    if let Some(l) = &settings.language {
        attrs.push_str(&format!(" language=\"{}\"", escape::html(l)));
    }
    format!("<Say{attrs}>{}</Say>", escape::html(text))
}

fn document(body: &str) -> String {
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>{body}</Response>")
}

/// The menu of round `round`: the alert and the choices inside a `<Gather>` of one digit
/// posted to `key_url`, then (no key pressed) the next round through `<Redirect>` to
/// `next_url`, or goodbye after the last round. `prefix` is said first (`That key does
/// nothing.`).
pub fn menu(
    settings: &VoiceSettings,
    speech: &str,
    prefix: Option<&str>,
    key_url: &str,
    next_url: Option<&str>,
) -> String {
    let mut said = String::new();
    if let Some(p) = prefix {
        said.push_str(&say(settings, p));
    }
    said.push_str(&say(
        settings,
        &format!("{speech} Press 1 to acknowledge. Press 2 to hear it again."),
    ));
    let gather = format!(
        "<Gather numDigits=\"1\" method=\"POST\" action=\"{}\">{said}</Gather>",
        escape::html(key_url)
    );
    let after = match next_url {
        Some(next) => format!(
            "<Redirect method=\"POST\">{}</Redirect>",
            escape::html(next)
        ),
        None => format!("{}<Hangup/>", say(settings, "Goodbye.")),
    };
    document(&format!("{gather}{after}"))
}

/// Says `text`, then hangs up.
pub fn farewell(settings: &VoiceSettings, text: &str) -> String {
    document(&format!("{}<Hangup/>", say(settings, text)))
}

/// Hangs up at once (a voicemail answered).
pub fn hang_up() -> String {
    document("<Hangup/>")
}

/// An empty answer (status callbacks).
pub fn empty() -> String {
    document("")
}

/// The budget of a voice channel that sets none.
pub fn default_budget() -> Budget {
    Budget {
        max: DEFAULT_BUDGET_MAX,
        per: DEFAULT_BUDGET_PER,
        overflow: Vec::new(),
    }
}

/// A voice channel needs `public_url`: Twilio fetches what to say from there.
pub fn check_public_url(
    channels: &BTreeMap<String, Arc<ChannelConfig>>,
    public_url: Option<&str>,
) -> Result<(), ConfigError> {
    if public_url.is_some() {
        return Ok(());
    }
    match channels
        .values()
        .find(|c| matches!(c.kind, ChannelKind::TwilioVoice(_)))
    {
        Some(c) => Err(invalid(
            format!("channels.{}.type", c.name),
            "a twilio_voice channel needs public_url: Twilio fetches what the call says, \
             and posts key presses and the call's outcome, there",
        )),
        None => Ok(()),
    }
}

/// A voice channel's keys, default rate and validation.
pub const PROVIDER: Provider = Provider {
    name: "twilio_voice",
    keys: &[
        Key::Plain("account_sid", Kind::Str),
        Key::Secret("auth_token"),
        Key::Plain("from", Kind::Str),
        Key::Plain("to", Kind::List),
        Key::Plain("voice", Kind::Str),
        Key::Plain("language", Kind::Str),
    ],
    // One call per second per account is Twilio's default calls-per-second limit.
    rate: Rate::new(1.0, 1),
    refuses_api_url: None,
    from_raw,
};

fn from_raw(input: &Input<'_>) -> Result<ChannelKind, ConfigError> {
    let mut problems = Problems::default();
    let account_sid = problems.keep(input.required("account_sid"));
    let to = problems.keep(twilio::numbers(input));
    let from = problems.keep(input.required("from").and_then(|from| {
        if twilio::is_e164(&from) {
            Ok(from)
        } else {
            Err(input.invalid("from", "must be an E.164 number (a call has no sender id)"))
        }
    }));
    let word = |key: &str| -> Result<Option<String>, ConfigError> {
        match input.keys.str(key) {
            Some(v)
                if v.is_empty()
                    || !v
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) =>
            {
                Err(input.invalid(key, "letters, digits, '-', '_' and '.' only"))
            }
            v => Ok(v.cloned()),
        }
    };
    // Stand-ins `None`: their errors are recorded, so `finish` never lets them out.
    let voice = problems.or(word("voice"), None);
    let language = problems.or(word("language"), None);
    let auth_token = problems.keep(input.required_secret("auth_token"));
    let (Some(account_sid), Some(to), Some(from), Some(auth_token)) =
        (account_sid, to, from, auth_token)
    else {
        return Err(input.failed(problems));
    };
    problems.finish(ChannelKind::TwilioVoice(VoiceSettings {
        account_sid,
        auth_token,
        from,
        to,
        voice,
        language,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::RequestBody;
    use crate::channels::testing::message;

    fn settings() -> VoiceSettings {
        VoiceSettings {
            account_sid: "AC1".into(),
            auth_token: Secret::new("tok"),
            from: "+15005550006".into(),
            to: vec!["+447700900123".into()],
            voice: Some("Polly.Amy".into()),
            language: Some("en-GB".into()),
        }
    }

    #[test]
    fn a_call_names_its_twiml_and_status_callback() {
        let r = request(
            &settings(),
            "+447700900123",
            Some("http://127.0.0.1:1"),
            "https://relay.example.org",
            "oncall-call",
            42,
        );
        assert_eq!(
            r.url,
            "http://127.0.0.1:1/2010-04-01/Accounts/AC1/Calls.json"
        );
        assert_eq!(r.auth, RequestAuth::Basic("AC1".into(), "tok".into()));
        let RequestBody::Form(f) = &r.body else {
            panic!("form")
        };
        let get = |k: &str| f.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("To"), Some("+447700900123"));
        assert_eq!(get("From"), Some("+15005550006"));
        assert_eq!(
            get("Url"),
            Some("https://relay.example.org/inbound/voice/oncall-call/42/menu/0")
        );
        assert_eq!(
            get("StatusCallback"),
            Some("https://relay.example.org/inbound/voice/oncall-call/42/status")
        );
        assert_eq!(get("StatusCallbackEvent"), Some("completed"));
        assert_eq!(get("MachineDetection"), Some("Enable"));
    }

    #[test]
    fn the_menu_escapes_everything_it_says() {
        let mut msg = message(true);
        msg.incident = Some(12);
        msg.summary = "disk <full> & \"hot\" </Say><Hangup/>".into();
        let text = speech(&msg);
        assert!(
            text.starts_with("Incident 12. critical alert PiHot on pi-17:9831."),
            "{text}"
        );
        assert!(
            text.ends_with("<Hangup/>. Site wh-2."),
            "a sentence each: {text}"
        );
        let twiml = menu(
            &settings(),
            &text,
            None,
            "https://r/inbound/voice/c/1/key/0?a=1&b=2",
            Some("https://r/inbound/voice/c/1/menu/1"),
        );
        assert!(
            twiml.contains("disk &lt;full&gt; &amp; &quot;hot&quot; &lt;/Say&gt;&lt;Hangup/&gt;"),
            "{twiml}"
        );
        assert!(
            twiml.contains("action=\"https://r/inbound/voice/c/1/key/0?a=1&amp;b=2\""),
            "{twiml}"
        );
        assert!(
            twiml.contains("<Say voice=\"Polly.Amy\" language=\"en-GB\">"),
            "{twiml}"
        );
        assert!(twiml.contains("Press 1 to acknowledge. Press 2 to hear it again.</Say></Gather>"));
        assert!(twiml.ends_with(
            "<Redirect method=\"POST\">https://r/inbound/voice/c/1/menu/1</Redirect></Response>"
        ));
        // One element per tag opened by the relay: the alert's text added none.
        assert_eq!(twiml.matches('<').count(), 9, "{twiml}");
        let last = menu(
            &settings(),
            &text,
            Some("That key does nothing."),
            "k",
            None,
        );
        assert!(last.contains("That key does nothing.</Say>"));
        assert!(last.ends_with("Goodbye.</Say><Hangup/></Response>"));
    }

    fn load(head: &str, keys: &str) -> Result<crate::config::Config, String> {
        let yaml = format!(
            "{head}storage: {{ sqlite: x }}\nchannels:\n\
             \x20 call: {{ type: twilio_voice, account_sid: AC1, auth_token: t, {keys} }}\n\
             policies: {{ p: {{ steps: [ {{ notify: [call] }} ] }} }}\nroutes: [ {{ policy: p }} ]\n"
        );
        let secrets = crate::config::MapSecrets::default();
        crate::config::parse(&yaml, std::path::Path::new("/"), &secrets).map_err(|e| e.to_string())
    }

    #[test]
    fn keys_public_url_and_the_default_budget() {
        let public = "public_url: https://relay.example.org\n";
        let numbers = "from: '+15005550006', to: ['+447700900123', '+447700900124']";
        let c = load(public, numbers).expect("valid");
        let ch = &c.channels["call"];
        assert_eq!(ch.budget, Some(default_budget()));
        let ids: Vec<String> = ch.destinations().into_iter().map(|d| d.id).collect();
        assert_eq!(ids, ["call/+447700900123", "call/+447700900124"]);
        let described = c.describe(crate::config::ListenerSecurity::default());
        assert!(
            described
                .contains("budget 5 per 1h per destination, held back messages reported nowhere"),
            "{described}"
        );
        let refused = load("", numbers).expect_err("no public_url");
        assert!(
            refused.contains("channels.call.type: a twilio_voice channel needs public_url"),
            "{refused}"
        );
        let named = load(public, "from: Relay, to: ['+447700900123']").expect_err("from");
        assert!(
            named.contains("channels.call.from: must be an E.164 number"),
            "{named}"
        );
        let voice = load(public, &format!("{numbers}, voice: 'a\\\"b'")).expect_err("voice");
        assert!(voice.contains("channels.call.voice:"), "{voice}");
        let sms_key = load(public, &format!("{numbers}, messaging_service_sid: MG1"));
        assert!(
            sms_key.expect_err("an SMS key").contains(
                "channels.call.messaging_service_sid: not a key of a twilio_voice channel"
            )
        );
        // A budget of its own; a call held back need not be reported anywhere.
        let own = "budget: { max: 2, per: 30m, overflow: [] }";
        let c = load(public, &format!("{numbers}, {own}")).expect("own budget");
        let b = c.channels["call"].budget.clone().expect("budget");
        assert_eq!(
            (b.max, b.per, b.overflow.len()),
            (2, Duration::from_secs(1800), 0)
        );
    }

    #[test]
    fn only_firing_alerts_and_storm_summaries_call() {
        let n = crate::payload::parse(crate::payload::tests_example().as_bytes()).expect("valid");
        let job = |i: usize, notice: Option<&str>, storm: Option<i64>| DeliveryJob {
            id: 1,
            destination: "c/+447700900123".into(),
            state: crate::store::DeliveryState::Pending,
            attempts: 0,
            created_at_ms: 0,
            next_attempt_at_ms: 0,
            event: n.events[i].clone(),
            firing: None,
            incident: Some(1),
            step: 0,
            notice: notice.map(str::to_owned),
            storm,
            alerts: Vec::new(),
            provider_ref: None,
        };
        assert_eq!(not_called(&job(0, None, None)), None);
        assert!(not_called(&job(1, None, None)).is_some());
        assert!(not_called(&job(0, Some("ACKNOWLEDGED\nx"), None)).is_some());
        assert_eq!(not_called(&job(0, Some("storm"), Some(3))), None);
    }
}
