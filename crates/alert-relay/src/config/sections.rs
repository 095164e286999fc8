//! When the file does not deserialize, it is read again one top-level section at a time (the
//! other sections skipped unread), and again for each unknown top-level key, so that one run
//! of `check-config` names a wrong key or value in every section rather than only the first
//! one serde met. A YAML syntax error ends every reading at the same place: it is said once.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use super::{console, describe_yaml_error, pipeline, raw, rotation};

/// Every top-level key of the file (the fields of `raw::RawConfig`).
const KNOWN: &[&str] = &[
    "listen",
    "public_url",
    "auth",
    "tls",
    "storage",
    "limits",
    "delivery",
    "channels",
    "policies",
    "routes",
    "deadman",
    "alertmanager",
    "rotations",
    "console",
];

/// Unknown top-level keys reported at most.
const MAX_UNKNOWN: usize = 20;

/// The error of each section read on its own, then of each unknown top-level key, each as
/// `super::describe` words it, in the file's order of sections; none for a section without.
pub(super) fn errors(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    macro_rules! section {
        ($name:literal, $t:ty) => {
            out.extend(
                read(text, Section::<$t>::new($name))
                    .map(|(e, path)| describe_yaml_error(&e, path)),
            );
        };
    }
    section!("listen", Option<String>);
    section!("public_url", Option<String>);
    section!("auth", Option<raw::RawListenerAuth>);
    section!("storage", raw::RawStorage);
    section!("limits", Option<raw::RawLimits>);
    section!("delivery", Option<raw::RawDelivery>);
    section!("channels", BTreeMap<String, raw::RawChannel>);
    section!("policies", BTreeMap<String, raw::RawPolicy>);
    section!("routes", Vec<raw::RawRoute>);
    section!("deadman", Option<pipeline::RawDeadman>);
    section!("alertmanager", Option<pipeline::RawAlertmanager>);
    section!("rotations", BTreeMap<String, rotation::RawRotation>);
    section!("console", Option<console::RawConsole>);
    let mut unknown: Vec<String> = Vec::new();
    while unknown.len() < MAX_UNKNOWN {
        let mut found = None;
        let Some((error, _)) = read(
            text,
            Unknown {
                skip: &unknown,
                found: &mut found,
            },
        ) else {
            break;
        };
        // Named by its key, as the first reading names an unknown key.
        out.push(describe_yaml_error(&error, found.clone()));
        match found {
            Some(key) => unknown.push(key),
            None => break,
        }
    }
    out
}

/// One reading of the whole file with `seed`: its error and the key path where it stopped.
fn read<'de, S: DeserializeSeed<'de, Value = ()>>(
    text: &'de str,
    seed: S,
) -> Option<(serde_saphyr::Error, Option<String>)> {
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    let mut path = None;
    serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        let mut track = serde_path_to_error::Track::new();
        seed.deserialize(serde_path_to_error::Deserializer::new(de, &mut track))
            .inspect_err(|_| {
                path = Some(track.path().to_string()).filter(|p| p != ".");
            })
    })
    .err()
    .map(|e| (e, path))
}

/// Reads the value of top-level key `name` as `T`, skipping the other keys.
struct Section<T> {
    name: &'static str,
    _t: PhantomData<T>,
}

impl<T> Section<T> {
    fn new(name: &'static str) -> Self {
        Section {
            name,
            _t: PhantomData,
        }
    }
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for Section<T> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for Section<T> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping of the relay's sections")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == self.name {
                map.next_value::<T>()?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// Fails on the first top-level key that is neither known nor in `skip`, naming it in
/// `found`, as serde's `deny_unknown_fields` words it.
struct Unknown<'a> {
    skip: &'a [String],
    found: &'a mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for Unknown<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Unknown<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping of the relay's sections")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if !KNOWN.contains(&key.as_str()) && !self.skip.contains(&key) {
                let error = de::Error::unknown_field(&key, KNOWN);
                *self.found = Some(key);
                return Err(error);
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
}
