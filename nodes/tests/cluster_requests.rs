//! Protocol-v2 requests on a single node: `ClusterStatus` names the node as the only broker,
//! alive, and as the controller; `PartitionStatus` reports the partition with the node as its
//! leader and only replica; metadata still names no controller (as before v2).
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // real sockets and the real clock: not simulated code

use std::sync::Arc;
use std::time::Duration;

use brook_actors::runtime::Runtime;
use brook_node::{Broker, NodeConfig};
use brook_storage::FsDisk;
use brook_wire::frame::{FrameDecoder, FrameEncoder};
use brook_wire::protocol::{
    decode_response, encode_request, BrokerStatus, PartitionStatusReport, Request, RequestEnvelope,
    Response, PROTOCOL_VERSION_CLUSTER,
};
use brook_wire::ErrorCode;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PATIENCE: Duration = Duration::from_secs(10);

struct Raw {
    stream: TcpStream,
    buffer: BytesMut,
    next_id: u64,
}

impl Raw {
    async fn connect(address: std::net::SocketAddr, version: u16) -> Raw {
        let stream = TcpStream::connect(address).await.expect("connect");
        let mut raw = Raw {
            stream,
            buffer: BytesMut::new(),
            next_id: 0,
        };
        let response = raw
            .request(Request::Handshake {
                protocol_version_min: 1,
                protocol_version_max: version,
                client_name: "cluster requests test".into(),
            })
            .await;
        assert!(
            matches!(response, Response::Handshake { protocol_version, .. } if protocol_version == version),
            "{response:?}"
        );
        raw
    }

    async fn request(&mut self, request: Request) -> Response {
        self.next_id += 1;
        let mut frame = BytesMut::new();
        encode_request(
            &FrameEncoder::default(),
            &RequestEnvelope {
                correlation_id: self.next_id,
                request,
            },
            &[],
            &mut frame,
        )
        .expect("encode");
        self.stream.write_all(&frame).await.expect("write");
        let decoder = FrameDecoder::new(usize::MAX);
        for _ in 0..100_000 {
            if let Some(frame) = decoder.decode(&mut self.buffer).expect("good frame") {
                let envelope = decode_response(frame).expect("decodable").0;
                assert_eq!(envelope.correlation_id, self.next_id);
                return envelope.response;
            }
            let read = tokio::time::timeout(PATIENCE, self.stream.read_buf(&mut self.buffer))
                .await
                .expect("a response in time")
                .expect("read");
            assert!(read > 0, "the broker closed the connection");
        }
        panic!("no whole frame");
    }
}

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
        client.request(Request::ClusterStatus).await,
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
        .request(Request::CreateTopic {
            name: "status".into(),
            partitions: 2,
            replication_factor: 1,
            config: Vec::new(),
        })
        .await;
    assert!(
        matches!(created, Response::CreateTopic { .. }),
        "{created:?}"
    );
    assert_eq!(
        client
            .request(Request::PartitionStatus {
                topic: "status".into(),
                partition: 1,
            })
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
            .request(Request::PartitionStatus {
                topic: topic.into(),
                partition,
            })
            .await;
        assert!(
            matches!(&response, Response::Error(error) if error.code == code),
            "{response:?}"
        );
    }
    // A single node names no controller in metadata, as before protocol v2.
    let metadata = client.request(Request::Metadata { topics: None }).await;
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
