//! Reads a topic from the beginning as a stream and prints the first COUNT records.
//!
//! `cargo run -p brook-client --example consumer -- 127.0.0.1:9092 greetings 10`

use brook_client::{Consumer, ConsumerConfig, StartOffset};
use futures_util::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut arguments = std::env::args().skip(1);
    let bootstrap = arguments.next().unwrap_or_else(|| "127.0.0.1:9092".into());
    let topic = arguments.next().unwrap_or_else(|| "greetings".into());
    let count: usize = arguments.next().map_or(Ok(10), |count| count.parse())?;

    let mut consumer = Consumer::connect(&bootstrap, ConsumerConfig::default()).await?;
    consumer.assign_all(&topic, StartOffset::Earliest).await?;
    // Waits for records as long as it takes: this stops after `count` of them.
    let mut records = consumer.stream().take(count);
    while let Some(record) = records.next().await {
        let record = record?;
        let value = String::from_utf8_lossy(record.value.as_deref().unwrap_or_default());
        println!(
            "{}-{}@{}: {value}",
            record.topic, record.partition, record.offset
        );
    }
    Ok(())
}
