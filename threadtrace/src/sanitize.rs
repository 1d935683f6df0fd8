//! Text that other users control (process names, command lines, paths,
//! cgroup and symbol names), made safe for the places a person reads it:
//! the readable lines, `report`, findings, log lines, the dashboard and
//! the names in exports.
//!
//! A character that a terminal or a viewer acts on instead of showing is
//! written out visibly (`\x1b`, `\u{202e}`): C0 controls, DEL, C1 controls
//! (U+0080–U+009F: U+009B is a one-character CSI on some terminals), the
//! bidirectional controls and the invisible characters that make two
//! different names look the same. A string is cut at [`FIELD_MAX`]
//! characters, escapes counted, with a marker that says how much was cut.
//! Escaping is idempotent (a backslash is left as it is), so a string that
//! passes two layers is not escaped twice.
//!
//! Rendering is where this happens: the trace file and `--json` keep the
//! exact text. JSON gets [`json`] instead: serde_json escapes C0, and the
//! rest of these characters become `\uXXXX`, which decodes to the same
//! string. Paths inside suggested commands are [`shell`]-quoted.
use std::{borrow::Cow, fmt::Write as _};

use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

/// Characters of one string on a human surface at most, escapes and the
/// cut marker included: a path the kernel accepts (4096 bytes) or a 2 MiB
/// command line never takes more than about 13 lines of 80 columns.
pub const FIELD_MAX: usize = 1024;

/// Room kept for the marker of a cut string: "…(+18446744073709551615 bytes)".
const MARKER_MAX: usize = 32;

/// Bidirectional controls: they reorder what follows them on the screen.
fn is_bidi(c: char) -> bool {
    matches!(c,
        '\u{061c}'                  // ARABIC LETTER MARK
        | '\u{200e}' | '\u{200f}'   // LRM, RLM
        | '\u{202a}'..='\u{202e}'   // LRE, RLE, PDF, LRO, RLO
        | '\u{2066}'..='\u{2069}') // LRI, RLI, FSI, PDI
}

/// Invisible characters: zero width, or line breaks to some viewers; with
/// them two different names look the same.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00ad}'                  // soft hyphen
        | '\u{200b}'..='\u{200d}'   // zero width space, non-joiner, joiner
        | '\u{2028}' | '\u{2029}'   // line and paragraph separators
        | '\u{2060}'..='\u{2064}'   // word joiner, invisible operators
        | '\u{206a}'..='\u{206f}'   // deprecated format characters
        | '\u{feff}'                // zero width no-break space (BOM)
        | '\u{fff9}'..='\u{fffb}'   // interlinear annotation
        | '\u{e0000}'..='\u{e007f}') // tags
}

/// C1 controls, U+0080–U+009F.
fn is_c1(c: char) -> bool {
    ('\u{80}'..='\u{9f}').contains(&c)
}

/// Whether a person must not be shown `c` as it is.
pub fn is_hostile(c: char) -> bool {
    c.is_ascii_control() || is_c1(c) || is_bidi(c) || is_invisible(c)
}

fn escape_into(out: &mut String, c: char) {
    if c.is_ascii() {
        let _ = write!(out, "\\x{:02x}", c as u32);
    } else {
        let _ = write!(out, "\\u{{{:x}}}", c as u32);
    }
}

/// `s` for a human: hostile characters escaped, at most [`FIELD_MAX`]
/// characters. Borrowed when nothing had to change.
pub fn text(s: &str) -> Cow<'_, str> {
    escape(s, false, FIELD_MAX)
}

/// One line of its own (a log line, an error): newlines are escaped too,
/// and the line is cut at `max` characters.
pub fn line(s: &str, max: usize) -> Cow<'_, str> {
    escape(s, false, max.max(MARKER_MAX + 1))
}

/// Text that we laid out on several lines, made of fields already passed
/// through [`text`]: the final guard before a terminal, which keeps our
/// own newlines and escapes anything else.
pub fn block(s: &str) -> Cow<'_, str> {
    escape(s, true, usize::MAX)
}

fn escape(s: &str, keep_newlines: bool, max: usize) -> Cow<'_, str> {
    let hostile = |c: char| is_hostile(c) && !(keep_newlines && c == '\n');
    if !s.chars().any(hostile) && (max == usize::MAX || s.chars().nth(max).is_none()) {
        return Cow::Borrowed(s);
    }
    let room = if max == usize::MAX {
        usize::MAX
    } else {
        max - MARKER_MAX
    };
    let mut out = String::with_capacity(s.len().min(max.saturating_mul(4)));
    let mut chars = 0usize;
    let mut esc = String::new();
    for (i, c) in s.char_indices() {
        let width = if hostile(c) {
            esc.clear();
            escape_into(&mut esc, c);
            esc.chars().count()
        } else {
            1
        };
        // Cut only when what is left would not fit whole.
        if chars + width > room && !rest_fits(&s[i..], chars, max, &hostile) {
            let _ = write!(out, "…(+{} bytes)", s.len() - i);
            return Cow::Owned(out);
        }
        if hostile(c) {
            out.push_str(&esc);
        } else {
            out.push(c);
        }
        chars += width;
    }
    Cow::Owned(out)
}

/// Whether `rest`, escaped, fits in `max` after `used` characters.
fn rest_fits(rest: &str, used: usize, max: usize, hostile: &impl Fn(char) -> bool) -> bool {
    let mut n = used;
    for c in rest.chars() {
        n += if hostile(c) {
            let mut e = String::new();
            escape_into(&mut e, c);
            e.len()
        } else {
            1
        };
        if n > max {
            return false;
        }
    }
    true
}

/// Serialized JSON with every character [`is_hostile`] but C0 written as
/// `\uXXXX`. Applied to serde_json's output, which escapes C0 inside
/// strings and has only ASCII outside them (its layout's newlines are
/// C0, and stay): the text decodes to the same values.
pub fn json(serialized: &str) -> Cow<'_, str> {
    let hostile = |c: char| (is_hostile(c) && !c.is_ascii_control()) || c == '\x7f';
    if !serialized.chars().any(hostile) {
        return Cow::Borrowed(serialized);
    }
    let mut out = String::with_capacity(serialized.len() + 16);
    let mut units = [0u16; 2];
    for c in serialized.chars() {
        if hostile(c) {
            for u in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{:04x}", u);
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A value as one line of JSON, made safe by [`json`].
pub fn to_json<T: Serialize + ?Sized>(v: &T) -> serde_json::Result<String> {
    let s = serde_json::to_string(v)?;
    Ok(json(&s).into_owned())
}

/// The same, pretty-printed.
pub fn to_json_pretty<T: Serialize + ?Sized>(v: &T) -> serde_json::Result<String> {
    let s = serde_json::to_string_pretty(v)?;
    Ok(json(&s).into_owned())
}

/// Every string in a JSON value, object keys included, through [`text`].
pub fn value(v: &mut Value) {
    match v {
        Value::String(s) => {
            if let Cow::Owned(clean) = text(s) {
                *s = clean;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(value),
        Value::Object(m) => {
            if m.keys().any(|k| matches!(text(k), Cow::Owned(_))) {
                let old = std::mem::take(m);
                for (k, mut v) in old {
                    value(&mut v);
                    m.insert(text(&k).into_owned(), v);
                }
            } else {
                m.values_mut().for_each(value);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// A copy of `v` with every string in it through [`text`]: records,
/// summaries and findings are made safe to render as a whole, so a field
/// added later is covered too. None if the copy does not deserialize
/// (a string the type parses itself, changed by escaping).
pub fn for_display<T: Serialize + DeserializeOwned>(v: &T) -> Option<T> {
    let mut j = serde_json::to_value(v).ok()?;
    value(&mut j);
    serde_json::from_value(j).ok()
}

/// `s` as one word for a POSIX shell: as it is when it holds only
/// characters no shell treats specially, else single-quoted, so that a
/// cgroup named `x;$(id);#` stays a name in a command a person pastes.
pub fn shell(s: &str) -> Cow<'_, str> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(format!("'{}'", s.replace('\'', r"'\''")))
}

/// `n` and a noun, "1 thread" or "2 threads".
pub fn count(n: impl Into<i128> + Copy + std::fmt::Display, noun: &str) -> String {
    if n.into() == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_are_singular_at_one() {
        assert_eq!(super::count(1u32, "thread"), "1 thread");
        assert_eq!(super::count(0i64, "task"), "0 tasks");
    }

    use super::*;

    #[test]
    fn every_class_of_control_is_escaped_visibly() {
        assert_eq!(text("\x1b]0;PWNED\x07\x1b[2J"), r"\x1b]0;PWNED\x07\x1b[2J");
        assert_eq!(text("a\nb\tc\r\0"), r"a\x0ab\x09c\x0d\x00");
        assert_eq!(text("del\x7f"), r"del\x7f");
        assert_eq!(text("csi\u{9b}31m"), r"csi\u{9b}31m");
        assert_eq!(text("\u{80}\u{9f}"), r"\u{80}\u{9f}");
        for c in [
            '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{202e}', '\u{2066}', '\u{2067}',
            '\u{2068}', '\u{2069}', '\u{200e}', '\u{200f}', '\u{061c}',
        ] {
            let t = text(&format!("evil{c}gpj.exe")).into_owned();
            assert_eq!(t, format!("evil\\u{{{:x}}}gpj.exe", c as u32), "{c:?}");
        }
        for c in ['\u{200b}', '\u{feff}', '\u{2028}', '\u{ad}', '\u{e0041}'] {
            assert!(!text(&format!("a{c}b")).contains(c), "{c:?}");
        }
    }

    #[test]
    fn ordinary_text_is_left_alone_and_borrowed() {
        for s in [
            "python3",
            "/usr/lib/x86_64-linux-gnu/libgomp.so.1",
            "café ünïcode 线程 🧵",
            r"C:\path with \x1b typed",
            "",
        ] {
            assert!(matches!(text(s), Cow::Borrowed(_)), "{s}");
        }
        assert!(matches!(block("why\n  do"), Cow::Borrowed(_)));
        assert_eq!(
            block("why\n\x1b[2J"),
            r"why
\x1b[2J"
        );
    }

    #[test]
    fn length_is_bounded_escapes_included_and_says_what_was_cut() {
        let long = "a".repeat(2 << 20);
        let t = text(&long);
        assert_eq!(
            t.chars().count(),
            FIELD_MAX - MARKER_MAX + "…(+2096160 bytes)".chars().count()
        );
        assert!(t.ends_with("…(+2096160 bytes)"), "{}", &t[t.len() - 40..]);
        let escapes = "\x1b".repeat(10_000);
        let t = text(&escapes);
        assert!(t.chars().count() <= FIELD_MAX, "{}", t.chars().count());
        assert!(t.starts_with(r"\x1b\x1b") && t.contains("…(+"));
        // Exactly at the cap: whole, no marker.
        let exact = "b".repeat(FIELD_MAX);
        assert_eq!(text(&exact), exact);
        assert!(text(&format!("{exact}b")).contains("…(+"));
        let lines = "x\n".repeat(1000);
        let l = line(&lines, 100);
        assert!(l.chars().count() <= 100 && !l.contains('\n'), "{l}");
    }

    #[test]
    fn escaping_twice_changes_nothing() {
        for s in [
            "\x1b]0;PWNED\x07".to_string(),
            "x".repeat(5000),
            "\u{9b}".repeat(3000),
            "ok".into(),
        ] {
            let once = text(&s).into_owned();
            assert_eq!(text(&once), once);
            assert_eq!(block(&once), once);
        }
    }

    #[test]
    fn json_escapes_c1_bidi_and_invisible_losslessly() {
        let name = "a\u{9b}b\u{202e}c\u{2066}d\x1be\x7ff\u{feff}g\u{e0041}h";
        let out = to_json(&serde_json::json!({ "comm": name })).unwrap();
        assert!(out.is_ascii(), "{out}");
        assert!(
            out.contains(r"\u009b") && out.contains(r"\u202e") && out.contains(r"\u2066"),
            "{out}"
        );
        assert!(out.contains(r"\u001b") && out.contains(r"\u007f"), "{out}");
        assert!(out.contains(r"\udb40\udc41"), "a surrogate pair: {out}");
        let back: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(back["comm"], name, "lossless");
        let pretty = to_json_pretty(&serde_json::json!({"a": "\u{85}", "b": 1})).unwrap();
        assert!(
            pretty.contains('\n') && pretty.contains(r"\u0085"),
            "{pretty}"
        );
        assert!(matches!(json("{\"a\":\"é\"}"), Cow::Borrowed(_)));
    }

    #[test]
    fn values_and_typed_copies_are_cleaned_keys_included() {
        let mut v = serde_json::json!({"k\x1b": ["\u{202e}", 1, {"x": "\n"}], "n": null});
        value(&mut v);
        assert_eq!(
            v,
            serde_json::json!({r"k\x1b": [r"\u{202e}", 1, {"x": r"\x0a"}], "n": null})
        );
        let t = crate::model::Task {
            time: "t".into(),
            pid: 1,
            tid: 2,
            comm: "\x1b[2J".into(),
            uid: 3,
        };
        let clean = for_display(&t).unwrap();
        assert_eq!(clean.comm, r"\x1b[2J");
        assert_eq!((clean.pid, clean.tid, clean.uid), (1, 2, 3));
    }

    #[test]
    fn shell_words_stay_data() {
        assert_eq!(shell("/sys/fs/cgroup/pids/app"), "/sys/fs/cgroup/pids/app");
        assert_eq!(
            shell("x;$(touch /tmp/pwned);#"),
            "'x;$(touch /tmp/pwned);#'"
        );
        assert_eq!(shell("it's"), r"'it'\''s'");
        assert_eq!(shell(""), "''");
        assert_eq!(shell("a b`c`"), "'a b`c`'");
        assert_eq!(shell("$HOME\n"), "'$HOME\n'");
    }
}
