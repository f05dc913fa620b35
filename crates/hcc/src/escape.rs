//! What `hcc` prints of a store is data that anyone who can write to the store chose: key
//! names, URLs, reasons that quote them. A terminal acts on some characters instead of showing
//! them (an escape sequence can erase a line and print a reassuring `verify` summary over it;
//! U+202E turns the rest of a line around), so every text output goes through [`text`], and
//! JSON output through [`json`].

use std::borrow::Cow;
use std::fmt::Write;

/// `s` with every character a terminal could act on, and the backslash (so that an escape
/// cannot be faked), written as an escape: `\n`, `\r`, `\t`, `\x1b` for the other C0 controls
/// and DEL, `\u{9b}` for C1 controls and Unicode format controls (bidirectional overrides and
/// isolates, zero-width characters, line and paragraph separators, ...).
pub(crate) fn text(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c == '\\' || acts(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if acts(c) && (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if acts(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// One JSON value on one line, with the characters a terminal acts on written as `\uXXXX`
/// escapes: serde_json escapes C0 controls itself, but writes DEL, C1 controls and format
/// controls as they are. These can only occur inside JSON strings (everything else serde_json
/// writes is printable ASCII), where an escape means the same character: the output parses to
/// the same value.
pub(crate) fn json(value: &serde_json::Value) -> String {
    let raw = value.to_string();
    if !raw.chars().any(acts) {
        return raw;
    }
    let mut out = String::with_capacity(raw.len() + 16);
    for c in raw.chars() {
        if acts(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A character a terminal acts on rather than shows (or that reorders or hides what follows):
/// the C0 and C1 controls and DEL (Unicode category Cc), the format characters (Cf), and the
/// line and paragraph separators (Zl, Zp).
fn acts(c: char) -> bool {
    c.is_control() || is_format(c)
}

/// Unicode general category Cf (Unicode 16), and U+2028 / U+2029.
fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{ad}'
            | '\u{600}'..='\u{605}'
            | '\u{61c}'
            | '\u{6dd}'
            | '\u{70f}'
            | '\u{890}'..='\u{891}'
            | '\u{8e2}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
            | '\u{110bd}'
            | '\u{110cd}'
            | '\u{13430}'..='\u{1343f}'
            | '\u{1bca0}'..='\u{1bca3}'
            | '\u{1d173}'..='\u{1d17a}'
            | '\u{e0001}'
            | '\u{e0020}'..='\u{e007f}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_format_characters_are_escaped() {
        assert_eq!(
            text("\x1b[2K\r1 entries verify\u{202e}\u{9b}31m\u{7f}\0\\x1b"),
            "\\x1b[2K\\r1 entries verify\\u{202e}\\u{9b}31m\\x7f\\x00\\\\x1b"
        );
        assert_eq!(
            text("\u{2066}a\u{2069}\u{200b}\u{feff}\u{e0041}"),
            "\\u{2066}a\\u{2069}\\u{200b}\\u{feff}\\u{e0041}"
        );
        // What a terminal shows as it is stays as it is, borrowed.
        let plain = "200 GET https://api.example.com/v1/ü/日本 259 bytes";
        assert!(matches!(text(plain), Cow::Borrowed(p) if p == plain));
    }

    #[test]
    fn json_escapes_parse_back_to_the_same_value() {
        let planted = "\x1b[2K\u{7f}\u{9b}\u{202e}\u{e0041}é";
        let value = serde_json::json!({ "key": planted, "n": 1 });
        let line = json(&value);
        assert!(!line.chars().any(acts), "{line}");
        assert!(
            line.contains("\\u202e") && line.contains("\\udb40\\udc41"),
            "{line}"
        );
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&line).unwrap(),
            value
        );
    }
}
