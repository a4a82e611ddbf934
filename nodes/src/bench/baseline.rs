//! The machine's own limits, measured in the same run as the benchmark they judge:
//! loopback TCP between two tasks (no protocol, large writes), and sequential appends on the
//! data directory's disk through [`FsDisk`] (the broker's own file layer), with and without
//! fsync.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use brook_actors::runtime::Runtime;
use brook_storage::{Disk, FsDisk, OpenMode};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Size of each loopback write and read.
const LOOPBACK_CHUNK_BYTES: usize = 1024 * 1024;
/// Stop the loopback transfer after this many bytes even if time remains.
const LOOPBACK_BYTES_MAX: u64 = 256 * 1024 * 1024 * 1024;
/// Size of each sequential append.
const DISK_CHUNK_BYTES: usize = 1024 * 1024;
/// Bytes appended without fsync (then synced once): enough to get past the first burst into
/// the page cache, small enough not to leave the disk busy for long afterwards.
const DISK_WRITEBACK_BYTES: u64 = 1024 * 1024 * 1024;
/// Most bytes of the sustained-append measurement.
const DISK_SUSTAINED_BYTES_MAX: u64 = 16 * 1024 * 1024 * 1024;
/// Most bytes appended with an fsync after each 1 MiB append.
const DISK_FSYNC_BYTES_MAX: u64 = 1024 * 1024 * 1024;
/// Size of each append of the fsync-rate measurement.
const FSYNC_RATE_CHUNK_BYTES: usize = 4096;
/// Most fsyncs of the fsync-rate measurement.
const FSYNC_RATE_COUNT_MAX: u64 = 100_000;

/// What `brook bench baseline` measured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Baseline {
    /// Raw loopback TCP: one task writes 1 MiB chunks, another reads them.
    pub loopback_bytes_per_sec: f64,
    pub loopback_secs: f64,
    /// 1 MiB appends with no fsync, sustained for `disk_sustained_secs` (or up to 16 GiB):
    /// what a bare loop appending to the data disk keeps up over a benchmark's duration,
    /// dirty-page throttling and page-cache allocation included. A broker appends every byte
    /// it is sent, so acks=0/1 cases are judged against the lesser of this and loopback.
    #[serde(default)]
    pub disk_sustained_bytes_per_sec: f64,
    #[serde(default)]
    pub disk_sustained_bytes: u64,
    #[serde(default)]
    pub disk_sustained_secs: f64,
    /// 1 MiB appends into the page cache (no fsync), over `disk_writeback_bytes`.
    pub disk_write_bytes_per_sec: f64,
    /// The same bytes over the time of the appends plus one fsync at the end: what the
    /// device sustains once the page cache stops absorbing writes.
    pub disk_writeback_bytes_per_sec: f64,
    pub disk_writeback_bytes: u64,
    /// 1 MiB appends, each followed by an fsync (fdatasync).
    pub disk_fsync_bytes_per_sec: f64,
    /// 4 KiB appends, each followed by an fsync: how many fsyncs per second the disk does.
    pub fsyncs_per_sec: f64,
    /// Where the disk was measured.
    pub data_dir: PathBuf,
    /// Dirty bytes the kernel lets the page cache hold before writers are throttled
    /// (`vm.dirty_bytes`, or `vm.dirty_ratio` of the available memory), if known.
    pub dirty_limit_bytes: Option<u64>,
}

impl Baseline {
    /// Read the JSON written by `brook bench baseline --output json` (the baseline object
    /// alone, or a report carrying one under `baseline`).
    pub fn from_file(path: &Path) -> anyhow::Result<Baseline> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading baseline file {}", path.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("parsing baseline file {}", path.display()))?;
        let object = value.get("baseline").cloned().unwrap_or(value);
        serde_json::from_value(object)
            .with_context(|| format!("baseline file {} lacks baseline fields", path.display()))
    }

    pub fn print_table(&self) {
        let mb = |bytes: f64| bytes / (1024.0 * 1024.0);
        println!("baseline (measured now, on this machine):");
        println!(
            "  loopback TCP (1 MiB writes, {:.1} s):        {:>9.1} MB/sec",
            self.loopback_secs,
            mb(self.loopback_bytes_per_sec)
        );
        println!(
            "  sequential append, sustained {:>5.1} s:       {:>9.1} MB/sec ({:.1} GiB)",
            self.disk_sustained_secs,
            mb(self.disk_sustained_bytes_per_sec),
            self.disk_sustained_bytes as f64 / (1024.0 * 1024.0 * 1024.0)
        );
        println!(
            "  sequential append, page cache (no fsync):   {:>9.1} MB/sec",
            mb(self.disk_write_bytes_per_sec)
        );
        println!(
            "  sequential append + final fsync ({} MiB):  {:>9.1} MB/sec (writeback)",
            self.disk_writeback_bytes / (1024 * 1024),
            mb(self.disk_writeback_bytes_per_sec)
        );
        println!(
            "  sequential append, fsync every 1 MiB:       {:>9.1} MB/sec",
            mb(self.disk_fsync_bytes_per_sec)
        );
        println!(
            "  fsync rate (4 KiB append + fsync):          {:>9.0} fsyncs/sec",
            self.fsyncs_per_sec
        );
        match self.dirty_limit_bytes {
            Some(limit) => println!(
                "  page cache dirty limit:                     {:>9.1} MB (disk: {})",
                mb(limit as f64),
                self.data_dir.display()
            ),
            None => println!("  disk: {}", self.data_dir.display()),
        }
    }
}

/// Measure every baseline: loopback for `loopback_duration`, then the disk under `data_dir`
/// (files are created in a fresh subdirectory and removed afterwards).
pub async fn measure(
    runtime: &Runtime,
    data_dir: &Path,
    loopback_duration: Duration,
    fsync_duration: Duration,
    sustained_duration: Duration,
) -> anyhow::Result<Baseline> {
    let (loopback_bytes, loopback_elapsed) = loopback(runtime, loopback_duration).await?;
    let disk = {
        let runtime = runtime.clone();
        let data_dir = data_dir.to_path_buf();
        runtime
            .clone()
            .run_blocking(move || disk(&runtime, &data_dir, fsync_duration, sustained_duration))
            .await
            .map_err(|error| anyhow::anyhow!("disk baseline task failed: {error}"))??
    };
    Ok(Baseline {
        loopback_bytes_per_sec: loopback_bytes as f64 / loopback_elapsed.as_secs_f64(),
        loopback_secs: loopback_elapsed.as_secs_f64(),
        disk_sustained_bytes_per_sec: disk.sustained_bytes_per_sec,
        disk_sustained_bytes: disk.sustained_bytes,
        disk_sustained_secs: disk.sustained_secs,
        disk_write_bytes_per_sec: disk.write_bytes_per_sec,
        disk_writeback_bytes_per_sec: disk.writeback_bytes_per_sec,
        disk_writeback_bytes: DISK_WRITEBACK_BYTES,
        disk_fsync_bytes_per_sec: disk.fsync_bytes_per_sec,
        fsyncs_per_sec: disk.fsyncs_per_sec,
        data_dir: data_dir.to_path_buf(),
        dirty_limit_bytes: dirty_limit_bytes(),
    })
}

/// Bytes moved from one task to another over a loopback TCP connection, and the time taken.
async fn loopback(runtime: &Runtime, duration: Duration) -> anyhow::Result<(u64, Duration)> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the loopback baseline listener")?;
    let address = listener.local_addr()?;
    let reader = runtime.spawn(async move {
        let (mut stream, _) = listener.accept().await?;
        let mut buffer = vec![0u8; LOOPBACK_CHUNK_BYTES];
        let mut received = 0u64;
        loop {
            let read = stream.read(&mut buffer).await?;
            if read == 0 {
                return Ok::<u64, std::io::Error>(received);
            }
            received += read as u64;
        }
    });
    let mut stream = TcpStream::connect(address)
        .await
        .context("connecting the loopback baseline")?;
    let _ = stream.set_nodelay(true);
    let chunk = vec![0x5au8; LOOPBACK_CHUNK_BYTES];
    let start = runtime.now();
    let deadline = start + duration;
    let mut sent = 0u64;
    while runtime.now() < deadline && sent < LOOPBACK_BYTES_MAX {
        stream.write_all(&chunk).await?;
        sent += chunk.len() as u64;
    }
    stream.flush().await?;
    stream.shutdown().await?;
    let received = reader
        .await
        .map_err(|error| anyhow::anyhow!("loopback reader failed: {error}"))??;
    let elapsed = runtime.now().duration_since(start);
    anyhow::ensure!(
        received == sent,
        "loopback: sent {sent} bytes, received {received}"
    );
    Ok((received, elapsed))
}

struct DiskFigures {
    sustained_bytes_per_sec: f64,
    sustained_bytes: u64,
    sustained_secs: f64,
    write_bytes_per_sec: f64,
    writeback_bytes_per_sec: f64,
    fsync_bytes_per_sec: f64,
    fsyncs_per_sec: f64,
}

/// Sequential appends through `FsDisk` in a fresh directory under `data_dir` (blocking).
fn disk(
    runtime: &Runtime,
    data_dir: &Path,
    fsync_duration: Duration,
    sustained_duration: Duration,
) -> anyhow::Result<DiskFigures> {
    let fs = FsDisk::new();
    let dir = data_dir.join(format!("brook-bench-baseline-{}", std::process::id()));
    fs.create_dir_all(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let result = disk_in(runtime, &fs, &dir, fsync_duration, sustained_duration);
    let removed = fs.remove_dir_all(&dir);
    let figures = result?;
    removed.with_context(|| format!("removing {}", dir.display()))?;
    Ok(figures)
}

fn disk_in(
    runtime: &Runtime,
    fs: &FsDisk,
    dir: &Path,
    fsync_duration: Duration,
    sustained_duration: Duration,
) -> anyhow::Result<DiskFigures> {
    let chunk: Vec<u8> = (0..DISK_CHUNK_BYTES).map(|i| (i % 251) as u8).collect();

    // 0. Appends with no fsync for as long as a benchmark case runs (bounded in bytes; a full
    //    disk ends it early).
    let file = fs.open(&dir.join("sustained"), OpenMode::CreateNew)?;
    let start = runtime.now();
    let mut sustained = 0u64;
    while sustained < DISK_SUSTAINED_BYTES_MAX
        && runtime.now().duration_since(start) < sustained_duration
    {
        match file.append(&chunk) {
            Ok(_) => sustained += chunk.len() as u64,
            Err(brook_storage::DiskError::NoSpace { .. }) if sustained > 0 => break,
            Err(error) => return Err(error.into()),
        }
    }
    let sustained_elapsed = runtime.now().duration_since(start);
    drop(file);
    fs.remove_file(&dir.join("sustained"))?;

    // 1. Appends into the page cache, then one fsync.
    let file = fs.open(&dir.join("writeback"), OpenMode::CreateNew)?;
    let start = runtime.now();
    let mut written = 0u64;
    while written < DISK_WRITEBACK_BYTES {
        file.append(&chunk)?;
        written += chunk.len() as u64;
    }
    let appended = runtime.now().duration_since(start);
    file.sync()?;
    let synced = runtime.now().duration_since(start);
    drop(file);
    fs.remove_file(&dir.join("writeback"))?;

    // 2. 1 MiB appends, each synced.
    let file = fs.open(&dir.join("fsync"), OpenMode::CreateNew)?;
    let start = runtime.now();
    let mut fsync_written = 0u64;
    while fsync_written < DISK_FSYNC_BYTES_MAX
        && runtime.now().duration_since(start) < fsync_duration
    {
        file.append(&chunk)?;
        file.sync()?;
        fsync_written += chunk.len() as u64;
    }
    let fsync_elapsed = runtime.now().duration_since(start);
    drop(file);
    fs.remove_file(&dir.join("fsync"))?;

    // 3. Small appends, each synced: the fsync rate.
    let file = fs.open(&dir.join("fsync-rate"), OpenMode::CreateNew)?;
    let small = &chunk[..FSYNC_RATE_CHUNK_BYTES];
    let start = runtime.now();
    let mut fsyncs = 0u64;
    let rate_duration = fsync_duration / 2;
    while fsyncs < FSYNC_RATE_COUNT_MAX && runtime.now().duration_since(start) < rate_duration {
        file.append(small)?;
        file.sync()?;
        fsyncs += 1;
    }
    let rate_elapsed = runtime.now().duration_since(start);
    drop(file);
    fs.remove_file(&dir.join("fsync-rate"))?;

    let per_sec = |amount: f64, elapsed: Duration| amount / elapsed.as_secs_f64().max(1e-9);
    Ok(DiskFigures {
        sustained_bytes_per_sec: per_sec(sustained as f64, sustained_elapsed),
        sustained_bytes: sustained,
        sustained_secs: sustained_elapsed.as_secs_f64(),
        write_bytes_per_sec: per_sec(written as f64, appended),
        writeback_bytes_per_sec: per_sec(written as f64, synced),
        fsync_bytes_per_sec: per_sec(fsync_written as f64, fsync_elapsed),
        fsyncs_per_sec: per_sec(fsyncs as f64, rate_elapsed),
    })
}

/// Dirty page cache bytes at which the kernel starts throttling writers (Linux), if known.
fn dirty_limit_bytes() -> Option<u64> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let bytes: u64 = read("/proc/sys/vm/dirty_bytes")?.trim().parse().ok()?;
    if bytes > 0 {
        return Some(bytes);
    }
    let ratio: u64 = read("/proc/sys/vm/dirty_ratio")?.trim().parse().ok()?;
    let meminfo = read("/proc/meminfo")?;
    let available_kib: u64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemAvailable:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(available_kib * 1024 * ratio / 100)
}
