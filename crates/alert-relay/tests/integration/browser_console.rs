//! The on-call console in a real headless Chromium, at phone and desktop sizes: sign in, watch
//! an incident arrive without reloading, open its timeline, acknowledge it and see the
//! escalation stop; a maintenance window made in the form holds back a matching alert while a
//! non-matching one pages; the on-call page agrees with the rotation's definition. Every page
//! is photographed at both sizes (the images in docs/console.md).

use std::time::Duration;

use jiff::civil;
use jiff::tz::TimeZone;

use crate::support::browser::Browser;
use crate::support::{FAST_DELIVERY, Fake, Relay, Reply, tempdir, webhook};

const PASSWORD: &str = "on call tonight";
const PEOPLE: [&str; 3] = ["alice", "bob", "carol"];

fn config(hook: &Fake) -> String {
    let hash = bcrypt::hash(PASSWORD, 4).expect("hash");
    format!(
        "auth: {{ bearer_token: s3cret }}\nstorage: {{ sqlite: relay.db }}\n{FAST_DELIVERY}\
         channels:\n  ops: {{ type: webhook, url: '{}/ops' }}\n  boss: {{ type: webhook, url: '{}/boss' }}\n\
         policies:\n  p: {{ steps: [ {{ notify: [ops] }}, {{ after: 15s, notify: [boss] }} ] }}\n\
         routes: [ {{ policy: p }} ]\n\
         rotations:\n  primary: {{ time_zone: America/New_York, handover: '09:00', shift: 1d, start: '2026-01-05', \
         people: [ {{ name: alice, notify: [ops] }}, {{ name: bob, notify: [ops] }}, {{ name: carol, notify: [ops] }} ] }}\n\
         console:\n  users:\n    alice: {{ password_hash: '{hash}', role: responder }}\n",
        hook.url(),
        hook.url()
    )
}

/// Who the rotation's definition puts on call now: daily shifts from 2026-01-05 09:00 New York
/// time, in the order listed.
fn on_call_by_definition() -> &'static str {
    let tz = TimeZone::get("America/New_York").expect("tz");
    let now = jiff::Timestamp::now().to_zoned(tz);
    let first = civil::date(2026, 1, 5).at(9, 0, 0, 0);
    let local = now.datetime();
    let mut days = (local.date() - first.date()).get_days();
    if local.time() < first.time() {
        days -= 1;
    }
    PEOPLE[usize::try_from(days.rem_euclid(3)).expect("index")]
}

/// What the page lacks for a screen reader or a keyboard: form fields without a label,
/// buttons and links without a name, not exactly one `h1`, no language; then a screenshot.
async fn check_and_photograph(b: &Browser, name: &str) {
    let problems = b
        .execute(
            r#"const p = [];
            if (!document.documentElement.lang) p.push("no lang on <html>");
            const h1 = document.querySelectorAll("h1").length;
            if (h1 !== 1) p.push(h1 + " h1 elements");
            for (const f of document.querySelectorAll("input:not([type=hidden]), select, textarea"))
              if (!f.labels || f.labels.length === 0) p.push("no label: " + (f.id || f.name));
            for (const e of document.querySelectorAll("button, a[href]"))
              if (!e.textContent.trim() && !e.getAttribute("aria-label")) p.push("no name: " + e.outerHTML);
            return p;"#,
            vec![],
        )
        .await;
    assert_eq!(
        problems,
        serde_json::json!([]),
        "{name}: accessibility problems"
    );
    b.screenshot(name).await;
}

async fn sign_in(b: &Browser, relay: &Relay) {
    b.goto(&relay.url("/ui/")).await;
    b.wait_for("#user", Duration::from_secs(5)).await;
    check_and_photograph(b, "login").await;
    b.fill("#user", "alice").await;
    b.fill("#password", PASSWORD).await;
    b.click("form.login button[type=submit]").await;
    b.wait_for_text("h1", "Incidents", Duration::from_secs(10))
        .await;
}

async fn post_alert(relay: &Relay, fingerprint: &str, site: &str) {
    let body = webhook(&[(fingerprint, "firing")], "")
        .replace("\"site\":\"wh-2\"", &format!("\"site\":\"{site}\""))
        .replace("PiHot\\\"}", &format!("PiHot\\\",site=\\\"{site}\\\"}}"));
    let r = crate::support::client()
        .post(relay.url("/webhook"))
        .bearer_auth("s3cret")
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
}

async fn scenario(b: Browser) {
    let hook = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&hook));
    sign_in(&b, &relay).await;
    b.wait_for_text(
        "#incident-list",
        "No incidents match",
        Duration::from_secs(5),
    )
    .await;

    // An incident created by a webhook appears without a reload.
    let posted = std::time::Instant::now();
    post_alert(&relay, "pi17", "wh-2").await;
    b.wait_for_text("#incident-list .incident", "PiHot", Duration::from_secs(15))
        .await;
    check_and_photograph(&b, "incidents").await;
    b.click("#incident-list .incident a.title").await;
    b.wait_for_text("#timeline", "Step 1 sent to ops", Duration::from_secs(10))
        .await;
    check_and_photograph(&b, "incident").await;

    // Acknowledge; the escalation to `boss` (due 15 s after opening) never comes.
    b.click(".actions form[action$='/ack'] button").await;
    b.wait_for_text(".notice", "Acknowledged", Duration::from_secs(10))
        .await;
    assert!(
        posted.elapsed() < Duration::from_secs(14),
        "too slow to show the ack in time"
    );
    b.wait_for_text(
        "#timeline",
        "Acknowledged by alice (console)",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(b.text("#incident-state").await, "acknowledged");
    tokio::time::sleep(Duration::from_secs(17).saturating_sub(posted.elapsed())).await;
    assert!(
        hook.received_on("/boss").is_empty(),
        "escalated after the ack"
    );
    check_and_photograph(&b, "incident-acknowledged").await;

    // A maintenance window for site depot-3 from the form.
    b.goto(&relay.url("/ui/maintenance")).await;
    b.fill("#w-matchers", "{site=\"depot-3\"}").await;
    b.fill("#w-duration", "2h").await;
    b.fill("#w-reason", "Replacing the switch in depot 3").await;
    b.click("#new-window button[type=submit]").await;
    b.wait_for_text(
        ".notice",
        "Maintenance window created",
        Duration::from_secs(10),
    )
    .await;
    b.wait_for_text(".window", "Replacing the switch", Duration::from_secs(5))
        .await;
    let ops_before = hook.received_on("/ops").len();
    post_alert(&relay, "pi40", "depot-3").await;
    post_alert(&relay, "pi41", "wh-9").await;
    hook.wait_on("/ops", ops_before + 1, Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ops: Vec<String> = (hook.received_on("/ops").iter())
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert_eq!(
        ops.len(),
        ops_before + 1,
        "one page: the alert outside the window"
    );
    assert!(ops.last().is_some_and(|m| m.contains("pi41")), "{ops:?}");
    assert!(
        !ops.iter().any(|m| m.contains("pi40")),
        "the window's alert paged: {ops:?}"
    );
    b.goto(&relay.url("/ui/maintenance")).await;
    b.wait_for_text(".window", "1 alert held back", Duration::from_secs(5))
        .await;
    check_and_photograph(&b, "maintenance").await;
    b.goto(&relay.url("/ui/?state=all")).await;
    b.wait_for_text("#incident-list", "in maintenance", Duration::from_secs(5))
        .await;

    // On call: the page says what the rotation's definition says.
    b.goto(&relay.url("/ui/oncall")).await;
    let now = b.text(".rotation .now strong").await;
    assert_eq!(now, on_call_by_definition());
    assert!(
        b.text(".rotation caption")
            .await
            .contains("America/New_York")
    );
    check_and_photograph(&b, "oncall").await;
    b.goto(&relay.url("/ui/deliveries")).await;
    b.wait_for_text("table.health", "ops", Duration::from_secs(5))
        .await;
    check_and_photograph(&b, "deliveries").await;
}

#[tokio::test]
async fn the_console_on_a_phone() {
    scenario(Browser::phone().await).await;
}

#[tokio::test]
async fn the_console_on_a_desktop() {
    scenario(Browser::desktop().await).await;
}
