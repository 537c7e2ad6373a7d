//! The shipped load balancer (`deploy/haproxy.cfg`, run by Debian's HAProxy) in front of three
//! real nodes on loopback: clients spread over every node, chat crosses nodes, a stopped
//! node's clients move to the others without losing anything acknowledged, and a node that
//! loses Redis leaves rotation and comes back, nodes join and leave rotation as DNS names
//! them (what `--scale` does), and node metrics are not public through it. Also checks
//! `docker-compose.yml` against the configuration it mounts, since Docker itself cannot run
//! here.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use chat_protocol::ServerFrame;
use futures::StreamExt;
use ipnet::IpNet;
use support::balancer::{self, Balancer, node_ip, shared_port};
use support::repository::{repository_file, yaml_file, yaml_strings};
use support::{Client, KEY_A, Node, RedisServer, http_get, key, wait_until};
use yaml_rust2::Yaml;

const ROOM: &str = "lobby";
const CLIENTS: usize = 300;
/// Connections opened at once; enough to be quick, few enough for a loaded 2-core machine.
const CONCURRENCY: usize = 20;
/// Generous: health checks run every 200 ms, but the machine may be busy.
const ROTATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Three nodes `node-0..2` on one port of three loopback addresses, starting with the
/// `first`-th (tests running at once use different addresses); node `i` uses `redis[i]`.
async fn balanced_nodes(first: usize, redis: [&RedisServer; 3]) -> (Vec<Node>, Vec<Ipv4Addr>, u16) {
    let ips: Vec<_> = (first..first + 3).map(node_ip).collect();
    let port = shared_port(&ips);
    let key_a = key(KEY_A);
    let mut nodes = Vec::new();
    for (i, redis) in redis.iter().enumerate() {
        let listen = SocketAddr::from((ips[i], port)).to_string();
        nodes.push(Node::redis_at(redis, &format!("node-{i}"), &[&key_a], &listen).await);
    }
    (nodes, ips, port)
}

async fn start_balancer(nodes: &[Node], ips: &[Ipv4Addr], port: u16) -> Balancer {
    let balancer = Balancer::start(ips, port).await;
    let addrs: Vec<SocketAddr> = nodes.iter().map(Node::addr).collect();
    balancer.wait_for_rotation(&addrs, ROTATION_TIMEOUT).await;
    balancer
}

/// `count` clients named `{prefix}{i}` connected through the balancer, each a member of ROOM.
async fn members(balancer: &Balancer, prefix: &str, count: usize) -> Vec<Client> {
    futures::stream::iter(0..count)
        .map(|i| async move {
            let mut client = balancer.client(&format!("{prefix}{i}")).await;
            client.join(ROOM).await;
            client
        })
        .buffered(CONCURRENCY)
        .collect()
        .await
}

fn per_node(clients: &[Client]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for client in clients {
        *counts.entry(client.welcome().node.clone()).or_default() += 1;
    }
    counts
}

/// Every client in `clients` receives every message in `ids`, in any order.
async fn all_receive(clients: &mut [Client], ids: &[String]) {
    futures::future::join_all(clients.iter_mut().map(|client| async move {
        for id in ids {
            client.message_with_id(id).await;
        }
    }))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_spread_over_every_node_and_move_when_one_stops() {
    let redis = RedisServer::start().await;
    let (mut nodes, ips, port) = balanced_nodes(0, [&redis; 3]).await;
    let balancer = start_balancer(&nodes, &ips, port).await;

    // Least-connections spreads the clients over all three nodes.
    let mut clients = members(&balancer, "user-", CLIENTS).await;
    let counts = per_node(&clients);
    eprintln!("{CLIENTS} clients through the balancer: {counts:?}");
    for i in 0..3 {
        let on_node = counts.get(&format!("node-{i}")).copied().unwrap_or(0);
        assert!(
            on_node >= CLIENTS / 10,
            "node-{i} got {on_node} of {CLIENTS} clients: {counts:?}"
        );
    }

    // A message crosses nodes: from a client of node-0 to every member on every node.
    let sender = clients
        .iter()
        .position(|c| c.welcome().node == "node-0")
        .expect("a client on node-0");
    let id = clients[sender].say(ROOM, "hello from node-0").await;
    let (before, after) = clients.split_at_mut(sender);
    all_receive(before, std::slice::from_ref(&id)).await;
    all_receive(&mut after[1..], std::slice::from_ref(&id)).await;

    // Senders on every node pipeline messages, and node-0 is stopped while they are in flight.
    let (mut moving, mut staying): (Vec<Client>, Vec<Client>) = clients
        .into_iter()
        .partition(|c| c.welcome().node == "node-0");
    const SENDS: usize = 20;
    const SENDERS: usize = 4;
    for client in moving.iter_mut().take(SENDERS) {
        for k in 0..SENDS {
            client.send_chat(ROOM, &format!("in flight {k}")).await;
        }
    }
    let mut staying_refs = Vec::new();
    for (s, client) in staying.iter_mut().take(SENDERS).enumerate() {
        for k in 0..SENDS {
            staying_refs.push((s, client.send_chat(ROOM, &format!("meanwhile {k}")).await));
        }
    }
    // Stop node-0 once it is busy acking.
    let mut acked = Vec::new();
    match moving[0]
        .recv_until("an ack from node-0", |f| {
            matches!(f, ServerFrame::Ack { .. })
        })
        .await
    {
        ServerFrame::Ack { id, .. } => acked.push(id.into_owned()),
        _ => unreachable!("an ack was asked for"),
    }
    nodes[0].sigterm();

    // Every client of node-0 is told to go away; what was acked before is kept.
    for client in &mut moving {
        assert_eq!(client.expect_close().await, 1001, "close code from node-0");
        for frame in client.take_unread() {
            if let ServerFrame::Ack { id, .. } = frame {
                acked.push(id.into_owned());
            }
        }
    }
    eprintln!(
        "node-0 acked {} of {} messages in flight when it was stopped",
        acked.len(),
        SENDERS * SENDS
    );
    for (s, reference) in &staying_refs {
        acked.push(staying[*s].ack(reference).await);
    }
    let status = nodes[0].wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "node-0 exited with {status}");

    // Every acked message reaches every member that stayed connected throughout.
    all_receive(&mut staying, &acked).await;

    // The moved clients reconnect through the balancer, land on the other nodes, and chat
    // resumes in both directions.
    let names: Vec<String> = moving.iter().map(|c| c.name().to_owned()).collect();
    drop(moving);
    let balancer = &balancer;
    let mut moved: Vec<Client> = futures::stream::iter(names)
        .map(|name| async move {
            let mut client = balancer.client(&name).await;
            client.join(ROOM).await;
            client
        })
        .buffered(CONCURRENCY)
        .collect()
        .await;
    let moved_counts = per_node(&moved);
    eprintln!(
        "{} clients of node-0 reconnected: {moved_counts:?}",
        moved.len()
    );
    assert!(
        !moved_counts.contains_key("node-0"),
        "a client reconnected to the stopped node: {moved_counts:?}"
    );

    let from_moved = moved[0].say(ROOM, "back again").await;
    let from_staying = staying[0].say(ROOM, "welcome back").await;
    all_receive(&mut staying[1..], std::slice::from_ref(&from_moved)).await;
    all_receive(&mut moved[1..], std::slice::from_ref(&from_staying)).await;
    all_receive(&mut moved[..1], std::slice::from_ref(&from_staying)).await;
    all_receive(&mut staying[..1], std::slice::from_ref(&from_moved)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_loses_redis_leaves_rotation_until_it_is_back() {
    let redis = RedisServer::start().await;
    let mut own_redis = RedisServer::start().await;
    let (nodes, ips, port) = balanced_nodes(3, [&redis, &redis, &own_redis]).await;
    let balancer = start_balancer(&nodes, &ips, port).await;
    let healthy: Vec<SocketAddr> = nodes[..2].iter().map(Node::addr).collect();

    // The container's probe agrees with the balancer's check.
    assert!(healthcheck(&nodes[2]), "chat-healthcheck on a ready node");

    own_redis.kill();
    wait_until("node-2 reports not ready", ROTATION_TIMEOUT, async || {
        nodes[2].status_of("/readyz").await == 503
    })
    .await;
    assert!(
        !healthcheck(&nodes[2]),
        "chat-healthcheck on an unready node"
    );
    balancer.wait_for_rotation(&healthy, ROTATION_TIMEOUT).await;

    // New connections avoid it, although least-connections would favour it (it has none).
    let clients = members(&balancer, "guest-", 30).await;
    let counts = per_node(&clients);
    eprintln!("30 clients while node-2 is out of rotation: {counts:?}");
    assert!(!counts.contains_key("node-2"), "{counts:?}");

    // Once its Redis is back, it is back in rotation, and the next client goes to it.
    own_redis.restart().await;
    let all: Vec<SocketAddr> = nodes.iter().map(Node::addr).collect();
    balancer.wait_for_rotation(&all, ROTATION_TIMEOUT).await;
    let next = balancer.client("latecomer").await;
    assert_eq!(next.welcome().node, "node-2", "least connections");

    // The balancer's own metrics, for Prometheus.
    let metrics = http_get(balancer.stats_addr(), "/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .body
            .contains("haproxy_backend_active_servers{proxy=\"nodes\"} 3")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_and_leave_rotation_as_dns_names_them() {
    let redis = RedisServer::start().await;
    let (nodes, ips, port) = balanced_nodes(6, [&redis; 3]).await;
    let addrs: Vec<SocketAddr> = nodes.iter().map(Node::addr).collect();

    // Two containers at first.
    let balancer = Balancer::start(&ips[..2], port).await;
    balancer
        .wait_for_rotation(&addrs[..2], ROTATION_TIMEOUT)
        .await;
    let mut clients = members(&balancer, "early-", 4).await;

    // `--scale server=3`: the name answers with a third address, which fills a free slot,
    // and least connections sends the next client to the newcomer.
    balancer.set_node_ips(&ips);
    balancer.wait_for_rotation(&addrs, ROTATION_TIMEOUT).await;
    let mut newcomer = balancer.client("newcomer").await;
    assert_eq!(newcomer.welcome().node, "node-2", "least connections");
    newcomer.join(ROOM).await;
    let id = newcomer.say(ROOM, "hello from the new node").await;
    all_receive(&mut clients, std::slice::from_ref(&id)).await;

    // Scaling back down: the address leaves the answer and its slot leaves rotation.
    balancer.set_node_ips(&ips[..2]);
    balancer
        .wait_for_rotation(&addrs[..2], ROTATION_TIMEOUT)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_balancer_never_logs_the_token_in_the_query() {
    // Addresses of its own (the other tests use the first nine).
    let ips = [node_ip(12)];
    let port = shared_port(&ips);
    let listen = SocketAddr::from((ips[0], port)).to_string();
    let node = Node::spawn(
        &["--listen", &listen],
        &[("CHAT_AUTH_SECRET", support::AUTH_SECRET)],
    )
    .await;
    let balancer = start_balancer(std::slice::from_ref(&node), &ips, port).await;
    let marker = "secret-marker";
    let claims = serde_json::json!({"sub": marker, "exp": support::now_secs() + 300});
    let token = support::jwt(support::AUTH_SECRET, claims);
    let url = format!("ws://{}/ws?token={token}&name={marker}", balancer.addr());
    let client = Client::connect(&url).await;
    assert_eq!(client.name(), marker);
    // HAProxy logs a proxied WebSocket when its tunnel ends.
    drop(client);
    wait_until("HAProxy logs the WebSocket", ROTATION_TIMEOUT, async || {
        balancer.log_text().contains("\"GET /ws")
    })
    .await;
    let log = balancer.log_text();
    for secret in [marker, token.as_str()] {
        assert!(!log.contains(secret), "{secret} in HAProxy's log:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_balancer_refuses_node_metrics_from_outside() {
    let ip = node_ip(9);
    let port = shared_port(&[ip]);
    let listen = SocketAddr::from((ip, port)).to_string();
    let node = Node::spawn(&["--listen", &listen], &[]).await;
    let balancer = start_balancer(std::slice::from_ref(&node), &[ip], port).await;
    for path in ["/metrics", "/METRICS", "/metrics/", "/metrics?format=text"] {
        let response = http_get(balancer.addr(), path).await;
        assert_eq!(response.status, 403, "{path} through the balancer");
    }
    // Operators still scrape: the balancer on its stats port, each node directly.
    assert_eq!(
        http_get(balancer.stats_addr(), "/metrics").await.status,
        200
    );
    assert_eq!(node.status_of("/metrics").await, 200);
    // The page and the WebSocket still pass.
    assert_eq!(http_get(balancer.addr(), "/").await.status, 200);
    let mut client = balancer.client("still-here").await;
    client.join(ROOM).await;
}

/// Runs the image's HEALTHCHECK command against `node`, as Docker would.
fn healthcheck(node: &Node) -> bool {
    Command::new(env!("CARGO_BIN_EXE_chat-healthcheck"))
        .env("CHAT_LISTEN", node.addr().to_string())
        .status()
        .expect("run chat-healthcheck")
        .success()
}

// ---------------------------------------------------------------------------------------------
// The files Docker would use
// ---------------------------------------------------------------------------------------------

fn compose() -> Yaml {
    yaml_file("docker-compose.yml")
}

/// A service's `environment` mapping as strings.
fn environment(service: &Yaml) -> HashMap<String, String> {
    let env = service["environment"]
        .as_hash()
        .expect("environment is a mapping");
    env.iter()
        .map(|(k, v)| {
            let value = match v {
                Yaml::String(s) => s.clone(),
                Yaml::Integer(i) => i.to_string(),
                other => panic!("environment value {other:?}"),
            };
            (k.as_str().expect("string keys").to_owned(), value)
        })
        .collect()
}

#[test]
fn compose_runs_redis_scalable_nodes_and_the_tested_balancer() {
    let doc = compose();
    let services = &doc["services"];
    // The services of a plain `docker compose up`; those of a profile (monitoring) are checked
    // by their own test (dashboard.rs).
    let mut names: Vec<&str> = services
        .as_hash()
        .expect("services")
        .iter()
        .filter(|(_, service)| service["profiles"].is_badvalue())
        .filter_map(|(name, _)| name.as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["lb", "redis", "server"]);

    let redis = &services["redis"];
    assert!(
        redis["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("redis:"))
    );
    assert_eq!(
        yaml_strings(&redis["healthcheck"]["test"]),
        ["CMD", "redis-cli", "ping"]
    );
    // Memory is bounded, and only keys with a TTL (all of a node's) may be evicted.
    let command = yaml_strings(&redis["command"]);
    let after = |flag: &str| {
        let at = command.iter().position(|arg| *arg == flag);
        at.and_then(|at| command.get(at + 1)).copied()
    };
    assert!(after("--maxmemory").is_some(), "redis sets maxmemory");
    assert!(
        after("--maxmemory-policy").is_some_and(|policy| policy.starts_with("volatile-")),
        "redis evicts only keys with a TTL: {command:?}"
    );

    // Nodes: built here, no fixed host port and no fixed name (so `--scale` works), the node
    // id left to the container's host name, the key from .env, a health check on /readyz.
    let server = &services["server"];
    assert_eq!(server["build"].as_str(), Some("."));
    for fixed in ["ports", "container_name", "hostname"] {
        assert!(server[fixed].is_badvalue(), "server must not set {fixed}");
    }
    let env = environment(server);
    assert_eq!(env["CHAT_LISTEN"], "0.0.0.0:8080");
    assert_eq!(env["CHAT_REDIS_URL"], "redis://redis:6379/");
    assert!(
        env["CHAT_KEY"].starts_with("${CHAT_KEY:?"),
        "the key comes from .env and is required: {}",
        env["CHAT_KEY"]
    );
    assert!(!env.contains_key("CHAT_NODE_ID"));
    assert!(
        env.contains_key("CHAT_TRUSTED_PROXY"),
        "client addresses behind the balancer"
    );
    assert_eq!(
        yaml_strings(&server["healthcheck"]["test"]),
        ["CMD", "/usr/local/bin/chat-healthcheck"]
    );
    assert_eq!(
        server["depends_on"]["redis"]["condition"].as_str(),
        Some("service_healthy")
    );
    let grace = server["stop_grace_period"]
        .as_str()
        .expect("stop_grace_period");
    let grace: u64 = grace.trim_end_matches('s').parse().expect("seconds");
    assert!(grace > 5, "longer than the node's shutdown deadline");

    // The balancer: published on 8080, running the configuration this crate tests.
    let lb = &services["lb"];
    assert!(
        lb["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("haproxy:"))
    );
    assert!(yaml_strings(&lb["ports"]).contains(&"8080:8080"));
    let mounts = yaml_strings(&lb["volumes"]);
    let config_mount = mounts
        .iter()
        .find_map(|m| m.strip_suffix(":/usr/local/etc/haproxy/haproxy.cfg:ro"))
        .unwrap_or_else(|| panic!("haproxy.cfg is mounted read-only: {mounts:?}"));
    let mounted = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(config_mount);
    assert_eq!(
        std::fs::canonicalize(&mounted).expect("the mounted config exists"),
        std::fs::canonicalize(balancer::CONFIG).expect("the tested config exists"),
        "compose mounts the file the tests run"
    );

    // Every variable the configuration reads is set by compose, and the node service and port
    // it resolves are the ones compose runs.
    let lb_env = environment(lb);
    let config = repository_file("deploy/haproxy.cfg");
    let used: Vec<&str> = config
        .split("\"${")
        .skip(1)
        .filter_map(|rest| rest.split_once("}\"").map(|(name, _)| name))
        .collect();
    assert!(used.len() >= 6, "variables in haproxy.cfg: {used:?}");
    for name in &used {
        assert!(lb_env.contains_key(*name), "compose does not set {name}");
    }
    assert_eq!(lb_env["CHAT_LB_NODES"], "server:8080");
    assert_eq!(lb_env["CHAT_LB_BIND"], "0.0.0.0:8080");
    assert_eq!(lb_env["CHAT_LB_DNS"], "127.0.0.11:53");

    // X-Forwarded-For is believed from the balancer alone: its fixed address, as a /32, in a
    // fixed subnet but outside the range other containers are given addresses from.
    let lb_ip = lb["networks"]["default"]["ipv4_address"]
        .as_str()
        .expect("the balancer has a fixed address");
    assert_eq!(env["CHAT_TRUSTED_PROXY"], format!("{lb_ip}/32"));
    let ipam = &doc["networks"]["default"]["ipam"]["config"][0];
    let net = |key: &str| -> IpNet {
        let text = ipam[key].as_str().unwrap_or_else(|| panic!("ipam {key}"));
        text.parse().unwrap_or_else(|e| panic!("{key} {text}: {e}"))
    };
    let (subnet, range) = (net("subnet"), net("ip_range"));
    let lb_ip: IpAddr = lb_ip.parse().expect("an IP address");
    assert!(subnet.contains(&lb_ip) && subnet.contains(&range));
    assert!(!range.contains(&lb_ip), "no other container can take it");

    // And HAProxy accepts the configuration with exactly compose's environment.
    let env: Vec<(String, String)> = lb_env.into_iter().collect();
    let (valid, said) = balancer::check_config(&env);
    assert!(valid, "haproxy -c with compose's environment:\n{said}");
}

#[test]
fn the_key_is_never_committed_and_the_image_is_slim_non_root_and_checked() {
    let example = repository_file(".env.example");
    assert!(example.contains("openssl rand -base64 32"));
    let key_line = example
        .lines()
        .find(|l| l.starts_with("CHAT_KEY="))
        .expect("CHAT_KEY in .env.example");
    assert_eq!(key_line, "CHAT_KEY=", "no real key in .env.example");
    assert!(repository_file(".gitignore").lines().any(|l| l == "/.env"));
    assert!(
        repository_file(".dockerignore")
            .lines()
            .any(|l| l == ".env")
    );

    let dockerfile = repository_file("Dockerfile");
    let stages = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .count();
    assert!(stages >= 2, "multi-stage build");
    let runtime = dockerfile
        .rsplit("\nFROM ")
        .next()
        .expect("a runtime stage");
    assert!(runtime.starts_with("gcr.io/distroless/"), "slim runtime");
    assert!(runtime.contains("\nUSER 65532:65532\n"), "non-root");
    assert!(runtime.contains("CMD [\"/usr/local/bin/chat-healthcheck\"]"));
    assert!(runtime.contains("ENTRYPOINT [\"/usr/local/bin/chat-server\"]"));
}
