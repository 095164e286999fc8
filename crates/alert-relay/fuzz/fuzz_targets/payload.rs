#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Never panics, whatever the bytes; an accepted payload renders without panicking too.
    if let Ok(n) = alert_relay::payload::parse(data) {
        for e in &n.events {
            let m = alert_relay::render::Message::new(e);
            let _ = m.plain_text();
        }
    }
});
