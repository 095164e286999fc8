//! The wording of budget summaries (see `model::budget`).

use std::time::Duration;

use crate::model::storm::BudgetAt;
use crate::time::humanize;

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
