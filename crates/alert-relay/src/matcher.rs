//! Alertmanager-style label matchers: `=`, `!=`, `=~`, `!~`. Regexes are anchored at both ends
//! the way Alertmanager anchors them (`^(?:RE)$`), so `severity=~"crit"` does not match
//! `critical`. A missing label matches like the empty string, as in Alertmanager. Pure.
//!
//! [`parse_set`] reads one entry of Alertmanager's `matchers:` list, which may hold several
//! matchers in its brace form (`{a="b", c=~"d"}`); routes and the dead-man's switch use it
//! through `config::matchers`, as will maintenance windows.

use std::collections::BTreeMap;
use std::fmt;

use regex_lite::Regex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Equal => "=",
            Op::NotEqual => "!=",
            Op::Regex => "=~",
            Op::NotRegex => "!~",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: Op,
    pub value: String,
    regex: Option<Regex>,
}

impl Matcher {
    pub fn new(name: impl Into<String>, op: Op, value: impl Into<String>) -> Result<Self, String> {
        let name = name.into();
        let value = value.into();
        if name.is_empty() {
            return Err("empty label name".into());
        }
        let regex = match op {
            Op::Regex | Op::NotRegex => Some(
                Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| format!("invalid regex {value:?}: {e}"))?,
            ),
            Op::Equal | Op::NotEqual => None,
        };
        Ok(Self {
            name,
            op,
            value,
            regex,
        })
    }

    /// Parses one matcher as Alertmanager's `matchers:` writes it: `name="value"`,
    /// `name!~"re"`, with or without quotes around the value.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let name_end = text
            .find(['=', '!'])
            .ok_or_else(|| format!("{text:?}: expected name=value, !=, =~ or !~"))?;
        let name = text[..name_end].trim();
        let rest = &text[name_end..];
        let (op, value) = if let Some(v) = rest.strip_prefix("=~") {
            (Op::Regex, v)
        } else if let Some(v) = rest.strip_prefix("!~") {
            (Op::NotRegex, v)
        } else if let Some(v) = rest.strip_prefix("!=") {
            (Op::NotEqual, v)
        } else if let Some(v) = rest.strip_prefix('=') {
            (Op::Equal, v)
        } else {
            return Err(format!("{text:?}: expected =, !=, =~ or !~ after {name:?}"));
        };
        let name = unquote(name).map_err(|e| format!("{text:?}: label name {e}"))?;
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("{text:?}: {name:?} is not a label name"));
        }
        let value = unquote(value.trim()).map_err(|e| format!("{text:?}: value {e}"))?;
        Self::new(name, op, value).map_err(|e| format!("{text:?}: {e}"))
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.name).map_or("", String::as_str);
        match (self.op, &self.regex) {
            (Op::Equal, _) => v == self.value,
            (Op::NotEqual, _) => v != self.value,
            (Op::Regex, Some(re)) => re.is_match(v),
            (Op::NotRegex, Some(re)) => !re.is_match(v),
            // `new` always compiles a regex for the regex operators.
            (Op::Regex | Op::NotRegex, None) => false,
        }
    }
}

/// Equal when name, operator and value are: the regex is compiled from them.
impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        (&self.name, self.op, &self.value) == (&other.name, other.op, &other.value)
    }
}

impl Eq for Matcher {}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op.as_str(), self.value)
    }
}

/// Parses one entry of an Alertmanager `matchers:` list: a single matcher, or several
/// separated by commas, optionally inside one pair of braces (`{a="b", c=~"d"}`). Commas
/// inside double quotes belong to the value; a trailing comma is allowed, an empty entry or
/// `{}` is not (it would match every alert without saying so).
pub fn parse_set(text: &str) -> Result<Vec<Matcher>, String> {
    let trimmed = text.trim();
    let inner = match (trimmed.strip_prefix('{'), trimmed.ends_with('}')) {
        (Some(rest), true) => rest.strip_suffix('}').unwrap_or(rest),
        (Some(_), false) => return Err(format!("{trimmed:?} lacks its closing brace")),
        (None, true) => return Err(format!("{trimmed:?} lacks its opening brace")),
        (None, false) => trimmed,
    };
    let parts = split_outside_quotes(inner).map_err(|e| format!("{trimmed:?}: {e}"))?;
    let last = parts.len().saturating_sub(1);
    let mut out = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        if part.trim().is_empty() {
            // `{a="b",}`: Alertmanager's parser takes one trailing comma.
            if i == last && i > 0 {
                continue;
            }
            return Err(format!("{trimmed:?}: empty matcher"));
        }
        out.push(Matcher::parse(part)?);
    }
    Ok(out)
}

/// `text` split at the commas outside double quotes (a `\"` inside quotes does not end them).
fn split_outside_quotes(text: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return Err("a quote is not closed".into());
    }
    parts.push(&text[start..]);
    Ok(parts)
}

/// Strips one level of double quotes and resolves `\"`, `\\` and `\n` inside them.
fn unquote(s: &str) -> Result<String, String> {
    let Some(inner) = s.strip_prefix('"') else {
        if s.contains('"') {
            return Err(format!("{s:?} has a stray quote"));
        }
        return Ok(s.to_owned());
    };
    let inner = inner
        .strip_suffix('"')
        .ok_or_else(|| format!("{s:?} lacks its closing quote"))?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some(e @ ('"' | '\\')) => out.push(e),
                Some(other) => {
                    // Keep regex escapes such as `\.` intact.
                    out.push('\\');
                    out.push(other);
                }
                None => return Err(format!("{s:?} ends in a backslash")),
            },
            '"' => return Err(format!("{s:?} has an unescaped quote")),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Undoes Go's `regexp.QuoteMeta`, which Alertmanager applies to `receiver` since v0.22.
pub fn unquote_meta(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn operators() {
        let l = labels(&[("severity", "critical"), ("site", "wh-2")]);
        let m = |s: &str| Matcher::parse(s).expect(s).matches(&l);
        assert!(m("severity=critical"));
        assert!(m(r#"severity="critical""#));
        assert!(!m("severity!=critical"));
        assert!(m(r#"site=~"wh-.*""#));
        assert!(!m(r#"site!~"wh-.*""#));
        // Anchored: a partial match is no match.
        assert!(!m(r#"severity=~"crit""#));
        assert!(m(r#"severity=~"crit.*|page""#));
        // A missing label is the empty string.
        assert!(m(r#"team="""#));
        assert!(m(r#"team!~".+""#));
        assert!(m(r#"{severity="critical"}"#.trim_matches(['{', '}'])));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "severity",
            "=x",
            "a b=c",
            r#"x="unterminated"#,
            "x=~(",
            r#"x=a"b"#,
        ] {
            assert!(Matcher::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sets_in_brace_form_and_with_commas() {
        let l = labels(&[("severity", "critical"), ("site", "lab-1"), ("team", "a,b")]);
        let all = |s: &str| {
            let set = parse_set(s).expect(s);
            (set.len(), set.iter().all(|m| m.matches(&l)))
        };
        assert_eq!(all(r#"{severity="critical", site=~"lab-.*"}"#), (2, true));
        assert_eq!(all(r#"severity="critical",site=~"lab-.*""#), (2, true));
        assert_eq!(all(r#"{ severity = critical , site!="prod", }"#), (2, true));
        assert_eq!(all(r#"team="a,b""#), (1, true));
        assert_eq!(all(r#"{team=~"a,\"?b"}"#), (1, true));
        assert_eq!(all(r#"{severity="critical", site="prod"}"#), (2, false));
        let set = parse_set(r#"{a="x\"y", b!~"1|2"}"#).expect("parses");
        assert_eq!(set[0].value, "x\"y");
        assert_eq!(set[1].op, Op::NotRegex);
    }

    #[test]
    fn bad_sets_say_why() {
        for (bad, why) in [
            ("{}", "empty matcher"),
            ("", "empty matcher"),
            (r#"{a="b""#, "closing brace"),
            (r#"a="b"}"#, "opening brace"),
            (r#"{a="b", , c="d"}"#, "empty matcher"),
            (r#"{a="b}"#, "quote is not closed"),
            (r#"{a="b", c}"#, "expected"),
            (r#"{a=~"("}"#, "invalid regex"),
        ] {
            let e = parse_set(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn receiver_names_are_unescaped() {
        assert_eq!(unquote_meta(r"team\.pi"), "team.pi");
        assert_eq!(unquote_meta(r"ns/cfg/a\+b"), "ns/cfg/a+b");
    }
}
