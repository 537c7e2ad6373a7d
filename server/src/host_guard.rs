//! DNS-rebinding defence of a node bound to loopback: only loopback host names are served.
//!
//! A page on `evil.example` can make its name resolve to 127.0.0.1 after it loaded; the
//! browser then sends the page's requests to the node on the visitor's machine with
//! `Host: evil.example`, and the same-origin rule of `/ws` passes, since `Origin` and `Host`
//! agree. A node that listens on loopback serves nobody but its own machine, so it answers only
//! requests that name a loopback host (`localhost`, 127.0.0.0/8, `[::1]`, any port) or a host of
//! an `--allowed-origin` (`*` turns the check off). Every path is covered: the page, `/ws`,
//! `/api` and `/metrics`. A request without `Host` comes from no browser and is let through.
//! Others get 421 Misdirected Request, counted as `cause="host"`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::admission::Refusal;
use crate::metrics::Metrics;

/// Which `Host` names a node answers.
pub(crate) struct HostGuard {
    /// Host names (lower case, without port) allowed besides loopback's.
    allowed: Vec<String>,
    metrics: Arc<Metrics>,
}

impl HostGuard {
    /// The guard of a node listening on `listen`; `None` when it is not bound to loopback, or
    /// when `--allowed-origin *` allows every origin.
    pub(crate) fn new(
        listen: SocketAddr,
        allowed_origins: &[String],
        metrics: Arc<Metrics>,
    ) -> Option<Arc<Self>> {
        if !listen.ip().is_loopback() || allowed_origins.iter().any(|o| o.trim() == "*") {
            return None;
        }
        let allowed = allowed_origins
            .iter()
            .filter_map(|origin| {
                let origin = origin.trim().trim_end_matches('/');
                let authority = origin.split_once("://").map_or(origin, |(_, rest)| rest);
                let host = host_of(authority);
                (!host.is_empty()).then(|| host.to_ascii_lowercase())
            })
            .collect();
        Some(Arc::new(HostGuard { allowed, metrics }))
    }

    fn allows(&self, authority: &str) -> bool {
        let host = host_of(authority.trim());
        is_loopback_name(host) || self.allowed.iter().any(|a| a.eq_ignore_ascii_case(host))
    }
}

/// The host of `host[:port]` or `[v6][:port]`, brackets kept.
fn host_of(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, _port)| host)
}

fn is_loopback_name(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    literal
        .parse::<IpAddr>()
        .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// The middleware: refuses a request for a host this node does not serve.
pub(crate) async fn check(
    State(guard): State<Arc<HostGuard>>,
    request: Request,
    next: Next,
) -> Response {
    let authority = match request.headers().get(header::HOST) {
        Some(host) => host.to_str().ok(),
        None => request.uri().authority().map(|a| a.as_str()),
    };
    let allowed = match authority {
        Some(authority) => guard.allows(authority),
        // Browsers always send `Host`; a value that is not text is no loopback name.
        None => request.headers().get(header::HOST).is_none(),
    };
    if allowed {
        return next.run(request).await;
    }
    guard.metrics.limits.refused(Refusal::Host);
    Refusal::Host.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(listen: &str, origins: &[&str]) -> Option<Arc<HostGuard>> {
        let origins: Vec<String> = origins.iter().map(|o| (*o).to_owned()).collect();
        HostGuard::new(listen.parse().unwrap(), &origins, Arc::new(Metrics::new()))
    }

    #[test]
    fn a_loopback_node_answers_loopback_names_with_any_port() {
        let guard = guard("127.0.0.1:8080", &[]).unwrap();
        for host in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1:9",
            "127.1.2.3",
            "[::1]",
            "[::1]:8080",
            "[::ffff:127.0.0.1]:80",
        ] {
            assert!(guard.allows(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "10.0.0.1:8080",
            "[2001:db8::1]:8080",
            "",
        ] {
            assert!(!guard.allows(host), "{host}");
        }
    }

    #[test]
    fn allowed_origins_add_their_hosts_and_a_star_or_a_public_bind_turns_it_off() {
        let guard = guard("[::1]:8080", &["http://evil.example:8000/"]).unwrap();
        assert!(guard.allows("evil.example"));
        assert!(guard.allows("Evil.Example:1234"));
        assert!(!guard.allows("other.example"));
        assert!(self::guard("127.0.0.1:8080", &["*"]).is_none());
        assert!(self::guard("0.0.0.0:8080", &[]).is_none());
    }
}
