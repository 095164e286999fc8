//! What a commit tells the other instances (`LISTEN alert_relay`, sent with the commit by
//! `pg_notify`): the deliveries it created, so the leader's engine queues them at once
//! wherever the webhook or the acknowledgement arrived, and that incidents changed, so its
//! escalator looks again (a maintenance window ended by hand released incidents too), and the dead-man's heartbeats any instance took. A notification is lost when no session listens at the time; the
//! leader reloads the pending deliveries whenever it starts listening.

use crate::model::maintenance::MaintenanceWritten;
use crate::model::record::{Heartbeat, Written};
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
    /// A heartbeat for the dead-man's switch.
    Heartbeat(Heartbeat),
    /// A maintenance window was created or ended: read the windows again, then the escalator
    /// looks again (for whatever else the commit changed too).
    Maintenance,
}

/// The payloads a batch's results call for: one line per delivery (`d<TAB>id<TAB>created
/// <TAB>destination`), per heartbeat (`h<TAB>at<TAB>external URL<TAB>what`), then `m` (a
/// maintenance window changed) and `w`, split below the size limit.
pub fn payloads(results: &[Result<Written, StoreError>]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut wake = false;
    let mut maintenance = false;
    for written in results.iter().flatten() {
        maintenance |= matches!(
            written,
            Written::Maintenance(
                MaintenanceWritten::Created(_) | MaintenanceWritten::Ended { found: true, .. }
            )
        );
        for (dest, id, created) in written.deliveries() {
            lines.push(format!("d\t{id}\t{created}\t{dest}"));
            wake = true;
        }
        if let Written::Heartbeat(h) = written {
            lines.push(heartbeat_line(h));
        }
        wake |= matches!(written, Written::Ingested(o) if !o.opened.is_empty())
            || matches!(
                written,
                Written::Maintenance(MaintenanceWritten::Ended { released, .. })
                    if !released.is_empty()
            )
            || matches!(
                written,
                Written::Transitioned(_) | Written::TransitionedAll(_)
            );
    }
    // `m` wakes the escalator once the windows are read again: a wake before that would
    // decide on the old ones.
    if maintenance {
        lines.push("m".to_owned());
    } else if wake {
        lines.push("w".to_owned());
    }
    if lines.is_empty() {
        return Vec::new();
    }
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

/// A heartbeat's line: its texts cut short (500 characters, at most 2000 bytes each, so a
/// line fits a payload), without the tabs and line breaks that separate fields and lines.
fn heartbeat_line(h: &Heartbeat) -> String {
    let field = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(500)
            .collect()
    };
    format!(
        "h\t{}\t{}\t{}",
        h.at_ms,
        field(&h.external_url),
        field(&h.what)
    )
}

/// The messages of a payload; lines it does not know are skipped (a newer relay's).
pub fn parse(payload: &str) -> Vec<Notice> {
    payload
        .lines()
        .filter_map(|line| {
            let mut f = line.splitn(4, '\t');
            match (f.next()?, f.next(), f.next(), f.next()) {
                ("w", None, None, None) => Some(Notice::Wake),
                ("m", None, None, None) => Some(Notice::Maintenance),
                ("h", Some(at), Some(url), Some(what)) => Some(Notice::Heartbeat(Heartbeat {
                    at_ms: at.parse().ok()?,
                    external_url: url.to_owned(),
                    what: what.to_owned(),
                })),
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
    fn a_heartbeat_alone_is_told_without_a_wake_and_its_texts_stay_on_their_line() {
        let h = Heartbeat {
            at_ms: 1_700_000_000_123,
            what: "Watchdog\tfrom\nam-1".into(),
            external_url: "http://am:9093".repeat(200),
        };
        let payloads = payloads(&[Ok(Written::Heartbeat(h))]);
        assert_eq!(payloads.len(), 1);
        assert!(payloads[0].len() <= PAYLOAD_MAX);
        let [Notice::Heartbeat(got)] = &parse(&payloads[0])[..] else {
            panic!("{payloads:?}");
        };
        assert_eq!(got.at_ms, 1_700_000_000_123);
        assert_eq!(got.what, "Watchdog from am-1");
        assert_eq!(got.external_url.chars().count(), 500);
        assert!(got.external_url.starts_with("http://am:9093http://am:9093"));
    }

    #[test]
    fn a_retried_dead_letter_is_told_to_the_leader_to_queue() {
        use crate::model::console::ConsoleWritten;
        let retried = Written::Console(ConsoleWritten::Retried(Some(("ops".into(), 12, 34))));
        let told = payloads(&[Ok(retried)]);
        assert_eq!(told.len(), 1);
        assert!(
            parse(&told[0]).contains(&Notice::Delivery("ops".into(), 12, 34)),
            "{told:?}"
        );
        // Not retried, a session: nothing to tell.
        let quiet = [
            Ok(Written::Console(ConsoleWritten::Retried(None))),
            Ok(Written::Console(ConsoleWritten::Done)),
        ];
        assert!(payloads(&quiet).is_empty());
    }

    #[test]
    fn a_maintenance_window_created_or_ended_is_told_once() {
        let created = payloads(&[Ok(Written::Maintenance(MaintenanceWritten::Created(3)))]);
        assert_eq!(
            created.iter().flat_map(|p| parse(p)).collect::<Vec<_>>(),
            [Notice::Maintenance]
        );
        let ended = payloads(&[Ok(Written::Maintenance(MaintenanceWritten::Ended {
            found: true,
            released: vec![7],
        }))]);
        assert_eq!(
            ended.iter().flat_map(|p| parse(p)).collect::<Vec<_>>(),
            [Notice::Maintenance]
        );
        let nothing = payloads(&[Ok(Written::Maintenance(MaintenanceWritten::Ended {
            found: false,
            released: Vec::new(),
        }))]);
        assert!(nothing.is_empty());
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
