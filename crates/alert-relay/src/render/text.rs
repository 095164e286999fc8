//! Text helpers every channel uses to stay inside its provider's limits: truncation on
//! character boundaries, escaping for HTML and Slack mrkdwn, and GSM-7 folding for SMS. Pure.

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

/// Escapes text for HTML bodies (Telegram `parse_mode=HTML`, Matrix `formatted_body`).
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes text for Slack mrkdwn: only `&`, `<` and `>` are control characters there.
pub fn escape_slack(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Escapes HTML and truncates so that the *escaped* text is at most `max` characters, never
/// cutting inside an entity.
pub fn escape_html_within(s: &str, max: usize) -> String {
    let mut budget = max;
    loop {
        let escaped = escape_html(&truncate_chars(s, budget));
        if escaped.chars().count() <= max || budget == 0 {
            return escaped;
        }
        // Entities grew it past the limit: shrink in proportion and try again.
        let len = escaped.chars().count();
        budget = (budget * max / len).min(budget - 1);
    }
}

/// Folds text into the GSM-7 basic set so an SMS stays 160 characters per segment instead of
/// 70: common typography to ASCII, everything else to `?`.
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
            '\t' => out.push(' '),
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
        let e = escape_html_within(s, 12);
        assert!(e.chars().count() <= 12, "{e}");
        assert!(!e.contains("&l…") && !e.ends_with('&'), "{e}");
        assert_eq!(escape_slack("a<b>&c"), "a&lt;b&gt;&amp;c");
    }

    #[test]
    fn gsm7_folding() {
        assert_eq!(
            to_gsm7("CPU at 85°C — “hot”…"),
            "CPU at 85 deg C - \"hot\"..."
        );
        assert_eq!(to_gsm7("🔥"), "?");
    }

    proptest::proptest! {
        #[test]
        fn limits_hold(s in "\\PC{0,300}", max in 1usize..200) {
            proptest::prop_assert!(truncate_chars(&s, max).chars().count() <= max);
            proptest::prop_assert!(truncate_bytes(&s, max + 3).len() <= max + 3);
            proptest::prop_assert!(escape_html_within(&s, max).chars().count() <= max);
        }
    }
}
