//! `rotations:`: the YAML form and its validation into [`Rotation`]s.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, civil};
use serde::Deserialize;

use super::{Config, ConfigError, Problems, invalid};
use crate::rotation::{Override, Person, Rotation};
use crate::time::parse_duration;

/// A step target naming a rotation: `rotation:primary`.
pub const TARGET_PREFIX: &str = "rotation:";

/// Shorter shifts could make hand-overs around a DST gap run backwards.
const MIN_SHIFT: Duration = Duration::from_secs(3600);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRotation {
    pub time_zone: String,
    /// Local hand-over time, `09:00`.
    pub handover: String,
    pub shift: String,
    /// Local date the first person's shift starts.
    pub start: String,
    pub people: Vec<RawPerson>,
    #[serde(default)]
    pub overrides: Vec<RawOverride>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPerson {
    pub name: String,
    pub notify: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOverride {
    /// Local date-time, `2026-12-24T09:00`.
    pub from: String,
    pub to: String,
    /// A person of the rotation, or anyone when `notify` is given.
    pub name: String,
    pub notify: Option<Vec<String>>,
}

fn check_name(key: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(invalid(key, "use letters, digits, '-', '_' and '.'"));
    }
    Ok(())
}

fn notify(
    key: &str,
    list: &[String],
    channels: &BTreeSet<String>,
) -> Result<Vec<String>, ConfigError> {
    if list.is_empty() {
        return Err(invalid(key, "names no channel"));
    }
    for (i, c) in list.iter().enumerate() {
        if !channels.contains(c) {
            return Err(invalid(
                format!("{key}[{i}]"),
                format!("no channel named {c:?}"),
            ));
        }
    }
    Ok(list.to_vec())
}

/// `rotations:`, notify targets checked against the `channels` the file declares; each
/// rotation's first error goes to `problems`.
pub(super) fn rotations(
    raw: BTreeMap<String, RawRotation>,
    channels: &BTreeSet<String>,
    problems: &mut Problems,
) -> BTreeMap<String, Rotation> {
    let mut out = BTreeMap::new();
    for (name, r) in raw {
        if let Some(rotation) = problems.keep(rotation(name.clone(), r, channels)) {
            out.insert(name, rotation);
        }
    }
    out
}

/// `rotations.NAME`: every key checked, each error reported (overrides only once the time
/// zone they are written in is known).
fn rotation(
    name: String,
    r: RawRotation,
    channels: &BTreeSet<String>,
) -> Result<Rotation, ConfigError> {
    let prefix = format!("rotations.{name}");
    let mut problems = Problems::default();
    problems.keep(check_name(&prefix, &name));
    let time_zone = problems.keep(TimeZone::get(&r.time_zone).map_err(|e| {
        invalid(
            format!("{prefix}.time_zone"),
            format!(
                "unknown time zone {:?} (IANA names like Europe/Berlin, from the system tz database /usr/share/zoneinfo, package tzdata): {e}",
                r.time_zone
            ),
        )
    }));
    let handover: Option<civil::Time> = problems.keep(r.handover.parse().map_err(|_| {
        invalid(
            format!("{prefix}.handover"),
            format!("{:?} is not a local time like \"09:00\"", r.handover),
        )
    }));
    let start: Option<civil::Date> = problems.keep(r.start.parse().map_err(|_| {
        invalid(
            format!("{prefix}.start"),
            format!("{:?} is not a date like 2026-01-05", r.start),
        )
    }));
    let shift = problems.keep(shift(&prefix, &r.shift));
    let people = people(&prefix, &r.people, channels, &mut problems);
    // Overrides name people and are written in the time zone: checked once both are valid,
    // so an error there is not reported again through them.
    let overrides = match &time_zone {
        Some(tz) if people.len() == r.people.len() => problems.or(
            overrides(&prefix, &r.overrides, tz, &people, channels),
            Vec::new(),
        ),
        _ => Vec::new(),
    };
    let rotation = match (time_zone, handover, start, shift) {
        (Some(time_zone), Some(handover), Some(start), Some(shift)) => Some(Rotation {
            name,
            time_zone_name: r.time_zone,
            time_zone,
            first: start.to_datetime(handover),
            shift,
            people,
            overrides,
        }),
        _ => None,
    };
    problems.finish_some(&prefix, rotation)
}

/// `shift:`, at least an hour.
fn shift(prefix: &str, text: &str) -> Result<SignedDuration, ConfigError> {
    let shift = parse_duration(text).map_err(|e| invalid(format!("{prefix}.shift"), e))?;
    if shift < MIN_SHIFT {
        return Err(invalid(format!("{prefix}.shift"), "must be at least 1h"));
    }
    SignedDuration::try_from(shift).map_err(|_| invalid(format!("{prefix}.shift"), "too long"))
}

/// `people:`, each person's first error reported; the valid ones.
fn people(
    prefix: &str,
    raw: &[RawPerson],
    channels: &BTreeSet<String>,
    problems: &mut Problems,
) -> Vec<Person> {
    if raw.is_empty() {
        problems.push(invalid(
            format!("{prefix}.people"),
            "needs at least one person",
        ));
    }
    let mut names = BTreeSet::new();
    let mut people = Vec::new();
    for (i, p) in raw.iter().enumerate() {
        let key = format!("{prefix}.people[{i}]");
        let person = if p.name.trim().is_empty() {
            Err(invalid(format!("{key}.name"), "required"))
        } else if !names.insert(p.name.clone()) {
            Err(invalid(
                format!("{key}.name"),
                format!("{:?} is in the rotation twice", p.name),
            ))
        } else {
            notify(&format!("{key}.notify"), &p.notify, channels).map(|notify| Person {
                name: p.name.clone(),
                notify,
            })
        };
        people.extend(problems.keep(person));
    }
    people
}

/// A rotation's `overrides:`, which must not overlap, in time order.
fn overrides(
    prefix: &str,
    raw: &[RawOverride],
    time_zone: &TimeZone,
    people: &[Person],
    channels: &BTreeSet<String>,
) -> Result<Vec<Override>, ConfigError> {
    let mut problems = Problems::default();
    let mut overrides: Vec<(usize, Override)> = Vec::new();
    for (i, o) in raw.iter().enumerate() {
        let key = format!("{prefix}.overrides[{i}]");
        let checked = one_override(&key, o, time_zone, people, channels);
        overrides.extend(problems.keep(checked).map(|o| (i, o)));
    }
    // Overlaps among the valid ones.
    overrides.sort_by_key(|(_, o)| o.from);
    for pair in overrides.windows(2) {
        let ((i, a), (j, b)) = (&pair[0], &pair[1]);
        if b.from < a.to {
            problems.push(invalid(
                format!("{prefix}.overrides[{j}]"),
                format!("overlaps overrides[{i}]"),
            ));
        }
    }
    problems.finish(overrides.into_iter().map(|(_, o)| o).collect())
}

/// One override at `key`: its times in the rotation's zone, and who (a person of the rotation,
/// or anyone with `notify:`).
fn one_override(
    key: &str,
    o: &RawOverride,
    time_zone: &TimeZone,
    people: &[Person],
    channels: &BTreeSet<String>,
) -> Result<Override, ConfigError> {
    let instant = |key: String, text: &str| -> Result<Timestamp, ConfigError> {
        let dt: civil::DateTime = text.parse().map_err(|_| {
            invalid(
                &key,
                format!("{text:?} is not a local date-time like \"2026-12-24T09:00\""),
            )
        })?;
        time_zone
            .to_ambiguous_timestamp(dt)
            .compatible()
            .map_err(|e| invalid(&key, e.to_string()))
    };
    let from = instant(format!("{key}.from"), &o.from)?;
    let to = instant(format!("{key}.to"), &o.to)?;
    if to <= from {
        return Err(invalid(format!("{key}.to"), "must be later than from"));
    }
    let person = match &o.notify {
        Some(list) => Person {
            name: o.name.clone(),
            notify: notify(&format!("{key}.notify"), list, channels)?,
        },
        None => people
            .iter()
            .find(|p| p.name == o.name)
            .cloned()
            .ok_or_else(|| {
                invalid(
                    format!("{key}.name"),
                    format!(
                        "{:?} is not a person of this rotation; give notify: for someone else",
                        o.name
                    ),
                )
            })?,
    };
    if person.name.trim().is_empty() {
        return Err(invalid(format!("{key}.name"), "required"));
    }
    Ok(Override { from, to, person })
}

impl Config {
    /// Who is on call at `now` in every rotation, and the next hand-overs.
    pub fn describe_rotations(&self, out: &mut String, now: Timestamp) {
        if self.rotations.is_empty() {
            return;
        }
        let _ = writeln!(out, "rotations:");
        for r in self.rotations.values() {
            let p = r.on_call(now);
            let _ = writeln!(
                out,
                "  {} ({}): on call now {} -> {}",
                r.name,
                r.time_zone_name,
                p.name,
                p.notify.join(", ")
            );
            for h in r.upcoming(now, 3) {
                let _ = writeln!(out, "    from {}: {}", r.local(h.at), h.person.name);
            }
        }
    }
}
