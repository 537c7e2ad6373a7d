//! HAProxy running the shipped `deploy/haproxy.cfg` in front of loopback nodes, and what the
//! tests read from its stats page.
//!
//! In docker-compose the nodes are containers that listen on one port, each on its own
//! address, and Docker's DNS answers the service name with all of them. Here the nodes listen
//! on one port on distinct loopback addresses (127.0.0.2, 127.0.0.3, …) and a [`DnsServer`]
//! answers a name with those addresses. The configuration file is the same; only the
//! environment it reads differs, so the balancer that ships is the balancer under test.

use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::dns::DnsServer;
use super::{
    Client, Process, STEP, Started, TempDir, candidate_port, http_get, on_candidate_ports,
    percent_encode, says_address_in_use,
};

/// The balancer's configuration, mounted by docker-compose.yml.
pub(crate) const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/haproxy.cfg");

/// The name the test's DNS server answers with the nodes' addresses.
const NODES_NAME: &str = "nodes.chat.test";

/// Slots for nodes; more than any test starts, as in compose.
const SLOTS: &str = "8";

/// Short checks, so that a test sees a node leave or join rotation within a second or two.
const CHECK_INTERVAL: &str = "200ms";

/// The loopback address of the `i`-th balanced node: 127.0.0.2, 127.0.0.3, …
pub(crate) fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 2 + u8::try_from(i).expect("a few nodes"))
}

/// A port that was free on every address of `ips` a moment ago.
pub(crate) fn shared_port(ips: &[Ipv4Addr]) -> u16 {
    for _ in 0..20 {
        let first = StdTcpListener::bind((ips[0], 0)).expect("bind a loopback address");
        let port = first.local_addr().expect("bound address").port();
        let others: Result<Vec<_>, _> = ips[1..]
            .iter()
            .map(|ip| StdTcpListener::bind((*ip, port)))
            .collect();
        if others.is_ok() {
            return port;
        }
    }
    panic!("no port free on all of {ips:?}");
}

/// HAProxy, pointed by DNS at nodes listening on `port` of each address in `ips`.
pub(crate) struct Balancer {
    process: Process,
    addr: SocketAddr,
    stats: SocketAddr,
    dns: DnsServer,
    _dir: TempDir,
}

/// One node slot of the balancer, as its stats page shows it.
#[derive(Debug, Clone)]
pub(crate) struct ServerState {
    /// `ip:port` of the node.
    pub addr: String,
    /// `UP`, `DOWN`, `UP 1/2` (failing, still in rotation), `DOWN 1/2` (recovering), …
    pub status: String,
}

impl ServerState {
    /// Whether new connections may go to this node.
    pub(crate) fn in_rotation(&self) -> bool {
        self.status.starts_with("UP")
    }
}

/// The HAProxy program: `$HAPROXY`, else Debian's, else whatever `haproxy` is on the path.
fn haproxy_program() -> String {
    std::env::var("HAPROXY").unwrap_or_else(|_| {
        if Path::new("/usr/sbin/haproxy").exists() {
            "/usr/sbin/haproxy".to_owned()
        } else {
            "haproxy".to_owned()
        }
    })
}

/// Runs `haproxy -c` on the configuration with `env`; returns whether it is valid and what
/// HAProxy said.
pub(crate) fn check_config(env: &[(String, String)]) -> (bool, String) {
    let output = Command::new(haproxy_program())
        .args(["-c", "-f", CONFIG])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run haproxy (is the haproxy package installed?)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), said)
}

/// Waits until a freshly spawned HAProxy accepts on `addr` and `stats`; tells a port taken
/// meanwhile (it exits saying so, in its log after `log_start`) from other failures.
async fn wait_listening(
    mut process: Process,
    log_start: usize,
    addr: SocketAddr,
    stats: SocketAddr,
) -> Started<Process> {
    let deadline = Instant::now() + STEP;
    loop {
        if let Some(status) = process.try_wait() {
            let said = process.log_text();
            let said = said.get(log_start..).unwrap_or_default();
            process.print_log_tail();
            if says_address_in_use(said) {
                return Started::PortTaken(format!("{addr} or {stats}: exited with {status}"));
            }
            return Started::Failed(format!("exited with {status}"));
        }
        if accepts(addr).await && accepts(stats).await {
            return Started::Up(process);
        }
        if Instant::now() >= deadline {
            return Started::Failed(format!(
                "did not listen on {addr} and {stats} within {STEP:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Balancer {
    pub(crate) async fn start(ips: &[Ipv4Addr], port: u16) -> Balancer {
        let dns = DnsServer::start(NODES_NAME, ips).await;
        let dir = TempDir::new("haproxy");
        let log = dir.path().join("haproxy.log");
        let (process, addr, stats) = on_candidate_ports("haproxy", async || {
            let addr = SocketAddr::from(([127, 0, 0, 1], candidate_port()));
            let stats = SocketAddr::from(([127, 0, 0, 1], candidate_port()));
            let mut command = Command::new(haproxy_program());
            command
                .args(["-db", "-f", CONFIG])
                .env("CHAT_LB_BIND", addr.to_string())
                .env("CHAT_LB_STATS_BIND", stats.to_string())
                .env("CHAT_LB_DNS", dns.addr().to_string())
                .env("CHAT_LB_NODES", format!("{NODES_NAME}:{port}"))
                .env("CHAT_LB_SLOTS", SLOTS)
                .env("CHAT_LB_CHECK_INTERVAL", CHECK_INTERVAL);
            // The log is appended to; only what this attempt writes counts.
            let log_start = std::fs::metadata(&log).map_or(0, |meta| meta.len() as usize);
            let process = Process::spawn(&mut command, "haproxy", &log)
                .expect("spawn haproxy (is the haproxy package installed?)");
            wait_listening(process, log_start, addr, stats)
                .await
                .map(|process| (process, addr, stats))
        })
        .await;
        Balancer {
            process,
            addr,
            stats,
            dns,
            _dir: dir,
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What HAProxy has logged so far (its access log goes to standard output).
    pub(crate) fn log_text(&self) -> String {
        self.process.log_text()
    }

    /// Makes the nodes' name resolve to `ips` from now on, as scaling a compose service does.
    pub(crate) fn set_node_ips(&self, ips: &[Ipv4Addr]) {
        self.dns.set_addresses(ips);
    }

    /// Where the stats page (`/stats`) and Prometheus metrics (`/metrics`) are served.
    pub(crate) fn stats_addr(&self) -> SocketAddr {
        self.stats
    }

    /// `ws://BALANCER/ws?name=…`
    pub(crate) fn ws_url(&self, name: &str) -> String {
        format!("ws://{}/ws?name={}", self.addr, percent_encode(name))
    }

    /// Connects a client named `name` through the balancer and reads its welcome.
    pub(crate) async fn client(&self, name: &str) -> Client {
        let client = Client::connect(&self.ws_url(name)).await;
        assert_eq!(client.name(), name, "welcome name");
        client
    }

    /// Every node slot that has an address, from the stats page's CSV.
    pub(crate) async fn servers(&self) -> Vec<ServerState> {
        let response = http_get(self.stats, "/stats;csv").await;
        assert_eq!(response.status, 200, "GET /stats;csv: {}", response.body);
        let mut lines = response.body.lines();
        let header: Vec<&str> = lines
            .next()
            .and_then(|line| line.strip_prefix("# "))
            .expect("a CSV header")
            .split(',')
            .collect();
        let column = |name: &str| {
            header
                .iter()
                .position(|c| *c == name)
                .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
        };
        let (proxy, status, addr) = (column("pxname"), column("status"), column("addr"));
        lines
            .filter_map(|line| {
                let row: Vec<&str> = line.split(',').collect();
                let (proxy, status, addr) = (row.get(proxy)?, row.get(status)?, row.get(addr)?);
                (*proxy == "nodes" && !addr.is_empty()).then(|| ServerState {
                    addr: (*addr).to_owned(),
                    status: (*status).to_owned(),
                })
            })
            .collect()
    }

    /// Polls the stats until the nodes in rotation are exactly `nodes`.
    pub(crate) async fn wait_for_rotation(&self, nodes: &[SocketAddr], timeout: Duration) {
        let mut want: Vec<String> = nodes.iter().map(ToString::to_string).collect();
        want.sort();
        let deadline = Instant::now() + timeout;
        loop {
            let servers = self.servers().await;
            let mut up: Vec<String> = servers
                .iter()
                .filter(|s| s.in_rotation())
                .map(|s| s.addr.clone())
                .collect();
            up.sort();
            if up == want {
                return;
            }
            if Instant::now() >= deadline {
                panic!("after {timeout:?} the balancer has {servers:?} in rotation, not {want:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn accepts(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}
