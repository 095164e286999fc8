//! Acknowledgement from Pushover emergency-priority (2) notifications, which alarm the phone
//! every `retry` until someone acknowledges them in the app or `expire` passes. A send returns a
//! `receipt`, stored as the delivery's provider reference (`receipt:…`), so receipts survive a
//! restart. Every [`TICK`] the poller reads the receipts not yet finished and:
//! - cancels (`POST /1/receipts/{r}/cancel.json`) those whose incident is acknowledged or
//!   resolved by another path, so phones stop alarming;
//! - polls the others (`GET /1/receipts/{r}.json?token=`) once per `receipt_poll_interval`
//!   (30 s by default; Pushover allows once per 5 s at most): `acknowledged: 1` acknowledges
//!   the incident as "{user} via Pushover (device {device})", `expired: 1` stops polling.
//!
//! `acknowledged_by` is a Pushover user key, which the configuration treats as a secret: only
//! its first characters are shown ([`short_user`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::ack::Pollers;
use crate::channels::pushover::{
    ReceiptStatus, cancel_request, receipt_status, receipt_url, valid_receipt,
};
use crate::channels::{Request, RequestAuth, RequestBody, Response, execute};
use crate::config::{ChannelKind, Config};
use crate::store::{Action, IncidentState, ReceiptEnd, StoreError, WatchedReceipt, Write};

/// How often the store is looked at (new receipts, incidents acknowledged elsewhere).
pub const TICK: Duration = Duration::from_secs(2);
/// Poll interval for a receipt whose channel no longer says (priority changed on reload).
const DEFAULT_POLL: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Wait before trying a failed cancel again.
const CANCEL_RETRY: Duration = Duration::from_secs(30);
const SOURCE: &str = "pushover";

/// The first characters of a user key: tells group members apart without publishing the key.
pub fn short_user(key: &str) -> String {
    let short: String = key.chars().take(6).collect();
    if short.len() < key.len() {
        format!("{short}…")
    } else {
        short
    }
}

/// The acknowledgement's `by`.
pub fn acked_by(user: &str, device: &str) -> String {
    let device = if device.is_empty() { "unknown" } else { device };
    format!("{} via Pushover (device {device})", short_user(user))
}

/// What to do with one watched receipt now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Cancel,
    Poll,
    Wait,
}

/// When a receipt was last polled (or first seen, or a cancel failed).
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub at: Instant,
    pub cancel_failed: bool,
}

/// Pure decision: cancel when the incident is no longer open (a failed cancel again after
/// [`CANCEL_RETRY`]), poll when `poll` has passed since the last poll (or since the receipt
/// was first seen).
pub fn next(state: IncidentState, since: Duration, cancel_failed: bool, poll: Duration) -> Next {
    if state != IncidentState::Open {
        if cancel_failed && since < CANCEL_RETRY {
            Next::Wait
        } else {
            Next::Cancel
        }
    } else if since >= poll {
        Next::Poll
    } else {
        Next::Wait
    }
}

/// The channel's app token, API base and poll interval.
fn channel_of<'c>(
    config: &'c Config,
    destination: &str,
) -> Option<(&'c str, Option<&'c str>, Duration)> {
    let ch = config.channels.get(destination)?;
    let ChannelKind::Pushover {
        token, emergency, ..
    } = &ch.kind
    else {
        return None;
    };
    Some((
        token.expose(),
        ch.api_url.as_deref(),
        emergency.map_or(DEFAULT_POLL, |e| e.poll),
    ))
}

/// Runs until aborted.
pub async fn run(p: Arc<Pollers>) {
    let mut last: HashMap<String, Seen> = HashMap::new();
    loop {
        let any = p
            .live
            .config()
            .channels
            .values()
            .any(|c| matches!(c.kind, ChannelKind::Pushover { .. }));
        if any && let Err(e) = pass(&p, &mut last).await {
            tracing::warn!("pushover receipts: {e}");
        }
        tokio::time::sleep(TICK).await;
    }
}

/// One look at every unfinished receipt.
pub async fn pass(p: &Pollers, last: &mut HashMap<String, Seen>) -> Result<(), StoreError> {
    let watched = p.store.read(|b| b.watched_receipts()).await?;
    last.retain(|r, _| watched.iter().any(|w| &w.receipt == r));
    let config = p.live.config();
    for w in watched {
        if !valid_receipt(&w.receipt) {
            finish(p, &w, ReceiptEnd::Gone).await?;
            continue;
        }
        let Some((token, api, poll)) = channel_of(&config, &w.destination) else {
            // Kept: the channel may come back with a reload.
            continue;
        };
        let seen = *last.entry(w.receipt.clone()).or_insert_with(|| Seen {
            at: Instant::now(),
            cancel_failed: false,
        });
        match next(
            w.incident_state,
            seen.at.elapsed(),
            seen.cancel_failed,
            poll,
        ) {
            Next::Wait => {}
            Next::Cancel => {
                let resp = execute(
                    &p.http,
                    REQUEST_TIMEOUT,
                    cancel_request(api, &w.receipt, token),
                )
                .await;
                match resp {
                    // 400/404: Pushover no longer knows it (expired, or acknowledged
                    // meanwhile). 401/403 (a revoked or wrong token) leave the phone alarming:
                    // tried again, like a network error.
                    Ok(r) if matches!(r.status, 200 | 400 | 404) => {
                        if r.status != 200 {
                            tracing::debug!(receipt = %w.receipt, status = r.status, "cancel refused");
                        }
                        finish(p, &w, ReceiptEnd::Cancelled).await?;
                        tracing::info!(
                            incident = w.incident,
                            "cancelled the Pushover emergency retries"
                        );
                    }
                    other => {
                        last.insert(
                            w.receipt.clone(),
                            Seen {
                                at: Instant::now(),
                                cancel_failed: true,
                            },
                        );
                        p.metrics.ack_poll(SOURCE, failure(&other), true);
                        tracing::warn!(
                            incident = w.incident,
                            "cannot cancel a Pushover receipt yet: {}",
                            describe(&other)
                        );
                    }
                }
            }
            Next::Poll => {
                last.insert(
                    w.receipt.clone(),
                    Seen {
                        at: Instant::now(),
                        cancel_failed: false,
                    },
                );
                let resp = execute(
                    &p.http,
                    REQUEST_TIMEOUT,
                    get(receipt_url(api, &w.receipt, token)),
                )
                .await;
                let status = match &resp {
                    Ok(r) if r.status == 200 => r.json().as_ref().and_then(receipt_status),
                    _ => None,
                };
                match status {
                    Some(ReceiptStatus::Waiting) => {}
                    Some(ReceiptStatus::Acknowledged { by, device }) => {
                        let by = acked_by(&by, &device);
                        match (w.incident, w.storm) {
                            (Some(id), _) => {
                                let t = p.escalator.transition(id, Action::Ack, by).await?;
                                tracing::info!(incident = id, ?t, "acknowledged in Pushover");
                            }
                            (None, Some(storm)) => {
                                let t = p.storms.ack(storm, by).await?;
                                tracing::info!(storm, ?t, "storm acknowledged in Pushover");
                            }
                            (None, None) => {}
                        }
                        finish(p, &w, ReceiptEnd::Acked).await?;
                    }
                    Some(ReceiptStatus::Expired) => finish(p, &w, ReceiptEnd::Expired).await?,
                    None => match &resp {
                        // Unknown receipt (older than a week, or never valid): stop. A 401/403
                        // (the token) says nothing about the receipt: polled again.
                        Ok(r) if matches!(r.status, 400 | 404) => {
                            tracing::warn!(receipt = %w.receipt, status = r.status, "Pushover does not know this receipt; no longer polled");
                            finish(p, &w, ReceiptEnd::Gone).await?;
                        }
                        other => {
                            p.metrics.ack_poll(SOURCE, failure(other), true);
                            tracing::warn!(
                                incident = w.incident,
                                "Pushover receipt poll failed: {}",
                                describe(other)
                            );
                        }
                    },
                }
            }
        }
    }
    Ok(())
}

fn get(url: String) -> Request {
    Request {
        method: http::Method::GET,
        url,
        headers: Vec::new(),
        body: RequestBody::Bytes(Vec::new()),
        auth: RequestAuth::None,
    }
}

fn failure(r: &Result<Response, crate::channels::Outcome>) -> &'static str {
    match r {
        Ok(r) if r.status == 429 => "rate_limited",
        Ok(r) if r.status >= 500 => "server_error",
        Ok(_) => "bad_response",
        Err(_) => "network",
    }
}

fn describe(r: &Result<Response, crate::channels::Outcome>) -> String {
    match r {
        Ok(r) => format!("HTTP {}: {}", r.status, r.snippet()),
        Err(o) => format!("{o:?}"),
    }
}

/// Records that a receipt needs no more polling; counted once it is stored.
async fn finish(p: &Pollers, w: &WatchedReceipt, end: ReceiptEnd) -> Result<(), StoreError> {
    p.store
        .write(Write::FinishReceipt {
            receipt: w.receipt.clone(),
            end,
        })
        .await?;
    p.metrics.ack_poll(SOURCE, end.as_str(), false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_and_when() {
        assert_eq!(
            acked_by("uQiRzpo4DXghDmr9QzzfQu27cmVRsG", "iphone"),
            "uQiRzp… via Pushover (device iphone)"
        );
        assert_eq!(acked_by("abc", ""), "abc via Pushover (device unknown)");
        let s = Duration::from_secs;
        assert_eq!(next(IncidentState::Acked, s(0), false, s(30)), Next::Cancel);
        assert_eq!(
            next(IncidentState::Resolved, s(99), false, s(30)),
            Next::Cancel
        );
        assert_eq!(next(IncidentState::Acked, s(10), true, s(30)), Next::Wait);
        assert_eq!(next(IncidentState::Acked, s(30), true, s(30)), Next::Cancel);
        assert_eq!(next(IncidentState::Open, s(29), false, s(30)), Next::Wait);
        assert_eq!(next(IncidentState::Open, s(30), false, s(30)), Next::Poll);
    }
}
