//! Acknowledgements that arrive by polling a provider: what the Telegram and Pushover pollers
//! share. Links are signed and checked in `render::ack`.

/// What the acknowledgement pollers (`ack_telegram`, `pushover_receipts`) share.
#[derive(Debug)]
pub struct Pollers {
    pub live: std::sync::Arc<crate::live::Live>,
    pub store: crate::store::Store,
    pub escalator: std::sync::Arc<crate::escalation::Escalator>,
    /// A storm summary's receipt acknowledges the storm.
    pub storms: std::sync::Arc<crate::storm::Storms>,
    pub http: reqwest::Client,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}
