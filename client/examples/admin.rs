//! Lists the topics of a cluster with their partitions' leaders and high watermarks.
//!
//! `cargo run -p brook-client --example admin -- 127.0.0.1:9092`

use brook_client::Admin;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let bootstrap = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9092".into());
    let admin = Admin::connect(&bootstrap).await?;
    for topic in admin.list_topics().await? {
        let description = admin.describe_topic(&topic.name).await?;
        println!("{} ({} partitions)", topic.name, topic.partitions);
        for partition in &description.partitions {
            let leader = partition.leader.map_or("none".into(), |id| id.to_string());
            println!(
                "  partition {}: leader {leader}, high watermark {}",
                partition.partition, partition.high_watermark
            );
        }
    }
    Ok(())
}
