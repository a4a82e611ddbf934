//! The producer's retry paths against a scripted broker that fails produce requests on
//! demand: retriable errors, lost connections, exhausted retries.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use brook_client::{
    ClientError, DeliveryFuture, ErrorCode, Producer, ProducerConfig, ProducerRecord,
};
use brook_runtime::Runtime;
use brook_wire::batch::split_batches;
use brook_wire::frame::{FrameDecoder, FrameEncoder};
use brook_wire::protocol::{
    self, BrokerMetadata, PartitionMetadata, Request, Response, ResponseEnvelope, TopicMetadata,
};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the scripted broker does with the next produce requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Answer with this error without appending.
    Refuse(ErrorCode),
    /// Close the connection without appending or answering.
    Disconnect,
}

#[derive(Default)]
struct Script {
    /// Faults for the next produce requests, in order; then every produce succeeds.
    faults: Vec<Fault>,
    /// Values appended, in log order.
    log: Vec<Bytes>,
    produce_requests: usize,
}

type Shared = Arc<Mutex<Script>>;

fn lock(script: &Shared) -> std::sync::MutexGuard<'_, Script> {
    script.lock().expect("script lock")
}

async fn start(runtime: &Runtime, faults: Vec<Fault>) -> anyhow::Result<(String, Shared)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?.to_string();
    let script = Arc::new(Mutex::new(Script {
        faults,
        ..Script::default()
    }));
    let accept_script = script.clone();
    let accept_address = address.clone();
    let accept_runtime = runtime.clone();
    drop(runtime.spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(accept_runtime.spawn(serve(
                stream,
                accept_script.clone(),
                accept_address.clone(),
            )));
        }
    }));
    Ok((address, script))
}

async fn serve(mut stream: TcpStream, script: Shared, address: String) {
    let decoder = FrameDecoder::default();
    let encoder = FrameEncoder::default();
    let mut buffer = BytesMut::new();
    loop {
        let frame = match decoder.decode(&mut buffer) {
            Ok(Some(frame)) => frame,
            Ok(None) => match stream.read_buf(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            },
            Err(_) => return,
        };
        let Ok((envelope, payload)) = protocol::decode_request(frame) else {
            return;
        };
        let response = match envelope.request {
            Request::Handshake { .. } => Response::Handshake {
                protocol_version: 1,
                broker_id: 0,
                cluster_id: "scripted".into(),
                frame_bytes_max: encoder.frame_bytes_max() as u32,
            },
            Request::Metadata { .. } => Response::Metadata {
                brokers: vec![BrokerMetadata {
                    broker_id: 0,
                    address: address.clone(),
                }],
                controller_id: Some(0),
                topics: vec![TopicMetadata {
                    name: "t".into(),
                    error: None,
                    partitions: vec![PartitionMetadata {
                        partition: 0,
                        leader: Some(0),
                        leader_term: 1,
                        replicas: vec![0],
                        in_sync_replicas: vec![0],
                        log_start_offset: 0,
                        high_watermark: 0,
                    }],
                }],
            },
            Request::Produce { .. } => {
                let mut script = lock(&script);
                script.produce_requests += 1;
                let fault = (!script.faults.is_empty()).then(|| script.faults.remove(0));
                match fault {
                    Some(Fault::Disconnect) => return,
                    Some(Fault::Refuse(code)) => Response::error(code, "scripted failure"),
                    None => {
                        let base_offset = script.log.len() as u64;
                        for batch in split_batches(payload) {
                            let batch = batch.expect("valid batch");
                            for record in batch.records().expect("valid records") {
                                script.log.push(record.value.unwrap_or_default());
                            }
                        }
                        Response::Produce {
                            base_offset,
                            log_append_time_ms: None,
                            log_start_offset: 0,
                        }
                    }
                }
            }
            other => Response::error(ErrorCode::InvalidRequest, format!("unscripted {other:?}")),
        };
        let mut out = BytesMut::new();
        let envelope = ResponseEnvelope {
            correlation_id: envelope.correlation_id,
            response,
        };
        if protocol::encode_response(&encoder, &envelope, &[], &mut out).is_err()
            || stream.write_all(&out).await.is_err()
            || stream.flush().await.is_err()
        {
            return;
        }
    }
}

fn config() -> ProducerConfig {
    ProducerConfig::default()
        .retry_backoff(Duration::from_millis(1))
        .retry_backoff_max(Duration::from_millis(5))
        .linger(Duration::from_millis(1))
        .request_timeout(Duration::from_secs(10))
}

async fn send_values(
    producer: &Producer,
    values: impl Iterator<Item = String>,
) -> anyhow::Result<Vec<DeliveryFuture>> {
    let mut deliveries = Vec::new();
    for value in values {
        deliveries.push(producer.send(ProducerRecord::new("t", value)).await?);
    }
    Ok(deliveries)
}

#[tokio::test]
async fn retriable_errors_and_lost_connections_are_retried_in_order() -> anyhow::Result<()> {
    let runtime = Runtime::new(3);
    let faults = vec![
        Fault::Refuse(ErrorCode::NotEnoughReplicas),
        Fault::Disconnect,
        Fault::Refuse(ErrorCode::BrokerShuttingDown),
        Fault::Refuse(ErrorCode::Timeout),
    ];
    let (address, script) = start(&runtime, faults).await?;
    let producer = Producer::connect(&address, config()).await?;
    let mut deliveries = Vec::new();
    // Several rounds so that failures hit different batches.
    for round in 0..5 {
        deliveries
            .extend(send_values(&producer, (0..20).map(|index| format!("{round}-{index}"))).await?);
        producer.flush().await?;
    }
    let mut offsets = Vec::new();
    for delivery in deliveries {
        offsets.push(delivery.await?.offset);
    }
    assert_eq!(offsets, (0..100).collect::<Vec<_>>());
    let script = lock(&script);
    let expected: Vec<Bytes> = (0..5)
        .flat_map(|round| (0..20).map(move |index| Bytes::from(format!("{round}-{index}"))))
        .collect();
    assert_eq!(script.log, expected, "every record once, in send order");
    assert!(script.faults.is_empty(), "every fault was hit");
    Ok(())
}

#[tokio::test]
async fn retries_stop_after_retries_max() -> anyhow::Result<()> {
    let runtime = Runtime::new(4);
    let faults = vec![Fault::Refuse(ErrorCode::NotEnoughReplicas); 100];
    let (address, script) = start(&runtime, faults).await?;
    let producer = Producer::connect(&address, config().retries_max(3)).await?;
    let delivery = producer.send(ProducerRecord::new("t", "doomed")).await?;
    let error = delivery.await.expect_err("retries exhausted");
    assert_eq!(error.code(), Some(ErrorCode::NotEnoughReplicas), "{error}");
    assert!(error.is_retriable());
    let script = lock(&script);
    assert_eq!(script.produce_requests, 4, "one try and three retries");
    assert!(script.log.is_empty());
    Ok(())
}

#[tokio::test]
async fn non_retriable_errors_fail_at_once() -> anyhow::Result<()> {
    let runtime = Runtime::new(5);
    let (address, script) = start(&runtime, vec![Fault::Refuse(ErrorCode::CorruptBatch)]).await?;
    let producer = Producer::connect(&address, config()).await?;
    let first = producer.send(ProducerRecord::new("t", "refused")).await?;
    let error = first.await.expect_err("not retriable");
    assert!(
        matches!(&error, ClientError::Broker(broker) if broker.code == ErrorCode::CorruptBatch)
    );
    // The producer carries on with the next records.
    let second = producer.send(ProducerRecord::new("t", "accepted")).await?;
    assert_eq!(second.await?.offset, 0);
    assert_eq!(lock(&script).produce_requests, 2);
    producer.close().await?;
    Ok(())
}
