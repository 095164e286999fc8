//! What a commit tells the other instances (`LISTEN alert_relay`, sent with the commit by
//! `pg_notify`): the deliveries it created, so the leader's engine queues them at once
//! wherever the webhook or the acknowledgement arrived, and that incidents changed, so its
//! escalator looks again. A notification is lost when no session listens at the time; the
//! leader reloads the pending deliveries whenever it starts listening.

use crate::model::record::Written;
use crate::store::StoreError;

/// The channel every instance listens on.
pub const CHANNEL: &str = "alert_relay";

/// Notifications stay below PostgreSQL's 8000-byte payload limit.
const PAYLOAD_MAX: usize = 7900;

/// One message of a notification's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A delivery to queue: destination, id, created at (ms).
    Delivery(String, i64, i64),
    /// Incidents opened or changed: the escalator looks again.
    Wake,
}

/// The payloads a batch's results call for: one line per delivery (`d<TAB>id<TAB>created
/// <TAB>destination`), then `w`, split below the size limit.
pub fn payloads(results: &[Result<Written, StoreError>]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut wake = false;
    for written in results.iter().flatten() {
        for (dest, id, created) in written.deliveries() {
            lines.push(format!("d\t{id}\t{created}\t{dest}"));
        }
        wake |= matches!(written, Written::Ingested(o) if !o.opened.is_empty())
            || matches!(
                written,
                Written::Transitioned(_) | Written::TransitionedAll(_)
            );
    }
    if lines.is_empty() && !wake {
        return Vec::new();
    }
    lines.push("w".to_owned());
    let mut out = vec![String::new()];
    for line in lines {
        let last = out.last_mut().expect("one payload at least");
        if !last.is_empty() && last.len() + 1 + line.len() > PAYLOAD_MAX {
            out.push(line);
        } else {
            if !last.is_empty() {
                last.push('\n');
            }
            last.push_str(&line);
        }
    }
    out
}

/// The messages of a payload; lines it does not know are skipped (a newer relay's).
pub fn parse(payload: &str) -> Vec<Notice> {
    payload
        .lines()
        .filter_map(|line| {
            let mut f = line.splitn(4, '\t');
            match (f.next()?, f.next(), f.next(), f.next()) {
                ("w", None, None, None) => Some(Notice::Wake),
                ("d", Some(id), Some(created), Some(dest)) => Some(Notice::Delivery(
                    dest.to_owned(),
                    id.parse().ok()?,
                    created.parse().ok()?,
                )),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record::IngestOutcome;

    #[test]
    fn deliveries_and_a_wake_round_trip_in_payloads_under_the_limit() {
        let deliveries: Vec<(String, i64, i64)> = (0..500)
            .map(|i| (format!("sms:+4477009{i:05}"), i, 1_700_000_000_000 + i))
            .collect();
        let results = vec![
            Ok(Written::Ingested(IngestOutcome {
                deliveries: deliveries.clone(),
                opened: vec![1],
                ..IngestOutcome::default()
            })),
            Err(StoreError::Stopped),
            Ok(Written::Recorded),
        ];
        let payloads = payloads(&results);
        assert!(payloads.len() > 1, "split: {}", payloads.len());
        assert!(payloads.iter().all(|p| p.len() <= PAYLOAD_MAX));
        let notices: Vec<Notice> = payloads.iter().flat_map(|p| parse(p)).collect();
        let mut want: Vec<Notice> = deliveries
            .into_iter()
            .map(|(d, id, c)| Notice::Delivery(d, id, c))
            .collect();
        want.push(Notice::Wake);
        assert_eq!(notices, want);
    }

    #[test]
    fn nothing_to_tell_is_no_notification_and_unknown_lines_are_skipped() {
        assert!(payloads(&[Ok(Written::Recorded), Ok(Written::Checkpointed)]).is_empty());
        assert_eq!(
            parse("x\tfuture\nd\tnot-a-number\t1\tslack\nd\t7\t8\tops slack\nw"),
            vec![Notice::Delivery("ops slack".into(), 7, 8), Notice::Wake]
        );
    }
}
