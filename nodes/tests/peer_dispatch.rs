//! The client port's first 8 bytes decide: [`PEER_MAGIC`] is a peer connection (refused by a
//! single node), anything else a client, which must see those bytes as the start of its first
//! frame.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // real sockets and the real clock: not simulated code

use std::sync::Arc;
use std::time::Duration;

use brook_actors::runtime::Runtime;
use brook_node::peer::PEER_MAGIC;
use brook_node::{Broker, NodeConfig};
use brook_storage::FsDisk;
use brook_wire::frame::{FrameDecoder, FrameEncoder};
use brook_wire::peer::{encode_peer, PeerMessage, PEER_PROTOCOL_VERSION};
use brook_wire::protocol::{
    decode_response, encode_request, Request, RequestEnvelope, Response, PROTOCOL_VERSION_MAX,
    PROTOCOL_VERSION_MIN,
};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PATIENCE: Duration = Duration::from_secs(10);

fn handshake() -> BytesMut {
    let mut frame = BytesMut::new();
    encode_request(
        &FrameEncoder::default(),
        &RequestEnvelope {
            correlation_id: 1,
            request: Request::Handshake {
                protocol_version_min: PROTOCOL_VERSION_MIN,
                protocol_version_max: PROTOCOL_VERSION_MAX,
                client_name: "dispatch test".into(),
            },
        },
        &[],
        &mut frame,
    )
    .expect("encode");
    frame
}

/// Read one response, or `None` if the broker closed the connection first.
async fn receive(stream: &mut TcpStream) -> Option<Response> {
    let mut buffer = BytesMut::new();
    let decoder = FrameDecoder::new(usize::MAX);
    for _ in 0..10_000 {
        if let Some(frame) = decoder.decode(&mut buffer).expect("good frame") {
            return Some(decode_response(frame).expect("decodable").0.response);
        }
        let read = tokio::time::timeout(PATIENCE, stream.read_buf(&mut buffer))
            .await
            .expect("an answer or a close in time");
        match read {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
    panic!("no whole frame");
}

#[tokio::test]
async fn a_single_node_closes_peer_connections_and_clients_see_their_first_bytes() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = NodeConfig {
        listen: "127.0.0.1:0".parse().expect("address"),
        data_dir: dir.path().to_path_buf(),
        ..NodeConfig::default()
    };
    let broker = Broker::start(config, Runtime::new(1), Arc::new(FsDisk::new()))
        .await
        .expect("start");
    let address = broker.local_address();

    // A peer's magic and Hello: a single node has no peers, the connection is closed.
    let mut peer = TcpStream::connect(address).await.expect("connect");
    let mut bytes = BytesMut::from(&PEER_MAGIC[..]);
    encode_peer(
        &FrameEncoder::default(),
        &PeerMessage::Hello {
            protocol_version: PEER_PROTOCOL_VERSION,
            node_id: 1,
        },
        &[],
        &mut bytes,
    )
    .expect("encode");
    peer.write_all(&bytes).await.expect("write");
    assert_eq!(
        receive(&mut peer).await,
        None,
        "a single node answered a peer"
    );

    // A client that sends 3 bytes and leaves does no harm.
    let mut early = TcpStream::connect(address).await.expect("connect");
    early.write_all(&handshake()[..3]).await.expect("write");
    drop(early);

    // A client whose handshake arrives a byte at a time, across the 8-byte prefix, is served.
    let mut client = TcpStream::connect(address).await.expect("connect");
    client.set_nodelay(true).expect("nodelay");
    for byte in handshake().iter() {
        client.write_all(&[*byte]).await.expect("write");
        client.flush().await.expect("flush");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let response = receive(&mut client).await;
    assert!(
        matches!(response, Some(Response::Handshake { .. })),
        "{response:?}"
    );
    // And one sent whole.
    let mut whole = TcpStream::connect(address).await.expect("connect");
    whole.write_all(&handshake()).await.expect("write");
    let response = receive(&mut whole).await;
    assert!(
        matches!(response, Some(Response::Handshake { .. })),
        "{response:?}"
    );
    broker.shutdown().await;
}
