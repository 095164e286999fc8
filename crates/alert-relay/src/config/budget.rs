//! Budgets in the configuration: validation across channels and the budgets the store applies.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::config::{ChannelConfig, Config, Destination, Problems};
use crate::model::storm::BudgetAt;
use crate::secret::keys::invalid;
use crate::time::humanize;

/// Every budget's `overflow` names channels that exist and have no budget themselves, so a
/// held-back message is always reported and reports never chain. `declared` are the channel
/// names of the file: one declared but invalid is reported by its own error, not here.
pub(super) fn check_overflow(
    channels: &BTreeMap<String, Arc<ChannelConfig>>,
    declared: &BTreeSet<String>,
    problems: &mut Problems,
) {
    for c in channels.values() {
        let Some(b) = &c.budget else { continue };
        let key = format!("channels.{}.budget.overflow", c.name);
        // A call held back is counted and logged; where to report it is the channel's choice.
        let calls = matches!(c.kind, crate::channels::ChannelKind::TwilioVoice(_));
        if b.overflow.is_empty() && !calls {
            problems.push(invalid(
                key,
                "names no channel: held-back messages must be reported somewhere",
            ));
            continue;
        }
        for (j, o) in b.overflow.iter().enumerate() {
            match channels.get(o) {
                None if declared.contains(o) => {}
                None => problems.push(invalid(
                    format!("{key}[{j}]"),
                    format!("no channel named {o:?}"),
                )),
                Some(oc) if oc.budget.is_some() => problems.push(invalid(
                    format!("{key}[{j}]"),
                    format!("{o:?} has a budget itself; overflow channels must not"),
                )),
                Some(_) => {}
            }
        }
    }
}

impl Config {
    /// The budget of one destination, if its channel has one.
    pub fn budget_of(&self, destination: &Destination) -> Option<BudgetAt> {
        let b = destination.channel.budget.as_ref()?;
        let mut overflow: Vec<String> = Vec::new();
        for c in &b.overflow {
            if let Some(ch) = self.channels.get(c) {
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
    pub fn budgets(&self) -> Vec<BudgetAt> {
        self.destinations()
            .values()
            .filter_map(|d| self.budget_of(d))
            .collect()
    }
}
