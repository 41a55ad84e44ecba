//! What a client sent, made safe to repeat: in log lines and in problem bodies, a client must not
//! be able to make precond write more than a bounded amount for it, nor make it copy secrets
//! (tokens in query strings) into logs.
//!
//! Owns: [`Shown`] (a value as it is logged: whole when short, else a prefix, its length and a
//! short hash), [`target`] (a request target with its query redacted unless asked otherwise) and
//! [`capped`] (the members of a list field, at most a few and a few hundred bytes).
//!
//! Invariants:
//! - Every output is at most a fixed size whatever the input ([`MAX_SHOWN`] plus a short suffix,
//!   [`MAX_MEMBERS`] members of it).
//! - Truncation is always visible (`…`, the full length and a hash), never silent.
//! - Cuts fall on character boundaries: output is valid UTF-8.

use std::fmt;
use std::hash::{Hash, Hasher};

/// Longest value shown whole (bytes).
pub const MAX_SHOWN: usize = 256;
/// Most list members shown.
pub const MAX_MEMBERS: usize = 4;

/// A value as logged or echoed: whole when at most [`MAX_SHOWN`] bytes, otherwise its first
/// bytes, `…`, its length and a 32-bit hash (to tell two long values apart in logs).
pub struct Shown<'a>(pub &'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        if v.len() <= MAX_SHOWN {
            return f.write_str(v);
        }
        let mut cut = MAX_SHOWN;
        while !v.is_char_boundary(cut) {
            cut -= 1;
        }
        write!(
            f,
            "{}…({} bytes, #{:08x})",
            &v[..cut],
            v.len(),
            short_hash(v)
        )
    }
}

/// A 32-bit hash of `v` (stable within a build: SipHash with fixed keys).
fn short_hash(v: &str) -> u32 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    h.finish() as u32
}

/// A request target (path and query) as logged or echoed: the query is replaced by `?…` unless
/// `with_query`, and the result is bounded like [`Shown`].
pub fn target(path_and_query: &str, with_query: bool) -> String {
    let shown = match path_and_query.split_once('?') {
        Some((path, _)) if !with_query => format!("{path}?…"),
        _ => path_and_query.to_string(),
    };
    Shown(&shown).to_string()
}

/// The members of a list field as echoed: at most [`MAX_MEMBERS`], each bounded like [`Shown`],
/// and whether some were left out or cut.
pub fn capped<I, S>(members: I) -> (Vec<String>, bool)
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut out = Vec::new();
    let mut truncated = false;
    for (i, m) in members.into_iter().enumerate() {
        if i == MAX_MEMBERS {
            truncated = true;
            break;
        }
        let m = m.as_ref();
        truncated |= m.len() > MAX_SHOWN;
        out.push(Shown(m).to_string());
    }
    (out, truncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_shown_whole_and_long_ones_bounded() {
        assert_eq!(Shown("\"v1\"").to_string(), "\"v1\"");
        let long = "é".repeat(300_000);
        let shown = Shown(&long).to_string();
        assert!(shown.len() < MAX_SHOWN + 64, "{}", shown.len());
        assert!(shown.contains("…(600000 bytes, #"), "{shown}");
        assert_ne!(
            Shown(&"a".repeat(1000)).to_string(),
            Shown(&format!("{}b", "a".repeat(999))).to_string(),
            "two long values stay apart"
        );
    }

    #[test]
    fn queries_are_redacted_unless_asked() {
        assert_eq!(target("/a/b?token=secret", false), "/a/b?…");
        assert_eq!(target("/a/b?token=secret", true), "/a/b?token=secret");
        assert_eq!(target("/a/b", false), "/a/b");
        assert!(target(&format!("/{}", "x".repeat(70_000)), false).len() < MAX_SHOWN + 64);
    }

    #[test]
    fn lists_are_capped() {
        let (shown, cut) = capped(["\"a\"", "\"b\""]);
        assert_eq!((shown.len(), cut), (2, false));
        let many: Vec<String> = (0..1000).map(|i| format!("\"t{i}\"")).collect();
        let (shown, cut) = capped(&many);
        assert_eq!((shown.len(), cut), (MAX_MEMBERS, true));
        let (shown, cut) = capped([&"x".repeat(900_000)]);
        assert!(cut && shown[0].len() < MAX_SHOWN + 64);
    }
}
