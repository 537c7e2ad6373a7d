//! The monitoring that ships in `deploy/`: the Grafana dashboard, the Prometheus configuration
//! and compose's `monitoring` profile that runs them.
//!
//! A dashboard fails quietly: a renamed metric or a misspelt label leaves a panel empty, and
//! nobody notices until an outage. So the dashboard's queries are read out of its JSON and
//! checked against a real node and the real balancer (Debian's HAProxy with
//! `deploy/haproxy.cfg`): every metric a query names must be on their `/metrics`, every family
//! the node serves must be on a panel, and every query, run by a real Prometheus scraping
//! both, must return series. The node writes a family only once it has a series, so the test
//! first drives it through what makes the labelled ones appear (a close, an API request).
//! Debian's `prometheus` package provides the server and `promtool`, which checks the
//! configuration and that every query parses; the tests fail, never skip, without them. Docker
//! does not run here, so compose is checked statically, against the files it mounts.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::api::{API_KEY, bearer};
use support::balancer::{Balancer, node_ip, shared_port};
use support::prometheus::Prometheus;
use support::promql::{families, family_of, metric_names};
use support::repository::{repository_file, repository_path, yaml_file, yaml_strings};
use support::{Client, KEY_A, Node, RedisServer, TempDir, http_get, key, redis_node_args};
use yaml_rust2::Yaml;

const DASHBOARD: &str = "deploy/grafana/dashboards/chat.json";
const PROMETHEUS: &str = "deploy/prometheus.yml";
const DATASOURCES: &str = "deploy/grafana/provisioning/datasources/prometheus.yml";
const DASHBOARD_PROVIDERS: &str = "deploy/grafana/provisioning/dashboards/chat.yml";
/// The close code of a frame over `--max-frame-bytes`.
const MESSAGE_TOO_BIG: u16 = 1009;

fn dashboard() -> Value {
    serde_json::from_str(&repository_file(DASHBOARD))
        .unwrap_or_else(|e| panic!("{DASHBOARD} parses: {e}"))
}

/// Every panel, those inside collapsed rows too.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Every query of the dashboard, as (where, PromQL as Grafana stores it): the panels' targets,
/// and the metric a `label_values(metric, label)` variable lists its choices from.
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    let variables = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten();
    let listed = variables.filter_map(|variable| {
        let query = variable["query"]["query"].as_str()?;
        let metric = query.strip_prefix("label_values(")?.split_once(',')?.0;
        Some((
            format!("variable {}", variable["name"]),
            metric.trim().to_owned(),
        ))
    });
    panels(dashboard)
        .into_iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or_default().to_owned();
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |target| {
                    let expr = target["expr"]
                        .as_str()
                        .unwrap_or_else(|| panic!("panel {title:?}: a target without expr"));
                    (title.clone(), expr.to_owned())
                })
        })
        .chain(listed)
        .collect()
}

/// A query as Prometheus receives it: Grafana's variables replaced by what they stand for.
fn as_promql(expr: &str) -> String {
    let promql = expr
        .replace("$__rate_interval", "1m")
        .replace("$instance", ".*");
    assert!(!promql.contains('$'), "a variable left in {promql:?}");
    promql
}

/// `promtool`, which Debian's `prometheus` package installs; its absence fails the test.
fn promtool(args: &[&str]) -> (bool, String) {
    let program = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".to_owned());
    let output = Command::new(&program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "run {program} ({e}): install Debian's prometheus package (scripts/test.sh does)"
            )
        });
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), said)
}

#[test]
fn promtool_accepts_the_prometheus_configuration() {
    let (valid, said) = promtool(&["check", "config", &repository_path(PROMETHEUS)]);
    assert!(valid, "promtool check config {PROMETHEUS}:\n{said}");
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    // promtool parses every expression of a rules file: each query becomes a recording rule.
    let rules: Vec<Value> = queries(&dashboard())
        .iter()
        .enumerate()
        .map(|(i, (_, expr))| json!({"record": format!("dashboard:query_{i}"), "expr": as_promql(expr)}))
        .collect();
    assert!(
        rules.len() >= 30,
        "the dashboard has {} queries",
        rules.len()
    );
    let dir = TempDir::new("dashboard-rules");
    let file = dir.path().join("rules.yml");
    // JSON is YAML, and needs no quoting of PromQL's strings.
    let document = json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(&file, document.to_string()).expect("write the rules file");
    let (valid, said) = promtool(&["check", "rules", &file.to_string_lossy()]);
    assert!(valid, "the dashboard's queries as PromQL:\n{said}");
}

#[test]
fn the_dashboard_is_well_formed_and_reads_the_provisioned_datasource() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "chat-server");
    let panels = panels(&dashboard);
    let mut ids = BTreeSet::new();
    for panel in &panels {
        let title = &panel["title"];
        let id = panel["id"].as_u64();
        assert!(
            id.is_some() && ids.insert(id),
            "panel {title}: no id, or a repeated one"
        );
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64(), grid["w"].as_u64());
        assert!(
            matches!((x, w), (Some(x), Some(w)) if w > 0 && x + w <= 24),
            "panel {title} lies outside the 24 columns: {grid}"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert!(
            panel["description"].is_string(),
            "panel {title} says what it shows"
        );
        for source in [&panel["datasource"]].into_iter().chain(
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| &t["datasource"]),
        ) {
            assert_eq!(
                source["uid"], "${datasource}",
                "panel {title} reads the chosen source"
            );
        }
    }

    // The data-source variable defaults to the source Grafana is provisioned with.
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    let datasource = variables
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("a datasource variable");
    let provisioned = &yaml_file(DATASOURCES)["datasources"][0];
    assert_eq!(provisioned["type"].as_str(), Some("prometheus"));
    assert_eq!(
        datasource["current"]["value"].as_str(),
        provisioned["uid"].as_str(),
        "the dashboard's default source is the provisioned one"
    );
}

/// `host:port` from `0.0.0.0:8404` and the like.
fn port_of(address: &str) -> &str {
    address
        .rsplit_once(':')
        .map(|(_, port)| port)
        .expect("a port")
}

/// The container path a service mounts `source` (a path in the repository) at, read-only.
fn mount_of<'a>(service: &'a Yaml, source: &str) -> &'a str {
    let mounts = yaml_strings(&service["volumes"]);
    mounts
        .iter()
        .find_map(|m| m.strip_prefix(&format!("./{source}:"))?.strip_suffix(":ro"))
        .unwrap_or_else(|| panic!("{source} is not mounted read-only: {mounts:?}"))
}

/// An image pinned to a release: `name:1.2.3` or `name:v1.2.3`.
fn assert_pinned(image: &str) {
    let tag = image
        .rsplit_once(':')
        .map(|(_, tag)| tag)
        .unwrap_or_default();
    let version = tag.trim_start_matches('v');
    assert!(
        version.split('.').count() == 3 && version.split('.').all(|n| n.parse::<u32>().is_ok()),
        "image {image} is pinned to a release"
    );
}

#[test]
fn the_monitoring_profile_scrapes_every_node_and_the_balancer() {
    let compose = yaml_file("docker-compose.yml");
    let services = &compose["services"];
    let (prometheus, grafana) = (&services["prometheus"], &services["grafana"]);
    for (name, service) in [("prometheus", prometheus), ("grafana", grafana)] {
        assert_eq!(
            yaml_strings(&service["profiles"]),
            ["monitoring"],
            "{name}'s profile"
        );
        assert_pinned(service["image"].as_str().expect("an image"));
        for port in yaml_strings(&service["ports"]) {
            assert!(
                port.starts_with("127.0.0.1:"),
                "{name} publishes {port} beyond this host"
            );
        }
    }

    // Prometheus reads the checked file, and finds the nodes as compose names and runs them.
    assert_eq!(
        mount_of(prometheus, PROMETHEUS),
        "/etc/prometheus/prometheus.yml"
    );
    let config = yaml_file(PROMETHEUS);
    let jobs = config["scrape_configs"].as_vec().expect("scrape_configs");
    let job = |name: &str| {
        jobs.iter()
            .find(|job| job["job_name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no {name} job"))
    };
    let nodes = &job("chat-node")["dns_sd_configs"][0];
    assert_eq!(
        yaml_strings(&nodes["names"]),
        ["server"],
        "every container of the node service"
    );
    let node_listen = services["server"]["environment"]["CHAT_LISTEN"]
        .as_str()
        .expect("listen");
    assert_eq!(
        nodes["port"].as_i64().map(|p| p.to_string()).as_deref(),
        Some(port_of(node_listen))
    );
    let lb_stats = services["lb"]["environment"]["CHAT_LB_STATS_BIND"]
        .as_str()
        .expect("stats");
    assert_eq!(
        yaml_strings(&job("haproxy")["static_configs"][0]["targets"]),
        [format!("lb:{}", port_of(lb_stats))],
        "the balancer's exporter, on its stats port"
    );

    // Grafana is provisioned with the source above and loads the dashboard from its mount.
    assert_eq!(
        mount_of(grafana, "deploy/grafana/provisioning"),
        "/etc/grafana/provisioning"
    );
    let dashboards = mount_of(grafana, "deploy/grafana/dashboards");
    let provider = &yaml_file(DASHBOARD_PROVIDERS)["providers"][0];
    assert_eq!(provider["options"]["path"].as_str(), Some(dashboards));
    let file = DASHBOARD
        .strip_prefix("deploy/grafana/dashboards/")
        .expect("the dashboard is in the mounted directory");
    assert_eq!(
        grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"].as_str(),
        Some(format!("{dashboards}/{file}").as_str()),
        "the dashboard is Grafana's home page"
    );
    let url = yaml_file(DATASOURCES)["datasources"][0]["url"]
        .as_str()
        .expect("a datasource url")
        .to_owned();
    assert_eq!(
        url, "http://prometheus:9090",
        "the prometheus service, on its port"
    );
}

/// A node on Redis with the HTTP API on, behind the shipped balancer, driven through every
/// event that makes a labelled family appear. A client stays connected, so that sessions show.
struct DrivenCluster {
    node: Node,
    balancer: Balancer,
    _staying: Client,
    _redis: RedisServer,
}

impl DrivenCluster {
    async fn start() -> DrivenCluster {
        let redis = RedisServer::start().await;
        let ip = node_ip(12);
        let port = shared_port(&[ip]);
        let mut args = redis_node_args(&redis, "dash-0", &[&key(KEY_A)]);
        // The arguments begin with `--listen 127.0.0.1:0`.
        args[1] = SocketAddr::from((ip, port)).to_string();
        args.extend(["--api-key".to_owned(), API_KEY.to_owned()]);
        let node = Node::spawn(&args, &[]).await;
        node.wait_ready().await;
        let balancer = Balancer::start(&[ip], port).await;
        balancer
            .wait_for_rotation(&[node.addr()], Duration::from_secs(30))
            .await;

        // Chat through the balancer: connections, messages, deliveries, publish latency,
        // presence.
        let mut ada = balancer.client("ada").await;
        let mut bob = balancer.client("bob").await;
        ada.join("lobby").await;
        bob.join("lobby").await;
        let id = ada.say("lobby", "hello").await;
        bob.message_with_id(&id).await;
        // A frame over --max-frame-bytes: a close, by code.
        ada.send_raw_text(&"x".repeat(70_000)).await;
        assert_eq!(ada.expect_close().await, MESSAGE_TOO_BIG);
        // An API request, by endpoint and status.
        let authorization = bearer();
        let headers = [("Authorization", authorization.as_str())];
        let stats = node
            .http("GET", "/api/stats", &headers, b"", Duration::from_secs(10))
            .await;
        assert_eq!(stats.status, 200, "{stats:?}");
        DrivenCluster {
            node,
            balancer,
            _staying: bob,
            _redis: redis,
        }
    }

    /// The families the node and the balancer declare on their `/metrics`.
    async fn families(&self) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        let mut scrapes = Vec::new();
        for addr in [self.node.addr(), self.balancer.stats_addr()] {
            let scrape = http_get(addr, "/metrics").await;
            assert_eq!(scrape.status, 200, "GET /metrics on {addr}");
            scrapes.push(families(&scrape.body));
        }
        let balancer = scrapes.pop().expect("two scrapes");
        (scrapes.pop().expect("two scrapes"), balancer)
    }
}

/// Checks every metric the dashboard reads against the families served; returns those shown.
fn check_served(
    node: &BTreeMap<String, String>,
    balancer: &BTreeMap<String, String>,
) -> BTreeSet<String> {
    let mut shown = BTreeSet::new();
    let mut missing = Vec::new();
    for (title, expr) in queries(&dashboard()) {
        for name in metric_names(&as_promql(&expr)) {
            let (source, families) = match name.split('_').next() {
                Some("chat") => ("the node", node),
                Some("haproxy") => ("the balancer", balancer),
                _ => panic!(
                    "panel {title:?} reads {name}, which neither the node nor the balancer serves"
                ),
            };
            match family_of(&name, families) {
                Some(family) => {
                    shown.insert(family.to_owned());
                }
                None => missing.push(format!("{name} (panel {title:?}, from {source})")),
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the dashboard reads series nobody serves:\n{}",
        missing.join("\n")
    );
    shown
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_reads_served_metrics_and_shows_data() {
    let cluster = DrivenCluster::start().await;
    let (node, balancer) = cluster.families().await;
    assert!(
        node.len() >= 30 && balancer.len() >= 100,
        "families: {node:?} {balancer:?}"
    );
    let shown = check_served(&node, &balancer);

    // A metric added to the node without a panel would go unseen. (The node here runs on Redis,
    // as in compose: the in-memory broker's chat_history_rooms of a lone node is left out.)
    let unshown: Vec<&String> = node.keys().filter(|name| !shown.contains(*name)).collect();
    assert!(
        unshown.is_empty(),
        "node metrics on no panel of {DASHBOARD}: {unshown:?}"
    );
    let balancer_shown = shown.iter().filter(|f| f.starts_with("haproxy_")).count();
    assert!(
        balancer_shown >= 10,
        "{balancer_shown} balancer metrics shown: {shown:?}"
    );

    // Named metrics can still show nothing (a label value spelled wrong): a real Prometheus
    // scrapes both, and every query must return series.
    let prometheus = Prometheus::start(&[
        ("chat-node", cluster.node.addr()),
        ("haproxy", cluster.balancer.stats_addr()),
    ])
    .await;
    prometheus.wait_scraped(2, 3).await;
    let mut empty = Vec::new();
    for (title, expr) in queries(&dashboard()) {
        if prometheus.query(&as_promql(&expr)).await.is_empty() {
            empty.push(format!("{title:?}: {expr}"));
        }
    }
    assert!(
        empty.is_empty(),
        "queries that return nothing:\n{}",
        empty.join("\n")
    );
}

#[test]
fn metric_names_are_told_from_functions_labels_and_keywords() {
    let names = |promql: &str| metric_names(promql).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(r#"histogram_quantile(0.99, sum by (le) (rate(a_bucket{instance=~"x{1}"}[1m])))"#),
        ["a_bucket"]
    );
    assert_eq!(
        names(
            r#"b{proxy="nodes"} > 0 and on (server) (c{state="UP"} == 1) / ignoring(x) d offset 5m"#
        ),
        ["b", "c", "d"]
    );
    assert_eq!(
        names("sum without (code) (increase(e[5m])) or vector(0)"),
        ["e"]
    );
}
