//! Assembles a node from its configuration and serves it on a listener until it is told to
//! stop.
//!
//! Building and serving are two steps, as in mini-redis, so that whoever embeds the node
//! chooses the listener: the binary binds the configured address with a deep backlog, a test
//! binds port 0 and runs the node inside its own runtime (where it can pause the clock).
//!
//! Shutdown order matters for "no silent loss": stop accepting, tell every session to finish
//! (each drains its in-flight publishes, then closes with 1001), wait for them, and only then
//! let the broker go.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::middleware;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::Policy;
use crate::admission::Admission;
use crate::api::Api;
use crate::broker::redis::{RedisOptions, RedisTiming};
use crate::broker::{MemoryBroker, RedisBroker, SharedBroker};
use crate::config::{Config, ConfigError, RedisTarget};
use crate::envelope::Keyring;
use crate::flood::{FloodPolicy, MemoryLimiter, NameLimiter, RedisLimiter};
use crate::host_guard::{self, HostGuard};
use crate::http::{self, AppState};
use crate::hub::{Hub, HubParts};
use crate::keyspace::Keyspace;
use crate::listener::{GuardedListener, Peer, PendingHandshakes};
use crate::metrics::Metrics;
use crate::presence::SharedPresence;
use crate::rooms::Rooms;
use crate::session::SessionLimits;

/// Pending connections the kernel may queue. tokio's default backlog of 128 overflows in
/// connection storms and stalls clients for seconds.
const LISTEN_BACKLOG: u32 = 4096;
/// How long withdrawing the node's presence may take at shutdown; past it, other nodes sweep
/// its members once its heartbeat expires.
const RETIRE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a node could not be built, or stopped serving before it was told to.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A flag or environment variable is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `--redis-url` does not parse as a Redis URL.
    #[error("invalid --redis-url")]
    RedisUrl(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The listener cannot tell its own address.
    #[error("cannot read the listening address")]
    Address(#[source] std::io::Error),
    /// The HTTP server ended although nobody asked it to.
    #[error("the HTTP server stopped on its own: {0:?}")]
    ServerStopped(Result<std::io::Result<()>, JoinError>),
}

/// A node assembled from its configuration (brokers, hub, admission, API), ready to serve.
///
/// Building already starts the background work that needs no listener: the Redis supervision,
/// the in-memory broker's sweeper and gap recovery.
pub struct Node {
    state: AppState,
    pending: Arc<PendingHandshakes>,
    presence: SharedPresence,
    metrics: Arc<Metrics>,
    allowed_origins: Vec<String>,
    handshake_timeout: Duration,
    shutdown_timeout: Duration,
}

impl Node {
    /// Checks `config` and assembles a node from it. Must run inside a tokio runtime: it
    /// spawns the node's background tasks.
    pub fn build(config: &Config) -> Result<Node, NodeError> {
        config.validate()?;
        crate::frame_budget::explain_history_fit(config.history_size, config.max_text_bytes);
        let keyring = Arc::new(config.keyring()?);
        let api_keys = config.api_keys()?;
        let node_id = config.node_id()?;
        let metrics = Arc::new(Metrics::new());
        let (recovery, recovery_requests) = tokio::sync::mpsc::unbounded_channel();
        let rooms = Arc::new(
            Rooms::new(keyring.clone(), metrics.clone(), recovery)
                .with_max_text_bytes(config.max_text_bytes),
        );
        let keyspace = keyspace(config);
        let (broker, presence) =
            backplane(config, &keyspace, &node_id, &keyring, &rooms, &metrics)?;
        let names = name_limiter(config, &keyspace, &metrics)?;
        let hub = Arc::new(Hub::new(HubParts {
            node_id,
            keyspace,
            rooms,
            broker,
            presence: presence.clone(),
            keyring,
            metrics: metrics.clone(),
            history: config.history(),
            presence_config: config.presence.clone(),
        }));
        tokio::spawn(hub.clone().recover(recovery_requests));
        hub.spawn_presence_reports();
        // Cancelled when `serve` is told to stop: sessions and the API watch it.
        let shutdown = CancellationToken::new();
        let api = api_keys.map(|keys| {
            log::info!("HTTP API on at /api, {} key(s)", keys.count());
            Arc::new(Api::new(
                hub.clone(),
                keys,
                config.api_limits(),
                shutdown.clone(),
            ))
        });
        let state = AppState {
            hub,
            api,
            limits: Arc::new(session_limits(config, names)),
            admission: Arc::new(Admission::new(
                &config.admission,
                metrics.limits.refusals.clone(),
            )),
            max_frame_bytes: config.max_frame_bytes,
            shutdown,
            sessions: TaskTracker::new(),
        };
        Ok(Node {
            state,
            pending: Arc::new(PendingHandshakes::new(
                &config.pending,
                &config.admission.trusted_proxies,
            )),
            presence,
            metrics,
            allowed_origins: config.admission.allowed_origins.clone(),
            handshake_timeout: config.admission.handshake_timeout(),
            shutdown_timeout: config.shutdown_timeout(),
        })
    }

    /// Serves HTTP and WebSocket on `listener` until `shutdown` resolves, then shuts down
    /// gracefully: sessions close with 1001 after draining, within `--shutdown-timeout-secs`.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), NodeError> {
        let address = listener.local_addr().map_err(NodeError::Address)?;
        log::info!("serving http://{address}/ (WebSocket at /ws)");
        let stop = self.state.shutdown.clone();
        let sessions = self.state.sessions.clone();
        let mut router = http::router(self.state);
        if let Some(guard) = HostGuard::new(address, &self.allowed_origins, self.metrics.clone()) {
            router = router.layer(middleware::from_fn_with_state(guard, host_guard::check));
        }
        let listener =
            GuardedListener::new(listener, self.handshake_timeout, self.pending, self.metrics);
        let mut server = tokio::spawn(
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<Peer>(),
            )
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future(),
        );
        tokio::select! {
            // Biased: once shutdown begins the server finishes too, and that is no failure.
            biased;
            () = shutdown => stop.cancel(),
            stopped = &mut server => return Err(NodeError::ServerStopped(stopped)),
        }

        // HTTP connections and sessions get one deadline together: a client that never
        // finishes its request must not keep the node from exiting.
        sessions.close();
        log::info!("shutting down: closing {} session(s)", sessions.len());
        let drained = tokio::time::timeout(self.shutdown_timeout, async {
            if let Ok(Err(error)) = server.await {
                log::warn!("HTTP server: {error}");
            }
            sessions.wait().await;
        })
        .await;
        if drained.is_err() {
            log::warn!(
                "connections still open after {:?}; exiting anyway",
                self.shutdown_timeout
            );
        }
        // Queued behind the sessions' departures, so awaiting it sees them sent too.
        match tokio::time::timeout(RETIRE_TIMEOUT, self.presence.retire()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => log::warn!("cannot withdraw this node's presence: {error}"),
            Err(_) => log::warn!("withdrawing this node's presence timed out"),
        }
        log::info!("stopped");
        Ok(())
    }
}

/// Where keys and channels are: tagged for a Redis Cluster with `--redis-cluster`.
fn keyspace(config: &Config) -> Keyspace {
    let cluster = matches!(config.redis_target(), Some(RedisTarget::Cluster(_)));
    Keyspace::new(&config.redis_prefix, cluster)
}

/// The broker and presence: Redis when `--redis-url` or `--redis-cluster` is given, else in
/// memory (one node).
fn backplane(
    config: &Config,
    keyspace: &Keyspace,
    node_id: &str,
    keyring: &Keyring,
    rooms: &Arc<Rooms>,
    metrics: &Arc<Metrics>,
) -> Result<(SharedBroker, SharedPresence), NodeError> {
    let Some(target) = config.redis_target() else {
        log::info!("node {node_id}: in-memory broker (single node, no Redis)");
        metrics.broker_ready.set(1);
        let broker = Arc::new(
            MemoryBroker::new(rooms.clone(), config.history())
                .with_max_rooms(config.history_max_rooms),
        );
        broker.register_metrics(metrics);
        broker.spawn_sweeper();
        return Ok((broker.clone(), broker));
    };
    // rediss:// URLs use rustls, which needs a process-wide crypto provider. An error only
    // means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = RedisOptions {
        timing: RedisTiming::default(),
        history: config.history(),
        keyspace: keyspace.clone(),
        node_id: node_id.to_owned(),
    };
    let broker = RedisBroker::start(&target, options, rooms.clone(), metrics.clone())
        .map_err(|error| NodeError::RedisUrl(error.into()))?;
    log::info!(
        "node {node_id}: Redis backplane at {}, channels under `{}:`, sealing with key {}",
        broker.address(),
        config.redis_prefix,
        keyring.key_ids()[0]
    );
    let broker = Arc::new(broker);
    Ok((broker.clone(), broker))
}

/// The per-name limiter: shared through Redis when there is one and a per-name limit is on.
fn name_limiter(
    config: &Config,
    keyspace: &Keyspace,
    metrics: &Arc<Metrics>,
) -> Result<Arc<dyn NameLimiter>, NodeError> {
    let name_rate = config.flood.name_rate();
    let window = config.flood.duplicate_window();
    Ok(match config.redis_target() {
        // Nothing to share when both are off: no round trip per send.
        Some(target) if name_rate.is_some() || window.is_some() => Arc::new(
            RedisLimiter::start(
                &target,
                keyspace.clone(),
                name_rate,
                window,
                metrics.clone(),
            )
            .map_err(|error| NodeError::RedisUrl(error.into()))?,
        ),
        _ => Arc::new(MemoryLimiter::new(name_rate, window, metrics.clone())),
    })
}

/// What every session of this node may do, from the flags.
fn session_limits(config: &Config, names: Arc<dyn NameLimiter>) -> SessionLimits {
    SessionLimits {
        max_text_bytes: config.max_text_bytes,
        outbound_queue: config.outbound_queue,
        max_in_flight: config.max_in_flight,
        drain_timeout: config.shutdown_timeout(),
        max_rooms: config.max_rooms_per_connection,
        idle_timeout: (config.idle_timeout_secs > 0)
            .then(|| Duration::from_secs(config.idle_timeout_secs)),
        write_timeout: Duration::from_secs(config.write_timeout_secs),
        flood: FloodPolicy {
            connection_rate: config.flood.connection_rate(),
            join_rate: config.flood.join_rate(),
            close_after: config.flood.flood_close_after,
            names,
        },
        access: Policy::new(config.admission.private_prefix.as_str()),
    }
}

/// Binds `address` with a backlog deep enough for connection storms (see [`LISTEN_BACKLOG`]).
pub fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn termination_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            log::error!("cannot listen for Ctrl-C: {error}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                log::error!("cannot listen for SIGTERM: {error}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
