//! Proleptic Gregorian calendar arithmetic in UTC (days since the Unix
//! epoch, H. Hinnant's `days_from_civil` algorithms) and the [`HourUtc`] bucket
//! the egress report counts bytes in. Pure.

use std::fmt;

use serde::{Serialize, Serializer};

/// A UTC hour, counted in hours since 1970-01-01T00 (Unix epoch). Displays
/// and serializes as `YYYY-MM-DDTHH`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HourUtc(pub i64);

/// Days since 1970-01-01 of a proleptic Gregorian date (`month` 1..=12).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (month, day) = (i64::from(month), i64::from(day));
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Proleptic Gregorian `(year, month 1..=12, day 1..=31)` of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

/// Number of days in `month` (1..=12) of `year` (Gregorian leap years).
pub fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 0,
    }
}

impl HourUtc {
    /// The hour containing `seconds` seconds since the Unix epoch (UTC).
    pub fn from_unix_seconds(seconds: i64) -> Self {
        HourUtc(seconds.div_euclid(3600))
    }

    /// The hour `hour` (0..=23) of a UTC calendar date.
    pub fn from_civil(year: i64, month: u32, day: u32, hour: u32) -> Self {
        HourUtc(days_from_civil(year, month, day) * 24 + i64::from(hour))
    }
}

impl fmt::Display for HourUtc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (year, month, day) = civil_from_days(self.0.div_euclid(24));
        write!(f, "{year:04}-{month:02}-{day:02}T{:02}", self.0.rem_euclid(24))
    }
}

impl Serialize for HourUtc {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2019, 2, 6), 17_933);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        for days in (-800_000..800_000).step_by(97) {
            let (y, m, d) = civil_from_days(days);
            assert!((1..=days_in_month(y, m)).contains(&d));
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(1900, 2), 28);
        assert_eq!(days_in_month(2000, 2), 29);
    }

    #[test]
    fn hour_display() {
        assert_eq!(HourUtc::from_civil(2019, 2, 6, 0).to_string(), "2019-02-06T00");
        assert_eq!(HourUtc::from_unix_seconds(1_549_411_238).to_string(), "2019-02-06T00");
        assert_eq!(HourUtc::from_unix_seconds(-1).to_string(), "1969-12-31T23");
        assert_eq!(
            serde_json::to_string(&HourUtc::from_civil(2024, 2, 29, 23)).unwrap(),
            "\"2024-02-29T23\""
        );
    }
}
