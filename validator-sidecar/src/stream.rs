//! The answers of one `ValidateStream` call, produced as the transport asks for them.
//!
//! [`AnswerStream`] is the response stream itself: each time tonic polls it for the next
//! answer it first hands over a finished verification, then reads the next request and
//! answers it on the spot when no signature needs checking (a cache hit, an early
//! refusal); a request that needs one is verified in a task of its own, so expensive
//! verifications run in parallel and out of order. On a runtime with a single worker
//! there is no parallelism to gain, and a task per verification would only add
//! scheduling: the signature is then checked here, in the stream's own task, and only a
//! request waiting for the resync its unknown kid started is set aside (polled here, so
//! the requests behind it overtake it). No task or channel sits between the
//! transport and the validator: tonic encodes every answer that is ready into one buffer
//! before writing, so a burst of cache hits goes out in one write.
//!
//! Backpressure: at most [`MAX_IN_FLIGHT_PER_STREAM`] verifications run at once, and
//! requests are read only while tonic asks for answers, which it does only while the
//! HTTP/2 stream has send capacity. A client that stops reading therefore stops the
//! sidecar reading its requests, and flow control pushes back on it. Nothing is queued
//! without bound.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, Stream, StreamExt};
use tessera_proto::v1 as pb;
use tokio::sync::watch;
use tonic::{Status, Streaming};

use crate::answer::StreamAnswer;
use crate::convert;
use crate::validator::Validator;

/// Verifications running at once in one stream.
pub const MAX_IN_FLIGHT_PER_STREAM: usize = 64;

/// The response stream of one `ValidateStream` call.
pub struct AnswerStream {
    validator: Arc<Validator>,
    /// The requests; `None` once the client finished, failed, or the sidecar is shutting
    /// down (the verifications in flight still answer).
    inbound: Option<Streaming<pb::ValidateStreamRequest>>,
    /// Verifications under way: spawned tasks, or (one worker) requests waiting for a
    /// resync, polled here.
    in_flight: FuturesUnordered<BoxFuture<'static, Option<StreamAnswer>>>,
    /// True when verifications get tasks of their own (the runtime has several workers).
    spawn: bool,
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl AnswerStream {
    /// Answers the requests of `inbound`; stops reading them once `shutdown` turns true.
    pub fn new(
        validator: Arc<Validator>,
        inbound: Streaming<pb::ValidateStreamRequest>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Self {
        let spawn = tokio::runtime::Handle::try_current()
            .is_ok_and(|runtime| runtime.metrics().num_workers() > 1);
        AnswerStream {
            validator,
            inbound: Some(inbound),
            in_flight: FuturesUnordered::new(),
            spawn,
            shutdown: Box::pin(async move {
                let _ = shutdown.wait_for(|stopping| *stopping).await;
            }),
        }
    }

    /// Answers `request` now when it can; otherwise starts its verification. With
    /// several workers only what needs no signature check is answered here (a cache hit,
    /// an early refusal) and the rest gets a task; with one worker everything is answered
    /// here except a request waiting for the resync its unknown kid started.
    fn take(&mut self, request: pb::ValidateStreamRequest) -> Option<StreamAnswer> {
        if self.spawn {
            self.take_or_spawn(request)
        } else {
            self.take_in_place(request)
        }
    }

    /// Several workers: answers what needs no signature check, gives the rest a task.
    fn take_or_spawn(&mut self, request: pb::ValidateStreamRequest) -> Option<StreamAnswer> {
        let request_id = request.request_id;
        let cheap = match convert::stream_query(&request) {
            Ok(query) => self.validator.validate_cheap(&query),
            Err(rejection) => Some(self.validator.refuse(rejection)),
        };
        if let Some(verdict) = cheap {
            return Some(StreamAnswer {
                request_id,
                verdict,
            });
        }
        let validator = self.validator.clone();
        let task = tokio::spawn(async move {
            let verdict = match convert::stream_query(&request) {
                Ok(query) => validator.validate(&query).await,
                Err(rejection) => validator.refuse(rejection),
            };
            StreamAnswer {
                request_id,
                verdict,
            }
        });
        self.in_flight.push(
            task.map(|joined| {
                // A verification panicked: a bug, logged; the other answers go on.
                joined
                    .inspect_err(|error| tracing::error!(%error, "a stream validation task failed"))
                    .ok()
            })
            .boxed(),
        );
        None
    }

    /// One worker: answers here, unless the request waits for the resync its unknown kid
    /// started (then set aside, and polled with the others in flight).
    fn take_in_place(&mut self, request: pb::ValidateStreamRequest) -> Option<StreamAnswer> {
        let request_id = request.request_id;
        let now = match convert::stream_query(&request) {
            Ok(query) => self.validator.validate_now(&query),
            Err(rejection) => Ok(self.validator.refuse(rejection)),
        };
        match now {
            Ok(verdict) => Some(StreamAnswer {
                request_id,
                verdict,
            }),
            Err(wait) => {
                let validator = self.validator.clone();
                self.in_flight.push(
                    async move {
                        // The query was valid a moment ago: only a valid one can wait.
                        let verdict = match convert::stream_query(&request) {
                            Ok(query) => validator.validate_after(&query, wait).await,
                            Err(rejection) => validator.refuse(rejection),
                        };
                        Some(StreamAnswer {
                            request_id,
                            verdict,
                        })
                    }
                    .boxed(),
                );
                None
            }
        }
    }
}

impl Stream for AnswerStream {
    type Item = Result<StreamAnswer, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            // Finished verifications first: they have waited longest.
            match this.in_flight.poll_next_unpin(cx) {
                Poll::Ready(Some(Some(answer))) => return Poll::Ready(Some(Ok(answer))),
                Poll::Ready(Some(None)) => continue,
                // Nothing in flight, or nothing finished (this task is woken when it is).
                Poll::Ready(None) | Poll::Pending => {}
            }
            let Some(inbound) = this.inbound.as_mut() else {
                return if this.in_flight.is_empty() {
                    Poll::Ready(None)
                } else {
                    Poll::Pending
                };
            };
            if this.shutdown.as_mut().poll(cx).is_ready() {
                this.inbound = None;
                continue;
            }
            if this.in_flight.len() >= MAX_IN_FLIGHT_PER_STREAM {
                // Read on once a verification finishes (it wakes this task).
                return Poll::Pending;
            }
            match inbound.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(request))) => {
                    if let Some(answer) = this.take(request) {
                        return Poll::Ready(Some(Ok(answer)));
                    }
                }
                Poll::Ready(None) => this.inbound = None,
                Poll::Ready(Some(Err(status))) => {
                    tracing::debug!(%status, "validation stream ended by the client");
                    this.inbound = None;
                }
            }
        }
    }
}
