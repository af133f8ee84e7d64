//! String operations with Python's exact semantics.
//!
//! lm-evaluation-harness builds its prompts with Python string methods (`str.strip`, `str.capitalize`,
//! `re.sub`).
//! Rust's nearest equivalents differ in corner cases (which characters count as whitespace, title case),
//! so the prompt builders use these instead.

/// Python's `str.isspace` for one character.
///
/// Python treats the Unicode `White_Space` characters plus the information separators U+001C..U+001F as
/// whitespace; Rust's [`char::is_whitespace`] lacks the latter four.
pub fn py_is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `s.rstrip()`.
pub fn py_rstrip(s: &str) -> &str {
    s.trim_end_matches(py_is_space)
}

/// Python's `s.strip()`.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(py_is_space)
}

/// Title case of one character, as Python's `str.capitalize` applies to the first character.
///
/// Title case equals upper case except for the four Latin digraph families, whose title form is the
/// mixed-case letter (for example `ǆ` → `ǅ`), and for characters whose upper case is several letters
/// (`ß` → `Ss`, `ﬁ` → `Fi`): their title form keeps only the first letter upper.
/// (A handful of Greek letters with a subscript iota differ from this rule; prompts do not start with them.)
fn title_case(c: char, out: &mut String) {
    match c {
        '\u{1c4}'..='\u{1c6}' => out.push('\u{1c5}'),
        '\u{1c7}'..='\u{1c9}' => out.push('\u{1c8}'),
        '\u{1ca}'..='\u{1cc}' => out.push('\u{1cb}'),
        '\u{1f1}'..='\u{1f3}' => out.push('\u{1f2}'),
        _ => {
            let mut upper = c.to_uppercase();
            if let Some(first) = upper.next() {
                out.push(first);
            }
            for rest in upper {
                out.extend(rest.to_lowercase());
            }
        }
    }
}

/// Python's `s.capitalize()`: the first character in title case, **all others lower-cased**.
pub fn py_capitalize(s: &str) -> String {
    let mut chars = s.chars();
    let mut out = String::with_capacity(s.len());
    if let Some(first) = chars.next() {
        title_case(first, &mut out);
        out.push_str(&chars.as_str().to_lowercase());
    }
    out
}

/// The first character lower-cased and the rest kept, as lm-eval's COPA `convert_choice`
/// (`choice[0].lower() + choice[1:]`).
pub fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Python's `re.sub(r"\[.*?\]", "", s)`: removes every shortest bracketed span that does not cross a
/// line break (`.` does not match `\n` in Python's `re` without `DOTALL`).
pub fn remove_bracketed(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        // The shortest match ends at the first ']' before any '\n'.
        let close = after.find(']');
        let newline = after.find('\n');
        match close {
            Some(c) if newline.is_none_or(|n| c < n) => {
                out.push_str(&rest[..open]);
                rest = &after[c + 1..];
            }
            _ => {
                // No match starting here: keep the '[' and search on from the next character.
                out.push_str(&rest[..=open]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn strip_matches_python() {
        assert_eq!(py_strip("  a b \t\n"), "a b");
        assert_eq!(py_rstrip("x\u{1f}\u{a0} "), "x");
        assert_eq!(py_rstrip("x\u{200b}"), "x\u{200b}");
    }

    #[test]
    fn capitalize_matches_python() {
        assert_eq!(py_capitalize("he"), "He");
        assert_eq!(py_capitalize("then John LEFT"), "Then john left");
        assert_eq!(py_capitalize(""), "");
        assert_eq!(py_capitalize("ǆemal"), "ǅemal");
        assert_eq!(py_capitalize("ßA"), "Ssa");
        assert_eq!(py_capitalize("ﬁne"), "Fine");
    }

    #[test]
    fn lower_first_keeps_rest() {
        assert_eq!(lower_first("The Toilet."), "the Toilet.");
        assert_eq!(lower_first(""), "");
    }

    #[test]
    fn bracket_removal_matches_python_regex() {
        assert_eq!(remove_bracketed("a [b] c [d]"), "a  c ");
        assert_eq!(remove_bracketed("[x] [y"), " [y");
        assert_eq!(remove_bracketed("a [b\n] c [d]e"), "a [b\n] c e");
        assert_eq!(remove_bracketed("[[a]]"), "]");
        assert_eq!(remove_bracketed("no brackets"), "no brackets");
    }
}
