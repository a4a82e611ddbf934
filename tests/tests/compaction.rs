//! Compaction end to end: a node whose retention task (which starts the cleaner's passes) runs
//! every 100 ms, and a topic with `cleanup.policy=compact` and 1 KiB segments. Many updates to
//! a few keys: the partition's disk use stops growing while updates keep coming, a consumer
//! from offset 0 sees the latest value of every key at the offset it was acknowledged at (and
//! offsets only grow), and a restart serves the same.
#![allow(clippy::disallowed_methods)] // real processes and the real clock: not simulated code

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use brook_client::{
    Acks, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, StartOffset,
};
use brook_e2e::{run_cli, wait_until, work_dir, Broker, CliOutput, CLI_TIMEOUT};

const TOPIC: &str = "table";
const KEYS: u64 = 5;
const ROUNDS: u64 = 16;
const UPDATES_PER_ROUND: u64 = 40;
const VALUE_BYTES: usize = 200;
/// What the partition may hold once compacted: a few segments of at most 1 KiB around one
/// record per key, plus the active segment. Without compaction a round alone adds ~10 KiB.
const DISK_BYTES_BOUND: u64 = 8 * 1024;
const COMPACTION_WAIT: Duration = Duration::from_secs(20);

fn cli(bootstrap: &str, args: &[&str], stdin: &[u8]) -> CliOutput {
    let mut all = vec!["-b", bootstrap];
    all.extend_from_slice(args);
    run_cli(&all, stdin, CLI_TIMEOUT)
}

/// Bytes of segment data files in the partition's directory.
fn segment_bytes_on_disk(partition_dir: &Path) -> u64 {
    std::fs::read_dir(partition_dir)
        .expect("read the partition dir")
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".log"))
        .filter_map(|entry| entry.metadata().ok())
        .map(|metadata| metadata.len())
        .sum()
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn value(key: u64, index: u64) -> String {
    format!("{key}:{index}:{}", "v".repeat(VALUE_BYTES))
}

/// Every record from offset 0 up to `end`: (offset, key, value).
async fn read_from_start(bootstrap: &str, end: u64) -> Vec<(u64, String, String)> {
    let mut consumer =
        Consumer::connect(bootstrap, ConsumerConfig::default().fetch_wait_ms_max(50))
            .await
            .expect("consumer connects");
    consumer
        .assign(TOPIC, &[0], StartOffset::Offset(0))
        .await
        .expect("assign at 0");
    let mut records = Vec::new();
    let deadline = Instant::now() + COMPACTION_WAIT;
    while consumer.position(TOPIC, 0).expect("assigned") < end && Instant::now() < deadline {
        for record in consumer
            .poll(Duration::from_millis(200))
            .await
            .expect("poll")
        {
            let key = String::from_utf8(record.key.expect("keyed").to_vec()).expect("utf-8");
            let value = String::from_utf8(record.value.expect("value").to_vec()).expect("utf-8");
            records.push((record.offset, key, value));
        }
    }
    assert!(
        consumer.position(TOPIC, 0).expect("assigned") >= end,
        "the consumer reached {end}"
    );
    records
}

fn assert_latest_values(
    records: &[(u64, String, String)],
    latest: &BTreeMap<String, (u64, String)>,
) {
    let offsets: Vec<u64> = records.iter().map(|(offset, _, _)| *offset).collect();
    assert!(
        offsets.windows(2).all(|pair| pair[0] < pair[1]),
        "offsets only grow: {offsets:?}"
    );
    for (key, (offset, value)) in latest {
        assert!(
            records
                .iter()
                .any(|(at, k, v)| at == offset && k == key && v == value),
            "key {key}: its latest value (offset {offset}) is not served"
        );
    }
}

#[test]
fn a_compacted_topic_keeps_the_latest_value_per_key_and_stops_growing() {
    let work = work_dir();
    let data_dir = work.path().join("data");
    let config = work.path().join("brook.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n\n[log]\nretention_check_interval_ms = 100\n",
            data_dir.to_str().expect("utf-8 temp path"),
        ),
    )
    .expect("write config");
    let mut broker = Broker::node(work.path(), &config);
    let bootstrap = broker.bootstrap();
    cli(
        &bootstrap,
        &[
            "topic",
            "create",
            TOPIC,
            "--partitions",
            "1",
            "--config",
            "cleanup.policy=compact",
            "--config",
            "segment.bytes=1024",
        ],
        b"",
    )
    .assert_success();
    let partition_dir = data_dir.join("topics").join(TOPIC).join("0");
    let runtime = tokio_runtime();
    let mut latest: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut largest = 0;
    let mut produced_bytes = 0;
    runtime.block_on(async {
        let producer = Producer::connect(&bootstrap, ProducerConfig::default().acks(Acks::All))
            .await
            .expect("producer connects");
        for round in 0..ROUNDS {
            for update in 0..UPDATES_PER_ROUND {
                let index = round * UPDATES_PER_ROUND + update;
                let key = format!("key-{}", index % KEYS);
                let value = value(index % KEYS, index);
                produced_bytes += value.len() as u64;
                let delivery = producer
                    .send(
                        ProducerRecord::new(TOPIC, value.clone())
                            .with_key(key.clone())
                            .with_partition(0),
                    )
                    .await
                    .expect("send");
                let metadata = delivery.await.expect("acknowledged");
                latest.insert(key, (metadata.offset, value));
            }
            if round >= ROUNDS / 2 {
                // A few retention periods later the cleaner has caught up: the disk holds about
                // one record per key, however many updates came.
                assert!(
                    wait_until(COMPACTION_WAIT, || {
                        segment_bytes_on_disk(&partition_dir) < DISK_BYTES_BOUND
                    }),
                    "round {round}: {} bytes on disk",
                    segment_bytes_on_disk(&partition_dir)
                );
                largest = largest.max(segment_bytes_on_disk(&partition_dir));
            }
        }
    });
    assert!(
        produced_bytes > 10 * DISK_BYTES_BOUND,
        "the test writes far more than the bound: {produced_bytes}"
    );
    assert!(largest < DISK_BYTES_BOUND, "{largest} bytes on disk");
    let end = ROUNDS * UPDATES_PER_ROUND;
    let records = runtime.block_on(read_from_start(&bootstrap, end));
    assert!(
        (records.len() as u64) < end / 4,
        "compaction removed most updates: {} of {end} left",
        records.len()
    );
    assert_latest_values(&records, &latest);

    // A restart serves the same compacted log.
    assert!(
        broker.interrupt(Duration::from_secs(20)).is_some(),
        "broker stops on SIGINT"
    );
    let broker = Broker::node(work.path(), &config);
    let after = runtime.block_on(read_from_start(&broker.bootstrap(), end));
    assert_latest_values(&after, &latest);
    assert!(
        after.len() <= records.len(),
        "{} > {}",
        after.len(),
        records.len()
    );
}
