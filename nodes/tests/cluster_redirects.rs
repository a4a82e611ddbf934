//! Three brokers in cluster mode over loopback TCP, talked to with raw frames: a node that is
//! not the active controller refuses an admin write with `NotController` and, to a client that
//! negotiated protocol v2, names the controller (`ErrorWithLeader`); a v1 client gets the plain
//! error. A produce to a node whose replica does not lead is refused with `NotLeader` naming
//! the leader. Every node answers `ClusterStatus` with the same controller.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // real sockets and the real clock: not simulated code

mod cluster_nodes;
mod raw_client;

use std::collections::BTreeMap;
use std::time::Duration;

use brook_wire::batch::BatchBuilder;
use brook_wire::protocol::{Acks, Request, Response, PROTOCOL_VERSION_CLUSTER};
use brook_wire::ErrorCode;
use cluster_nodes::{free_ports, start};
use raw_client::Raw;

const PATIENCE: Duration = Duration::from_secs(20);

/// Ask `request` until `accept` takes the answer (bounded by [`PATIENCE`]).
async fn eventually<T>(
    client: &mut Raw,
    request: Request,
    mut accept: impl FnMut(&Response) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let response = client.request(request.clone(), &[]).await;
        if let Some(value) = accept(&response) {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no acceptable answer to {request:?}; last {response:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn batch() -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    builder.push(0, None, Some(b"value"), &[]);
    builder.finish().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_controllers_and_non_leaders_name_where_to_go() {
    let dirs: BTreeMap<u32, tempfile::TempDir> = (1..=3)
        .map(|id| (id, tempfile::tempdir().expect("temporary directory")))
        .collect();
    let ports: BTreeMap<u32, u16> = free_ports(3);
    let mut brokers = Vec::new();
    for id in 1..=3 {
        brokers.push(start(id, &ports, dirs[&id].path()).await);
    }
    let mut clients = BTreeMap::new();
    for (id, port) in &ports {
        clients.insert(
            *id,
            Raw::connect(("127.0.0.1", *port), PROTOCOL_VERSION_CLUSTER).await,
        );
    }
    // Every node names the same controller.
    let mut controllers = Vec::new();
    for client in clients.values_mut() {
        controllers.push(
            eventually(client, Request::ClusterStatus, |response| match response {
                Response::ClusterStatus {
                    controller_id: Some(controller),
                    brokers,
                } if brokers.len() == 3 => Some(*controller),
                _ => None,
            })
            .await,
        );
    }
    let controller = controllers[0];
    assert!(
        controllers.iter().all(|c| *c == controller),
        "{controllers:?}"
    );
    let other = *ports
        .keys()
        .find(|id| **id != controller)
        .expect("another node");

    // Admin writes elsewhere: v2 learns the controller, v1 gets the plain error.
    let create = Request::CreateTopic {
        name: "routed".into(),
        partitions: 1,
        replication_factor: 3,
        config: Vec::new(),
    };
    let refused = clients
        .get_mut(&other)
        .expect("client")
        .request(create.clone(), &[])
        .await;
    assert!(
        matches!(&refused, Response::ErrorWithLeader { error, leader: Some(leader) }
            if error.code == ErrorCode::NotController && *leader == controller),
        "{refused:?}"
    );
    let mut old_client = Raw::connect(("127.0.0.1", ports[&other]), 1).await;
    let refused = old_client.request(create.clone(), &[]).await;
    assert!(
        matches!(&refused, Response::Error(error) if error.code == ErrorCode::NotController),
        "{refused:?}"
    );
    let created = clients
        .get_mut(&controller)
        .expect("client")
        .request(create, &[])
        .await;
    assert!(
        matches!(created, Response::CreateTopic { .. }),
        "{created:?}"
    );

    // The partition's leader and preferred leader, as the nodes know them (all three hold a
    // replica). A node that is neither is not about to lead (balancing moves leadership to the
    // preferred replica only).
    let (leader, preferred) = eventually(
        clients.get_mut(&other).expect("client"),
        Request::Metadata {
            topics: Some(vec!["routed".into()]),
        },
        |response| match response {
            Response::Metadata { topics, .. } => topics
                .first()
                .and_then(|topic| topic.partitions.first())
                .and_then(|partition| Some((partition.leader?, *partition.replicas.first()?))),
            _ => None,
        },
    )
    .await;
    let follower = *ports
        .keys()
        .find(|id| **id != leader && **id != preferred)
        .expect("a follower");
    let produce = Request::Produce {
        topic: "routed".into(),
        partition: 0,
        acks: Acks::All,
        timeout_ms: 5_000,
        batch_count: 1,
    };
    // A follower refuses and names the leader (once its replica knows it).
    let named = {
        let client = clients.get_mut(&follower).expect("client");
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let response = client.request(produce.clone(), &batch()).await;
            match &response {
                Response::ErrorWithLeader {
                    error,
                    leader: Some(named),
                } if error.code == ErrorCode::NotLeader => break *named,
                // The replica may learn the leader a moment later, or leadership may move
                // to the preferred replica meanwhile.
                Response::ErrorWithLeader { error, .. } if error.code == ErrorCode::NotLeader => {}
                Response::Produce { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never named a leader"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert_ne!(named, follower);
    // Produced through the node it named (retrying while leadership settles).
    let client = clients.get_mut(&named).expect("client");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let response = client.request(produce.clone(), &batch()).await;
        if matches!(response, Response::Produce { .. }) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the named leader never took the produce: {response:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(clients);
    drop(old_client);
    for broker in brokers {
        tokio::time::timeout(PATIENCE, broker.shutdown())
            .await
            .expect("a cluster node shuts down in time");
    }
}
