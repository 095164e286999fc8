//! `check-config --test LABELS`: where an alert with these labels would go, in the manner of
//! `amtool config routes test`: the first line names the matching routes (amtool prints the
//! receivers), then each route's policy, its steps with their delays and destinations (a
//! rotation resolved to whoever is on call at the instant given), its storm rule, and the
//! budgets and `send_resolved: false` of those destinations. Pure: tested with plain data.

use std::fmt::Write as _;

use jiff::Timestamp;

use super::{matched, step_destinations};
use crate::config::{Config, Until};
use crate::matcher::{Op, parse_set};
use crate::payload::Labels;
use crate::time::humanize;

/// Reads a label set as amtool takes it: `severity=critical,site=lab-1`, or the brace form
/// `{severity="critical", site="lab-1"}`. Only `=`: a label set has values, not patterns.
pub fn parse_labels(text: &str) -> Result<Labels, String> {
    let mut labels = Labels::new();
    for m in parse_set(text)? {
        if m.op != Op::Equal {
            return Err(format!("{m}: a label set takes name=value only"));
        }
        if labels.insert(m.name.clone(), m.value.clone()).is_some() {
            return Err(format!("label {:?} is given twice", m.name));
        }
    }
    Ok(labels)
}

/// What `check-config --test` prints, and whether any route matched (exit status 0 or 1).
pub fn route_test(config: &Config, labels: &Labels, at: Timestamp) -> (String, bool) {
    let mut out = String::new();
    let routes = matched(config, labels, None).unwrap_or_default();
    let shown: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    if routes.is_empty() {
        let _ = writeln!(
            out,
            "no route matches {{{}}}: the alert would be stored and sent nowhere",
            shown.join(", ")
        );
        return (out, false);
    }
    let keys: Vec<&str> = routes.iter().map(|(k, _)| k.as_str()).collect();
    let _ = writeln!(out, "{}", keys.join(","));
    let _ = writeln!(
        out,
        "labels {{{}}} at {} (rotations as of then):",
        shown.join(", "),
        at.strftime("%Y-%m-%dT%H:%M:%SZ")
    );
    for (key, route) in &routes {
        let matchers: Vec<String> = route.matchers.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            out,
            "route {key}: {}{}",
            if matchers.is_empty() {
                "every alert".to_owned()
            } else {
                format!("{{{}}}", matchers.join(", "))
            },
            if route.continue_matching {
                " (continue)"
            } else {
                ""
            }
        );
        describe_policy(config, &route.policy, at, &mut out);
    }
    (out, true)
}

/// One policy under its route: stop condition, steps with delays and destinations, repeat,
/// storm rule, then the budgets and `send_resolved: false` of every destination it reaches.
fn describe_policy(config: &Config, name: &str, at: Timestamp, out: &mut String) {
    let Some(policy) = config.policies.get(name) else {
        let _ = writeln!(out, "  policy {name}: not defined");
        return;
    };
    let until = match policy.until {
        Until::Acknowledged => "acknowledged",
        Until::Resolved => "resolved",
    };
    let ack_timeout = policy
        .ack_timeout
        .map_or(String::new(), |t| format!(", ack timeout {}", humanize(t)));
    let _ = writeln!(out, "  policy {name} (until {until}{ack_timeout})");
    let mut reached: Vec<String> = Vec::new();
    for (i, step) in policy.steps.iter().enumerate() {
        let targets = step_destinations(config, name, i, at);
        let dests: Vec<String> = targets
            .destinations
            .iter()
            .map(|d| match targets.on_call.get(d) {
                Some(who) => format!("{d} [{who}]"),
                None => d.clone(),
            })
            .collect();
        let _ = writeln!(
            out,
            "    step {} after {}: {}",
            i + 1,
            humanize(step.after),
            if dests.is_empty() {
                "nobody".to_owned()
            } else {
                dests.join(", ")
            }
        );
        for d in targets.destinations {
            if !reached.contains(&d) {
                reached.push(d);
            }
        }
    }
    if let Some(r) = policy.repeat {
        let _ = writeln!(
            out,
            "    repeat the last step every {}, {} times",
            humanize(r.every),
            r.times
        );
    }
    match &policy.storm {
        Some(st) => {
            let counted = if st.matchers.is_empty() {
                String::new()
            } else {
                let m: Vec<String> = st.matchers.iter().map(ToString::to_string).collect();
                format!(" of {{{}}}", m.join(", "))
            };
            let _ = writeln!(
                out,
                "    storm: more than {} incidents{counted} within {} by [{}] collapse into summaries",
                st.threshold,
                humanize(st.window),
                st.group_by.join(", ")
            );
        }
        None => {
            let _ = writeln!(out, "    storm: none");
        }
    }
    describe_destinations(config, &reached, out);
}

/// Budgets and `send_resolved: false` of the destinations `reached`.
fn describe_destinations(config: &Config, reached: &[String], out: &mut String) {
    let all = config.destinations();
    for id in reached {
        let Some(d) = all.get(id) else { continue };
        if let Some(b) = config.budget_of(d) {
            let _ = writeln!(
                out,
                "    budget {id}: {} per destination, overflow to {}",
                b.label,
                if b.overflow.is_empty() {
                    "nobody".to_owned()
                } else {
                    b.overflow.join(", ")
                }
            );
        }
        if !d.sends_resolved() {
            let _ = writeln!(out, "    {id}: send_resolved false (no RESOLVED message)");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{MapSecrets, parse};

    const CONFIG: &str = r#"
storage: { sqlite: x }
channels:
  ops: { type: webhook, url: "http://ops" }
  sms:
    type: twilio
    account_sid: AC1
    auth_token: t
    from: "+15005550006"
    to: ["+447700900123", "+447700900124"]
    send_resolved: { "+447700900124": false }
    budget: { max: 3, per: 1h, overflow: [ops] }
  bob-hook: { type: webhook, url: "http://bob", send_resolved: false }
rotations:
  primary:
    time_zone: UTC
    handover: "09:00"
    shift: 1d
    start: 2026-01-05
    people:
      - { name: alice, notify: [sms] }
      - { name: bob, notify: [bob-hook] }
policies:
  page:
    steps: [ { notify: [rotation:primary] }, { after: 10m, notify: [ops] } ]
    repeat: { every: 30m, times: 2 }
    ack_timeout: 1h
    storm: { window: 5m, threshold: 10, group_by: [site] }
  chat:
    steps: [ { notify: [ops] } ]
    until: resolved
    storm: { window: 1m, threshold: 3, matchers: [ alertname = NodeDown ] }
routes:
  - name: critical
    matchers: ['{severity="critical", site=~"lab-.*"}']
    policy: page
    continue: true
  - matchers: ['severity=~"critical|warning"']
    policy: chat
"#;

    fn config() -> Config {
        parse(CONFIG, Path::new("/"), &MapSecrets::default()).expect("valid")
    }

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn labels_in_amtool_and_brace_form() {
        let want = Labels::from([
            ("severity".to_owned(), "critical".to_owned()),
            ("site".to_owned(), "lab-1".to_owned()),
        ]);
        assert_eq!(
            parse_labels("severity=critical,site=lab-1"),
            Ok(want.clone())
        );
        assert_eq!(
            parse_labels(r#"{severity="critical", site="lab-1"}"#),
            Ok(want)
        );
        let e = parse_labels(r#"severity=~"crit.*""#).expect_err("a pattern");
        assert!(e.contains("name=value only"), "{e}");
        let e = parse_labels("a=1,a=2").expect_err("twice");
        assert!(e.contains("twice"), "{e}");
        assert!(parse_labels("a").is_err());
    }

    #[test]
    fn prints_routes_steps_on_call_storms_and_budgets() {
        let c = config();
        let labels = parse_labels("severity=critical,site=lab-1").expect("labels");
        let (text, matched) = route_test(&c, &labels, at("2026-01-05T10:00:00Z"));
        assert!(matched);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "critical,#2", "{text}");
        assert_eq!(
            lines[1],
            "labels {severity=\"critical\", site=\"lab-1\"} at 2026-01-05T10:00:00Z (rotations as of then):"
        );
        assert!(
            text.contains("route critical: {severity=\"critical\", site=~\"lab-.*\"} (continue)"),
            "{text}"
        );
        assert!(
            text.contains("  policy page (until acknowledged, ack timeout 1h)"),
            "{text}"
        );
        assert!(
            text.contains(
                "    step 1 after 0s: sms/+447700900123 [alice (rotation primary)], \
                 sms/+447700900124 [alice (rotation primary)]"
            ),
            "{text}"
        );
        assert!(text.contains("    step 2 after 10m: ops"), "{text}");
        assert!(
            text.contains("    repeat the last step every 30m, 2 times"),
            "{text}"
        );
        assert!(
            text.contains("    storm: more than 10 incidents within 5m by [site]"),
            "{text}"
        );
        assert!(
            text.contains(
                "    budget sms/+447700900123: 3 per 1h per destination, overflow to ops"
            ),
            "{text}"
        );
        assert!(
            text.contains("    sms/+447700900124: send_resolved false"),
            "{text}"
        );
        assert!(!text.contains("sms/+447700900123: send_resolved"), "{text}");
        assert!(
            text.contains("route #2: {severity=~\"critical|warning\"}"),
            "{text}"
        );
        assert!(text.contains("  policy chat (until resolved)"), "{text}");
        assert!(
            text.contains(
                "    storm: more than 3 incidents of {alertname=\"NodeDown\"} within 1m by [] collapse"
            ),
            "{text}"
        );
        // A day later bob is on call.
        let (text, _) = route_test(&c, &labels, at("2026-01-06T10:00:00Z"));
        assert!(
            text.contains("step 1 after 0s: bob-hook [bob (rotation primary)]"),
            "{text}"
        );
        assert!(text.contains("    bob-hook: send_resolved false"), "{text}");
    }

    #[test]
    fn no_route_is_said_and_fails() {
        let c = config();
        let labels = parse_labels("severity=info").expect("labels");
        let (text, matched) = route_test(&c, &labels, at("2026-01-05T10:00:00Z"));
        assert!(!matched);
        assert_eq!(
            text,
            "no route matches {severity=\"info\"}: the alert would be stored and sent nowhere\n"
        );
    }
}
