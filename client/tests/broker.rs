//! The client against a real in-process broker over loopback TCP.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _};
use brook_client::partitioner::partition_for_key;
use brook_client::{
    Acks, Admin, ClientError, Consumer, ConsumerConfig, ConsumerRecord, DeliveryFuture, ErrorCode,
    Producer, ProducerConfig, ProducerRecord, RecordMetadata, StartOffset, OFFSET_UNKNOWN,
};
use brook_node::{Broker, NodeConfig};
use brook_runtime::Runtime;
use brook_storage::FsDisk;
use tempfile::TempDir;

/// Generous bound for "should have happened by now" on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(20);

struct TestBroker {
    broker: Option<Broker>,
    address: String,
    runtime: Runtime,
    config: NodeConfig,
    _dir: TempDir,
}

impl TestBroker {
    async fn start() -> anyhow::Result<TestBroker> {
        Self::start_with(|_| {}).await
    }

    async fn start_with(configure: impl FnOnce(&mut NodeConfig)) -> anyhow::Result<TestBroker> {
        let dir = tempfile::tempdir()?;
        let mut config = NodeConfig {
            listen: "127.0.0.1:0".parse()?,
            data_dir: dir.path().to_path_buf(),
            ..NodeConfig::default()
        };
        configure(&mut config);
        let runtime = Runtime::new(7);
        let broker =
            Broker::start(config.clone(), runtime.clone(), Arc::new(FsDisk::new())).await?;
        let address = broker.local_address();
        config.listen = address;
        Ok(TestBroker {
            broker: Some(broker),
            address: address.to_string(),
            runtime,
            config,
            _dir: dir,
        })
    }

    /// Stop the broker and start a new one on the same address and data.
    async fn restart(&mut self) -> anyhow::Result<()> {
        if let Some(broker) = self.broker.take() {
            broker.shutdown().await;
        }
        let mut last_error = None;
        for _ in 0..50 {
            match Broker::start(
                self.config.clone(),
                self.runtime.clone(),
                Arc::new(FsDisk::new()),
            )
            .await
            {
                Ok(broker) => {
                    self.broker = Some(broker);
                    return Ok(());
                }
                // The old listener may take a moment to be released.
                Err(error) => last_error = Some(error),
            }
            self.runtime.sleep(Duration::from_millis(20)).await;
        }
        bail!("broker did not restart: {last_error:?}")
    }

    async fn admin(&self) -> anyhow::Result<Admin> {
        Ok(Admin::connect(&self.address).await?)
    }

    async fn producer(&self, config: ProducerConfig) -> anyhow::Result<Producer> {
        Ok(Producer::connect(&self.address, config).await?)
    }

    async fn consumer(&self) -> anyhow::Result<Consumer> {
        Ok(Consumer::connect(&self.address, ConsumerConfig::default()).await?)
    }
}

/// Send every record, then wait for every acknowledgement (in send order).
async fn produce_all(
    producer: &Producer,
    records: impl IntoIterator<Item = ProducerRecord>,
) -> anyhow::Result<Vec<RecordMetadata>> {
    let mut deliveries: Vec<DeliveryFuture> = Vec::new();
    for record in records {
        deliveries.push(producer.send(record).await?);
    }
    let mut acknowledged = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        acknowledged.push(delivery.await?);
    }
    Ok(acknowledged)
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
    ensure!(
        records.len() == count,
        "{} records, expected {count}",
        records.len()
    );
    Ok(records)
}

fn text(bytes: &Option<bytes::Bytes>) -> String {
    bytes
        .as_deref()
        .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
        .unwrap_or_default()
}

fn broker_code<T: std::fmt::Debug>(result: brook_client::Result<T>) -> Option<ErrorCode> {
    match result {
        Err(ClientError::Broker(error)) => Some(error.code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_come_back_in_order_with_their_keys() -> anyhow::Result<()> {
    let broker = TestBroker::start().await?;
    let admin = broker.admin().await?;
    let topic = admin.create_topic("orders", 4, 1).await?;
    assert_eq!(topic.partitions.len(), 4);

    let producer = broker.producer(ProducerConfig::default()).await?;
    let records = (0..1000).map(|index| {
        ProducerRecord::new("orders", format!("value-{index}"))
            .with_key(format!("key-{}", index % 37))
    });
    let acknowledged = produce_all(&producer, records).await?;
    producer.close().await?;

    // Keys map to partitions by Kafka's rule, and offsets are dense per partition, in send
    // order.
    let mut next_offset: BTreeMap<u32, u64> = BTreeMap::new();
    for (index, metadata) in acknowledged.iter().enumerate() {
        let key = format!("key-{}", index % 37);
        assert_eq!(metadata.topic, "orders");
        assert_eq!(
            metadata.partition,
            partition_for_key(key.as_bytes(), 4),
            "{key}"
        );
        let expected = next_offset.entry(metadata.partition).or_default();
        assert_eq!(metadata.offset, *expected, "record {index}");
        *expected += 1;
    }
    assert!(
        next_offset.len() > 1,
        "37 keys use more than one of 4 partitions"
    );

    let mut consumer = broker.consumer().await?;
    let partitions = consumer.assign_all("orders", StartOffset::Earliest).await?;
    assert_eq!(partitions, [0, 1, 2, 3]);
    let consumed = consume(&broker.runtime, &mut consumer, 1000).await?;
    // Per partition: the records in send order, with their keys.
    let mut sent_per_partition: BTreeMap<u32, Vec<(String, String)>> = BTreeMap::new();
    for (index, metadata) in acknowledged.iter().enumerate() {
        sent_per_partition
            .entry(metadata.partition)
            .or_default()
            .push((format!("key-{}", index % 37), format!("value-{index}")));
    }
    let mut consumed_per_partition: BTreeMap<u32, Vec<(String, String)>> = BTreeMap::new();
    let mut last_offset: BTreeMap<u32, u64> = BTreeMap::new();
    for record in &consumed {
        if let Some(last) = last_offset.insert(record.partition, record.offset) {
            assert_eq!(record.offset, last + 1, "offsets are dense and in order");
        }
        consumed_per_partition
            .entry(record.partition)
            .or_default()
            .push((text(&record.key), text(&record.value)));
    }
    assert_eq!(consumed_per_partition, sent_per_partition);
    for (partition, next) in next_offset {
        assert_eq!(consumer.position("orders", partition), Some(next));
    }
    // Nothing more to read.
    assert!(consumer.poll(Duration::from_millis(100)).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_key_always_maps_to_the_same_partition() -> anyhow::Result<()> {
    let broker = TestBroker::start().await?;
    broker.admin().await?.create_topic("users", 7, 1).await?;
    let first = broker.producer(ProducerConfig::default()).await?;
    let second = broker.producer(ProducerConfig::default()).await?;
    let keys: Vec<String> = (0..50).map(|index| format!("user-{index}")).collect();
    let record = |key: &String| ProducerRecord::new("users", "x").with_key(key.clone());
    let one = produce_all(&first, keys.iter().map(record)).await?;
    let two = produce_all(&second, keys.iter().map(record)).await?;
    let again = produce_all(&first, keys.iter().map(record)).await?;
    for (index, key) in keys.iter().enumerate() {
        let expected = partition_for_key(key.as_bytes(), 7);
        assert_eq!(one[index].partition, expected);
        assert_eq!(two[index].partition, expected);
        assert_eq!(again[index].partition, expected);
    }
    // Records without a key spread (sticky): a fresh producer picks some partition, and an
    // explicit partition wins over the key.
    let pinned = produce_all(
        &first,
        [ProducerRecord::new("users", "y")
            .with_key("user-1")
            .with_partition(6)],
    )
    .await?;
    assert_eq!(pinned[0].partition, 6);
    Ok(())
}

#[tokio::test]
async fn acks_leader_and_acks_none() -> anyhow::Result<()> {
    let broker = TestBroker::start().await?;
    broker.admin().await?.create_topic("events", 2, 1).await?;

    let leader = broker
        .producer(ProducerConfig::default().acks(Acks::Leader))
        .await?;
    let acknowledged = produce_all(
        &leader,
        (0..100)
            .map(|index| ProducerRecord::new("events", format!("one-{index}")).with_partition(0)),
    )
    .await?;
    let offsets: Vec<u64> = acknowledged
        .iter()
        .map(|metadata| metadata.offset)
        .collect();
    assert_eq!(offsets, (0..100).collect::<Vec<_>>());
    leader.close().await?;

    let none = broker
        .producer(ProducerConfig::default().acks(Acks::None))
        .await?;
    let written = produce_all(
        &none,
        (0..100)
            .map(|index| ProducerRecord::new("events", format!("zero-{index}")).with_partition(1)),
    )
    .await?;
    assert!(written
        .iter()
        .all(|metadata| metadata.offset == OFFSET_UNKNOWN && metadata.partition == 1));
    none.flush().await?;
    none.close().await?;

    // Both sets are stored, in order.
    let mut consumer = broker.consumer().await?;
    consumer
        .assign("events", &[0, 1], StartOffset::Earliest)
        .await?;
    let consumed = consume(&broker.runtime, &mut consumer, 200).await?;
    let values = |partition: u32| -> Vec<String> {
        consumed
            .iter()
            .filter(|record| record.partition == partition)
            .map(|record| text(&record.value))
            .collect()
    };
    assert_eq!(
        values(0),
        (0..100)
            .map(|index| format!("one-{index}"))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        values(1),
        (0..100)
            .map(|index| format!("zero-{index}"))
            .collect::<Vec<_>>()
    );
    Ok(())
}

#[tokio::test]
async fn unknown_topics_and_partitions_are_clear_errors() -> anyhow::Result<()> {
    let broker = TestBroker::start().await?;
    let admin = broker.admin().await?;
    admin.create_topic("known", 2, 1).await?;

    let producer = broker.producer(ProducerConfig::default()).await?;
    let result = producer.send(ProducerRecord::new("missing", "x")).await;
    assert_eq!(broker_code(result), Some(ErrorCode::UnknownTopic));
    let error = producer
        .send(ProducerRecord::new("missing", "x"))
        .await
        .expect_err("unknown topic");
    assert!(error.to_string().starts_with("unknown_topic: "), "{error}");
    assert!(!error.is_retriable());

    let result = producer
        .send(ProducerRecord::new("known", "x").with_partition(2))
        .await;
    assert!(
        matches!(result, Err(ClientError::InvalidArgument(_))),
        "{result:?}"
    );

    let mut consumer = broker.consumer().await?;
    let result = consumer
        .assign("missing", &[0], StartOffset::Earliest)
        .await;
    assert_eq!(broker_code(result), Some(ErrorCode::UnknownTopic));
    let result = consumer.assign("known", &[5], StartOffset::Earliest).await;
    assert!(
        matches!(result, Err(ClientError::InvalidArgument(_))),
        "{result:?}"
    );
    let result = consumer.poll(Duration::from_millis(10)).await;
    assert!(
        matches!(result, Err(ClientError::InvalidArgument(_))),
        "nothing assigned: {result:?}"
    );

    assert_eq!(
        broker_code(admin.describe_topic("missing").await),
        Some(ErrorCode::UnknownTopic)
    );
    Ok(())
}

#[tokio::test]
async fn offsets_out_of_range_are_reported_and_seek_recovers() -> anyhow::Result<()> {
    let broker = TestBroker::start().await?;
    broker.admin().await?.create_topic("small", 1, 1).await?;
    let producer = broker.producer(ProducerConfig::default()).await?;
    produce_all(
        &producer,
        (0..10).map(|index| ProducerRecord::new("small", format!("{index}"))),
    )
    .await?;

    let mut consumer = broker.consumer().await?;
    consumer
        .assign("small", &[0], StartOffset::Offset(1_000))
        .await?;
    assert_eq!(consumer.position("small", 0), Some(1_000));
    let error = consumer
        .poll(Duration::from_secs(5))
        .await
        .expect_err("out of range");
    assert_eq!(error.code(), Some(ErrorCode::OffsetOutOfRange), "{error}");
    assert!(
        error.to_string().contains("1000"),
        "the message names the offset: {error}"
    );
    // The position stays; seeking recovers.
    assert_eq!(consumer.position("small", 0), Some(1_000));
    assert_eq!(consumer.seek("small", 0, StartOffset::Offset(4)).await?, 4);
    let records = consume(&broker.runtime, &mut consumer, 6).await?;
    assert_eq!(records[0].offset, 4);
    assert_eq!(text(&records[0].value), "4");
    assert_eq!(consumer.seek("small", 0, StartOffset::Latest).await?, 10);
    assert_eq!(consumer.seek("small", 0, StartOffset::Earliest).await?, 0);
    // Seeking a partition that is not assigned is refused.
    assert!(matches!(
        consumer.seek("small", 1, StartOffset::Earliest).await,
        Err(ClientError::InvalidArgument(_))
    ));
    Ok(())
}

#[tokio::test]
async fn records_too_large_are_refused_clearly() -> anyhow::Result<()> {
    let broker = TestBroker::start_with(|config| config.limits.batch_bytes_max = 64 * 1024).await?;
    broker.admin().await?.create_topic("big", 1, 1).await?;

    // Over the producer's own batch limit: refused by send.
    let small_batches = broker
        .producer(ProducerConfig::default().batch_bytes_max(16 * 1024))
        .await?;
    let result = small_batches
        .send(ProducerRecord::new("big", vec![0u8; 20 * 1024]))
        .await;
    assert!(
        matches!(result, Err(ClientError::InvalidArgument(_))),
        "{result:?}"
    );

    // Within the producer's limit but over the broker's: the broker's error.
    let producer = broker.producer(ProducerConfig::default()).await?;
    let delivery = producer
        .send(ProducerRecord::new("big", vec![0u8; 100 * 1024]))
        .await?;
    let error = delivery.await.expect_err("too large for the broker");
    assert_eq!(error.code(), Some(ErrorCode::RecordTooLarge), "{error}");
    assert!(
        error.to_string().starts_with("record_too_large: "),
        "{error}"
    );

    // Small records that batch beyond the broker's limit: the producer splits the batch.
    let lingering = broker
        .producer(ProducerConfig::default().linger(Duration::from_millis(200)))
        .await?;
    let acknowledged = produce_all(
        &lingering,
        (0..200).map(|index| ProducerRecord::new("big", vec![index as u8; 1024])),
    )
    .await?;
    let offsets: Vec<u64> = acknowledged
        .iter()
        .map(|metadata| metadata.offset)
        .collect();
    assert_eq!(offsets, (0..200).collect::<Vec<_>>(), "in order, none lost");
    let mut consumer = broker.consumer().await?;
    consumer.assign("big", &[0], StartOffset::Earliest).await?;
    let records = consume(&broker.runtime, &mut consumer, 200).await?;
    for (index, record) in records.iter().enumerate() {
        assert_eq!(record.value.as_deref(), Some(&vec![index as u8; 1024][..]));
    }
    Ok(())
}

#[tokio::test]
async fn seek_by_timestamp() -> anyhow::Result<()> {
    let broker = TestBroker::start().await?;
    broker.admin().await?.create_topic("timeline", 1, 1).await?;
    let producer = broker.producer(ProducerConfig::default()).await?;
    let base = 1_700_000_000_000i64;
    let records = (0..10).map(|index| {
        ProducerRecord::new("timeline", format!("at-{index}")).with_timestamp(base + index * 1_000)
    });
    let acknowledged = produce_all(&producer, records).await?;
    assert_eq!(acknowledged[3].timestamp, base + 3_000);

    let mut consumer = broker.consumer().await?;
    consumer
        .assign("timeline", &[0], StartOffset::Timestamp(base + 5_500))
        .await?;
    assert_eq!(consumer.position("timeline", 0), Some(6));
    let records = consume(&broker.runtime, &mut consumer, 4).await?;
    assert_eq!(records[0].timestamp, base + 6_000);
    assert_eq!(text(&records[0].value), "at-6");
    assert_eq!(
        consumer
            .seek("timeline", 0, StartOffset::Timestamp(base))
            .await?,
        0
    );
    // Later than every record: the high watermark.
    assert_eq!(
        consumer
            .seek("timeline", 0, StartOffset::Timestamp(base + 60_000))
            .await?,
        10
    );
    // Default timestamps come from the runtime's wall clock.
    let before = broker.runtime.wall_clock_ms();
    let stamped = produce_all(&producer, [ProducerRecord::new("timeline", "now")]).await?;
    assert!(
        stamped[0].timestamp >= before && stamped[0].timestamp <= broker.runtime.wall_clock_ms()
    );
    Ok(())
}

#[tokio::test]
async fn admin_manages_topics() -> anyhow::Result<()> {
    let broker = TestBroker::start().await?;
    let admin = broker.admin().await?;
    let created = admin.create_topic("alpha", 3, 1).await?;
    assert_eq!(created.name, "alpha");
    assert_eq!(created.replication_factor, 1);
    assert_eq!(
        created
            .partitions
            .iter()
            .map(|p| p.partition)
            .collect::<Vec<_>>(),
        [0, 1, 2]
    );
    admin.create_topic("beta", 1, 1).await?;

    let error = admin.create_topic("alpha", 3, 1).await.expect_err("exists");
    assert_eq!(error.code(), Some(ErrorCode::TopicAlreadyExists));
    let error = admin
        .create_topic("bad name!", 1, 1)
        .await
        .expect_err("invalid name");
    assert_eq!(error.code(), Some(ErrorCode::InvalidTopic));
    let error = admin
        .create_topic("gamma", 1, 3)
        .await
        .expect_err("replication factor");
    assert_eq!(error.code(), Some(ErrorCode::InvalidReplicationFactor));

    let listed = admin.list_topics().await?;
    let names: Vec<&str> = listed.iter().map(|topic| topic.name.as_str()).collect();
    assert_eq!(names, ["alpha", "beta"]);
    assert_eq!(listed[0].partitions, 3);

    // Describe shows the high watermark moving.
    let producer = broker.producer(ProducerConfig::default()).await?;
    produce_all(
        &producer,
        [ProducerRecord::new("alpha", "x").with_partition(1)],
    )
    .await?;
    let described = admin.describe_topic("alpha").await?;
    assert_eq!(described.partitions[1].high_watermark, 1);
    assert_eq!(described.partitions[0].high_watermark, 0);
    assert_eq!(described.partitions[1].leader, Some(0));

    admin.delete_topic("alpha").await?;
    assert_eq!(
        broker_code(admin.describe_topic("alpha").await),
        Some(ErrorCode::UnknownTopic)
    );
    assert_eq!(
        broker_code(admin.delete_topic("alpha").await),
        Some(ErrorCode::UnknownTopic)
    );
    let names: Vec<String> = admin
        .list_topics()
        .await?
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["beta"]);
    // A clone shares the connection.
    let clone = admin.clone();
    assert_eq!(clone.list_topics().await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn unreachable_broker_is_a_connect_error() -> anyhow::Result<()> {
    // Bind and drop a listener to get a port nobody listens on.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?.port()
    };
    let address = format!("127.0.0.1:{port}");
    let error = Admin::connect(&address).await.expect_err("nobody listens");
    assert!(matches!(error, ClientError::Connect { .. }), "{error}");
    assert!(
        error
            .to_string()
            .starts_with(&format!("cannot connect to broker at {address}: ")),
        "{error}"
    );
    assert!(error.is_retriable());
    let error = Admin::connect("no-port").await.expect_err("bad address");
    assert!(matches!(error, ClientError::InvalidArgument(_)), "{error}");
    Ok(())
}

#[tokio::test]
async fn flush_sends_lingering_batches_and_close_stops() -> anyhow::Result<()> {
    let broker = TestBroker::start().await?;
    broker.admin().await?.create_topic("slow", 1, 1).await?;
    let producer = broker
        .producer(ProducerConfig::default().linger(Duration::from_secs(3_600)))
        .await?;
    let mut deliveries = Vec::new();
    for index in 0..10 {
        deliveries.push(
            producer
                .send(ProducerRecord::new("slow", format!("{index}")))
                .await?,
        );
    }
    broker
        .runtime
        .timeout(PATIENCE, producer.flush())
        .await
        .context("flush did not send a lingering batch")??;
    for (index, delivery) in deliveries.into_iter().enumerate() {
        // Already resolved: flush waited for them.
        let metadata = broker
            .runtime
            .timeout(Duration::from_millis(100), delivery)
            .await
            .context("flush returned before the acknowledgement")??;
        assert_eq!(metadata.offset, index as u64);
    }
    let clone = producer.clone();
    producer.close().await?;
    let result = clone.send(ProducerRecord::new("slow", "late")).await;
    assert!(matches!(result, Err(ClientError::Closed)), "{result:?}");
    Ok(())
}

#[tokio::test]
async fn dropping_the_producer_still_sends_what_it_buffered() -> anyhow::Result<()> {
    let broker = TestBroker::start().await?;
    broker.admin().await?.create_topic("dropped", 1, 1).await?;
    let producer = broker
        .producer(ProducerConfig::default().linger(Duration::from_millis(200)))
        .await?;
    let mut deliveries = Vec::new();
    for index in 0..10 {
        deliveries.push(
            producer
                .send(ProducerRecord::new("dropped", format!("{index}")))
                .await?,
        );
    }
    // No flush, no close: the last handle goes while the batch still lingers.
    drop(producer);
    for (index, delivery) in deliveries.into_iter().enumerate() {
        let metadata = broker
            .runtime
            .timeout(PATIENCE, delivery)
            .await
            .context("a record buffered before the drop was never acknowledged")??;
        assert_eq!(metadata.offset, index as u64);
    }
    let mut consumer = broker.consumer().await?;
    consumer
        .assign_all("dropped", StartOffset::Earliest)
        .await?;
    let records = consume(&broker.runtime, &mut consumer, 10).await?;
    let values: Vec<String> = records.iter().map(|record| text(&record.value)).collect();
    let expected: Vec<String> = (0..10).map(|index| index.to_string()).collect();
    assert_eq!(values, expected);
    Ok(())
}

#[tokio::test]
async fn the_stream_yields_every_record_in_order_and_dropping_it_loses_none() -> anyhow::Result<()>
{
    use futures_util::StreamExt;

    const PER_PARTITION: u64 = 30;
    let broker = TestBroker::start().await?;
    broker.admin().await?.create_topic("streamed", 2, 1).await?;
    let producer = broker.producer(ProducerConfig::default()).await?;
    produce_all(
        &producer,
        (0..2 * PER_PARTITION).map(|index| {
            ProducerRecord::new("streamed", format!("value-{index}"))
                .with_partition((index % 2) as u32)
        }),
    )
    .await?;
    producer.close().await?;

    let mut consumer = broker.consumer().await?;
    consumer
        .assign_all("streamed", StartOffset::Earliest)
        .await?;
    let mut seen: BTreeMap<u32, Vec<(u64, String)>> = BTreeMap::new();
    {
        // A few records through the Stream trait, then the stream is dropped while the rest
        // of what it fetched is still unread.
        let mut stream = consumer.stream();
        for _ in 0..10 {
            let record = broker
                .runtime
                .timeout(PATIENCE, stream.next())
                .await
                .context("the stream stalled")?
                .context("the stream ended")??;
            seen.entry(record.partition)
                .or_default()
                .push((record.offset, text(&record.value)));
        }
    }
    for partition in 0..2 {
        let handed_out = seen.get(&partition).map_or(0, Vec::len) as u64;
        assert_eq!(
            consumer.position("streamed", partition),
            Some(handed_out),
            "a dropped stream's unread records are not counted as returned"
        );
    }
    // The rest: first what the dropped stream had fetched (poll returns it first), then a
    // second stream, without the futures crate.
    let polled = consumer.poll(Duration::from_secs(5)).await?;
    for record in polled {
        seen.entry(record.partition)
            .or_default()
            .push((record.offset, text(&record.value)));
    }
    let mut stream = consumer.stream();
    while seen.values().map(Vec::len).sum::<usize>() < (2 * PER_PARTITION) as usize {
        let record = broker
            .runtime
            .timeout(PATIENCE, stream.next_record())
            .await
            .context("the stream stalled")?
            .context("the stream ended")??;
        seen.entry(record.partition)
            .or_default()
            .push((record.offset, text(&record.value)));
    }
    drop(stream);
    for partition in 0..2u32 {
        let expected: Vec<(u64, String)> = (0..PER_PARTITION)
            .map(|offset| {
                let index = offset * 2 + u64::from(partition);
                (offset, format!("value-{index}"))
            })
            .collect();
        assert_eq!(seen[&partition], expected, "partition {partition}");
    }
    Ok(())
}

#[tokio::test]
async fn the_stream_ends_when_nothing_is_assigned() -> anyhow::Result<()> {
    let broker = TestBroker::start().await?;
    let mut consumer = broker.consumer().await?;
    let mut stream = consumer.stream();
    let next = broker
        .runtime
        .timeout(PATIENCE, stream.next_record())
        .await
        .context("the stream of an unassigned consumer waited")?;
    assert!(next.is_none(), "{next:?}");
    Ok(())
}

// Under madsim a stopped broker's listener keeps its port until the simulated node is killed,
// so an in-process restart on the same address is a real-build test only (the simulation
// harness restarts whole nodes).
#[cfg_attr(
    madsim,
    ignore = "in-process restarts need the port back: real build only"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_and_consumer_survive_a_broker_restart() -> anyhow::Result<()> {
    let mut broker = TestBroker::start().await?;
    broker.admin().await?.create_topic("durable", 2, 1).await?;
    let producer = broker.producer(ProducerConfig::default()).await?;
    let mut consumer = broker.consumer().await?;
    consumer
        .assign_all("durable", StartOffset::Earliest)
        .await?;
    let first = produce_all(
        &producer,
        (0..50).map(|index| {
            ProducerRecord::new("durable", format!("before-{index}")).with_key(format!("{index}"))
        }),
    )
    .await?;
    assert_eq!(first.len(), 50);
    consume(&broker.runtime, &mut consumer, 50).await?;

    broker.restart().await?;

    // The same producer and consumer reconnect on their own.
    let second = produce_all(
        &producer,
        (0..50).map(|index| {
            ProducerRecord::new("durable", format!("after-{index}")).with_key(format!("{index}"))
        }),
    )
    .await?;
    assert_eq!(second.len(), 50);
    let records = consume(&broker.runtime, &mut consumer, 50).await?;
    assert!(records
        .iter()
        .all(|record| text(&record.value).starts_with("after-")));
    producer.close().await?;
    Ok(())
}
