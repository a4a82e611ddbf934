//! A full disk, for real: a brook node whose data directory is a small tmpfs is fed records
//! (acks=all) until it refuses them with a clear "no space left on device" error, then
//! SIGKILLed and restarted on the still-full filesystem. It must start, serve every
//! acknowledged record, keep refusing writes while the disk is full, and take writes again once
//! space is freed (a filler file, written before the run, is deleted).
//!
//! Mounting a tmpfs needs root (CI runs as root). Without it the test fails loudly, unless
//! `BROOK_SKIP_ROOT_TESTS=1` says to skip it.
#![allow(clippy::disallowed_methods)] // real processes and the real clock: not simulated code

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use brook_actors::runtime::Runtime;
use brook_client::{
    Acks, Admin, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, StartOffset,
};
use brook_e2e::{work_dir, Broker};

const TOPIC: &str = "full";
/// Size of the tmpfs holding the data directory.
const FILESYSTEM_BYTES: u64 = 24 * 1024 * 1024;
/// Size of the file written before the run and deleted to free space.
const FILLER_BYTES: usize = 4 * 1024 * 1024;
/// Bytes of each record's value.
const VALUE_BYTES: usize = 1000;
/// Records sent before awaiting their deliveries.
const WINDOW: u64 = 64;
/// Bound on records sent while filling (the filesystem holds well under this many).
const SENDS_MAX: u64 = 100_000;
/// Bound on filling the disk.
const FILL_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on one send or delivery.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on reading everything back.
const CONSUME_TIMEOUT: Duration = Duration::from_secs(60);

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mount a tmpfs of `bytes` at `path`; `None` if the test is to be skipped.
    fn mount(path: &Path, bytes: u64) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).expect("create the mount point");
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(path)
            .output()
            .expect("run mount");
        if output.status.success() {
            return Some(Tmpfs {
                path: path.to_path_buf(),
            });
        }
        let reason = String::from_utf8_lossy(&output.stderr).trim().to_string();
        if std::env::var("BROOK_SKIP_ROOT_TESTS").as_deref() == Ok("1") {
            eprintln!("SKIPPED (BROOK_SKIP_ROOT_TESTS=1): cannot mount a tmpfs: {reason}");
            return None;
        }
        panic!(
            "cannot mount a tmpfs at {} ({reason}); this test needs root (CI runs it as \
             root). Set BROOK_SKIP_ROOT_TESTS=1 to skip it knowingly.",
            path.display()
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|status| status.success());
        if !unmounted {
            // A process may still hold a file open: detach it now, it goes when released.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// The value of record `index`: its number, padded to VALUE_BYTES for the records that fill
/// the disk in big batches, unpadded for those that fill the last bytes one at a time.
fn value(index: u64) -> String {
    let mut text = format!("value-{index}-");
    if index < SMALL_RECORDS_FROM {
        let padding = VALUE_BYTES - text.len();
        text.push_str(&".".repeat(padding));
    }
    text
}

/// Records from this index on are small (see [`value`]).
const SMALL_RECORDS_FROM: u64 = 1_000_000;

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn producer_config() -> ProducerConfig {
    ProducerConfig::default().acks(Acks::All).retries_max(0)
}

/// Send records `first..` in windows, each window awaited, until one is refused. Returns the
/// acknowledged records (index -> offset) and the first refusal's text (`None` if all of
/// `count` were acknowledged).
async fn produce(
    runtime: &Runtime,
    bootstrap: &str,
    first: u64,
    count: u64,
    window: u64,
    deadline: Instant,
) -> (BTreeMap<u64, u64>, Option<String>) {
    let producer = Producer::connect(bootstrap, producer_config())
        .await
        .expect("producer connects");
    let mut acked = BTreeMap::new();
    let mut next = first;
    while next < first + count {
        assert!(
            Instant::now() < deadline,
            "still producing at record {next} at the deadline ({} acknowledged)",
            acked.len()
        );
        let end = (next + window).min(first + count);
        let mut deliveries = Vec::new();
        let mut refusal = None;
        for index in next..end {
            let record = ProducerRecord::new(TOPIC, value(index));
            match runtime
                .timeout(OPERATION_TIMEOUT, producer.send(record))
                .await
                .expect("a send neither succeeded nor failed in time")
            {
                Ok(delivery) => deliveries.push((index, delivery)),
                Err(error) => {
                    refusal = Some(error.to_string());
                    break;
                }
            }
        }
        for (index, delivery) in deliveries {
            match runtime
                .timeout(OPERATION_TIMEOUT, delivery)
                .await
                .expect("a delivery neither succeeded nor failed in time")
            {
                Ok(metadata) => {
                    acked.insert(index, metadata.offset);
                }
                Err(error) => {
                    refusal.get_or_insert(error.to_string());
                }
            }
        }
        if refusal.is_some() {
            return (acked, refusal);
        }
        next = end;
    }
    (acked, None)
}

/// Every record of the (one-partition) topic up to its high watermark: offset -> value.
async fn read_everything(bootstrap: &str) -> BTreeMap<u64, String> {
    let admin = Admin::connect(bootstrap).await.expect("admin connects");
    let description = admin.describe_topic(TOPIC).await.expect("describe topic");
    let end = description.partitions[0].high_watermark;
    let mut consumer = Consumer::connect(bootstrap, ConsumerConfig::default())
        .await
        .expect("consumer connects");
    consumer
        .assign_all(TOPIC, StartOffset::Earliest)
        .await
        .expect("assign");
    let mut records = BTreeMap::new();
    let mut next = 0;
    let deadline = Instant::now() + CONSUME_TIMEOUT;
    for _ in 0..1_000_000 {
        if next >= end {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "read up to offset {next} of {end} within {CONSUME_TIMEOUT:?}"
        );
        for record in consumer
            .poll(Duration::from_millis(200))
            .await
            .expect("poll")
        {
            let bytes = record.value.expect("every record has a value");
            records.insert(
                record.offset,
                String::from_utf8(bytes.to_vec()).expect("utf-8"),
            );
            next = record.offset + 1;
        }
    }
    assert!(next >= end, "gave up reading at offset {next} of {end}");
    records
}

fn assert_no_space(refusal: Option<String>, when: &str) {
    let refusal = refusal.unwrap_or_else(|| panic!("{when}: every record was acknowledged"));
    assert!(
        refusal.contains("no space left on device"),
        "{when}: the refusal must say the disk is full, got: {refusal}"
    );
}

fn assert_all_there(acked: &BTreeMap<u64, u64>, read: &BTreeMap<u64, String>) {
    let mut lost = Vec::new();
    for (index, offset) in acked {
        if read.get(offset) != Some(&value(*index)) {
            lost.push((*index, *offset));
        }
    }
    assert!(
        lost.is_empty(),
        "lost-write: {} of {} acknowledged records not read back where acknowledged, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
}

#[test]
fn a_node_with_a_full_disk_restarts_serves_everything_and_writes_once_space_is_freed() {
    let work = work_dir();
    let Some(tmpfs) = Tmpfs::mount(&work.path().join("mnt"), FILESYSTEM_BYTES) else {
        return;
    };
    let filler = tmpfs.path.join("filler");
    std::fs::write(&filler, vec![0u8; FILLER_BYTES]).expect("write the filler file");
    let data_dir = tmpfs.path.join("data");
    let tokio = tokio_runtime();
    let runtime = Runtime::new(0xd15c);

    // Fill the disk: the broker refuses with a clear error. Big batches first, then small
    // records one at a time fill what a refused big batch left free, to the last page.
    let mut broker = Broker::dev(work.path(), &data_dir);
    let deadline = Instant::now() + FILL_TIMEOUT;
    let (mut acked, refusal) = tokio.block_on(async {
        Admin::connect(&broker.bootstrap())
            .await
            .expect("admin connects")
            .create_topic(TOPIC, 1, 1)
            .await
            .expect("create topic");
        produce(
            &runtime,
            &broker.bootstrap(),
            0,
            SENDS_MAX,
            WINDOW,
            deadline,
        )
        .await
    });
    assert_no_space(refusal, "filling the disk");
    assert!(
        acked.len() > 5_000,
        "only {} records fit on the disk",
        acked.len()
    );
    let (small, refusal) = tokio.block_on(produce(
        &runtime,
        &broker.bootstrap(),
        SMALL_RECORDS_FROM,
        SENDS_MAX,
        1,
        deadline,
    ));
    assert_no_space(refusal, "filling the last bytes");
    acked.extend(small);
    eprintln!(
        "{} records acknowledged before the disk was full",
        acked.len()
    );
    broker.kill();

    // Restart on the full disk: the node starts, serves everything, refuses writes.
    let mut broker = Broker::dev(work.path(), &data_dir);
    let next_index = acked.keys().next_back().map_or(0, |last| last + 1) + SMALL_RECORDS_FROM;
    tokio.block_on(async {
        let read = read_everything(&broker.bootstrap()).await;
        assert_all_there(&acked, &read);
        let (more, refusal) = produce(
            &runtime,
            &broker.bootstrap(),
            next_index,
            WINDOW,
            WINDOW,
            Instant::now() + FILL_TIMEOUT,
        )
        .await;
        assert_no_space(refusal, "producing to a restarted node on a full disk");
        acked.extend(more);
    });
    assert!(broker.is_running(), "{}", broker.stderr());

    // Free space: writes are taken again, and everything is there.
    std::fs::remove_file(&filler).expect("delete the filler file");
    tokio.block_on(async {
        let (more, refusal) = produce(
            &runtime,
            &broker.bootstrap(),
            next_index + WINDOW,
            100,
            WINDOW,
            Instant::now() + FILL_TIMEOUT,
        )
        .await;
        assert_eq!(refusal, None, "writes after space was freed");
        assert_eq!(more.len(), 100);
        acked.extend(more);
        let read = read_everything(&broker.bootstrap()).await;
        assert_all_there(&acked, &read);
    });
    broker.kill();
    drop(broker);
    drop(tmpfs);
}
