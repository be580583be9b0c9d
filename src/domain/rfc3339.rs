//! Serializes `DateTime<Utc>` exactly as chrono's own `Serialize` does (RFC 3339, `Z`, fractional
//! seconds in 0, 3, 6 or 9 digits, whichever is exact), without going through `fmt`: chrono
//! writes a timestamp through a dozen formatter calls, each escaped again by serde_json, which
//! made timestamps about a third of the cost of serializing an incident. Deserializing is
//! chrono's own. Years outside 0–9999 and leap seconds are left to chrono.
//!
//! Use: `#[serde(serialize_with = "crate::domain::rfc3339::serialize")]`, or
//! `crate::domain::rfc3339::option` for an `Option`.

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use serde::Serializer;

/// The longest fast-path form: `2026-11-30T09:53:37.353402232Z`.
const MAX_LEN: usize = 30;

fn two(out: &mut [u8], at: usize, v: u32) {
    out[at] = b'0' + (v / 10) as u8;
    out[at + 1] = b'0' + (v % 10) as u8;
}

/// Writes `t` into `out`; `None` where chrono's own formatting is needed.
fn format(t: &DateTime<Utc>, out: &mut [u8; MAX_LEN]) -> Option<usize> {
    let year = t.year();
    let nano = t.nanosecond();
    if !(0..=9999).contains(&year) || nano >= 1_000_000_000 {
        return None;
    }
    let year = year as u32;
    two(out, 0, year / 100);
    two(out, 2, year % 100);
    out[4] = b'-';
    two(out, 5, t.month());
    out[7] = b'-';
    two(out, 8, t.day());
    out[10] = b'T';
    two(out, 11, t.hour());
    out[13] = b':';
    two(out, 14, t.minute());
    out[16] = b':';
    two(out, 17, t.second());
    let mut len = 19;
    let (digits, mut frac) = if nano == 0 {
        (0, 0)
    } else if nano % 1_000_000 == 0 {
        (3, nano / 1_000_000)
    } else if nano % 1_000 == 0 {
        (6, nano / 1_000)
    } else {
        (9, nano)
    };
    if digits > 0 {
        out[len] = b'.';
        for i in (0..digits).rev() {
            out[len + 1 + i] = b'0' + (frac % 10) as u8;
            frac /= 10;
        }
        len += 1 + digits;
    }
    out[len] = b'Z';
    Some(len + 1)
}

pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; MAX_LEN];
    match format(t, &mut buf) {
        // Only ASCII digits and separators were written.
        Some(n) => s.serialize_str(std::str::from_utf8(&buf[..n]).expect("ASCII")),
        None => s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
    }
}

pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&Rfc3339(t)),
            None => s.serialize_none(),
        }
    }

    struct Rfc3339<'a>(&'a DateTime<Utc>);

    impl serde::Serialize for Rfc3339<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            super::serialize(self.0, s)
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, TimeZone};
    use serde::Serialize;

    use super::*;

    #[derive(Serialize)]
    struct Fast {
        #[serde(serialize_with = "serialize")]
        t: DateTime<Utc>,
        #[serde(serialize_with = "option::serialize")]
        o: Option<DateTime<Utc>>,
    }

    #[derive(Serialize)]
    struct Chrono {
        t: DateTime<Utc>,
        o: Option<DateTime<Utc>>,
    }

    fn same(t: DateTime<Utc>) {
        for o in [Some(t), None] {
            let fast = serde_json::to_string(&Fast { t, o }).unwrap();
            let chrono = serde_json::to_string(&Chrono { t, o }).unwrap();
            assert_eq!(fast, chrono, "{t:?}");
        }
    }

    #[test]
    fn writes_what_chrono_writes() {
        let base = Utc.with_ymd_and_hms(2026, 11, 30, 9, 53, 37).unwrap();
        for nanos in [
            0,
            1,
            9,
            10,
            999,
            1_000,
            1_001,
            120_000,
            999_999,
            1_000_000,
            1_000_001,
            7_000_000,
            353_402_232,
            500_000_000,
            999_999_999,
        ] {
            same(base + chrono::Duration::nanoseconds(nanos));
        }
        // A spread of dates, times and precisions, and the edges of the fast path.
        let mut x: i64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let secs = x.rem_euclid(253_402_300_799); // 0000-01-01 … 9999-12-31 after 1970 shift
            let nanos = (x >> 20).rem_euclid(1_000_000_000) as u32;
            let t = DateTime::from_timestamp(secs - 62_167_219_200, nanos).unwrap();
            same(t);
            same(DateTime::from_timestamp(t.timestamp(), nanos / 1_000 * 1_000).unwrap());
            same(DateTime::from_timestamp(t.timestamp(), nanos / 1_000_000 * 1_000_000).unwrap());
        }
        same(Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap());
        same(Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap());
        // Left to chrono: years beyond 9999 and before 0, and a leap second.
        same(Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap());
        same(Utc.with_ymd_and_hms(-1, 12, 31, 23, 59, 59).unwrap());
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31)
            .unwrap()
            .and_hms_nano_opt(23, 59, 59, 1_500_000_000)
            .unwrap()
            .and_utc();
        same(leap);
    }

    #[test]
    fn reads_back_as_the_same_instant() {
        let t = Utc::now();
        let json = serde_json::to_string(&Fast { t, o: Some(t) }).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let back: DateTime<Utc> = serde_json::from_value(v["t"].clone()).unwrap();
        assert_eq!(back, t);
    }
}
