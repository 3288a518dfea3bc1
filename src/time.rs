//! The clock and RFC 3339 dates, for webhook timestamps.
//!
//! Testing aid: in a debug build (the one `cargo test` runs), when the environment variable
//! `CIPHERSTREAM_NOW` holds a whole number of Unix seconds, [`now`] returns it instead of the
//! system clock, so tests can check stale and future timestamps against fixed bodies. A release
//! build ignores it: a stray variable on a production receiver must not move the clock that the
//! timestamp check trusts.

use crate::error::{Error, Result};

/// Environment variable overriding the current time (Unix seconds) in debug builds; a testing aid.
pub const ENV_NOW: &str = "CIPHERSTREAM_NOW";

/// The current time in Unix seconds: the system clock, or in a debug build `CIPHERSTREAM_NOW` when
/// set (a testing aid; one that is not a whole number is a usage error).
pub fn now() -> Result<i64> {
    #[cfg(debug_assertions)]
    if let Some(value) = std::env::var_os(ENV_NOW).filter(|v| !v.is_empty()) {
        let text = value.to_string_lossy();
        return text.trim().parse::<i64>().map_err(|_| {
            Error::Usage(format!(
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
    if p.at != text.len() {
        return Err(format!(
            "unexpected characters after the date-time at byte {}",
            p.at
        ));
    }
    if !(1..=12).contains(&month) {
        return Err(format!("month {month} is out of range"));
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err(format!(
            "day {day} is out of range for {year:04}-{month:02}"
        ));
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err(format!(
            "time {hour:02}:{minute:02}:{second:02} is out of range"
        ));
    }
    let days = days_from_civil(year, month, day);
    Ok(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

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
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
    fn days_from_civil_agrees_with_counting_days() {
        let mut days = 0;
        for year in 1970..2100 {
            for month in 1..=12 {
                assert_eq!(days_from_civil(year, month, 1), days, "{year}-{month}");
                days += days_in_month(year, month);
            }
        }
    }
}
