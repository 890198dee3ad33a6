//! Fault injection, for testing clients' timeouts and retries: added latency, and a schedule
//! of failures for the first requests after the faults were set — first dropped connections,
//! then answers cut off halfway, then throttling, then internal errors, then normal service.

use std::time::Duration;

/// The faults to inject.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Delay before every answer (and before dropping).
    pub latency: Duration,
    /// The first this-many requests: the connection is closed after reading the request,
    /// without an answer.
    pub drop_first: u32,
    /// The next this-many: half of the answer is written, then the connection is closed
    /// (a connection lost during the reply).
    pub truncate_first: u32,
    /// The next this-many: `ThrottlingException` (400, "Rate exceeded").
    pub throttle_first: u32,
    /// The next this-many: `KMSInternalException` (500).
    pub fail_500_first: u32,
}

/// What to do to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injection {
    /// Serve it.
    None,
    /// Close the connection without answering.
    Drop,
    /// Write the first half of the answer, then close the connection.
    Truncate,
    /// Answer `ThrottlingException`.
    Throttle,
    /// Answer `KMSInternalException`.
    Internal,
}

/// The faults and how many requests they have seen.
#[derive(Debug, Clone, Default)]
pub struct FaultSchedule {
    faults: Faults,
    seen: u64,
}

impl FaultSchedule {
    /// A schedule starting now.
    pub fn new(faults: Faults) -> Self {
        Self { faults, seen: 0 }
    }

    /// The configured faults.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Decides the fate of the next request.
    pub fn next_request(&mut self) -> Injection {
        let index = self.seen;
        self.seen = self.seen.saturating_add(1);
        let drop_end = u64::from(self.faults.drop_first);
        let truncate_end = drop_end + u64::from(self.faults.truncate_first);
        let throttle_end = truncate_end + u64::from(self.faults.throttle_first);
        let internal_end = throttle_end + u64::from(self.faults.fail_500_first);
        if index < drop_end {
            Injection::Drop
        } else if index < truncate_end {
            Injection::Truncate
        } else if index < throttle_end {
            Injection::Throttle
        } else if index < internal_end {
            Injection::Internal
        } else {
            Injection::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_the_schedule_in_order() {
        let mut schedule = FaultSchedule::new(Faults {
            drop_first: 1,
            truncate_first: 1,
            throttle_first: 2,
            fail_500_first: 1,
            ..Faults::default()
        });
        let seen: Vec<Injection> = (0..7).map(|_| schedule.next_request()).collect();
        assert_eq!(
            seen,
            [
                Injection::Drop,
                Injection::Truncate,
                Injection::Throttle,
                Injection::Throttle,
                Injection::Internal,
                Injection::None,
                Injection::None
            ]
        );
        let mut none = FaultSchedule::default();
        assert_eq!(none.next_request(), Injection::None);
    }
}
