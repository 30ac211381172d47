//! Parser for the Python-literal string lists that TOP stores in its CSV cells
//! (`['a', "b's"]`, written by Python's `repr`).
//!
//! Hand-written because no maintained crate parses Python literals, and the grammar needed is tiny:
//! a list of single- or double-quoted strings with backslash escapes.

/// Parses `['x', "y", ...]` into its strings. An empty cell counts as an empty list.
pub fn parse_str_list(s: &str) -> Result<Vec<String>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let mut chars = s.char_indices().peekable();
    match chars.next() {
        Some((_, '[')) => {}
        _ => {
            return Err(format!(
                "expected a Python list starting with `[`, found `{}`",
                preview(s)
            ))
        }
    }
    let mut out = Vec::new();
    loop {
        skip_ws(&mut chars);
        match chars.next() {
            Some((_, ']')) => break,
            Some((_, q @ ('\'' | '"'))) => {
                out.push(parse_quoted(&mut chars, q)?);
                skip_ws(&mut chars);
                match chars.next() {
                    Some((_, ',')) => continue,
                    Some((_, ']')) => break,
                    Some((i, c)) => {
                        return Err(format!("expected `,` or `]` at byte {i}, found `{c}`"))
                    }
                    None => return Err("unterminated list: missing `]`".into()),
                }
            }
            Some((i, c)) => {
                return Err(format!("expected a quoted string at byte {i}, found `{c}`"))
            }
            None => return Err("unterminated list: missing `]`".into()),
        }
    }
    skip_ws(&mut chars);
    if let Some((i, _)) = chars.next() {
        return Err(format!("unexpected text after the list at byte {i}"));
    }
    Ok(out)
}

/// Writes strings as a Python list literal, as Python's `repr` does (so TOP readers parse it).
pub fn to_str_list<S: AsRef<str>>(items: &[S]) -> String {
    let parts: Vec<String> = items.iter().map(|s| repr(s.as_ref())).collect();
    format!("[{}]", parts.join(", "))
}

/// Python's `repr` of a string: single quotes unless the text has a single quote and no double one.
fn repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

type Chars<'a> = std::iter::Peekable<std::str::CharIndices<'a>>;

fn skip_ws(chars: &mut Chars<'_>) {
    while chars.peek().is_some_and(|(_, c)| c.is_whitespace()) {
        chars.next();
    }
}

fn parse_quoted(chars: &mut Chars<'_>, quote: char) -> Result<String, String> {
    let mut out = String::new();
    while let Some((_, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, 'r')) => out.push('\r'),
                Some((_, 'x')) => out.push(hex_escape(chars, 2)?),
                Some((_, 'u')) => out.push(hex_escape(chars, 4)?),
                Some((_, 'U')) => out.push(hex_escape(chars, 8)?),
                Some((_, e @ ('\\' | '\'' | '"'))) => out.push(e),
                // Python keeps unknown escapes verbatim (SMILES use `\` for bond direction).
                Some((_, e)) => {
                    out.push('\\');
                    out.push(e);
                }
                None => break,
            },
            c if c == quote => return Ok(out),
            c => out.push(c),
        }
    }
    Err(format!("unterminated string starting with {quote}"))
}

fn hex_escape(chars: &mut Chars<'_>, digits: usize) -> Result<char, String> {
    let hex: String = (0..digits)
        .filter_map(|_| chars.next().map(|(_, c)| c))
        .collect();
    u32::from_str_radix(&hex, 16)
        .ok()
        .and_then(char::from_u32)
        .ok_or_else(|| format!("bad escape `\\x{hex}`"))
}

fn preview(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mixed_quotes_and_escapes() {
        let v = parse_str_list(r#"['a', "b's", 'c\'d', 'C\\C=C']"#).unwrap();
        assert_eq!(v, vec!["a", "b's", "c'd", r"C\C=C"]);
    }

    #[test]
    fn parses_nested_icd_layout() {
        let outer = parse_str_list(r#"["['D02.20', 'D02.21']", "['C34']"]"#).unwrap();
        let inner: Vec<Vec<String>> = outer.iter().map(|s| parse_str_list(s).unwrap()).collect();
        assert_eq!(inner, vec![vec!["D02.20", "D02.21"], vec!["C34"]]);
    }

    #[test]
    fn writes_what_it_reads() {
        let items = [
            "plain",
            "it's",
            "say \"hi\"",
            "both ' and \"",
            "back\\slash",
            "line\nbreak",
        ];
        let lit = to_str_list(&items);
        assert_eq!(&lit[..22], "['plain', \"it's\", 'say");
        assert_eq!(parse_str_list(&lit).unwrap(), items);
        assert_eq!(to_str_list::<&str>(&[]), "[]");
    }

    #[test]
    fn empty_forms() {
        assert!(parse_str_list("").unwrap().is_empty());
        assert!(parse_str_list("[]").unwrap().is_empty());
        assert!(parse_str_list(" [ ] ").unwrap().is_empty());
    }

    #[test]
    fn rejects_malformed() {
        assert!(parse_str_list("a, b").is_err());
        assert!(parse_str_list("['a'").is_err());
        assert!(parse_str_list("['a' 'b']").is_err());
        assert!(parse_str_list("['a'] x").is_err());
        assert!(parse_str_list("[1, 2]").is_err());
    }
}
