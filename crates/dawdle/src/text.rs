//! Text from outside, made safe to show: bounded in length and free of
//! control characters.
//!
//! Anything a row holds (a task name, arguments, an error message) or a
//! person typed may be huge or carry terminal escape sequences. Everything
//! dawdle stores, logs or prints from such text goes through here, so one
//! bad value cannot flood a log, break a table or repaint a terminal.

/// The marker that ends a truncated text.
pub const TRUNCATED: &str = "… [truncated]";

/// At most `max_chars` characters of `text`; a longer text is cut at a
/// character boundary and ends with [`TRUNCATED`] (counted in `max_chars`).
pub fn truncate(text: &str, max_chars: usize) -> std::borrow::Cow<'_, str> {
    let marker = TRUNCATED.chars().count();
    match text.char_indices().nth(max_chars) {
        None => std::borrow::Cow::Borrowed(text),
        Some(_) => {
            let keep = max_chars.saturating_sub(marker);
            let end = text.char_indices().nth(keep).map_or(text.len(), |(i, _)| i);
            std::borrow::Cow::Owned(format!("{}{TRUNCATED}", &text[..end]))
        }
    }
}

/// At most `max_bytes` bytes of `text`, cut at a character boundary and
/// ending with [`TRUNCATED`] (counted in `max_bytes`) when cut; NUL
/// characters, which PostgreSQL text cannot hold, become `\\0`. For text
/// that is stored: error messages and tracebacks.
pub fn storable(text: &str, max_bytes: usize) -> std::borrow::Cow<'_, str> {
    let text = if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\\0"))
    } else {
        std::borrow::Cow::Borrowed(text)
    };
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes.saturating_sub(TRUNCATED.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}{TRUNCATED}", &text[..end]))
}

/// A short, printable quotation of input: control characters escaped
/// (`\n`, `\u{1b}`), at most `max_chars` characters of the original, with
/// `…` when cut. For error messages about bad input.
pub fn excerpt(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    for (taken, ch) in text.chars().enumerate() {
        if taken == max_chars {
            out.push('…');
            break;
        }
        push_printable(&mut out, ch);
    }
    out
}

/// Most characters of the original that [`quote`] keeps.
const QUOTED_CHARS: usize = 60;

/// A double-quoted excerpt of input for one line of an error message: as
/// [`excerpt`] (at most 60 characters of the original, `…` when cut), with
/// `"` and `\` escaped too, so that it is clear where the quotation ends and
/// what each escape stands for: `{"a": 1` is quoted `"{\"a\": 1"`.
pub fn quote(text: &str) -> String {
    let mut out = String::from('"');
    for (taken, ch) in text.chars().enumerate() {
        if taken == QUOTED_CHARS {
            out.push('…');
            break;
        }
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ch => push_printable(&mut out, ch),
        }
    }
    out.push('"');
    out
}

/// `text` with control characters escaped, whole: for a value shown on one
/// line (a table cell, a log field) whose length is bounded elsewhere.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for ch in text.chars() {
        push_printable(&mut out, ch);
    }
    std::borrow::Cow::Owned(out)
}

/// At most `max_chars` characters of `text` (cut as [`truncate`] cuts),
/// with its line breaks kept and every other control character escaped as
/// [`printable`] escapes it: for a block of lines shown as such (a
/// traceback, pretty-printed JSON in a web page).
pub fn printable_lines(text: &str, max_chars: usize) -> String {
    truncate(text, max_chars)
        .split('\n')
        .map(|line| printable(line).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

fn needs_escape(ch: char) -> bool {
    ch.is_control()
        || matches!(ch, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn push_printable(out: &mut String, ch: char) {
    match ch {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        ch if needs_escape(ch) => out.push_str(&ch.escape_unicode().to_string()),
        ch => out.push(ch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_text_is_kept_whole() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(excerpt("abc", 3), "abc");
    }

    #[test]
    fn long_text_ends_with_the_marker_within_the_bound() {
        let long = "x".repeat(100);
        let cut = truncate(&long, 40);
        assert_eq!(cut.chars().count(), 40);
        assert!(cut.ends_with(TRUNCATED));
        assert_eq!(
            excerpt(&"é".repeat(100), 10),
            format!("{}…", "é".repeat(10))
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("a\x1b[2Jb\nc"), "a\\u{1b}[2Jb\\nc");
        assert_eq!(quote("bad\u{202e}name"), "\"bad\\u{202e}name\"");
    }

    #[test]
    fn lines_keep_their_breaks_and_lose_other_controls() {
        assert_eq!(
            printable_lines("a\x1b[31m\r\nb\u{202e}\n", 100),
            "a\\u{1b}[31m\\r\nb\\u{202e}\n"
        );
        let cut = printable_lines(&"line\n".repeat(1000), 50);
        assert!(cut.ends_with(TRUNCATED), "{cut}");
        assert!(cut.chars().count() <= 50);
    }

    #[test]
    fn quotes_and_backslashes_are_escaped_in_a_quotation() {
        assert_eq!(quote(r#"{"a": 1"#), r#""{\"a\": 1""#);
        assert_eq!(quote(r"C:\dir"), r#""C:\\dir""#);
        // A backslash and an `n` are not a line break.
        assert_ne!(quote("a\\nb"), quote("a\nb"));
        assert_eq!(quote("a\\nb"), r#""a\\nb""#);
        // The excerpt alone stays as it was: it is not quoted.
        assert_eq!(excerpt(r#"{"a": 1"#, 10), r#"{"a": 1"#);
    }

    #[test]
    fn a_quotation_keeps_sixty_characters() {
        let long = "x".repeat(10_000);
        assert_eq!(quote(&long), format!("\"{}…\"", "x".repeat(60)));
        assert_eq!(quote(&long[..60]), format!("\"{}\"", "x".repeat(60)));
        // Escapes do not count against the bound: 60 quotes, each escaped.
        assert_eq!(
            quote(&"\"".repeat(61)),
            format!("\"{}…\"", "\\\"".repeat(60))
        );
    }

    /// The characters [`quote`] quoted, and whether it cut them.
    fn unquote(quoted: &str) -> (String, bool) {
        let inner = quoted
            .strip_prefix('"')
            .and_then(|rest| rest.strip_suffix('"'))
            .expect("a quotation is in double quotes");
        let (inner, cut) = match inner.strip_suffix('…') {
            // An ellipsis of the original is itself kept as is; a cut one
            // follows the 60th character.
            Some(rest) if unquote_chars(rest).chars().count() == QUOTED_CHARS => (rest, true),
            _ => (inner, false),
        };
        (unquote_chars(inner), cut)
    }

    fn unquote_chars(inner: &str) -> String {
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(ch) = chars.next() {
            if ch == '"' {
                panic!("an unescaped quote inside {inner:?}");
            }
            if ch != '\\' {
                out.push(ch);
                continue;
            }
            match chars.next() {
                Some('"') => out.push('"'),
                Some('\\') => out.push('\\'),
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                Some('u') => {
                    let code: String = chars.by_ref().take_while(|c| *c != '}').collect();
                    let code = code.strip_prefix('{').expect("\\u{…}");
                    out.push(char::from_u32(u32::from_str_radix(code, 16).unwrap()).unwrap());
                }
                other => panic!("an unknown escape \\{other:?} in {inner:?}"),
            }
        }
        out
    }

    #[test]
    fn storable_text_has_no_nul_and_fits_its_bytes() {
        assert_eq!(storable("a\0b", 100), "a\\0b");
        let long = "é".repeat(1000);
        let cut = storable(&long, 101);
        assert!(cut.len() <= 101, "{}", cut.len());
        assert!(cut.ends_with(TRUNCATED));
    }

    proptest! {
        #[test]
        fn storable_never_exceeds_its_bound(text in any::<String>(), max in 20usize..300) {
            let cut = storable(&text, max);
            prop_assert!(cut.len() <= max);
            prop_assert!(!cut.contains('\0'));
        }


        #[test]
        fn truncate_never_exceeds_its_bound(text in ".{0,300}", max in 14usize..200) {
            let cut = truncate(&text, max);
            prop_assert!(cut.chars().count() <= max);
            prop_assert!(text.starts_with(cut.trim_end_matches(TRUNCATED)));
        }

        #[test]
        fn a_quotation_reads_back_as_the_start_of_the_text(text in any::<String>()) {
            let quoted = quote(&text);
            prop_assert!(!quoted.chars().any(needs_escape));
            let (original, cut) = unquote(&quoted);
            let count = text.chars().count();
            prop_assert_eq!(cut, count > QUOTED_CHARS);
            let kept: String = text.chars().take(QUOTED_CHARS).collect();
            prop_assert_eq!(original, kept);
        }

        #[test]
        fn excerpt_is_one_printable_line(text in any::<String>(), max in 0usize..80) {
            let quoted = excerpt(&text, max);
            prop_assert!(!quoted.chars().any(needs_escape));
            prop_assert!(quoted.chars().count() <= max * 10 + 1);
        }
    }
}
