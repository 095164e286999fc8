//! An ack link in a real browser (headless Chromium through chromedriver): the page a phone
//! opens from an SMS shows the incident, its button acknowledges it. Screenshots at phone and
//! desktop widths are written as test artefacts (`support::browser::screenshot_dir`).

use std::time::Duration;

use serde_json::Value;

use crate::support::browser::Browser;
use crate::support::{FAST_DELIVERY, Fake, Relay, Reply, tempdir, webhook};

const PUBLIC_URL: &str = "http://relay.invalid";

/// The path of the "Acknowledge #`id`" link in a webhook channel's `message`.
fn ack_path(message: &Value, id: i64) -> String {
    let link = message["links"]
        .as_array()
        .expect("links")
        .iter()
        .find(|l| l["name"] == format!("Acknowledge #{id}"))
        .and_then(|l| l["url"].as_str())
        .unwrap_or_else(|| panic!("no ack link in {message}"));
    link.strip_prefix(PUBLIC_URL)
        .expect("the link starts with public_url")
        .to_owned()
}

#[tokio::test]
async fn an_ack_link_opened_in_a_browser_shows_the_incident_and_its_button_acknowledges_it() {
    let fake = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let config = format!(
        "public_url: {PUBLIC_URL}\nauth: {{ bearer_token: s3cret }}\nstorage: {{ sqlite: relay.db }}\n{FAST_DELIVERY}\
         channels:\n  sms: {{ type: webhook, url: '{u}/sms' }}\n  later: {{ type: webhook, url: '{u}/later' }}\n\
         policies:\n  p:\n    steps: [ {{ notify: [sms] }}, {{ after: 1h, notify: [later] }} ]\n\
         routes: [ {{ policy: p }} ]\n",
        u = fake.url()
    );
    let relay = Relay::start(dir.path(), &config);
    relay
        .fire(webhook(&[("0000000000000b01", "firing")], ""))
        .await;
    let sent = fake.wait_on("/sms", 1, Duration::from_secs(5)).await;
    let link = relay.url(&ack_path(&sent[0].json(), 1));

    // A desktop first: it only looks, so the incident is still open for the phone.
    let desktop = Browser::desktop().await;
    desktop.goto(&link).await;
    desktop
        .wait_for_text("h1", "Incident #1", Duration::from_secs(5))
        .await;
    desktop.screenshot("ack-link").await;
    drop(desktop);

    let phone = Browser::phone().await;
    phone.goto(&link).await;
    assert_eq!(
        phone.text("h1").await,
        "Incident #1",
        "{}",
        phone.text("body").await
    );
    let page = phone.text("body").await;
    assert!(
        page.contains("PiHot: CPU at 85°C on 0000000000000b01"),
        "{page}"
    );
    assert!(page.contains("State: open"), "{page}");
    assert_eq!(phone.text("form button").await, "Acknowledge");
    phone.screenshot("ack-link").await;
    assert_eq!(relay.incident(1).await["state"], "open");

    phone.click("form button").await;
    phone
        .wait_for_text(
            "body",
            "Acknowledged. Pending escalation steps are cancelled.",
            Duration::from_secs(5),
        )
        .await;
    // The form posted to the link itself.
    assert_eq!(phone.url().await, link);
    let shot = phone.screenshot("ack-link-acknowledged").await;
    assert!(
        shot.ends_with("ack-link-acknowledged-390x844.png"),
        "{}",
        shot.display()
    );
    let acked = relay.incident(1).await;
    assert_eq!(acked["state"], "acked", "{acked}");
    assert_eq!(acked["acked_by"], "ack link from 127.0.0.1", "{acked}");

    // Opened again, the link says who acknowledged and offers no button.
    phone.goto(&link).await;
    phone
        .wait_for_text(
            "body",
            "State: acknowledged (acknowledged by ack link from 127.0.0.1)",
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(phone.count("form").await, 0);
}
