//! The runtime estimate: the recent discharge rate of the state of charge, by least squares
//! over a window of readings taken while on battery, projected to empty. Any reading not on
//! battery, charging or implausible starts the history afresh, so the estimate is absent while
//! charging and never mixes a charge curve into a discharge rate.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How far back the discharge rate looks.
pub const WINDOW: Duration = Duration::from_secs(600);
/// The history must span at least this long before an estimate is given.
pub const MIN_SPAN: Duration = Duration::from_secs(30);
/// No estimate beyond a week: a flat line is "not discharging measurably", not a runtime.
const MAX_RUNTIME_SECONDS: f64 = 7.0 * 86_400.0;

#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<(Instant, f64)>,
}

impl History {
    /// Records a state of charge (0-1) read while discharging.
    pub fn push(&mut self, now: Instant, charge: f64) {
        self.samples.push_back((now, charge));
        while let Some(&(oldest, _)) = self.samples.front() {
            if now.saturating_duration_since(oldest) > WINDOW {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }

    pub fn clear(&mut self) {
        self.samples.clear();
    }

    /// Seconds until the charge reaches 0 at the recent rate; `None` without enough history or
    /// without a measurable discharge.
    pub fn runtime_seconds(&self) -> Option<f64> {
        let (&(first, _), &(last, charge)) = (self.samples.front()?, self.samples.back()?);
        if last.saturating_duration_since(first) < MIN_SPAN {
            return None;
        }
        let n = self.samples.len() as f64;
        let points: Vec<(f64, f64)> = self
            .samples
            .iter()
            .map(|&(t, c)| (t.saturating_duration_since(first).as_secs_f64(), c))
            .collect();
        let mean_t = points.iter().map(|p| p.0).sum::<f64>() / n;
        let mean_c = points.iter().map(|p| p.1).sum::<f64>() / n;
        let covariance: f64 = points
            .iter()
            .map(|(t, c)| (t - mean_t) * (c - mean_c))
            .sum();
        let variance: f64 = points.iter().map(|(t, _)| (t - mean_t).powi(2)).sum();
        if variance <= 0.0 {
            return None;
        }
        let slope = covariance / variance;
        if slope >= 0.0 {
            return None;
        }
        let runtime = charge / -slope;
        (runtime.is_finite() && runtime <= MAX_RUNTIME_SECONDS).then_some(runtime.max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_from_the_recent_discharge_rate() {
        let start = Instant::now();
        let mut history = History::default();
        // 1 % per minute from 50 %: 45 % left after 5 minutes means 45 minutes.
        for minute in 0..=5u64 {
            let charge = 0.50 - 0.01 * minute as f64;
            history.push(start + Duration::from_secs(60 * minute), charge);
        }
        let runtime = history.runtime_seconds().expect("estimate");
        assert!((runtime - 45.0 * 60.0).abs() < 1e-6, "{runtime}");

        // Too short a history, a flat or rising line: no estimate.
        let mut short = History::default();
        short.push(start, 0.5);
        short.push(start + Duration::from_secs(10), 0.49);
        assert_eq!(short.runtime_seconds(), None);
        let mut flat = History::default();
        flat.push(start, 0.5);
        flat.push(start + Duration::from_secs(60), 0.5);
        assert_eq!(flat.runtime_seconds(), None);
        let mut rising = History::default();
        rising.push(start, 0.5);
        rising.push(start + Duration::from_secs(60), 0.6);
        assert_eq!(rising.runtime_seconds(), None);
        history.clear();
        assert_eq!(history.runtime_seconds(), None);
    }

    #[test]
    fn old_samples_leave_the_window() {
        let start = Instant::now();
        let mut history = History::default();
        // A fast drop long ago, then a slow one: only the slow one counts.
        history.push(start, 0.9);
        history.push(start + Duration::from_secs(60), 0.6);
        let later = start + WINDOW + Duration::from_secs(120);
        history.push(later, 0.50);
        history.push(later + Duration::from_secs(100), 0.49);
        let runtime = history.runtime_seconds().expect("estimate");
        assert!((runtime - 4900.0).abs() < 1e-6, "{runtime}");
    }
}
