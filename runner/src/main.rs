//! `brook-jepsen`: run a real cluster under a nemesis, check the history, write a report.
//!
//! ```text
//! sudo brook-jepsen run --nodes 3 --time-limit 60 --nemesis kill,pause,partition --seed 1
//! brook-jepsen report brook-jepsen-runs/<run>
//! ```
//! Exit code: 0 when the run is valid (with `--expect-anomalies`: when lost writes were
//! found), 1 when it is not, 2 when it could not run (not root, no `ip netns`, bad arguments),
//! 130 after Ctrl-C (everything torn down).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use brook_runner::nemesis::NemesisKind;
use brook_runner::run::{run, RunOptions, RunOutcome};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "brook-jepsen",
    about = "Jepsen-style runs against a real brook cluster (needs root: network namespaces)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a cluster of `brook node` processes, each in its own network namespace, under a
    /// nemesis; record and check the history; write the run directory.
    Run(RunArgs),
    /// Render (again) the HTML report of a recorded run directory.
    Report {
        /// The run directory (holds results.json, history.jsonl, nemesis.jsonl).
        dir: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Nodes in the cluster: 3 or 5.
    #[arg(long, default_value_t = 3)]
    nodes: u32,
    /// Seconds of workload under the nemesis (the heal, convergence and drain come after).
    #[arg(long, default_value_t = 60)]
    time_limit: u64,
    /// Faults to inject, comma-separated: kill, pause, partition, latency, loss (empty: none).
    #[arg(long, value_delimiter = ',', default_value = "kill,pause,partition")]
    nemesis: Vec<String>,
    /// The workload (only `queue` so far).
    #[arg(long, default_value = "queue")]
    workload: String,
    /// Target sends per second, over all producers.
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// The run directory (default: `./brook-jepsen-runs/<UTC time>-seed<N>`).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Seed of the nemesis schedule.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Producer acks: `all`, or `1` (acknowledgements counted as promises: the checker must
    /// then find lost writes under leader kills).
    #[arg(long, default_value = "all")]
    acks: String,
    /// Succeed only if the checker finds lost writes (the proof it is not blind).
    #[arg(long)]
    expect_anomalies: bool,
    /// The `brook` binary (default: next to this one, else `brook` on PATH).
    #[arg(long)]
    brook: Option<PathBuf>,
    /// Partitions of the workload topic.
    #[arg(long, default_value_t = 3)]
    partitions: u32,
    /// Keep the nodes' data directories after a valid run.
    #[arg(long)]
    keep_data: bool,
    /// Share (0..=1) of kills, pauses and isolations aimed at a partition's leader rather than
    /// at a node drawn at random.
    #[arg(long, default_value_t = 0.5)]
    leader_share: f64,
    /// Print the nemesis schedule the seed draws (JSON, one step a line) and exit: no root
    /// needed, nothing started.
    #[arg(long)]
    dry_run: bool,
}

/// The `brook` binary next to this executable, else on PATH.
fn default_brook() -> PathBuf {
    if let Some(sibling) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("brook")))
        .filter(|path| path.is_file())
    {
        return sibling;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("brook"))
                .find(|path| path.is_file())
        })
        .unwrap_or_else(|| PathBuf::from("brook"))
}

/// `YYYYMMDDTHHMMSSZ` of now (UTC), without a date crate.
fn utc_stamp() -> String {
    #[allow(clippy::disallowed_methods)] // a directory name, not simulated code
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let days = secs / 86_400;
    let rest = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

fn render_report(dir: &Path) -> anyhow::Result<PathBuf> {
    brook_runner::report::render(dir)
        .map_err(|error| anyhow::anyhow!("rendering the report: {error}"))
}

fn run_options(args: RunArgs) -> anyhow::Result<RunOptions> {
    anyhow::ensure!(
        args.workload == "queue",
        "--workload {}: only `queue` exists so far",
        args.workload
    );
    let nemesis = args
        .nemesis
        .iter()
        .filter(|name| !name.is_empty())
        .map(|name| name.parse::<NemesisKind>().map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let acks_leader = match args.acks.as_str() {
        "all" => false,
        "1" => true,
        other => anyhow::bail!("--acks {other}: `all` or `1`"),
    };
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.leader_share),
        "--leader-share must be within 0..=1"
    );
    anyhow::ensure!(
        (1..=64).contains(&args.partitions),
        "--partitions must be 1..=64"
    );
    let report_dir = args.report.unwrap_or_else(|| {
        PathBuf::from("brook-jepsen-runs").join(format!("{}-seed{}", utc_stamp(), args.seed))
    });
    Ok(RunOptions {
        nodes: args.nodes,
        time_limit_secs: args.time_limit,
        nemesis,
        rate: args.rate,
        report_dir,
        seed: args.seed,
        acks_leader,
        expect_anomalies: args.expect_anomalies,
        brook: args.brook.unwrap_or_else(default_brook),
        partitions: args.partitions,
        keep_data: args.keep_data,
        leader_share: args.leader_share,
    })
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Report { dir } => report_command(&dir),
        Command::Run(args) => run_command(args),
    }
}

/// `brook-jepsen report DIR`: renders the report and prints its path.
fn report_command(dir: &Path) -> ExitCode {
    match render_report(dir) {
        Ok(path) => {
            println!("{}", path.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("brook-jepsen: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// `brook-jepsen run ...`: the schedule alone with `--dry-run`, else a whole run.
fn run_command(args: RunArgs) -> ExitCode {
    let dry_run = args.dry_run;
    let options = match run_options(args) {
        Ok(options) => options,
        Err(error) => {
            eprintln!("brook-jepsen: {error:#}");
            return ExitCode::from(2);
        }
    };
    if dry_run {
        for step in brook_runner::run::schedule_of(&options) {
            println!("{}", serde_json::to_string(&step).unwrap_or_default());
        }
        return ExitCode::SUCCESS;
    }
    if let Err(error) = brook_runner::netns::require_root() {
        eprintln!("brook-jepsen: {error}");
        return ExitCode::from(2);
    }
    match run_until_interrupted(options) {
        Err(error) => {
            eprintln!("brook-jepsen: {error:#}");
            ExitCode::from(2)
        }
        Ok(None) => {
            eprintln!("brook-jepsen: interrupted (Ctrl-C or SIGTERM); nodes stopped, test network removed");
            ExitCode::from(130)
        }
        Ok(Some(Err(error))) => {
            eprintln!("brook-jepsen: the run failed: {error:#}");
            ExitCode::from(2)
        }
        Ok(Some(Ok(outcome))) => finish(&outcome),
    }
}

/// Runs on a tokio runtime of its own until the run ends (`Some`) or Ctrl-C or SIGTERM
/// (`None`: dropping the run's future drops its guards, so nodes are killed and the network
/// is gone). `Err`: no tokio runtime.
fn run_until_interrupted(
    options: RunOptions,
) -> anyhow::Result<Option<anyhow::Result<RunOutcome>>> {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let runtime = brook_runtime::Runtime::new(options.seed);
    Ok(tokio.block_on(async {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                // No SIGTERM handler: only Ctrl-C stops the run early.
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            outcome = run(options, runtime) => Some(outcome),
            _ = tokio::signal::ctrl_c() => None,
            () = terminate => None,
        }
    }))
}

/// Prints the run's summary and renders its report; the exit code says whether it passed.
fn finish(outcome: &RunOutcome) -> ExitCode {
    print!("{}", outcome.summary);
    match render_report(&outcome.dir) {
        Ok(path) => println!("report: {}", path.display()),
        Err(error) => {
            eprintln!("brook-jepsen: {error:#}");
            return ExitCode::from(2);
        }
    }
    if outcome.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
