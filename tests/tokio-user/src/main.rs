//! `brook-tokio-user HOST:PORT [TOPIC] [COUNT]`: a tokio application's round trip through
//! brook, printing `acknowledged N read M`.

// A tokio application: the real tokio, never simulated. brook's determinism rules
// (clippy.toml: spawn and time only through brook-runtime) protect brook's own code, not this.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut arguments = std::env::args().skip(1);
    let bootstrap = arguments
        .next()
        .ok_or("usage: brook-tokio-user HOST:PORT [TOPIC] [COUNT]")?;
    let topic = arguments.next().unwrap_or_else(|| "tokio-user".to_owned());
    let count: usize = match arguments.next() {
        Some(count) => count.parse()?,
        None => 100,
    };
    let summary =
        brook_tokio_user::round_trip(&bootstrap, &topic, 3, count, Duration::from_secs(30)).await?;
    let read: usize = summary.read.values().map(Vec::len).sum();
    println!("acknowledged {} read {read}", summary.acknowledged);
    Ok(())
}
