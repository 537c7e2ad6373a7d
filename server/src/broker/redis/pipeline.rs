//! The publisher connection's queue: every request in call order, many per round trip.
//!
//! One task sends everything queued since its last round trip as the next pipeline, so
//! batches grow with load and order is never in question: requests reach Redis in exactly
//! the order they were made, which is how one client's messages keep their order without the
//! caller sequencing anything. Each command gets its own result: one refused message (say, by
//! an ACL) is not reported as lost for the others, which went through.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use redis::aio::MultiplexedConnection;
use redis::{RedisError, Value};
use tokio::sync::{mpsc, oneshot};

use super::scripts::{self, SCRIPTS};
use super::supervisor::State;
use crate::broker::{BadReply, BrokerError, BrokerFuture};

/// Most commands in one pipeline.
const PIPELINE_BATCH: usize = 512;

/// The callers' end of the queue.
pub(super) struct Pipeline {
    state: Arc<State>,
    /// Unbounded, but bounded in practice: every session has at most `--max-in-flight`
    /// requests waiting, and publishes are among them.
    requests: mpsc::UnboundedSender<Request>,
}

/// A command for the publisher connection.
struct Request {
    cmd: redis::Cmd,
    /// Set for publishes, whose time to acceptance is measured.
    queued: Option<Instant>,
    /// `None` when nobody waits for the outcome.
    done: Option<oneshot::Sender<Result<Value, BrokerError>>>,
}

impl Pipeline {
    /// Starts the task that sends the queue; it ends once the pipeline is dropped.
    pub(super) fn start(state: Arc<State>, timeout: Duration) -> Self {
        let (requests, queue) = mpsc::unbounded_channel();
        tokio::spawn(send_in_order(state.clone(), queue, timeout));
        Pipeline { state, requests }
    }

    /// Queues a command; `timed` measures its time to acceptance as a publish's.
    pub(super) fn send(&self, cmd: redis::Cmd, timed: bool) -> BrokerFuture<Value> {
        if !self.state.is_ready() {
            return futures::future::ready(Err(BrokerError::Disconnected)).boxed();
        }
        let (done, result) = oneshot::channel();
        let request = Request {
            cmd,
            queued: timed.then(Instant::now),
            done: Some(done),
        };
        if self.requests.send(request).is_err() {
            return futures::future::ready(Err(BrokerError::Disconnected)).boxed();
        }
        async move { result.await.unwrap_or(Err(BrokerError::Disconnected)) }.boxed()
    }

    /// Queues a command whose outcome nobody waits for (a failure is logged).
    pub(super) fn send_and_forget(&self, cmd: redis::Cmd) {
        let request = Request {
            cmd,
            queued: None,
            done: None,
        };
        let _ = self.requests.send(request);
    }
}

/// Sends queued requests to Redis in queue order, one pipeline per round trip.
async fn send_in_order(
    state: Arc<State>,
    mut queue: mpsc::UnboundedReceiver<Request>,
    timeout: Duration,
) {
    let mut batch = Vec::with_capacity(PIPELINE_BATCH);
    while queue.recv_many(&mut batch, PIPELINE_BATCH).await > 0 {
        match run_batch(&state, &batch, timeout).await {
            Ok(results) => {
                let mut results = results.into_iter();
                for request in batch.drain(..) {
                    let result = settle(&state, &request, results.next());
                    if let Some(done) = request.done {
                        let _ = done.send(result);
                    }
                }
            }
            Err(error) => {
                // The connection is in doubt: the supervisor checks it now, not at the next ping.
                state.check_now.notify_one();
                for request in batch.drain(..) {
                    if let Some(done) = request.done {
                        let _ = done.send(Err(error.clone()));
                    }
                }
            }
        }
    }
}

/// The outcome of one request of a pipeline that went through.
fn settle(
    state: &State,
    request: &Request,
    reply: Option<redis::RedisResult<Value>>,
) -> Result<Value, BrokerError> {
    match reply {
        Some(Ok(value)) => {
            if let Some(queued) = request.queued {
                let waited = queued.elapsed().as_secs_f64();
                state.metrics.publish_duration.observe(waited);
            }
            Ok(value)
        }
        Some(Err(error)) => {
            log::warn!("Redis refused a request: {error}");
            Err(classify(&error))
        }
        None => Err(BrokerError::Refused(BadReply::NoReply)),
    }
}

/// Runs one pipeline, each command with its own result; commands refused because Redis lost
/// its scripts are sent again once the scripts are back.
async fn run_batch(
    state: &State,
    batch: &[Request],
    timeout: Duration,
) -> Result<Vec<redis::RedisResult<Value>>, BrokerError> {
    let mut connection = state.publisher().ok_or(BrokerError::Disconnected)?;
    let all: Vec<usize> = (0..batch.len()).collect();
    let mut results = query_pipeline(&mut connection, batch, &all, timeout).await?;
    let refused = scripts::missing(&results);
    if !refused.is_empty() {
        within(timeout, SCRIPTS.load(&mut connection)).await?;
        let retried = query_pipeline(&mut connection, batch, &refused, timeout).await?;
        for (index, result) in refused.into_iter().zip(retried) {
            results[index] = result;
        }
    }
    Ok(results)
}

async fn query_pipeline(
    connection: &mut MultiplexedConnection,
    batch: &[Request],
    indices: &[usize],
    timeout: Duration,
) -> Result<Vec<redis::RedisResult<Value>>, BrokerError> {
    let mut pipeline = redis::pipe();
    pipeline.ignore_errors();
    for &index in indices {
        pipeline.add_command(batch[index].cmd.clone());
    }
    within(timeout, pipeline.query_async(connection)).await
}

/// Runs a Redis call with a deadline, classifying its failure.
pub(super) async fn within<T>(
    timeout: Duration,
    call: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, BrokerError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(classify(&error)),
        Err(_) => Err(BrokerError::Timeout),
    }
}

/// Tells a lost connection (the request may not have reached Redis) from a refusal (Redis
/// answered with an error, and the connection is fine).
pub(super) fn classify(error: &RedisError) -> BrokerError {
    if error.is_timeout() {
        BrokerError::Timeout
    } else if error.is_connection_dropped() || error.is_io_error() || error.is_unrecoverable_error()
    {
        BrokerError::Disconnected
    } else {
        BrokerError::Refused(BadReply::Redis(error.clone()))
    }
}
