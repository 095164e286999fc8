//! `channels:`: the keys every channel has (`type`, `api_url`, `template`, `rate_limit`,
//! `timeout`, `budget`, `send_resolved`) and dispatch by `type` to the provider, which owns the rest
//! (`crate::channels::settings::PROVIDERS`).

use super::raw::RawChannel;
use std::collections::BTreeMap;

use crate::channels::settings::{ChannelConfig, Input, PROVIDERS, Rate, SendResolved, provider};
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
    let mut rc = rc;
    rc.provider
        .apply_aliases(provider, &prefix, &mut rc.api_url)?;
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
    let mut config = ChannelConfig {
        name: name.to_owned(),
        kind,
        api_url,
        template,
        rate,
        timeout,
        budget,
        send_resolved: SendResolved {
            channel: rc.send_resolved.unwrap_or(true),
            ..SendResolved::default()
        },
    };
    config.send_resolved.recipients = recipient_flags(&prefix, &rc, &config)?;
    Ok(config)
}

/// The `send_resolved` of list entries (`to: [{ address: X, send_resolved: false }]`). Taken
/// only where the entry is a destination of its own; elsewhere it would be ignored silently.
fn recipient_flags(
    prefix: &str,
    rc: &RawChannel,
    config: &ChannelConfig,
) -> Result<BTreeMap<String, bool>, ConfigError> {
    let recipients = config.recipients();
    let mut out = BTreeMap::new();
    for (key, entry, flag) in rc.provider.all_entry_flags() {
        if !recipients.contains(&entry.as_str()) {
            return Err(invalid(
                format!("{prefix}{key}"),
                format!(
                    "{entry:?}: send_resolved per entry only where each entry is a destination \
                     (a twilio channel's to:); set send_resolved on the channel"
                ),
            ));
        }
        out.insert(entry.clone(), flag);
    }
    Ok(out)
}
