//! `channels:`: the keys every channel has (`type`, `api_url`, `template`, `rate_limit`,
//! `timeout`, `budget`, `send_resolved`) and dispatch by `type` to the provider, which owns the rest
//! (`crate::channels::settings::PROVIDERS`).

use std::collections::BTreeMap;

use super::raw::{RawChannel, RawSendResolved};
use crate::channels::settings::{ChannelConfig, Input, PROVIDERS, Rate, SendResolved, provider};
use crate::render::template::UserTemplate;
use crate::secret::keys::{ConfigError, Ctx, Problems, check_url, invalid};
use crate::time::parse_duration;

pub(super) fn channel(
    name: &str,
    rc: RawChannel,
    ctx: &Ctx<'_>,
) -> Result<ChannelConfig, ConfigError> {
    let prefix = format!("channels.{name}.");
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(invalid(
            format!("channels.{name}"),
            "channel names use letters, digits, '-', '_' and '.'",
        ));
    }
    let Some(provider) = provider(&rc.kind) else {
        let known: Vec<&str> = PROVIDERS.iter().map(|p| p.name).collect();
        return Err(invalid(
            format!("{prefix}type"),
            format!(
                "unknown channel type {:?}; known: {}",
                rc.kind,
                known.join(", ")
            ),
        ));
    };
    let mut rc = rc;
    rc.provider
        .apply_aliases(provider, &prefix, &mut rc.api_url)?;
    if let Some(key) = rc.provider.foreign(provider) {
        return Err(invalid(
            format!("{prefix}{key}"),
            format!("not a key of a {} channel", rc.kind),
        ));
    }
    // The keys below are independent: each error is reported.
    let mut problems = Problems::default();
    if let (Some(why), Some(_)) = (provider.refuses_api_url, &rc.api_url) {
        problems.push(invalid(format!("{prefix}api_url"), why));
    }
    // A wrong URL is reported here and stands in as written: its error keeps it from use, and
    // a provider that needs one (matrix) does not also call it missing.
    let api_url = rc.api_url.as_ref().map(|u| {
        problems.keep(check_url(&format!("{prefix}api_url"), u));
        u.trim_end_matches('/').to_owned()
    });
    let rate = match &rc.rate_limit {
        None => provider.rate,
        Some(r) if r.per_second > 0.0 && r.per_second.is_finite() && r.burst >= 1 => Rate {
            per_second: r.per_second,
            burst: r.burst,
        },
        Some(_) => {
            problems.push(invalid(
                format!("{prefix}rate_limit"),
                "per_second must be > 0 and burst >= 1",
            ));
            provider.rate
        }
    };
    let timeout = rc.timeout.as_ref().and_then(|t| {
        problems.keep(parse_duration(t).map_err(|e| invalid(format!("{prefix}timeout"), e)))
    });
    let budget = match &rc.budget {
        Some(b) => problems.keep(
            crate::model::budget::Budget::new(b.max, &b.per, &b.overflow)
                .map_err(|(k, m)| invalid(format!("{prefix}budget{k}"), m)),
        ),
        // A phone is never rung without a limit (docs: the voice channel's default budget).
        None if provider.name == crate::channels::twilio_voice::PROVIDER.name => {
            Some(crate::channels::twilio_voice::default_budget())
        }
        None => None,
    };
    let template = rc.template.as_ref().and_then(|t| {
        problems.keep(
            UserTemplate::new(t.title.clone(), t.body.clone())
                .map_err(|e| invalid(format!("{prefix}template"), e)),
        )
    });
    let kind = match (provider.from_raw)(&Input {
        prefix: &prefix,
        keys: &rc.provider,
        ctx,
        api_url: api_url.as_deref(),
    }) {
        Ok(kind) => kind,
        Err(e) => return Err(problems.fail(e)),
    };
    let mut config = ChannelConfig {
        name: name.to_owned(),
        kind,
        api_url,
        template,
        rate,
        timeout,
        budget,
        send_resolved: SendResolved::default(),
    };
    if let Some(sr) = problems.keep(send_resolved(&prefix, rc.send_resolved, &config)) {
        config.send_resolved = sr;
    }
    problems.finish(config)
}

/// `send_resolved` (default true): `false` for the channel, or a map naming some of its
/// recipients, which must be destinations of their own (each Twilio number): on a channel
/// that is one destination a per-recipient flag could not be honoured.
fn send_resolved(
    prefix: &str,
    raw: Option<RawSendResolved>,
    config: &ChannelConfig,
) -> Result<SendResolved, ConfigError> {
    let recipients = match raw {
        None => BTreeMap::new(),
        Some(RawSendResolved::Channel(channel)) => {
            return Ok(SendResolved {
                channel,
                recipients: BTreeMap::new(),
            });
        }
        Some(RawSendResolved::Recipients(map)) => map,
    };
    let known = config.recipients();
    for r in recipients.keys() {
        if !known.contains(&r.as_str()) {
            let why = if known.is_empty() {
                "this channel is one destination: set send_resolved: true or false".to_owned()
            } else {
                format!("not a recipient of this channel ({})", known.join(", "))
            };
            return Err(invalid(format!("{prefix}send_resolved.{r}"), why));
        }
    }
    Ok(SendResolved {
        channel: true,
        recipients,
    })
}
