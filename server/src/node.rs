//! Assembles a node from its configuration and runs it until it is told to stop.
//!
//! Shutdown order matters for "no silent loss": stop accepting, tell every session to finish
//! (each drains its in-flight publishes, then closes with 1001), wait for them, and only then
//! let the broker go.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::middleware;
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::Admission;
use crate::api::Api;
use crate::broker::redis::{RedisOptions, RedisTiming};
use crate::broker::{MemoryBroker, RedisBroker, SharedBroker};
use crate::config::Config;
use crate::flood::{FloodPolicy, MemoryLimiter, NameLimiter, RedisLimiter};
use crate::host_guard::{self, HostGuard};
use crate::http::{self, AppState};
use crate::hub::{Hub, HubParts};
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
const RETIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs the node until `shutdown` is cancelled, then shuts it down gracefully.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
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

    let (broker, presence): (SharedBroker, SharedPresence) = match &config.redis_url {
        Some(url) => {
            // rediss:// URLs use rustls, which needs a process-wide crypto provider. An error
            // only means one is installed already.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let options = RedisOptions {
                timing: RedisTiming::default(),
                history: config.history(),
                prefix: config.redis_prefix.clone(),
                node_id: node_id.clone(),
            };
            let broker = RedisBroker::start(url, options, rooms.clone(), metrics.clone())
                .context("invalid --redis-url")?;
            log::info!(
                "node {node_id}: Redis backplane at {}, channels under `{}:`, sealing with key {}",
                broker.address(),
                config.redis_prefix,
                keyring.key_ids()[0]
            );
            let broker = Arc::new(broker);
            (broker.clone(), broker)
        }
        None => {
            log::info!("node {node_id}: in-memory broker (single node, no Redis)");
            metrics.broker_ready.set(1);
            let broker = Arc::new(
                MemoryBroker::new(rooms.clone(), config.history())
                    .with_max_rooms(config.history_max_rooms),
            );
            broker.register_metrics(&metrics);
            broker.spawn_sweeper();
            (broker.clone(), broker)
        }
    };
    let name_rate = config.flood.name_rate();
    let window = config.flood.duplicate_window();
    let names: Arc<dyn NameLimiter> = match &config.redis_url {
        // Nothing to share when both are off: no round trip per send.
        Some(url) if name_rate.is_some() || window.is_some() => Arc::new(
            RedisLimiter::start(
                url,
                &config.redis_prefix,
                name_rate,
                window,
                metrics.clone(),
            )
            .context("invalid --redis-url")?,
        ),
        _ => Arc::new(MemoryLimiter::new(name_rate, window, metrics.clone())),
    };
    let admission = Arc::new(Admission::new(&config.admission, metrics.clone()));
    let hub = Arc::new(Hub::new(HubParts {
        node_id,
        redis_prefix: config.redis_prefix.clone(),
        rooms,
        broker,
        presence: presence.clone(),
        keyring,
        metrics: metrics.clone(),
        history: config.history(),
    }));
    tokio::spawn(hub.clone().recover(recovery_requests));
    let api = api_keys.map(|keys| {
        log::info!("HTTP API on at /api, {} key(s)", keys.count());
        Arc::new(Api::new(
            hub.clone(),
            keys,
            config.api_limits(),
            shutdown.clone(),
        ))
    });

    let listener =
        bind(config.listen).with_context(|| format!("cannot listen on {}", config.listen))?;
    let address = listener.local_addr()?;
    // The one line on stdout: scripts and tests read the bound port from it.
    println!("listening on {address}");
    log::info!("serving http://{address}/ (WebSocket at /ws)");

    let sessions = TaskTracker::new();
    let state = AppState {
        hub,
        api,
        limits: SessionLimits {
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
        },
        admission,
        max_frame_bytes: config.max_frame_bytes,
        shutdown: shutdown.clone(),
        sessions: sessions.clone(),
    };
    let pending = Arc::new(PendingHandshakes::new(
        &config.pending,
        &config.admission.trusted_proxies,
    ));
    let mut router = http::router(state);
    if let Some(guard) = HostGuard::new(address, &config.admission.allowed_origins, metrics.clone())
    {
        router = router.layer(middleware::from_fn_with_state(guard, host_guard::check));
    }
    let listener = GuardedListener::new(
        listener,
        config.admission.handshake_timeout(),
        pending,
        metrics,
    );
    let mut server = tokio::spawn(
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<Peer>(),
        )
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future(),
    );
    tokio::select! {
        // Biased: once shutdown begins the server finishes too, and that is no failure.
        biased;
        _ = shutdown.cancelled() => {}
        stopped = &mut server => {
            anyhow::bail!("the HTTP server stopped on its own: {stopped:?}");
        }
    }

    // HTTP connections and sessions get one deadline together: a client that never finishes
    // its request must not keep the node from exiting.
    sessions.close();
    log::info!("shutting down: closing {} session(s)", sessions.len());
    let drained = tokio::time::timeout(config.shutdown_timeout(), async {
        if let Ok(Err(error)) = server.await {
            log::warn!("HTTP server: {error}");
        }
        sessions.wait().await;
    })
    .await;
    if drained.is_err() {
        log::warn!(
            "connections still open after {:?}; exiting anyway",
            config.shutdown_timeout()
        );
    }
    // Queued behind the sessions' departures, so awaiting it sees them sent too.
    match tokio::time::timeout(RETIRE_TIMEOUT, presence.retire()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => log::warn!("cannot withdraw this node's presence: {error}"),
        Err(_) => log::warn!("withdrawing this node's presence timed out"),
    }
    log::info!("stopped");
    Ok(())
}

fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
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
