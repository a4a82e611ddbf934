//! brook-client: the native async client of brook — [`Producer`], [`Consumer`] and [`Admin`].
//!
//! It runs on the tokio runtime you already have: every entry point is an `async fn` that
//! takes the broker addresses (and a config), nothing else.
//!
//! ```
//! use std::time::Duration;
//! use brook_client::{
//!     Admin, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, StartOffset,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let data = tempfile::tempdir()?;
//! # let node = brook_node::NodeConfig { listen: "127.0.0.1:0".parse()?, data_dir: data.path().into(), ..Default::default() };
//! # let broker = brook_node::Broker::start(node, brook_runtime::Runtime::new(0), std::sync::Arc::new(brook_storage::FsDisk::new())).await?;
//! # let bootstrap = broker.local_address().to_string();
//! # let bootstrap = bootstrap.as_str(); // "HOST:PORT" of any broker, e.g. "127.0.0.1:9092"
//! let admin = Admin::connect(bootstrap).await?;
//! admin.create_topic("greetings", 3, 1).await?;
//!
//! let producer = Producer::connect(bootstrap, ProducerConfig::default()).await?;
//! let delivery = producer
//!     .send(ProducerRecord::new("greetings", "hello").with_key("alice"))
//!     .await?;
//! let stored = delivery.await?;
//! producer.close().await?;
//!
//! let mut consumer = Consumer::connect(bootstrap, ConsumerConfig::default()).await?;
//! consumer
//!     .assign("greetings", &[stored.partition], StartOffset::Offset(stored.offset))
//!     .await?;
//! let records = consumer.poll(Duration::from_secs(5)).await?;
//! assert_eq!(records[0].value.as_deref(), Some(&b"hello"[..]));
//! assert_eq!(records[0].key.as_deref(), Some(&b"alice"[..]));
//! # broker.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! [`Consumer::stream`] gives the same records as a [`futures_core::Stream`]. Runnable
//! examples: `client/examples/` (`cargo run -p brook-client --example producer -- HOST:PORT`).
//!
//! Every client object talks to the cluster over one TCP connection per broker: a handshake
//! first (the broker's maximum frame size bounds what the client sends), then pipelined
//! requests matched to their responses by correlation id. `bootstrap` is a comma-separated
//! list (`HOST:PORT,HOST:PORT`): any broker of it that answers will do, the others are tried
//! in turn. Requests about a partition go to its leader as metadata names it, and follow the
//! broker's "not leader" hints (protocol v2) when leadership moves; topic changes (create,
//! delete, alter) go to the active controller; metadata and other reads go to any broker.
//!
//! Errors are [`ClientError`]s: a broker's refusal keeps its [`ErrorCode`]
//! ([`ClientError::code`]), and [`ClientError::is_retriable`] says whether trying again later
//! can help.
//!
//! # Simulation
//!
//! The client spawns, sleeps, reads the clock and draws randomness only through
//! `brook-runtime`, on `tokio` imported as `madsim-tokio`: real tokio in a normal build, the
//! madsim simulator under `--cfg madsim`. So brook's deterministic simulation drives this same
//! code; a simulation that wants the producer's random choices fixed sets
//! [`ProducerConfig::seed`].

#![warn(missing_docs)]

mod admin;
mod cluster;
mod connection;
pub mod consumer;
mod error;
mod future_set;
pub mod partitioner;
pub mod producer;

pub use admin::{
    Admin, AlterConfig, ClusterStatus, PartitionDetails, TopicDetails, ADMIN_REQUEST_TIMEOUT,
    PARTITION_STATUS_TIMEOUT,
};
pub use brook_wire::compression::Compression;
pub use brook_wire::error::{BrokerError, ErrorCode};
pub use brook_wire::protocol::{
    Acks, BrokerStatus, PartitionMetadata, TopicDescription, TopicSummary,
};
pub use brook_wire::topic_config::{ConfigEntry, ConfigSource};
pub use consumer::{
    Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, RecordStream, StartOffset,
};
pub use error::{ClientError, Result};
pub use producer::{
    DeliveryFuture, ProduceRequestCounter, ProduceRequestCounts, Producer, ProducerConfig,
    ProducerRecord, RecordMetadata, OFFSET_UNKNOWN,
};

/// The runtime handle of a client object that draws no randomness (the admin client, the
/// consumer): its seed is never used. A client object that comes to need randomness takes a
/// seed from its config, as [`ProducerConfig::seed`] does, so that simulations can fix it.
fn runtime_without_randomness() -> brook_runtime::Runtime {
    brook_runtime::Runtime::new(0)
}
