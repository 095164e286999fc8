//! One escaping function per output syntax. Alert text (labels, annotations, a user template's
//! output, the name of whoever acknowledged) comes from every Pi's exporter, every rule author
//! and the API: it is data, never markup. Each function first [`clean`]s the text, then
//! neutralises what its syntax would turn into a mention, a link or formatting. Text the relay
//! lays out around it (its links, its bold title) is added by the channel after escaping. Pure.

/// Shows nothing and joins its neighbours: put between two characters that a syntax reads as
/// one token (`](`, `{{`, `@room`), it keeps them apart without changing what a reader sees.
pub const WORD_JOINER: char = '\u{2060}';

/// The sigils Telegram turns into a mention (`@username` notifies that member).
pub const TELEGRAM_SIGILS: &[char] = &['@'];
/// The sigils Matrix clients turn into pills: `@room`, `@user:server`, `#alias:server`.
pub const MATRIX_SIGILS: &[char] = &['@', '#'];

/// Characters no channel gets: controls other than newline and tab, bidi overrides and
/// isolates (they reorder what a reader sees) and zero-width characters (they hide text and
/// would let an alert smuggle in the joiners the escapes below rely on).
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200B}' | '\u{2060}' | '\u{FEFF}' | '\u{180E}' | '\u{202A}'..='\u{202E}'
            | '\u{2066}'..='\u{2069}'
    ) || (c.is_control() && c != '\n' && c != '\t')
}

/// Plain text fit for any channel: every line break as `\n` (CR LF, CR, NEL, U+2028/2029: a
/// renderer that breaks lines on them would start a line where no escape expects one), and no
/// [`invisible`] character.
pub fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' if chars.peek() == Some(&'\n') => {}
            '\r' | '\u{85}' | '\u{2028}' | '\u{2029}' => out.push('\n'),
            c if invisible(c) => {}
            c => out.push(c),
        }
    }
    out
}

/// [`clean`] on one line: for headers (an email's Subject), where a line break would start a
/// header of the alert's choosing.
pub fn one_line(s: &str) -> String {
    clean(s).replace(['\n', '\t'], " ")
}

/// Where a character stands, for syntaxes that care.
struct At<'a> {
    /// Only spaces and tabs precede it on its line: list, heading and quote markers count here.
    line_start: bool,
    /// The text after it.
    rest: &'a str,
}

/// Writes [`clean`]`(s)` through `f`, one character at a time.
fn rewrite(s: &str, mut f: impl FnMut(char, &At<'_>, &mut String)) -> String {
    let s = clean(s);
    let mut out = String::with_capacity(s.len() + s.len() / 4);
    let mut line_start = true;
    for (i, c) in s.char_indices() {
        let rest = &s[i + c.len_utf8()..];
        f(c, &At { line_start, rest }, &mut out);
        line_start = c == '\n' || (line_start && (c == ' ' || c == '\t'));
    }
    out
}

/// Slack mrkdwn, for blocks and the plain `text` alike (Slack parses `<!channel>`, `<@U…>` and
/// `<url|label>` in both): `&`, `<` and `>` are its only control characters.
pub fn slack(s: &str) -> String {
    rewrite(s, |c, _, out| match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        c => out.push(c),
    })
}

fn push_html(c: char, out: &mut String) {
    match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        '"' => out.push_str("&quot;"),
        c => out.push(c),
    }
}

/// HTML text and double-quoted attribute values (Telegram `parse_mode=HTML`, Pushover
/// `html=1`, the HTML part of a mail). Only the four entities every one of them knows.
pub fn html(s: &str) -> String {
    rewrite(s, |c, _, out| push_html(c, out))
}

/// [`html`], with a [`WORD_JOINER`] after each of `sigils` so that no client reads a mention
/// or a pill in it (Telegram's `@username`, Matrix's `@room`).
pub fn html_no_mentions(s: &str, sigils: &[char]) -> String {
    rewrite(s, |c, _, out| {
        push_html(c, out);
        if sigils.contains(&c) {
            out.push(WORD_JOINER);
        }
    })
}

/// Plain text a client still scans for mentions (Matrix `body`, Telegram without
/// `parse_mode`): a [`WORD_JOINER`] after each of `sigils`.
pub fn no_mentions(s: &str, sigils: &[char]) -> String {
    rewrite(s, |c, _, out| {
        out.push(c);
        if sigils.contains(&c) {
            out.push(WORD_JOINER);
        }
    })
}

/// Discord markdown (message content, embed titles, descriptions and fields). A backslash is
/// Discord's escape and works before any punctuation, so every character a rule starts on gets
/// one: emphasis, code, spoilers, masked links, quotes, headings, `<@…>`/`<#…>`/`<:…>`/`<t:…>`,
/// `@everyone`/`@here`, list markers at a line's start, and the `:` of `://` (a bare URL would be
/// auto-linked). `allowed_mentions` stays empty as well: escaping is about what a reader sees.
pub fn discord(s: &str) -> String {
    // Only digits since the line's start: a `.` now would make an ordered list.
    let mut numbering = false;
    rewrite(s, |c, at, out| {
        let escape = match c {
            '\\' | '*' | '_' | '~' | '`' | '|' | '[' | ']' | '(' | ')' | '<' | '>' | '#' | '@' => {
                true
            }
            '-' | '+' => at.line_start,
            '.' => numbering,
            ':' => at.rest.starts_with("//"),
            _ => false,
        };
        numbering = c.is_ascii_digit() && (at.line_start || numbering);
        if escape {
            out.push('\\');
        }
        out.push(c);
    })
}

/// Text of an Adaptive Card `TextBlock` or `Fact` (Teams), a markdown subset whose renderers
/// differ: CommonMark backslash escapes for emphasis, code and link brackets, plus a
/// [`WORD_JOINER`] where a renderer that ignores escapes would still match: after `]` (no `](`
/// link, no `]:` reference), after `{` (no `{{DATE(…)}}`/`{{TIME(…)}}` function) and before a
/// list, heading or quote marker at a line's start.
pub fn teams(s: &str) -> String {
    rewrite(s, |c, at, out| {
        if at.line_start && matches!(c, '-' | '+' | '*' | '#' | '>' | '0'..='9') {
            out.push(WORD_JOINER);
        }
        if matches!(c, '\\' | '*' | '_' | '~' | '`' | '[' | ']' | '(' | ')') {
            out.push('\\');
        }
        out.push(c);
        if matches!(c, ']' | '{') {
            out.push(WORD_JOINER);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WJ: &str = "\u{2060}";

    #[test]
    fn clean_drops_what_hides_or_reorders_text() {
        assert_eq!(clean("a\r\nb\rc\u{2028}d\u{85}e"), "a\nb\nc\nd\ne");
        assert_eq!(
            clean("x\u{200B}y\u{202E}z\u{2066}\u{0}\u{1b}[31m\t"),
            "xyz[31m\t"
        );
        assert_eq!(
            clean("👨\u{200D}👩 کار\u{200C}ها"),
            "👨\u{200D}👩 کار\u{200C}ها"
        );
        assert_eq!(
            one_line("Subject\r\nBcc: x@example.org"),
            "Subject Bcc: x@example.org"
        );
    }

    #[test]
    fn slack_and_html() {
        assert_eq!(
            slack("<!channel> <@U123> <http://phish|trusted> & co"),
            "&lt;!channel&gt; &lt;@U123&gt; &lt;http://phish|trusted&gt; &amp; co"
        );
        assert_eq!(
            html("<a href=\"x\">y</a> &amp;"),
            "&lt;a href=&quot;x&quot;&gt;y&lt;/a&gt; &amp;amp;"
        );
        assert_eq!(
            html_no_mentions("@room <b>", MATRIX_SIGILS),
            format!("@{WJ}room &lt;b&gt;")
        );
        assert_eq!(
            no_mentions("@room #ops:example.org @bob", MATRIX_SIGILS),
            format!("@{WJ}room #{WJ}ops:example.org @{WJ}bob")
        );
        assert_eq!(
            no_mentions("@boss #1", TELEGRAM_SIGILS),
            format!("@{WJ}boss #1")
        );
    }

    #[test]
    fn discord_markdown() {
        assert_eq!(
            discord("[click me](http://phish.example)"),
            r"\[click me\]\(http\://phish.example\)"
        );
        assert_eq!(
            discord("@everyone <@123> <#9> <:e:1> **b** __u__ ~~s~~ `c` ||x|| \\"),
            r"\@everyone \<\@123\> \<\#9\> \<:e:1\> \*\*b\*\* \_\_u\_\_ \~\~s\~\~ \`c\` \|\|x\|\| \\"
        );
        assert_eq!(
            discord("# h\n-# sub\n - item\n> q\n12. n\n+ p\nx-y 1.5"),
            "\\# h\n\\-\\# sub\n \\- item\n\\> q\n12\\. n\n\\+ p\nx-y 1.5"
        );
        assert_eq!(discord("pi-17:9831"), "pi-17:9831");
    }

    #[test]
    fn teams_markdown_subset() {
        assert_eq!(
            teams("[x](http://p) **b** _i_"),
            format!(r"\[x\]{WJ}\(http://p\) \*\*b\*\* \_i\_")
        );
        assert_eq!(
            teams("{{DATE(2026-01-01T00:00:00Z, SHORT)}}"),
            format!(r"{{{WJ}{{{WJ}DATE\(2026-01-01T00:00:00Z, SHORT\)}}}}")
        );
        assert_eq!(
            teams("- a\n 1. b\n# c"),
            format!("{WJ}- a\n {WJ}1. b\n{WJ}# c")
        );
    }
}
