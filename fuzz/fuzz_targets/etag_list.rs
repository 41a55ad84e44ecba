//! Entity-tags and quote-aware tag lists (`precondition::etag`): arbitrary bytes, split at `\n`
//! into the field lines of one list-valued header (no input: no line, `ListShape::Absent`).
//!
//! Asserts, for every line that `EntityTag::parse` accepts: the wire form re-parses to an equal
//! tag, equals the trimmed line byte for byte, passes `EntityTag::new`, compares equal to itself
//! (weakly; strongly unless weak), and is a one-member list. For the whole list (`scan_list`):
//! `Absent` exactly without lines; for `Tags`, the counts equal the members visited, every member
//! is a valid tag, and re-serialising the members (one line, or one line each) or joining the
//! original lines with `,` (RFC 9110 §5.3) scans to the same shape and members; `Any` visits none.
#![no_main]

use libfuzzer_sys::fuzz_target;
use precond::precondition::etag::{scan_list, EntityTag, ListShape};

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn scan<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> (ListShape, Vec<EntityTag<'a>>) {
    let mut seen = Vec::new();
    let shape = scan_list(lines, |t| seen.push(t));
    (shape, seen)
}

fn check_tag(line: &[u8]) {
    let Some(t) = EntityTag::parse(line) else {
        return;
    };
    let wire = t.to_wire();
    assert_eq!(EntityTag::parse(&wire), Some(t), "to_wire re-parses");
    assert_eq!(
        trim_ows(line),
        &wire[..],
        "the wire form is the trimmed value"
    );
    assert_eq!(
        EntityTag::new(t.is_weak(), t.opaque()),
        Some(t),
        "new accepts it"
    );
    assert!(t.weak_eq(&t));
    assert_eq!(t.strong_eq(&t), !t.is_weak());
    let display = t.to_display();
    assert!(display.starts_with(if t.is_weak() { "W/\"" } else { "\"" }) && display.ends_with('"'));
    let (shape, seen) = scan([line]);
    assert_eq!(
        shape,
        ListShape::Tags {
            count: 1,
            weak: usize::from(t.is_weak())
        },
        "one tag is a one-member list"
    );
    assert_eq!(seen, [t]);
}

fuzz_target!(|data: &[u8]| {
    let lines: Vec<&[u8]> = if data.is_empty() {
        Vec::new()
    } else {
        data.split(|&b| b == b'\n').collect()
    };
    for line in &lines {
        check_tag(line);
    }
    let (shape, seen) = scan(lines.iter().copied());
    match shape {
        ListShape::Absent => assert!(lines.is_empty(), "Absent only without lines"),
        ListShape::Any => {
            assert!(seen.is_empty(), "`*` alone visits no tag");
            let joined = lines.join(&b","[..]);
            assert_eq!(scan([&joined[..]]).0, ListShape::Any, "joined lines");
        }
        ListShape::Tags { count, weak } => {
            assert!(!lines.is_empty());
            assert_eq!(seen.len(), count, "count = members visited");
            assert_eq!(
                seen.iter().filter(|t| t.is_weak()).count(),
                weak,
                "weak count"
            );
            for t in &seen {
                assert_eq!(
                    EntityTag::new(t.is_weak(), t.opaque()),
                    Some(*t),
                    "valid member"
                );
            }
            // The members re-serialised on one line, and one line each.
            let wires: Vec<Vec<u8>> = seen.iter().map(EntityTag::to_wire).collect();
            let one_line = wires.join(&b", "[..]);
            assert_eq!(scan([&one_line[..]]), (shape, seen.clone()), "one line");
            if !wires.is_empty() {
                let again = scan(wires.iter().map(Vec::as_slice));
                assert_eq!(again, (shape, seen.clone()), "one line each");
            }
            // Several field lines form one list (RFC 9110 §5.3): joining them with a comma
            // changes nothing for a well-formed list.
            let joined = lines.join(&b","[..]);
            assert_eq!(scan([&joined[..]]), (shape, seen), "joined lines");
        }
        ListShape::Malformed => {}
    }
});
