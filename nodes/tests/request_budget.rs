//! The node-wide budget of request bytes (`limits.request_bytes_in_flight_max`): a connection
//! reserves a frame's size before it reads the frame's body, so once the budget is held the
//! broker reads no more requests (TCP backpressure), on any connection, until it is given back;
//! and everything reserved is given back when its request is done.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // real sockets and the real clock: not simulated code

use std::sync::Arc;
use std::time::Duration;

use brook_actors::runtime::Runtime;
use brook_node::{Broker, NodeConfig};
use brook_storage::FsDisk;
use brook_wire::batch::BatchBuilder;
use brook_wire::frame::{FrameDecoder, FrameEncoder};
use brook_wire::protocol::{
    decode_response, encode_request, Acks, Request, RequestEnvelope, Response,
    PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN,
};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BUDGET: usize = 1024 * 1024;
/// The body size of the frame that holds most of the budget without ever completing.
const HOG_BODY: usize = 900_000;
const PATIENCE: Duration = Duration::from_secs(10);

struct Raw {
    stream: TcpStream,
    buffer: BytesMut,
}

impl Raw {
    async fn connect(address: std::net::SocketAddr) -> Raw {
        let stream = TcpStream::connect(address).await.expect("connect");
        let mut raw = Raw {
            stream,
            buffer: BytesMut::new(),
        };
        raw.send(
            0,
            Request::Handshake {
                protocol_version_min: PROTOCOL_VERSION_MIN,
                protocol_version_max: PROTOCOL_VERSION_MAX,
                client_name: "budget test".into(),
            },
            &[],
        )
        .await;
        let response = raw.receive().await;
        assert!(
            matches!(response, Response::Handshake { .. }),
            "{response:?}"
        );
        raw
    }

    async fn send(&mut self, correlation_id: u64, request: Request, payload: &[u8]) {
        let mut frame = BytesMut::new();
        encode_request(
            &FrameEncoder::default(),
            &RequestEnvelope {
                correlation_id,
                request,
            },
            payload,
            &mut frame,
        )
        .expect("encode");
        self.stream.write_all(&frame).await.expect("write");
    }

    async fn receive(&mut self) -> Response {
        let decoder = FrameDecoder::new(usize::MAX);
        for _ in 0..100_000 {
            if let Some(frame) = decoder.decode(&mut self.buffer).expect("good frame") {
                return decode_response(frame).expect("decodable").0.response;
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

    let mut client = Raw::connect(address).await;
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
    let response = client.receive().await;
    assert!(
        matches!(response, Response::CreateTopic { .. }),
        "{response:?}"
    );

    // Before a handshake, a frame that big is refused from its header: a connection that
    // never handshakes cannot hold the budget.
    let mut stranger = Raw {
        stream: TcpStream::connect(address).await.expect("connect"),
        buffer: BytesMut::new(),
    };
    let mut header = (HOG_BODY as u32).to_le_bytes().to_vec();
    header.extend_from_slice(&[0; 4]);
    stranger.stream.write_all(&header).await.expect("write");
    let response = stranger.receive().await;
    assert!(
        matches!(&response, Response::Error(error) if error.code == brook_wire::ErrorCode::FrameTooLarge),
        "{response:?}"
    );
    assert_eq!(broker.request_bytes_available(), BUDGET);

    // A frame header announcing 900 KB, and only the start of its body: the broker reserves
    // the whole frame before reading the body, and holds it while the body does not come.
    let mut hog = Raw::connect(address).await;
    let mut partial = (HOG_BODY as u32).to_le_bytes().to_vec();
    partial.extend_from_slice(&[0; 4]);
    partial.extend_from_slice(&[0; 1000]);
    hog.stream.write_all(&partial).await.expect("write");
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
    let response = client.receive().await;
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
