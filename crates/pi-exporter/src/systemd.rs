//! The exporter's systemd self-check: `WATCHDOG=1` only while every accept loop runs and a
//! full scrape renders in time (the ping loop and the notify protocol are `serving::systemd`'s).

use std::time::Duration;

use serving::Serving;

use crate::http::App;

/// One self-check: every accept loop is alive and a full scrape renders within `budget`.
pub async fn self_check(app: &App, serving: &Serving, budget: Duration) -> Result<(), String> {
    if !serving.accepting() {
        return Err("an accept loop has stopped".into());
    }
    match tokio::time::timeout(budget, app.render(Some(budget / 2), false)).await {
        Ok(body) if body.contains("rpi_exporter_build_info") => Ok(()),
        Ok(_) => Err("scrape rendered without the exporter's own metrics".into()),
        Err(_) => Err(format!("scrape did not render within {budget:?}")),
    }
}
