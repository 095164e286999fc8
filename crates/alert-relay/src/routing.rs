//! Which destinations an alert goes to: the first route whose matchers all match its labels
//! (more when a route says `continue: true`), that route's policy, the policy's first step.
//! Pure.

use crate::config::{Config, Route};
use crate::payload::Labels;
use crate::store::RouteRef;

/// Why a pinned route (`POST /webhook/{name}`) cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no route named {0:?}")]
pub struct UnknownRoute(pub String);

/// Destination ids for an alert with `labels`, in route order without repeats. With `pinned`,
/// the route of that name is used whatever its matchers say.
pub fn destinations(
    config: &Config,
    labels: &Labels,
    pinned: Option<&str>,
) -> Result<Vec<String>, UnknownRoute> {
    let mut out: Vec<String> = Vec::new();
    for (_, r) in matched(config, labels, pinned)? {
        // The first step is sent at once; the escalator schedules the later ones.
        for d in step_destinations(config, &r.policy, 0) {
            if !out.contains(&d) {
                out.push(d);
            }
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

/// Destination ids of one step of a policy, in order without repeats.
pub fn step_destinations(config: &Config, policy: &str, step: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let Some(step) = config.policies.get(policy).and_then(|p| p.steps.get(step)) else {
        return out;
    };
    for channel in &step.notify {
        if let Some(c) = config.channels.get(channel) {
            for d in c.destinations() {
                if !out.contains(&d.id) {
                    out.push(d.id);
                }
            }
        }
    }
    out
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
        assert_eq!(destinations(&c, &l(&[]), None).expect("ok"), ["a"]);
        assert_eq!(
            destinations(&c, &l(&[("site", "lab")]), None).expect("ok"),
            ["b", "a"]
        );
        assert_eq!(
            destinations(&c, &l(&[("severity", "critical"), ("site", "lab")]), None).expect("ok"),
            ["sms/+447700900123", "sms/+447700900124", "b", "a"]
        );
        assert_eq!(
            destinations(&c, &l(&[]), Some("lab")).expect("ok"),
            ["b", "a"]
        );
        assert_eq!(
            destinations(&c, &l(&[]), Some("nope")),
            Err(UnknownRoute("nope".into()))
        );
    }
}
