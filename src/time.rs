//! The clock and dates: RFC 3339 for webhook timestamps, `X-Amz-Date` for downloads.
//!
//! The calendar (which dates exist, leap years, days since the epoch) is jiff's. The layout is
//! checked here, by hand, because jiff has no strict RFC 3339 parser: its `Timestamp` parser takes
//! the lenient Temporal/RFC 9557 superset (a space for `T`, no seconds, `+0200` and `+02`, a
//! decimal comma, `[...]` annotations, the basic format), clamps a leap second to `:59`, takes at
//! most nine fraction digits, truncates towards zero, and ends its range at 9999-12-30T22:00Z.
//! Nor does its `strptime` read `X-Amz-Date` strictly: leading zeros are optional there, so
//! `%H%M%S` takes `10215` as 10:21:05. A date comes from a request or a server, so what is
//! accepted is pinned exactly, and each error names the byte or field at fault.
//!
//! Testing aid: in a debug build (the one `cargo test` runs), when the environment variable
//! `CIPHERSTREAM_NOW` holds a whole number of Unix seconds, [`now`] returns it instead of the
//! system clock, so tests can check stale and future timestamps against fixed bodies. A release
//! build ignores it: a stray variable on a production receiver must not move the clock that the
//! timestamp check trusts.

use jiff::civil;

use crate::error::Result;

/// Environment variable overriding the current time (Unix seconds) in debug builds; a testing aid.
pub const ENV_NOW: &str = "CIPHERSTREAM_NOW";

/// The current time in Unix seconds: the system clock, or in a debug build `CIPHERSTREAM_NOW` when
/// set (a testing aid; one that is not a whole number is a usage error).
pub fn now() -> Result<i64> {
    #[cfg(debug_assertions)]
    if let Some(value) = std::env::var_os(ENV_NOW).filter(|v| !v.is_empty()) {
        let text = value.to_string_lossy();
        return text.trim().parse::<i64>().map_err(|_| {
            crate::error::Error::Usage(format!(
                "{ENV_NOW} must be a whole number of Unix seconds, got {text:?}"
            ))
        });
    }
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    Ok(match since {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    })
}

/// Parse an RFC 3339 date-time, `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, into Unix seconds
/// (a fraction is truncated towards the earlier second). Strict: no other layout, no surrounding
/// space; `T` and `Z` may be lower case (RFC 3339 section 5.6). A leap second `:60` counts as the
/// next minute's `:00`. The error says what is wrong.
pub fn parse_rfc3339(text: &str) -> Result<i64, String> {
    let mut p = Cursor {
        bytes: text.as_bytes(),
        at: 0,
    };
    let year = p.number(4, "year")?;
    p.expect(b"-", "'-' after the year")?;
    let month = p.number(2, "month")?;
    p.expect(b"-", "'-' after the month")?;
    let day = p.number(2, "day")?;
    p.expect(b"Tt", "'T' between the date and the time")?;
    let hour = p.number(2, "hour")?;
    p.expect(b":", "':' after the hour")?;
    let minute = p.number(2, "minute")?;
    p.expect(b":", "':' after the minute")?;
    let second = p.number(2, "second")?;
    if p.peek() == Some(b'.') {
        p.at += 1;
        let start = p.at;
        while p.peek().is_some_and(|b| b.is_ascii_digit()) {
            p.at += 1;
        }
        if p.at == start {
            return Err(format!("expected a digit after '.' at byte {}", start));
        }
    }
    let offset = match p.peek() {
        Some(b'Z' | b'z') => {
            p.at += 1;
            0
        }
        Some(sign @ (b'+' | b'-')) => {
            p.at += 1;
            let hours = p.number(2, "offset hour")?;
            p.expect(b":", "':' in the UTC offset")?;
            let minutes = p.number(2, "offset minute")?;
            if hours > 23 || minutes > 59 {
                return Err(format!(
                    "UTC offset {hours:02}:{minutes:02} is out of range"
                ));
            }
            let seconds = hours * 3600 + minutes * 60;
            if sign == b'-' {
                -seconds
            } else {
                seconds
            }
        }
        _ => {
            return Err(format!(
                "expected 'Z' or a UTC offset such as +00:00 at byte {}",
                p.at
            ))
        }
    };
    p.end()?;
    Ok(unix_seconds(year, month, day, hour, minute, second)? - offset)
}

/// Parse an `X-Amz-Date` value, the ISO 8601 basic format that AWS Signature Version 4 writes,
/// `YYYYMMDDTHHMMSSZ` (always UTC, such as `20240926T100215Z`), into Unix seconds. Strict like
/// [`parse_rfc3339`]: exactly that layout, `T` and `Z` upper case; a leap second `:60` counts as
/// the next minute's `:00`. The error says what is wrong.
pub fn parse_amz_date(text: &str) -> Result<i64, String> {
    let mut p = Cursor {
        bytes: text.as_bytes(),
        at: 0,
    };
    let year = p.number(4, "year")?;
    let month = p.number(2, "month")?;
    let day = p.number(2, "day")?;
    p.expect(b"T", "'T' between the date and the time")?;
    let hour = p.number(2, "hour")?;
    let minute = p.number(2, "minute")?;
    let second = p.number(2, "second")?;
    p.expect(b"Z", "'Z' after the time")?;
    p.end()?;
    unix_seconds(year, month, day, hour, minute, second)
}

/// `unix_secs` as an RFC 3339 date-time in UTC, `YYYY-MM-DDTHH:MM:SSZ`, which [`parse_rfc3339`]
/// reads back. RFC 3339 writes four-digit years only: a time before 0000-01-01T00:00:00Z or
/// after 9999-12-31T23:59:59Z is written as that first or last second.
pub fn format_rfc3339(unix_secs: i64) -> String {
    const FIRST: civil::DateTime = civil::DateTime::constant(0, 1, 1, 0, 0, 0, 0);
    const LAST: civil::DateTime = civil::DateTime::constant(9999, 12, 31, 23, 59, 59, 0);
    UNIX_EPOCH
        .saturating_add(jiff::SignedDuration::from_secs(unix_secs))
        .clamp(FIRST, LAST)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The Unix seconds of a date and time of day in UTC, checked against the proleptic Gregorian
/// calendar by jiff. A `second` of 60 (a leap second, which Unix time does not count) is the next
/// minute's `:00`. The error names the field that is out of range.
fn unix_seconds(
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
) -> Result<i64, String> {
    if !(1..=12).contains(&month) {
        return Err(format!("month {month} is out of range"));
    }
    let date = match (i16::try_from(year), i8::try_from(month), i8::try_from(day)) {
        (Ok(y), Ok(m), Ok(d)) => civil::Date::new(y, m, d).ok(),
        _ => None,
    }
    .ok_or_else(|| format!("day {day} is out of range for {year:04}-{month:02}"))?;
    let leap = second == 60;
    let time = match (
        i8::try_from(hour),
        i8::try_from(minute),
        i8::try_from(if leap { 59 } else { second }),
    ) {
        (Ok(h), Ok(m), Ok(s)) => civil::Time::new(h, m, s, 0).ok(),
        _ => None,
    }
    .ok_or_else(|| format!("time {hour:02}:{minute:02}:{second:02} is out of range"))?;
    // Civil days are 86,400 seconds each, as Unix time counts them.
    let since_epoch = date.to_datetime(time).duration_since(UNIX_EPOCH);
    Ok(since_epoch.as_secs() + i64::from(leap))
}

/// 1970-01-01T00:00:00 as a civil date-time: Unix time's zero in UTC.
const UNIX_EPOCH: civil::DateTime = civil::DateTime::constant(1970, 1, 1, 0, 0, 0, 0);

/// A position in the text being parsed.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// Exactly `width` ASCII digits.
    fn number(&mut self, width: usize, what: &str) -> Result<i64, String> {
        let mut value = 0;
        for _ in 0..width {
            match self.peek() {
                Some(b) if b.is_ascii_digit() => value = value * 10 + i64::from(b - b'0'),
                _ => {
                    return Err(format!(
                        "expected {width} digits of the {what} at byte {}",
                        self.at
                    ))
                }
            }
            self.at += 1;
        }
        Ok(value)
    }

    /// One of the bytes in `any`.
    fn expect(&mut self, any: &[u8], what: &str) -> Result<(), String> {
        match self.peek() {
            Some(b) if any.contains(&b) => {
                self.at += 1;
                Ok(())
            }
            _ => Err(format!("expected {what} at byte {}", self.at)),
        }
    }

    /// Nothing left.
    fn end(&self) -> Result<(), String> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(format!(
                "unexpected characters after the date-time at byte {}",
                self.at
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utc_and_offsets() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
        // `date -u -d 2024-09-26T10:02:15Z +%s`
        assert_eq!(parse_rfc3339("2024-09-26T10:02:15Z"), Ok(1_727_344_935));
        assert_eq!(parse_rfc3339("2024-09-26t10:02:15z"), Ok(1_727_344_935));
        assert_eq!(
            parse_rfc3339("2024-09-26T12:02:15+02:00"),
            Ok(1_727_344_935)
        );
        assert_eq!(
            parse_rfc3339("2024-09-26T04:32:15-05:30"),
            Ok(1_727_344_935)
        );
        assert_eq!(
            parse_rfc3339("2024-09-26T10:02:15-00:00"),
            Ok(1_727_344_935)
        );
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Ok(-1));
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Ok(951_782_400));
        assert_eq!(parse_rfc3339("2038-01-19T03:14:08Z"), Ok(1 << 31));
        assert_eq!(parse_rfc3339("9999-12-31T23:59:59Z"), Ok(253_402_300_799));
        assert_eq!(parse_rfc3339("0000-03-01T00:00:00Z"), Ok(-62_162_035_200));
    }

    #[test]
    fn fractions_truncate_and_leap_seconds_roll_over() {
        assert_eq!(
            parse_rfc3339("2024-09-26T10:02:15.999999999Z"),
            Ok(1_727_344_935)
        );
        assert_eq!(
            parse_rfc3339("2024-09-26T10:02:15.5+00:00"),
            Ok(1_727_344_935)
        );
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59.5Z"), Ok(-1));
        assert_eq!(
            parse_rfc3339("2016-12-31T23:59:60Z"),
            parse_rfc3339("2017-01-01T00:00:00Z")
        );
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "2024-09-26",
            "2024-09-26T10:02:15",
            "2024-09-26 10:02:15Z",
            " 2024-09-26T10:02:15Z",
            "2024-09-26T10:02:15Z ",
            "2024-09-26T10:02Z",
            "24-09-26T10:02:15Z",
            "2024-9-26T10:02:15Z",
            "2024-09-26T10:02:15.Z",
            "2024-09-26T10:02:15+0200",
            "2024-09-26T10:02:15+02",
            "2024-09-26T10:02:15+24:00",
            "2024-09-26T10:02:15+02:60",
            "2024-09-26T10:02:15UTC",
            "2024-13-01T00:00:00Z",
            "2024-00-01T00:00:00Z",
            "2024-09-00T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2024-04-31T00:00:00Z",
            "2024-09-26T24:00:00Z",
            "2024-09-26T10:60:00Z",
            "2024-09-26T10:02:61Z",
            "+2024-09-26T10:02:15Z",
            "２０２４-09-26T10:02:15Z",
            "1727344935",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(
            parse_rfc3339("2023-02-29T00:00:00Z"),
            Err("day 29 is out of range for 2023-02".into())
        );
        assert_eq!(
            parse_rfc3339("2024-09-26T10:02:15"),
            Err("expected 'Z' or a UTC offset such as +00:00 at byte 19".into())
        );
    }

    #[test]
    fn agrees_with_jiffs_own_timestamp_parser() {
        // jiff's lenient parser goes through Timestamp, not civil arithmetic: a second opinion
        // on every month start and month end over two centuries, in three offsets.
        for year in 1900..2100 {
            for month in 1..=12 {
                let last = civil::date(year, month, 1).days_in_month();
                for (day, offset) in [(1, "Z"), (last, "+05:30"), (last, "-11:59")] {
                    let text = format!("{year:04}-{month:02}-{day:02}T23:59:59{offset}");
                    let want = text.parse::<jiff::Timestamp>().unwrap().as_second();
                    assert_eq!(parse_rfc3339(&text), Ok(want), "{text}");
                }
            }
        }
        assert_eq!(parse_rfc3339("0000-01-01T00:00:00Z"), Ok(-62_167_219_200));
    }

    #[test]
    fn amz_dates_parse_strictly() {
        assert_eq!(parse_amz_date("20240926T100215Z"), Ok(1_727_344_935));
        assert_eq!(parse_amz_date("19700101T000000Z"), Ok(0));
        assert_eq!(parse_amz_date("20000229T000000Z"), Ok(951_782_400));
        for bad in [
            "",
            "20240926",
            "20240926T100215",
            "20240926t100215Z",
            "20240926T100215z",
            "20240926 100215Z",
            "2024-09-26T10:02:15Z",
            "20240926T1002Z",
            "20240926T100215.5Z",
            "20240926T100215+0000",
            " 20240926T100215Z",
            "20240926T100215Z ",
            "+20240926T100215Z",
            "20241301T000000Z",
            "20230229T000000Z",
            "20240926T240000Z",
            "20240926T100261Z",
        ] {
            assert!(parse_amz_date(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(
            parse_amz_date("20240926T100215"),
            Err("expected 'Z' after the time at byte 15".into())
        );
        assert_eq!(
            parse_amz_date("20230229T000000Z"),
            Err("day 29 is out of range for 2023-02".into())
        );
    }

    #[test]
    fn formats_rfc3339_that_parses_back() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_727_344_935), "2024-09-26T10:02:15Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(format_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_rfc3339(-62_167_219_200), "0000-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
        // Beyond what RFC 3339 can write: the first or last second it can.
        assert_eq!(format_rfc3339(-62_167_219_201), "0000-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(i64::MIN), "0000-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(253_402_300_800), "9999-12-31T23:59:59Z");
        assert_eq!(format_rfc3339(i64::MAX), "9999-12-31T23:59:59Z");
        // Round trips over the whole range, through both parsers.
        let mut secs = -62_167_219_200;
        while secs <= 253_402_300_799 {
            let text = format_rfc3339(secs);
            assert_eq!(parse_rfc3339(&text), Ok(secs), "{text}");
            let amz: String = text.chars().filter(|c| !matches!(c, '-' | ':')).collect();
            assert_eq!(parse_amz_date(&amz), Ok(secs), "{amz}");
            secs += 9_999_991;
        }
    }
}
