//! The client's routing in a cluster, against scripted brokers that speak protocol v2: "not
//! leader" / "not controller" hints followed, metadata refreshed after a hint-less refusal or a
//! dead leader, a bootstrap list whose first entry is dead, the delivery timeout, and the
//! admin's cluster status and live partition figures.
//!
//! One script drives every fake broker of a test: who leads each partition, what metadata
//! says (it may be stale on purpose), who is the controller, which brokers are dead. Each
//! broker counts what it was asked, so a test can tell which node served a request.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brook_client::{
    Admin, ClientError, Consumer, ConsumerConfig, ErrorCode, Producer, ProducerConfig,
    ProducerRecord, StartOffset,
};
use brook_runtime::Runtime;
use brook_wire::batch::{split_batches, stamp};
use brook_wire::error::BrokerError;
use brook_wire::frame::{FrameDecoder, FrameEncoder};
use brook_wire::protocol::{
    self, BrokerMetadata, BrokerStatus, OffsetSpec, PartitionMetadata, PartitionStatusReport,
    Request, Response, ResponseEnvelope, TopicDescription, TopicMetadata,
};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TOPIC: &str = "t";
/// Bound of every wait in these tests.
const TEST_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Script {
    /// Broker id -> address.
    addresses: BTreeMap<u32, String>,
    /// Who really leads each partition of [`TOPIC`].
    leaders: BTreeMap<u32, u32>,
    /// Who metadata says leads each partition (stale on purpose in some tests).
    metadata_leaders: BTreeMap<u32, u32>,
    /// Whether a non-leader names the leader (`ErrorWithLeader`) or not (`Error`).
    hints: bool,
    /// A hint-less refusal makes metadata right from then on (an election that ends).
    heal_metadata_on_refusal: bool,
    /// The active controller, and who metadata says it is.
    controller: u32,
    metadata_controller: Option<u32>,
    /// Brokers that close every connection at once (a crashed node).
    dead: BTreeSet<u32>,
    /// Per partition: stamped batches and record values, in log order.
    batches: BTreeMap<u32, Vec<(u64, Bytes)>>,
    values: BTreeMap<u32, Vec<Bytes>>,
    /// Requests answered, by (broker id, request name).
    asked: BTreeMap<(u32, &'static str), usize>,
    /// Topics created, with the broker that created them.
    created: Vec<(String, u32)>,
    /// The batches of the fetch being answered (the response's payload).
    fetch_payload: Option<Bytes>,
    /// Brokers whose metadata does not list the topic yet (they have not applied its creation).
    lagging: BTreeSet<u32>,
    /// At most this many batches in a fetch answer (a broker's read stops at a segment end).
    fetch_batches_max: Option<usize>,
    /// How long a broker takes to answer a fetch (none: at once).
    fetch_delay: Option<Duration>,
}

type Shared = Arc<Mutex<Script>>;

fn lock(script: &Shared) -> std::sync::MutexGuard<'_, Script> {
    script.lock().expect("script lock")
}

fn asked(script: &Shared, broker: u32, name: &'static str) -> usize {
    lock(script)
        .asked
        .get(&(broker, name))
        .copied()
        .unwrap_or(0)
}

/// A port nothing listens on (bound, then released).
async fn dead_address() -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    Ok(listener.local_addr()?.to_string())
}

/// Start brokers `1..=count`, all led by one script.
async fn start(runtime: &Runtime, count: u32, script: Script) -> anyhow::Result<Shared> {
    let script = Arc::new(Mutex::new(script));
    for id in 1..=count {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        lock(&script)
            .addresses
            .insert(id, listener.local_addr()?.to_string());
        let accept_script = script.clone();
        let accept_runtime = runtime.clone();
        drop(runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                if lock(&accept_script).dead.contains(&id) {
                    continue;
                }
                drop(accept_runtime.spawn(serve(
                    accept_runtime.clone(),
                    stream,
                    accept_script.clone(),
                    id,
                )));
            }
        }));
    }
    Ok(script)
}

fn address(script: &Shared, id: u32) -> String {
    lock(script).addresses[&id].clone()
}

fn not_leader(script: &Script, partition: u32) -> Response {
    let error = BrokerError::new(
        ErrorCode::NotLeader,
        format!("not the leader of t-{partition}"),
    );
    if script.hints {
        Response::ErrorWithLeader {
            error,
            leader: script.leaders.get(&partition).copied(),
        }
    } else {
        Response::Error(error)
    }
}

fn partition_metadata(script: &Script, partition: u32) -> PartitionMetadata {
    PartitionMetadata {
        partition,
        // 0: no leader (an election under way).
        leader: script
            .metadata_leaders
            .get(&partition)
            .copied()
            .filter(|leader| *leader != 0),
        leader_term: 1,
        // Assignment order (the first is the preferred leader), as the controller records it;
        // a leader's status report lists the same replicas sorted.
        replicas: match partition % 3 {
            0 => vec![1, 2, 3],
            1 => vec![2, 3, 1],
            _ => vec![3, 1, 2],
        },
        in_sync_replicas: vec![1, 2, 3],
        log_start_offset: 0,
        // Metadata lags: only the leader's status has the live figures.
        high_watermark: 0,
    }
}

fn description(script: &Script) -> TopicDescription {
    TopicDescription {
        name: TOPIC.into(),
        replication_factor: 3,
        config: Vec::new(),
        partitions: script
            .metadata_leaders
            .keys()
            .map(|partition| partition_metadata(script, *partition))
            .collect(),
    }
}

fn answer(script: &mut Script, id: u32, request: Request, payload: Bytes) -> Response {
    let name = match &request {
        Request::Handshake { .. } => "handshake",
        Request::Metadata { .. } => "metadata",
        Request::Produce { .. } => "produce",
        Request::Fetch { .. } => "fetch",
        Request::ListOffsets { .. } => "list-offsets",
        Request::CreateTopic { .. } => "create-topic",
        Request::DescribeTopic { .. } => "describe-topic",
        Request::PartitionStatus { .. } => "partition-status",
        Request::ClusterStatus => "cluster-status",
        _ => "other",
    };
    *script.asked.entry((id, name)).or_insert(0) += 1;
    let leads = |script: &Script, partition: u32| script.leaders.get(&partition) == Some(&id);
    match request {
        Request::Handshake { .. } => Response::Handshake {
            protocol_version: 2,
            broker_id: id,
            cluster_id: "scripted".into(),
            frame_bytes_max: FrameEncoder::default().frame_bytes_max() as u32,
        },
        Request::Metadata { topics } => {
            let wanted = topics.map_or(true, |names| names.iter().any(|name| name == TOPIC));
            let lagging = script.lagging.contains(&id);
            Response::Metadata {
                brokers: script
                    .addresses
                    .iter()
                    .map(|(id, address)| BrokerMetadata {
                        broker_id: *id,
                        address: address.clone(),
                    })
                    .collect(),
                controller_id: script.metadata_controller,
                topics: if wanted && lagging {
                    vec![TopicMetadata {
                        name: TOPIC.into(),
                        error: Some(ErrorCode::UnknownTopic),
                        partitions: Vec::new(),
                    }]
                } else if wanted {
                    vec![TopicMetadata {
                        name: TOPIC.into(),
                        error: None,
                        partitions: description(script).partitions,
                    }]
                } else {
                    Vec::new()
                },
            }
        }
        Request::Produce { partition, .. } => {
            if !leads(script, partition) {
                let refusal = not_leader(script, partition);
                if script.heal_metadata_on_refusal {
                    script.metadata_leaders = script.leaders.clone();
                }
                return refusal;
            }
            let mut base_offset = None;
            for batch in split_batches(payload) {
                let batch = batch.expect("valid batch");
                let records = batch.records().expect("valid records");
                let values = script.values.entry(partition).or_default();
                let base = values.len() as u64;
                base_offset.get_or_insert(base);
                let mut bytes = BytesMut::from(&batch.bytes()[..]);
                stamp(&mut bytes, base, 1);
                script
                    .batches
                    .entry(partition)
                    .or_default()
                    .push((base, bytes.freeze()));
                let values = script.values.entry(partition).or_default();
                for record in records {
                    values.push(record.value.unwrap_or_default());
                }
            }
            Response::Produce {
                base_offset: base_offset.unwrap_or(0),
                log_append_time_ms: None,
                log_start_offset: 0,
            }
        }
        Request::Fetch {
            partition, offset, ..
        } => {
            if !leads(script, partition) {
                return not_leader(script, partition);
            }
            let end = script.values.get(&partition).map_or(0, Vec::len) as u64;
            let batches: Vec<Bytes> = script
                .batches
                .get(&partition)
                .into_iter()
                .flatten()
                .filter(|(base, bytes)| {
                    // The batch's whole span (a compacted batch may hold fewer records, or none).
                    let next = split_batches(bytes.clone())
                        .next()
                        .and_then(Result::ok)
                        .map_or(*base, |batch| batch.header().next_offset());
                    next > offset
                })
                .take(script.fetch_batches_max.unwrap_or(usize::MAX))
                .map(|(_, bytes)| bytes.clone())
                .collect();
            // The batches travel as the payload: returned through `payload` below.
            script.pending_payload(batches.concat().into());
            Response::Fetch {
                high_watermark: end,
                log_start_offset: 0,
                batch_count: batches.len() as u32,
            }
        }
        Request::ListOffsets {
            partition, spec, ..
        } => {
            if !leads(script, partition) {
                return not_leader(script, partition);
            }
            let end = script.values.get(&partition).map_or(0, Vec::len) as u64;
            Response::ListOffsets {
                offset: if spec == OffsetSpec::Earliest { 0 } else { end },
                timestamp: None,
            }
        }
        Request::CreateTopic {
            name,
            partitions,
            replication_factor,
            ..
        } => {
            if id != script.controller {
                let error = BrokerError::new(ErrorCode::NotController, "not the controller");
                return if script.hints {
                    Response::ErrorWithLeader {
                        error,
                        leader: Some(script.controller),
                    }
                } else {
                    Response::Error(error)
                };
            }
            script.created.push((name.clone(), id));
            Response::CreateTopic {
                topic: TopicDescription {
                    name,
                    replication_factor,
                    config: Vec::new(),
                    partitions: (0..partitions)
                        .map(|partition| partition_metadata(script, partition))
                        .collect(),
                },
            }
        }
        Request::DescribeTopic { .. } if script.lagging.contains(&id) => {
            Response::error(ErrorCode::UnknownTopic, "unknown topic \"t\"")
        }
        Request::DescribeTopic { .. } => Response::DescribeTopic {
            topic: description(script),
        },
        Request::PartitionStatus { partition, .. } => {
            if !leads(script, partition) {
                return not_leader(script, partition);
            }
            let end = script.values.get(&partition).map_or(0, Vec::len) as u64;
            Response::PartitionStatus(PartitionStatusReport {
                partition,
                leader: Some(id),
                leader_term: 7,
                replicas: vec![1, 2, 3],
                in_sync_replicas: vec![id],
                log_start_offset: 0,
                high_watermark: end,
                // One record appended but not yet committed.
                log_end_offset: end + 1,
            })
        }
        Request::ClusterStatus => Response::ClusterStatus {
            controller_id: Some(script.controller),
            brokers: script
                .addresses
                .iter()
                .map(|(broker, address)| BrokerStatus {
                    broker_id: *broker,
                    address: address.clone(),
                    alive: !script.dead.contains(broker),
                })
                .collect(),
        },
        other => Response::error(ErrorCode::InvalidRequest, format!("unscripted {other:?}")),
    }
}

impl Script {
    /// A fetch's batches, handed from `answer` to `serve` (which writes them as the payload).
    fn pending_payload(&mut self, payload: Bytes) {
        self.fetch_payload = Some(payload);
    }
}

async fn serve(runtime: Runtime, mut stream: TcpStream, script: Shared, id: u32) {
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
        let (response, payload, delay) = {
            let mut script = lock(&script);
            if script.dead.contains(&id) {
                // A crashed node: the connection drops, nothing is answered.
                return;
            }
            let response = answer(&mut script, id, envelope.request, payload);
            let delay = script
                .fetch_delay
                .filter(|_| matches!(response, Response::Fetch { .. }));
            (
                response,
                script.fetch_payload.take().unwrap_or_default(),
                delay,
            )
        };
        if let Some(delay) = delay {
            runtime.sleep(delay).await;
        }
        let mut out = BytesMut::new();
        let envelope = ResponseEnvelope {
            correlation_id: envelope.correlation_id,
            response,
        };
        if protocol::encode_response(&encoder, &envelope, &payload, &mut out).is_err()
            || stream.write_all(&out).await.is_err()
            || stream.flush().await.is_err()
        {
            return;
        }
    }
}

fn producer_config() -> ProducerConfig {
    ProducerConfig::default()
        .retry_backoff(Duration::from_millis(5))
        .retry_backoff_max(Duration::from_millis(20))
        .linger(Duration::from_millis(1))
        .request_timeout(Duration::from_secs(5))
        .delivery_timeout(Duration::from_secs(10))
}

/// Send `count` values to partition 0 and wait for every acknowledgement; returns offsets.
async fn produce(
    runtime: &Runtime,
    producer: &Producer,
    prefix: &str,
    count: usize,
) -> anyhow::Result<Vec<u64>> {
    let mut deliveries = Vec::new();
    for index in 0..count {
        let record = ProducerRecord::new(TOPIC, format!("{prefix}{index}")).with_partition(0);
        deliveries.push(producer.send(record).await?);
    }
    let mut offsets = Vec::new();
    for delivery in deliveries {
        offsets.push(runtime.timeout(TEST_TIMEOUT, delivery).await??.offset);
    }
    Ok(offsets)
}

fn one_partition(leader: u32, metadata_leader: u32) -> Script {
    Script {
        leaders: BTreeMap::from([(0, leader)]),
        metadata_leaders: BTreeMap::from([(0, metadata_leader)]),
        hints: true,
        controller: 1,
        metadata_controller: Some(1),
        ..Script::default()
    }
}

#[tokio::test]
async fn produce_and_fetch_follow_not_leader_hints() -> anyhow::Result<()> {
    let runtime = Runtime::new(1);
    // Metadata says broker 1 leads; broker 2 does, and broker 1 says so.
    let script = start(&runtime, 3, one_partition(2, 1)).await?;
    let bootstrap = address(&script, 1);
    let producer = Producer::connect(&bootstrap, producer_config()).await?;
    assert_eq!(
        produce(&runtime, &producer, "v", 20).await?,
        (0..20).collect::<Vec<_>>()
    );
    producer.close().await?;
    {
        let script = lock(&script);
        assert_eq!(
            script.values[&0].len(),
            20,
            "every record stored by the leader"
        );
    }
    assert!(asked(&script, 2, "produce") >= 1);
    // The hint was enough: metadata was asked once (the first lookup), not after the refusal.
    assert_eq!(
        asked(&script, 1, "metadata"),
        1,
        "{:?}",
        lock(&script).asked
    );

    // The consumer follows the same hint.
    let mut consumer = Consumer::connect(&bootstrap, ConsumerConfig::default()).await?;
    consumer.assign(TOPIC, &[0], StartOffset::Offset(0)).await?;
    let mut values = Vec::new();
    for _ in 0..100 {
        for record in consumer.poll(Duration::from_millis(200)).await? {
            values.push(record.value.unwrap_or_default());
        }
        if values.len() >= 20 {
            break;
        }
    }
    let expected: Vec<Bytes> = (0..20)
        .map(|index| Bytes::from(format!("v{index}")))
        .collect();
    assert_eq!(values, expected);
    assert!(asked(&script, 2, "fetch") >= 1);
    Ok(())
}

#[tokio::test]
async fn a_refusal_without_hint_refreshes_metadata() -> anyhow::Result<()> {
    let runtime = Runtime::new(2);
    let mut plan = one_partition(3, 1);
    plan.hints = false;
    plan.heal_metadata_on_refusal = true;
    let script = start(&runtime, 3, plan).await?;
    let producer = Producer::connect(&address(&script, 1), producer_config()).await?;
    assert_eq!(
        produce(&runtime, &producer, "v", 5).await?,
        (0..5).collect::<Vec<_>>()
    );
    producer.close().await?;
    assert_eq!(lock(&script).values[&0].len(), 5);
    let metadata: usize = (1..=3).map(|id| asked(&script, id, "metadata")).sum();
    assert!(
        metadata >= 2,
        "metadata asked again after the refusal: {metadata}"
    );
    Ok(())
}

#[tokio::test]
async fn a_dead_leader_and_a_dead_first_bootstrap_entry() -> anyhow::Result<()> {
    let runtime = Runtime::new(3);
    let script = start(&runtime, 3, one_partition(1, 1)).await?;
    // The first entry of the bootstrap list is dead: the second answers.
    let bootstrap = format!("{},{}", dead_address().await?, address(&script, 1));
    let admin = Admin::connect(&bootstrap).await?;
    assert_eq!(admin.cluster_status().await?.controller, Some(1));
    let producer = Producer::connect(&bootstrap, producer_config()).await?;
    assert_eq!(
        produce(&runtime, &producer, "a", 5).await?,
        (0..5).collect::<Vec<_>>()
    );

    // Broker 1 crashes; broker 2 takes over and metadata (from the live brokers) says so.
    {
        let mut script = lock(&script);
        script.dead.insert(1);
        script.leaders.insert(0, 2);
        // The script's log is the partition's, so broker 2 has what 1 acknowledged.
        script.metadata_leaders.insert(0, 2);
    }
    let offsets = produce(&runtime, &producer, "b", 5).await?;
    assert_eq!(offsets, (5..10).collect::<Vec<_>>());
    producer.close().await?;
    assert!(asked(&script, 2, "produce") >= 1);
    let live_metadata = asked(&script, 2, "metadata") + asked(&script, 3, "metadata");
    assert!(live_metadata >= 1, "metadata refreshed from a live broker");

    // A new client whose bootstrap list starts with the crashed node still gets in.
    let bootstrap = format!("{},{}", address(&script, 1), address(&script, 3));
    let admin = Admin::connect(&bootstrap).await?;
    let status = admin.cluster_status().await?;
    let alive: Vec<(u32, bool)> = status
        .brokers
        .iter()
        .map(|b| (b.broker_id, b.alive))
        .collect();
    assert_eq!(alive, [(1, false), (2, true), (3, true)]);
    Ok(())
}

#[tokio::test]
async fn admin_writes_follow_not_controller_hints() -> anyhow::Result<()> {
    let runtime = Runtime::new(4);
    // Metadata names broker 1 as the controller; broker 3 is, and broker 1 says so.
    let mut plan = one_partition(1, 1);
    plan.controller = 3;
    plan.metadata_controller = Some(1);
    let script = start(&runtime, 3, plan).await?;
    let admin = Admin::connect(&address(&script, 2)).await?;
    let created = admin.create_topic("orders", 2, 3).await?;
    assert_eq!(created.partitions.len(), 2);
    assert_eq!(lock(&script).created, [("orders".to_owned(), 3)]);
    Ok(())
}

#[tokio::test]
async fn admin_writes_find_the_controller_through_metadata_without_hints() -> anyhow::Result<()> {
    let runtime = Runtime::new(5);
    let mut plan = one_partition(1, 1);
    plan.hints = false;
    plan.controller = 2;
    // Metadata names no controller yet (an election under way) ...
    plan.metadata_controller = None;
    let script = start(&runtime, 3, plan).await?;
    let admin = Admin::connect(&address(&script, 1)).await?;
    // ... then, a moment later, the new one.
    let later = script.clone();
    let timer = runtime.clone();
    drop(runtime.spawn(async move {
        timer.sleep(Duration::from_millis(100)).await;
        lock(&later).metadata_controller = Some(2);
    }));
    admin.create_topic("orders", 1, 3).await?;
    assert_eq!(lock(&script).created, [("orders".to_owned(), 2)]);
    Ok(())
}

#[tokio::test]
async fn describe_asks_each_leader_and_falls_back_to_metadata() -> anyhow::Result<()> {
    let runtime = Runtime::new(6);
    let plan = Script {
        leaders: BTreeMap::from([(0, 1), (1, 2), (2, 3)]),
        metadata_leaders: BTreeMap::from([(0, 1), (1, 2), (2, 3)]),
        hints: true,
        controller: 1,
        metadata_controller: Some(1),
        ..Script::default()
    };
    let script = start(&runtime, 3, plan).await?;
    lock(&script)
        .values
        .insert(1, vec![Bytes::from("x"), Bytes::from("y")]);
    lock(&script).dead.insert(3);
    let admin = Admin::connect(&address(&script, 1)).await?;
    let topic = admin.describe_topic(TOPIC).await?;
    type Figures = (u32, Option<u32>, u64, u64, Option<u64>);
    let figures: Vec<Figures> = topic
        .partitions
        .iter()
        .map(|p| {
            (
                p.partition,
                p.leader,
                p.leader_term,
                p.high_watermark,
                p.log_end_offset,
            )
        })
        .collect();
    assert_eq!(
        figures,
        [
            (0, Some(1), 7, 0, Some(1)),
            (1, Some(2), 7, 2, Some(3)),
            // Broker 3 is dead: metadata's figures, no log end offset.
            (2, Some(3), 1, 0, None),
        ]
    );
    // Replicas stay in assignment order (preferred leader first), from metadata, although
    // the leaders' reports list them sorted.
    let replicas: Vec<Vec<u32>> = topic
        .partitions
        .iter()
        .map(|p| p.replicas.clone())
        .collect();
    assert_eq!(replicas, [vec![1, 2, 3], vec![2, 3, 1], vec![3, 1, 2]]);
    assert_eq!(asked(&script, 2, "partition-status"), 1);
    Ok(())
}

#[tokio::test]
async fn retries_stop_at_the_delivery_timeout() -> anyhow::Result<()> {
    let runtime = Runtime::new(7);
    // Nobody leads partition 0 and nobody knows who will: every produce is refused.
    let mut plan = one_partition(9, 1);
    plan.hints = false;
    let script = start(&runtime, 1, plan).await?;
    let delivery_timeout = Duration::from_millis(400);
    let config = producer_config().delivery_timeout(delivery_timeout);
    let producer = Producer::connect(&address(&script, 1), config).await?;
    let started = runtime.now();
    let delivery = producer
        .send(ProducerRecord::new(TOPIC, "doomed").with_partition(0))
        .await?;
    let error = runtime
        .timeout(TEST_TIMEOUT, delivery)
        .await?
        .expect_err("no leader, ever");
    let elapsed = runtime.now().duration_since(started);
    assert_eq!(error.code(), Some(ErrorCode::NotLeader), "{error}");
    assert!(matches!(error, ClientError::Broker(_)));
    assert!(elapsed >= delivery_timeout, "gave up after {elapsed:?}");
    assert!(
        elapsed < delivery_timeout * 5,
        "gave up only after {elapsed:?}"
    );
    // Retried many times meanwhile (the default retries_max does not stop it first).
    assert!(asked(&script, 1, "produce") > 3);
    Ok(())
}

#[tokio::test]
async fn a_silent_first_bootstrap_entry_costs_at_most_the_connect_timeout() -> anyhow::Result<()> {
    let runtime = Runtime::new(8);
    let script = start(&runtime, 1, one_partition(1, 1)).await?;
    // A node that accepts connections and never answers (a paused process).
    let silent = TcpListener::bind("127.0.0.1:0").await?;
    let silent_address = silent.local_addr()?.to_string();
    drop(runtime.spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    }));
    let started = runtime.now();
    // The admin's request timeout is 30 s; the silent node costs the 10 s connect limit only.
    let admin = Admin::connect(&format!("{silent_address},{}", address(&script, 1))).await?;
    let elapsed = runtime.now().duration_since(started);
    assert!(
        elapsed < Duration::from_secs(15),
        "connected after {elapsed:?}"
    );
    assert_eq!(admin.cluster_status().await?.controller, Some(1));
    Ok(())
}

#[tokio::test]
async fn a_topic_unknown_to_a_lagging_broker_is_looked_up_at_the_controller() -> anyhow::Result<()>
{
    let runtime = Runtime::new(9);
    // Broker 1 has not applied the topic's creation yet; the controller (2) has.
    let mut plan = one_partition(3, 3);
    plan.controller = 2;
    plan.metadata_controller = Some(2);
    plan.lagging = BTreeSet::from([1]);
    let script = start(&runtime, 3, plan).await?;
    let producer = Producer::connect(&address(&script, 1), producer_config()).await?;
    assert_eq!(produce(&runtime, &producer, "v", 3).await?, [0, 1, 2]);
    producer.close().await?;
    assert_eq!(asked(&script, 2, "metadata"), 1, "the controller was asked");
    // So is an admin's describe, right after a create (the admin knows no controller yet).
    let admin = Admin::connect(&address(&script, 1)).await?;
    assert_eq!(admin.describe_topic(TOPIC).await?.partitions.len(), 1);
    assert_eq!(asked(&script, 2, "describe-topic"), 1);
    // Once the controller is known, describes go there first.
    assert_eq!(admin.describe_topic(TOPIC).await?.partitions.len(), 1);
    assert_eq!(asked(&script, 2, "describe-topic"), 2);
    assert_eq!(asked(&script, 1, "describe-topic"), 1);
    // A topic no broker knows is still unknown, at once.
    let producer = Producer::connect(&address(&script, 1), producer_config()).await?;
    lock(&script).lagging = BTreeSet::from([1, 2, 3]);
    let error = producer
        .send(ProducerRecord::new(TOPIC, "x"))
        .await
        .expect_err("unknown topic");
    assert_eq!(error.code(), Some(ErrorCode::UnknownTopic), "{error}");
    Ok(())
}

#[tokio::test]
async fn attempts_without_a_leader_are_not_counted_as_bytes_sent() -> anyhow::Result<()> {
    let runtime = Runtime::new(10);
    // Partition 0 has no leader yet (an election under way): every attempt fails before a
    // request leaves ...
    let script = start(&runtime, 1, one_partition(1, 0)).await?;
    let producer = Producer::connect(&address(&script, 1), producer_config()).await?;
    let value = "x".repeat(1_000);
    let mut deliveries = Vec::new();
    for _ in 0..10 {
        let record = ProducerRecord::new(TOPIC, value.clone()).with_partition(0);
        deliveries.push(producer.send(record).await?);
    }
    // ... for a while: the producer retries meanwhile.
    runtime.sleep(Duration::from_millis(300)).await;
    lock(&script).metadata_leaders.insert(0, 1);
    for delivery in deliveries {
        runtime.timeout(TEST_TIMEOUT, delivery).await??;
    }
    let sent = producer.batch_bytes_sent();
    assert!(
        (10_000..20_000).contains(&sent),
        "{sent} batch bytes counted as sent for 10 records of 1000 bytes sent once"
    );
    producer.close().await?;
    Ok(())
}

/// A replicated compacted log keeps one record-less batch per emptied entry, and a broker's
/// read stops at a segment end, so a consumer may get many fetch answers in a row without a
/// record that still move its position. A fetch answered while the caller was away (between
/// two polls) must be followed by the next one at once, not by a sleep to the poll's deadline:
/// once, the drain of a simulated cluster read such a run one fetch per poll and did not reach
/// the end offsets in time (issue 12, `cargo sim --seed 12 --cluster 3 --compacted`).
#[tokio::test]
async fn a_run_of_record_less_compacted_batches_is_read_without_waiting_per_poll(
) -> anyhow::Result<()> {
    const EMPTY_BATCHES: u64 = 300;
    const POLLS_MAX: usize = 120;
    let runtime = Runtime::new(7);
    let batch = |base: u64, values: &[&'static str]| -> anyhow::Result<Bytes> {
        let records = values
            .iter()
            .zip(base..)
            .map(|(value, offset)| brook_wire::Record {
                offset,
                timestamp: 1_000,
                key: Some(Bytes::from_static(b"k")),
                value: Some(Bytes::from_static(value.as_bytes())),
                headers: Vec::new(),
            })
            .collect();
        Ok(brook_wire::batch::CompactedBatch {
            base_offset: base,
            last_offset: base,
            term: 1,
            first_timestamp: 1_000,
            max_timestamp: 1_000,
            delete_horizon: false,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            records,
        }
        .encode()?
        .freeze())
    };
    let mut plan = one_partition(1, 1);
    plan.fetch_batches_max = Some(1);
    // Slow enough that a poll ends with a fetch in flight, answered while the caller is away.
    plan.fetch_delay = Some(Duration::from_millis(2));
    let mut batches = Vec::new();
    for base in 0..EMPTY_BATCHES {
        batches.push((base, batch(base, &[])?));
    }
    batches.push((EMPTY_BATCHES, batch(EMPTY_BATCHES, &["latest"])?));
    plan.batches.insert(0, batches);
    // The high watermark is the value count: one per offset.
    plan.values
        .insert(0, vec![Bytes::new(); EMPTY_BATCHES as usize + 1]);
    let script = start(&runtime, 1, plan).await?;
    let bootstrap = address(&script, 1);
    let mut consumer = Consumer::connect(&bootstrap, ConsumerConfig::default()).await?;
    consumer.assign(TOPIC, &[0], StartOffset::Offset(0)).await?;
    let mut read = Vec::new();
    for _ in 0..POLLS_MAX {
        for record in consumer.poll(Duration::from_millis(50)).await? {
            read.push((record.offset, record.value.unwrap_or_default()));
        }
        if !read.is_empty() {
            break;
        }
        // The caller's own work between polls (the drain asks for the end offsets here).
        runtime.sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        read,
        [(EMPTY_BATCHES, Bytes::from_static(b"latest"))],
        "position {:?} after {POLLS_MAX} polls, {} fetches",
        consumer.position(TOPIC, 0),
        asked(&script, 1, "fetch")
    );
    assert_eq!(consumer.position(TOPIC, 0), Some(EMPTY_BATCHES + 1));
    Ok(())
}
