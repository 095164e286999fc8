//! Alert text must not be able to forge messages. Hostile text goes into every field of a
//! message (labels, annotations, `*_url` annotations, a template's title and body, a notice
//! naming whoever acknowledged) and through every channel's request builder, formatted and
//! plain. Each output is read the way its provider reads it, counting the mentions, links and
//! markup that are live; the counts must equal those of the same message with harmless text
//! and the same links: what is live is the relay's own layout, nothing more.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::Value;

use super::Message;
use crate::channels::{
    Request, RequestBody, discord, email, matrix, ntfy, pushover, slack, teams, telegram, twilio,
    twilio_voice,
};
use crate::payload::{AlertEvent, Labels, Status};

const WJ: char = super::escape::WORD_JOINER;

/// Pieces of attacks on each syntax, and characters that hide or reorder text.
const HOSTILE: &[&str] = &[
    "<!channel>",
    "<!here>",
    "<@U123>",
    "<!subteam^S1|@ops>",
    "<http://phish|trusted>",
    "[click me](http://phish.example)",
    "[x]: http://phish.example",
    "](",
    "@everyone",
    "@here",
    "@room",
    "@admin:example.org",
    "#ops:example.org",
    "<@123>",
    "<#9>",
    "<:e:1>",
    "<t:1:R>",
    "<a href=\"http://phish\">x</a>",
    "<b>",
    "&lt;b&gt;",
    "&amp;",
    "&#60;",
    "`code`",
    "```",
    "**bold**",
    "__u__",
    "_i_",
    "~~s~~",
    "||spoiler||",
    "> quote",
    "# head",
    "-# sub",
    "- item",
    "1. item",
    "{{DATE(2026-01-01T00:00:00Z, SHORT)}}",
    "\r\n",
    "\n",
    "\r",
    "\u{2028}",
    "\u{200B}",
    "\u{2060}",
    "\u{202E}",
    "\u{FEFF}",
    "\\",
    "http://phish.example",
    "https://phish.example/a_b",
    "Bcc: evil@example.org",
];

fn hostile() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => prop::sample::select(HOSTILE).prop_map(str::to_owned),
        1 => "[a-z ]{0,6}",
        1 => any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..6).prop_map(|v| v.concat())
}

fn hostile_url() -> impl Strategy<Value = String> {
    let schemes = &[
        "http://",
        "https://",
        "javascript:",
        "https://user@",
        "HTTP://",
    ][..];
    prop_oneof![
        Just("http://x) [Acknowledge #1](http://phish.example".to_owned()),
        (prop::sample::select(schemes), "[a-z]{1,8}", hostile())
            .prop_map(|(s, host, rest)| format!("{s}{host}.example/{rest}")),
        hostile(),
    ]
}

/// What the relay may make of an alert besides its default layout.
#[derive(Debug, Clone, Copy)]
struct Shape {
    firing: bool,
    /// A user template replaced the title and the body.
    templated: bool,
    /// A notice about the incident ("acknowledged by {who}").
    notice: bool,
}

/// `t`: alertname, instance, severity, site, job, another label, summary, description, a
/// template's title, its body or the acknowledger's name, an annotation key; `urls`:
/// runbook_url, dashboard_url, that key's `_url`, generator URL, Alertmanager's URL.
fn message(t: &[String], urls: &[String], shape: Shape) -> Message {
    let pairs = |kv: &[(&str, &String)]| -> Labels {
        kv.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).clone()))
            .collect()
    };
    let labels = pairs(&[
        ("alertname", &t[0]),
        ("instance", &t[1]),
        ("severity", &t[2]),
        ("site", &t[3]),
        ("job", &t[4]),
        ("team", &t[5]),
    ]);
    let mut annotations = pairs(&[
        ("summary", &t[6]),
        ("description", &t[7]),
        ("runbook_url", &urls[0]),
        ("dashboard_url", &urls[1]),
    ]);
    annotations.insert(format!("{}_url", t[10]), urls[2].clone());
    let e = AlertEvent {
        status: if shape.firing {
            Status::Firing
        } else {
            Status::Resolved
        },
        fingerprint: "0123456789abcdef".into(),
        labels,
        annotations,
        starts_at: 1_700_000_000_000_000_000,
        ends_at: (!shape.firing).then_some(1_700_000_900_000_000_000),
        generator_url: urls[3].clone(),
        external_url: urls[4].clone(),
        receiver: String::new(),
        group_key: String::new(),
    };
    let mut m = Message::new(&e);
    m.incident = Some(1);
    if shape.templated {
        m.title.clone_from(&t[8]);
        m.body = Some(t[9].clone());
    }
    if shape.notice {
        m.notice = Some("ACKNOWLEDGED".into());
        m.body = Some(format!("Incident #1 acknowledged by {} via API", t[9]));
    }
    m
}

/// How a provider reads a text.
#[derive(Debug, Clone, Copy)]
enum Syntax {
    Slack,
    Discord,
    Teams,
    /// HTML, with the sigils a client would turn into mentions.
    Html(&'static [char]),
    /// Plain text, with the sigils a client would turn into mentions.
    Plain(&'static [char]),
}

/// Every string leaf of a JSON value.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
        Value::Object(o) => o.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

fn all(syntax: Syntax, v: &Value) -> Vec<(Syntax, String)> {
    let mut out = Vec::new();
    strings(v, &mut out);
    out.into_iter().map(|s| (syntax, s)).collect()
}

fn json(r: &Request) -> Value {
    r.json_body().cloned().unwrap_or(Value::Null)
}

fn form(r: &Request) -> Vec<(String, String)> {
    match &r.body {
        RequestBody::Form(f) => f.clone(),
        _ => Vec::new(),
    }
}

/// Every text each channel sends for `m`, formatted and plain, labelled with its channel and
/// read with its syntax.
fn rendered(m: &Message) -> Vec<(String, Syntax, String)> {
    let mut out: Vec<(String, Syntax, String)> = Vec::new();
    let mut add = |ch: &str, items: Vec<(Syntax, String)>| {
        out.extend(items.into_iter().map(|(syn, s)| (ch.to_owned(), syn, s)));
    };
    let chat = telegram::Chat {
        token: "t",
        chat_id: "1",
        thread: None,
        api_url: None,
        ack: true,
    };
    for f in [true, false] {
        let mode = if f { "formatted" } else { "plain" };
        add(
            &format!("slack {mode}"),
            all(Syntax::Slack, &slack::payload(m, f)),
        );
        add(
            &format!("discord {mode}"),
            all(Syntax::Discord, &discord::payload(m, f)),
        );
        add(
            &format!("teams {mode}"),
            all(Syntax::Teams, &teams::card(m, f)),
        );
        let tg = if f {
            Syntax::Html(&['@'])
        } else {
            Syntax::Plain(&['@'])
        };
        add(
            &format!("telegram {mode}"),
            all(tg, &json(&telegram::request(&chat, m, None, f))),
        );
        let mx = json(&matrix::request("!r:x", "t", "http://h", m, 1, None, f));
        add(
            &format!("matrix {mode}"),
            all(Syntax::Plain(&['@', '#']), &mx["body"]),
        );
        add(
            &format!("matrix {mode}"),
            all(Syntax::Html(&['@', '#']), &mx["formatted_body"]),
        );
        let po = form(&pushover::request("a", "u", 0, None, None, m, f));
        let po: Vec<(Syntax, String)> = po
            .into_iter()
            .map(|(k, v)| match k.as_str() {
                "message" if f => (Syntax::Html(&[]), v),
                _ => (Syntax::Plain(&[]), v),
            })
            .collect();
        add(&format!("pushover {mode}"), po);
    }
    let nt = ntfy::request("t", &crate::config::NtfyAuth::None, None, None, m);
    add("ntfy", all(Syntax::Plain(&[]), &json(&nt)));
    add("sms", vec![(Syntax::Plain(&[]), twilio::text(m))]);
    let voice = twilio_voice::VoiceSettings {
        account_sid: "AC1".into(),
        auth_token: crate::secret::Secret::new("t"),
        from: "+15005550006".into(),
        to: vec!["+447700900123".into()],
        voice: Some("Polly.Amy".into()),
        language: Some("en-GB".into()),
    };
    let said = twilio_voice::speech(m);
    let twiml = twilio_voice::menu(&voice, &said, None, "https://r/k/0", Some("https://r/m/1"));
    add("call", vec![(Syntax::Html(&[]), twiml)]);
    let (text, html) = email::bodies(m);
    add(
        "email",
        vec![(Syntax::Plain(&[]), text), (Syntax::Html(&[]), html)],
    );
    out
}

/// A syntax's live constructs in `s`, by name.
fn census(syntax: Syntax, s: &str, tally: &mut BTreeMap<String, usize>) {
    let mut count = |k: String| *tally.entry(k).or_default() += 1;
    let chars: Vec<char> = s.chars().collect();
    match syntax {
        Syntax::Slack => chars
            .iter()
            .filter(|c| matches!(c, '<' | '>'))
            .for_each(|c| count(c.to_string())),
        Syntax::Html(sigils) | Syntax::Plain(sigils) => {
            if matches!(syntax, Syntax::Html(_)) {
                // Tags, but not the `<br>` that an alert's line breaks become.
                let breaks = s.matches("<br>").count();
                (breaks..s.matches('<').count()).for_each(|_| count("<".into()));
                (breaks..s.matches('>').count()).for_each(|_| count(">".into()));
            }
            for (i, c) in chars.iter().enumerate() {
                if sigils.contains(c) && chars.get(i + 1) != Some(&WJ) {
                    count(format!("mention {c}"));
                }
            }
        }
        // Discord auto-links a bare URL; elsewhere one shows its own target (not counted).
        Syntax::Discord => markdown(&chars, "*_~`|[]()<>#@", "-+", true, &mut count),
        Syntax::Teams => {
            markdown(&chars, "*_~`[]()", "-+*#>0123456789", false, &mut count);
            // Renderers that ignore backslashes: adjacency is what they match.
            for pair in ["](", "]:", "{{"] {
                (0..s.matches(pair).count()).for_each(|_| count(pair.into()));
            }
        }
    }
}

/// Markdown read as Discord and CommonMark read it: a backslash makes the next punctuation
/// text; `inline` characters count anywhere, `line` ones (and `N.`) at a line's start, and
/// with `bare_urls` the `://` of a URL the renderer would auto-link.
fn markdown(
    chars: &[char],
    inline: &str,
    line: &str,
    bare_urls: bool,
    count: &mut impl FnMut(String),
) {
    let (mut i, mut line_start, mut numbering) = (0, true, false);
    while i < chars.len() {
        let c = chars[i];
        let escaped = c == '\\' && chars.get(i + 1).is_some_and(char::is_ascii_punctuation);
        if escaped {
            i += 1;
        } else if line_start && line.contains(c) {
            count(format!("line {c}"));
        } else if inline.contains(c) {
            count(c.to_string());
        } else if c == '.' && numbering {
            count("line N.".into());
        } else if bare_urls && c == ':' && chars[i + 1..].starts_with(&['/', '/']) {
            count("://".into());
        }
        numbering = !escaped && c.is_ascii_digit() && (line_start || numbering);
        line_start = c == '\n' || (line_start && !escaped && (c == ' ' || c == '\t'));
        i += 1;
    }
}

fn tally(m: &Message) -> BTreeMap<String, usize> {
    let mut t = BTreeMap::new();
    for (ch, syntax, s) in rendered(m) {
        let mut one = BTreeMap::new();
        census(syntax, &s, &mut one);
        for (k, n) in one {
            *t.entry(format!("{ch}: {k}")).or_default() += n;
        }
    }
    t
}

/// What no output may carry whatever its syntax, and what HTML must not: an `&` that starts
/// anything but the four entities the relay writes.
fn check_characters(m: &Message) -> Result<(), String> {
    for (ch, syntax, s) in rendered(m) {
        let hidden = |c: char| {
            (c.is_control() && c != '\n' && c != '\t')
                || matches!(c, '\u{200B}' | '\u{FEFF}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
        };
        if let Some(c) = s.chars().find(|c| hidden(*c)) {
            return Err(format!("{ch}: {c:?} in {s:?}"));
        }
        if matches!(syntax, Syntax::Html(_)) {
            let entities = ["amp;", "lt;", "gt;", "quot;"];
            if s.match_indices('&')
                .any(|(i, _)| !entities.iter().any(|e| s[i + 1..].starts_with(e)))
            {
                return Err(format!("{ch}: a raw & in {s:?}"));
            }
        }
    }
    Ok(())
}

/// The URL fields (ntfy click and actions, Pushover `url`, Teams buttons) hold only the
/// message's links; an email has only the relay's headers.
fn check_fields(m: &Message) -> Result<(), String> {
    let links: Vec<&str> = m.links.iter().map(|l| l.url.as_str()).collect();
    let nt = json(&ntfy::request(
        "t",
        &crate::config::NtfyAuth::None,
        None,
        None,
        m,
    ));
    let card = teams::card(m, true);
    let mut urls: Vec<&Value> = vec![&nt["click"]];
    urls.extend(
        nt["actions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| &a["url"]),
    );
    let actions = card["attachments"][0]["content"]["actions"].as_array();
    urls.extend(actions.into_iter().flatten().map(|a| &a["url"]));
    let po = form(&pushover::request("a", "u", 0, None, None, m, true));
    let po_url = po
        .iter()
        .find(|(k, _)| k == "url")
        .map(|(_, v)| Value::from(v.as_str()));
    urls.extend(po_url.as_ref());
    if let Some(u) = urls
        .iter()
        .filter_map(|u| u.as_str())
        .find(|u| !links.contains(u))
    {
        return Err(format!("{u} is not one of the links {links:?}"));
    }
    email_headers(m)
}

fn email_headers(m: &Message) -> Result<(), String> {
    let s = crate::config::EmailSettings {
        host: "smtp.example.org".into(),
        port: 25,
        tls: crate::config::EmailTls::None,
        username: None,
        password: None,
        from: "relay@example.org".parse().map_err(|e| format!("{e}"))?,
        to: vec!["ops@example.org".parse().map_err(|e| format!("{e}"))?],
    };
    let (mail, _) = email::build(&s, m, 1, None)?;
    let mail = String::from_utf8_lossy(&mail.formatted()).into_owned();
    let head = mail.split("\r\n\r\n").next().unwrap_or_default();
    let known = [
        "From",
        "To",
        "Subject",
        "Message-ID",
        "User-Agent",
        "Date",
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
    ];
    for line in head.split("\r\n") {
        let name = line.split(':').next().unwrap_or_default();
        if !line.starts_with([' ', '\t']) && !known.contains(&name) {
            return Err(format!("header {line:?} in\n{head}"));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn hostile_text_adds_no_mention_link_or_markup(
        t in prop::collection::vec(hostile(), 11),
        urls in prop::collection::vec(hostile_url(), 5),
        (firing, templated, notice) in any::<(bool, bool, bool)>(),
    ) {
        let shape = Shape { firing, templated, notice };
        let evil = message(&t, &urls, shape);
        let harmless: Vec<String> = (0..11).map(|i| format!("v{i}")).collect();
        let mut baseline = message(&harmless, &urls, shape);
        baseline.links.clone_from(&evil.links);
        prop_assert_eq!(tally(&evil), tally(&baseline));
        prop_assert_eq!(check_characters(&evil), Ok(()));
        prop_assert_eq!(check_fields(&evil), Ok(()));
    }

    #[test]
    fn safe_urls_cannot_break_out(raw in hostile_url()) {
        if let Some(u) = super::links::safe_url(&raw) {
            prop_assert!(u.starts_with("http://") || u.starts_with("https://"), "{}", u);
            prop_assert!(
                u.bytes().all(|b| b.is_ascii_graphic() && !b"()[]|<>\"'`\\{}^".contains(&b)),
                "{}", u
            );
            prop_assert_eq!(super::links::safe_url(&u), Some(u.clone()), "not stable");
        }
    }
}

/// The attacks found on the release binary, one by one.
#[test]
fn the_reported_attacks_are_inert() {
    let attack =
        "<!channel> <@U123> <!subteam^S1> <http://phish|trusted> [click me](http://phish.example)";
    let t: Vec<String> = (0..11).map(|_| attack.to_owned()).collect();
    let mut urls = vec!["http://x) [Acknowledge #1](http://phish.example".to_owned(); 3];
    urls.extend([
        "http://prometheus:9090/graph".into(),
        "http://am:9093".into(),
    ]);
    for notice in [false, true] {
        let shape = Shape {
            firing: true,
            templated: false,
            notice,
        };
        let m = message(&t, &urls, shape);
        let names: Vec<&str> = m.links.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            names,
            ["Source", "Alertmanager", "Silence"],
            "the runbook_url is dropped"
        );
        for f in [true, false] {
            let slack = slack::payload(&m, f).to_string();
            assert!(
                !slack.contains("<!") && !slack.contains("<@") && !slack.contains("<http://phish"),
                "{slack}"
            );
            let discord = discord::payload(&m, f).to_string();
            assert!(
                !discord.contains("[click me](") && !discord.contains("Acknowledge #1"),
                "{discord}"
            );
            assert!(
                discord.contains(r"\\[click me\\]\\(http\\://phish.example\\)"),
                "{discord}"
            );
        }
    }
}
