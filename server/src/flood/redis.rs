//! The per-name limit and the debounce shared by every node through Redis.
//!
//! One Lua script per send does both, atomically and in one round trip: GCRA on the name's key
//! (the same arithmetic as [`super::gcra`], on Redis's clock, so the nodes' clocks do not
//! matter), then `SET NX PX` on a key named after a hash of (name, room, text) for the
//! debounce. Both keys expire on their own (`PX`), so Redis holds only what is in progress.
//! redis-rs runs the script with `EVALSHA` and loads it again after a Redis restart.
//!
//! The limiter has its own multiplexed RESP3 connection with TCP_NODELAY: checks from every
//! session are pipelined on it, so a session's sends wait one round trip, not one each.
//!
//! When Redis cannot be reached the limiter *fails open to this node*: checks fall back to a
//! [`MemoryLimiter`] (limits per node instead of per cluster) rather than refusing everyone,
//! counted in `chat_rate_limit_fallbacks_total`, while a task reconnects with capped backoff.
//! Sends still need the broker, which refuses them with `unavailable` while Redis is down.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use redis::{RedisError, Script};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use super::{Check, MemoryLimiter, NameLimiter, Rate, Verdict};
use crate::keyspace::Keyspace;
use crate::metrics::Metrics;
use crate::redis_client::{Backoff, Client, ConnectionCell, RedisTarget};

/// KEYS: the name's rate key, the debounce key. ARGV: emission interval and burst tolerance
/// in microseconds (interval 0: no rate limit), debounce window in milliseconds (0: none).
/// Returns {0} allowed, {1, retry_after_ms} limited, {2} duplicate.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
if interval > 0 then
  local tolerance = tonumber(ARGV[2])
  local tat = tonumber(redis.call('GET', KEYS[1])) or now
  if tat < now then tat = now end
  if tat - now > tolerance then
    return {1, math.max(1, math.ceil((tat - now - tolerance) / 1000))}
  end
  local next_tat = tat + interval
  redis.call('SET', KEYS[1], string.format('%.0f', next_tat),
    'PX', math.ceil((next_tat - now) / 1000) + 1)
end
local window = tonumber(ARGV[3])
if window > 0 and not redis.call('SET', KEYS[2], '1', 'NX', 'PX', window) then
  return {2}
end
return {0}
";

/// Longest a check may wait for Redis before the node decides by itself.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The per-name limit and debounce of a cluster, kept in Redis (see the module's doc).
pub struct RedisLimiter {
    shared: Arc<Shared>,
    script: Arc<Script>,
    keyspace: Keyspace,
    interval_us: u64,
    tolerance_us: u64,
    window_ms: u64,
}

struct Shared {
    connection: ConnectionCell,
    /// Wakes the reconnecting task after a failed check.
    lost: Notify,
    fallback: MemoryLimiter,
    metrics: Arc<Metrics>,
}

impl RedisLimiter {
    /// Starts connecting to `target` in the background; until connected, checks use the
    /// fallback. Keys live under `<prefix>:flood:<name>:` (the name is the hash tag on a
    /// Redis Cluster, so a name's keys share a slot).
    pub fn start(
        target: &RedisTarget,
        keyspace: Keyspace,
        rate: Option<Rate>,
        window: Option<Duration>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, RedisError> {
        let client = Client::open(target)?;
        let shared = Arc::new(Shared {
            connection: ConnectionCell::default(),
            lost: Notify::new(),
            fallback: MemoryLimiter::new(rate, window, metrics.clone()),
            metrics,
        });
        tokio::spawn(keep_connected(client, shared.clone()));
        let micros = |ns: u64| ns.div_ceil(1000);
        Ok(RedisLimiter {
            shared,
            script: Arc::new(Script::new(SCRIPT)),
            keyspace,
            interval_us: rate.map_or(0, |r| micros(r.interval_ns).max(1)),
            tolerance_us: rate.map_or(0, |r| micros(r.tolerance_ns)),
            window_ms: window.map_or(0, |w| u64::try_from(w.as_millis()).unwrap_or(u64::MAX)),
        })
    }
}

impl NameLimiter for RedisLimiter {
    fn check(&self, name: &str, room: &str, text: &str) -> Check {
        let Some(mut connection) = self.shared.connection.get() else {
            self.shared.metrics.limits.rate_limit_fallbacks.inc();
            return Check::Ready(self.shared.fallback.verdict(name, room, text));
        };
        let keys = self.keyspace.flood(name);
        let rate_key = format!("{keys}rate");
        let duplicate_key = format!("{keys}dup:{}", text_digest(name, room, text));
        let args = [self.interval_us, self.tolerance_us, self.window_ms];
        let script = self.script.clone();
        let shared = self.shared.clone();
        let (name, room, text) = (name.to_owned(), room.to_owned(), text.to_owned());
        Check::Pending(
            async move {
                let mut invocation = script.prepare_invoke();
                invocation.key(rate_key).key(duplicate_key).arg(&args[..]);
                let reply = tokio::time::timeout(
                    CHECK_TIMEOUT,
                    invocation.invoke_async::<Vec<u64>>(&mut connection),
                )
                .await;
                match reply {
                    Ok(Ok(reply)) => match reply.as_slice() {
                        [1, retry_after_ms] => {
                            shared.metrics.limits.rate_limited_name.inc();
                            Verdict::Limited {
                                retry_after_ms: *retry_after_ms,
                            }
                        }
                        [2] => Verdict::Duplicate,
                        _ => Verdict::Allowed,
                    },
                    failed => {
                        match failed {
                            Ok(Err(error)) => log::warn!(
                                "rate limit check in Redis failed ({error}); limiting on this node until it is back"
                            ),
                            _ => log::warn!(
                                "rate limit check in Redis timed out; limiting on this node until it is back"
                            ),
                        }
                        shared.lose_connection();
                        shared.metrics.limits.rate_limit_fallbacks.inc();
                        shared.fallback.verdict(&name, &room, &text)
                    }
                }
            }
            .boxed(),
        )
    }
}

impl Shared {
    fn lose_connection(&self) {
        if self.connection.take().is_some() {
            self.lost.notify_one();
        }
    }
}

/// 128 bits of SHA-256 of (name, room, text) in hex: the same on every node, and it keeps user
/// text out of key names.
fn text_digest(name: &str, room: &str, text: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [name, room, text] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    crate::hex::encode(&hasher.finalize()[..16])
}

/// Connects, waits until a check reports the connection lost, and connects again, with
/// capped exponential backoff, for as long as the node runs.
async fn keep_connected(client: Client, shared: Arc<Shared>) {
    let mut backoff = Backoff::jittered(MIN_BACKOFF, MAX_BACKOFF);
    loop {
        let connecting = tokio::time::timeout(CHECK_TIMEOUT, client.connect(CHECK_TIMEOUT));
        match connecting.await {
            Ok(Ok(connection)) => {
                backoff.reset();
                shared.connection.set(Some(connection));
                // `notify_one` keeps a permit when nobody waits: a loss reported before this
                // line is not missed.
                shared.lost.notified().await;
            }
            failed => {
                if let Ok(Err(error)) = failed {
                    log::debug!("rate limiter: cannot connect to Redis: {error}");
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_separate_their_parts() {
        assert_ne!(text_digest("a", "bc", "d"), text_digest("ab", "c", "d"));
        assert_eq!(text_digest("a", "b", "c").len(), 32);
    }
}
