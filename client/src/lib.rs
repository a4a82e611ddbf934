//! brook-client: the native async client of brook — [`Producer`], [`Consumer`] and [`Admin`].
//!
//! Every client object talks to the cluster over one TCP connection per broker: a handshake
//! first (the broker's maximum frame size bounds what the client sends), then pipelined
//! requests matched to their responses by correlation id. Requests about a partition go to
//! its leader as metadata names it; topic administration and metadata go to any broker.
//!
//! The client runs on brook's [`Runtime`](brook_actors::runtime::Runtime): it spawns, sleeps
//! and reads the clock only through it, so the same code runs on tokio and, unchanged, inside
//! a madsim simulation.
//!
//! ```
//! use std::time::Duration;
//! use brook_actors::runtime::Runtime;
//! use brook_client::{
//!     Admin, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, StartOffset,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let data = tempfile::tempdir()?;
//! # let node = brook_node::NodeConfig { listen: "127.0.0.1:0".parse()?, data_dir: data.path().into(), ..Default::default() };
//! # let broker = brook_node::Broker::start(node, Runtime::new(0), std::sync::Arc::new(brook_storage::FsDisk::new())).await?;
//! # let bootstrap = broker.local_address().to_string();
//! # let bootstrap = bootstrap.as_str(); // "HOST:PORT" of any broker, e.g. "127.0.0.1:9092"
//! let runtime = Runtime::new(42);
//!
//! let admin = Admin::connect(runtime.clone(), bootstrap).await?;
//! admin.create_topic("greetings", 3, 1).await?;
//!
//! let producer = Producer::connect(runtime.clone(), bootstrap, ProducerConfig::default()).await?;
//! let delivery = producer
//!     .send(ProducerRecord::new("greetings", "hello").with_key("alice"))
//!     .await?;
//! let stored = delivery.await?;
//! producer.close().await?;
//!
//! let mut consumer = Consumer::connect(runtime, bootstrap, ConsumerConfig::default()).await?;
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
//! Errors are [`ClientError`]s: a broker's refusal keeps its [`ErrorCode`]
//! ([`ClientError::code`]), and [`ClientError::is_retriable`] says whether trying again later
//! can help.

mod admin;
mod cluster;
mod connection;
pub mod consumer;
mod error;
mod future_set;
pub mod partitioner;
pub mod producer;

pub use admin::{Admin, ADMIN_REQUEST_TIMEOUT};
pub use brook_wire::error::{BrokerError, ErrorCode};
pub use brook_wire::protocol::{Acks, PartitionMetadata, TopicDescription, TopicSummary};
pub use consumer::{Consumer, ConsumerConfig, ConsumerRecord, StartOffset};
pub use error::{ClientError, Result};
pub use producer::{
    DeliveryFuture, Producer, ProducerConfig, ProducerRecord, RecordMetadata, OFFSET_UNKNOWN,
};
