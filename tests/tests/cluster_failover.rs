//! A 3-node cluster of real `brook node --peers ...` processes on loopback: acks=all producers
//! write to a replication-factor-3 partition while its leader is SIGKILLed and restarted several
//! times. Afterwards every acknowledged record must be in the partition, where it was
//! acknowledged, exactly once, and the partition's offsets must be dense (judged by
//! brook-jepsen's queue checker over the recorded history, plus a direct density check of the
//! final read, since a new leader's control batch holds an offset no consumer value does).
#![allow(clippy::disallowed_methods)] // real processes and the real clock: not simulated code

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use brook_actors::runtime::{Runtime, TaskHandle};
use brook_client::{
    Acks, Admin, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, StartOffset,
};
use brook_e2e::{free_ports, work_dir, Broker};
use brook_jepsen::queue::{self, QueueOptions};
use brook_jepsen::{History, OpKind, Phase, PollRecord, SendAcks};
use brook_wire::batch::split_batches;
use brook_wire::error::ErrorCode;
use bytes::Bytes;

const NODES: u32 = 3;
const TOPIC: &str = "failover";
/// Leader kills (each followed by a restart of the killed node).
const KILL_ROUNDS: u64 = 3;
/// Producer workers, each one history process with one send in flight.
const WORKERS: u64 = 4;
/// Acknowledgements to wait for before each kill and after the last restart.
const ACKS_PER_ROUND: u64 = 100;
/// How long the killed leader stays down (longer than the election timeout).
const DOWNTIME: Duration = Duration::from_millis(2_000);
/// Bound on one phase (enough acks, a leader known, everything committed, the drain).
const PHASE_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on one send, from the call to its acknowledgement or failure.
const SEND_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound on sends per worker (the phases end long before).
const SENDS_PER_WORKER_MAX: u64 = 1_000_000;
/// History process of the nemesis (crash and restart events) and of the final read.
const NEMESIS_PROCESS: u64 = 1_000;
const DRAIN_PROCESS: u64 = 9_000;

/// The history, recorded from every task.
struct Recorder {
    started: Instant,
    history: Mutex<History>,
}

impl Recorder {
    fn push(&self, process: u64, node: Option<String>, phase: Phase, kind: OpKind) {
        let time_ns = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.history
            .lock()
            .expect("history lock")
            .push(process, time_ns, node, phase, kind);
    }
}

fn send_kind(value: u64, partition: Option<u32>, offset: Option<u64>) -> OpKind {
    OpKind::Send {
        partition,
        key: None,
        value,
        offset,
        acks: SendAcks::All,
    }
}

struct Cluster {
    work: tempfile::TempDir,
    data: BTreeMap<u32, PathBuf>,
    ports: BTreeMap<u32, u16>,
    nodes: BTreeMap<u32, Broker>,
}

impl Cluster {
    fn args(&self, id: u32) -> Vec<String> {
        let peers = self
            .ports
            .iter()
            .map(|(id, port)| format!("{id}@127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        vec![
            "--node-id".into(),
            id.to_string(),
            "--listen".into(),
            format!("127.0.0.1:{}", self.ports[&id]),
            "--data-dir".into(),
            self.data[&id].display().to_string(),
            "--peers".into(),
            peers,
        ]
    }

    fn bootstrap(&self) -> String {
        self.ports
            .values()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn start(&mut self, id: u32) {
        let broker = Broker::node_with_args(self.work.path(), &self.args(id));
        self.nodes.insert(id, broker);
    }

    /// Every node's log, for failure messages.
    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|(id, broker)| {
                let stderr = broker.stderr();
                let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
                format!(
                    "--- node {id} (last 40 log lines, newest first):\n{}",
                    tail.join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// One producer worker: sends its own values one at a time until told to stop.
async fn produce(
    process: u64,
    producer: Arc<Producer>,
    recorder: Arc<Recorder>,
    runtime: Runtime,
    stop: Arc<AtomicBool>,
    acks: Arc<AtomicU64>,
) {
    for index in 0..SENDS_PER_WORKER_MAX {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let value = process * 10_000_000 + index;
        recorder.push(
            process,
            None,
            Phase::Invoke,
            send_kind(value, Some(0), None),
        );
        let record = ProducerRecord::new(TOPIC, value.to_string()).with_partition(0);
        let delivered = runtime
            .timeout(SEND_TIMEOUT, async { producer.send(record).await?.await })
            .await;
        match delivered {
            Ok(Ok(metadata)) => {
                recorder.push(
                    process,
                    None,
                    Phase::Ok,
                    send_kind(value, Some(metadata.partition), Some(metadata.offset)),
                );
                acks.fetch_add(1, Ordering::Relaxed);
            }
            // A timeout, a lost connection, a leader change: the record may or may not be in.
            _ => {
                recorder.push(process, None, Phase::Info, send_kind(value, Some(0), None));
                runtime.sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One poll of the final read that delivered `records`.
fn record_poll(recorder: &Recorder, records: Vec<PollRecord>) {
    let invoke = OpKind::Poll {
        records: Vec::new(),
    };
    recorder.push(DRAIN_PROCESS, None, Phase::Invoke, invoke);
    recorder.push(DRAIN_PROCESS, None, Phase::Ok, OpKind::Poll { records });
}

async fn wait_for_acks(acks: &AtomicU64, target: u64, cluster: &Cluster, runtime: &Runtime) {
    let deadline = Instant::now() + PHASE_TIMEOUT;
    while acks.load(Ordering::Relaxed) < target {
        assert!(
            Instant::now() < deadline,
            "only {} of {target} acks within {PHASE_TIMEOUT:?}\n{}",
            acks.load(Ordering::Relaxed),
            cluster.logs()
        );
        runtime.sleep(Duration::from_millis(20)).await;
    }
}

/// The partition's leader as the cluster reports it, once it has one.
async fn leader(admin: &Admin, cluster: &Cluster, runtime: &Runtime) -> u32 {
    let deadline = Instant::now() + PHASE_TIMEOUT;
    loop {
        if let Ok(topic) = admin.describe_topic(TOPIC).await {
            if let Some(leader) = topic.partitions.first().and_then(|p| p.leader) {
                return leader;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no leader within {PHASE_TIMEOUT:?}\n{}",
            cluster.logs()
        );
        runtime.sleep(Duration::from_millis(50)).await;
    }
}

/// A running cluster with a replication-factor-3 topic and producer workers recording a
/// history.
struct Scenario {
    cluster: Cluster,
    runtime: Runtime,
    recorder: Arc<Recorder>,
    bootstrap: String,
    admin: Admin,
    acks: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    workers: Vec<TaskHandle<()>>,
}

impl Scenario {
    /// Three nodes, the topic, and the producers sending.
    async fn start(runtime: Runtime) -> Scenario {
        let work = work_dir();
        let data = (1..=NODES)
            .map(|id| (id, work.path().join(format!("node-{id}"))))
            .collect();
        let ports = (1..=NODES).zip(free_ports(NODES as usize)).collect();
        let mut cluster = Cluster {
            work,
            data,
            ports,
            nodes: BTreeMap::new(),
        };
        for id in 1..=NODES {
            cluster.start(id);
        }
        let bootstrap = cluster.bootstrap();
        let recorder = Arc::new(Recorder {
            started: Instant::now(),
            history: Mutex::new(History::new()),
        });
        let admin = Admin::connect(&bootstrap).await.expect("admin connects");
        let deadline = Instant::now() + PHASE_TIMEOUT;
        loop {
            match admin.create_topic(TOPIC, 1, 3).await {
                Ok(_) => break,
                // An earlier attempt that timed out was applied after all.
                Err(error) if error.code() == Some(ErrorCode::TopicAlreadyExists) => break,
                Err(error) => assert!(
                    Instant::now() < deadline,
                    "cannot create the topic: {error}\n{}",
                    cluster.logs()
                ),
            }
            runtime.sleep(Duration::from_millis(100)).await;
        }
        leader(&admin, &cluster, &runtime).await;

        let config = ProducerConfig::default()
            .acks(Acks::All)
            // No retries: without the idempotent producer a retry may duplicate a record.
            .retries_max(0)
            .request_timeout(Duration::from_secs(5))
            .delivery_timeout(Duration::from_secs(10));
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(AtomicU64::new(0));
        let mut workers = Vec::new();
        for process in 0..WORKERS {
            let producer = Arc::new(
                Producer::connect(&bootstrap, config.clone())
                    .await
                    .expect("producer connects"),
            );
            workers.push(runtime.spawn(produce(
                process,
                producer,
                recorder.clone(),
                runtime.clone(),
                stop.clone(),
                acks.clone(),
            )));
        }
        Scenario {
            cluster,
            runtime,
            recorder,
            bootstrap,
            admin,
            acks,
            stop,
            workers,
        }
    }

    async fn wait_for_acks(&self, target: u64) {
        wait_for_acks(&self.acks, target, &self.cluster, &self.runtime).await;
    }

    async fn leader(&self) -> u32 {
        leader(&self.admin, &self.cluster, &self.runtime).await
    }

    /// Stop the producers, wait until every replica has everything, read the partition from
    /// offset 0 to its end, check the offsets are dense and let brook-jepsen judge the history.
    /// Returns the end offset and the offsets of the leaders' control batches.
    async fn finish(self) -> (Cluster, u64, BTreeSet<u64>) {
        let Scenario {
            cluster,
            runtime,
            recorder,
            bootstrap,
            admin,
            acks: _,
            stop,
            workers,
        } = self;
        stop.store(true, Ordering::Relaxed);
        for worker in workers {
            worker.await.expect("worker task");
        }

        // Everything the leader has is committed once every replica caught up.
        let deadline = Instant::now() + PHASE_TIMEOUT;
        let end = loop {
            if let Ok(topic) = admin.describe_topic(TOPIC).await {
                let partition = &topic.partitions[0];
                if partition.leader.is_some()
                    && partition.in_sync_replicas.len() == 3
                    && partition.log_end_offset == Some(partition.high_watermark)
                {
                    break partition.high_watermark;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the partition did not settle within {PHASE_TIMEOUT:?}\n{}",
                cluster.logs()
            );
            runtime.sleep(Duration::from_millis(100)).await;
        };

        // The final read: every offset from 0 to the end.
        recorder.push(
            DRAIN_PROCESS,
            None,
            Phase::Invoke,
            OpKind::Assign {
                partitions: vec![0],
            },
        );
        recorder.push(
            DRAIN_PROCESS,
            None,
            Phase::Ok,
            OpKind::Assign {
                partitions: vec![0],
            },
        );
        let mut consumer = Consumer::connect(&bootstrap, ConsumerConfig::default())
            .await
            .expect("consumer connects");
        consumer
            .assign_all(TOPIC, StartOffset::Earliest)
            .await
            .expect("assign");
        // A new leader's control batch holds an offset but no producer's record; the client
        // may hand it over as a record without key and value, or skip it. Which offsets are
        // control batches is read from a replica's segment files (all replicas hold the same
        // committed log once settled).
        // Only those below the end read: a leadership change after the settling (the
        // controller moving leaders back to their preferred replica) adds one above it.
        let control_offsets: BTreeSet<u64> = control_offsets_on_disk(&cluster, 1)
            .into_iter()
            .filter(|offset| *offset < end)
            .collect();
        let mut value_offsets = Vec::new();
        let mut valueless = Vec::new();
        let mut next = 0u64;
        let deadline = Instant::now() + PHASE_TIMEOUT;
        while consumer.position(TOPIC, 0).unwrap_or(0) < end {
            assert!(
                Instant::now() < deadline,
                "the final read did not finish: {} records read, position {:?} of {end}",
                value_offsets.len(),
                consumer.position(TOPIC, 0)
            );
            let polled = consumer
                .poll(Duration::from_millis(500))
                .await
                .expect("poll");
            // Recorded as polls of the records between gaps, each gap a seek: the checker must
            // not take a control batch for a skipped record (the density check below makes
            // sure the gaps are exactly the control batches).
            let mut records = Vec::new();
            for record in polled {
                let Some(value) = &record.value else {
                    assert!(record.key.is_none(), "a keyed record without value");
                    valueless.push(record.offset);
                    continue;
                };
                let value: u64 = std::str::from_utf8(value)
                    .ok()
                    .and_then(|text| text.parse().ok())
                    .unwrap_or_else(|| panic!("unexpected value {value:?}"));
                if record.offset > next {
                    record_poll(&recorder, std::mem::take(&mut records));
                    let seek = OpKind::Seek {
                        partition: 0,
                        offset: record.offset,
                    };
                    recorder.push(DRAIN_PROCESS, None, Phase::Invoke, seek.clone());
                    recorder.push(DRAIN_PROCESS, None, Phase::Ok, seek);
                }
                next = record.offset + 1;
                value_offsets.push(record.offset);
                records.push(PollRecord {
                    partition: record.partition,
                    offset: record.offset,
                    value,
                });
            }
            record_poll(&recorder, records);
        }

        // Dense: every offset from 0 to the end is a record read or a control batch, never
        // both, and each record was read once, in order.
        assert!(
            valueless
                .iter()
                .all(|offset| control_offsets.contains(offset)),
            "records without a value that are not control batches: {valueless:?} (control \
             batches at {control_offsets:?})"
        );
        assert!(
            value_offsets.windows(2).all(|pair| pair[0] < pair[1]),
            "the final read went back or repeated an offset"
        );
        let mut covered: BTreeSet<u64> = control_offsets.clone();
        for offset in &value_offsets {
            assert!(
                covered.insert(*offset),
                "offset {offset} is both a control batch and a record"
            );
        }
        let missing: Vec<u64> = (0..end)
            .filter(|offset| !covered.contains(offset))
            .take(10)
            .collect();
        assert!(
            missing.is_empty() && covered.len() as u64 == end,
            "the partition's offsets are not dense from 0 to {end}: first missing {missing:?}, \
             {} covered, control batches at {control_offsets:?}, {} records read",
            covered.len(),
            value_offsets.len()
        );
        let history = recorder.history.lock().expect("history lock").clone();
        let options = QueueOptions {
            sends_ok_min: ((KILL_ROUNDS + 1) * ACKS_PER_ROUND) as usize,
            records_read_min: ((KILL_ROUNDS + 1) * ACKS_PER_ROUND) as usize,
            ..QueueOptions::default()
        };
        let report = queue::check(&history, &options).expect("a well-formed history");
        if !report.valid {
            let path = cluster.work.path().join("history.jsonl");
            std::fs::write(&path, history.to_json_lines()).expect("write the history");
            panic!(
                "the queue checker found anomalies (history and logs in {}, kept):\n{}",
                cluster.work.keep().display(),
                report.summary(5)
            );
        }
        eprintln!("{}", report.summary(0));
        (cluster, end, control_offsets)
    }
}

#[test]
fn acknowledged_records_survive_leader_kills_in_a_three_node_cluster() {
    let tokio = tokio_runtime();
    let _enter = tokio.enter();
    tokio.block_on(async {
        let mut scenario = Scenario::start(Runtime::new(11)).await;
        for round in 1..=KILL_ROUNDS {
            scenario.wait_for_acks(round * ACKS_PER_ROUND).await;
            let victim = scenario.leader().await;
            let node = format!("n{victim}");
            scenario.recorder.push(
                NEMESIS_PROCESS,
                Some(node.clone()),
                Phase::Ok,
                OpKind::Crash,
            );
            scenario
                .cluster
                .nodes
                .get_mut(&victim)
                .expect("running node")
                .kill();
            scenario.runtime.sleep(DOWNTIME).await;
            scenario.cluster.start(victim);
            scenario
                .recorder
                .push(NEMESIS_PROCESS, Some(node), Phase::Ok, OpKind::Restart);
        }
        scenario
            .wait_for_acks((KILL_ROUNDS + 1) * ACKS_PER_ROUND)
            .await;
        let (_, _, control_offsets) = scenario.finish().await;
        // Each leader (the first, then one per kill at least) began its term with a control
        // batch: the leader did change every round.
        assert!(
            control_offsets.len() as u64 > KILL_ROUNDS,
            "{control_offsets:?}"
        );
    });
}

/// Send `signal` (`STOP`, `CONT`) to a node's process.
fn signal(cluster: &Cluster, id: u32, signal: &str) {
    let pid = cluster.nodes[&id].pid().expect("a running node");
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// The bytes of a node's replica of the topic's partition 0 (its segment files, in order).
fn replica_log(cluster: &Cluster, id: u32) -> Vec<u8> {
    let partitions = cluster.data[&id].join("cluster").join("partitions");
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(&partitions).expect("the node's partitions") {
        let topic = entry.expect("directory entry").path();
        let name = topic
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if !name.starts_with(&format!("{TOPIC}@")) {
            continue;
        }
        for segment in std::fs::read_dir(topic.join("0").join("log")).expect("the replica's log") {
            let path = segment.expect("directory entry").path();
            if path.extension().is_some_and(|extension| extension == "log") {
                segments.push(path);
            }
        }
    }
    assert!(!segments.is_empty(), "node {id} has no segment of {TOPIC}");
    segments.sort();
    segments
        .iter()
        .flat_map(|path| std::fs::read(path).expect("read a segment"))
        .collect()
}

/// The offsets of the control batches (a new leader's first entry) in node `id`'s replica.
fn control_offsets_on_disk(cluster: &Cluster, id: u32) -> BTreeSet<u64> {
    /// Attribute bit of a control batch (brook-wire's batch format).
    const ATTRIBUTE_CONTROL: u16 = 1 << 5;
    let mut offsets = BTreeSet::new();
    for batch in split_batches(Bytes::from(replica_log(cluster, id))) {
        let header = *batch.expect("a stored batch").header();
        if header.attributes & ATTRIBUTE_CONTROL != 0 {
            offsets.extend(header.base_offset..=header.last_offset());
        }
    }
    offsets
}

/// The stored bytes of node `id`'s replica below offset `end`, whole batches.
fn committed_prefix(cluster: &Cluster, id: u32, end: u64) -> Vec<u8> {
    let mut prefix = Vec::new();
    for batch in split_batches(Bytes::from(replica_log(cluster, id))) {
        let batch = batch.expect("a stored batch");
        if batch.header().last_offset() < end {
            prefix.extend_from_slice(batch.bytes());
        }
    }
    prefix
}

/// The second real-process test: SIGSTOP the leader past the election timeout, produce
/// through the new leader, resume the old one: it steps down (a later term leads, it follows
/// and is in sync) and truncates whatever it had that the cluster did not commit, so that every
/// replica ends with byte-identical logs; nothing acknowledged is lost, offsets stay dense.
#[test]
fn a_paused_leader_steps_down_and_converges_after_it_resumes() {
    let tokio = tokio_runtime();
    let _enter = tokio.enter();
    tokio.block_on(async {
        let scenario = Scenario::start(Runtime::new(12)).await;
        scenario.wait_for_acks(ACKS_PER_ROUND).await;
        let paused = scenario.leader().await;
        let term_before = scenario
            .admin
            .describe_topic(TOPIC)
            .await
            .expect("describe")
            .partitions[0]
            .leader_term;
        signal(&scenario.cluster, paused, "STOP");
        // Asked of the other nodes only: the paused one would answer nothing.
        let others = scenario
            .cluster
            .ports
            .iter()
            .filter(|(id, _)| **id != paused)
            .map(|(_, port)| format!("127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        let admin = Admin::connect(&others).await.expect("admin connects");
        let deadline = Instant::now() + PHASE_TIMEOUT;
        let new_leader = loop {
            if let Ok(topic) = admin.describe_topic(TOPIC).await {
                let partition = &topic.partitions[0];
                match partition.leader {
                    Some(leader) if leader != paused && partition.leader_term > term_before => {
                        break leader
                    }
                    _ => {}
                }
            }
            assert!(
                Instant::now() < deadline,
                "no new leader while node {paused} is paused\n{}",
                scenario.cluster.logs()
            );
            scenario.runtime.sleep(Duration::from_millis(50)).await;
        };
        // Produce through the new leader while the old one sleeps.
        let acked = scenario.acks.load(Ordering::Relaxed);
        scenario.wait_for_acks(acked + ACKS_PER_ROUND).await;
        signal(&scenario.cluster, paused, "CONT");
        scenario
            .wait_for_acks((KILL_ROUNDS + 1) * ACKS_PER_ROUND)
            .await;
        let (cluster, end, control_offsets) = scenario.finish().await;
        assert!(control_offsets.len() >= 2, "{control_offsets:?}");
        let topic = admin.describe_topic(TOPIC).await.expect("describe");
        assert!(
            topic.partitions[0].leader_term > term_before,
            "leader {new_leader} of a later term expected: {topic:?}"
        );
        // Every replica holds the same bytes: the resumed node dropped anything it had that
        // the others did not commit.
        // Compared below the end read: a leader moved to its preferred replica meanwhile may
        // have appended a control batch that not every replica holds yet.
        let reference = committed_prefix(&cluster, new_leader, end);
        assert!(end > 0 && !reference.is_empty());
        for id in 1..=NODES {
            let log = committed_prefix(&cluster, id, end);
            assert!(
                log == reference,
                "node {id}'s log below offset {end} ({} bytes) differs from node {new_leader}'s \
                 ({} bytes)",
                log.len(),
                reference.len()
            );
        }
    });
}
