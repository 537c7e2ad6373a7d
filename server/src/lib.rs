//! A stateless WebSocket chat node. Clients join rooms and chat; nodes relay every message,
//! sealed with AES-256-GCM, through a broker (Redis pub/sub, or in memory for a single node),
//! so any client reaches any other through any node.
//!
//! Where to find what:
//! - [`config`]: flags and environment variables;
//! - [`node`]: assembling and running a node, graceful shutdown;
//! - [`http`]: the one port: `/ws`, the page, `/healthz`, `/readyz`, `/metrics`;
//! - [`api`]: the HTTP API under `/api`: publish and batch publish, room and node figures;
//! - [`session`]: one WebSocket connection: its requests, replies and keepalive, how the node
//!   ends one, and the deadline on its writes;
//! - [`hub`]: join, leave and publish, for sessions;
//! - [`rooms`]: local membership, fan-out and gap detection;
//! - [`broker`]: the backplane interface (messages and history) and its Redis and in-memory
//!   implementations;
//! - [`presence`]: who is in a room across nodes;
//! - [`relay`]: what travels between nodes on a room's channel;
//! - [`envelope`]: sealing and opening payloads;
//! - [`ids`], [`metrics`]: identifiers the node makes up, and Prometheus series; `hex`: the
//!   one hex encoder;
//! - [`wire`]: server frames encoded once and shared by every recipient;
//! - [`frame_budget`]: the largest frame the node may build, and `joined` cut to fit it;
//! - [`flood`]: rate limits per connection and per name, and the debounce;
//! - [`redis_client`]: connecting to Redis or a Redis Cluster, shared by the broker and the
//!   flood limiter; [`keyspace`]: the names of everything in Redis, and their hash tags;
//! - [`admission`], [`token`]: who may connect, and under which name;
//! - [`listener`]: the port's listener: a deadline on every handshake, and caps on connections
//!   before their upgrade;
//! - [`host_guard`]: the host names a loopback-bound node answers (DNS rebinding).
#![warn(missing_docs)]

pub mod access;
mod admission;
mod api;
pub mod broker;
pub mod config;
pub mod envelope;
pub mod flood;
mod frame_budget;
mod hex;
mod host_guard;
mod http;
pub mod hub;
mod ids;
pub mod keyspace;
mod listener;
pub mod metrics;
pub mod node;
mod per_label;
pub mod presence;
mod redis_client;
pub mod relay;
pub mod rooms;
mod session;
mod token;
pub mod wire;
