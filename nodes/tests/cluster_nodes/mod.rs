//! Brokers in cluster mode in the test's own process, over loopback TCP: each node's
//! configuration from the ports every node listens on, and its start.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use brook_actors::runtime::Runtime;
use brook_node::config::ClusterSection;
use brook_node::{Broker, NodeConfig};
use brook_storage::FsDisk;

/// Node ids `1..=count` -> loopback ports free now, all distinct: the listeners are held until
/// every port is chosen (ports picked one at a time can repeat once a listener is dropped).
pub fn free_ports(count: u32) -> BTreeMap<u32, u16> {
    let listeners: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    (1..=count)
        .zip(&listeners)
        .map(|(id, listener)| (id, listener.local_addr().expect("address").port()))
        .collect()
}

/// Node `id` of the cluster whose nodes listen on `ports` (node id -> port), with fast Raft
/// timing (heartbeats every 50 ms, elections after 300 ms).
pub fn node_config(id: u32, ports: &BTreeMap<u32, u16>, data_dir: &Path) -> NodeConfig {
    NodeConfig {
        node_id: id,
        listen: format!("127.0.0.1:{}", ports[&id])
            .parse()
            .expect("address"),
        data_dir: data_dir.to_path_buf(),
        cluster: Some(ClusterSection {
            peers: ports
                .iter()
                .map(|(id, port)| format!("{id}@127.0.0.1:{port}"))
                .collect(),
            heartbeat_interval_ms: 50,
            election_timeout_ms: 300,
            ..ClusterSection::default()
        }),
        ..NodeConfig::default()
    }
}

/// Starts node `id` (see [`node_config`]) on the real disk.
pub async fn start(id: u32, ports: &BTreeMap<u32, u16>, data_dir: &Path) -> Broker {
    Broker::start(
        node_config(id, ports, data_dir),
        Runtime::new(u64::from(id)),
        Arc::new(FsDisk::new()),
    )
    .await
    .expect("start")
}
