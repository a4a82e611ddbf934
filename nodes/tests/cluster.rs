//! Brokers in cluster mode (`[cluster]`), three of them in one process over loopback TCP: the
//! peer links come up on the client ports, the controller's metadata group elects a leader,
//! a replication-factor-3 topic's replicas open and elect leaders on every node, a stopped node
//! is seen dead and rejoins after a restart, and a restart with another peer list is refused.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // real sockets and the real clock: not simulated code

mod cluster_nodes;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use brook_actors::controller::{ClusterStatusAnswer, ControllerMessage};
use brook_actors::runtime::Runtime;
use brook_node::{Broker, StartError};
use brook_storage::FsDisk;
use brook_wire::protocol::TopicDescription;
use cluster_nodes::{free_ports, node_config, start};

const PATIENCE: Duration = Duration::from_secs(20);

async fn status(broker: &Broker) -> ClusterStatusAnswer {
    broker
        .controller()
        .ask(|reply| ControllerMessage::ClusterStatus { reply })
        .await
        .expect("controller answers")
}

async fn describe(broker: &Broker, name: &str) -> Option<TopicDescription> {
    broker
        .controller()
        .ask(|reply| ControllerMessage::DescribeTopic {
            name: name.to_owned(),
            reply,
        })
        .await
        .expect("controller answers")
        .ok()
}

/// Poll `check` every 20 ms until it holds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_form_a_cluster_replicate_topics_and_survive_a_restart() {
    let dirs: BTreeMap<u32, tempfile::TempDir> = (1..=3)
        .map(|id| (id, tempfile::tempdir().expect("temporary directory")))
        .collect();
    let ports: BTreeMap<u32, u16> = free_ports(3);
    let mut brokers = BTreeMap::new();
    for id in 1..=3 {
        brokers.insert(id, start(id, &ports, dirs[&id].path()).await);
    }

    // One controller, the same on every node, and every broker alive.
    eventually("a controller every node agrees on, all alive", || async {
        let mut controllers = Vec::new();
        for broker in brokers.values() {
            let status = status(broker).await;
            if status.brokers.len() != 3 || !status.brokers.iter().all(|b| b.alive) {
                return false;
            }
            controllers.push(status.controller_id);
        }
        controllers[0].is_some() && controllers.iter().all(|c| *c == controllers[0])
    })
    .await;
    let controller_id = status(&brokers[&1])
        .await
        .controller_id
        .expect("controller");

    // An RF 3 topic, created on the controller, appears on every node, and each of its
    // partitions has a replica registered in every node's router and a leader.
    let created = brokers[&controller_id]
        .controller()
        .ask(|reply| ControllerMessage::CreateTopic {
            name: "events".into(),
            partitions: 3,
            replication_factor: 3,
            config: Vec::new(),
            reply,
        })
        .await
        .expect("controller answers");
    let created = created.expect("created");
    assert_eq!(created.replication_factor, 3);
    eventually(
        "every partition replicated on every node with a leader",
        || async {
            for broker in brokers.values() {
                let Some(topic) = describe(broker, "events").await else {
                    return false;
                };
                if topic.partitions.len() != 3
                    || topic
                        .partitions
                        .iter()
                        .any(|p| p.leader.is_none() || p.replicas.len() != 3)
                {
                    return false;
                }
                let groups = broker.peer_router().expect("cluster mode").groups();
                let replicas = groups
                    .iter()
                    .filter(|group| group.topic.starts_with("events@"))
                    .count();
                if replicas != 3 {
                    return false;
                }
            }
            true
        },
    )
    .await;
    // The traffic went over the peer links, heartbeats coalesced.
    for (id, broker) in &brokers {
        let counters = broker.peer_network().expect("cluster mode").counters();
        assert_eq!(counters.connections_refused, 0, "node {id}: {counters:?}");
        assert!(counters.frames_received > 0, "node {id}: {counters:?}");
        assert!(counters.heartbeats_coalesced > 0, "node {id}: {counters:?}");
    }

    // Stop node 3: the others see it dead; start it again: it rejoins and sees the topic.
    let stopped = brokers.remove(&3).expect("node 3");
    stopped.shutdown().await;
    eventually("node 3 seen dead", || async {
        let status = status(&brokers[&1]).await;
        status.brokers.iter().any(|b| b.broker_id == 3 && !b.alive)
    })
    .await;

    // A restart with a peer list that disagrees with the stored one is refused, naming it.
    let mut moved = ports.clone();
    moved.insert(2, free_ports(1)[&1]);
    let refused = Broker::start(
        node_config(3, &moved, dirs[&3].path()),
        Runtime::new(3),
        Arc::new(FsDisk::new()),
    )
    .await
    .expect_err("a different peer list");
    assert!(matches!(refused, StartError::Controller(_)), "{refused}");
    assert!(refused.to_string().contains("peer 2"), "{refused}");

    brokers.insert(3, start(3, &ports, dirs[&3].path()).await);
    eventually("node 3 back, alive, with the topic", || async {
        let status = status(&brokers[&1]).await;
        let alive = status.brokers.iter().all(|b| b.alive);
        alive && describe(&brokers[&3], "events").await.is_some()
    })
    .await;
    for (_, broker) in brokers {
        tokio::time::timeout(PATIENCE, broker.shutdown())
            .await
            .expect("a cluster node shuts down in time");
    }
}
