//! The publisher connection's queue: every request in call order, many per round trip.
//!
//! One task sends everything queued since its last round trip as the next pipeline, so
//! batches grow with load and order is never in question: requests reach Redis in exactly
//! the order they were made, which is how one client's messages keep their order without the
//! caller sequencing anything. Each run of consecutive publishes in a pipeline becomes one
//! script call (see [`publish`](super::publish)). Each request gets its own result: one
//! refused message (say, by an ACL) is not reported as lost for the others, which went through.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use redis::{RedisError, Value};
use tokio::sync::{mpsc, oneshot};

use super::publish::{Batches, MAX_PER_CALL, Publish};
use super::scripts::{self, SCRIPTS};
use super::supervisor::State;
use crate::broker::{BadReply, BrokerError, BrokerFuture, HistoryLimits};
use crate::keyspace::{Keyspace, slot_of};
use crate::redis_client::Connection;
use chat_protocol::MessageId;

/// Most commands in one pipeline.
const PIPELINE_BATCH: usize = 512;

/// The callers' end of the queue.
pub(super) struct Pipeline {
    state: Arc<State>,
    /// Unbounded, but bounded in practice: every session has at most `--max-in-flight`
    /// requests waiting, and publishes are among them.
    requests: mpsc::UnboundedSender<Request>,
}

/// A request for the publisher connection.
enum Request {
    Command {
        cmd: redis::Cmd,
        /// `None` when nobody waits for the outcome.
        done: Option<oneshot::Sender<Result<Value, BrokerError>>>,
    },
    Publish(Queued),
}

/// A publish waiting for its batch.
struct Queued {
    publish: Publish,
    /// Its time to acceptance is measured.
    queued: Instant,
    done: oneshot::Sender<Result<MessageId, BrokerError>>,
}

/// Who waits for the reply to one command of a pipeline.
enum Planned {
    /// The caller of one command, if anyone waits.
    Command(Option<oneshot::Sender<Result<Value, BrokerError>>>),
    /// Consecutive publishes, in one script call.
    Publishes(Vec<Queued>),
}

impl Pipeline {
    /// Starts the task that sends the queue; it ends once the pipeline is dropped.
    pub(super) fn start(
        state: Arc<State>,
        timeout: Duration,
        history: HistoryLimits,
        keyspace: &Keyspace,
    ) -> Self {
        let (requests, queue) = mpsc::unbounded_channel();
        let batches = Batches::new(history, keyspace);
        let cluster = keyspace.is_cluster();
        tokio::spawn(send_in_order(
            state.clone(),
            queue,
            timeout,
            batches,
            cluster,
        ));
        Pipeline { state, requests }
    }

    /// Queues a command.
    pub(super) fn send(&self, cmd: redis::Cmd) -> BrokerFuture<Value> {
        self.queue(|done| Request::Command {
            cmd,
            done: Some(done),
        })
    }

    /// Queues a message to append to its room's history and publish; resolves to its id.
    pub(super) fn publish(&self, publish: Publish) -> BrokerFuture<MessageId> {
        self.queue(|done| {
            Request::Publish(Queued {
                publish,
                queued: Instant::now(),
                done,
            })
        })
    }

    fn queue<T: Send + 'static>(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<T, BrokerError>>) -> Request,
    ) -> BrokerFuture<T> {
        if !self.state.is_ready() {
            return futures::future::ready(Err(BrokerError::Disconnected)).boxed();
        }
        let (done, result) = oneshot::channel();
        if self.requests.send(request(done)).is_err() {
            return futures::future::ready(Err(BrokerError::Disconnected)).boxed();
        }
        async move { result.await.unwrap_or(Err(BrokerError::Disconnected)) }.boxed()
    }

    /// Queues a command whose outcome nobody waits for (a failure is logged).
    pub(super) fn send_and_forget(&self, cmd: redis::Cmd) {
        let _ = self.requests.send(Request::Command { cmd, done: None });
    }
}

/// Sends queued requests to Redis in queue order, one pipeline per round trip (on a
/// cluster, one per slot).
async fn send_in_order(
    state: Arc<State>,
    mut queue: mpsc::UnboundedReceiver<Request>,
    timeout: Duration,
    mut batches: Batches,
    cluster: bool,
) {
    let mut batch = Vec::with_capacity(PIPELINE_BATCH);
    while queue.recv_many(&mut batch, PIPELINE_BATCH).await > 0 {
        let plans: Vec<(redis::Pipeline, Vec<Planned>)> = if cluster {
            let mut slots: BTreeMap<Option<usize>, Vec<Request>> = BTreeMap::new();
            for request in batch.drain(..) {
                slots.entry(request.slot()).or_default().push(request);
            }
            let plans = slots
                .into_values()
                .map(|slot| plan(slot.into_iter(), &mut batches));
            plans.collect()
        } else {
            vec![plan(batch.drain(..), &mut batches)]
        };
        let runs = plans
            .iter()
            .map(|(pipeline, _)| run_batch(&state, pipeline, timeout));
        let results = futures::future::join_all(runs).await;
        for ((_, planned), result) in plans.into_iter().zip(results) {
            match result {
                Ok(results) => {
                    for (planned, result) in planned.into_iter().zip(results) {
                        settle(&state, &mut batches, planned, Ok(result));
                    }
                }
                Err(error) => {
                    // The connection is in doubt: the supervisor checks it now, not at the
                    // next ping.
                    state.check_now.notify_one();
                    for planned in planned {
                        settle(&state, &mut batches, planned, Err(error.clone()));
                    }
                }
            }
        }
    }
}

impl Request {
    /// The cluster slot of the request's keys; `None` for a command with no key.
    fn slot(&self) -> Option<usize> {
        match self {
            Request::Publish(queued) => Some(slot_of(&queued.publish.channel)),
            Request::Command { cmd, .. } => first_key(cmd).map(slot_of),
        }
    }
}

/// The first key of a command the broker sends: the first argument after a script call's
/// hash and key count, after the name of any other command with keys.
fn first_key(cmd: &redis::Cmd) -> Option<&str> {
    let mut args = cmd.args_iter().map(|arg| match arg {
        redis::Arg::Simple(bytes) => std::str::from_utf8(bytes).ok(),
        _ => None,
    });
    let name = args.next()??;
    if name.eq_ignore_ascii_case("EVALSHA") || name.eq_ignore_ascii_case("EVAL") {
        args.nth(2)?
    } else if name.eq_ignore_ascii_case("TIME") || name.eq_ignore_ascii_case("PING") {
        None
    } else {
        args.next()?
    }
}

/// The pipeline for `requests`, one command per request except that each run of consecutive
/// publishes (up to [`MAX_PER_CALL`]) is one script call, and who waits for each command.
/// Commands are moved in, not copied: a publish call carries every message body of its run.
fn plan(
    requests: impl Iterator<Item = Request>,
    batches: &mut Batches,
) -> (redis::Pipeline, Vec<Planned>) {
    let mut pipeline = redis::pipe();
    pipeline.ignore_errors();
    let mut planned = Vec::new();
    let mut run = Vec::new();
    for request in requests {
        match request {
            Request::Publish(queued) => {
                run.push(queued);
                if run.len() == MAX_PER_CALL {
                    end_run(&mut run, batches, &mut pipeline, &mut planned);
                }
            }
            Request::Command { cmd, done } => {
                end_run(&mut run, batches, &mut pipeline, &mut planned);
                pipeline.add_command(cmd);
                planned.push(Planned::Command(done));
            }
        }
    }
    end_run(&mut run, batches, &mut pipeline, &mut planned);
    (pipeline, planned)
}

/// Adds the publishes of `run`, if any, to the pipeline as one script call.
fn end_run(
    run: &mut Vec<Queued>,
    batches: &mut Batches,
    pipeline: &mut redis::Pipeline,
    planned: &mut Vec<Planned>,
) {
    if !run.is_empty() {
        pipeline.add_command(batches.call(run.iter().map(|queued| &queued.publish)));
        planned.push(Planned::Publishes(std::mem::take(run)));
    }
}

/// Hands the requests behind one command their outcomes: the command's reply, or the error
/// that lost the whole pipeline.
fn settle(
    state: &State,
    batches: &mut Batches,
    planned: Planned,
    reply: Result<redis::RedisResult<Value>, BrokerError>,
) {
    match planned {
        Planned::Command(done) => {
            let outcome = reply.and_then(command_outcome);
            if let Some(done) = done {
                let _ = done.send(outcome);
            }
        }
        Planned::Publishes(run) => {
            let outcomes = match reply {
                Ok(reply) => batches.outcomes(run.iter().map(|queued| &queued.publish), reply),
                Err(error) => vec![Err(error); run.len()],
            };
            for (queued, outcome) in run.into_iter().zip(outcomes) {
                if outcome.is_ok() {
                    let waited = queued.queued.elapsed().as_secs_f64();
                    state.metrics.publish_duration.observe(waited);
                }
                let _ = queued.done.send(outcome);
            }
        }
    }
}

/// The outcome of one command of a pipeline that went through.
fn command_outcome(reply: redis::RedisResult<Value>) -> Result<Value, BrokerError> {
    reply.map_err(|error| {
        log::warn!("Redis refused a request: {error}");
        classify(&error)
    })
}

/// Runs one pipeline, each command with its own result; commands refused because Redis lost
/// its scripts are sent again once the scripts are back.
async fn run_batch(
    state: &State,
    pipeline: &redis::Pipeline,
    timeout: Duration,
) -> Result<Vec<redis::RedisResult<Value>>, BrokerError> {
    let mut connection = state.publisher().ok_or(BrokerError::Disconnected)?;
    let mut results: Vec<redis::RedisResult<Value>> =
        within(timeout, pipeline.query_async(&mut connection)).await?;
    let refused = scripts::missing(&results);
    if !refused.is_empty() {
        SCRIPTS.load(&connection, timeout).await?;
        // Rare (Redis restarted or flushed its scripts), so the refused commands are copied.
        let mut again = redis::pipe();
        again.ignore_errors();
        for (_, cmd) in pipeline
            .cmd_iter()
            .enumerate()
            .filter(|(index, _)| refused.contains(index))
        {
            again.add_command(cmd.clone());
        }
        let retried: Vec<redis::RedisResult<Value>> =
            within(timeout, again.query_async(&mut connection)).await?;
        for (index, result) in refused.into_iter().zip(retried) {
            results[index] = result;
        }
    }
    Ok(results)
}

/// Sends `cmds` all at once, each on its own (they may be in different slots of a cluster),
/// and returns their replies in order, or the first failure.
pub(super) async fn each<T: redis::FromRedisValue>(
    connection: &Connection,
    cmds: impl Iterator<Item = redis::Cmd>,
    timeout: Duration,
) -> Result<Vec<T>, BrokerError> {
    let calls = cmds.map(|cmd| {
        let mut connection = connection.clone();
        async move { within(timeout, cmd.query_async::<T>(&mut connection)).await }
    });
    futures::future::try_join_all(calls).await
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
