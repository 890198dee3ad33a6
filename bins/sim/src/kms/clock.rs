//! The emulators' wall clock, which tests can shift, and the time formats AWS uses.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use kmstool_core::sigv4::AmzDate;

/// A wall clock: the system time plus an offset that tests can change while a server runs
/// (clones share the offset).
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    /// The system clock, unshifted.
    pub fn system() -> Self {
        Self::default()
    }

    /// The current time as this clock sees it.
    pub fn now(&self) -> SystemTime {
        let offset = self.offset_ms.load(Ordering::Relaxed);
        let magnitude = Duration::from_millis(offset.unsigned_abs());
        let now = SystemTime::now();
        let shifted = if offset >= 0 {
            now.checked_add(magnitude)
        } else {
            now.checked_sub(magnitude)
        };
        shifted.unwrap_or(now)
    }

    /// Sets the clock to run `seconds` ahead of the system clock (behind when negative).
    pub fn set_offset_secs(&self, seconds: i64) {
        self.offset_ms
            .store(seconds.saturating_mul(1000), Ordering::Relaxed);
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` (ISO 8601, UTC), as IMDS writes `Expiration` and `LastUpdated`.
pub fn iso8601(time: SystemTime) -> String {
    let d = AmzDate::from_system_time(time).date_time;
    // `d` is `YYYYMMDDTHHMMSSZ`, ASCII.
    format!(
        "{}-{}-{}T{}:{}:{}Z",
        &d[0..4],
        &d[4..6],
        &d[6..8],
        &d[9..11],
        &d[11..13],
        &d[13..15]
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SSZ` (what [`iso8601`] writes; fractional seconds are accepted
/// and dropped).
pub fn parse_iso8601(text: &str) -> Option<SystemTime> {
    let text = text.strip_suffix('Z')?;
    let text = text.split_once('.').map_or(text, |(whole, _)| whole);
    let (date, time) = text.split_once('T')?;
    if date.len() != 10 || time.len() != 8 {
        return None;
    }
    let compact = format!("{}T{}Z", date.replace('-', ""), time.replace(':', ""));
    AmzDate::parse(&compact)
}

/// An HTTP `Date` value (IMF-fixdate), e.g. `Sun, 29 Nov 2026 12:00:00 GMT`.
pub fn http_date(time: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let d = AmzDate::from_system_time(time).date_time;
    let month: usize = d[4..6].parse().unwrap_or(1);
    let weekday = DAYS
        .get((secs / 86_400 % 7) as usize)
        .copied()
        .unwrap_or("Thu");
    let month = MONTHS
        .get(month.saturating_sub(1))
        .copied()
        .unwrap_or("Jan");
    format!(
        "{weekday}, {} {month} {} {}:{}:{} GMT",
        &d[6..8],
        &d[0..4],
        &d[9..11],
        &d[11..13],
        &d[13..15]
    )
}

/// Seconds since the epoch as a JSON number with milliseconds, as KMS writes `CreationDate`.
pub fn epoch_seconds(time: SystemTime) -> f64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| (d.as_millis() as f64) / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn iso8601_round_trips(secs in 0u64..253_402_300_799) {
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            prop_assert_eq!(parse_iso8601(&iso8601(t)), Some(t));
        }

        #[test]
        fn iso8601_parser_never_panics(text in "\\PC{0,40}") {
            let _ = parse_iso8601(&text);
        }
    }

    #[test]
    fn formats_times() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_953_600);
        assert_eq!(iso8601(t), "2026-11-29T12:00:00Z");
        assert_eq!(http_date(t), "Sun, 29 Nov 2026 12:00:00 GMT");
        assert_eq!(parse_iso8601("2026-11-29T12:00:00Z"), Some(t));
        assert_eq!(parse_iso8601("2026-11-29T12:00:00.123Z"), Some(t));
        assert_eq!(parse_iso8601("2026-11-29 12:00:00Z"), None);
        assert_eq!(epoch_seconds(t), 1_795_953_600.0);
    }

    #[test]
    fn shifts() {
        let clock = Clock::system();
        clock.set_offset_secs(-3600);
        let behind = SystemTime::now()
            .duration_since(clock.now())
            .unwrap_or_default();
        assert!(behind >= Duration::from_secs(3599), "{behind:?}");
    }
}
