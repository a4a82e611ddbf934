//! Compressed batches through a real in-process broker over loopback TCP: every codec round
//! trips, the broker stores and serves them as sent, and a consumer may start inside one.

use std::sync::Arc;
use std::time::Duration;

use anyhow::ensure;
use brook_client::{
    Admin, Compression, Consumer, ConsumerConfig, ConsumerRecord, DeliveryFuture, Producer,
    ProducerConfig, ProducerRecord, StartOffset,
};
use brook_node::{Broker, NodeConfig};
use brook_runtime::Runtime;
use brook_storage::FsDisk;
use bytes::Bytes;
use tempfile::TempDir;

/// Generous bound for "should have happened by now" on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(20);

const CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

async fn start_broker() -> anyhow::Result<(Broker, String, Runtime, TempDir)> {
    let dir = tempfile::tempdir()?;
    let config = NodeConfig {
        listen: "127.0.0.1:0".parse()?,
        data_dir: dir.path().to_path_buf(),
        ..NodeConfig::default()
    };
    let runtime = Runtime::new(11);
    let broker = Broker::start(config, runtime.clone(), Arc::new(FsDisk::new())).await?;
    let address = broker.local_address().to_string();
    Ok((broker, address, runtime, dir))
}

/// A JSON-like value, different for each index.
fn value(index: u32) -> Bytes {
    Bytes::from(format!(
        r#"{{"id":{index},"user":"user-{}","event":"page_view","tags":["shoes","blue"],"note":"please leave at the door, thanks again"}}"#,
        index * 7919 % 1000
    ))
}

fn record(topic: &str, index: u32) -> ProducerRecord {
    let mut record = ProducerRecord::new(topic, value(index))
        .with_partition(0)
        .with_timestamp(1_700_000_000_000 + i64::from(index) * 3)
        .with_header("index", Some(Bytes::from(index.to_string())))
        .with_header("empty", None);
    if index % 3 != 0 {
        record = record.with_key(format!("key-{index}"));
    }
    record
}

/// Poll until `count` records arrived (fails after PATIENCE).
async fn consume(
    runtime: &Runtime,
    consumer: &mut Consumer,
    count: usize,
) -> anyhow::Result<Vec<ConsumerRecord>> {
    let deadline = runtime.now() + PATIENCE;
    let mut records = Vec::new();
    while records.len() < count {
        ensure!(
            runtime.now() < deadline,
            "only {} of {count} records arrived",
            records.len()
        );
        records.extend(consumer.poll(Duration::from_millis(200)).await?);
    }
    Ok(records)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_codec_round_trips_through_the_broker() -> anyhow::Result<()> {
    const RECORDS: u32 = 500;
    let (broker, address, runtime, _dir) = start_broker().await?;
    let admin = Admin::connect(&address).await?;
    for codec in CODECS {
        let topic = format!("codec-{codec}");
        admin.create_topic(&topic, 1, 1).await?;
        let config = ProducerConfig::default()
            .compression(codec)
            .linger(Duration::from_millis(50))
            .batch_bytes_max(16 * 1024);
        let producer = Producer::connect(&address, config).await?;
        let mut deliveries: Vec<DeliveryFuture> = Vec::new();
        for index in 0..RECORDS {
            deliveries.push(producer.send(record(&topic, index)).await?);
        }
        for (index, delivery) in deliveries.into_iter().enumerate() {
            assert_eq!(delivery.await?.offset, index as u64, "{codec}");
        }
        let sent = producer.batch_bytes_sent();
        producer.close().await?;

        let mut consumer = Consumer::connect(&address, ConsumerConfig::default()).await?;
        consumer.assign(&topic, &[0], StartOffset::Earliest).await?;
        let records = consume(&runtime, &mut consumer, RECORDS as usize).await?;
        assert_eq!(records.len(), RECORDS as usize, "{codec}");
        for (index, got) in records.iter().enumerate() {
            let expected = record(&topic, index as u32);
            assert_eq!(got.offset, index as u64, "{codec}");
            assert_eq!(got.timestamp, expected.timestamp.expect("set"), "{codec}");
            assert_eq!(got.key, expected.key, "{codec}");
            assert_eq!(got.value, expected.value, "{codec}");
            assert_eq!(got.headers, expected.headers, "{codec}");
        }
        // Stored and served as sent: the consumer received exactly the batches the producer
        // sent (no retry happened on loopback), compressed when a codec was chosen.
        let fetched = consumer.batch_bytes_fetched();
        assert_eq!(fetched, sent, "{codec}: served as sent");
        let record_bytes: u64 = (0..RECORDS).map(|index| value(index).len() as u64).sum();
        if codec == Compression::None {
            assert!(
                fetched > record_bytes,
                "{codec}: {fetched} of {record_bytes}"
            );
        } else {
            assert!(
                fetched < record_bytes / 2,
                "{codec}: {fetched} bytes for {record_bytes} of values"
            );
        }
    }
    broker.shutdown().await;
    Ok(())
}

/// A consumer whose position is inside a compressed batch gets the rest of it and what
/// follows, from the right offset; seeking by offset or by timestamp lands inside it.
#[tokio::test]
async fn a_consumer_may_start_inside_a_compressed_batch() -> anyhow::Result<()> {
    let (broker, address, runtime, _dir) = start_broker().await?;
    let topic = "inside";
    Admin::connect(&address)
        .await?
        .create_topic(topic, 1, 1)
        .await?;
    let config = ProducerConfig::default()
        .compression(Compression::Zstd)
        .linger(Duration::from_secs(10));
    let producer = Producer::connect(&address, config).await?;
    let mut deliveries = Vec::new();
    for index in 0..100 {
        deliveries.push(producer.send(record(topic, index)).await?);
    }
    // One batch: everything lingers until the flush.
    producer.flush().await?;
    for delivery in deliveries {
        delivery.await?;
    }
    producer.close().await?;
    let mut consumer = Consumer::connect(&address, ConsumerConfig::default()).await?;
    consumer
        .assign(topic, &[0], StartOffset::Offset(37))
        .await?;
    let records = consume(&runtime, &mut consumer, 63).await?;
    let offsets: Vec<u64> = records.iter().map(|record| record.offset).collect();
    assert_eq!(offsets, (37..100).collect::<Vec<u64>>());
    assert_eq!(records[0].value.as_ref(), Some(&value(37)));
    assert_eq!(consumer.position(topic, 0), Some(100));
    // Seeking back inside the same batch works too.
    consumer.seek(topic, 0, StartOffset::Offset(98)).await?;
    let records = consume(&runtime, &mut consumer, 2).await?;
    assert_eq!(records[0].offset, 98);
    assert_eq!(records[1].value.as_ref(), Some(&value(99)));
    // By timestamp: the broker finds the first record at or after it inside the compressed
    // batch (record 50 is at base + 150 ms; 149 ms falls between 49 and 50).
    consumer
        .seek(topic, 0, StartOffset::Timestamp(1_700_000_000_000 + 149))
        .await?;
    let records = consume(&runtime, &mut consumer, 1).await?;
    assert_eq!(records[0].offset, 50);
    broker.shutdown().await;
    Ok(())
}
