//! Text helpers every channel uses to stay inside its provider's limits: truncation on
//! character boundaries (also of escaped text) and GSM-7 folding for SMS. Escaping is in
//! [`super::escape`]. Pure.

/// At most `max` characters; a cut text ends in `…`.
pub fn truncate_chars(s: &str, max: usize) -> String {
    if max == 0 {
        return String::new();
    }
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some(_) => {
            let cut = s.char_indices().nth(max - 1).map_or(s.len(), |(i, _)| i);
            format!("{}…", &s[..cut])
        }
    }
}

/// At most `max` bytes of UTF-8; a cut text ends in `…` (3 bytes).
pub fn truncate_bytes(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut cut = max.saturating_sub(3);
    while cut > 0 && !s.is_char_boundary(cut) {
        cut -= 1;
    }
    if max < 3 {
        return String::new();
    }
    format!("{}…", &s[..cut])
}

/// HTML escaping for the relay's own pages and TwiML; channels use [`super::escape`].
pub use super::escape::html as escape_html;

/// Escapes with `esc` and truncates so that the *escaped* text is at most `max` characters,
/// never cutting inside an entity or an escape.
pub fn escape_within(s: &str, max: usize, esc: impl Fn(&str) -> String) -> String {
    let mut budget = max;
    loop {
        let escaped = esc(&truncate_chars(s, budget));
        if escaped.chars().count() <= max || budget == 0 {
            return escaped;
        }
        // Entities grew it past the limit: shrink in proportion and try again.
        let len = escaped.chars().count();
        budget = (budget * max / len).min(budget - 1);
    }
}

/// As many whole `parts` joined by `sep` as fit in `max` characters: a list of links is never
/// cut inside a link, where the rest of the markup would be left open.
pub fn join_within(parts: &[String], sep: &str, max: usize) -> String {
    let mut out = String::new();
    let mut len = 0;
    for p in parts {
        let add = p.chars().count()
            + if out.is_empty() {
                0
            } else {
                sep.chars().count()
            };
        if len + add > max {
            break;
        }
        if !out.is_empty() {
            out.push_str(sep);
        }
        out.push_str(p);
        len += add;
    }
    out
}

/// `text`, then as many whole `links` as fit on the line below it, all in `max` characters:
/// the text is cut to make room, a link never is (half a link leaves its markup open).
pub fn text_then_links(text: &str, links: &[String], sep: &str, max: usize) -> String {
    let links = join_within(links, sep, max / 2);
    if links.is_empty() {
        return truncate_chars(text, max);
    }
    let room = max.saturating_sub(links.chars().count() + 1);
    format!("{}\n{links}", truncate_chars(text, room))
}

/// Folds text into the GSM-7 basic set so an SMS stays 160 characters per segment instead of
/// 70: common typography to ASCII, everything else to `?`. Control characters other than a
/// newline become spaces: nothing renders in an SMS, but a phone still acts on them.
pub fn to_gsm7(s: &str) -> String {
    const BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '‘' | '’' | '′' => out.push('\''),
            '“' | '”' | '″' => out.push('"'),
            '–' | '—' | '−' => out.push('-'),
            '…' => out.push_str("..."),
            '°' => out.push_str(" deg "),
            '\n' => out.push('\n'),
            c if c.is_control() => out.push(' '),
            c if BASIC.contains(c) => out.push(c),
            _ => out.push('?'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate_chars("héllo", 10), "héllo");
        assert_eq!(truncate_chars("héllo", 3), "hé…");
        assert_eq!(truncate_chars("héllo", 3).chars().count(), 3);
        assert_eq!(truncate_bytes("ééé", 5), "é…");
        assert_eq!(truncate_bytes("aaéé", 5), "aa…");
        assert!(truncate_bytes("日本語のテキスト", 10).len() <= 10);
    }

    #[test]
    fn escaping_within_a_limit_never_cuts_an_entity() {
        let s = "<<<<<<<<<<";
        let e = escape_within(s, 12, escape_html);
        assert!(e.chars().count() <= 12, "{e}");
        assert!(!e.contains("&l…") && !e.ends_with('&'), "{e}");
    }

    #[test]
    fn joining_keeps_whole_parts() {
        let parts = ["<a|1>".to_owned(), "<b|2>".to_owned(), "<c|3>".to_owned()];
        assert_eq!(join_within(&parts, " · ", 100), "<a|1> · <b|2> · <c|3>");
        assert_eq!(join_within(&parts, " · ", 13), "<a|1> · <b|2>");
        assert_eq!(join_within(&parts, " · ", 4), "");
        let t = text_then_links(&"x".repeat(50), &parts, " · ", 30);
        assert_eq!(t, format!("{}…\n<a|1> · <b|2>", "x".repeat(15)));
        assert_eq!(text_then_links("abc", &[], " · ", 2), "a…");
    }

    #[test]
    fn gsm7_folding() {
        assert_eq!(
            to_gsm7("CPU at 85°C — “hot”…"),
            "CPU at 85 deg C - \"hot\"..."
        );
        assert_eq!(to_gsm7("🔥"), "?");
        assert_eq!(to_gsm7("a\r\tb\u{1b}c\nd"), "a  b c\nd");
    }

    proptest::proptest! {
        #[test]
        fn limits_hold(s in "\\PC{0,300}", max in 1usize..200) {
            proptest::prop_assert!(truncate_chars(&s, max).chars().count() <= max);
            proptest::prop_assert!(truncate_bytes(&s, max + 3).len() <= max + 3);
            proptest::prop_assert!(escape_within(&s, max, escape_html).chars().count() <= max);
        }
    }
}
