//! A std thread that runs a round every interval until its handle is dropped: the RTC offset,
//! the UPS reader, the doctor and the under-voltage event counter.
//!
//! A plain thread rather than a tokio task: the rounds are blocking I/O, the exporter's runtime
//! has a single thread that must keep serving HTTP, and a task would need `spawn_blocking`
//! anyway, where a hung bus would hold one of the pool threads the scrapes need. The thread
//! sleeps between rounds and needs no runtime, so it also works in tests.

use std::io;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

/// The running thread; dropping this stops it (after the round in progress).
#[derive(Debug)]
pub(crate) struct Periodic {
    _stop: mpsc::Sender<()>,
}

/// When the first round runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum First {
    Now,
    AfterInterval,
}

/// Starts the thread `name` running `round` (now or after one interval) and then every
/// `interval`.
pub(crate) fn spawn(
    name: &str,
    interval: Duration,
    first: First,
    mut round: impl FnMut() + Send + 'static,
) -> io::Result<Periodic> {
    let (stop, stopped) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            if first == First::Now {
                round();
            }
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                round();
            }
        })?;
    Ok(Periodic { _stop: stop })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_at_once_and_stops_when_dropped() {
        let (tx, rx) = mpsc::channel();
        let worker = spawn("test", Duration::from_secs(3600), First::Now, move || {
            let _ = tx.send(());
        })
        .expect("spawn");
        rx.recv_timeout(Duration::from_secs(5))
            .expect("first round runs at once");
        drop(worker);
        // The thread ends and drops its sender.
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)),
            Err(RecvTimeoutError::Disconnected)
        );
    }

    #[test]
    fn after_interval_waits_for_the_first_round() {
        let (tx, rx) = mpsc::channel();
        let _worker = spawn(
            "test",
            Duration::from_millis(50),
            First::AfterInterval,
            move || {
                let _ = tx.send(std::time::Instant::now());
            },
        )
        .expect("spawn");
        let started = std::time::Instant::now();
        let first = rx.recv_timeout(Duration::from_secs(5)).expect("a round");
        assert!(first.duration_since(started) >= Duration::from_millis(40));
    }
}
