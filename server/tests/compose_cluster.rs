//! `docker-compose.cluster.yml`, checked statically since Docker cannot run here: six Redis
//! nodes in cluster mode on fixed addresses, a one-shot service that joins them into a cluster
//! of three masters with a replica each, chat nodes seeded with those addresses (parsed by the
//! node's own configuration), and the same balancer, configuration and trusted address as
//! `docker-compose.yml`.

mod support;

use std::collections::HashSet;
use std::net::IpAddr;

use chat_server::config::{Config, RedisTarget};
use clap::Parser;
use ipnet::IpNet;
use support::repository::{yaml_file, yaml_strings};
use yaml_rust2::Yaml;

/// A service's `environment` mapping as (name, value) strings.
fn environment(service: &Yaml) -> Vec<(String, String)> {
    let env = service["environment"].as_hash().expect("environment");
    env.iter()
        .map(|(k, v)| {
            let key = k.as_str().expect("a name").to_owned();
            (key, v.as_str().expect("a string value").to_owned())
        })
        .collect()
}

fn env_value<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

#[test]
fn the_cluster_compose_file_runs_nodes_on_a_six_node_redis_cluster() {
    let doc = yaml_file("docker-compose.cluster.yml");
    let services = &doc["services"];
    let ipam = &doc["networks"]["default"]["ipam"]["config"][0];
    let net = |key: &str| -> IpNet { ipam[key].as_str().expect("ipam").parse().expect("a net") };
    let (subnet, range) = (net("subnet"), net("ip_range"));

    // Six Redis nodes in cluster mode, each with its own volume and a fixed address in the
    // subnet that no other container can be given.
    let mut addresses = Vec::new();
    let mut volumes = HashSet::new();
    for i in 1..=6 {
        let redis = &services[format!("redis-{i}").as_str()];
        // The shared settings come from the `x-redis-node` anchor, merged with `<<`.
        let base = &redis["<<"];
        assert!(
            base["image"]
                .as_str()
                .is_some_and(|i| i.starts_with("redis:7"))
        );
        let command = yaml_strings(&base["command"]);
        let after = |flag: &str| {
            let at = command.iter().position(|arg| *arg == flag);
            at.and_then(|at| command.get(at + 1)).copied()
        };
        assert_eq!(after("--cluster-enabled"), Some("yes"), "{command:?}");
        assert!(after("--maxmemory-policy").is_some_and(|p| p.starts_with("volatile-")));
        let ip = redis["networks"]["default"]["ipv4_address"]
            .as_str()
            .expect("a fixed address");
        let parsed: IpAddr = ip.parse().expect("an address");
        assert!(subnet.contains(&parsed) && !range.contains(&parsed), "{ip}");
        addresses.push(ip.to_owned());
        assert!(volumes.insert(yaml_strings(&redis["volumes"])[0].to_owned()));
    }

    // The init service creates the cluster from all six, one replica per master, only if it
    // is not serving every slot already.
    let init = &services["redis-cluster-init"];
    let script = yaml_strings(&init["command"]).join(" ");
    assert!(script.contains("cluster_state:ok ||"), "{script}");
    for ip in &addresses {
        assert!(script.contains(&format!("{ip}:6379")), "{ip} in {script}");
    }
    assert!(script.contains("--cluster-replicas 1") && script.contains("--cluster-yes"));
    for i in 1..=6 {
        let waits = &init["depends_on"][format!("redis-{i}").as_str()]["condition"];
        assert_eq!(waits.as_str(), Some("service_healthy"));
    }

    // Nodes: seeded with Redis nodes' addresses, no single Redis, started once the cluster
    // exists; the node's own parser reads the seeds as a cluster.
    let server = &services["server"];
    let env = environment(server);
    assert_eq!(env_value(&env, "CHAT_REDIS_URL"), None);
    let seeds = env_value(&env, "CHAT_REDIS_CLUSTER").expect("CHAT_REDIS_CLUSTER");
    let config = Config::try_parse_from(["chat-server", "--redis-cluster", seeds])
        .expect("the node accepts the seeds");
    let Some(RedisTarget::Cluster(urls)) = config.redis_target() else {
        panic!("a cluster target from {seeds}");
    };
    assert!(urls.len() >= 2, "more than one seed: {urls:?}");
    for url in &urls {
        let host = url
            .strip_prefix("redis://")
            .and_then(|rest| rest.strip_suffix(":6379"))
            .expect("redis://<address>:6379");
        assert!(
            addresses.iter().any(|ip| ip == host),
            "{url} is a Redis node"
        );
    }
    assert_eq!(
        server["depends_on"]["redis-cluster-init"]["condition"].as_str(),
        Some("service_completed_successfully")
    );

    // The balancer and the nodes' trust in it are those of docker-compose.yml, whose test runs
    // the configuration under HAProxy.
    let single = yaml_file("docker-compose.yml");
    let lb = &services["lb"];
    assert_eq!(lb["volumes"], single["services"]["lb"]["volumes"]);
    assert_eq!(lb["environment"], single["services"]["lb"]["environment"]);
    let lb_ip = lb["networks"]["default"]["ipv4_address"].as_str();
    assert_eq!(
        env_value(&env, "CHAT_TRUSTED_PROXY"),
        lb_ip.map(|ip| format!("{ip}/32")).as_deref()
    );
    let single_env = environment(&single["services"]["server"]);
    for name in ["CHAT_LISTEN", "CHAT_KEY", "CHAT_TRUSTED_PROXY"] {
        assert_eq!(
            env_value(&env, name),
            env_value(&single_env, name),
            "{name}"
        );
    }
}
