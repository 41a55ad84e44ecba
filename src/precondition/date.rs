//! HTTP-date fields (RFC 9110 §5.6.7) for `If-Modified-Since` and `If-Unmodified-Since`.
//!
//! Owns: turning the field lines of a date-valued precondition into a usable timestamp, or into
//! "ignore". The common path (IMF-fixdate and asctime within 1970–9999) is `httpdate`'s;
//! [`grammar`] parses what the RFC 9110 §5.6.7 grammar accepts and `httpdate` rejects, and every
//! rfc850-date (two-digit years follow the RFC's 50-year rule, which `httpdate` does not).
//!
//! Invariants:
//! - Timestamps are whole seconds since the Unix epoch, signed (years 0000 to 9999 are valid in
//!   the grammar; RFC 9110 compares at 1 s resolution).
//! - A value the grammar accepts is parsed: a day-name is not checked against the date (the RFC
//!   says nothing; RFC 5322 binds generators only), years before 1970 and asctime years below
//!   1000 are taken literally, `23:59:60` is a second after `23:59:59`.
//! - A field with more than one line, a value that is a list of dates, or a value outside the
//!   grammar (`UTC` instead of `GMT`, lower-case names, extra spaces, an impossible date such as
//!   31 Feb) yields `None`, which callers treat as "field absent" (RFC 9110 §13.1.3, §13.1.4).

use std::time::{SystemTime, UNIX_EPOCH};

use super::etag::trim_ows;

pub mod grammar;

/// Seconds since the Unix epoch (negative before 1970).
pub type Timestamp = i64;

/// What a date-valued precondition field turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DateField {
    /// No field line.
    Absent,
    /// Present but unusable (invalid, a list, several lines): the recipient MUST ignore it.
    Invalid,
    /// One valid HTTP-date.
    Valid(Timestamp),
}

impl DateField {
    /// The timestamp, when the field is usable.
    pub fn timestamp(self) -> Option<Timestamp> {
        match self {
            DateField::Valid(t) => Some(t),
            _ => None,
        }
    }
}

/// Reads a date-valued precondition from all of its field lines.
pub fn parse_date_field<'a, I>(lines: I) -> DateField
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut lines = lines.into_iter();
    let Some(first) = lines.next() else {
        return DateField::Absent;
    };
    if lines.next().is_some() {
        // "has more than one member": two field lines form a list of dates.
        return DateField::Invalid;
    }
    match parse_http_date(first) {
        Some(t) => DateField::Valid(t),
        None => DateField::Invalid,
    }
}

/// Parses one HTTP-date in any of the three formats. Surrounding OWS is tolerated.
pub fn parse_http_date(value: &[u8]) -> Option<Timestamp> {
    let value = trim_ows(value);
    // An rfc850-date (the only format with `-`) needs the RFC's two-digit-year rule. `httpdate`
    // trims every ASCII whitespace (CR, LF, VT, FF): a value it would trim more of than OWS is
    // left to the grammar, which refuses it.
    let space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    let edges_plain = |v: &[u8]| !v.first().is_some_and(space) && !v.last().is_some_and(space);
    if !value.contains(&b'-') && edges_plain(value) {
        if let Some(t) = std::str::from_utf8(value)
            .ok()
            .and_then(|s| httpdate::parse_http_date(s).ok())
            .and_then(to_timestamp)
        {
            return Some(t);
        }
    }
    grammar::parse(value, current_year())
}

/// The current year (UTC), for the two-digit years of rfc850-dates.
fn current_year() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    grammar::civil_from_days(now.div_euclid(86_400)).0
}

/// Converts a `SystemTime` to whole seconds (truncating sub-second parts, RFC 9110 §13.1.3 note).
pub fn to_timestamp(t: SystemTime) -> Option<Timestamp> {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).ok(),
        Err(e) => i64::try_from(e.duration().as_secs_f64().ceil() as u64)
            .ok()
            .map(|s| -s),
    }
}

/// Formats a timestamp as an IMF-fixdate, the only form a sender may generate. Years beyond
/// 9999 (only `9999-12-31 23:59:60`) are written as the last second of 9999.
pub fn format_http_date(t: Timestamp) -> String {
    const FIRST_AFTER_9999: Timestamp = 253_402_300_800;
    match u64::try_from(t) {
        Ok(secs) if t < FIRST_AFTER_9999 => {
            httpdate::fmt_http_date(UNIX_EPOCH + std::time::Duration::from_secs(secs))
        }
        _ => grammar::format(t.min(FIRST_AFTER_9999 - 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T_1994: Timestamp = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT

    #[test]
    fn only_ows_is_trimmed_around_a_date() {
        // Found by fuzzing: `httpdate` trims every ASCII whitespace.
        for v in [
            &b"Sun, 06 Nov 1994 08:49:37 GMT\x0b"[..],
            b"\x0cSun, 06 Nov 1994 08:49:37 GMT",
            b"Sun, 06 Nov 1994 08:49:37 GMT\r\n",
            b"Sun Nov  6 08:49:37 1994\x0b\x0b",
        ] {
            assert_eq!(parse_http_date(v), None, "{v:?}");
        }
        assert_eq!(
            parse_http_date(b" \tSun, 06 Nov 1994 08:49:37 GMT\t "),
            Some(T_1994)
        );
    }

    #[test]
    fn rfc9110_5_6_7_all_three_formats_are_accepted() {
        assert_eq!(
            parse_http_date(b"Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(T_1994)
        );
        assert_eq!(
            parse_http_date(b"Sunday, 06-Nov-94 08:49:37 GMT"),
            Some(T_1994)
        );
        assert_eq!(parse_http_date(b"Sun Nov  6 08:49:37 1994"), Some(T_1994));
    }

    #[test]
    fn rfc9110_5_6_7_zone_must_be_gmt_and_case_matters() {
        assert_eq!(parse_http_date(b"Sun, 06 Nov 1994 08:49:37 UTC"), None);
        assert_eq!(parse_http_date(b"sun, 06 nov 1994 08:49:37 gmt"), None);
    }

    #[test]
    fn rfc9110_5_6_7_a_contradicting_day_name_is_not_checked() {
        // httpdate rejects it; the grammar accepts it, and so do we (documented).
        assert_eq!(
            parse_http_date(b"Mon, 06 Nov 1994 08:49:37 GMT"),
            Some(T_1994)
        );
        assert_eq!(parse_http_date(b"Mon Nov  6 08:49:37 1994"), Some(T_1994));
        assert_eq!(
            parse_http_date(b"Monday, 06-Nov-94 08:49:37 GMT"),
            Some(T_1994)
        );
        // ... but it must be a day-name.
        assert_eq!(parse_http_date(b"Xyz, 06 Nov 1994 08:49:37 GMT"), None);
    }

    #[test]
    fn rfc9110_5_6_7_years_before_1970_are_taken_literally() {
        assert_eq!(
            parse_http_date(b"Sun, 01 Jan 1950 00:00:00 GMT"),
            Some(-631_152_000)
        );
        // asctime with a year below 1000: year 37, not 2037.
        let y37 = parse_http_date(b"Thu Jan  1 00:00:00 0037").unwrap();
        assert_eq!(y37, -60_999_523_200);
        assert_eq!(format_http_date(y37), "Thu, 01 Jan 0037 00:00:00 GMT");
        assert_eq!(
            format_http_date(-631_152_000),
            "Sun, 01 Jan 1950 00:00:00 GMT"
        );
    }

    #[test]
    fn rfc9110_5_6_7_two_digit_years_more_than_50_years_ahead_are_in_the_past() {
        let now = current_year();
        let ahead = |y: i64| format!("Sunday, 06-Nov-{:02} 08:49:37 GMT", y.rem_euclid(100));
        let year_of = |t: Timestamp| grammar::civil_from_days(t.div_euclid(86_400)).0;
        let in_50 = parse_http_date(ahead(now + 50).as_bytes()).unwrap();
        assert_eq!(year_of(in_50), now + 50);
        let in_51 = parse_http_date(ahead(now + 51).as_bytes()).unwrap();
        assert_eq!(year_of(in_51), now + 51 - 100);
        assert_eq!(
            parse_http_date(b"Sunday, 06-Nov-94 08:49:37 GMT"),
            Some(T_1994)
        );
    }

    #[test]
    fn rfc9110_5_6_7_leap_seconds_and_impossible_dates() {
        assert_eq!(
            parse_http_date(b"Sat, 31 Dec 2016 23:59:60 GMT"),
            parse_http_date(b"Sun, 01 Jan 2017 00:00:00 GMT")
        );
        for bad in [
            &b"Sun, 31 Feb 1994 08:49:37 GMT"[..],
            b"Sun, 29 Feb 1900 08:49:37 GMT",
            b"Sun, 06 Nov 1994 24:00:00 GMT",
            b"Sun, 06 Nov 1994 08:60:00 GMT",
            b"Sun, 06 Nov 1994 08:49:61 GMT",
            b"Sun,  06 Nov 1994 08:49:37 GMT",
            b"Sun, 6 Nov 1994 08:49:37 GMT",
            b"Sun Nov 6 08:49:37 1994",
            b"Sunday, 06-Nov-1994 08:49:37 GMT",
            b"Sun, 06-Nov-94 08:49:37 GMT",
        ] {
            assert_eq!(
                parse_http_date(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(parse_http_date(b"Tue, 29 Feb 2000 08:49:37 GMT").is_some());
        assert_eq!(
            format_http_date(parse_http_date(b"Fri, 31 Dec 9999 23:59:60 GMT").unwrap()),
            "Fri, 31 Dec 9999 23:59:59 GMT"
        );
    }

    #[test]
    fn rfc9110_13_1_3_list_of_dates_or_several_lines_is_ignored() {
        let one: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";
        assert_eq!(parse_date_field([one]), DateField::Valid(T_1994));
        assert_eq!(parse_date_field([one, one]), DateField::Invalid);
        assert_eq!(
            parse_date_field([
                &b"Sun, 06 Nov 1994 08:49:37 GMT, Sun, 06 Nov 1994 08:49:37 GMT"[..]
            ]),
            DateField::Invalid
        );
        assert_eq!(parse_date_field(std::iter::empty()), DateField::Absent);
        assert_eq!(parse_date_field([&b"yesterday"[..]]), DateField::Invalid);
    }

    #[test]
    fn format_round_trips() {
        assert_eq!(format_http_date(T_1994), "Sun, 06 Nov 1994 08:49:37 GMT");
    }
}
