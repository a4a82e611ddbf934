//! Simulation smoke test: one real brook node on a simulated host with a SimDisk. A client
//! produces with acks=all, the node is killed mid-stream and its disk crashed (unsynced bytes
//! dropped, a torn or bit-flipped last write), the node restarts, and a consumer must read back
//! every acknowledged record, exactly once and in order. Runs for many seeds
//! (`MADSIM_TEST_NUM`); a failure prints `MADSIM_TEST_SEED=<seed>` to replay it.
#![cfg(madsim)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brook_actors::runtime::Runtime;
use brook_client::{
    Acks, Admin, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, StartOffset,
};
use brook_node::Broker;
use brook_sim::{node_address, node_config, node_seed};
use brook_storage::SimDisk;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const TOPIC: &str = "smoke";
const PARTITIONS: u32 = 2;
const RECORDS: u64 = 300;

/// Connect with retries: the broker may still be starting.
async fn admin(runtime: &Runtime) -> Admin {
    for _ in 0..100 {
        if let Ok(admin) = Admin::connect(&node_address(0).to_string()).await {
            return admin;
        }
        runtime.sleep(Duration::from_millis(100)).await;
    }
    panic!("broker never came up");
}

#[madsim::test]
async fn acknowledged_records_survive_kill_and_disk_crash() {
    let handle = madsim::runtime::Handle::current();
    let seed = handle.seed();
    let disk = SimDisk::new(seed);
    let incarnations = Arc::new(AtomicU64::new(0));
    let node_disk = disk.clone();
    let node = handle
        .create_node()
        .name("broker-0")
        .ip(node_address(0).ip())
        .init(move || {
            let disk = node_disk.clone();
            let incarnation = incarnations.fetch_add(1, Ordering::Relaxed);
            async move {
                let runtime = Runtime::new(node_seed(seed, 0, incarnation));
                let _broker = Broker::start(node_config(0), runtime, Arc::new(disk))
                    .await
                    .expect("broker starts");
                std::future::pending::<()>().await;
            }
        })
        .build();
    let client = handle
        .create_node()
        .name("client")
        .ip("10.0.1.1".parse().unwrap())
        .build();

    // Phase 1: produce until the broker is killed at a random moment.
    let acked: Arc<Mutex<Vec<(u32, u64, String)>>> = Arc::default();
    let producer_acked = acked.clone();
    let producing = client.spawn(async move {
        let runtime = Runtime::new(seed ^ 1);
        admin(&runtime)
            .await
            .create_topic(TOPIC, PARTITIONS, 1)
            .await
            .expect("create topic");
        let config = ProducerConfig::default()
            .acks(Acks::All)
            .retries_max(0)
            .linger(Duration::from_millis(2))
            .request_timeout(Duration::from_secs(2))
            .seed(runtime.seed());
        let producer = Producer::connect(&node_address(0).to_string(), config)
            .await
            .expect("producer connects");
        let mut deliveries = Vec::new();
        for index in 0..RECORDS {
            let value = format!("value-{index}");
            let record =
                ProducerRecord::new(TOPIC, value.clone()).with_key(format!("key-{}", index % 7));
            match producer.send(record).await {
                Ok(delivery) => deliveries.push((value, delivery)),
                Err(_) => break,
            }
            runtime.sleep(Duration::from_millis(3)).await;
        }
        for (value, delivery) in deliveries {
            if let Ok(metadata) = delivery.await {
                producer_acked
                    .lock()
                    .unwrap()
                    .push((metadata.partition, metadata.offset, value));
            }
        }
    });
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let kill_after = Duration::from_millis(rng.gen_range(200..1_500));
    Runtime::new(seed ^ 3).sleep(kill_after).await;
    handle.kill(node.id());
    let crash = disk.crash(&mut rng);
    tracing::info!(
        ?kill_after,
        files = crash.files.len(),
        "killed the broker and crashed its disk"
    );
    producing.await.expect("producer task");
    handle.restart(node.id());

    // Phase 2: read everything back.
    let acked = acked.lock().unwrap().clone();
    let consumed = client
        .spawn(async move {
            let runtime = Runtime::new(seed ^ 2);
            let _ = admin(&runtime).await;
            let mut consumer =
                Consumer::connect(&node_address(0).to_string(), ConsumerConfig::default())
                    .await
                    .expect("consumer connects");
            consumer
                .assign_all(TOPIC, StartOffset::Earliest)
                .await
                .expect("assign");
            let mut records = Vec::new();
            let mut idle_polls = 0;
            while idle_polls < 10 {
                let batch = consumer
                    .poll(Duration::from_millis(200))
                    .await
                    .expect("poll");
                if batch.is_empty() {
                    idle_polls += 1;
                }
                records.extend(batch);
            }
            records
        })
        .await
        .expect("consumer task");

    let mut by_value: BTreeMap<String, Vec<(u32, u64)>> = BTreeMap::new();
    for record in &consumed {
        let value = String::from_utf8(record.value.clone().expect("value").to_vec()).expect("utf8");
        by_value
            .entry(value)
            .or_default()
            .push((record.partition, record.offset));
    }
    for (value, places) in &by_value {
        assert_eq!(
            places.len(),
            1,
            "seed {seed}: {value} consumed {} times: {places:?}",
            places.len()
        );
    }
    for (partition, offset, value) in &acked {
        let places = by_value.get(value);
        assert_eq!(
            places.map(Vec::as_slice),
            Some(&[(*partition, *offset)][..]),
            "seed {seed}: acknowledged {value} at {partition}/{offset} not read back where acknowledged"
        );
    }
    // Offsets per partition are dense from 0.
    let mut per_partition: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for record in &consumed {
        per_partition
            .entry(record.partition)
            .or_default()
            .push(record.offset);
    }
    for (partition, offsets) in per_partition {
        let expected: Vec<u64> = (0..offsets.len() as u64).collect();
        assert_eq!(
            offsets, expected,
            "seed {seed}: partition {partition} offsets not dense"
        );
    }
    tracing::info!(
        acked = acked.len(),
        consumed = consumed.len(),
        "smoke run checked"
    );
}
