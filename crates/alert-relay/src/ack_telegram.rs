//! Acknowledgement from Telegram over long polling (no public URL needed): one `getUpdates`
//! loop per bot that has a channel with `ack: true`. It accepts the "Acknowledge #N" button
//! (`callback_query` with `callback_data` `ack:N`) and the `/ack N` command (also
//! `/ack@botname N`), only from the chats those channels send to, applies them through
//! [`Escalator::transition`] as "@username via Telegram", answers the button press
//! (`answerCallbackQuery`) and replies in the chat.
//!
//! The `offset` (last `update_id` + 1) is stored in `meta` after each batch, so a restart does
//! not replay old updates; a crash between an ack and storing the offset replays it, and a
//! duplicate ack changes nothing. Telegram allows one `getUpdates` consumer per bot and refuses
//! it while a webhook is set (409 Conflict): that is logged and retried after
//! [`CONFLICT_BACKOFF`]. Malformed updates are skipped and counted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::ack::Pollers;
use crate::channels::telegram::DEFAULT_API;
use crate::channels::{Request, RequestAuth, RequestBody, Response, execute};
use crate::config::{ChannelKind, Config};
use crate::render::escape;
use crate::store::{Action, Transitioned, Write};

/// `getUpdates` long-poll timeout (Telegram holds the request this long when idle).
pub const LONG_POLL: Duration = Duration::from_secs(30);
/// Wait after a 409 Conflict (another consumer, or a webhook set for the bot).
pub const CONFLICT_BACKOFF: Duration = Duration::from_secs(60);
/// First and largest wait after other failures (doubling in between).
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Shortest spacing of polls that returned nothing (a proxy that does not hold the request
/// must not make this a busy loop).
const MIN_EMPTY_POLL: Duration = Duration::from_secs(1);
/// How often the set of bots to poll is compared with the configuration.
const RECONCILE_EVERY: Duration = Duration::from_secs(10);
const SOURCE: &str = "telegram";

/// One bot to poll and the chats that may acknowledge through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bot {
    pub token: String,
    pub api_url: String,
    /// `chat_id` values of its `ack: true` channels: numeric ids or `@channelname`.
    pub chats: Vec<String>,
}

impl Bot {
    /// The numeric bot id (the token's part before `:`; not secret), for the stored offset.
    fn id(&self) -> &str {
        self.token.split(':').next().unwrap_or("")
    }

    fn url(&self, method: &str) -> String {
        format!("{}/bot{}/{method}", self.api_url, self.token)
    }

    fn allows(&self, chat: &ChatRef) -> bool {
        self.chats.iter().any(|c| match c.strip_prefix('@') {
            Some(name) => chat
                .username
                .as_deref()
                .is_some_and(|u| u.eq_ignore_ascii_case(name)),
            None => c.trim() == chat.id.to_string(),
        })
    }
}

/// The bots of every `ack: true` Telegram channel, one per (API URL, token).
pub fn bots(config: &Config) -> Vec<Bot> {
    let mut out: Vec<Bot> = Vec::new();
    for ch in config.channels.values() {
        let ChannelKind::Telegram {
            bot_token,
            chat_id,
            ack: true,
            ..
        } = &ch.kind
        else {
            continue;
        };
        let api_url = ch.api_url.as_deref().unwrap_or(DEFAULT_API).to_owned();
        let token = bot_token.expose().to_owned();
        match out
            .iter_mut()
            .find(|b| b.token == token && b.api_url == api_url)
        {
            Some(b) if !b.chats.contains(chat_id) => b.chats.push(chat_id.clone()),
            Some(_) => {}
            None => out.push(Bot {
                token,
                api_url,
                chats: vec![chat_id.clone()],
            }),
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatRef {
    pub id: i64,
    pub username: Option<String>,
}

/// An acknowledgement request from a chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckRequest {
    pub chat: ChatRef,
    /// "@alice", or the name and id of a user without a username.
    pub who: String,
    /// `None`: `/ack` without a valid incident number.
    pub incident: Option<i64>,
    /// The button press to answer.
    pub callback_id: Option<String>,
    /// The message to reply to (the command, or the message with the button).
    pub message_id: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Ack(AckRequest),
    /// Not for us (other messages, commands for another bot).
    Ignored,
    Malformed,
}

/// One `Update` object; the `update_id` is returned even for a malformed update when present,
/// so the offset moves past it.
pub fn parse_update(v: &Value, bot_username: Option<&str>) -> (Option<i64>, Parsed) {
    let update_id = v["update_id"].as_i64();
    if update_id.is_none() {
        return (None, Parsed::Malformed);
    }
    let parsed = if let Some(cq) = v.get("callback_query") {
        parse_callback(cq)
    } else if let Some(m) = v.get("message") {
        parse_message(m, bot_username)
    } else {
        Parsed::Ignored
    };
    (update_id, parsed)
}

fn chat_of(message: &Value) -> Option<ChatRef> {
    Some(ChatRef {
        id: message["chat"]["id"].as_i64()?,
        username: message["chat"]["username"].as_str().map(str::to_owned),
    })
}

/// The acknowledger's name for a chat reply (sent without `parse_mode`): an `@username` as is
/// (it is theirs); a display name, which anyone can set to `@boss`, with its mentions and
/// commands neutralised.
fn reply_name(who: &str) -> String {
    let username = who.strip_prefix('@').is_some_and(|u| {
        !u.is_empty() && u.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    });
    if username {
        who.to_owned()
    } else {
        escape::no_mentions(&escape::clean(who), &['@', '/'])
    }
}

fn who(from: &Value) -> Option<String> {
    if let Some(u) = from["username"].as_str().filter(|u| !u.is_empty()) {
        return Some(format!("@{u}"));
    }
    let id = from["id"].as_i64()?;
    let name = [from["first_name"].as_str(), from["last_name"].as_str()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    let name = name.trim();
    Some(if name.is_empty() {
        format!("Telegram user {id}")
    } else {
        format!("{name} (Telegram id {id})")
    })
}

fn parse_callback(cq: &Value) -> Parsed {
    let (Some(id), Some(who), Some(data)) =
        (cq["id"].as_str(), who(&cq["from"]), cq["data"].as_str())
    else {
        return Parsed::Malformed;
    };
    // Without the message (too old, inaccessible) the chat cannot be checked: the press is
    // refused like one from an unknown chat.
    let chat = chat_of(&cq["message"]).unwrap_or(ChatRef {
        id: 0,
        username: None,
    });
    let incident = data
        .strip_prefix("ack:")
        .and_then(|n| n.parse::<i64>().ok());
    if incident.is_none() {
        return Parsed::Ignored;
    }
    Parsed::Ack(AckRequest {
        chat,
        who,
        incident,
        callback_id: Some(id.to_owned()),
        message_id: cq["message"]["message_id"].as_i64(),
    })
}

fn parse_message(m: &Value, bot_username: Option<&str>) -> Parsed {
    let Some(text) = m["text"].as_str() else {
        return Parsed::Ignored;
    };
    let Some(incident) = parse_command(text, bot_username) else {
        return Parsed::Ignored;
    };
    let (Some(chat), Some(who)) = (chat_of(m), who(&m["from"])) else {
        return Parsed::Malformed;
    };
    Parsed::Ack(AckRequest {
        chat,
        who,
        incident,
        callback_id: None,
        message_id: m["message_id"].as_i64(),
    })
}

/// `/ack 12`, `/ack #12`, `/ack@thisbot 12` → `Some(Some(12))`; `/ack` alone or with junk →
/// `Some(None)` (usage); anything else, or a command for another bot → `None`.
pub fn parse_command(text: &str, bot_username: Option<&str>) -> Option<Option<i64>> {
    let mut words = text.split_whitespace();
    let cmd = words.next()?;
    let (name, target) = match cmd.split_once('@') {
        Some((n, t)) => (n, Some(t)),
        None => (cmd, None),
    };
    if !name.eq_ignore_ascii_case("/ack") {
        return None;
    }
    if let (Some(t), Some(me)) = (target, bot_username)
        && !t.eq_ignore_ascii_case(me)
    {
        return None;
    }
    let id = match (words.next(), words.next()) {
        (Some(n), None) => n.trim_start_matches('#').parse::<i64>().ok(),
        _ => None,
    };
    Some(id)
}

/// What a `getUpdates` call returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Poll {
    Updates(Vec<Value>),
    /// 409: another consumer, or a webhook is set.
    Conflict(String),
    /// Wait this long (or the default backoff) and try again.
    Failed {
        reason: &'static str,
        after: Option<Duration>,
        detail: String,
    },
}

pub fn classify_poll(resp: &Response) -> Poll {
    let v: Value = resp.json().unwrap_or(Value::Null);
    let description = v["description"].as_str().unwrap_or_default().to_owned();
    if resp.status == 200 && v["ok"] == json!(true) {
        return match v["result"].as_array() {
            Some(list) => Poll::Updates(list.clone()),
            None => Poll::Failed {
                reason: "bad_response",
                after: None,
                detail: format!("unexpected answer: {}", resp.snippet()),
            },
        };
    }
    if resp.status == 409 {
        return Poll::Conflict(description);
    }
    let after = v["parameters"]["retry_after"]
        .as_f64()
        .and_then(crate::channels::seconds);
    let reason = match resp.status {
        401 | 404 => "auth",
        429 => "rate_limited",
        500..=599 => "server_error",
        _ => "bad_response",
    };
    Poll::Failed {
        reason,
        after,
        detail: format!("HTTP {}: {}", resp.status, resp.snippet()),
    }
}

fn post(url: String, body: Value) -> Request {
    Request {
        method: Method::POST,
        url,
        headers: Vec::new(),
        body: RequestBody::Json(body),
        auth: RequestAuth::None,
    }
}

/// A bot's poller; aborted when dropped, so aborting [`run`] stops every poller with it.
struct Poller(JoinHandle<()>);

impl Drop for Poller {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts and stops one poller per bot as the configuration changes; runs until aborted.
pub async fn run(p: Arc<Pollers>) {
    let mut running: HashMap<(String, String), (Vec<String>, Poller)> = HashMap::new();
    loop {
        let wanted = bots(&p.live.config());
        running.retain(|key, (chats, _)| {
            wanted
                .iter()
                .any(|b| (&b.api_url, &b.token) == (&key.0, &key.1) && &b.chats == chats)
        });
        for bot in wanted {
            let key = (bot.api_url.clone(), bot.token.clone());
            if let std::collections::hash_map::Entry::Vacant(slot) = running.entry(key) {
                let chats = bot.chats.clone();
                slot.insert((chats, Poller(tokio::spawn(poll_bot(Arc::clone(&p), bot)))));
            }
        }
        tokio::time::sleep(RECONCILE_EVERY).await;
    }
}

/// The `getUpdates` loop of one bot.
async fn poll_bot(p: Arc<Pollers>, bot: Bot) {
    let key = format!("telegram_offset:{}", bot.id());
    let mut offset = loop {
        let key = key.clone();
        match p.store.read(move |b| b.meta_int(&key)).await {
            Ok(o) => break o,
            Err(e) => {
                tracing::error!("cannot read the Telegram offset: {e}");
                tokio::time::sleep(BACKOFF_MIN).await;
            }
        }
    };
    let mut username: Option<String> = None;
    let mut backoff = BACKOFF_MIN;
    tracing::info!(bot = bot.id(), chats = ?bot.chats, "polling Telegram for acknowledgements");
    loop {
        if username.is_none() {
            match get_me(&p, &bot).await {
                Ok(u) => username = Some(u),
                Err(wait) => {
                    backoff = sleep_backoff(wait, backoff).await;
                    continue;
                }
            }
        }
        let started = Instant::now();
        let mut body = json!({
            "timeout": LONG_POLL.as_secs(),
            "allowed_updates": ["message", "callback_query"],
        });
        if let Some(o) = offset {
            body["offset"] = json!(o);
        }
        let req = post(bot.url("getUpdates"), body);
        let poll = match execute(&p.http, LONG_POLL + Duration::from_secs(15), req).await {
            Ok(resp) => classify_poll(&resp),
            Err(e) => Poll::Failed {
                reason: "network",
                after: None,
                detail: format!("{e:?}"),
            },
        };
        match poll {
            Poll::Updates(updates) => {
                backoff = BACKOFF_MIN;
                let empty = updates.is_empty();
                let mut next = offset;
                for u in &updates {
                    let (id, parsed) = parse_update(u, username.as_deref());
                    if let Some(id) = id {
                        // `update_id` comes from outside: no overflow on a hostile value.
                        let after = id.saturating_add(1);
                        next = Some(next.map_or(after, |n: i64| n.max(after)));
                    }
                    handle(&p, &bot, parsed).await;
                }
                if next != offset
                    && let Some(value) = next
                {
                    let w = Write::SetMetaInt {
                        key: key.clone(),
                        value,
                    };
                    if let Err(e) = p.store.write(w).await {
                        tracing::warn!("cannot store the Telegram offset: {e}");
                    }
                    offset = next;
                }
                let took = started.elapsed();
                if empty && took < MIN_EMPTY_POLL {
                    tokio::time::sleep(MIN_EMPTY_POLL - took).await;
                }
            }
            Poll::Conflict(description) => {
                p.metrics.ack_poll(SOURCE, "conflict", true);
                tracing::error!(
                    bot = bot.id(),
                    "Telegram refused getUpdates with 409 Conflict ({description}): another \
                     process polls this bot, or a webhook is set for it (deleteWebhook); \
                     retrying in {}s",
                    CONFLICT_BACKOFF.as_secs()
                );
                tokio::time::sleep(CONFLICT_BACKOFF).await;
            }
            Poll::Failed {
                reason,
                after,
                detail,
            } => {
                p.metrics.ack_poll(SOURCE, reason, true);
                tracing::warn!(
                    bot = bot.id(),
                    reason,
                    "Telegram getUpdates failed: {detail}"
                );
                backoff = sleep_backoff(after, backoff).await;
            }
        }
    }
}

/// Sleeps for the provider's hint or the current backoff; returns the next backoff.
async fn sleep_backoff(hint: Option<Duration>, backoff: Duration) -> Duration {
    tokio::time::sleep(hint.unwrap_or(backoff)).await;
    (backoff * 2).min(BACKOFF_MAX)
}

/// The bot's username (for `/ack@name`); `Err` carries the provider's retry hint.
async fn get_me(p: &Pollers, bot: &Bot) -> Result<String, Option<Duration>> {
    let req = post(bot.url("getMe"), json!({}));
    let resp = match execute(&p.http, Duration::from_secs(15), req).await {
        Ok(r) => r,
        Err(e) => {
            p.metrics.ack_poll(SOURCE, "network", true);
            tracing::warn!(bot = bot.id(), "Telegram getMe failed: {e:?}");
            return Err(None);
        }
    };
    let v = resp.json().unwrap_or(Value::Null);
    match v["result"]["username"].as_str() {
        Some(u) if resp.status == 200 && v["ok"] == json!(true) => Ok(u.to_owned()),
        _ => {
            let (reason, after) = match classify_poll(&resp) {
                Poll::Failed { reason, after, .. } => (reason, after),
                _ => ("bad_response", None),
            };
            p.metrics.ack_poll(SOURCE, reason, true);
            tracing::error!(
                bot = bot.id(),
                reason,
                "Telegram getMe failed (a wrong bot token?): HTTP {}",
                resp.status
            );
            Err(after)
        }
    }
}

async fn handle(p: &Pollers, bot: &Bot, parsed: Parsed) {
    let req = match parsed {
        Parsed::Ack(r) => r,
        Parsed::Ignored => {
            p.metrics.ack_poll(SOURCE, "ignored", false);
            return;
        }
        Parsed::Malformed => {
            p.metrics.ack_poll(SOURCE, "malformed", false);
            tracing::warn!(bot = bot.id(), "skipped a malformed Telegram update");
            return;
        }
    };
    if !bot.allows(&req.chat) {
        p.metrics.ack_poll(SOURCE, "refused", false);
        tracing::warn!(
            bot = bot.id(),
            chat = req.chat.id,
            who = %req.who,
            "Telegram acknowledgement from a chat no ack channel sends to; refused"
        );
        // A press must be answered or the client spins; no chat reply (no oracle for ids).
        if let Some(id) = &req.callback_id {
            answer(p, bot, id, "This chat cannot acknowledge incidents.").await;
        }
        return;
    }
    let text = match req.incident {
        None => "Send /ack <incident number> to acknowledge.".to_owned(),
        Some(id) => {
            let by = format!("{} via Telegram", req.who);
            match p.escalator.transition(id, Action::Ack, by).await {
                Ok(Transitioned::Done { .. }) => {
                    p.metrics.ack_poll(SOURCE, "acked", false);
                    format!("Incident #{id} acknowledged by {}.", reply_name(&req.who))
                }
                Ok(Transitioned::Unchanged(s)) => {
                    p.metrics.ack_poll(SOURCE, "unchanged", false);
                    format!("Incident #{id} is already {}.", s.as_str())
                }
                Ok(Transitioned::NotFound) => {
                    p.metrics.ack_poll(SOURCE, "not_found", false);
                    format!("No incident #{id}.")
                }
                Err(e) => {
                    tracing::error!("cannot store a Telegram acknowledgement: {e}");
                    format!("Incident #{id} could not be acknowledged (storage error); try again.")
                }
            }
        }
    };
    if let Some(id) = &req.callback_id {
        answer(p, bot, id, &text).await;
    }
    let mut body = json!({ "chat_id": req.chat.id, "text": text });
    if let Some(m) = req.message_id {
        body["reply_parameters"] = json!({ "message_id": m, "allow_sending_without_reply": true });
    }
    call(p, bot, "sendMessage", body).await;
}

async fn answer(p: &Pollers, bot: &Bot, callback_id: &str, text: &str) {
    call(
        p,
        bot,
        "answerCallbackQuery",
        json!({ "callback_query_id": callback_id, "text": text }),
    )
    .await;
}

/// A reply: best effort, once (the acknowledgement itself is stored and announced already).
async fn call(p: &Pollers, bot: &Bot, method: &str, body: Value) {
    let ok = match execute(
        &p.http,
        Duration::from_secs(10),
        post(bot.url(method), body),
    )
    .await
    {
        Ok(r) => r.status == 200,
        Err(_) => false,
    };
    if !ok {
        p.metrics.ack_poll(SOURCE, "reply_failed", true);
        tracing::warn!(bot = bot.id(), method, "Telegram reply failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::testing::response;

    #[test]
    fn a_display_name_cannot_mention_anyone_in_the_reply() {
        assert_eq!(
            reply_name("@alice"),
            "@alice",
            "a username is the person's own"
        );
        let wj = escape::WORD_JOINER;
        let who = who(&json!({"id": 6, "first_name": "@boss /ack"})).expect("who");
        assert_eq!(
            reply_name(&who),
            format!("@{wj}boss /{wj}ack (Telegram id 6)")
        );
    }

    #[test]
    fn commands() {
        assert_eq!(parse_command("/ack 12", Some("relaybot")), Some(Some(12)));
        assert_eq!(parse_command("/ack #12", None), Some(Some(12)));
        assert_eq!(
            parse_command("/ack@RelayBot 7", Some("relaybot")),
            Some(Some(7))
        );
        assert_eq!(parse_command("/ack@otherbot 7", Some("relaybot")), None);
        assert_eq!(parse_command("/ack", None), Some(None));
        assert_eq!(parse_command("/ack twelve", None), Some(None));
        assert_eq!(parse_command("/ack 1 2", None), Some(None));
        assert_eq!(parse_command("/acknowledge 1", None), None);
        assert_eq!(parse_command("ack 1", None), None);
        assert_eq!(parse_command("", None), None);
    }

    #[test]
    fn updates() {
        let cb = json!({"update_id": 10, "callback_query": {"id": "cq1",
            "from": {"id": 5, "is_bot": false, "first_name": "Alice", "username": "alice"},
            "message": {"message_id": 77, "chat": {"id": -100123, "type": "supergroup"}, "date": 1},
            "chat_instance": "x", "data": "ack:12"}});
        let (id, p) = parse_update(&cb, Some("relaybot"));
        assert_eq!(id, Some(10));
        assert_eq!(
            p,
            Parsed::Ack(AckRequest {
                chat: ChatRef {
                    id: -100123,
                    username: None
                },
                who: "@alice".into(),
                incident: Some(12),
                callback_id: Some("cq1".into()),
                message_id: Some(77),
            })
        );
        let cmd = json!({"update_id": 11, "message": {"message_id": 80, "date": 1,
            "from": {"id": 6, "is_bot": false, "first_name": "Bob", "last_name": "B"},
            "chat": {"id": 42, "type": "private"}, "text": "/ack@relaybot 3"}});
        let (_, p) = parse_update(&cmd, Some("relaybot"));
        let Parsed::Ack(r) = p else { panic!("{p:?}") };
        assert_eq!(
            (r.who.as_str(), r.incident, r.callback_id),
            ("Bob B (Telegram id 6)", Some(3), None)
        );
        let nameless = json!({"update_id": 16, "message": {"message_id": 83, "from": {"id": 8},
            "chat": {"id": 42}, "text": "/ack 4"}});
        let (_, p) = parse_update(&nameless, None);
        assert!(matches!(p, Parsed::Ack(r) if r.who == "Telegram user 8"));
        let chatter = json!({"update_id": 12, "message": {"message_id": 81, "date": 1,
            "from": {"id": 6}, "chat": {"id": 42}, "text": "hello"}});
        assert_eq!(parse_update(&chatter, None), (Some(12), Parsed::Ignored));
        let sticker = json!({"update_id": 13, "message": {"message_id": 82, "chat": {"id": 42}}});
        assert_eq!(parse_update(&sticker, None), (Some(13), Parsed::Ignored));
        let broken = json!({"update_id": 14, "callback_query": {"id": 5, "data": "ack:1"}});
        assert_eq!(parse_update(&broken, None), (Some(14), Parsed::Malformed));
        assert_eq!(parse_update(&json!([1]), None), (None, Parsed::Malformed));
        let other_button = json!({"update_id": 15, "callback_query": {"id": "c",
            "from": {"id": 1, "username": "x"}, "data": "something"}});
        assert_eq!(
            parse_update(&other_button, None),
            (Some(15), Parsed::Ignored)
        );
    }

    #[test]
    fn chats_by_id_or_username() {
        let bot = Bot {
            token: "123:abc".into(),
            api_url: DEFAULT_API.into(),
            chats: vec!["-100123".into(), "@OpsChannel".into()],
        };
        assert_eq!(bot.id(), "123");
        let chat = |id, u: Option<&str>| ChatRef {
            id,
            username: u.map(str::to_owned),
        };
        assert!(bot.allows(&chat(-100123, None)));
        assert!(bot.allows(&chat(-5, Some("opschannel"))));
        assert!(!bot.allows(&chat(-5, Some("other"))));
        assert!(!bot.allows(&chat(0, None)));
    }

    #[test]
    fn poll_answers() {
        assert_eq!(
            classify_poll(&response(
                200,
                &[],
                r#"{"ok":true,"result":[{"update_id":1}]}"#
            )),
            Poll::Updates(vec![json!({"update_id": 1})])
        );
        let conflict = r#"{"ok":false,"error_code":409,"description":"Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first"}"#;
        assert!(
            matches!(classify_poll(&response(409, &[], conflict)), Poll::Conflict(d) if d.contains("webhook"))
        );
        let limited = r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 7","parameters":{"retry_after":7}}"#;
        assert!(matches!(
            classify_poll(&response(429, &[], limited)),
            Poll::Failed { reason: "rate_limited", after: Some(d), .. } if d == Duration::from_secs(7)
        ));
        assert!(matches!(
            classify_poll(&response(401, &[], r#"{"ok":false}"#)),
            Poll::Failed { reason: "auth", .. }
        ));
        assert!(matches!(
            classify_poll(&response(200, &[], "<html>")),
            Poll::Failed {
                reason: "bad_response",
                ..
            }
        ));
    }
}
