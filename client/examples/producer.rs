//! Sends ten records and prints where each was stored.
//!
//! `cargo run -p brook-client --example producer -- 127.0.0.1:9092 greetings`
//! (start a broker first: `cargo run -p brook-node --bin brook -- dev`).

use brook_client::{Admin, ErrorCode, Producer, ProducerConfig, ProducerRecord};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut arguments = std::env::args().skip(1);
    let bootstrap = arguments.next().unwrap_or_else(|| "127.0.0.1:9092".into());
    let topic = arguments.next().unwrap_or_else(|| "greetings".into());

    // Create the topic unless it exists.
    match Admin::connect(&bootstrap)
        .await?
        .create_topic(&topic, 3, 1)
        .await
    {
        Err(error) if error.code() != Some(ErrorCode::TopicAlreadyExists) => {
            return Err(error.into())
        }
        _ => {}
    }

    let producer = Producer::connect(&bootstrap, ProducerConfig::default()).await?;
    for index in 0..10 {
        let record = ProducerRecord::new(topic.as_str(), format!("hello #{index}"))
            .with_key(format!("user-{}", index % 3));
        // `send` enqueues; awaiting the returned future waits for the broker's acknowledgement.
        let stored = producer.send(record).await?.await?;
        println!(
            "stored at {}-{} offset {}",
            stored.topic, stored.partition, stored.offset
        );
    }
    // Sends whatever is still buffered and waits for it before the program ends.
    producer.close().await?;
    Ok(())
}
