//! `brook`: run a broker node, manage topics, produce and consume from the command line.
//!
//! Noun-verb commands; `-b/--bootstrap HOST:PORT[,HOST:PORT...]` (or `BROOK_BOOTSTRAP`) says
//! which brokers the client commands may talk to (any one that answers will do). Errors are one
//! line on stderr and a non-zero exit.

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
    Producer, ProducerConfig, ProducerRecord, StartOffset, TopicDetails, OFFSET_UNKNOWN,
};
use brook_node::bench::BenchCommand;
use brook_node::config::{parse_controller_voters, parse_peers, ClusterSection};
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
    /// Brokers to talk to (client commands): HOST:PORT[,HOST:PORT...]; any one that answers
    /// will do, the others are tried in turn.
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
    /// Run a broker on embedded defaults: one node (data in ./brook-data), or with `--nodes 3`
    /// a local cluster of three node processes on consecutive ports from 9092 (data in
    /// ./brook-data/node-N). Ctrl-C stops every node.
    Dev {
        #[arg(long, default_value = "./brook-data")]
        data_dir: PathBuf,
        /// The (first) node's address; node N listens on this port + N - 1.
        #[arg(long, default_value = "127.0.0.1:9092")]
        listen: SocketAddr,
        /// How many nodes (1: a single node, today's mode; more: a replicated cluster).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=DEV_NODES_MAX))]
        nodes: u32,
    },
    /// Run a broker node from a config file (flags override the file). With `--peers` (or a
    /// `[cluster]` section) the node is one member of a replicated cluster.
    Node {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        node_id: Option<u32>,
        #[arg(long)]
        listen: Option<SocketAddr>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Every node of the cluster, this one included: ID@HOST:PORT,ID@HOST:PORT,... (the
        /// address each node listens on for clients; peers use the same port).
        #[arg(long, value_name = "ID@HOST:PORT,...")]
        peers: Option<String>,
        /// The nodes that hold the controller's metadata log (1, 3 or 5 ids of --peers);
        /// default: the first three ids of --peers.
        #[arg(long, value_name = "ID,...")]
        controller_voters: Option<String>,
    },
    /// Create, list, describe and delete topics.
    Topic {
        #[command(subcommand)]
        command: TopicCommand,
    },
    /// Produce one record per line of stdin (lines are bytes: any encoding); prints exactly one
    /// JSON line per input line, in input order: {"partition":P,"offset":O} when acknowledged,
    /// {"error":"..."} when not (the exit code is then 1). If no broker can be reached, reading
    /// stops at that line.
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
        /// How long a record may be retried (leader elections, restarts) before it is
        /// reported as failed (the client library's default is 120 s; the CLI's is shorter, so
        /// that a script learns of a dead cluster sooner).
        #[arg(long, default_value_t = 30_000)]
        delivery_timeout_ms: u64,
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
    /// The cluster's brokers and controller.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
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

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// The brokers (address, alive or not) and the active controller, as the answering broker
    /// knows them. JSON: {"controller":1,"brokers":[{"id":1,"address":"..","alive":true},...]}.
    Status {
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
        Command::Dev {
            data_dir,
            listen,
            nodes: 1,
        } => {
            let config = NodeConfig {
                data_dir,
                listen,
                ..NodeConfig::default()
            };
            serve(config, runtime, true).await
        }
        Command::Dev {
            data_dir,
            listen,
            nodes,
        } => dev_cluster(&runtime, &data_dir, listen, nodes).await,
        Command::Cluster { command } => cluster(&cli.bootstrap, command).await,
        Command::Node {
            config,
            node_id,
            listen,
            data_dir,
            peers,
            controller_voters,
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
            if let Some(peers) = peers {
                let section = node.cluster.get_or_insert_with(ClusterSection::default);
                section.peers = parse_peers(&peers)?;
            }
            if let Some(voters) = controller_voters {
                let Some(section) = node.cluster.as_mut() else {
                    bail!("--controller-voters needs --peers (or a [cluster] section with peers in --config)");
                };
                section.controller_voters = Some(parse_controller_voters(&voters)?);
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
            delivery_timeout_ms,
        } => {
            let config = ProducerConfig::default()
                .acks(acks.into())
                .compression(compression)
                .delivery_timeout(Duration::from_millis(delivery_timeout_ms.max(1)));
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
    let clock = runtime.clone();
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
    // Run until Ctrl-C, or until the node's controller stops on its own: in a cluster it stops
    // when the cluster's metadata names other peers than this node's --peers (it logs why), and
    // a node without a controller can serve nothing, so the process must not look alive.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let controller_stopped = loop {
        tokio::select! {
            biased;
            signal = &mut ctrl_c => {
                signal.context("waiting for Ctrl-C")?;
                break false;
            }
            () = clock.sleep(CONTROLLER_POLL_INTERVAL) => {
                if broker.controller().is_closed() {
                    break true;
                }
            }
        }
    };
    println!("stopping (syncing partitions)...");
    broker.shutdown().await;
    if controller_stopped {
        bail!(
            "node {} stopped: its controller refused to go on (the reason is the error logged above, e.g. --peers that disagree with the cluster's metadata)",
            config.node_id
        );
    }
    Ok(())
}

/// How often a running node looks whether its controller stopped on its own.
const CONTROLLER_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Most nodes `brook dev --nodes` starts.
const DEV_NODES_MAX: i64 = 9;
/// How often `brook dev --nodes N` looks whether a node process exited.
const DEV_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How long `brook dev --nodes N` waits for its nodes to stop after Ctrl-C before killing them.
const DEV_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// One node process of `brook dev --nodes N`.
struct DevNode {
    id: u32,
    /// Its `brook node ...` arguments (printed so that a stopped node can be restarted by hand).
    arguments: Vec<String>,
    child: Option<std::process::Child>,
}

impl DevNode {
    fn command_line(&self, binary: &std::path::Path) -> String {
        format!("{} {}", binary.display(), self.arguments.join(" "))
    }
}

/// `brook dev --nodes N`: N `brook node` child processes forming one cluster on consecutive
/// ports, each in `<data-dir>/node-N`. Processes rather than one process, so that a newcomer
/// can kill one node (its pid is printed) and watch the cluster fail over, then restart it
/// with the printed command. Ctrl-C in the terminal reaches every node (they share its
/// process group); this process forwards SIGINT too (for a Ctrl-C sent to it alone), waits
/// for the nodes to stop cleanly, and kills those still running after [`DEV_STOP_TIMEOUT`].
async fn dev_cluster(
    runtime: &Runtime,
    data_dir: &std::path::Path,
    listen: SocketAddr,
    nodes: u32,
) -> anyhow::Result<()> {
    let binary = std::env::current_exe().context("locating the brook binary")?;
    let last_port = u32::from(listen.port()) + nodes - 1;
    if last_port > u32::from(u16::MAX) {
        bail!(
            "--listen port {} leaves no room for {nodes} consecutive ports",
            listen.port()
        );
    }
    let addresses: Vec<(u32, SocketAddr)> = (1..=nodes)
        .map(|id| {
            let port = listen.port() + (id - 1) as u16;
            (id, SocketAddr::new(listen.ip(), port))
        })
        .collect();
    let peers = addresses
        .iter()
        .map(|(id, address)| format!("{id}@{address}"))
        .collect::<Vec<_>>()
        .join(",");
    let bootstrap = addresses
        .iter()
        .map(|(_, address)| address.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mut children = Vec::new();
    for (id, address) in &addresses {
        let node_dir = data_dir.join(format!("node-{id}"));
        let arguments = vec![
            "node".to_owned(),
            "--node-id".to_owned(),
            id.to_string(),
            "--listen".to_owned(),
            address.to_string(),
            "--data-dir".to_owned(),
            node_dir.display().to_string(),
            "--peers".to_owned(),
            peers.clone(),
        ];
        let spawned = std::process::Command::new(&binary)
            .args(&arguments)
            .stdin(std::process::Stdio::null())
            .spawn();
        let mut node = DevNode {
            id: *id,
            arguments,
            child: None,
        };
        match spawned {
            Ok(child) => {
                println!(
                    "node {id}: pid {}, listening on {address}, data in {}",
                    child.id(),
                    node_dir.display()
                );
                node.child = Some(child);
                children.push(node);
            }
            Err(error) => {
                stop_dev_nodes(runtime, &mut children).await;
                return Err(anyhow::Error::new(error).context(format!("starting node {id}")));
            }
        }
    }
    println!("brook dev cluster of {nodes} nodes; bootstrap list {bootstrap}");
    println!("  create a topic:  brook -b {bootstrap} topic create demo --partitions 3 --replication-factor {}", nodes.min(3));
    println!("  produce:         echo hello | brook -b {bootstrap} produce demo");
    println!("  consume:         brook -b {bootstrap} consume demo --from earliest");
    println!("  cluster status:  brook -b {bootstrap} cluster status");
    println!("  fail over:       kill one node's pid (printed above), keep producing; restart it with the command printed when it exits");
    println!("Stop with Ctrl-C.");
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            biased;
            signal = &mut ctrl_c => {
                signal.context("waiting for Ctrl-C")?;
                break;
            }
            () = runtime.sleep(DEV_POLL_INTERVAL) => {}
        }
        let mut running = 0;
        for node in &mut children {
            let Some(child) = node.child.as_mut() else {
                continue;
            };
            match child.try_wait() {
                Ok(None) => running += 1,
                Ok(Some(status)) => {
                    println!(
                        "node {} exited ({status}); restart it with:\n  {}",
                        node.id,
                        node.command_line(&binary)
                    );
                    node.child = None;
                }
                Err(error) => {
                    tracing::warn!(node = node.id, %error, "cannot poll the node process");
                    running += 1;
                }
            }
        }
        if running == 0 {
            bail!("every node of the dev cluster has exited");
        }
    }
    println!("stopping {nodes} nodes (syncing partitions)...");
    stop_dev_nodes(runtime, &mut children).await;
    Ok(())
}

/// SIGINT every node still running, wait for them for [`DEV_STOP_TIMEOUT`], SIGKILL the rest.
async fn stop_dev_nodes(runtime: &Runtime, children: &mut [DevNode]) {
    use rustix::process::{kill_process, Pid, Signal};
    for node in children.iter() {
        if let Some(child) = &node.child {
            if let Err(error) = kill_process(Pid::from_child(child), Signal::INT) {
                tracing::debug!(node = node.id, %error, "SIGINT not delivered (already stopped?)");
            }
        }
    }
    let polls_max = DEV_STOP_TIMEOUT.as_millis() / DEV_POLL_INTERVAL.as_millis() + 1;
    for _ in 0..polls_max {
        let mut running = false;
        for node in children.iter_mut() {
            if let Some(child) = node.child.as_mut() {
                match child.try_wait() {
                    Ok(None) => running = true,
                    Ok(Some(_)) | Err(_) => node.child = None,
                }
            }
        }
        if !running {
            return;
        }
        runtime.sleep(DEV_POLL_INTERVAL).await;
    }
    for node in children.iter_mut() {
        if let Some(mut child) = node.child.take() {
            eprintln!(
                "node {} did not stop in {DEV_STOP_TIMEOUT:?}; killing it",
                node.id
            );
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn cluster(bootstrap: &str, command: ClusterCommand) -> anyhow::Result<()> {
    let admin = Admin::connect(bootstrap).await?;
    match command {
        ClusterCommand::Status { output } => {
            let status = admin.cluster_status().await?;
            match output {
                Output::Json => {
                    let brokers: Vec<_> = status
                        .brokers
                        .iter()
                        .map(|broker| {
                            serde_json::json!({
                                "id": broker.broker_id,
                                "address": broker.address,
                                "alive": broker.alive,
                            })
                        })
                        .collect();
                    println!(
                        "{}",
                        serde_json::json!({"controller": status.controller, "brokers": brokers})
                    );
                }
                Output::Table => {
                    let controller = status.controller.map_or_else(
                        || "none (election under way)".to_owned(),
                        |id| id.to_string(),
                    );
                    println!("controller: {controller}");
                    println!("{:>6} {:<24} {:<6}", "BROKER", "ADDRESS", "ALIVE");
                    for broker in &status.brokers {
                        println!(
                            "{:>6} {:<24} {:<6}",
                            broker.broker_id, broker.address, broker.alive
                        );
                    }
                }
            }
        }
    }
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
            print_topic(&TopicDetails::from(topic), &config, output);
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

fn print_topic(topic: &TopicDetails, config: &[ConfigEntry], output: Output) {
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
                        "log_end_offset": p.log_end_offset,
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
                "{:>9} {:>7} {:>6} {:>12} {:>16} {:>15} {:>15}",
                "PARTITION",
                "LEADER",
                "TERM",
                "REPLICAS",
                "LOG-START-OFFSET",
                "HIGH-WATERMARK",
                "LOG-END-OFFSET"
            );
            for p in &topic.partitions {
                let leader = p.leader.map_or_else(|| "-".to_owned(), |l| l.to_string());
                let replicas = p
                    .replicas
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",");
                let log_end = p
                    .log_end_offset
                    .map_or_else(|| "-".to_owned(), |offset| offset.to_string());
                println!(
                    "{:>9} {:>7} {:>6} {:>12} {:>16} {:>15} {:>15}",
                    p.partition,
                    leader,
                    p.leader_term,
                    replicas,
                    p.log_start_offset,
                    p.high_watermark,
                    log_end
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

/// What became of one input line of `brook produce`, in input order.
enum LineOutcome {
    /// Handed to the producer: its acknowledgement (or failure) is awaited.
    Sent(brook_client::DeliveryFuture),
    /// Refused before it was sent (too large, unknown topic or partition, ...).
    Refused(String),
}

/// Print one JSON line for one input line: `{"partition":P,"offset":O}` when acknowledged
/// (`"offset":null` with `--acks 0`: the broker does not answer), `{"error":"..."}` when not.
/// Returns the error, if any.
async fn report_line(outcome: LineOutcome, out: &mut impl Write) -> anyhow::Result<Option<String>> {
    let result = match outcome {
        LineOutcome::Sent(delivery) => delivery.await.map_err(|error| error.to_string()),
        LineOutcome::Refused(error) => Err(error),
    };
    match result {
        Ok(metadata) => {
            let offset = (metadata.offset != OFFSET_UNKNOWN).then_some(metadata.offset);
            writeln!(
                out,
                "{}",
                serde_json::json!({"partition": metadata.partition, "offset": offset})
            )?;
            Ok(None)
        }
        Err(error) => {
            writeln!(out, "{}", serde_json::json!({ "error": error }))?;
            Ok(Some(error))
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
    let producer = Producer::connect(bootstrap, config).await?;
    let mut outstanding = VecDeque::new();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut lines = 0u64;
    let mut failures = 0u64;
    let mut first_failure: Option<String> = None;
    let mut count = |failure: Option<String>| {
        if let Some(failure) = failure {
            failures += 1;
            first_failure.get_or_insert(failure);
        }
    };
    // stdin is read on this task: the CLI owns the process, nothing else runs here meanwhile.
    // Lines are bytes (a record is bytes, UTF-8 or not); a read error stops the reading, but
    // what was read before it is still produced and reported before the error is returned.
    // Every line read gets exactly one output line, in input order, whatever happens to it: a
    // refused line (too large, unknown partition) does not stop the lines after it; only a
    // cluster that cannot be reached at all stops the reading.
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
        lines += 1;
        let mut record = line_to_record(&topic, line, key_separator.as_deref());
        if let Some(partition) = partition {
            record = record.with_partition(partition);
        }
        match producer.send(record).await {
            Ok(delivery) => outstanding.push_back(LineOutcome::Sent(delivery)),
            // No broker of the cluster could be reached to look the topic up: every following
            // line would fail the same way, so reading stops at this line, whose error is the
            // last output line (the lines after it were not read).
            Err(error) if error.is_retriable() => {
                outstanding.push_back(LineOutcome::Refused(error.to_string()));
                break;
            }
            Err(error) => outstanding.push_back(LineOutcome::Refused(error.to_string())),
        }
        if outstanding.len() >= PRODUCE_OUTSTANDING_MAX {
            if let Some(outcome) = outstanding.pop_front() {
                count(report_line(outcome, &mut out).await?);
            }
        }
    }
    // Send what lingers now; each line's own outcome is reported below either way.
    let flushed = producer.flush().await;
    while let Some(outcome) = outstanding.pop_front() {
        count(report_line(outcome, &mut out).await?);
    }
    out.flush()?;
    drop(out);
    let closed = producer.close().await;
    if let Some(first) = first_failure {
        bail!("{failures} of {lines} records were not acknowledged; first error: {first}");
    }
    if let Some(error) = read_error {
        return Err(anyhow::Error::new(error)
            .context("reading stdin (every line read before the error was produced)"));
    }
    flushed?;
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
