//! A local Redis Cluster (3 masters, 3 replicas) started by `scripts/redis-cluster.sh`, the
//! same script the benchmark uses, and stopped by the PIDs it recorded when the guard drops,
//! also when a test fails.

use std::process::Command;
use std::time::Duration;

use super::process::{TempDir, kill};
use super::repository::repository_path;
use super::{KEY_A, NO_FLOOD_LIMITS, Node, key, wait_until};

/// A running local cluster; stopped on drop.
pub(crate) struct RedisCluster {
    dir: TempDir,
    ports: Vec<u16>,
}

impl RedisCluster {
    /// Starts a cluster and returns once every slot is served and every replica is linked.
    /// A start is tried three times: the script picks free ports at random, and one may be
    /// taken between its check and the server's bind.
    pub(crate) fn start() -> RedisCluster {
        let dir = TempDir::new("redis-cluster");
        let mut cluster = RedisCluster {
            ports: Vec::new(),
            dir,
        };
        let mut status = cluster.script("start");
        for _ in 0..2 {
            if status.success() {
                break;
            }
            status = cluster.script("start");
        }
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
            .stdout(std::process::Stdio::null())
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

impl RedisCluster {
    /// The seed URL nodes are given: the first node's.
    pub(crate) fn seed(&self) -> String {
        format!("redis://127.0.0.1:{}", self.ports[0])
    }

    /// A `chat-server` on this cluster with node id `id`, key A, no flood limits, a history
    /// of 1,000 and `extra` arguments, once it reports ready.
    pub(crate) async fn node(&self, id: &str, extra: &[&str]) -> Node {
        let key = key(KEY_A);
        let mut args = vec![
            "--listen",
            "127.0.0.1:0",
            "--redis-cluster",
            &self.seed(),
            "--node-id",
            id,
            "--key",
            &key,
            "--history-size",
            "1000",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        // No flood limits, but for those `extra` sets.
        for pair in NO_FLOOD_LIMITS.chunks(2) {
            if !extra.contains(&pair[0]) {
                args.extend(pair.iter().map(|a| (*a).to_owned()));
            }
        }
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let node = Node::spawn(&args, &[]).await;
        wait_until("the node is ready", Duration::from_secs(10), async || {
            node.status_of("/readyz").await == 200
        })
        .await;
        node
    }

    /// A reply of the node on `port` to `args`.
    pub(crate) async fn query<T: redis::FromRedisValue>(&self, port: u16, args: &[&str]) -> T {
        redis::cmd(args[0])
            .arg(&args[1..])
            .query_async(&mut self.connection(port).await)
            .await
            .unwrap_or_else(|error| panic!("{args:?} on {port}: {error}"))
    }

    /// The node id of the node on `port`.
    pub(crate) async fn id_of(&self, port: u16) -> String {
        self.query(port, &["CLUSTER", "MYID"]).await
    }

    /// The port of a replica of the master on `port`.
    pub(crate) async fn replica_of(&self, port: u16) -> u16 {
        let master = self.id_of(port).await;
        for &other in &self.ports {
            let role: Vec<redis::Value> = self.query(other, &["ROLE"]).await;
            let is_slave = matches!(&role[0], redis::Value::BulkString(b) if b == b"slave");
            if is_slave && redis::from_redis_value::<u16>(role[2].clone()).ok() == Some(port) {
                return other;
            }
        }
        panic!("no replica of {port} ({master})")
    }

    /// Promotes the replica of the master on `port` with `CLUSTER FAILOVER`, and waits until
    /// the cluster agrees on it; returns the new master's port.
    pub(crate) async fn failover(&self, port: u16, slot_key: &str) -> u16 {
        let replica = self.replica_of(port).await;
        let _: () = self.query(replica, &["CLUSTER", "FAILOVER"]).await;
        wait_until(
            "the replica serves the slot",
            Duration::from_secs(10),
            async || self.master_of(slot_key).await == replica,
        )
        .await;
        replica
    }

    /// Waits until the cluster, asked on `alive`, has replaced the dead master on `dead` with
    /// its replica; returns the new master's port.
    pub(crate) async fn replica_of_dead(&self, alive: u16, dead: u16) -> u16 {
        let mut promoted = 0;
        wait_until(
            "a replica replaces the dead master",
            Duration::from_secs(15),
            async || {
                let Ok(slots) = redis::cmd("CLUSTER")
                    .arg("SLOTS")
                    .query_async::<Vec<Vec<redis::Value>>>(&mut self.connection(alive).await)
                    .await
                else {
                    return false;
                };
                let masters: Vec<u16> = slots
                    .iter()
                    .filter_map(|range| {
                        let master: Vec<redis::Value> =
                            redis::from_redis_value(range.get(2)?.clone()).ok()?;
                        redis::from_redis_value(master.get(1)?.clone()).ok()
                    })
                    .collect();
                if masters.contains(&dead) || masters.is_empty() {
                    return false;
                }
                // The one master that started as a replica: the script starts masters first.
                promoted = masters
                    .into_iter()
                    .find(|port| self.ports[3..].contains(port))
                    .unwrap_or(0);
                promoted != 0
            },
        )
        .await;
        promoted
    }

    /// Kills the node on `port` with SIGKILL, as a crash does.
    pub(crate) fn kill_node(&self, port: u16) {
        let index = self
            .ports
            .iter()
            .position(|&p| p == port)
            .expect("a node's port");
        let pids = std::fs::read_to_string(self.dir.path().join("pids")).expect("the pids");
        let pid: i32 = pids
            .split_whitespace()
            .nth(index)
            .and_then(|pid| pid.parse().ok())
            .expect("the node's pid");
        kill(pid, libc::SIGKILL).expect("SIGKILL a cluster node");
    }

    /// Moves `slot` and its keys from the master on `from` to the master on `to`, as
    /// `redis-cli --cluster reshard` does, telling every master the new owner.
    pub(crate) async fn migrate_slot(&self, slot: u16, from: u16, to: u16) {
        let slot_arg = slot.to_string();
        let (from_id, to_id) = (self.id_of(from).await, self.id_of(to).await);
        let _: () = self
            .query(
                to,
                &["CLUSTER", "SETSLOT", &slot_arg, "IMPORTING", &from_id],
            )
            .await;
        let _: () = self
            .query(
                from,
                &["CLUSTER", "SETSLOT", &slot_arg, "MIGRATING", &to_id],
            )
            .await;
        loop {
            let keys: Vec<String> = self
                .query(from, &["CLUSTER", "GETKEYSINSLOT", &slot_arg, "100"])
                .await;
            if keys.is_empty() {
                break;
            }
            let mut migrate = redis::cmd("MIGRATE");
            migrate
                .arg("127.0.0.1")
                .arg(to)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys);
            let _: () = migrate
                .query_async(&mut self.connection(from).await)
                .await
                .expect("MIGRATE");
        }
        for &port in &self.ports {
            let role: Vec<redis::Value> = self.query(port, &["ROLE"]).await;
            if matches!(&role[0], redis::Value::BulkString(b) if b == b"master") {
                let _: () = self
                    .query(port, &["CLUSTER", "SETSLOT", &slot_arg, "NODE", &to_id])
                    .await;
            }
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.script("stop");
    }
}
