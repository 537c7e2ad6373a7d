//! Caps on connections that have not become WebSockets yet (pending handshakes).
//!
//! The caps of [`crate::admission`] count upgraded connections only; before the upgrade a
//! client could open sockets without limit and let each sit out its handshake deadline. Here
//! every accepted TCP connection takes a place, per node and per client address, until it is
//! upgraded (a WebSocket, or an API request with a valid key) or closed. Beyond either cap the
//! connection is closed at accept, before a byte is read: answering it (503 or 429) would cost
//! a task, a buffer and a wait for the request, the very resources the cap protects.
//!
//! The per-address cap keys by the TCP peer, the only address known before the request is
//! read, grouped like the connection caps ([`crate::admission::address_key`]: IPv6 by /64). A
//! `--trusted-proxy` is exempt from it, since a balancer carries many clients' connections;
//! the per-node cap still applies to it.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use dashmap::DashMap;
use ipnet::IpNet;

use crate::admission::Refusal;

/// Flags of the pending-handshake caps.
#[derive(Debug, Clone, clap::Args)]
pub struct PendingConfig {
    /// Most accepted connections not yet upgraded to WebSockets on this node; more are closed
    /// at accept (0: no limit).
    #[arg(long, env = "CHAT_MAX_PENDING_HANDSHAKES", default_value_t = 4096)]
    pub max_pending_handshakes: usize,

    /// Most connections not yet upgraded from one client address (an IPv6 /64 counts as one);
    /// more are closed at accept. Trusted proxies are exempt (0: no limit).
    #[arg(
        long,
        env = "CHAT_MAX_PENDING_HANDSHAKES_PER_ADDRESS",
        default_value_t = 256
    )]
    pub max_pending_handshakes_per_address: usize,
}

/// The pending connections of one node.
pub(crate) struct PendingHandshakes {
    max_total: usize,
    max_per_address: usize,
    trusted_proxies: Vec<IpNet>,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    total: AtomicUsize,
    per_address: DashMap<IpAddr, usize>,
}

/// A pending connection's places, given back once, when it is upgraded or closed.
#[derive(Debug)]
pub(crate) struct PendingSlot {
    released: AtomicBool,
    counts: Arc<Counts>,
    /// The key it counts under, when the per-address cap applies to it.
    address: Option<IpAddr>,
}

impl std::fmt::Debug for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} pending", self.total.load(Ordering::Relaxed))
    }
}

impl PendingSlot {
    /// Gives the places back; later calls do nothing.
    pub(crate) fn release(&self) {
        if self.released.swap(true, Ordering::AcqRel) {
            return;
        }
        self.counts.total.fetch_sub(1, Ordering::Relaxed);
        if let Some(address) = self.address {
            self.counts.per_address.remove_if_mut(&address, |_, count| {
                *count -= 1;
                *count == 0
            });
        }
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.release();
    }
}

impl PendingHandshakes {
    /// No connection pending yet; `trusted_proxies` are exempt from the per-address cap.
    pub(crate) fn new(config: &PendingConfig, trusted_proxies: &[IpNet]) -> Self {
        PendingHandshakes {
            max_total: config.max_pending_handshakes,
            max_per_address: config.max_pending_handshakes_per_address,
            trusted_proxies: trusted_proxies.to_vec(),
            counts: Arc::default(),
        }
    }

    /// A place for a connection just accepted from `peer`, or the cap it would exceed.
    pub(crate) fn admit(&self, peer: IpAddr) -> Result<PendingSlot, Refusal> {
        let total = self.counts.total.fetch_add(1, Ordering::Relaxed);
        let mut slot = PendingSlot {
            released: AtomicBool::new(false),
            counts: self.counts.clone(),
            address: None,
        };
        if self.max_total > 0 && total >= self.max_total {
            return Err(Refusal::PendingHandshakes);
        }
        let peer = peer.to_canonical();
        if self.max_per_address > 0 && !self.trusted_proxies.iter().any(|n| n.contains(&peer)) {
            let key = crate::admission::address_key(peer);
            let mut count = self.counts.per_address.entry(key).or_insert(0);
            if *count >= self.max_per_address {
                drop(count);
                return Err(Refusal::PendingHandshakesPerAddress);
            }
            *count += 1;
            slot.address = Some(key);
        }
        Ok(slot)
    }

    /// Connections pending now (only the unit tests ask).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.counts.total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(total: usize, per_address: usize, trusted: &[&str]) -> PendingHandshakes {
        let config = PendingConfig {
            max_pending_handshakes: total,
            max_pending_handshakes_per_address: per_address,
        };
        let trusted: Vec<IpNet> = trusted.iter().map(|n| n.parse().unwrap()).collect();
        PendingHandshakes::new(&config, &trusted)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn caps_per_node_and_per_address_and_gives_places_back_once() {
        let pending = pending(3, 2, &[]);
        let a = pending.admit(ip("127.0.0.1")).unwrap();
        let b = pending.admit(ip("127.0.0.1")).unwrap();
        assert_eq!(
            pending.admit(ip("127.0.0.1")).err(),
            Some(Refusal::PendingHandshakesPerAddress)
        );
        let c = pending.admit(ip("127.0.0.2")).unwrap();
        assert_eq!(
            pending.admit(ip("127.0.0.3")).err(),
            Some(Refusal::PendingHandshakes)
        );
        a.release();
        a.release();
        drop(a);
        assert_eq!(pending.len(), 2, "released once, however often it is asked");
        drop((b, c));
        assert_eq!(pending.len(), 0);
        assert!(pending.counts.per_address.is_empty());
    }

    #[test]
    fn ipv6_counts_per_64_and_trusted_proxies_only_per_node() {
        let pending = pending(10, 1, &["10.0.0.5/32"]);
        let _first = pending.admit(ip("2001:db8:1:2::1")).unwrap();
        assert!(pending.admit(ip("2001:db8:1:2:ffff::9")).is_err());
        let _other = pending.admit(ip("2001:db8:1:3::1")).unwrap();
        let _proxy: Vec<_> = (0..5)
            .map(|_| pending.admit(ip("10.0.0.5")).unwrap())
            .collect();
        assert!(pending.admit(ip("::ffff:10.0.0.5")).is_ok(), "mapped IPv4");
    }
}
