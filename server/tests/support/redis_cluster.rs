//! A local Redis Cluster (3 masters, 3 replicas) started by `scripts/redis-cluster.sh`, the
//! same script the benchmark uses, and stopped by the PIDs it recorded when the guard drops,
//! also when a test fails.

use std::process::Command;

use super::process::TempDir;
use super::repository::repository_path;

/// A running local cluster; stopped on drop.
pub(crate) struct RedisCluster {
    dir: TempDir,
    ports: Vec<u16>,
}

impl RedisCluster {
    /// Starts a cluster and returns once every slot is served and every replica is linked.
    pub(crate) fn start() -> RedisCluster {
        let dir = TempDir::new("redis-cluster");
        let mut cluster = RedisCluster {
            ports: Vec::new(),
            dir,
        };
        let status = cluster.script("start");
        assert!(
            status.success(),
            "scripts/redis-cluster.sh start failed ({status}); logs in {}",
            cluster.dir.path().display()
        );
        cluster.ports = std::fs::read_to_string(cluster.dir.path().join("ports"))
            .expect("the script writes the ports")
            .split_whitespace()
            .map(|port| port.parse().expect("a port"))
            .collect();
        cluster
    }

    fn script(&self, command: &str) -> std::process::ExitStatus {
        Command::new(repository_path("scripts/redis-cluster.sh"))
            .arg(command)
            .arg(self.dir.path())
            .status()
            .expect("run scripts/redis-cluster.sh")
    }

    /// Every node's port.
    pub(crate) fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// A connection to the node on `port`.
    pub(crate) async fn connection(&self, port: u16) -> redis::aio::MultiplexedConnection {
        redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .expect("a valid URL")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to a cluster node")
    }

    /// The port of the master serving the slot of `key`.
    pub(crate) async fn master_of(&self, key: &str) -> u16 {
        let mut connection = self.connection(self.ports[0]).await;
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut connection)
            .await
            .expect("CLUSTER KEYSLOT");
        let ranges: Vec<(u16, u16, (String, u16))> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async::<Vec<redis::Value>>(&mut connection)
            .await
            .expect("CLUSTER SLOTS")
            .into_iter()
            .map(|range| {
                let redis::Value::Array(fields) = range else {
                    panic!("a slot range: {range:?}")
                };
                let mut fields = fields.into_iter();
                let mut next = || fields.next().expect("a field of a slot range");
                let (start, end) = (next(), next());
                let master: Vec<redis::Value> =
                    redis::from_redis_value(next()).expect("the master of a slot range");
                let host: String = redis::from_redis_value(master[0].clone()).expect("a host");
                let port: u16 = redis::from_redis_value(master[1].clone()).expect("a port");
                let bound = |v| redis::from_redis_value::<u16>(v).expect("a slot");
                (bound(start), bound(end), (host, port))
            })
            .collect();
        ranges
            .into_iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .map(|(_, _, (_, port))| port)
            .unwrap_or_else(|| panic!("no master serves slot {slot}"))
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.script("stop");
    }
}
