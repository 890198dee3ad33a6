//! The state of one HTTP request of a credential fetch, shared by the IMDS and container
//! clients: queued, its response being read, finished, or handed out.

use zeroize::Zeroizing;

use super::FetchOutput;
use crate::http::{HttpError, HttpLimits, Progress, Response, ResponseParser};

/// One request and its response; `T` is the fetch's result.
pub(super) enum Exchange<T> {
    /// A request to hand out through `poll_output`.
    Queued(Zeroizing<Vec<u8>>),
    /// Request handed out; reading its response.
    Waiting(ResponseParser),
    /// The result, not yet polled.
    Finished(T),
    /// `Done` was polled.
    Closed,
}

impl<T> Exchange<T> {
    /// Hands out a queued request (then reads its response with `limits`) or the result.
    pub(super) fn poll_output(
        &mut self,
        host: &str,
        port: u16,
        limits: HttpLimits,
    ) -> Option<FetchOutput<T>> {
        match std::mem::replace(self, Self::Closed) {
            Self::Queued(request) => {
                *self = Self::Waiting(ResponseParser::new(limits));
                Some(FetchOutput::Send {
                    host: host.to_owned(),
                    port,
                    request_bytes: request,
                })
            }
            Self::Finished(result) => Some(FetchOutput::Done(result)),
            waiting @ Self::Waiting(_) => {
                *self = waiting;
                None
            }
            Self::Closed => None,
        }
    }

    /// Whether a request is queued or outstanding (so a deadline applies).
    pub(super) fn is_open(&self) -> bool {
        matches!(self, Self::Queued(_) | Self::Waiting(_))
    }

    /// Feeds response bytes: `Some` once the response is complete or broken. Ignored (`None`)
    /// when no response is being read.
    pub(super) fn feed(&mut self, bytes: &[u8]) -> Option<Result<Response, HttpError>> {
        let Self::Waiting(parser) = self else {
            return None;
        };
        match parser.feed(bytes) {
            Ok(Progress::NeedMore) => None,
            Ok(Progress::Complete(response)) => Some(Ok(response)),
            Err(error) => Some(Err(error)),
        }
    }

    /// The peer closed: the response as it stands, or why it is incomplete. `None` when no
    /// response is being read.
    pub(super) fn eof(&mut self) -> Option<Result<Response, HttpError>> {
        match self {
            Self::Waiting(parser) => Some(parser.eof()),
            _ => None,
        }
    }

    /// `Queued`, `Waiting`, `Finished(ok: …)` or `Closed`, for Debug output; never the
    /// request, which may hold a token.
    pub(super) fn describe(&self, is_ok: impl Fn(&T) -> bool) -> String {
        match self {
            Self::Queued(_) => "Queued".to_owned(),
            Self::Waiting(_) => "Waiting".to_owned(),
            Self::Finished(result) => format!("Finished(ok: {})", is_ok(result)),
            Self::Closed => "Closed".to_owned(),
        }
    }
}
