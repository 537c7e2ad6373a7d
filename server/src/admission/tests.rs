//! Unit tests of admission: client addresses behind proxies, origins, and the caps.

use super::*;
use clap::Parser;

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    admission: AdmissionConfig,
}

fn admission(args: &[&str]) -> Admission {
    let flags = Flags::try_parse_from(std::iter::once("test").chain(args.iter().copied())).unwrap();
    Admission::new(&flags.admission, RefusalCounts::connections_refused())
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, value.parse().unwrap());
    }
    map
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn forwarded_for_counts_only_from_trusted_proxies() {
    let admission = admission(&["--trusted-proxy", "10.0.0.0/8,192.0.2.1"]);
    let forwarded = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.1.1.1")]);
    assert_eq!(
        admission.client_address(ip("192.0.2.1"), &forwarded),
        ip("203.0.113.9")
    );
    assert_eq!(
        admission.client_address(ip("198.51.100.7"), &forwarded),
        ip("198.51.100.7")
    );
    let garbage = headers(&[("x-forwarded-for", "not-an-address")]);
    assert_eq!(
        admission.client_address(ip("10.0.0.1"), &garbage),
        ip("10.0.0.1")
    );
}

#[test]
fn origins_default_to_the_requested_host() {
    let own = admission(&[]);
    let same = headers(&[
        ("host", "chat.example:8080"),
        ("origin", "https://chat.example:8080"),
    ]);
    let other = headers(&[
        ("host", "chat.example:8080"),
        ("origin", "https://evil.example"),
    ]);
    assert!(own.origin_allowed(&same));
    assert!(!own.origin_allowed(&other));
    assert!(own.origin_allowed(&headers(&[("host", "chat.example")])));
    let listed = admission(&["--allowed-origin", "https://evil.example/"]);
    assert!(listed.origin_allowed(&other));
    assert!(!listed.origin_allowed(&same));
}

#[test]
fn permits_are_counted_per_node_and_per_address() {
    let admission = admission(&[
        "--max-connections",
        "3",
        "--max-connections-per-address",
        "2",
    ]);
    let a = admission.permit(ip("127.0.0.1")).ok().unwrap();
    let b = admission.permit(ip("127.0.0.1")).ok().unwrap();
    assert_eq!(
        admission.permit(ip("127.0.0.1")).err(),
        Some(Refusal::AddressFull)
    );
    let c = admission.permit(ip("127.0.0.2")).ok().unwrap();
    assert_eq!(
        admission.permit(ip("127.0.0.3")).err(),
        Some(Refusal::NodeFull)
    );
    drop((a, b, c));
    assert!(admission.open.per_address.is_empty());
    assert_eq!(admission.open.total.load(Ordering::Relaxed), 0);
    assert!(admission.permit(ip("127.0.0.1")).is_ok());
}

#[test]
fn ipv6_clients_are_counted_per_64() {
    let admission = admission(&["--max-connections-per-address", "1"]);
    let _first = admission.permit(ip("2001:db8:aa:bb::1")).ok().unwrap();
    assert_eq!(
        admission
            .permit(ip("2001:db8:aa:bb:1234:5678:9abc:def0"))
            .err(),
        Some(Refusal::AddressFull),
        "same /64"
    );
    assert!(
        admission.permit(ip("2001:db8:aa:bc::1")).is_ok(),
        "next /64"
    );
    let _v4 = admission.permit(ip("::ffff:192.0.2.7")).ok().unwrap();
    assert_eq!(
        admission.permit(ip("192.0.2.7")).err(),
        Some(Refusal::AddressFull),
        "an IPv4-mapped address is its IPv4 address"
    );
    assert!(admission.permit(ip("192.0.2.8")).is_ok());
}
