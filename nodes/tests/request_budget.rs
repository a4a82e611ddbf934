//! The node-wide budget of request bytes (`limits.request_bytes_in_flight_max`): a connection
//! reserves a frame's size before it reads the frame's body, so once the budget is held the
//! broker reads no more requests (TCP backpressure), on any connection, until it is given back;
//! and everything reserved is given back when its request is done.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // real sockets and the real clock: not simulated code

mod raw_client;

use std::sync::Arc;
use std::time::Duration;

use brook_actors::runtime::Runtime;
use brook_node::{Broker, NodeConfig};
use brook_storage::FsDisk;
use brook_wire::batch::BatchBuilder;
use brook_wire::protocol::{Acks, Request, Response, PROTOCOL_VERSION_MAX};
use raw_client::Raw;

const BUDGET: usize = 1024 * 1024;
/// The body size of the frame that holds most of the budget without ever completing.
const HOG_BODY: usize = 900_000;

async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..1_000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_budget_stops_reading_until_it_is_given_back() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut config = NodeConfig {
        listen: "127.0.0.1:0".parse().expect("address"),
        data_dir: dir.path().to_path_buf(),
        ..NodeConfig::default()
    };
    config.limits.request_bytes_in_flight_max = BUDGET as u64;
    let broker = Broker::start(config, Runtime::new(1), Arc::new(FsDisk::new()))
        .await
        .expect("start");
    let address = broker.local_address();
    assert_eq!(broker.request_bytes_available(), BUDGET);

    let mut client = Raw::connect(address, PROTOCOL_VERSION_MAX).await;
    client
        .send(
            1,
            Request::CreateTopic {
                name: "budget".into(),
                partitions: 1,
                replication_factor: 1,
                config: Vec::new(),
            },
            &[],
        )
        .await;
    let response = client.receive().await.response;
    assert!(
        matches!(response, Response::CreateTopic { .. }),
        "{response:?}"
    );

    // Before a handshake, a frame that big is refused from its header: a connection that
    // never handshakes cannot hold the budget.
    let mut stranger = Raw::connect_without_handshake(address).await;
    let mut header = (HOG_BODY as u32).to_le_bytes().to_vec();
    header.extend_from_slice(&[0; 4]);
    stranger.write_raw(&header).await;
    let response = stranger.receive().await.response;
    assert!(
        matches!(&response, Response::Error(error) if error.code == brook_wire::ErrorCode::FrameTooLarge),
        "{response:?}"
    );
    assert_eq!(broker.request_bytes_available(), BUDGET);

    // A frame header announcing 900 KB, and only the start of its body: the broker reserves
    // the whole frame before reading the body, and holds it while the body does not come.
    let mut hog = Raw::connect(address, PROTOCOL_VERSION_MAX).await;
    let mut partial = (HOG_BODY as u32).to_le_bytes().to_vec();
    partial.extend_from_slice(&[0; 4]);
    partial.extend_from_slice(&[0; 1000]);
    hog.write_raw(&partial).await;
    wait_for("the hog's frame is reserved", || {
        broker.request_bytes_available() == BUDGET - (HOG_BODY + 8)
    })
    .await;

    // A produce of 200 KB does not fit in what is left: it is not read, so not answered.
    let mut builder = BatchBuilder::new();
    builder.push(0, None, Some(&[7u8; 200_000]), &[]);
    let batch = builder.finish();
    client
        .send(
            2,
            Request::Produce {
                topic: "budget".into(),
                partition: 0,
                acks: Acks::All,
                timeout_ms: 10_000,
                batch_count: 1,
            },
            &batch,
        )
        .await;
    let early = tokio::time::timeout(Duration::from_millis(500), client.receive()).await;
    assert!(
        early.is_err(),
        "the produce was served while the budget was spent: {early:?}"
    );

    // The hog goes away: its reservation comes back, the produce is read and answered.
    drop(hog);
    let response = client.receive().await.response;
    assert!(
        matches!(response, Response::Produce { base_offset: 0, .. }),
        "{response:?}"
    );
    // Every reservation is given back once its request is done, also when the client does not
    // read the responses (a client that never reads must not pin the node's budget).
    for correlation_id in 3..6 {
        client.send(correlation_id, Request::ListTopics, &[]).await;
    }
    wait_for("the whole budget is back", || {
        broker.request_bytes_available() == BUDGET
    })
    .await;
    broker.shutdown().await;
}
