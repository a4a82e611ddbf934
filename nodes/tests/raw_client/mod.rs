//! A client of a broker's client port that speaks raw frames, for the tests that look at exact
//! requests and responses: a handshake, then requests with their payloads, each read bounded
//! in time.
#![allow(clippy::disallowed_methods)] // real sockets and the real clock: not simulated code

use std::time::Duration;

use brook_wire::frame::{FrameDecoder, FrameEncoder};
use brook_wire::protocol::{
    decode_response, encode_request, Request, RequestEnvelope, Response, ResponseEnvelope,
    PROTOCOL_VERSION_MIN,
};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};

/// Longest a read of a response may wait.
const READ_PATIENCE: Duration = Duration::from_secs(20);
/// Reads of one response at most (each brings at least one byte).
const READS_PER_RESPONSE_MAX: usize = 100_000;

pub struct Raw {
    stream: TcpStream,
    buffer: BytesMut,
    next_id: u64,
}

impl Raw {
    /// Connects without a handshake.
    pub async fn connect_without_handshake(address: impl ToSocketAddrs) -> Raw {
        Raw {
            stream: TcpStream::connect(address).await.expect("connect"),
            buffer: BytesMut::new(),
            next_id: 0,
        }
    }

    /// Connects and handshakes, offering protocol versions up to `version`: the broker must
    /// agree on `version`.
    pub async fn connect(address: impl ToSocketAddrs, version: u16) -> Raw {
        let mut raw = Raw::connect_without_handshake(address).await;
        let response = raw
            .request(
                Request::Handshake {
                    protocol_version_min: PROTOCOL_VERSION_MIN,
                    protocol_version_max: version,
                    client_name: "raw frames test".into(),
                },
                &[],
            )
            .await;
        assert!(
            matches!(response, Response::Handshake { protocol_version, .. } if protocol_version == version),
            "{response:?}"
        );
        raw
    }

    /// Sends one request with its frame payload.
    pub async fn send(&mut self, correlation_id: u64, request: Request, payload: &[u8]) {
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
        self.write_raw(&frame).await;
    }

    /// Writes `bytes` as they are (a frame, a part of one, anything).
    pub async fn write_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next response, whatever it answers.
    pub async fn receive(&mut self) -> ResponseEnvelope {
        let decoder = FrameDecoder::new(usize::MAX);
        for _ in 0..READS_PER_RESPONSE_MAX {
            if let Some(frame) = decoder.decode(&mut self.buffer).expect("good frame") {
                return decode_response(frame).expect("decodable").0;
            }
            let read = tokio::time::timeout(READ_PATIENCE, self.stream.read_buf(&mut self.buffer))
                .await
                .expect("a response in time")
                .expect("read");
            assert!(read > 0, "the broker closed the connection");
        }
        panic!("no whole frame");
    }

    /// Sends `request` with the next correlation id and returns the response, which must
    /// answer it.
    pub async fn request(&mut self, request: Request, payload: &[u8]) -> Response {
        self.next_id += 1;
        self.send(self.next_id, request, payload).await;
        let envelope = self.receive().await;
        assert_eq!(envelope.correlation_id, self.next_id);
        envelope.response
    }
}
