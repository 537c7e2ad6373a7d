//! A real Prometheus server (Debian's `prometheus` package) scraping processes of a test, and
//! its query API.
//!
//! A dashboard query can name served metrics and still show nothing: a label value spelled
//! wrong, a ratio of series that never match. Only evaluating it over real scrapes tells, so
//! the dashboard test runs the queries here rather than trusting a parse.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::net::TcpStream;

use super::{
    Process, STEP, Started, TempDir, candidate_port, http_get, on_candidate_ports, percent_encode,
    wait_until,
};

/// Scrapes this often, so that rates have samples within seconds.
const SCRAPE_INTERVAL: &str = "1s";

/// A Prometheus process, scraping the targets it was started with.
pub(crate) struct Prometheus {
    process: Process,
    addr: SocketAddr,
    _dir: TempDir,
}

/// The Prometheus program: `$PROMETHEUS`, else the one on the path.
fn program() -> String {
    std::env::var("PROMETHEUS").unwrap_or_else(|_| "prometheus".to_owned())
}

impl Prometheus {
    /// Prometheus scraping `/metrics` of each target, named by its job.
    pub(crate) async fn start(targets: &[(&str, SocketAddr)]) -> Prometheus {
        let dir = TempDir::new("prometheus");
        let config = dir.path().join("prometheus.yml");
        let jobs: Vec<Value> = targets
            .iter()
            .map(|(job, addr)| {
                json!({"job_name": job, "static_configs": [{"targets": [addr.to_string()]}]})
            })
            .collect();
        // JSON is YAML.
        let document = json!({
            "global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL},
            "scrape_configs": jobs,
        });
        std::fs::write(&config, document.to_string()).expect("write prometheus.yml");
        let log = dir.path().join("prometheus.log");
        let data = dir.path().join("data");
        let (process, addr) = on_candidate_ports("prometheus", async || {
            let addr = SocketAddr::from(([127, 0, 0, 1], candidate_port()));
            let mut command = Command::new(program());
            command
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", data.display()))
                .arg(format!("--web.listen-address={addr}"));
            let log_start = std::fs::metadata(&log).map_or(0, |meta| meta.len() as usize);
            let process = Process::spawn(&mut command, "prometheus", &log).unwrap_or_else(|e| {
                panic!(
                    "spawn {} ({e}): install Debian's prometheus package",
                    program()
                )
            });
            wait_ready(process, log_start, addr)
                .await
                .map(|process| (process, addr))
        })
        .await;
        Prometheus {
            process,
            addr,
            _dir: dir,
        }
    }

    /// The result of an instant query: its `data.result`. A query Prometheus refuses fails.
    pub(crate) async fn query(&self, promql: &str) -> Vec<Value> {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        let response = http_get(self.addr, &path).await;
        let body: Value = serde_json::from_str(&response.body)
            .unwrap_or_else(|e| panic!("{promql}: not JSON ({e}): {}", response.body));
        assert_eq!(body["status"], "success", "{promql}: {body}");
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until every target is up and has been scraped `scrapes` times, enough for rates.
    pub(crate) async fn wait_scraped(&self, targets: usize, scrapes: usize) {
        let query = format!("count_over_time(up[1m]) >= {scrapes}");
        wait_until("every target is scraped", 4 * STEP, async || {
            self.query(&query).await.len() == targets
        })
        .await;
        let down = self.query("up == 0").await;
        if !down.is_empty() {
            self.process.print_log_tail();
            panic!("targets down: {down:?}");
        }
    }
}

/// Waits until a freshly spawned Prometheus answers `/-/ready`; tells a port taken meanwhile
/// (Go says "address already in use") from other failures.
async fn wait_ready(mut process: Process, log_start: usize, addr: SocketAddr) -> Started<Process> {
    let deadline = Instant::now() + 2 * STEP;
    loop {
        if let Some(status) = process.try_wait() {
            let said = process.log_text();
            let said = said.get(log_start..).unwrap_or_default();
            if said.to_lowercase().contains("address already in use") {
                return Started::PortTaken(format!("{addr}: exited with {status}"));
            }
            process.print_log_tail();
            return Started::Failed(format!("exited with {status}"));
        }
        // http_get fails the test on a refused connection: connect first.
        let listening = tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr));
        if matches!(listening.await, Ok(Ok(_))) && http_get(addr, "/-/ready").await.status == 200 {
            return Started::Up(process);
        }
        if Instant::now() >= deadline {
            process.print_log_tail();
            return Started::Failed(format!("not ready on {addr} within {:?}", 2 * STEP));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
