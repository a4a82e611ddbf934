//! `brook`: run a broker node, manage topics, produce and consume from the command line.
//!
//! Noun-verb commands; `-b/--bootstrap HOST:PORT` (or `BROOK_BOOTSTRAP`) says which broker the
//! client commands talk to. Errors are one line on stderr and a non-zero exit.

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use brook_actors::runtime::Runtime;
use brook_client::{
    Acks, Admin, AlterConfig, Compression, ConfigEntry, Consumer, ConsumerConfig, OffsetReset,
    Producer, ProducerConfig, ProducerRecord, StartOffset, TopicDescription,
};
use brook_node::bench::BenchCommand;
use brook_node::{Broker, NodeConfig};
use brook_storage::FsDisk;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "brook",
    version,
    about = "brook: an event-streaming broker whose correctness is demonstrated"
)]
struct Cli {
    /// Broker to talk to (client commands).
    #[arg(
        short = 'b',
        long,
        env = "BROOK_BOOTSTRAP",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    bootstrap: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a single-node broker on embedded defaults (data in ./brook-data).
    Dev {
        #[arg(long, default_value = "./brook-data")]
        data_dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:9092")]
        listen: SocketAddr,
    },
    /// Run a broker node from a config file (flags override the file).
    Node {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        node_id: Option<u32>,
        #[arg(long)]
        listen: Option<SocketAddr>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Create, list, describe and delete topics.
    Topic {
        #[command(subcommand)]
        command: TopicCommand,
    },
    /// Produce one record per line of stdin (lines are bytes: any encoding); prints
    /// {"partition":P,"offset":O} per acknowledged record.
    Produce {
        topic: String,
        #[arg(long, default_value = "all")]
        acks: AcksArg,
        /// Split each line into key and value at the first occurrence of this separator.
        #[arg(long)]
        key_separator: Option<String>,
        /// Send every record to this partition (default: by key hash, or spread when unkeyed).
        #[arg(long)]
        partition: Option<u32>,
        /// Compress batches with this codec: none, gzip, snappy, lz4 or zstd.
        #[arg(long, default_value = "none")]
        compression: Compression,
    },
    /// Print records as JSON lines (topic, partition, offset, timestamp, key, value; a key or
    /// value that is not UTF-8 is base64, with `"key_encoding"`/`"value_encoding": "base64"`).
    Consume {
        topic: String,
        /// Only this partition (default: all).
        #[arg(long)]
        partition: Option<u32>,
        /// earliest, latest or an offset.
        #[arg(long, default_value = "earliest")]
        from: String,
        /// Exit after this many records.
        #[arg(long)]
        max: Option<u64>,
        /// Exit after this long without a record.
        #[arg(long)]
        timeout_ms: Option<u64>,
        #[arg(long, default_value = "json")]
        output: ConsumeOutput,
        /// What to do when the position is outside the log (below the log start after
        /// retention): report the error, or move to the log start / high watermark.
        #[arg(long, default_value = "error")]
        offset_reset: OffsetResetArg,
    },
    /// Benchmarks: produce, consume, e2e against the broker; baseline of this machine.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Subcommand, Debug)]
enum TopicCommand {
    Create {
        name: String,
        /// Number of partitions (default: the broker's `topics.default_partitions`).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        partitions: Option<u32>,
        #[arg(long, default_value_t = 1)]
        replication_factor: u16,
        /// A topic config override, `KEY=VALUE` with Kafka's keys (`retention.ms`,
        /// `segment.bytes`, ...); repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_config_pair)]
        configs: Vec<(String, String)>,
        #[arg(long, default_value = "table")]
        output: Output,
    },
    /// Change a topic's config overrides (applied to its running partitions).
    Alter {
        name: String,
        /// Set an override, `KEY=VALUE`; repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_config_pair)]
        configs: Vec<(String, String)>,
        /// Remove an override (back to the node's default); repeatable.
        #[arg(long = "delete-config", value_name = "KEY")]
        delete_configs: Vec<String>,
        #[arg(long, default_value = "table")]
        output: Output,
    },
    List {
        #[arg(long, default_value = "table")]
        output: Output,
    },
    Describe {
        name: String,
        #[arg(long, default_value = "table")]
        output: Output,
    },
    Delete {
        name: String,
        #[arg(long, default_value = "table")]
        output: Output,
    },
}

fn parse_config_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Table,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ConsumeOutput {
    /// One JSON object per record.
    Json,
    /// The value alone, one per line.
    Text,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum OffsetResetArg {
    /// Report offset_out_of_range naming the log start.
    Error,
    /// Move to the log start offset.
    Earliest,
    /// Move to the high watermark.
    Latest,
}

impl From<OffsetResetArg> for OffsetReset {
    fn from(reset: OffsetResetArg) -> Self {
        match reset {
            OffsetResetArg::Error => OffsetReset::Error,
            OffsetResetArg::Earliest => OffsetReset::Earliest,
            OffsetResetArg::Latest => OffsetReset::Latest,
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum AcksArg {
    #[value(name = "0")]
    Zero,
    #[value(name = "1")]
    One,
    #[value(name = "all")]
    All,
}

impl From<AcksArg> for Acks {
    fn from(acks: AcksArg) -> Self {
        match acks {
            AcksArg::Zero => Acks::None,
            AcksArg::One => Acks::Leader,
            AcksArg::All => Acks::All,
        }
    }
}

/// Records produced but not yet reported, before the CLI waits for the oldest.
const PRODUCE_OUTSTANDING_MAX: usize = 10_000;

fn main() {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("BROOK_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(match cli.command {
            Command::Dev { .. } | Command::Node { .. } => "info",
            _ => "warn",
        })
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            std::process::exit(1);
        }
    };
    if let Err(error) = runtime.block_on(run(cli)) {
        eprintln!("error: {}", one_line(&error));
        std::process::exit(1);
    }
}

/// The error and its causes on one line, skipping a cause its parent already quotes.
fn one_line(error: &anyhow::Error) -> String {
    let mut message = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            message.push_str(": ");
            message.push_str(&cause);
        }
    }
    message
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Randomness only shapes client-side choices (e.g. sticky partitions); any seed will do.
    let runtime = Runtime::new(u64::from(std::process::id()));
    match cli.command {
        Command::Dev { data_dir, listen } => {
            let config = NodeConfig {
                data_dir,
                listen,
                ..NodeConfig::default()
            };
            serve(config, runtime, true).await
        }
        Command::Node {
            config,
            node_id,
            listen,
            data_dir,
        } => {
            let mut node = match &config {
                Some(path) => NodeConfig::from_file(path)?,
                None => NodeConfig::default(),
            };
            if let Some(node_id) = node_id {
                node.node_id = node_id;
            }
            if let Some(listen) = listen {
                node.listen = listen;
            }
            if let Some(data_dir) = data_dir {
                node.data_dir = data_dir;
            }
            serve(node, runtime, false).await
        }
        Command::Topic { command } => topic(&cli.bootstrap, command).await,
        Command::Produce {
            topic,
            acks,
            key_separator,
            partition,
            compression,
        } => {
            let config = ProducerConfig::default()
                .acks(acks.into())
                .compression(compression);
            produce(&cli.bootstrap, topic, config, key_separator, partition).await
        }
        Command::Consume {
            topic,
            partition,
            from,
            max,
            timeout_ms,
            output,
            offset_reset,
        } => {
            consume(
                runtime,
                &cli.bootstrap,
                topic,
                partition,
                &from,
                max,
                timeout_ms,
                output,
                offset_reset,
            )
            .await
        }
        Command::Bench { command } => {
            brook_node::bench::run(runtime, &cli.bootstrap, command).await
        }
    }
}

async fn serve(config: NodeConfig, runtime: Runtime, dev: bool) -> anyhow::Result<()> {
    config.validate()?;
    tracing::info!("effective config:\n{}", config.to_toml());
    let broker = Broker::start(config.clone(), runtime, Arc::new(FsDisk::new())).await?;
    let address = broker.local_address();
    if dev {
        println!(
            "brook dev broker listening on {address}, data in {}",
            config.data_dir.display()
        );
        println!("  create a topic:  brook -b {address} topic create demo --partitions 3");
        println!("  produce:         echo hello | brook -b {address} produce demo");
        println!("  consume:         brook -b {address} consume demo --from earliest");
        println!("Stop with Ctrl-C.");
    } else {
        println!("brook node {} listening on {address}", config.node_id);
    }
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    println!("stopping (syncing partitions)...");
    broker.shutdown().await;
    Ok(())
}

async fn topic(bootstrap: &str, command: TopicCommand) -> anyhow::Result<()> {
    let admin = Admin::connect(bootstrap).await?;
    match command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
            output,
        } => {
            // 0 asks the broker for its default partition count.
            let topic = admin
                .create_topic_with_config(
                    &name,
                    partitions.unwrap_or(0),
                    replication_factor,
                    configs,
                )
                .await?;
            let config = admin.describe_topic_config(&name).await?;
            print_topic(&topic, &config, output);
        }
        TopicCommand::Alter {
            name,
            configs,
            delete_configs,
            output,
        } => {
            let mut alter = AlterConfig::new();
            for (key, value) in configs {
                alter = alter.set(key, value);
            }
            for key in delete_configs {
                alter = alter.delete(key);
            }
            let entries = admin.alter_topic_config(&name, alter).await?;
            match output {
                Output::Json => println!(
                    "{}",
                    serde_json::json!({"name": name, "config": config_json(&entries)})
                ),
                Output::Table => {
                    println!("altered topic {name}");
                    print_config_table(&entries);
                }
            }
        }
        TopicCommand::List { output } => {
            let topics = admin.list_topics().await?;
            match output {
                Output::Json => {
                    let list: Vec<_> = topics
                        .iter()
                        .map(|t| serde_json::json!({"name": t.name, "partitions": t.partitions, "replication_factor": t.replication_factor}))
                        .collect();
                    println!("{}", serde_json::Value::Array(list));
                }
                Output::Table => {
                    println!(
                        "{:<40} {:>10} {:>18}",
                        "TOPIC", "PARTITIONS", "REPLICATION-FACTOR"
                    );
                    for t in topics {
                        println!(
                            "{:<40} {:>10} {:>18}",
                            t.name, t.partitions, t.replication_factor
                        );
                    }
                }
            }
        }
        TopicCommand::Describe { name, output } => {
            let topic = admin.describe_topic(&name).await?;
            let config = admin.describe_topic_config(&name).await?;
            print_topic(&topic, &config, output);
        }
        TopicCommand::Delete { name, output } => {
            admin.delete_topic(&name).await?;
            match output {
                Output::Json => println!("{}", serde_json::json!({"deleted": name})),
                Output::Table => println!("deleted topic {name}"),
            }
        }
    }
    Ok(())
}

/// `{"key": {"value": ..., "source": "default"|"override"}}`, sorted by key.
fn config_json(entries: &[ConfigEntry]) -> serde_json::Value {
    serde_json::Value::Object(
        entries
            .iter()
            .map(|entry| {
                (
                    entry.key.clone(),
                    serde_json::json!({"value": entry.value, "source": entry.source.name()}),
                )
            })
            .collect(),
    )
}

fn print_config_table(entries: &[ConfigEntry]) {
    println!("{:<24} {:<20} {:<8}", "CONFIG", "VALUE", "SOURCE");
    for entry in entries {
        println!(
            "{:<24} {:<20} {:<8}",
            entry.key,
            entry.value,
            entry.source.name()
        );
    }
}

fn print_topic(topic: &TopicDescription, config: &[ConfigEntry], output: Output) {
    match output {
        Output::Json => {
            let partitions: Vec<_> = topic
                .partitions
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "partition": p.partition,
                        "leader": p.leader,
                        "leader_term": p.leader_term,
                        "replicas": p.replicas,
                        "in_sync_replicas": p.in_sync_replicas,
                        "log_start_offset": p.log_start_offset,
                        "high_watermark": p.high_watermark,
                    })
                })
                .collect();
            println!(
                "{}",
                serde_json::json!({
                    "name": topic.name,
                    "replication_factor": topic.replication_factor,
                    "config": config_json(config),
                    "partitions": partitions,
                })
            );
        }
        Output::Table => {
            println!(
                "topic {} (replication factor {})",
                topic.name, topic.replication_factor
            );
            println!(
                "{:>9} {:>7} {:>6} {:>12} {:>16} {:>15}",
                "PARTITION", "LEADER", "TERM", "REPLICAS", "LOG-START-OFFSET", "HIGH-WATERMARK"
            );
            for p in &topic.partitions {
                let leader = p.leader.map_or_else(|| "-".to_owned(), |l| l.to_string());
                let replicas = p
                    .replicas
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",");
                println!(
                    "{:>9} {:>7} {:>6} {:>12} {:>16} {:>15}",
                    p.partition,
                    leader,
                    p.leader_term,
                    replicas,
                    p.log_start_offset,
                    p.high_watermark
                );
            }
            let overrides: Vec<ConfigEntry> = config
                .iter()
                .filter(|entry| entry.source == brook_client::ConfigSource::Override)
                .cloned()
                .collect();
            if !overrides.is_empty() {
                print_config_table(&overrides);
            }
        }
    }
}

async fn produce(
    bootstrap: &str,
    topic: String,
    config: ProducerConfig,
    key_separator: Option<String>,
    partition: Option<u32>,
) -> anyhow::Result<()> {
    let acks = config.acks;
    let producer = Producer::connect(bootstrap, config).await?;
    let mut outstanding = VecDeque::new();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut failures = 0u64;
    let mut first_failure: Option<String> = None;
    let report = |result: brook_client::Result<brook_client::RecordMetadata>,
                  out: &mut std::io::BufWriter<std::io::StdoutLock<'_>>,
                  failures: &mut u64,
                  first_failure: &mut Option<String>|
     -> anyhow::Result<()> {
        match result {
            Ok(metadata) => {
                if acks != Acks::None {
                    writeln!(
                        out,
                        "{}",
                        serde_json::json!({"partition": metadata.partition, "offset": metadata.offset})
                    )?;
                }
            }
            Err(error) => {
                *failures += 1;
                first_failure.get_or_insert_with(|| error.to_string());
            }
        }
        Ok(())
    };
    // stdin is read on this task: the CLI owns the process, nothing else runs here meanwhile.
    // Lines are bytes (a record is bytes, UTF-8 or not); a read error stops the reading, but
    // what was read before it is still produced and reported before the error is returned.
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut read_error: Option<std::io::Error> = None;
    loop {
        let mut line = Vec::new();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => {
                read_error = Some(error);
                break;
            }
        }
        let mut record = line_to_record(&topic, line, key_separator.as_deref());
        if let Some(partition) = partition {
            record = record.with_partition(partition);
        }
        match producer.send(record).await {
            Ok(delivery) => outstanding.push_back(delivery),
            Err(error) => {
                // Stop reading; still report what was acknowledged before the failure.
                failures += 1;
                first_failure.get_or_insert_with(|| error.to_string());
                break;
            }
        }
        if outstanding.len() >= PRODUCE_OUTSTANDING_MAX {
            if let Some(delivery) = outstanding.pop_front() {
                report(delivery.await, &mut out, &mut failures, &mut first_failure)?;
            }
        }
    }
    if first_failure.is_none() {
        producer.flush().await?;
    }
    while let Some(delivery) = outstanding.pop_front() {
        report(delivery.await, &mut out, &mut failures, &mut first_failure)?;
    }
    out.flush()?;
    drop(out);
    let closed = producer.close().await;
    if let Some(first) = first_failure {
        bail!("{failures} records were not acknowledged; first error: {first}");
    }
    if let Some(error) = read_error {
        return Err(anyhow::Error::new(error)
            .context("reading stdin (every line read before the error was produced)"));
    }
    closed?;
    Ok(())
}

/// One line of input (bytes, with its `\n` or `\r\n`) as a record: split into key and value at
/// the first `separator`, if given and present.
fn line_to_record(topic: &str, mut line: Vec<u8>, separator: Option<&str>) -> ProducerRecord {
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    let line = bytes::Bytes::from(line);
    let split = separator.and_then(|separator| {
        let separator = separator.as_bytes();
        if separator.is_empty() {
            return Some((0, 0));
        }
        line.windows(separator.len())
            .position(|window| window == separator)
            .map(|at| (at, separator.len()))
    });
    match split {
        Some((at, len)) => {
            ProducerRecord::new(topic.to_owned(), line.slice(at + len..)).with_key(line.slice(..at))
        }
        None => ProducerRecord::new(topic.to_owned(), line),
    }
}

/// A key or value for `--output json`: a JSON string when it is UTF-8, else its standard
/// base64 (with padding) and the encoding named beside it in `<field>_encoding`, so no byte is
/// mangled and no record stops the output.
fn json_bytes(
    object: &mut serde_json::Map<String, serde_json::Value>,
    field: &str,
    bytes: Option<&bytes::Bytes>,
) {
    use base64::Engine as _;
    match bytes.map(|bytes| (bytes, std::str::from_utf8(bytes))) {
        None => {
            object.insert(field.to_owned(), serde_json::Value::Null);
        }
        Some((_, Ok(text))) => {
            object.insert(field.to_owned(), text.into());
        }
        Some((bytes, Err(_))) => {
            let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
            object.insert(field.to_owned(), encoded.into());
            object.insert(format!("{field}_encoding"), "base64".into());
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn consume(
    runtime: Runtime,
    bootstrap: &str,
    topic: String,
    partition: Option<u32>,
    from: &str,
    max: Option<u64>,
    timeout_ms: Option<u64>,
    output: ConsumeOutput,
    offset_reset: OffsetResetArg,
) -> anyhow::Result<()> {
    let start = match from {
        "earliest" => StartOffset::Earliest,
        "latest" => StartOffset::Latest,
        offset => StartOffset::Offset(offset.parse().with_context(|| {
            format!("--from must be earliest, latest or an offset, not {offset:?}")
        })?),
    };
    let config = ConsumerConfig::default().offset_reset(offset_reset.into());
    let mut consumer = Consumer::connect(bootstrap, config).await?;
    match partition {
        Some(partition) => consumer.assign(&topic, &[partition], start).await?,
        None => {
            consumer.assign_all(&topic, start).await?;
        }
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut seen = 0u64;
    let silence = timeout_ms.map(Duration::from_millis);
    let mut last_record = runtime.now();
    loop {
        if max.is_some_and(|max| seen >= max) {
            break;
        }
        if let Some(silence) = silence {
            if runtime.now().duration_since(last_record) >= silence {
                break;
            }
        }
        let wait = silence.map_or(Duration::from_millis(500), |s| {
            s.min(Duration::from_millis(500))
        });
        let records = consumer.poll(wait).await?;
        if !records.is_empty() {
            last_record = runtime.now();
        }
        for record in records {
            if max.is_some_and(|max| seen >= max) {
                break;
            }
            seen += 1;
            match output {
                ConsumeOutput::Json => {
                    let mut object = serde_json::Map::new();
                    object.insert("topic".into(), (*record.topic).into());
                    object.insert("partition".into(), record.partition.into());
                    object.insert("offset".into(), record.offset.into());
                    object.insert("timestamp".into(), record.timestamp.into());
                    json_bytes(&mut object, "key", record.key.as_ref());
                    json_bytes(&mut object, "value", record.value.as_ref());
                    writeln!(out, "{}", serde_json::Value::Object(object))?;
                }
                ConsumeOutput::Text => {
                    out.write_all(record.value.as_deref().unwrap_or_default())?;
                    out.write_all(b"\n")?;
                }
            }
        }
        out.flush()?;
    }
    Ok(())
}
