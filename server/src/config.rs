//! Command-line and environment configuration of a node.
//!
//! Every flag also reads an environment variable, so the same binary is configured the same
//! way on a laptop, in systemd and in a container. Key values are hidden from `--help` and are
//! never formatted into logs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chat_protocol::limits;
use clap::Parser;

use crate::api::{ApiKeyError, ApiKeys, ApiLimits};
use crate::broker::HistoryLimits;
use crate::envelope::{KeyError, Keyring};

/// Most history a room may keep: all of it is read for a joiner, which gets what fits in one
/// frame ([`crate::frame_budget`]).
const MAX_HISTORY_SIZE: usize = 10_000;

/// Everything a node is started with, parsed once at start-up; check it with
/// [`validate`](Self::validate) before use.
#[derive(Parser)]
#[command(
    name = "chat-server",
    version,
    about = "Stateless WebSocket chat node; nodes relay AES-256-GCM sealed messages through Redis pub/sub"
)]
pub struct Config {
    /// Address to listen on for HTTP and WebSocket.
    #[arg(long, env = "CHAT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Redis URL of the backplane (redis://[user:password@]host:port[/db]). Without it the node
    /// runs alone on an in-memory broker.
    #[arg(long, env = "CHAT_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// A seed node of a Redis Cluster backplane (redis:// or rediss://); repeat (or separate
    /// with commas) for more seeds. Rooms are spread over the cluster's shards with sharded
    /// pub/sub. Not with --redis-url.
    #[arg(
        long = "redis-cluster",
        env = "CHAT_REDIS_CLUSTER",
        value_delimiter = ',',
        hide_env_values = true,
        value_name = "URL",
        conflicts_with = "redis_url"
    )]
    pub redis_cluster: Vec<String>,

    /// Name of this node, shown to clients in `welcome` [default: host name plus a random suffix].
    #[arg(long, env = "CHAT_NODE_ID")]
    pub node_id: Option<String>,

    /// AES-256 key as base64 of 32 bytes. Repeat (or separate with commas) to rotate: the
    /// first seals, any opens. Make one with `openssl rand -base64 32`.
    #[arg(
        long = "key",
        env = "CHAT_KEY",
        value_delimiter = ',',
        hide_env_values = true,
        value_name = "BASE64"
    )]
    pub keys: Vec<String>,

    /// File with one base64 key per line (blank lines and lines starting with # are skipped);
    /// its keys come after those of --key.
    #[arg(long, env = "CHAT_KEY_FILE")]
    pub key_file: Option<PathBuf>,

    /// Prefix of every Redis channel and key this cluster uses.
    #[arg(long, env = "CHAT_REDIS_PREFIX", default_value = "chat", value_parser = parse_prefix)]
    pub redis_prefix: String,

    /// Largest chat text in bytes (at most 36565: its message frame must fit in the frames the
    /// node writes).
    #[arg(long, env = "CHAT_MAX_TEXT_BYTES", default_value_t = limits::DEFAULT_MAX_TEXT_BYTES)]
    pub max_text_bytes: usize,

    /// Largest WebSocket frame or message a client may send, in bytes.
    #[arg(long, env = "CHAT_MAX_FRAME_BYTES", default_value_t = limits::DEFAULT_MAX_FRAME_BYTES)]
    pub max_frame_bytes: usize,

    /// Outbound queue per connection, in frames; a client that falls this far behind is
    /// closed as a slow consumer (close code 4001).
    #[arg(long, env = "CHAT_OUTBOUND_QUEUE", default_value_t = 1024)]
    pub outbound_queue: usize,

    /// Requests per connection awaiting their reply before the node stops reading from it.
    #[arg(long, env = "CHAT_MAX_IN_FLIGHT", default_value_t = 64)]
    pub max_in_flight: usize,

    /// Messages of history kept per room: sent to joiners, and used to recover what a client
    /// or a node missed (1 to 10000).
    #[arg(long, env = "CHAT_HISTORY_SIZE", default_value_t = 100)]
    pub history_size: usize,

    /// Seconds a room's history is kept after its last message; joiners without `since` see
    /// only messages this recent.
    #[arg(long, env = "CHAT_HISTORY_MAX_AGE_SECS", default_value_t = 86_400)]
    pub history_max_age_secs: u64,

    /// Rooms whose history the in-memory broker keeps at most: beyond it, the least recently
    /// active rooms without members lose theirs (with Redis, `maxmemory` bounds history).
    #[arg(long, env = "CHAT_HISTORY_MAX_ROOMS", default_value_t = crate::broker::memory::DEFAULT_MAX_ROOMS)]
    pub history_max_rooms: usize,

    /// Seconds to wait for sessions to close when shutting down.
    #[arg(long, env = "CHAT_SHUTDOWN_TIMEOUT", default_value_t = 5)]
    pub shutdown_timeout_secs: u64,

    /// Rooms one connection may be in at once.
    #[arg(long, env = "CHAT_MAX_ROOMS_PER_CONNECTION", default_value_t = 100)]
    pub max_rooms_per_connection: usize,

    /// Seconds a client may stay silent: after half of it the node pings, and a client that
    /// has answered nothing by the end is closed with 4002 (0: never).
    #[arg(long, env = "CHAT_IDLE_TIMEOUT", default_value_t = 60)]
    pub idle_timeout_secs: u64,

    /// Seconds a write to a client may make no progress (the client stopped reading) before
    /// the connection is closed with 4001 and its slot freed.
    #[arg(long, env = "CHAT_WRITE_TIMEOUT", default_value_t = 10)]
    pub write_timeout_secs: u64,

    // Doc comments on flattened fields never reach `--help`: the flags document themselves.
    /// Flood control flags (send, name and join rates, debounce).
    #[command(flatten)]
    pub flood: crate::flood::FloodConfig,

    /// Who may open a WebSocket: connection caps, allowed origins, tokens.
    #[command(flatten)]
    pub admission: crate::admission::AdmissionConfig,

    /// Member pages and presence reports.
    #[command(flatten)]
    pub presence: crate::presence::PresenceConfig,

    /// Caps on connections still in their WebSocket handshake.
    #[command(flatten)]
    pub pending: crate::listener::PendingConfig,

    /// Key of the HTTP API under /api, sent by clients as `Authorization: Bearer <key>`.
    /// Repeat (or separate with commas) to rotate: any of them is accepted. Without a key the
    /// API is off.
    #[arg(
        long = "api-key",
        env = "CHAT_API_KEY",
        value_delimiter = ',',
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub api_keys: Vec<String>,

    /// Most messages in one POST /api/publish/batch.
    #[arg(long, env = "CHAT_API_MAX_BATCH", default_value_t = 20_000)]
    pub api_max_batch: usize,

    /// Largest body of POST /api/publish/batch, in bytes [default: 1 KiB per message of
    /// --api-max-batch, at least --max-frame-bytes].
    #[arg(long, env = "CHAT_API_MAX_BODY_BYTES")]
    pub api_max_body_bytes: Option<usize>,

    /// Caps of the HTTP API: concurrent requests, messages in flight, request timeout.
    #[command(flatten)]
    pub api_caps: crate::api::ApiCapsConfig,
}

/// Why the configuration cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Redis is configured but no key is: payloads must never cross Redis unsealed.
    #[error(
        "a key is required with --redis-url or --redis-cluster: make one with \
         `openssl rand -base64 32` and pass it with --key, CHAT_KEY or --key-file"
    )]
    MissingKey,
    /// A key from --key or --key-file was refused.
    #[error("invalid key: {0} (make one with `openssl rand -base64 32`)")]
    InvalidKey(#[from] KeyError),
    /// The --key-file could not be read.
    #[error("cannot read key file {path}: {source}")]
    KeyFile {
        /// The file as given by the operator.
        path: PathBuf,
        /// Why reading it failed.
        source: std::io::Error,
    },
    /// An --api-key was refused (too weak, for one); the message never echoes it.
    #[error("invalid --api-key: {0}")]
    InvalidApiKey(#[from] ApiKeyError),
    /// The --node-id is empty, too long, or has a control character or a '|'.
    #[error("--node-id must be 1 to 64 printable characters other than '|'")]
    InvalidNodeId,
    /// The flag named (without its `--`) is 0 where 0 makes no sense.
    #[error("--{0} must be at least 1")]
    Zero(&'static str),
    /// A flood control flag is out of range; the message names it.
    #[error("{0}")]
    Flood(&'static str),
    /// --history-size is outside 1 to `MAX_HISTORY_SIZE`.
    #[error("--history-size must be 1 to {MAX_HISTORY_SIZE}")]
    HistorySize,
    /// --max-text-bytes is too large for the frames the node writes.
    #[error(transparent)]
    FrameBudget(#[from] crate::frame_budget::BudgetError),
    /// The --auth-secret is too short to be a safe HS256 secret.
    #[error(transparent)]
    WeakAuthSecret(#[from] crate::token::WeakSecret),
    /// --api-max-in-flight is below --api-max-batch, so a full batch could never be admitted.
    #[error("--api-max-in-flight must be 0 (no limit) or at least --api-max-batch")]
    ApiInFlight,
}

/// Where the backplane is.
#[derive(Debug, Clone, PartialEq)]
pub enum RedisTarget {
    /// One Redis server (`--redis-url`).
    Single(String),
    /// Seed nodes of a Redis Cluster (`--redis-cluster`).
    Cluster(Vec<String>),
}

impl Config {
    /// Redis, if the node shares its rooms through one: a server or a cluster (clap refuses
    /// both at once); `None` runs the node alone on the in-memory broker.
    pub fn redis_target(&self) -> Option<RedisTarget> {
        let seeds: Vec<String> = self
            .redis_cluster
            .iter()
            .filter(|url| !url.trim().is_empty())
            .cloned()
            .collect();
        match &self.redis_url {
            Some(url) => Some(RedisTarget::Single(url.clone())),
            None if !seeds.is_empty() => Some(RedisTarget::Cluster(seeds)),
            None => None,
        }
    }

    /// The keys from --key and --key-file; an ephemeral key when none is given and no Redis is
    /// configured, since then nothing leaves the process.
    pub fn keyring(&self) -> Result<Keyring, ConfigError> {
        let mut keys = self.keys.clone();
        if let Some(path) = &self.key_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::KeyFile {
                path: path.clone(),
                source,
            })?;
            keys.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty() && !line.starts_with('#'))
                    .map(str::to_owned),
            );
        }
        keys.retain(|key| !key.trim().is_empty());
        match (keys.is_empty(), self.redis_target()) {
            (true, Some(_)) => Err(ConfigError::MissingKey),
            (true, None) => Ok(Keyring::ephemeral()),
            (false, _) => Ok(Keyring::from_base64(&keys)?),
        }
    }

    /// The --node-id, or the host name plus a random suffix when none is given; refuses an id
    /// that is empty, over 64 characters, or has a control character or a '|'.
    pub fn node_id(&self) -> Result<String, ConfigError> {
        match &self.node_id {
            None => Ok(crate::ids::default_node_id()),
            Some(id)
                if !id.is_empty()
                    && id.chars().count() <= 64
                    && !id.chars().any(|c| c.is_control() || c == '|') =>
            {
                Ok(id.clone())
            }
            Some(_) => Err(ConfigError::InvalidNodeId),
        }
    }

    /// Refuses values the node cannot run with; called once at start-up, before any other
    /// accessor is relied on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, value) in [
            ("max-text-bytes", self.max_text_bytes),
            ("max-frame-bytes", self.max_frame_bytes),
            ("outbound-queue", self.outbound_queue),
            ("max-in-flight", self.max_in_flight),
            ("max-rooms-per-connection", self.max_rooms_per_connection),
            ("history-max-age-secs", self.history_max_age_secs as usize),
            ("write-timeout-secs", self.write_timeout_secs as usize),
            ("history-max-rooms", self.history_max_rooms),
            ("api-max-batch", self.api_max_batch),
            ("api-max-body-bytes", self.api_max_body_bytes.unwrap_or(1)),
            (
                "api-request-timeout-secs",
                self.api_caps.api_request_timeout_secs as usize,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if !(1..=MAX_HISTORY_SIZE).contains(&self.history_size) {
            return Err(ConfigError::HistorySize);
        }
        crate::frame_budget::check_max_text_bytes(self.max_text_bytes)?;
        self.admission.validate()?;
        // A full batch takes its places in flight all at once: a smaller cap would refuse
        // it for ever, with a 503 that tells the caller to retry.
        let in_flight = self.api_caps.api_max_in_flight;
        if in_flight != 0 && in_flight < self.api_max_batch {
            return Err(ConfigError::ApiInFlight);
        }
        self.flood.validate().map_err(ConfigError::Flood)
    }

    /// How much history each room keeps, in messages and in age.
    pub fn history(&self) -> HistoryLimits {
        HistoryLimits {
            size: self.history_size,
            max_age: Duration::from_secs(self.history_max_age_secs),
        }
    }

    /// The API keys; `None` when the API is off.
    pub fn api_keys(&self) -> Result<Option<ApiKeys>, ConfigError> {
        Ok(ApiKeys::new(&self.api_keys)?)
    }

    /// The HTTP API's limits and caps; without --api-max-body-bytes a batch body may take 1 KiB
    /// per message, never less than --max-frame-bytes.
    pub fn api_limits(&self) -> ApiLimits {
        ApiLimits {
            max_batch: self.api_max_batch,
            // A budget of 1 KiB per message: room for typical messages, while a body of many
            // long texts is refused before the node buffers it.
            max_batch_body_bytes: self.api_max_body_bytes.unwrap_or_else(|| {
                self.api_max_batch
                    .saturating_mul(1024)
                    .max(self.max_frame_bytes)
            }),
            max_message_body_bytes: self.max_frame_bytes,
            max_text_bytes: self.max_text_bytes,
            caps: self.api_caps.clone(),
        }
    }

    /// How long shutdown waits for sessions to close before giving up on them.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }
}

fn parse_prefix(prefix: &str) -> Result<String, String> {
    let valid = !prefix.is_empty()
        && prefix.len() <= 64
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b':'));
    if valid {
        Ok(prefix.to_owned())
    } else {
        Err("use 1 to 64 of A-Z, a-z, 0-9, '_', '.', '-', ':'".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("chat-server").chain(args.iter().copied())).unwrap()
    }

    const KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    #[test]
    fn redis_mode_requires_a_key_and_says_how_to_make_one() {
        let config = parse(&["--redis-url", "redis://127.0.0.1:1/"]);
        let error = config.keyring().unwrap_err().to_string();
        assert!(error.contains("openssl rand -base64 32"), "{error}");
    }

    #[test]
    fn memory_mode_needs_no_key() {
        assert!(parse(&[]).keyring().is_ok());
    }

    #[test]
    fn keys_come_from_flags_and_files() {
        let dir = std::env::temp_dir().join(format!("chat-keys-{}", std::process::id()));
        std::fs::write(&dir, format!("# rotation\n\n{KEY}\n")).unwrap();
        let other = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
        let config = parse(&["--key", other, "--key-file", dir.to_str().unwrap()]);
        assert_eq!(config.keyring().unwrap().key_ids().len(), 2);
        std::fs::remove_file(dir).unwrap();
    }

    #[test]
    fn bad_keys_are_reported_without_their_value() {
        let config = parse(&["--key", "c2VjcmV0"]);
        let error = config.keyring().unwrap_err().to_string();
        assert!(!error.contains("c2VjcmV0"), "{error}");
        assert!(error.contains("32 bytes"), "{error}");
    }

    #[test]
    fn the_api_is_off_without_a_key_and_refuses_weak_ones_without_echoing_them() {
        assert!(parse(&[]).api_keys().unwrap().is_none());
        let error = parse(&["--api-key", "hunter2"]).api_keys().unwrap_err();
        assert!(!error.to_string().contains("hunter2"), "{error}");
        let keys = parse(&["--api-key", "first-key-0123456789,second-key-0123456789"]);
        assert_eq!(keys.api_keys().unwrap().unwrap().count(), 2);
    }

    #[test]
    fn the_batch_body_limit_follows_the_batch_limit() {
        let limits = parse(&[]).api_limits();
        assert_eq!(limits.max_batch, 20_000);
        assert_eq!(limits.max_batch_body_bytes, 20_000 * 1024);
        assert_eq!(limits.max_message_body_bytes, 65_536);
        let small = parse(&["--api-max-batch", "10"]).api_limits();
        assert_eq!(small.max_batch_body_bytes, 65_536, "at least one frame");
        let explicit = parse(&["--api-max-body-bytes", "5000"]).api_limits();
        assert_eq!(explicit.max_batch_body_bytes, 5000);
        assert!(parse(&["--api-max-batch", "0"]).validate().is_err());
    }

    #[test]
    fn a_full_batch_must_fit_in_flight() {
        assert!(parse(&[]).validate().is_ok());
        let small = parse(&["--api-max-in-flight", "100", "--api-max-batch", "101"]);
        assert!(matches!(small.validate(), Err(ConfigError::ApiInFlight)));
        assert!(parse(&["--api-max-in-flight", "0"]).validate().is_ok());
        let no_time = parse(&["--api-request-timeout-secs", "0"]);
        assert!(matches!(no_time.validate(), Err(ConfigError::Zero(_))));
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(Config::try_parse_from(["chat-server", "--redis-prefix", "a b"]).is_err());
        assert_eq!(
            parse(&["--redis-prefix", "prod:eu-1"]).redis_prefix,
            "prod:eu-1"
        );
    }
}
