//! `channels:`: the keys every channel has (`type`, `api_url`, `template`, `rate_limit`,
//! `timeout`, `budget`) and dispatch by `type` to the provider, which owns the rest
//! (`crate::channels::settings::PROVIDERS`).

use super::raw::RawChannel;
use crate::channels::settings::{ChannelConfig, Input, PROVIDERS, Rate, provider};
use crate::render::template::UserTemplate;
use crate::secret::keys::{ConfigError, Ctx, check_url, invalid};
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
    if let Some(key) = rc.provider.foreign(provider) {
        return Err(invalid(
            format!("{prefix}{key}"),
            format!("not a key of a {} channel", rc.kind),
        ));
    }
    if let (Some(why), Some(_)) = (provider.refuses_api_url, &rc.api_url) {
        return Err(invalid(format!("{prefix}api_url"), why));
    }
    let api_url = match &rc.api_url {
        Some(u) => {
            check_url(&format!("{prefix}api_url"), u)?;
            Some(u.trim_end_matches('/').to_owned())
        }
        None => None,
    };
    let rate = match &rc.rate_limit {
        None => provider.rate,
        Some(r) if r.per_second > 0.0 && r.per_second.is_finite() && r.burst >= 1 => Rate {
            per_second: r.per_second,
            burst: r.burst,
        },
        Some(_) => {
            return Err(invalid(
                format!("{prefix}rate_limit"),
                "per_second must be > 0 and burst >= 1",
            ));
        }
    };
    let timeout = match &rc.timeout {
        Some(t) => Some(parse_duration(t).map_err(|e| invalid(format!("{prefix}timeout"), e))?),
        None => None,
    };
    let budget = match &rc.budget {
        Some(b) => Some(
            crate::model::budget::Budget::new(b.max, &b.per, &b.overflow)
                .map_err(|(k, m)| invalid(format!("{prefix}budget{k}"), m))?,
        ),
        // A phone is never rung without a limit (docs: the voice channel's default budget).
        None if provider.name == crate::channels::twilio_voice::PROVIDER.name => {
            Some(crate::channels::twilio_voice::default_budget())
        }
        None => None,
    };
    let template = match &rc.template {
        Some(t) => Some(
            UserTemplate::new(t.title.clone(), t.body.clone())
                .map_err(|e| invalid(format!("{prefix}template"), e))?,
        ),
        None => None,
    };
    let kind = (provider.from_raw)(&Input {
        prefix: &prefix,
        keys: &rc.provider,
        ctx,
        api_url: api_url.as_deref(),
    })?;
    Ok(ChannelConfig {
        name: name.to_owned(),
        kind,
        api_url,
        template,
        rate,
        timeout,
        budget,
    })
}
