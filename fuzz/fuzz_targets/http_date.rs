//! HTTP-dates (`precondition::date`): arbitrary bytes as one field value.
//!
//! What the module promises, and so what is asserted:
//! - `parse_http_date` accepts exactly what the RFC 9110 §5.6.7 grammar accepts (`date::grammar`,
//!   after trimming SP/HTAB), with the same timestamp: `httpdate` is only a fast path for part of
//!   it ("a value outside the grammar yields None").
//! - A parsed date formats (`format_http_date`) as a 29-byte IMF-fixdate that parses back to the
//!   same timestamp, but for the one second after 9999-12-31 23:59:59 (`23:59:60`), which is
//!   written as the last second of 9999.
//! - Surrounding SP/HTAB changes nothing; as a field (`parse_date_field`), one line is `Valid`
//!   exactly when the value parses, and two lines are `Invalid`.
#![no_main]

use std::time::{SystemTime, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use precond::precondition::date::{
    format_http_date, grammar, parse_date_field, parse_http_date, DateField,
};

/// The first second after 9999-12-31 23:59:59.
const FIRST_AFTER_9999: i64 = 253_402_300_800;

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The current year, as `date` computes it for two-digit years.
fn current_year() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    grammar::civil_from_days(now.div_euclid(86_400)).0
}

fuzz_target!(|data: &[u8]| {
    let parsed = parse_http_date(data);
    let year = current_year();
    let by_grammar = grammar::parse(trim_ows(data), year);
    // The year may turn between the two calls (once a year): the grammar then decides a two-digit
    // year differently, which is not a disagreement.
    if year == current_year() {
        assert_eq!(
            parsed, by_grammar,
            "parse_http_date and the RFC 9110 grammar disagree"
        );
    }

    // Surrounding OWS.
    let mut padded = b" \t".to_vec();
    padded.extend_from_slice(data);
    padded.extend_from_slice(b"\t ");
    assert_eq!(parse_http_date(&padded), parsed, "surrounding OWS");

    // As a field.
    let field = parse_date_field([data]);
    match parsed {
        Some(t) => assert_eq!(field, DateField::Valid(t)),
        None => assert_eq!(field, DateField::Invalid),
    }
    assert_eq!(
        parse_date_field([data, data]),
        DateField::Invalid,
        "two lines"
    );

    // Formatting round trip.
    if let Some(t) = parsed {
        assert!(
            t < FIRST_AFTER_9999 + 1,
            "beyond the grammar's last second: {t}"
        );
        let formatted = format_http_date(t);
        assert_eq!(formatted.len(), 29, "an IMF-fixdate: {formatted:?}");
        assert!(formatted.ends_with(" GMT"), "{formatted:?}");
        let want = t.min(FIRST_AFTER_9999 - 1);
        assert_eq!(
            parse_http_date(formatted.as_bytes()),
            Some(want),
            "{formatted:?} re-parses"
        );
        assert_eq!(
            grammar::format(want),
            formatted,
            "the grammar's formatter agrees"
        );
    }
});
