//! Which destinations an alert goes to: the first route whose matchers all match its labels
//! (more when a route says `continue: true`), that route's policy, the policy's first step.
//! Pure: rotations are resolved at the instant the caller passes.

#[cfg(test)]
mod alertmanager_snippets;
pub mod route_test;

use std::collections::BTreeMap;

use jiff::Timestamp;

use crate::config::{Config, ROTATION_PREFIX, Route};
use crate::payload::Labels;
use crate::store::RouteRef;

/// Why a pinned route (`POST /webhook/{name}`) cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no route named {0:?}")]
pub struct UnknownRoute(pub String);

/// Destination ids in order without repeats, and who is on call for those a rotation chose
/// (`alice (rotation primary)`, recorded with the delivery).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targets {
    pub destinations: Vec<String>,
    pub on_call: BTreeMap<String, String>,
}

impl Targets {
    fn add(&mut self, id: String, on_call: Option<&String>) {
        if let Some(who) = on_call {
            self.on_call
                .entry(id.clone())
                .or_insert_with(|| who.clone());
        }
        if !self.destinations.contains(&id) {
            self.destinations.push(id);
        }
    }
}

/// Destinations for an alert with `labels` at `at`, in route order without repeats. With
/// `pinned`, the route of that name is used whatever its matchers say.
pub fn destinations(
    config: &Config,
    labels: &Labels,
    pinned: Option<&str>,
    at: Timestamp,
) -> Result<Targets, UnknownRoute> {
    let mut out = Targets::default();
    for (_, r) in matched(config, labels, pinned)? {
        // The first step is sent at once; the escalator schedules the later ones.
        let step = step_destinations(config, &r.policy, 0, at);
        for d in step.destinations {
            let who = step.on_call.get(&d);
            out.add(d, who);
        }
    }
    Ok(out)
}

/// The routes an alert matched, as (key, policy): each opens one incident per group.
pub fn routes(
    config: &Config,
    labels: &Labels,
    pinned: Option<&str>,
) -> Result<Vec<RouteRef>, UnknownRoute> {
    Ok(matched(config, labels, pinned)?
        .into_iter()
        .map(|(key, r)| RouteRef {
            route: key,
            policy: r.policy.clone(),
        })
        .collect())
}

/// A route's stable key: its name, or `#N` (1-based position) when it has none.
pub fn route_key(index: usize, route: &Route) -> String {
    route
        .name
        .clone()
        .unwrap_or_else(|| format!("#{}", index + 1))
}

fn matched<'c>(
    config: &'c Config,
    labels: &Labels,
    pinned: Option<&str>,
) -> Result<Vec<(String, &'c Route)>, UnknownRoute> {
    Ok(match pinned {
        Some(name) => vec![
            config
                .routes
                .iter()
                .enumerate()
                .find(|(_, r)| r.name.as_deref() == Some(name))
                .map(|(i, r)| (route_key(i, r), r))
                .ok_or_else(|| UnknownRoute(name.to_owned()))?,
        ],
        None => {
            let mut chosen = Vec::new();
            for (i, r) in config.routes.iter().enumerate() {
                if r.matchers.iter().all(|m| m.matches(labels)) {
                    chosen.push((route_key(i, r), r));
                    if !r.continue_matching {
                        break;
                    }
                }
            }
            chosen
        }
    })
}

/// Destinations of one step of a policy at `at`: a `rotation:NAME` target becomes the channels
/// of whoever is on call then.
pub fn step_destinations(config: &Config, policy: &str, step: usize, at: Timestamp) -> Targets {
    let mut out = Targets::default();
    let Some(step) = config.policies.get(policy).and_then(|p| p.steps.get(step)) else {
        return out;
    };
    for target in &step.notify {
        let (channels, who) = match target.strip_prefix(ROTATION_PREFIX) {
            Some(name) => match config.rotations.get(name) {
                Some(r) => {
                    let person = r.on_call(at);
                    (person.notify.as_slice(), Some(r.label(person)))
                }
                None => continue,
            },
            None => (std::slice::from_ref(target), None),
        };
        for channel in channels {
            if let Some(c) = config.channels.get(channel) {
                for d in c.destinations() {
                    out.add(d.id, who.as_ref());
                }
            }
        }
    }
    out
}

/// A route as a human finds it in the configuration: its name, or its position, and what it
/// matches (`route "lab" ({site=~"lab-.*"})`, `route 2 (every alert)`). `key` is the stored
/// `routing::route_key`; a route since removed is named as stored.
pub fn describe_route(config: &Config, key: &str) -> String {
    let found = config
        .routes
        .iter()
        .enumerate()
        .find(|(i, r)| route_key(*i, r) == key);
    let Some((i, route)) = found else {
        return format!("route {key} (no longer in the configuration)");
    };
    let matches = if route.matchers.is_empty() {
        "every alert".to_owned()
    } else {
        let m: Vec<String> = route.matchers.iter().map(ToString::to_string).collect();
        format!("{{{}}}", m.join(", "))
    };
    match &route.name {
        Some(name) => format!("route {name:?} ({matches})"),
        None => format!("route {} ({matches})", i + 1),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{MapSecrets, parse};

    #[test]
    fn first_match_continue_and_pinning() {
        let c = parse(
            r#"
storage: { sqlite: x }
channels:
  a: { type: webhook, url: "http://a" }
  b: { type: webhook, url: "http://b" }
  sms: { type: twilio, account_sid: AC1, auth_token: t, from: "+15005550006", to: ["+447700900123", "+447700900124"] }
policies:
  pa: { steps: [ { notify: [a] } ] }
  pb: { steps: [ { notify: [b, a] } ] }
  page: { steps: [ { notify: [sms] } ] }
routes:
  - match: ['severity="critical"']
    policy: page
    continue: true
  - name: lab
    match: { site: lab }
    policy: pb
  - policy: pa
"#,
            Path::new("/"),
            &MapSecrets::default(),
        )
        .expect("valid");
        let l = |pairs: &[(&str, &str)]| -> Labels {
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect()
        };
        let dests = |labels: &Labels, pinned| {
            destinations(&c, labels, pinned, Timestamp::UNIX_EPOCH).map(|t| t.destinations)
        };
        assert_eq!(dests(&l(&[]), None).expect("ok"), ["a"]);
        assert_eq!(dests(&l(&[("site", "lab")]), None).expect("ok"), ["b", "a"]);
        assert_eq!(
            dests(&l(&[("severity", "critical"), ("site", "lab")]), None).expect("ok"),
            ["sms/+447700900123", "sms/+447700900124", "b", "a"]
        );
        assert_eq!(dests(&l(&[]), Some("lab")).expect("ok"), ["b", "a"]);
        assert_eq!(
            dests(&l(&[]), Some("nope")),
            Err(UnknownRoute("nope".into()))
        );
    }

    #[test]
    fn rotation_targets_resolve_to_whoever_is_on_call_then() {
        let c = parse(
            r#"
storage: { sqlite: x }
channels:
  ops: { type: webhook, url: "http://ops" }
  alice-sms: { type: twilio, account_sid: AC1, auth_token: t, from: "+15005550006", to: ["+447700900123"] }
  bob-hook: { type: webhook, url: "http://bob" }
rotations:
  primary:
    time_zone: Europe/Berlin
    handover: "09:00"
    shift: 1d
    start: 2026-01-05
    people:
      - { name: alice, notify: [alice-sms, ops] }
      - { name: bob, notify: [bob-hook] }
policies:
  page: { steps: [ { notify: [rotation:primary, ops] }, { after: 10m, notify: [ops] } ] }
routes: [ { policy: page } ]
"#,
            Path::new("/"),
            &MapSecrets::default(),
        )
        .expect("valid");
        let at = |s: &str| s.parse::<Timestamp>().expect("timestamp");
        let t = step_destinations(&c, "page", 0, at("2026-01-05T08:00:00Z"));
        assert_eq!(t.destinations, ["alice-sms/+447700900123", "ops"]);
        let alice = "alice (rotation primary)".to_owned();
        assert_eq!(
            t.on_call,
            BTreeMap::from([
                ("alice-sms/+447700900123".to_owned(), alice.clone()),
                ("ops".to_owned(), alice),
            ])
        );
        let t = destinations(&c, &Labels::new(), None, at("2026-01-06T08:00:00Z")).expect("ok");
        assert_eq!(t.destinations, ["bob-hook", "ops"]);
        assert_eq!(
            t.on_call,
            BTreeMap::from([("bob-hook".to_owned(), "bob (rotation primary)".to_owned())])
        );
        let t = step_destinations(&c, "page", 1, at("2026-01-06T08:00:00Z"));
        assert!(t.on_call.is_empty());
    }
}

#[cfg(test)]
mod describe_route_tests {
    use super::describe_route;

    #[test]
    fn routes_are_named_by_what_they_match() {
        let config = crate::config::parse(
            "storage: { sqlite: x }\nchannels: { c: { type: webhook, url: 'http://x' } }\n\
             policies: { p: { steps: [ { notify: [c] } ] } }\n\
             routes: [ { match: { severity: critical }, policy: p }, { name: lab, match: ['site=~\"lab-.*\"'], policy: p }, { policy: p } ]\n",
            std::path::Path::new("/"),
            &crate::config::MapSecrets::default(),
        )
        .expect("valid");
        assert_eq!(
            describe_route(&config, "#1"),
            "route 1 ({severity=\"critical\"})"
        );
        assert_eq!(
            describe_route(&config, "lab"),
            "route \"lab\" ({site=~\"lab-.*\"})"
        );
        assert_eq!(describe_route(&config, "#3"), "route 3 (every alert)");
        assert_eq!(
            describe_route(&config, "#7"),
            "route #7 (no longer in the configuration)"
        );
    }
}
