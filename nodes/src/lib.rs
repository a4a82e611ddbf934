//! brook-node: the broker process. Configuration, the client listener and connections, and the
//! wiring of the actors (controller, partitions) into a running node.

pub mod bench;
pub mod broker;
pub mod config;
pub mod connection;
pub mod data_dir_lock;
pub mod peer;

pub use broker::{Broker, StartError};
pub use config::NodeConfig;
