//! Integration tests: the real `alert-relay` binary on loopback, fed webhooks directly and by
//! the real Alertmanager, delivering to loopback fake providers; its pages in headless Chromium.

mod acks;
mod alertmanager;
mod browser_ack;
mod browser_console;
mod chaos;
mod console;
mod crash;
mod delivery;
mod escalation;
mod exposure;
mod forgery;
mod ha;
mod hostile;
mod hostile_network;
mod intake;
mod logging;
mod maintenance;
mod migrate;
mod network_cut;
mod pipeline;
mod providers;
mod redirects;
mod routing_compat;
mod storage;
mod storm;
mod story;
mod support;
mod systemd;
mod tls;
mod voice;
