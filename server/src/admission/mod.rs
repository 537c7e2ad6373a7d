//! Who may open a WebSocket: the checks of `GET /ws` before the upgrade.
//!
//! - **Origin**: a browser sends `Origin` with every WebSocket handshake; one from another site
//!   is refused (403), so no web page can open a socket in its visitor's name. By default only
//!   the node's own host is allowed; `--allowed-origin` lists others. Requests without `Origin`
//!   come from non-browser clients, which no page controls, and are allowed.
//! - **Connection caps**: `--max-connections` per node (503 when full) and
//!   `--max-connections-per-address` per client address (429). The client address is the TCP
//!   peer's, or, when the peer is a `--trusted-proxy`, the last address in `X-Forwarded-For`
//!   that is not a trusted proxy: a client can prepend anything to that header, but not append.
//! - **Names**: `?name=` as asked (or a guest name), or with `--auth-secret` the name in a
//!   valid token ([`crate::token`]).
//!
//! A connection that passes holds a [`Permit`] for its lifetime; dropping it frees its places.
//! One that does not is told why by a [`Refusal`] ([`refusal`]), the node's one type for a
//! connection turned away, also used by the listener and the host guard.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, header};
use chat_protocol::{ErrorCode, FrameError};
use dashmap::DashMap;
use ipnet::IpNet;

use crate::access::Grants;
use crate::token::{self, Expected, TokenAuth, WeakSecret};

mod refusal;
#[cfg(test)]
mod tests;

pub(crate) use refusal::{CredentialError, Refusal, RefusalCounts};

/// Flags of connection admission.
#[derive(Debug, Clone, clap::Args)]
pub struct AdmissionConfig {
    /// Most WebSocket connections this node holds at once (0: no limit but the OS's).
    #[arg(long, env = "CHAT_MAX_CONNECTIONS", default_value_t = 16384)]
    pub max_connections: usize,

    /// Most WebSocket connections from one client address (0: no limit).
    #[arg(long, env = "CHAT_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = 0)]
    pub max_connections_per_address: usize,

    /// Address or network (CIDR) of a reverse proxy whose `X-Forwarded-For` is believed.
    /// Repeat, or separate with commas.
    #[arg(long = "trusted-proxy", env = "CHAT_TRUSTED_PROXY", value_delimiter = ',', value_parser = parse_network)]
    pub trusted_proxies: Vec<IpNet>,

    /// Origin (`scheme://host[:port]`) whose pages may open WebSockets; `*` allows any. Repeat,
    /// or separate with commas. Default: only pages served by the host the request names.
    #[arg(
        long = "allowed-origin",
        env = "CHAT_ALLOWED_ORIGIN",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Secret of HS256 tokens (JWT) that carry each user's name; with it, a connection without
    /// a valid token is refused. Prefer the environment variable: flags show in `ps`.
    #[arg(
        long,
        env = "CHAT_AUTH_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub auth_secret: Option<String>,

    /// Issuer whose tokens are accepted: with it, a token's `iss` claim must equal it.
    #[arg(long, env = "CHAT_AUTH_ISSUER", value_name = "ISSUER")]
    pub auth_issuer: Option<String>,

    /// This service's audience name: with it, a token's `aud` claim (a string or an array) must
    /// contain it. Without it, tokens that name any audience are refused.
    #[arg(long, env = "CHAT_AUTH_AUDIENCE", value_name = "AUDIENCE")]
    pub auth_audience: Option<String>,

    /// Rooms whose names start with this are private: only a token whose `rooms` claim names
    /// them may join, and without `--auth-secret` nobody may.
    #[arg(
        long,
        env = "CHAT_PRIVATE_PREFIX",
        default_value = crate::access::DEFAULT_PRIVATE_PREFIX,
        value_parser = parse_room_prefix
    )]
    pub private_prefix: String,

    /// Seconds a connection may take from accept to a completed WebSocket handshake; slower
    /// ones, and plain HTTP connections kept open longer, are closed.
    #[arg(long, env = "CHAT_HANDSHAKE_TIMEOUT", default_value_t = 10)]
    pub handshake_timeout_secs: u64,
}

impl AdmissionConfig {
    /// Refuses settings the node must not start with.
    pub fn validate(&self) -> Result<(), WeakSecret> {
        match &self.auth_secret {
            Some(secret) => token::check_secret(secret.as_bytes()),
            None => Ok(()),
        }
    }

    /// How long a connection may take from accept to a completed WebSocket handshake.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs)
    }
}

fn parse_room_prefix(text: &str) -> Result<String, String> {
    if text.len() > chat_protocol::limits::MAX_ROOM_BYTES
        || !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(format!(
            "`{text}` cannot start a room name: use at most {} of A-Z, a-z, 0-9, '_', '.' and '-'",
            chat_protocol::limits::MAX_ROOM_BYTES
        ));
    }
    Ok(text.to_owned())
}

fn parse_network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{text}` is neither an IP address nor a network like 10.0.0.0/8"))
}

/// The admission checks of one node, and the connections they let in.
pub(crate) struct Admission {
    max_connections: usize,
    max_per_address: usize,
    trusted_proxies: Vec<IpNet>,
    allowed_origins: Vec<String>,
    auth: Option<TokenAuth>,
    open: Arc<Counts>,
    refusals: RefusalCounts,
}

#[derive(Default)]
struct Counts {
    total: AtomicUsize,
    per_address: DashMap<IpAddr, usize>,
}

/// A connection's places in the caps, given back on drop.
pub(crate) struct Permit {
    counts: Arc<Counts>,
    address: Option<IpAddr>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.counts.total.fetch_sub(1, Ordering::Relaxed);
        if let Some(address) = self.address {
            self.counts.per_address.remove_if_mut(&address, |_, count| {
                *count -= 1;
                *count == 0
            });
        }
    }
}

/// What the handshake asked for.
pub(crate) struct Handshake<'a> {
    /// The TCP peer's address.
    pub peer: IpAddr,
    /// The request's headers (`Origin`, `Host`, `X-Forwarded-For`, `Authorization`).
    pub headers: &'a HeaderMap,
    /// `?name=`, if any.
    pub name: Option<&'a str>,
    /// `?token=`, if any.
    pub token: Option<&'a str>,
}

/// A connection let in: its permit and the name it will use, or why the name is refused (the
/// session says so in an error frame and closes with 1008).
pub(crate) struct Admitted {
    /// Its places in the caps, for as long as it is open.
    pub permit: Permit,
    /// The name it chats under, or the error frame that refuses it.
    pub name: Result<String, FrameError>,
    /// When the token that gave the name stops being honoured; the session ends then.
    pub expires: Option<SystemTime>,
    /// Where the token lets the connection go (nothing verified without tokens).
    pub grants: Grants,
}

impl Admission {
    /// The checks of `config`; refusals are counted in `refusals`.
    pub(crate) fn new(config: &AdmissionConfig, refusals: RefusalCounts) -> Self {
        Admission {
            max_connections: config.max_connections,
            max_per_address: config.max_connections_per_address,
            trusted_proxies: config.trusted_proxies.clone(),
            allowed_origins: config
                .allowed_origins
                .iter()
                .map(|origin| origin.trim().trim_end_matches('/').to_ascii_lowercase())
                .filter(|origin| !origin.is_empty())
                .collect(),
            auth: config.auth_secret.as_deref().map(|secret| {
                let expected = Expected {
                    issuer: config.auth_issuer.as_deref(),
                    audience: config.auth_audience.as_deref(),
                };
                TokenAuth::new(secret.as_bytes(), &expected)
            }),
            open: Arc::default(),
            refusals,
        }
    }

    /// Lets a handshake in, or says why not (counted); the refusal is the HTTP answer.
    pub(crate) fn admit(&self, handshake: &Handshake<'_>) -> Result<Admitted, Refusal> {
        let permit = if self.origin_allowed(handshake.headers) {
            self.permit(self.client_address(handshake.peer, handshake.headers))
        } else {
            Err(Refusal::Origin)
        };
        match permit {
            Ok(permit) => {
                let (name, expires, grants) = match self.name(handshake) {
                    Ok((name, expires, grants)) => (Ok(name), expires, grants),
                    Err(error) => (Err(error), None, Grants::default()),
                };
                Ok(Admitted {
                    permit,
                    name,
                    expires,
                    grants,
                })
            }
            Err(refusal) => {
                self.refusals.inc(refusal);
                Err(refusal)
            }
        }
    }

    fn origin_allowed(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return true;
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        if self.allowed_origins.is_empty() {
            let authority = origin
                .split_once("://")
                .map_or(origin, |(_, authority)| authority);
            return headers
                .get(header::HOST)
                .and_then(|host| host.to_str().ok())
                .is_some_and(|host| host.eq_ignore_ascii_case(authority));
        }
        self.allowed_origins
            .iter()
            .any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(origin))
    }

    /// The peer, or the client behind a trusted proxy.
    pub(crate) fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            let hop = hop.trim_start_matches('[').trim_end_matches(']');
            let Ok(address) = hop.parse::<IpAddr>() else {
                break;
            };
            client = address;
            if !self.is_trusted(address) {
                break;
            }
        }
        client
    }

    fn is_trusted(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.trusted_proxies
            .iter()
            .any(|net| net.contains(&address))
    }

    fn permit(&self, address: IpAddr) -> Result<Permit, Refusal> {
        let total = self.open.total.fetch_add(1, Ordering::Relaxed);
        let mut permit = Permit {
            counts: self.open.clone(),
            address: None,
        };
        if self.max_connections > 0 && total >= self.max_connections {
            return Err(Refusal::NodeFull);
        }
        if self.max_per_address > 0 {
            let address = address_key(address);
            let mut count = self.open.per_address.entry(address).or_insert(0);
            if *count >= self.max_per_address {
                drop(count);
                return Err(Refusal::AddressFull);
            }
            *count += 1;
            permit.address = Some(address);
        }
        Ok(permit)
    }

    /// The connection's name and, with tokens, when it expires and where it may go.
    fn name(&self, handshake: &Handshake<'_>) -> Result<Identity, FrameError> {
        let Some(auth) = &self.auth else {
            return match handshake.name {
                None => Ok((crate::ids::guest_name(), None, Grants::default())),
                Some(name) => chat_protocol::validate_name(name)
                    .map(|()| (name.to_owned(), None, Grants::default()))
                    .map_err(|message| FrameError::new(ErrorCode::InvalidName, message)),
            };
        };
        let token = handshake.token.or_else(|| bearer(handshake.headers));
        let grant = auth.name(token, handshake.name).map_err(|error| {
            self.refusals.inc(Refusal::Unauthorized);
            FrameError::new(ErrorCode::Unauthorized, error.to_string())
        })?;
        Ok((grant.name, grant.expires, grant.grants))
    }
}

/// A connection's name, when its token expires, and where it may go.
type Identity = (String, Option<SystemTime>, Grants);

/// The key a client address is counted under by the per-address caps: an IPv4 address (or an
/// IPv4-mapped IPv6 one) as itself, an IPv6 address by its /64. One IPv6 subscriber usually
/// holds a whole /64, so counting by /128 would let one client take 2^64 places.
pub(crate) fn address_key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

/// The token of an `Authorization: Bearer <token>` header (the scheme is case-insensitive).
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}
