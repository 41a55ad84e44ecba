//! The RFC 9110 §5.6.7 HTTP-date grammar, byte for byte: the fallback behind `httpdate`.
//!
//! Owns: [`parse`] (IMF-fixdate, rfc850-date, asctime-date), [`format()`] (IMF-fixdate for any
//! timestamp) and the proleptic Gregorian calendar arithmetic they share.
//!
//! Invariants:
//! - Fixed widths and spellings as the grammar says (case-sensitive names, `GMT`, single spaces,
//!   2-digit days but asctime's `SP 1DIGIT`); the day-name must be a day-name but is not checked
//!   against the date; a date that does not exist (31 Feb) is refused.
//! - A two-digit year is the most recent year with those digits that is not more than 50 years
//!   after `now_year` (RFC 9110 §5.6.7).

/// Seconds since the Unix epoch (the same type as `date::Timestamp`, which imports this file).
type Timestamp = i64;

const DAYS: [&[u8]; 7] = [b"Sun", b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat"];
const DAYS_LONG: [&[u8]; 7] = [
    b"Sunday",
    b"Monday",
    b"Tuesday",
    b"Wednesday",
    b"Thursday",
    b"Friday",
    b"Saturday",
];
const MONTHS: [&[u8]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// Parses one HTTP-date (no surrounding whitespace) in any of the three formats.
pub fn parse(v: &[u8], now_year: i64) -> Option<Timestamp> {
    if let Some(rest) = v
        .strip_prefix_any(&DAYS)
        .and_then(|r| r.strip_prefix(b", "))
    {
        // IMF-fixdate: DD SP Mon SP YYYY SP hh:mm:ss SP GMT
        let [d1, d2, b' ', m1, m2, m3, b' ', y1, y2, y3, y4, b' ', time @ .., b' ', b'G', b'M', b'T'] =
            rest
        else {
            return None;
        };
        let day = digits(&[*d1, *d2])?;
        let month = month(&[*m1, *m2, *m3])?;
        let year = digits(&[*y1, *y2, *y3, *y4])?;
        return timestamp(year, month, day, time);
    }
    if let Some(rest) = v
        .strip_prefix_any(&DAYS_LONG)
        .and_then(|r| r.strip_prefix(b", "))
    {
        // rfc850-date: DD-Mon-YY SP hh:mm:ss SP GMT
        let [d1, d2, b'-', m1, m2, m3, b'-', y1, y2, b' ', time @ .., b' ', b'G', b'M', b'T'] =
            rest
        else {
            return None;
        };
        let day = digits(&[*d1, *d2])?;
        let month = month(&[*m1, *m2, *m3])?;
        let yy = digits(&[*y1, *y2])?;
        let mut year = now_year - now_year.rem_euclid(100) + yy;
        if year > now_year + 50 {
            year -= 100;
        } else if year + 100 <= now_year + 50 {
            year += 100;
        }
        return timestamp(year, month, day, time);
    }
    if let Some(rest) = v.strip_prefix_any(&DAYS).and_then(|r| r.strip_prefix(b" ")) {
        // asctime-date: Mon SP (DD / SP D) SP hh:mm:ss SP YYYY
        let [m1, m2, m3, b' ', d1, d2, b' ', time @ .., b' ', y1, y2, y3, y4] = rest else {
            return None;
        };
        let month = month(&[*m1, *m2, *m3])?;
        let day = match (d1, d2) {
            (b' ', d) => digits(&[*d])?,
            (a, b) => digits(&[*a, *b])?,
        };
        let year = digits(&[*y1, *y2, *y3, *y4])?;
        return timestamp(year, month, day, time);
    }
    None
}

trait StripAny {
    fn strip_prefix_any(&self, names: &[&[u8]]) -> Option<&[u8]>;
}

impl StripAny for [u8] {
    fn strip_prefix_any(&self, names: &[&[u8]]) -> Option<&[u8]> {
        names.iter().find_map(|n| self.strip_prefix(*n))
    }
}

fn digits(b: &[u8]) -> Option<i64> {
    b.iter().try_fold(0i64, |n, c| {
        c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
    })
}

fn month(b: &[u8]) -> Option<u32> {
    MONTHS.iter().position(|m| *m == b).map(|i| i as u32 + 1)
}

/// `hh:mm:ss` on a valid date → seconds since the epoch.
fn timestamp(year: i64, month: u32, day: i64, time: &[u8]) -> Option<Timestamp> {
    let [h1, h2, b':', m1, m2, b':', s1, s2] = time else {
        return None;
    };
    let (h, m, s) = (
        digits(&[*h1, *h2])?,
        digits(&[*m1, *m2])?,
        digits(&[*s1, *s2])?,
    );
    // 60: a leap second (RFC 9110 §5.6.7 time-of-day), one second after :59.
    if h > 23 || m > 59 || s > 60 || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(year, month, day as u32) * 86_400 + h * 3600 + m * 60 + s)
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn days_in_month(y: i64, m: u32) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date (year, month, day) of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// An IMF-fixdate for any timestamp with a 4-digit year (callers clamp the others).
pub fn format(t: Timestamp) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let wday = (days + 4).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        String::from_utf8_lossy(DAYS[wday]),
        d,
        String::from_utf8_lossy(MONTHS[m as usize - 1]),
        y.clamp(0, 9999),
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The grammar parser and `httpdate` agree wherever `httpdate` accepts a value, and the
    /// formatter agrees with `httpdate`'s across its range.
    #[test]
    fn agrees_with_httpdate_on_its_range() {
        let mut t: Timestamp = 0;
        while t < 253_402_300_800 {
            let s = httpdate::fmt_http_date(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(t as u64),
            );
            assert_eq!(format(t), s);
            assert_eq!(parse(s.as_bytes(), 2026), Some(t), "{s}");
            t += 86_400 * 367 + 3_607;
        }
    }

    #[test]
    fn calendar_round_trips() {
        for z in [-800_000, -719_468, -1, 0, 1, 59, 10_956, 2_932_896] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z, "{z}");
        }
    }
}
