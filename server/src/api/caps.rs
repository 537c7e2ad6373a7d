//! Caps of the HTTP API: requests at once, messages in flight, and one deadline per request.
//!
//! A key proves who a caller is, not that it is well behaved: a backend in a retry loop, or a
//! leaked key, could otherwise open requests without limit, queue millions of messages ahead
//! of every WebSocket client, or upload a body one byte a minute. Beyond a cap the node answers
//! 503 with `Retry-After` at once, rather than queueing the caller: the caps keep the node's
//! memory and its broker's queue bounded, and the caller's retry logic paces itself.
//!
//! - **Requests**: `--api-max-concurrent` requests with a valid key are handled at once.
//! - **Messages in flight**: `--api-max-in-flight` messages queued to the broker and not yet
//!   accepted by it, over all requests. A batch takes its places before it queues anything and
//!   keeps them until its last message is settled, even if its caller has gone.
//! - **Deadline**: `--api-request-timeout-secs` from the moment the key is checked to the
//!   answer, body upload included: a body still arriving then gets 408 (the upload was the slow
//!   part), a publication still running gets 503.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::Failure;
use crate::metrics::CapRefusals;

/// Flags of the API caps.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiCapsConfig {
    /// Most HTTP API requests (with a valid key) handled at once; more get 503 with
    /// Retry-After (0: no limit).
    #[arg(long, env = "CHAT_API_MAX_CONCURRENT", default_value_t = 64)]
    pub api_max_concurrent: usize,

    /// Most API messages queued to the broker and not yet accepted, over all requests; a
    /// request that would exceed it gets 503 with Retry-After. At least --api-max-batch
    /// (0: no limit).
    #[arg(long, env = "CHAT_API_MAX_IN_FLIGHT", default_value_t = 40_000)]
    pub api_max_in_flight: usize,

    /// Seconds an API request may take from its headers to its answer, body upload included:
    /// a body still arriving then gets 408, a publication still running 503.
    #[arg(long, env = "CHAT_API_REQUEST_TIMEOUT", default_value_t = 30)]
    pub api_request_timeout_secs: u64,
}

/// When a request must be answered by; put in the request's extensions by the gate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(pub(crate) Instant);

/// The caps of one node's API.
pub(crate) struct Caps {
    requests: Option<Arc<Semaphore>>,
    messages: Option<Arc<Semaphore>>,
    max_in_flight: usize,
    timeout: Duration,
    refused: CapRefusals,
}

/// Places taken by one request; given back on drop.
pub(crate) type Places = Option<OwnedSemaphorePermit>;

impl Caps {
    /// The caps of `config`, counting what they refuse in `refused`.
    pub(crate) fn new(config: &ApiCapsConfig, refused: CapRefusals) -> Self {
        let semaphore = |max: usize| {
            (max > 0).then(|| Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))))
        };
        Caps {
            requests: semaphore(config.api_max_concurrent),
            messages: semaphore(config.api_max_in_flight),
            max_in_flight: config.api_max_in_flight,
            timeout: Duration::from_secs(config.api_request_timeout_secs),
            refused,
        }
    }

    /// The deadline of a request whose key was just checked.
    pub(crate) fn deadline(&self) -> Deadline {
        Deadline(Instant::now() + self.timeout)
    }

    /// A place among the requests handled at once.
    pub(crate) fn request(&self) -> Result<Places, Failure> {
        let Some(requests) = &self.requests else {
            return Ok(None);
        };
        requests.clone().try_acquire_owned().map(Some).map_err(|_| {
            self.refused.concurrency.inc();
            Failure::unavailable(
                "too many API requests at once on this node; retry after a second".to_owned(),
            )
        })
    }

    /// Places for `count` messages in flight.
    pub(crate) fn messages(&self, count: usize) -> Result<Places, Failure> {
        let Some(messages) = &self.messages else {
            return Ok(None);
        };
        let permits = u32::try_from(count).unwrap_or(u32::MAX);
        messages
            .clone()
            .try_acquire_many_owned(permits)
            .map(Some)
            .map_err(|_| {
                self.refused.in_flight.inc();
                Failure::unavailable(format!(
                    "this node has too many API messages in flight (at most {}); retry after a \
                     second",
                    self.max_in_flight
                ))
            })
    }

    /// The answer to a body upload cut at the deadline.
    pub(crate) fn upload_timed_out(&self) -> Failure {
        self.refused.deadline.inc();
        Failure::request_timeout(self.timeout)
    }

    /// The answer to a request whose work outlived the deadline.
    pub(crate) fn work_timed_out(&self) -> Failure {
        self.refused.deadline.inc();
        Failure::unavailable(format!(
            "the request was not done within {} s; what was queued may still be published",
            self.timeout.as_secs()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{ApiMetrics, Metrics};

    fn caps(concurrent: usize, in_flight: usize) -> Caps {
        let config = ApiCapsConfig {
            api_max_concurrent: concurrent,
            api_max_in_flight: in_flight,
            api_request_timeout_secs: 1,
        };
        Caps::new(&config, ApiMetrics::new(&Metrics::new()).refused)
    }

    #[test]
    fn requests_and_messages_are_capped_until_their_places_are_given_back() {
        let caps = caps(1, 10);
        let first = caps.request().unwrap();
        assert!(first.is_some());
        assert_eq!(caps.request().unwrap_err().status.as_u16(), 503);
        drop(first);
        assert!(caps.request().is_ok());

        let batch = caps.messages(8).unwrap();
        assert_eq!(caps.messages(3).unwrap_err().status.as_u16(), 503);
        let single = caps.messages(2).unwrap();
        drop(batch);
        assert!(caps.messages(8).is_ok());
        drop(single);
        assert_eq!(caps.refused.concurrency.get(), 1, "concurrency");
        assert_eq!(caps.refused.in_flight.get(), 1, "in flight");
    }

    #[test]
    fn zero_means_no_cap() {
        let caps = caps(0, 0);
        let held: Vec<_> = (0..1000).map(|_| caps.request().unwrap()).collect();
        assert!(held.iter().all(Option::is_none));
        assert!(caps.messages(1_000_000).is_ok());
    }
}
