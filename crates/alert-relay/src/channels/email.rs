//! `type: email`: SMTP with STARTTLS (default), implicit TLS or none, via lettre over rustls
//! with the process's ring provider. One mail per notification to every `to` address
//! (text and HTML alternatives); the resolved mail replies to the firing one (`In-Reply-To`
//! and `References` name the firing mail's `Message-ID`, which the relay generates from the
//! delivery id). SMTP 5xx is permanent, 4xx and connection failures are retried.

use lettre::message::{Mailbox, MultiPart, header};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Tokio1Executor};

use super::settings::{ChannelKind, Input, Key, Kind, Provider, Rate};
use super::{Attempt, Outcome};
use crate::render::Message;
use crate::render::escape;
use crate::render::links::html_anchors;
use crate::render::text::truncate_chars;
use crate::secret::Secret;
use crate::secret::keys::{ConfigError, Problems};

/// The mail, with a `Message-ID` derived from the delivery id.
pub fn build(
    s: &EmailSettings,
    msg: &Message,
    delivery_id: i64,
    firing_ref: Option<&str>,
) -> Result<(lettre::Message, String), String> {
    let domain = s.from.email.domain().to_owned();
    let message_id = format!("<alert-relay-{delivery_id}@{domain}>");
    let mut b = lettre::Message::builder()
        .from(s.from.clone())
        // One line: a line break in a header would start a header of the alert's choosing.
        .subject(truncate_chars(&escape::one_line(&msg.title), 250))
        .message_id(Some(message_id.clone()))
        .header(header::UserAgent::from(
            concat!("alert-relay/", env!("CARGO_PKG_VERSION")).to_owned(),
        ));
    for to in &s.to {
        b = b.to(to.clone());
    }
    if let Some(r) = firing_ref {
        b = b.in_reply_to(r.to_owned()).references(r.to_owned());
    }
    let (text, html) = bodies(msg);
    let mail = b
        .multipart(MultiPart::alternative_plain_html(text, html))
        .map_err(|e| e.to_string())?;
    Ok((mail, message_id))
}

/// The plain-text part (nothing in it renders) and the HTML part (escaped, the relay's own
/// heading, line breaks and links).
pub fn bodies(msg: &Message) -> (String, String) {
    let text = msg.plain_layout(escape::clean, |l| format!("{}: {}", l.name, l.url));
    let mut html = format!(
        "<h3>{}</h3><p>{}</p>",
        escape::html(&msg.title),
        escape::html(&msg.plain_body()).replace('\n', "<br>")
    );
    if !msg.links.is_empty() {
        let links = html_anchors(&msg.links, " · ", escape::html);
        html.push_str(&format!("<p>{links}</p>"));
    }
    (text, html)
}

fn transport(
    s: &EmailSettings,
    a: &Attempt<'_>,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let tls = |host: &str| TlsParameters::new(host.to_owned()).map_err(|e| format!("TLS: {e}"));
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.host).port(s.port);
    b = match s.tls {
        EmailTls::Starttls => b.tls(Tls::Required(tls(&s.host)?)),
        EmailTls::Implicit => b.tls(Tls::Wrapper(tls(&s.host)?)),
        EmailTls::None => b.tls(Tls::None),
    };
    if let (Some(user), Some(password)) = (&s.username, &s.password) {
        b = b.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
    }
    Ok(b.timeout(Some(a.timeout)).build())
}

pub async fn send(a: &Attempt<'_>, s: &EmailSettings, msg: &Message) -> Outcome {
    let (mail, message_id) = match build(s, msg, a.delivery_id, a.firing_ref) {
        Ok(m) => m,
        Err(e) => {
            return Outcome::Permanent {
                reason: "rejected",
                detail: format!("cannot build the mail: {e}"),
            };
        }
    };
    let transport = match transport(s, a) {
        Ok(t) => t,
        Err(e) => {
            return Outcome::Permanent {
                reason: "rejected",
                detail: e,
            };
        }
    };
    match transport.send(mail).await {
        Ok(_) => Outcome::Delivered {
            reference: Some(message_id),
            pause: None,
        },
        Err(e) => classify(&e),
    }
}

fn classify(e: &lettre::transport::smtp::Error) -> Outcome {
    let detail = e.to_string();
    let code = e.status().map(|c| c.to_string()).unwrap_or_default();
    if e.is_permanent() {
        let reason = if code.starts_with("535") || code.starts_with("530") {
            "auth"
        } else {
            "rejected"
        };
        Outcome::Permanent { reason, detail }
    } else if e.is_transient() {
        Outcome::Retry {
            reason: "server_error",
            after: None,
            detail,
        }
    } else if e.is_timeout() {
        Outcome::Retry {
            reason: "timeout",
            after: None,
            detail,
        }
    } else {
        Outcome::Retry {
            reason: "network",
            after: None,
            detail,
        }
    }
}

/// An email channel's keys, default rate and validation.
pub const PROVIDER: Provider = Provider {
    name: "email",
    keys: &[
        Key::Plain("smarthost", Kind::Str),
        Key::Plain("tls", Kind::Str),
        Key::Plain("username", Kind::Str),
        Key::Secret("password"),
        Key::Plain("from", Kind::Str),
        Key::Plain("to", Kind::List),
        // Alertmanager's email_configs names.
        Key::Alias("auth_username", "username"),
        Key::Alias("auth_password", "password"),
        Key::Plain("require_tls", Kind::Bool),
    ],
    rate: Rate::new(1.0, 5),
    refuses_api_url: Some("email channels name their SMTP server in smarthost"),
    from_raw,
};

#[derive(Debug, Clone)]
pub struct EmailSettings {
    pub host: String,
    pub port: u16,
    pub tls: EmailTls,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub from: Mailbox,
    pub to: Vec<Mailbox>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailTls {
    /// Plain connection upgraded with STARTTLS, which must succeed.
    Starttls,
    /// TLS from the first byte (SMTPS, port 465).
    Implicit,
    /// No TLS: only for a relay on the same host or in tests.
    None,
}

fn from_raw(input: &Input<'_>) -> Result<ChannelKind, ConfigError> {
    let mut problems = Problems::default();
    let smarthost = problems.keep(smarthost(input));
    let tls = problems.keep(tls(input, smarthost.as_ref().map(|(_, port)| *port)));
    let password = problems.keep(input.secret("password"));
    let username = input.keys.str("username").cloned();
    // A password that cannot be read is reported already, not also as missing.
    if password
        .as_ref()
        .is_some_and(|p| p.is_some() != username.is_some())
    {
        problems.push(input.invalid("username", "set username and password_file together"));
    }
    let from = problems.keep(
        input
            .required("from")
            .and_then(|from| mailbox(input, "from", &from)),
    );
    let to = problems.keep(recipients(input));
    let (Some((host, port)), Some(tls), Some(password), Some(from), Some(to)) =
        (smarthost, tls, password, from, to)
    else {
        return Err(input.failed(problems));
    };
    problems.finish(ChannelKind::Email(EmailSettings {
        host,
        port,
        tls,
        username,
        password,
        from,
        to,
    }))
}

/// `smarthost`: host and port.
fn smarthost(input: &Input<'_>) -> Result<(String, u16), ConfigError> {
    input
        .required("smarthost")?
        .rsplit_once(':')
        .and_then(|(h, p)| {
            Some((
                h.trim_start_matches('[').trim_end_matches(']').to_owned(),
                p.parse::<u16>().ok()?,
            ))
        })
        .filter(|(h, _)| !h.is_empty())
        .ok_or_else(|| input.invalid("smarthost", "must be host:port, e.g. smtp.example.org:587"))
}

/// `tls`, or Alertmanager's `require_tls`, whose meaning depends on the port (unknown when
/// `smarthost` is wrong, which is reported).
fn tls(input: &Input<'_>, port: Option<u16>) -> Result<EmailTls, ConfigError> {
    match (
        input.keys.str("tls").map(String::as_str),
        input.keys.bool("require_tls"),
    ) {
        (Some(_), Some(_)) => Err(input.invalid(
            "require_tls",
            "require_tls is Alertmanager's name for tls: set one of require_tls and tls, not both",
        )),
        // Alertmanager: port 465 is implicit TLS; otherwise require_tls demands STARTTLS and
        // false sends without it.
        (None, Some(_)) if port == Some(465) => Ok(EmailTls::Implicit),
        (None, Some(true)) => Ok(EmailTls::Starttls),
        (None, Some(false)) => Ok(EmailTls::None),
        (None | Some("starttls"), None) => Ok(EmailTls::Starttls),
        (Some("tls"), None) => Ok(EmailTls::Implicit),
        (Some("none"), None) => Ok(EmailTls::None),
        (Some(_), None) => Err(input.invalid("tls", "use starttls (default), tls or none")),
    }
}

/// The mail address at `key`.
fn mailbox(input: &Input<'_>, key: &str, v: &str) -> Result<Mailbox, ConfigError> {
    v.parse::<Mailbox>()
        .map_err(|e| input.invalid(key, format!("{v:?} is not a mail address: {e}")))
}

/// `to`: at least one address, every wrong one reported.
fn recipients(input: &Input<'_>) -> Result<Vec<Mailbox>, ConfigError> {
    let to = input.keys.list("to").cloned().unwrap_or_default();
    if to.is_empty() {
        return Err(input.invalid("to", "needs at least one address"));
    }
    let mut problems = Problems::default();
    let to: Vec<Mailbox> = to
        .iter()
        .enumerate()
        .filter_map(|(i, t)| problems.keep(mailbox(input, &format!("to[{i}]"), t)))
        .collect();
    problems.finish(to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::testing::message;

    #[test]
    fn mail_threads_the_resolved_message() {
        let s = EmailSettings {
            host: "smtp.example.org".into(),
            port: 587,
            tls: EmailTls::Starttls,
            username: None,
            password: None,
            from: "Relay <relay@example.org>".parse().expect("from"),
            to: vec!["ops@example.org".parse().expect("to")],
        };
        let (mail, id) =
            build(&s, &message(false), 9, Some("<alert-relay-3@example.org>")).expect("mail");
        assert_eq!(id, "<alert-relay-9@example.org>");
        let text = String::from_utf8(mail.formatted()).expect("utf8");
        assert!(
            text.contains("In-Reply-To: <alert-relay-3@example.org>"),
            "{text}"
        );
        assert!(
            text.contains("Subject: [RESOLVED] PiHot on pi-18:9831"),
            "{text}"
        );
        assert!(text.contains("multipart/alternative"));
    }
}
