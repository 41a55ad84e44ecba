//! HTTP-date fields (RFC 9110 §5.6.7) for `If-Modified-Since` and `If-Unmodified-Since`.
//!
//! Owns: turning the field lines of a date-valued precondition into a usable timestamp, or into
//! "ignore". Parsing of the three date formats is delegated to `httpdate`.
//!
//! Invariants:
//! - Timestamps are whole seconds since the Unix epoch (RFC 9110 compares at 1 s resolution).
//! - A field with more than one line, a value that is a list of dates, an invalid date, or a date
//!   `httpdate` rejects (years before 1970, a day-name that contradicts the date, `UTC` instead of
//!   `GMT`) yields `None`, which callers treat as "field absent" (RFC 9110 §13.1.3, §13.1.4).

use std::time::{SystemTime, UNIX_EPOCH};

use super::etag::trim_ows;

/// Seconds since the Unix epoch.
pub type Timestamp = u64;

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
    let s = std::str::from_utf8(trim_ows(value)).ok()?;
    let t = httpdate::parse_http_date(s).ok()?;
    to_timestamp(t)
}

/// Converts a `SystemTime` to whole seconds (truncating sub-second parts, RFC 9110 §13.1.3 note).
pub fn to_timestamp(t: SystemTime) -> Option<Timestamp> {
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// Formats a timestamp as an IMF-fixdate, the only form a sender may generate.
pub fn format_http_date(t: Timestamp) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + std::time::Duration::from_secs(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T_1994: Timestamp = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT

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
    fn rfc9110_5_6_7_contradicting_day_name_is_invalid() {
        // httpdate rejects it; we document that the field is then ignored.
        assert_eq!(parse_http_date(b"Mon, 06 Nov 1994 08:49:37 GMT"), None);
    }

    #[test]
    fn rfc9110_5_6_7_years_before_1970_are_invalid() {
        assert_eq!(parse_http_date(b"Thu, 01 Jan 1950 00:00:00 GMT"), None);
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
