//! [`KmsLink`]: the state of the one KMS connection a session's current call uses, generic over
//! the driver's stream and future types so both runtimes share it.
//!
//! A call's request is sent on a pooled connection when there is one. A pooled connection KMS
//! closed while it sat idle shows up as end-of-stream (or a reset) before any byte of the
//! answer; the link then resends on a fresh connection without the session seeing a failure,
//! so a stale keep-alive never costs an attempt. Everything else goes to the session.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::{CallId, EnclaveSession, Now, TransportFailure, TransportStage};

/// A request shared between the link and the future writing it.
pub type SharedRequest = Arc<Zeroizing<Vec<u8>>>;

/// The KMS connection of one session. `S` is the driver's TLS stream, `F` its future that
/// takes a connection (pooled when allowed) and writes the request, resolving to the stream and
/// whether it came from the pool.
#[derive(Debug)]
pub struct KmsLink<S, F> {
    state: State<S, F>,
}

#[derive(Debug)]
enum State<S, F> {
    Idle,
    Sending {
        call: CallId,
        host: String,
        request: SharedRequest,
        future: F,
    },
    Reading {
        call: CallId,
        host: String,
        request: SharedRequest,
        stream: S,
        reused: bool,
        received_any: bool,
    },
}

/// What the driver should wait on.
#[derive(Debug)]
pub enum LinkWait<'a, S, F> {
    /// Nothing: no call is talking to KMS.
    Idle,
    /// The send future.
    Sending(&'a mut F),
    /// A read on the stream.
    Reading(&'a mut S),
}

/// What a read on the stream gave.
#[derive(Debug, Clone, Copy)]
pub enum LinkRead<'a> {
    /// Bytes of the answer.
    Data(&'a [u8]),
    /// End of stream.
    Eof,
    /// The read failed (the OS error's text).
    Failed(&'a str),
}

impl<S, F> Default for KmsLink<S, F> {
    fn default() -> Self {
        Self { state: State::Idle }
    }
}

impl<S, F> KmsLink<S, F> {
    /// An idle link.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts sending `request` for `call` ([`super::Output::KmsSend`]); `send(host, request,
    /// may_reuse)` makes the driver's future.
    pub fn start(
        &mut self,
        call: CallId,
        host: String,
        request: Zeroizing<Vec<u8>>,
        send: impl FnOnce(&str, SharedRequest, bool) -> F,
    ) {
        let request = Arc::new(request);
        let future = send(&host, Arc::clone(&request), true);
        self.state = State::Sending {
            call,
            host,
            request,
            future,
        };
    }

    /// Handles [`super::Output::KmsRelease`]: returns the host and the stream when the
    /// driver should pool it; otherwise the connection is dropped here.
    pub fn release(&mut self, call: CallId, reusable: bool) -> Option<(String, S)> {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Reading {
                call: current,
                host,
                stream,
                ..
            } if current == call => reusable.then_some((host, stream)),
            State::Sending { call: current, .. } if current == call => None,
            other => {
                self.state = other;
                None
            }
        }
    }

    /// What to wait on next.
    pub fn wait(&mut self) -> LinkWait<'_, S, F> {
        match &mut self.state {
            State::Idle => LinkWait::Idle,
            State::Sending { future, .. } => LinkWait::Sending(future),
            State::Reading { stream, .. } => LinkWait::Reading(stream),
        }
    }

    /// The send future finished: the request is out on `stream` (`reused`: from the pool), or
    /// the connection failed.
    pub fn sent(
        &mut self,
        session: &mut EnclaveSession,
        now: Now,
        result: Result<(S, bool), TransportFailure>,
    ) {
        let State::Sending {
            call,
            host,
            request,
            ..
        } = std::mem::replace(&mut self.state, State::Idle)
        else {
            return;
        };
        match result {
            Ok((stream, reused)) => {
                self.state = State::Reading {
                    call,
                    host,
                    request,
                    stream,
                    reused,
                    received_any: false,
                };
            }
            Err(failure) => session.handle_kms_failure(now, call, failure),
        }
    }

    /// A read on the stream finished. `send` makes a fresh-connection future if a stale pooled
    /// connection has to be replaced.
    pub fn read(
        &mut self,
        session: &mut EnclaveSession,
        now: Now,
        read: LinkRead<'_>,
        send: impl FnOnce(&str, SharedRequest, bool) -> F,
    ) {
        let State::Reading {
            call,
            host,
            request,
            stream,
            reused,
            received_any,
        } = std::mem::replace(&mut self.state, State::Idle)
        else {
            return;
        };
        match read {
            LinkRead::Data(bytes) => {
                // Restore the state first: these bytes may complete the answer, and the
                // session then asks for the connection back.
                self.state = State::Reading {
                    call,
                    host,
                    request,
                    stream,
                    reused,
                    received_any: true,
                };
                session.handle_kms_bytes(now, call, bytes);
            }
            LinkRead::Eof | LinkRead::Failed(_) if reused && !received_any => {
                let future = send(&host, Arc::clone(&request), false);
                self.state = State::Sending {
                    call,
                    host,
                    request,
                    future,
                };
            }
            LinkRead::Eof => session.handle_kms_eof(now, call),
            LinkRead::Failed(error) => session.handle_kms_failure(
                now,
                call,
                TransportFailure::new(TransportStage::Io, error),
            ),
        }
    }
}
