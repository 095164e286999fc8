//! Per-destination budgets: `channels.NAME.budget: {max: 10, per: 1h, overflow: [ops-slack]}`
//! allows each destination of the channel (each Twilio number is one) at most `max` messages
//! per fixed window of `per`, measured on the [`RelayClock`](crate::relay_clock::RelayClock)
//! (monotonic, stored: a wall-clock jump neither resets nor extends a window; a restart
//! resumes it). A window starts with the first message after the previous one ended.
//!
//! A message over the budget is not sent there: its delivery is `skipped` with the reason, the
//! metrics count it, and the first one of a window sends one summary to every destination of
//! the `overflow` channels; if more are held back after it, one tally follows when the window
//! ends. A message counts when it is first attempted (a retry does not count again; a crash
//! between counting and sending counts it twice, which only makes the budget stricter).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{ChannelConfig, Config};
use crate::storm::BudgetAt;
use crate::time::humanize;

/// `channels.NAME.budget`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    pub max: u32,
    pub per: Duration,
    /// Channels that hear about held-back messages (validated: exist, have no budget).
    pub overflow: Vec<String>,
}

impl Budget {
    /// Validates `channels.NAME.budget`; an error names the key after `budget`.
    pub fn new(max: u32, per: &str, overflow: &[String]) -> Result<Self, (String, String)> {
        let per = crate::time::parse_duration(per).map_err(|e| (".per".to_owned(), e))?;
        if per.is_zero() || max == 0 {
            return Err((
                String::new(),
                "max must be at least 1 and per above 0".into(),
            ));
        }
        Ok(Budget {
            max,
            per,
            overflow: overflow.to_vec(),
        })
    }
}

/// Every budget's `overflow` names channels that exist and have no budget themselves, so a
/// held-back message is always reported and reports never chain.
pub fn check_overflow(
    channels: &BTreeMap<String, Arc<ChannelConfig>>,
) -> Result<(), (String, String)> {
    for c in channels.values() {
        let Some(b) = &c.budget else { continue };
        let key = format!("channels.{}.budget.overflow", c.name);
        if b.overflow.is_empty() {
            return Err((
                key,
                "names no channel: held-back messages must be reported somewhere".into(),
            ));
        }
        for (j, o) in b.overflow.iter().enumerate() {
            match channels.get(o) {
                None => return Err((format!("{key}[{j}]"), format!("no channel named {o:?}"))),
                Some(oc) if oc.budget.is_some() => {
                    return Err((
                        format!("{key}[{j}]"),
                        format!("{o:?} has a budget itself; overflow channels must not"),
                    ));
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

/// The budget of one destination, if its channel has one.
pub fn of(config: &Config, destination: &crate::config::Destination) -> Option<BudgetAt> {
    let b = destination.channel.budget.as_ref()?;
    let mut overflow: Vec<String> = Vec::new();
    for c in &b.overflow {
        if let Some(ch) = config.channels.get(c) {
            overflow.extend(ch.destinations().into_iter().map(|d| d.id));
        }
    }
    Some(BudgetAt {
        destination: destination.id.clone(),
        max: b.max,
        per_ms: i64::try_from(b.per.as_millis()).unwrap_or(i64::MAX),
        overflow,
        label: format!("{} per {}", b.max, humanize(b.per)),
    })
}

/// Every budgeted destination.
pub fn all(config: &Config) -> Vec<BudgetAt> {
    config
        .destinations()
        .values()
        .filter_map(|d| of(config, d))
        .collect()
}

/// The summary sent when a window's budget is first exhausted.
pub fn exhausted_text(b: &BudgetAt, held_for: &str, left_ms: i64) -> String {
    let left = humanize(Duration::from_millis(u64::try_from(left_ms).unwrap_or(0)));
    format!(
        "Budget: {dest} reached its budget ({label})\n\
         Held back 1 message to {dest} (for {held_for}). Further messages to {dest} are held \
         back until the window ends in {left}; a count follows then if there are any. Check the \
         incidents in the API or the ack pages.",
        dest = b.destination,
        label = b.label,
    )
}

/// The summary sent when a window ends with more messages held back after the first summary.
pub fn tally_text(b: &BudgetAt, held: i64, held_for: &str) -> String {
    format!(
        "Budget: {dest}: {held} messages held back in the last window ({label})\n\
         Held back for {held_for}. {dest} receives messages again.",
        dest = b.destination,
        label = b.label,
    )
}
