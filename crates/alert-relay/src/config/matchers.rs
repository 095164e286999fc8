//! The two ways a section says which alerts it takes: the relay's `match:` (a map of label
//! equalities, or a list of matcher strings) and Alertmanager's `matchers:` (a list of
//! matcher strings, each possibly several in the `{a="b", c=~"d"}` form). Routes and the
//! dead-man's switch read theirs here; a maintenance window would too.

use super::raw::RawMatchers;
use crate::matcher::{Matcher, Op, parse_set};
use crate::secret::keys::{ConfigError, invalid};

/// The matchers of the section at `key` (`routes[2]`, `deadman`) from its `match:` and
/// `matchers:`. Setting both is an error naming both: merging them would hide a paste that
/// half-replaced the other.
pub(super) fn section(
    key: &str,
    legacy: RawMatchers,
    alertmanager: Option<Vec<String>>,
) -> Result<Vec<Matcher>, ConfigError> {
    match (legacy, alertmanager) {
        (RawMatchers::None, None) => Ok(Vec::new()),
        (legacy, None) => from_match(key, legacy),
        (RawMatchers::None, Some(list)) => from_matchers(&format!("{key}.matchers"), &list),
        (_, Some(_)) => Err(invalid(
            format!("{key}.matchers"),
            format!("set either {key}.match or {key}.matchers, not both"),
        )),
    }
}

/// Alertmanager's `matchers:` at `key`: every entry parsed with [`parse_set`], errors at
/// `key[N]`.
pub(super) fn from_matchers(key: &str, list: &[String]) -> Result<Vec<Matcher>, ConfigError> {
    let mut out = Vec::new();
    for (j, s) in list.iter().enumerate() {
        out.extend(parse_set(s).map_err(|e| invalid(format!("{key}[{j}]"), e))?);
    }
    Ok(out)
}

/// The relay's `match:` at `key.match`.
fn from_match(key: &str, raw: RawMatchers) -> Result<Vec<Matcher>, ConfigError> {
    match raw {
        RawMatchers::None => Ok(Vec::new()),
        RawMatchers::Equal(map) => map
            .into_iter()
            .map(|(k, v)| {
                Matcher::new(k.clone(), Op::Equal, v)
                    .map_err(|e| invalid(format!("{key}.match.{k}"), e))
            })
            .collect(),
        RawMatchers::List(list) => from_matchers(&format!("{key}.match"), &list),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn err(r: Result<Vec<Matcher>, ConfigError>) -> String {
        r.expect_err("must fail").to_string()
    }

    #[test]
    fn match_and_matchers_are_read_and_exclusive() {
        let am = Some(vec![r#"{severity="critical", site=~"lab-.*"}"#.to_owned()]);
        assert_eq!(
            section("routes[0]", RawMatchers::None, am.clone())
                .expect("ok")
                .len(),
            2
        );
        let legacy = RawMatchers::Equal(BTreeMap::from([("a".to_owned(), "b".to_owned())]));
        assert_eq!(section("routes[0]", legacy, None).expect("ok").len(), 1);
        let legacy = RawMatchers::List(vec!["a=b".to_owned()]);
        let e = err(section("routes[3]", legacy, am));
        assert!(e.starts_with("routes[3].matchers:"), "{e}");
        assert!(
            e.contains("routes[3].match ") && e.contains("not both"),
            "{e}"
        );
        assert!(
            section("x", RawMatchers::None, None)
                .expect("ok")
                .is_empty()
        );
    }

    #[test]
    fn a_bad_entry_is_named_by_key_and_index() {
        let list = vec!["a=b".to_owned(), r#"{c="d", e=~"("}"#.to_owned()];
        let e = err(section("routes[1]", RawMatchers::None, Some(list.clone())));
        assert!(e.starts_with("routes[1].matchers[1]: "), "{e}");
        assert!(e.contains("invalid regex"), "{e}");
        let e = err(section("deadman", RawMatchers::List(list), None));
        assert!(e.starts_with("deadman.match[1]: "), "{e}");
    }
}
