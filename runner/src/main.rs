//! `brook-jepsen`: run a real cluster under a nemesis, check the history, write a report.

fn main() {
    eprintln!("brook-jepsen: not built yet");
    std::process::exit(2);
}
