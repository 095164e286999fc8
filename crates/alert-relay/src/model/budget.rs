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

use std::time::Duration;

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
