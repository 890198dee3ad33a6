//! The enclave's clock against KMS's: an enclave has no time service unless its image runs one,
//! and its clock drifts (seconds a week have been measured), while SigV4 allows five minutes.
//!
//! As the AWS SDKs do, a call learns the offset from the `Date` header of every KMS response
//! (successes and errors alike), a server or a client keeps the latest one in a [`KmsClock`]
//! shared by all its calls, and requests are signed at the local time plus that offset. In the
//! enclave the `Date` header arrives over TLS from KMS itself, so the parent cannot forge it;
//! it can only delay responses, so an offset is learned only from a response whose round trip
//! took under [`MAX_MEASURING_ROUND_TRIP`], and it is taken at the midpoint of send and
//! receive. The offset changes nothing but the signing time: certificate validity,
//! attestation, timeouts and logs stay on the local clock.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

/// Responses slower than this teach nothing about the clock: a parent delaying them could
/// bias the measurement by up to the round trip.
pub const MAX_MEASURING_ROUND_TRIP: Duration = Duration::from_secs(2);

/// A refused signature is signed again with KMS's time only when KMS's `Date` is this far from
/// the local clock (the AWS SDK for Java v2's rule): a nearer refusal is not about the clock.
pub const SKEW_RETRY_THRESHOLD: Duration = Duration::from_secs(4 * 60);

/// A change of the offset by more than this is logged at warn level.
pub const LOG_CHANGE: Duration = Duration::from_secs(60);

/// The error types with which AWS services refuse a request whose signing time is off.
pub const SKEW_ERROR_TYPES: &[&str] = &[
    "InvalidSignatureException",
    "RequestExpired",
    "RequestTimeTooSkewed",
    "SignatureDoesNotMatch",
    "AuthFailure",
    "RequestInTheFuture",
];

/// Whether `error_type` may mean the signing time was too far from the service's.
pub fn is_skew_error(error_type: Option<&str>) -> bool {
    error_type.is_some_and(|kind| SKEW_ERROR_TYPES.contains(&kind))
}

/// KMS's clock minus the local one, to the millisecond.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClockOffset {
    millis: i64,
}

impl ClockOffset {
    /// No offset.
    pub const ZERO: Self = Self { millis: 0 };

    /// `millis` milliseconds: KMS ahead when positive, behind when negative.
    pub const fn from_millis(millis: i64) -> Self {
        Self { millis }
    }

    /// The offset in milliseconds.
    pub const fn as_millis(self) -> i64 {
        self.millis
    }

    /// `remote` minus `local`.
    pub fn between(local: SystemTime, remote: SystemTime) -> Self {
        let millis = match remote.duration_since(local) {
            Ok(ahead) => i64::try_from(ahead.as_millis()).unwrap_or(i64::MAX),
            Err(behind) => -i64::try_from(behind.duration().as_millis()).unwrap_or(i64::MAX),
        };
        Self { millis }
    }

    /// `local` moved by the offset: what KMS's clock reads when the local one reads `local`.
    pub fn apply(self, local: SystemTime) -> SystemTime {
        let magnitude = Duration::from_millis(self.millis.unsigned_abs());
        let moved = if self.millis >= 0 {
            local.checked_add(magnitude)
        } else {
            local.checked_sub(magnitude)
        };
        moved.unwrap_or(local)
    }

    /// The size of the offset, whatever its sign.
    pub fn magnitude(self) -> Duration {
        Duration::from_millis(self.millis.unsigned_abs())
    }
}

impl fmt::Display for ClockOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.millis < 0 { "-" } else { "+" };
        let magnitude = self.millis.unsigned_abs();
        write!(f, "{sign}{}.{:03} s", magnitude / 1000, magnitude % 1000)
    }
}

/// `Date` of an HTTP response (IMF-fixdate, as KMS sends it), or `None` when it is missing or
/// unreadable.
pub fn parse_http_date(value: &str) -> Option<SystemTime> {
    let parsed = aws_smithy_types::DateTime::from_str(
        value.trim(),
        aws_smithy_types::date_time::Format::HttpDate,
    )
    .ok()?;
    SystemTime::try_from(parsed).ok()
}

/// The offset every call of one enclave server or library client signs with: the latest one
/// measured, whichever call measured it. Atomics, no lock: read at every call's start, written
/// by every measuring response.
#[derive(Debug)]
pub struct KmsClock {
    offset_millis: AtomicI64,
    /// The offset last logged at warn level (none yet: `i64::MIN`).
    logged_millis: AtomicI64,
}

impl Default for KmsClock {
    fn default() -> Self {
        Self {
            offset_millis: AtomicI64::new(0),
            logged_millis: AtomicI64::new(i64::MIN),
        }
    }
}

impl KmsClock {
    /// The offset to sign with now.
    pub fn offset(&self) -> ClockOffset {
        ClockOffset::from_millis(self.offset_millis.load(Ordering::Relaxed))
    }

    /// Keeps `measured` as the offset. Returns it when it should be logged at warn level: it
    /// differs by more than [`LOG_CHANGE`] from the last offset logged, counting zero as
    /// logged at the start (a clock in step is not news).
    pub fn record(&self, measured: ClockOffset) -> Option<ClockOffset> {
        self.offset_millis
            .store(measured.as_millis(), Ordering::Relaxed);
        let limit = i64::try_from(LOG_CHANGE.as_millis()).unwrap_or(i64::MAX);
        let mut logged = self.logged_millis.load(Ordering::Relaxed);
        loop {
            let last = if logged == i64::MIN { 0 } else { logged };
            if measured.as_millis().abs_diff(last) <= limit.unsigned_abs() {
                return None;
            }
            match self.logged_millis.compare_exchange(
                logged,
                measured.as_millis(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(measured),
                Err(now) => logged = now,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_move_times_both_ways_and_print_with_their_sign() {
        let local = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
        let ahead = local + Duration::from_millis(900_250);
        let offset = ClockOffset::between(local, ahead);
        assert_eq!(offset.as_millis(), 900_250);
        assert_eq!(offset.apply(local), ahead);
        assert_eq!(offset.to_string(), "+900.250 s");
        let behind = ClockOffset::between(ahead, local);
        assert_eq!(behind.as_millis(), -900_250);
        assert_eq!(behind.apply(ahead), local);
        assert_eq!(behind.to_string(), "-900.250 s");
    }

    #[test]
    fn http_dates_are_read_as_kms_sends_them() {
        let parsed = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").expect("IMF-fixdate");
        assert_eq!(
            parsed,
            SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777)
        );
        for bad in [
            "",
            "yesterday",
            "Sun, 06 Nov 1994 08:49:60 GMT",
            "06 Nov 1994",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_shared_clock_logs_changes_of_more_than_a_minute() {
        let clock = KmsClock::default();
        assert_eq!(
            clock.record(ClockOffset::from_millis(30_000)),
            None,
            "near zero"
        );
        assert_eq!(clock.offset().as_millis(), 30_000);
        let far = ClockOffset::from_millis(900_000);
        assert_eq!(clock.record(far), Some(far));
        assert_eq!(clock.record(ClockOffset::from_millis(930_000)), None);
        assert_eq!(
            clock.record(ClockOffset::from_millis(961_000)),
            Some(ClockOffset::from_millis(961_000))
        );
        // Back in step: that is news too, and the offset follows.
        assert_eq!(clock.record(ClockOffset::ZERO), Some(ClockOffset::ZERO));
        assert_eq!(clock.offset(), ClockOffset::ZERO);
    }
}
