//! The links of a message, from alert data: the rule's graph (generator URL), Alertmanager's
//! view of the alert and a prefilled silence, and every `*_url` annotation. Each URL is
//! validated and normalised by [`safe_url`] so that a channel can place it in its markup
//! without escaping it; a URL that cannot be made safe is dropped, never shown. Pure.

use super::{Link, escape};
use crate::payload::{AlertEvent, Status};

/// Longest URL kept. A longer one is dropped rather than cut: a cut URL leads elsewhere.
const URL_MAX: usize = 2000;
/// Longest link name taken from an annotation key.
const NAME_MAX: usize = 40;

/// Links for a message, in this order: Source, Alertmanager, Silence, then the `*_url`
/// annotations in key order.
pub fn for_event(e: &AlertEvent) -> Vec<Link> {
    let mut out = Vec::new();
    let mut push = |name: String, url: &str| {
        if let Some(url) = safe_url(url) {
            out.push(Link { name, url });
        }
    };
    push("Source".into(), &e.generator_url);
    if let Some(base) = safe_url(&e.external_url) {
        let base = base.trim_end_matches('/');
        let filter = percent_encode(&alert_filter(e));
        push(
            "Alertmanager".into(),
            &format!("{base}/#/alerts?filter={filter}"),
        );
        if e.status == Status::Firing {
            push(
                "Silence".into(),
                &format!("{base}/#/silences/new?filter={filter}"),
            );
        }
    }
    for (k, v) in &e.annotations {
        if let Some(key) = k.strip_suffix("_url") {
            push(annotation_link_name(key), v);
        }
    }
    out
}

/// `{alertname="PiHot",instance="pi-17:9831"}`: the matchers that find this alert.
fn alert_filter(e: &AlertEvent) -> String {
    let filter: Vec<String> = e
        .labels
        .iter()
        .filter(|(k, _)| matches!(k.as_str(), "alertname" | "instance" | "job"))
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", filter.join(","))
}

/// `runbook_url` → "Runbook", `dashboard_url` → "Dashboard". Only ASCII letters, digits and
/// spaces are kept, so that a key can neither carry markup nor name a link like the relay's own
/// ("Acknowledge #3", which ntfy and Telegram turn into an acknowledge button).
fn annotation_link_name(key: &str) -> String {
    let name: String = key
        .chars()
        .map(|c| if c == '_' { ' ' } else { c })
        .filter(|c| c.is_ascii_alphanumeric() || *c == ' ')
        .take(NAME_MAX)
        .collect();
    let name = name.trim();
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => "Link".into(),
    }
}

/// An alert's URL made safe to place in any channel's markup, or `None` when it cannot be.
/// http and https only, with a host and without userinfo (`https://grafana.example@phish.example`
/// reads as the first host). The WHATWG parser normalises it (percent-encoding spaces, quotes
/// and angle brackets, writing the host in punycode); then every character some channel's link
/// syntax ends on is percent-encoded after the host too, so the URL cannot close a Slack
/// `<url|label>`, a Discord `[label](<url>)`, a markdown link or an HTML attribute.
pub fn safe_url(raw: &str) -> Option<String> {
    let url = reqwest::Url::parse(raw.trim()).ok()?;
    let host = url.host_str().filter(|h| !h.is_empty())?;
    // The URL standard allows `{`, `}` and the like in a domain; no real one has them, and the
    // origin below is written as it is.
    if !matches!(url.scheme(), "http" | "https")
        || !url.username().is_empty()
        || url.password().is_some()
        || url.domain().is_some_and(|d| d.bytes().any(breaks_out))
    {
        return None;
    }
    // Scheme, host and port as the parser wrote them: an IPv6 host keeps its brackets.
    let origin = match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    };
    let rest = url.as_str().strip_prefix(&origin)?;
    let mut out = origin.clone();
    for b in rest.bytes() {
        if breaks_out(b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(char::from(b));
        }
    }
    (out.len() <= URL_MAX).then_some(out)
}

/// Bytes that end a link or an attribute in some channel's syntax, or that no normalised URL
/// should carry raw.
fn breaks_out(b: u8) -> bool {
    !b.is_ascii_graphic()
        || matches!(
            b,
            b'(' | b')'
                | b'['
                | b']'
                | b'|'
                | b'<'
                | b'>'
                | b'"'
                | b'\''
                | b'`'
                | b'\\'
                | b'{'
                | b'}'
                | b'^'
        )
}

/// `<a href="url">name</a>` for each link, joined by `sep`: the links of the HTML channels
/// (Telegram, Matrix, email). `name` escapes a link's name for the channel.
pub fn html_anchors(links: &[Link], sep: &str, name: impl Fn(&str) -> String) -> String {
    let anchors: Vec<String> = links
        .iter()
        .map(|l| format!("<a href=\"{}\">{}</a>", escape::html(&l.url), name(&l.name)))
        .collect();
    anchors.join(sep)
}

/// Percent-encodes everything but RFC 3986's unreserved characters: for a query value (the
/// Alertmanager filter) or a path segment (a Matrix room id).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalised_or_dropped() {
        let ok = |raw: &str, want: &str| assert_eq!(safe_url(raw).as_deref(), Some(want), "{raw}");
        ok(
            "http://prometheus:9090/graph?g0.expr=up",
            "http://prometheus:9090/graph?g0.expr=up",
        );
        ok(
            "  https://Grafana.Example/d/x  ",
            "https://grafana.example/d/x",
        );
        ok(
            "https://x.example/a b\"c<d>",
            "https://x.example/a%20b%22c%3Cd%3E",
        );
        ok(
            "https://x.example/w/(a)[b]|c'd`e?q={x}^#f)",
            "https://x.example/w/%28a%29%5Bb%5D%7Cc%27d%60e?q=%7Bx%7D%5E#f%29",
        );
        ok("http://[fd00::1]:9093/x", "http://[fd00::1]:9093/x");
        ok(
            "https://bücher.example/ü",
            "https://xn--bcher-kva.example/%C3%BC",
        );
        for bad in [
            "http://x) [Acknowledge #1](http://phish.example",
            "javascript:alert(1)",
            "data:text/html,<b>x</b>",
            "file:///etc/passwd",
            "https://grafana.example@phish.example/",
            "https://user:pw@phish.example/",
            "http://",
            "runbooks/PiHot.md",
            "",
            // Found by the property test: a domain ending in a brace.
            "http://phish.example}",
            "http://phish{.example/",
        ] {
            assert_eq!(safe_url(bad), None, "{bad}");
        }
        assert_eq!(
            safe_url(&format!("https://x.example/{}", "a".repeat(3000))),
            None
        );
    }

    #[test]
    fn annotation_keys_name_plain_links() {
        assert_eq!(annotation_link_name("runbook"), "Runbook");
        assert_eq!(
            annotation_link_name("grafana_dashboard"),
            "Grafana dashboard"
        );
        assert_eq!(annotation_link_name("acknowledge #1"), "Acknowledge 1");
        assert_eq!(annotation_link_name("<!channel>"), "Channel");
        assert_eq!(annotation_link_name("«»"), "Link");
    }
}
