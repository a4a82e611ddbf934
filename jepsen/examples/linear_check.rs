//! Checks a history file (JSON lines of `Op`) for linearizability and prints the verdict, the
//! states explored and the time taken: `cargo run --release -p brook-jepsen --example
//! linear_check -- HISTORY.jsonl [STATES_MAX [no-polls]]`.

use std::time::Instant;

use brook_jepsen::linear::{self, LinearOptions};
use brook_jepsen::History;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: linear_check HISTORY.jsonl [STATES_MAX [no-polls]]")?;
    let mut options = LinearOptions::default();
    if let Some(states_max) = args.next() {
        options.states_max = states_max.parse()?;
    }
    if args.next().as_deref() == Some("no-polls") {
        options.use_polls = false;
    }
    let text = std::fs::read_to_string(&path)?;
    let history = History::from_json_lines(&text)?;
    #[allow(clippy::disallowed_methods)] // wall-clock timing of a tool, outside any simulation
    let started = Instant::now();
    let report = linear::check(&history, &options)?;
    let elapsed = started.elapsed();
    for partition in &report.partitions {
        println!(
            "partition {}: {} ({} operations, {} states)",
            partition.partition, partition.verdict, partition.operations, partition.states_explored
        );
    }
    print!("{report}");
    println!("checked {} ops in {elapsed:?}", history.len());
    Ok(())
}
