//! Acknowledgement links: `public_url/ack/{token}` where the token is
//! `{incident}.{expires}.{mac}`, `mac` = HMAC-SHA256 over `ack:{incident}:{expires}` with a
//! 32-byte key that SQLite's `randomblob` (OS randomness) created with the database, truncated
//! to 128 bits and base64url-encoded. `expires` is a wall-clock unix time in seconds: expiry is
//! the one place the relay trusts the wall clock, and a wrong clock only makes a link expire
//! early or late, never acknowledges anything by itself. A GET shows a confirm page; only a POST
//! acknowledges (link previews and prefetchers issue GETs; nothing changes on a GET).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use crate::model::record::DeliveryJob;
use crate::render::links::safe_url;
use crate::render::{Link, Message};

type HmacSha256 = Hmac<Sha256>;

/// How long an acknowledgement link stays valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
const MAC_BYTES: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed acknowledgement link")]
    Malformed,
    #[error("this acknowledgement link is not valid (wrong signature)")]
    Forged,
    #[error("this acknowledgement link has expired")]
    Expired,
}

#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
    public_url: Option<String>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

impl Signer {
    pub fn new(key: Vec<u8>, public_url: Option<String>) -> Self {
        Self { key, public_url }
    }

    /// The same key with another `public_url` (a reload changed it).
    pub fn with_public_url(&self, public_url: Option<String>) -> Self {
        Self::new(self.key.clone(), public_url)
    }

    /// `subject` is the incident id, or `s` and the storm id.
    fn mac(&self, subject: &str, expires: i64) -> Vec<u8> {
        // HMAC takes keys of any length.
        let mut m = HmacSha256::new_from_slice(&self.key).expect("HMAC accepts any key length");
        m.update(format!("ack:{subject}:{expires}").as_bytes());
        m.finalize().into_bytes()[..MAC_BYTES].to_vec()
    }

    pub fn token(&self, id: i64, now_s: i64) -> String {
        self.token_for(&id.to_string(), now_s)
    }

    fn token_for(&self, subject: &str, now_s: i64) -> String {
        let expires = now_s + i64::try_from(TOKEN_TTL.as_secs()).unwrap_or(0);
        format!(
            "{subject}.{expires}.{}",
            URL_SAFE_NO_PAD.encode(self.mac(subject, expires))
        )
    }

    /// The incident a token acknowledges, if it is genuine and not expired.
    pub fn verify(&self, token: &str, now_s: i64) -> Result<i64, TokenError> {
        self.verify_subject(token, now_s, "")
    }

    /// The storm a storm token (`s{storm}.{expires}.{mac}`) acknowledges.
    pub fn verify_storm(&self, token: &str, now_s: i64) -> Result<i64, TokenError> {
        self.verify_subject(token, now_s, "s")
    }

    /// Storm links: `public_url/ack/s{storm}.{expires}.{mac}`.
    pub fn storm_link(&self, storm: i64, now_s: i64) -> Option<String> {
        self.public_url
            .as_ref()
            .map(|base| format!("{base}/ack/{}", self.token_for(&format!("s{storm}"), now_s)))
    }

    fn verify_subject(&self, token: &str, now_s: i64, prefix: &str) -> Result<i64, TokenError> {
        let mut parts = token.splitn(3, '.');
        let (Some(subject), Some(expires), Some(mac)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let id: i64 = subject
            .strip_prefix(prefix)
            .and_then(|s| s.parse().ok())
            .ok_or(TokenError::Malformed)?;
        let expires: i64 = expires.parse().map_err(|_| TokenError::Malformed)?;
        let mac = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| TokenError::Malformed)?;
        if mac.len() != MAC_BYTES {
            return Err(TokenError::Forged);
        }
        let mut m = HmacSha256::new_from_slice(&self.key).expect("HMAC accepts any key length");
        m.update(format!("ack:{subject}:{expires}").as_bytes());
        // Constant-time comparison of the truncated tag.
        m.verify_truncated_left(&mac)
            .map_err(|_| TokenError::Forged)?;
        if now_s > expires {
            return Err(TokenError::Expired);
        }
        Ok(id)
    }

    /// The key of `user`'s calendar feed of `rotation` (`/ui/rotations/NAME.ics`): a phone's
    /// calendar cannot sign in. `credential` (the user's password hash) is mixed in, so a new
    /// password revokes every feed address given out before.
    pub fn calendar_key(&self, user: &str, credential: &str, rotation: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.calendar_mac(user, credential, rotation))
    }

    /// Whether `key` is [`Signer::calendar_key`] of these (constant time).
    pub fn calendar_key_matches(
        &self,
        user: &str,
        credential: &str,
        rotation: &str,
        key: &str,
    ) -> bool {
        let Ok(given) = URL_SAFE_NO_PAD.decode(key) else {
            return false;
        };
        let expected = self.calendar_mac(user, credential, rotation);
        given.len() == expected.len()
            && bool::from(subtle::ConstantTimeEq::ct_eq(&given[..], &expected[..]))
    }

    fn calendar_mac(&self, user: &str, credential: &str, rotation: &str) -> Vec<u8> {
        let mut m = HmacSha256::new_from_slice(&self.key).expect("HMAC accepts any key length");
        // Lengths first: no two (user, credential, rotation) triples share an input.
        m.update(
            format!(
                "ical:{}:{}:{}:",
                user.len(),
                credential.len(),
                rotation.len()
            )
            .as_bytes(),
        );
        m.update(user.as_bytes());
        m.update(credential.as_bytes());
        m.update(rotation.as_bytes());
        m.finalize().into_bytes()[..16].to_vec()
    }

    pub fn link(&self, id: i64, now_s: i64) -> Option<String> {
        self.public_url
            .as_ref()
            .map(|base| format!("{base}/ack/{}", self.token(id, now_s)))
    }
}

/// Adds the incident id and the acknowledgement link to a message, or turns it into the
/// incident notice the delivery carries. The link passes `safe_url` like an alert's: every
/// link of a message is one a channel can place in its markup as it is.
pub fn decorate(msg: &mut Message, job: &DeliveryJob, signer: Option<&Signer>, now_s: i64) {
    if let Some(storm) = job.storm {
        if job.step < 0 {
            // A storm's notice (acknowledged, resolved): informational, never an alarm
            // (no Pushover emergency, no ack button).
            let text = job.notice.as_deref().unwrap_or_default();
            msg.notice = Some(badge(&format!("Storm #{storm} "), text, &[':', '\n']));
            return;
        }
        // A storm summary acknowledges the whole storm.
        msg.storm = Some(storm);
        if let Some(url) =
            signer.and_then(|s| s.storm_link(storm, now_s).and_then(|u| safe_url(&u)))
        {
            msg.links.push(Link {
                name: format!("Acknowledge storm #{storm}"),
                url,
            });
        }
        return;
    }
    // A resolved message's incident is its firing message's (it opened none itself).
    let firing_incident = job
        .firing
        .as_ref()
        .and_then(|f| f.incident)
        .filter(|_| job.notice.is_none());
    let Some(id) = job.incident.or(firing_incident) else {
        // A budget summary (or another incident-less notice) hangs on a held message's event,
        // firing or resolved: it reads as a notice either way, never as that alert.
        if let Some(text) = &job.notice {
            let badge = if text.starts_with("Budget: ") {
                "BUDGET"
            } else {
                "NOTICE"
            };
            msg.notice = Some(badge.to_owned());
        }
        return;
    };
    msg.incident = Some(id);
    if let Some(notice) = &job.notice {
        let badge = badge(&format!("Incident #{id} "), notice, &[]);
        msg.title = match &msg.instance {
            Some(i) => format!("[{badge}] {} on {i} (incident #{id})", msg.alertname),
            None => format!("[{badge}] {} (incident #{id})", msg.alertname),
        };
        msg.notice = Some(badge);
        msg.summary.clone_from(notice);
        msg.description = None;
        msg.body = Some(notice.clone());
        return;
    }
    msg.title = format!("{} (incident #{id})", msg.title);
    if job.event.status == crate::payload::Status::Firing
        && let Some(url) = signer.and_then(|s| s.link(id, now_s).and_then(|u| safe_url(&u)))
    {
        msg.links.push(Link {
            name: format!("Acknowledge #{id}"),
            url,
        });
    }
}

/// A notice's badge: its verb in capitals (`ACKNOWLEDGED`, `UN-ACKNOWLEDGED`, `RESOLVED`),
/// read from the wording every notice has after `subject` ("Incident #12 acknowledged by …",
/// see `store::sqlite::transition`; "Storm #3 resolved: …"), ending at " by " or at one of
/// `ends`; `NOTICE` for any other wording.
fn badge(subject: &str, notice: &str, ends: &[char]) -> String {
    notice
        .strip_prefix(subject)
        .map(|rest| {
            let verb = rest.split_once(" by ").map_or(rest, |(verb, _)| verb);
            verb.split(ends).next().unwrap_or(verb)
        })
        .filter(|v| !v.is_empty() && v.len() <= 24 && !v.contains(' '))
        .map_or_else(|| "NOTICE".to_owned(), str::to_uppercase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_calendar_key_is_bound_to_its_user_password_and_rotation() {
        let s = Signer::new(vec![7; 32], None);
        let key = s.calendar_key("alice", "$2b$hash", "primary");
        assert!(s.calendar_key_matches("alice", "$2b$hash", "primary", &key));
        assert!(!s.calendar_key_matches("bob", "$2b$hash", "primary", &key));
        assert!(!s.calendar_key_matches("alice", "$2b$other", "primary", &key));
        assert!(!s.calendar_key_matches("alice", "$2b$hash", "secondary", &key));
        assert!(!s.calendar_key_matches("alice", "$2b$hash", "primary", ""));
        assert!(!s.calendar_key_matches("alice", "$2b$hash", "primary", "%%%"));
        let other = Signer::new(vec![8; 32], None);
        assert!(!other.calendar_key_matches("alice", "$2b$hash", "primary", &key));
    }

    /// Incident #12's acknowledgement notice.
    fn ack_notice() -> DeliveryJob {
        let n = crate::payload::parse(crate::payload::tests_example().as_bytes()).expect("valid");
        DeliveryJob {
            id: 1,
            destination: "a".into(),
            state: crate::model::record::DeliveryState::Pending,
            attempts: 0,
            created_at_ms: 0,
            next_attempt_at_ms: 0,
            event: n.events[0].clone(),
            firing: None,
            incident: Some(12),
            step: -1,
            notice: Some(
                "Incident #12 acknowledged by alice via API from 10.0.0.7 at 2026-01-01T00:00:00Z"
                    .into(),
            ),
            storm: None,
            alerts: Vec::new(),
            provider_ref: None,
        }
    }

    #[test]
    fn budget_summaries_are_notices_whatever_the_event() {
        let job = ack_notice();
        // A budget summary hangs on a held message's event, firing or resolved, with no
        // incident: a notice, whatever that event's status.
        for status in [
            crate::payload::Status::Firing,
            crate::payload::Status::Resolved,
        ] {
            let mut summary = DeliveryJob {
                incident: None,
                notice: Some("Budget: sms reached its budget (3 per 1h)\nHeld back: #4".into()),
                ..job.clone()
            };
            summary.event.status = status;
            let mut msg = Message::new(&summary.event);
            crate::render::storm::shape(&mut msg, &summary);
            decorate(&mut msg, &summary, None, 0);
            assert_eq!(msg.badge(), "BUDGET");
            assert_eq!(msg.tone(), crate::render::Tone::Notice);
            assert!(!msg.is_firing());
        }
    }

    #[test]
    fn notices_get_their_own_badge_and_title() {
        let job = ack_notice();
        let mut msg = Message::new(&job.event);
        assert_eq!(msg.badge(), "FIRING CRITICAL");
        decorate(&mut msg, &job, None, 0);
        assert_eq!(msg.badge(), "ACKNOWLEDGED");
        assert_eq!(msg.tone(), crate::render::Tone::Notice);
        assert!(!msg.is_firing());
        assert_eq!(
            msg.title,
            "[ACKNOWLEDGED] PiHot on pi-17:9831 (incident #12)"
        );
        assert!(
            msg.plain_body()
                .starts_with("Incident #12 acknowledged by alice")
        );
        // Every channel's rendering leads with the notice, not the alert's state.
        let sms = crate::channels::twilio::text(&msg);
        assert!(
            sms.starts_with(
                "ACKNOWLEDGED - PiHot on pi-17:9831 (incident #12) - Incident #12 acknowledged"
            ),
            "{sms}"
        );
        assert!(!sms.contains("FIRING"), "{sms}");
        let slack = crate::channels::slack::payload(&msg, true);
        assert_eq!(
            slack["text"],
            "ACKNOWLEDGED: PiHot on pi-17:9831 (incident #12)"
        );
        assert!(slack.to_string().contains(":information_source:"));
        assert!(crate::channels::telegram::text(&msg, true).starts_with("ℹ️"));
        assert_eq!(
            crate::channels::discord::payload(&msg, true)["embeds"][0]["color"],
            0x0034_98DB
        );
        assert!(
            crate::channels::teams::card(&msg, true)
                .to_string()
                .contains("\"Accent\"")
        );
        let ntfy =
            crate::channels::ntfy::request("t", &crate::config::NtfyAuth::None, None, None, &msg);
        let body = ntfy.json_body().expect("json");
        assert_eq!(
            (body["priority"].as_u64(), body["tags"][0].as_str()),
            (Some(2), Some("information_source"))
        );
    }

    #[test]
    fn a_badge_is_the_notice_verb() {
        assert_eq!(
            badge(
                "Incident #3 ",
                "Incident #3 un-acknowledged by ack timeout (4h) at x",
                &[]
            ),
            "UN-ACKNOWLEDGED"
        );
        assert_eq!(
            badge(
                "Incident #3 ",
                "Incident #3 resolved by re-sync (Alertmanager no longer has this alert) at x",
                &[]
            ),
            "RESOLVED"
        );
        assert_eq!(
            badge("Incident #3 ", "40 devices at site=wh-2", &[]),
            "NOTICE"
        );
        let storm_end = ['\n', ':'];
        assert_eq!(
            badge(
                "Storm #3 ",
                "Storm #3 resolved: all 40 incidents",
                &storm_end
            ),
            "RESOLVED"
        );
        assert_eq!(
            badge(
                "Storm #3 ",
                "Storm #3 acknowledged\n40 incidents",
                &storm_end
            ),
            "ACKNOWLEDGED"
        );
    }

    #[test]
    fn tokens_verify_and_reject_forgery_and_expiry() {
        let s = Signer::new(vec![7; 32], Some("https://relay.example".into()));
        let t = s.token(42, 1_000);
        assert_eq!(s.verify(&t, 1_000), Ok(42));
        // Another incident id with the same tag.
        let forged = t.replacen("42.", "43.", 1);
        assert_eq!(s.verify(&forged, 1_000), Err(TokenError::Forged));
        // A later expiry with the same tag.
        let expires = 1_000 + TOKEN_TTL.as_secs() as i64;
        let longer = t.replacen(&format!(".{expires}."), &format!(".{}.", expires + 1), 1);
        assert_eq!(s.verify(&longer, 1_000), Err(TokenError::Forged));
        // Another key.
        let other = Signer::new(vec![8; 32], None);
        assert_eq!(other.verify(&t, 1_000), Err(TokenError::Forged));
        assert_eq!(s.verify(&t, expires + 1), Err(TokenError::Expired));
        assert_eq!(s.verify("nope", 0), Err(TokenError::Malformed));
        assert_eq!(s.verify("1.2.", 0), Err(TokenError::Forged));
        assert!(
            s.link(42, 1_000)
                .is_some_and(|l| l.starts_with("https://relay.example/ack/42."))
        );
    }

    #[test]
    fn storm_tokens_are_not_incident_tokens() {
        let s = Signer::new(vec![7; 32], Some("https://relay.example".into()));
        let link = s.storm_link(3, 1_000).expect("link");
        let token = link
            .strip_prefix("https://relay.example/ack/")
            .expect("path");
        assert!(token.starts_with("s3."));
        assert_eq!(s.verify_storm(token, 1_000), Ok(3));
        assert_eq!(s.verify(token, 1_000), Err(TokenError::Malformed));
        // The incident token of the same number does not acknowledge the storm, nor a
        // prefixed copy of it (the MAC covers the prefix).
        let incident = s.token(3, 1_000);
        assert_eq!(s.verify_storm(&incident, 1_000), Err(TokenError::Malformed));
        assert_eq!(
            s.verify_storm(&format!("s{incident}"), 1_000),
            Err(TokenError::Forged)
        );
    }
}
