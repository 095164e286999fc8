//! Route matchers pasted from `alertmanager.yml` (Alertmanager's configuration reference and
//! its matcher examples), with `receiver:` renamed `policy:` and the grouping keys the relay
//! does not have left out, checked for where label sets go. Every form: a block list of
//! matchers with and without spaces, a flow list, double-quoted entries with escaped quotes
//! and commas, one PromQL-like string with braces and a trailing comma, a YAML block scalar,
//! and the older `match:` map beside them.

use std::path::Path;

use super::routes;
use crate::config::{Config, MapSecrets, parse};
use crate::payload::Labels;

const CONFIG: &str = r#"
storage: { sqlite: x }
channels:
  ops: { type: webhook, url: "http://ops" }
policies:
  database-pager: { steps: [ { notify: [ops] } ] }
  frontend-pager: { steps: [ { notify: [ops] } ] }
  dings: { steps: [ { notify: [ops] } ] }
  commas: { steps: [ { notify: [ops] } ] }
  watchdog: { steps: [ { notify: [ops] } ] }
  quotes: { steps: [ { notify: [ops] } ] }
  legacy: { steps: [ { notify: [ops] } ] }
  default-receiver: { steps: [ { notify: [ops] } ] }
routes:
  # All alerts with service=mysql or service=cassandra
  # are dispatched to the database pager.
  - policy: 'database-pager'
    matchers:
    - service=~"mysql|cassandra"
  # All alerts with the team=frontend label match this sub-route.
  - policy: 'frontend-pager'
    matchers:
    - team="frontend"
  - policy: dings
    matchers:
      - foo = bar
      - dings != bums
  - policy: commas
    matchers: [ "foo = \"bar,baz\"", "dings != bums" ]
  - policy: watchdog
    matchers: [ '{alertname="Watchdog", severity=~"warning|critical",}' ]
  - policy: quotes
    matchers:
      - |
          {quote=~"She said: \"Hi, all!( How're you…)?\""}
  - policy: legacy
    match:
      service: files
  - policy: default-receiver
"#;

fn config() -> Config {
    match parse(CONFIG, Path::new("/"), &MapSecrets::default()) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

/// The policy of the first route `labels` take.
fn goes_to(c: &Config, labels: &[(&str, &str)]) -> String {
    let labels: Labels = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let r = routes(c, &labels, None).expect("no pinned route");
    r.first().map_or("nowhere".to_owned(), |r| r.policy.clone())
}

#[test]
fn labels_go_where_alertmanager_would_send_them() {
    let c = config();
    for (labels, policy) in [
        (&[("service", "mysql")][..], "database-pager"),
        (&[("service", "cassandra")], "database-pager"),
        // Anchored as in Alertmanager: `mysql2` is no match for `mysql|cassandra`.
        (&[("service", "mysql2")], "default-receiver"),
        (
            &[("team", "frontend"), ("service", "web")],
            "frontend-pager",
        ),
        (&[("foo", "bar"), ("dings", "other")], "dings"),
        (&[("foo", "bar"), ("dings", "bums")], "default-receiver"),
        (&[("foo", "bar,baz")], "commas"),
        (
            &[("alertname", "Watchdog"), ("severity", "critical")],
            "watchdog",
        ),
        (
            &[("alertname", "Watchdog"), ("severity", "none")],
            "default-receiver",
        ),
        (&[("quote", "She said: \"Hi, all!\"")], "quotes"),
        (&[("quote", "She said: \"Hi, all! How're you…\"")], "quotes"),
        (&[("quote", "She said: Hi")], "default-receiver"),
        (&[("service", "files")], "legacy"),
        (&[], "default-receiver"),
    ] {
        assert_eq!(goes_to(&c, labels), policy, "{labels:?}");
    }
}

#[test]
fn the_pasted_matchers_read_back_as_written() {
    let c = config();
    let shown: Vec<String> = c
        .routes
        .iter()
        .map(|r| {
            let m: Vec<String> = r.matchers.iter().map(ToString::to_string).collect();
            m.join(", ")
        })
        .collect();
    assert_eq!(
        shown,
        [
            r#"service=~"mysql|cassandra""#,
            r#"team="frontend""#,
            r#"foo="bar", dings!="bums""#,
            r#"foo="bar,baz", dings!="bums""#,
            r#"alertname="Watchdog", severity=~"warning|critical""#,
            r#"quote=~"She said: \"Hi, all!( How're you…)?\"""#,
            r#"service="files""#,
            "",
        ]
    );
}
