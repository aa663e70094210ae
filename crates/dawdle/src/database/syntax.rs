//! The two forms of a connection string: a URL, told apart by its scheme,
//! and libpq's `key=value` pairs. The parser and the redaction both read
//! strings through here, so they agree on what a string says.

/// Whether `text` starts with a URL scheme and `://`, which a `key=value`
/// string never does (a scheme has no `=` and no space).
pub(super) fn has_scheme(text: &str) -> bool {
    let Some((scheme, _)) = text.split_once("://") else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// The pairs of a libpq `key=value` connection string, values unquoted and
/// unescaped, by libpq's rules: pairs separated by whitespace, optional
/// whitespace around `=`, a value either single-quoted or ending at the
/// next whitespace, a backslash taking the next character literally. The
/// error says what is wrong without quoting anything.
/// Host put in for an empty one by [`parse_url`]: `.invalid` never resolves.
pub(super) const STAND_IN_HOST: &str = "stand-in.invalid";

/// Parses a URL the way libpq does where the URL standard is stricter: an
/// empty host after user info (`postgresql://app@/jobs?host=/run/pg`,
/// `app@:5433/jobs`) means no host, and is given [`STAND_IN_HOST`] so that it
/// parses. The flag says whether it was: the host is then to be ignored.
pub(super) fn parse_url(text: &str) -> Result<(url::Url, bool), url::ParseError> {
    match url::Url::parse(text) {
        Err(url::ParseError::EmptyHost) => match with_stand_in_host(text) {
            Some(text) => url::Url::parse(&text).map(|url| (url, true)),
            None => Err(url::ParseError::EmptyHost),
        },
        parsed => parsed.map(|url| (url, false)),
    }
}

/// `text` with [`STAND_IN_HOST`] where its authority has user info and an
/// empty host; `None` for any other text.
fn with_stand_in_host(text: &str) -> Option<String> {
    let start = text.find("://")? + 3;
    let end = text[start..]
        .find(['/', '?', '#'])
        .map_or(text.len(), |at| start + at);
    let host = start + text[start..end].rfind('@')? + 1;
    (host == end || text[host..end].starts_with(':'))
        .then(|| format!("{}{STAND_IN_HOST}{}", &text[..host], &text[host..]))
}

pub(super) fn parse_key_value(text: &str) -> Result<Vec<(String, String)>, &'static str> {
    // C's isspace, which libpq uses: Rust's ASCII whitespace lacks \v.
    fn is_space(c: &char) -> bool {
        matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
    }
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(is_space).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !is_space(c)) {
            key.push(c);
        }
        while chars.next_if(is_space).is_some() {}
        if key.is_empty() {
            return Err("a parameter has no name before its \"=\"");
        }
        if chars.next() != Some('=') {
            return Err("a parameter has no \"=\" after its name");
        }
        while chars.next_if(is_space).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => return Err("a quoted value has no closing quote"),
                    },
                    Some(c) => value.push(c),
                    None => return Err("a quoted value has no closing quote"),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !is_space(c)) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

/// `value` quoted for a key=value string.
#[cfg(test)]
pub(super) fn libpq_quoted(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `value` unquoted for a key=value string, every character escaped
/// that would end or quote it.
#[cfg(test)]
pub(super) fn libpq_escaped(value: &str) -> String {
    let mut out = String::new();
    for c in value.chars() {
        if c == '\\' || c == '\'' || c.is_ascii_whitespace() || c == '\x0b' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn key_value_strings_parse_as_libpq_reads_them() {
        let pairs =
            parse_key_value(r" host = db  password='it\'s a\\b'dbname=jobs user=a\ b ").unwrap();
        let pairs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("host", "db"),
                ("password", r"it's a\b"),
                ("dbname", "jobs"),
                ("user", "a b"),
            ]
        );
        assert_eq!(
            parse_key_value("password= host=db").unwrap(),
            [("password".to_string(), "host=db".to_string())]
        );
        assert!(parse_key_value("host").is_err());
        assert!(parse_key_value("host='db").is_err());
        assert!(parse_key_value(r"host='db\").is_err());
    }

    proptest! {
        #[test]
        fn key_value_values_round_trip(password in "\\PC{0,40}", quoted in any::<bool>()) {
            let written = if quoted { libpq_quoted(&password) } else { libpq_escaped(&password) };
            prop_assume!(quoted || !password.is_empty());
            let pairs = parse_key_value(&format!("host=db password={written} dbname=jobs")).unwrap();
            prop_assert_eq!(pairs.len(), 3);
            prop_assert_eq!(&pairs[1].1, &password);
        }
    }
}
