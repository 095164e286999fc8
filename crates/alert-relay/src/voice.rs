//! Acknowledgement by key press on a call (`type: twilio_voice`). Twilio calls back on
//! `public_url/inbound/voice/{channel}/{delivery}/…`:
//! - `menu/{n}` (POST, or GET): what the call says, round `n`: the alert inside a `<Gather>`;
//!   with `AnsweredBy` a voicemail (`machine_*`, `fax`) is recorded and the call hung up;
//! - `key/{n}` (POST, `Digits`): 1 acknowledges, 2 repeats, anything else repeats the menu;
//! - `status` (POST, `CallStatus`): the call's end; no-answer, busy, failed, canceled and a
//!   voicemail are recorded on the delivery, and escalation goes on as if nobody answered.
//!
//! Every callback must carry Twilio's signature over the full URL and the sorted POST
//! parameters (`channels::twilio::verify`, the check SMS replies use too), keyed with the
//! channel's auth token, and be about a call the relay made for that delivery: the delivery
//! exists, went to `{channel}/{To}` and its provider reference is the `CallSid`. A key press
//! and a status callback are acted on once: `call:{CallSid}:key:{n}:{Digits}` and
//! `call:{CallSid}:status:{CallStatus}` are stored like an SMS's `MessageSid`, and a request
//! seen before is refused. A refused request gets the SMS path's one neutral 403.

use crate::channels::twilio_voice::{self, MAX_ROUNDS, VoiceSettings};
use crate::config::{ChannelKind, Config};
use crate::escalation::Escalator;
use crate::inbound::{NOTHING_TO_ACK, Refused};
use crate::render::Message;
use crate::store::{AckTarget, Action, DeliveryJob, Store, StoreError, Transitioned};
use crate::storm::{StormAcked, Storms};

/// Which callback of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Callback {
    /// The TwiML of round `n` (0 when the call is answered).
    Menu(u32),
    /// The key pressed during round `n`.
    Key(u32),
    /// The call's status.
    Status,
}

/// A callback as it arrived: `rest` is the path after `/inbound/voice/`, `path` the path and
/// query Twilio signed (after `public_url`), `signed` the POST parameters (none for a GET),
/// `values` what the request says (the POST parameters, or a GET's query).
#[derive(Debug)]
pub struct Request<'a> {
    pub rest: &'a str,
    pub path: &'a str,
    pub signed: &'a [(String, String)],
    pub values: &'a [(String, String)],
    pub signature: &'a str,
}

/// Why a callback got no TwiML.
#[derive(Debug)]
pub enum Failure {
    Refused(Refused),
    Store(StoreError),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

impl From<Refused> for Failure {
    fn from(r: Refused) -> Self {
        Failure::Refused(r)
    }
}

/// `{channel}/{delivery}/menu/{n}`, `…/key/{n}` or `…/status`.
pub fn route(rest: &str) -> Option<(&str, i64, Callback)> {
    let mut parts = rest.split('/');
    let channel = parts.next().filter(|c| !c.is_empty())?;
    let delivery = parts.next()?.parse().ok()?;
    let round = |p: Option<&str>| {
        p.and_then(|n| n.parse::<u32>().ok())
            .filter(|n| *n < MAX_ROUNDS)
    };
    let callback = match parts.next()? {
        "menu" => Callback::Menu(round(parts.next())?),
        "key" => Callback::Key(round(parts.next())?),
        "status" => Callback::Status,
        _ => return None,
    };
    parts
        .next()
        .is_none()
        .then_some((channel, delivery, callback))
}

/// The services a key press acts through.
#[derive(Debug, Clone, Copy)]
pub struct Services<'a> {
    pub store: &'a Store,
    pub escalator: &'a Escalator,
    pub storms: &'a Storms,
}

/// A genuine callback about a known call.
struct Call<'a> {
    channel: &'a str,
    settings: &'a VoiceSettings,
    public_url: &'a str,
    job: DeliveryJob,
    sid: String,
    /// The number called.
    to: String,
}

impl Call<'_> {
    fn url(&self, what: &str) -> String {
        let path = twilio_voice::callback_path(self.channel, self.job.id, what);
        format!("{}{path}", self.public_url)
    }
}

fn value<'v>(values: &'v [(String, String)], key: &str) -> &'v str {
    values
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

/// Answers one callback with TwiML, or refuses it.
pub async fn answer(
    s: Services<'_>,
    config: &Config,
    req: &Request<'_>,
) -> Result<String, Failure> {
    let routed = route(req.rest);
    let channel = routed.map_or("", |(c, _, _)| c);
    let settings = match config.channels.get(channel).map(|c| &c.kind) {
        None => Err(Refused::NoChannel),
        Some(ChannelKind::TwilioVoice(_)) if config.public_url.is_none() => {
            Err(Refused::NoPublicUrl)
        }
        Some(ChannelKind::TwilioVoice(v)) => Ok(v),
        Some(_) => Err(Refused::NotTwilio),
    };
    // Checked whatever the channel (an empty key when none), so every name costs the same.
    let token = settings.as_ref().map_or("", |v| v.auth_token.expose());
    let public_url = config.public_url.as_deref().unwrap_or("");
    let url = format!("{public_url}{}", req.path);
    let genuine = crate::channels::twilio::verify(token, &url, req.signed, req.signature);
    let settings = settings?;
    let Some((channel, delivery, callback)) = routed else {
        return Err(Refused::NoRoute.into());
    };
    if !genuine {
        return Err(Refused::Signature.into());
    }
    let sid = value(req.values, "CallSid").to_owned();
    if sid.is_empty() {
        return Err(Refused::NoCallSid.into());
    }
    let to = value(req.values, "To").to_owned();
    let job = s.store.load(delivery).await?;
    let Some(job) = job.filter(|j| {
        j.destination == format!("{channel}/{to}") && j.provider_ref.as_deref() == Some(&sid)
    }) else {
        return Err(Refused::UnknownCall.into());
    };
    let call = Call {
        channel,
        settings,
        public_url,
        job,
        sid,
        to,
    };
    match callback {
        Callback::Menu(round) => menu(s, config, &call, round, req.values).await,
        Callback::Key(round) => key(s, config, &call, round, value(req.values, "Digits")).await,
        Callback::Status => status(s, &call, req.values).await,
    }
}

/// Twilio's `AnsweredBy` when a machine answered (`machine_start`, `machine_end_beep`, …, `fax`).
fn machine(values: &[(String, String)]) -> Option<&str> {
    let by = value(values, "AnsweredBy");
    (by.starts_with("machine") || by == "fax").then_some(by)
}

/// What the call says: the message the delivery carries, as the channel renders it.
fn speech(config: &Config, call: &Call<'_>) -> String {
    let destination = config.channels.get(call.channel).and_then(|c| {
        c.destinations()
            .into_iter()
            .find(|d| d.id == call.job.destination)
    });
    let mut msg = match &destination {
        Some(d) => crate::channels::message_for(d, &call.job),
        None => Message::new(&call.job.event),
    };
    crate::render::storm::shape(&mut msg, &call.job);
    crate::render::ack::decorate(&mut msg, &call.job, None, 0);
    twilio_voice::speech(&msg)
}

/// The menu of `round`, or goodbye when the rounds are used up.
fn menu_twiml(config: &Config, call: &Call<'_>, round: u32, prefix: Option<&str>) -> String {
    if round >= MAX_ROUNDS {
        return twilio_voice::farewell(call.settings, "Goodbye.");
    }
    let next = (round + 1 < MAX_ROUNDS).then(|| call.url(&format!("menu/{}", round + 1)));
    twilio_voice::menu(
        call.settings,
        &speech(config, call),
        prefix,
        &call.url(&format!("key/{round}")),
        next.as_deref(),
    )
}

async fn menu(
    s: Services<'_>,
    config: &Config,
    call: &Call<'_>,
    round: u32,
    values: &[(String, String)],
) -> Result<String, Failure> {
    if let Some(by) = machine(values) {
        record(s, call, format!("voicemail (AnsweredBy={by})")).await?;
        tracing::info!(destination = %call.job.destination, "a voicemail answered the call; hung up, escalation goes on");
        return Ok(twilio_voice::hang_up());
    }
    Ok(menu_twiml(config, call, round, None))
}

async fn key(
    s: Services<'_>,
    config: &Config,
    call: &Call<'_>,
    round: u32,
    digits: &str,
) -> Result<String, Failure> {
    let seen = format!("call:{}:key:{round}:{digits}", call.sid);
    if !s.store.first_time(seen).await? {
        return Err(Refused::Replay.into());
    }
    match digits {
        "1" => acknowledge(s, call).await,
        "2" => Ok(menu_twiml(config, call, round + 1, None)),
        _ => Ok(menu_twiml(
            config,
            call,
            round + 1,
            Some("That key does nothing."),
        )),
    }
}

/// Key 1: acknowledges the call's incident (or storm), from the number called, if the relay
/// paged that number for it.
async fn acknowledge(s: Services<'_>, call: &Call<'_>) -> Result<String, Failure> {
    let bye = |text: &str| Ok(twilio_voice::farewell(call.settings, text));
    let target = match (call.job.incident, call.job.storm) {
        (Some(i), _) => AckTarget::Incident(i),
        (None, Some(storm)) => AckTarget::Storm(storm),
        (None, None) => return bye("This call has nothing to acknowledge. Goodbye."),
    };
    let destination = call.job.destination.clone();
    let to = destination.clone();
    if !s.store.read(move |b| b.sent_to(&to, target)).await? {
        return bye(NOTHING_TO_ACK);
    }
    let how = format!("key press on a call to {}", call.to);
    let said = match target {
        AckTarget::Incident(id) => {
            let by = crate::inbound::acked_by(s.store, id, destination, &how).await;
            match s.escalator.transition(id, Action::Ack, by).await? {
                Transitioned::Done { .. } => format!("Incident {id} acknowledged. Goodbye."),
                Transitioned::Unchanged(st) => {
                    format!("Incident {id} is already {}. Goodbye.", st.as_str())
                }
                Transitioned::NotFound => NOTHING_TO_ACK.to_owned(),
            }
        }
        AckTarget::Storm(id) => match s.storms.ack(id, how).await? {
            StormAcked::Done { incidents, .. } => format!(
                "Storm {id} acknowledged, {} incidents. Goodbye.",
                incidents.len()
            ),
            StormAcked::Unchanged => format!("Storm {id} has no open incident. Goodbye."),
            StormAcked::NotFound => NOTHING_TO_ACK.to_owned(),
        },
    };
    record(s, call, "answered, key 1 pressed".into()).await?;
    bye(&said)
}

async fn status(
    s: Services<'_>,
    call: &Call<'_>,
    values: &[(String, String)],
) -> Result<String, Failure> {
    let status = value(values, "CallStatus");
    if !s
        .store
        .first_time(format!("call:{}:status:{status}", call.sid))
        .await?
    {
        return Err(Refused::Replay.into());
    }
    let outcome = match status {
        "no-answer" | "busy" | "failed" | "canceled" => status.to_owned(),
        "completed" => match machine(values) {
            Some(by) => format!("voicemail (AnsweredBy={by})"),
            None => "answered, no key 1".to_owned(),
        },
        // queued, ringing, in-progress: not an end.
        _ => return Ok(twilio_voice::empty()),
    };
    if record(s, call, outcome.clone()).await? {
        tracing::info!(destination = %call.job.destination, "call ended: {outcome}; escalation goes on unless acknowledged");
    }
    Ok(twilio_voice::empty())
}

/// Keeps the call's first outcome on its delivery.
async fn record(s: Services<'_>, call: &Call<'_>, outcome: String) -> Result<bool, StoreError> {
    s.store
        .call_outcome(call.job.id, call.sid.clone(), outcome)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_paths() {
        assert_eq!(route("c/12/menu/0"), Some(("c", 12, Callback::Menu(0))));
        assert_eq!(route("c/12/key/4"), Some(("c", 12, Callback::Key(4))));
        assert_eq!(route("c/12/status"), Some(("c", 12, Callback::Status)));
        for bad in [
            "",
            "c",
            "c/x/menu/0",
            "c/12/menu",
            "c/12/menu/5",
            "c/12/key/-1",
            "c/12/status/1",
            "/12/status",
            "c/12/other",
        ] {
            assert_eq!(route(bad), None, "{bad}");
        }
    }
}
