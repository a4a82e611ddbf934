//! Protocol-v2 requests on a single node: `ClusterStatus` names the node as the only broker,
//! alive, and as the controller; `PartitionStatus` reports the partition with the node as its
//! leader and only replica; metadata still names no controller (as before v2).
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // real sockets and the real clock: not simulated code

mod raw_client;

use std::sync::Arc;

use brook_actors::runtime::Runtime;
use brook_node::{Broker, NodeConfig};
use brook_storage::FsDisk;
use brook_wire::protocol::{
    BrokerStatus, PartitionStatusReport, Request, Response, PROTOCOL_VERSION_CLUSTER,
};
use brook_wire::ErrorCode;
use raw_client::Raw;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_answers_cluster_status_and_partition_status() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = NodeConfig {
        listen: "127.0.0.1:0".parse().expect("address"),
        data_dir: dir.path().to_path_buf(),
        ..NodeConfig::default()
    };
    let node_id = config.node_id;
    let broker = Broker::start(config, Runtime::new(1), Arc::new(FsDisk::new()))
        .await
        .expect("start");
    let address = broker.local_address();
    let mut client = Raw::connect(address, PROTOCOL_VERSION_CLUSTER).await;

    assert_eq!(
        client.request(Request::ClusterStatus, &[]).await,
        Response::ClusterStatus {
            controller_id: Some(node_id),
            brokers: vec![BrokerStatus {
                broker_id: node_id,
                address: address.to_string(),
                alive: true,
            }],
        }
    );

    let created = client
        .request(
            Request::CreateTopic {
                name: "status".into(),
                partitions: 2,
                replication_factor: 1,
                config: Vec::new(),
            },
            &[],
        )
        .await;
    assert!(
        matches!(created, Response::CreateTopic { .. }),
        "{created:?}"
    );
    assert_eq!(
        client
            .request(
                Request::PartitionStatus {
                    topic: "status".into(),
                    partition: 1,
                },
                &[]
            )
            .await,
        Response::PartitionStatus(PartitionStatusReport {
            partition: 1,
            leader: Some(node_id),
            leader_term: 1,
            replicas: vec![node_id],
            in_sync_replicas: vec![node_id],
            log_start_offset: 0,
            high_watermark: 0,
            log_end_offset: 0,
        })
    );
    for (topic, partition, code) in [
        ("status", 2, ErrorCode::UnknownPartition),
        ("missing", 0, ErrorCode::UnknownTopic),
    ] {
        let response = client
            .request(
                Request::PartitionStatus {
                    topic: topic.into(),
                    partition,
                },
                &[],
            )
            .await;
        assert!(
            matches!(&response, Response::Error(error) if error.code == code),
            "{response:?}"
        );
    }
    // A single node names no controller in metadata, as before protocol v2.
    let metadata = client
        .request(Request::Metadata { topics: None }, &[])
        .await;
    assert!(
        matches!(
            metadata,
            Response::Metadata {
                controller_id: None,
                ..
            }
        ),
        "{metadata:?}"
    );
    broker.shutdown().await;
}
