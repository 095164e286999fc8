//! Integration tests: the real `pi-exporter` binary on fixture trees, scraped over loopback.

mod bad_input;
mod doctor;
mod firmware;
mod golden;
mod history;
mod hostile;
mod logging;
mod rtc;
mod serving;
mod support;
mod ups;
