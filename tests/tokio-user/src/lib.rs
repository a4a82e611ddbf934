//! What a tokio application writes to use brook: connect with an address and a config, send,
//! read back. No brook runtime, no seed, no other brook crate.
//!
//! [`round_trip`] is shared by the `brook-tokio-user` binary (`#[tokio::main]`) and the tests,
//! which run both against a real `brook dev` process.

// A tokio application: the real tokio, never simulated. brook's determinism rules
// (clippy.toml: spawn and time only through brook-runtime) protect brook's own code, not this.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::time::Duration;

use brook_client::{
    Admin, ClientError, Consumer, ConsumerConfig, ErrorCode, Producer, ProducerConfig,
    ProducerRecord, StartOffset,
};

/// What [`round_trip`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Records acknowledged by the broker.
    pub acknowledged: usize,
    /// Records read back, by partition: (offset, value) in the order they arrived.
    pub read: BTreeMap<u32, Vec<(u64, String)>>,
}

/// Creates `topic` (if needed) with `partitions` partitions, produces `count` keyed records
/// from a spawned tokio task, then streams them back until all `count` arrived or
/// `read_timeout` passed.
pub async fn round_trip(
    bootstrap: &str,
    topic: &str,
    partitions: u32,
    count: usize,
    read_timeout: Duration,
) -> Result<Summary, ClientError> {
    let admin = Admin::connect(bootstrap).await?;
    match admin.create_topic(topic, partitions, 1).await {
        Ok(_) => {}
        Err(error) if error.code() == Some(ErrorCode::TopicAlreadyExists) => {}
        Err(error) => return Err(error),
    }

    // A producer is Send + Clone: send from another task, as applications do.
    let producer = Producer::connect(bootstrap, ProducerConfig::default()).await?;
    let sender = producer.clone();
    let topic_name = topic.to_owned();
    let sending = tokio::spawn(async move {
        let mut deliveries = Vec::with_capacity(count);
        for index in 0..count {
            let record = ProducerRecord::new(topic_name.as_str(), format!("value-{index}"))
                .with_key(format!("key-{}", index % 10));
            deliveries.push(sender.send(record).await?);
        }
        let mut acknowledged = 0;
        for delivery in deliveries {
            delivery.await?;
            acknowledged += 1;
        }
        Ok::<usize, ClientError>(acknowledged)
    });
    let acknowledged = match sending.await {
        Ok(result) => result?,
        Err(_) => return Err(ClientError::Closed),
    };
    producer.close().await?;

    let mut consumer = Consumer::connect(bootstrap, ConsumerConfig::default()).await?;
    consumer.assign_all(topic, StartOffset::Earliest).await?;
    let mut records = consumer.stream();
    let mut read: BTreeMap<u32, Vec<(u64, String)>> = BTreeMap::new();
    let reading = async {
        let mut total = 0;
        while total < count {
            let Some(record) = records.next_record().await else {
                break;
            };
            let record = record?;
            let value = String::from_utf8_lossy(record.value.as_deref().unwrap_or_default());
            read.entry(record.partition)
                .or_default()
                .push((record.offset, value.into_owned()));
            total += 1;
        }
        Ok::<(), ClientError>(())
    };
    match tokio::time::timeout(read_timeout, reading).await {
        Ok(result) => result?,
        Err(_) => return Err(ClientError::Timeout("reading the records back")),
    }
    Ok(Summary { acknowledged, read })
}
