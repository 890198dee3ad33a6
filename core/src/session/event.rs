//! What a session reports for logging. Nothing here ever holds a secret.

use std::fmt;
use std::time::Duration;

use super::call::CallId;
use crate::kms::call::KmsSummary;
use crate::kms::skew::ClockOffset;
use crate::protocol::{ErrorKind, Operation};

/// Why a session closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client ended its stream and every command was answered.
    ClientClosed,
    /// Nothing happened for the configured idle time.
    IdleTimeout,
    /// A message exceeded the cap (after the `Message size too large.` reply).
    MessageTooLarge,
    /// A message was not complete within the message timeout of its first byte; the commands
    /// before it were answered.
    MessageTimeout,
    /// The client did not take a reply within the message timeout of its queuing; the
    /// connection is cut without flushing (a client that never reads holds no slot).
    WriteTimeout,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ClientClosed => "client closed",
            Self::IdleTimeout => "idle timeout",
            Self::MessageTooLarge => "message too large",
            Self::MessageTimeout => "message not completed in time",
            Self::WriteTimeout => "replies not taken in time",
        })
    }
}

/// How loud an event is: what a driver logs it at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventLevel {
    /// Detail for debugging (each KMS attempt, an unwrap failure's cause).
    Debug,
    /// One line per command and per client change.
    Info,
    /// Something an operator may want to act on (retries, suppressed logs).
    Warn,
}

/// Something a driver may log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// Log lines of this connection were left out by the rate limit since the last one
    /// logged: replies that never reached KMS (errors, `SetClient`) log a burst, then a few a
    /// minute, so a client sending garbage cannot flood the log.
    Suppressed {
        /// Replies not logged.
        replies: u64,
    },
    /// A message was not a valid command.
    CommandRejected {
        /// The error text sent back.
        error: String,
    },
    /// `SetClient` succeeded.
    ClientSet {
        /// The region in use.
        region: String,
        /// The KMS host in use.
        host: String,
    },
    /// A KMS request was handed to the driver.
    KmsAttempt {
        /// The call.
        call: CallId,
        /// Operation.
        operation: Operation,
        /// 1 for the first attempt.
        attempt: u32,
        /// KMS host.
        host: String,
    },
    /// KMS answered an attempt.
    KmsAnswered {
        /// The call.
        call: CallId,
        /// Operation.
        operation: Operation,
        /// HTTP status.
        status: u16,
        /// KMS error type, for errors.
        error_type: Option<String>,
        /// From sending the request to the complete answer.
        latency: Duration,
    },
    /// An attempt failed in a way worth retrying; the next one starts after `delay`.
    KmsRetry {
        /// The call.
        call: CallId,
        /// Operation.
        operation: Operation,
        /// Wait before the next attempt.
        delay: Duration,
        /// What failed.
        reason: String,
    },
    /// KMS's `CiphertextForRecipient` did not open. The client only gets a fixed text, so
    /// that the cause (padding, key id, format) is no oracle; drivers log this at debug level.
    UnwrapFailed {
        /// The call.
        call: CallId,
        /// Operation.
        operation: Operation,
        /// The CMS error (carries no secret).
        detail: String,
    },
    /// A KMS response showed KMS's clock `offset` from ours. The driver keeps it in the
    /// server's [`KmsClock`](crate::kms::skew::KmsClock), which says when it is worth a warning.
    KmsClockOffset {
        /// The call.
        call: CallId,
        /// KMS's clock minus ours.
        offset: ClockOffset,
    },
    /// A reply was queued for the client.
    Replied {
        /// Operation, when the message named one.
        operation: Option<Operation>,
        /// `ErrorKind` of an error reply; `None` for success.
        error_kind: Option<ErrorKind>,
        /// `KmsErrorType` of an error reply.
        kms_error_type: Option<String>,
        /// KMS's last answer to the call, for KMS operations that got one.
        kms: Option<KmsSummary>,
        /// From receiving the command to the reply.
        latency: Duration,
    },
}

impl SessionEvent {
    /// The level to log this event at. An unwrap failure's detail stays out of the reply (no
    /// padding oracle) and out of the default level.
    pub fn level(&self) -> EventLevel {
        match self {
            Self::KmsAttempt { .. }
            | Self::KmsAnswered { .. }
            | Self::UnwrapFailed { .. }
            | Self::KmsClockOffset { .. } => EventLevel::Debug,
            Self::ClientSet { .. } | Self::CommandRejected { .. } | Self::Replied { .. } => {
                EventLevel::Info
            }
            Self::KmsRetry { .. } | Self::Suppressed { .. } => EventLevel::Warn,
        }
    }
}

impl fmt::Display for SessionEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Suppressed { replies } => write!(
                f,
                "{replies} repl{} not logged (rate limit of replies that did not reach KMS)",
                if *replies == 1 { "y" } else { "ies" }
            ),
            Self::CommandRejected { error } => write!(f, "rejected message: {error}"),
            Self::ClientSet { region, host } => {
                write!(f, "client set: region {region}, KMS {host}")
            }
            Self::KmsAttempt {
                call,
                operation,
                attempt,
                host,
            } => {
                write!(
                    f,
                    "{call} {} attempt {attempt} to {host}",
                    operation.as_str()
                )
            }
            Self::KmsAnswered {
                call,
                operation,
                status,
                error_type,
                latency,
            } => {
                write!(f, "{call} {} answered {status}", operation.as_str())?;
                if let Some(t) = error_type {
                    write!(f, " {t}")?;
                }
                write!(f, " in {:.1} ms", latency.as_secs_f64() * 1e3)
            }
            Self::KmsRetry {
                call,
                operation,
                delay,
                reason,
            } => write!(
                f,
                "{call} {} retry in {} ms after {reason}",
                operation.as_str(),
                delay.as_millis()
            ),
            Self::UnwrapFailed {
                call,
                operation,
                detail,
            } => write!(
                f,
                "{call} {} could not open CiphertextForRecipient: {detail}",
                operation.as_str()
            ),
            Self::KmsClockOffset { call, offset } => {
                write!(f, "{call} KMS's clock is {offset} from ours")
            }
            Self::Replied {
                operation,
                error_kind,
                kms_error_type,
                kms,
                latency,
            } => {
                let op = operation.map_or("(none)", Operation::as_str);
                match error_kind {
                    None => write!(f, "{op} ok")?,
                    Some(kind) => write!(f, "{op} error {kind}")?,
                }
                if let Some(t) = kms_error_type {
                    write!(f, " {t}")?;
                }
                write!(f, " in {:.1} ms", latency.as_secs_f64() * 1e3)?;
                match kms {
                    Some(kms) => write!(
                        f,
                        " (KMS {} in {:.1} ms, {} attempt{})",
                        kms.status,
                        kms.latency.as_secs_f64() * 1e3,
                        kms.attempts,
                        if kms.attempts == 1 { "" } else { "s" }
                    ),
                    None => Ok(()),
                }
            }
        }
    }
}
