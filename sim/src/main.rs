//! `cargo sim`: run brook's deterministic simulation for one seed or many.
//!
//! ```text
//! cargo sim --seed 1234                 # one seed, with its trace summary
//! cargo sim --seeds 200 [--from 0]      # many seeds; a one-line repro per failure
//! cargo sim --seeds 20 --plant skip-on-fetch
//! cargo sim --seed 7 --trace trace.txt --history history.jsonl
//! cargo sim --seeds 100000 --time-budget-secs 600   # a deeper search
//! cargo sim --seeds 10 --check-determinism          # run each seed twice, compare traces
//! cargo sim --seeds 20 --compacted                  # a compacted topic (issue 12)
//! cargo sim --seeds 20 --retention                  # short retention: the log start moves
//! cargo sim --seeds 50 --cluster 3                  # a replicated 3-node cluster (or 5)
//! cargo sim --seeds 20 --cluster 3 --plant commit-without-quorum --expect-found
//! ```
//! `cargo sim` is a cargo alias (see .cargo/config.toml) that builds this binary with
//! `--cfg madsim` in `target/sim`.

#[cfg(not(madsim))]
fn main() {
    eprintln!("brook-sim only runs in a simulation build: use `cargo sim ...` (see README)");
    std::process::exit(2);
}

#[cfg(madsim)]
fn main() {
    std::process::exit(runner::main());
}

#[cfg(madsim)]
mod runner {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use brook_sim::cluster::{ClusterDraw, ClusterFault};
    use brook_sim::harness::{self, BatchStats, Draw, Options, RunReport};
    use brook_sim::{parse_seed_file, Plant};
    use clap::Parser;

    #[derive(Parser, Debug)]
    #[command(
        name = "cargo sim",
        about = "brook's deterministic simulation: seeds, faults, checkers"
    )]
    struct Args {
        /// Run this one seed and print its trace summary.
        #[arg(long, conflicts_with = "seeds")]
        seed: Option<u64>,
        /// Run this many seeds.
        #[arg(long)]
        seeds: Option<u64>,
        /// Run the seeds listed in this file (`SEED FINGERPRINT` per line, `#` starts a
        /// comment): the regression seeds, each one a bug that a simulation once found. A seed
        /// whose draw no longer has the recorded fingerprint fails: the draw changed.
        #[arg(long, conflicts_with_all = ["seed", "seeds"])]
        seed_file: Option<PathBuf>,
        /// First seed of --seeds.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Plant a known bug: ack-before-fsync, skip-on-fetch, serve-above-hw, refuse-produce,
        /// no-dir-sync, retry-failed-fsync, skip-in-batch, compact-drops-latest; with --cluster
        /// also commit-without-quorum, forget-vote, keep-divergent-suffix.
        #[arg(long)]
        plant: Option<String>,
        /// Run a replicated cluster of this many nodes (3 or 5), replication factor 3, under
        /// the multi-node nemesis, with the replica checker. Its draw is its own (fingerprint
        /// `c<nodes>v...`): a seed's single-node draw is unchanged.
        #[arg(long)]
        cluster: Option<u8>,
        /// With --cluster: leave these faults out of every seed's draw (comma-separated names,
        /// e.g. corrupt-at-rest). Only for known open bugs, written down with their seeds.
        #[arg(long = "without-fault", value_delimiter = ',')]
        without_fault: Vec<String>,
        /// With --cluster: a targeted fault outside the draw, every partition replica restarts
        /// its Raft core from disk right after it grants a vote (a crash between two vote
        /// requests of one term). `--plant forget-vote` implies it; without a plant it is the
        /// control (a correct replica must pass under it).
        #[arg(long)]
        restart_after_vote: bool,
        /// Simulated seconds of faults per seed.
        #[arg(long, default_value_t = 30)]
        fault_secs: u64,
        /// Stop starting new seeds after this many wall-clock seconds.
        #[arg(long)]
        time_budget_secs: Option<u64>,
        /// Give up on a seed whose simulation has not ended after this many wall-clock seconds:
        /// every phase of a run is bounded in simulated time, so a run that does not end is
        /// a harness defect (a loop that spends CPU without advancing simulated time, or a
        /// livelock), reported as `no-verdict` and failing the whole command, never a hang.
        #[arg(long, default_value_t = 600)]
        seed_wall_secs_max: u64,
        /// Run every seed twice and fail if the two traces differ.
        #[arg(long)]
        check_determinism: bool,
        /// Write the trace of the (last) run to this file.
        #[arg(long)]
        trace: Option<PathBuf>,
        /// Write the history of the (last) run to this file, as JSON lines.
        #[arg(long)]
        history: Option<PathBuf>,
        /// Print every seed's line, not only failures.
        #[arg(long)]
        verbose: bool,
        /// With --plant: succeed as soon as a seed reports one of the anomalies that betray the
        /// planted bug; fail if no seed in the range does. Proves the checkers are not blind.
        #[arg(long, requires = "plant")]
        expect_found: bool,
        /// Run the topic compacted (cleanup.policy=compact, small segments, frequent cleaner
        /// passes, every send keyed, power cuts inside kills); the checker's compacted mode
        /// judges it. `--plant compact-drops-latest` implies it.
        #[arg(long)]
        compacted: bool,
        /// Run the topic with short retention (retention.bytes of 4 KiB in 1 KiB segments,
        /// enforced every 200 ms): consumers below the log start must be told, never skipped.
        #[arg(long)]
        retention: bool,
    }

    /// Why a seed gave no report.
    enum NoReport {
        /// The simulation panicked (the message).
        Panic(String),
        /// The simulation did not end within the wall-clock limit.
        Timeout,
    }

    /// Runs one simulation on a fresh thread, as madsim's own test macro does: a fresh
    /// thread keeps std's per-thread hash seeds (used inside dependencies) fresh too. A run
    /// that has not ended after `wall_limit` is given up (its thread is left behind: the
    /// runner stops and the process exit ends it).
    fn run_on_fresh_thread(
        options: Options,
        wall_limit: std::time::Duration,
    ) -> Result<RunReport, NoReport> {
        let (done, outcome) = std::sync::mpsc::sync_channel(1);
        #[allow(clippy::disallowed_methods)] // outside any simulation: the runner itself
        let worker = std::thread::Builder::new()
            .name(format!("seed-{}", options.seed))
            .spawn(move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    harness::run(&options)
                }));
                // The runner may have given up waiting: then nobody listens.
                let _ = done.send(result);
            })
            .map_err(|error| NoReport::Panic(format!("cannot start a thread: {error}")))?;
        match outcome.recv_timeout(wall_limit) {
            Ok(Ok(report)) => {
                let _ = worker.join();
                Ok(report)
            }
            Ok(Err(panic)) => {
                let _ = worker.join();
                Err(NoReport::Panic(
                    panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_else(|| "the simulation panicked".into()),
                ))
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(NoReport::Timeout),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(NoReport::Panic(
                "the simulation thread ended without a report".into(),
            )),
        }
    }

    #[allow(clippy::disallowed_methods)] // wall-clock timing of the runner, outside simulations
    fn wall_now() -> std::time::Instant {
        std::time::Instant::now()
    }

    /// The node count of a cluster fingerprint (`c3v1-...` -> 3); `None` for a single node's.
    fn cluster_of(fingerprint: &str) -> Option<u8> {
        fingerprint
            .strip_prefix('c')?
            .split('v')
            .next()?
            .parse()
            .ok()
    }

    /// The fingerprint a seed draws now, in the mode its kept fingerprint names, without the
    /// cluster faults it was kept without.
    fn fingerprint_now(seed: u64, cluster: Option<u8>, excluded: &[ClusterFault]) -> String {
        match cluster {
            Some(nodes) => ClusterDraw::for_seed(seed, nodes)
                .without(excluded)
                .fingerprint(),
            None => Draw::for_seed(seed).fingerprint(),
        }
    }

    /// A seed to run and the mode it runs in.
    struct SeedRun {
        seed: u64,
        /// The cluster size (`None`: a single node).
        cluster: Option<u8>,
        /// The cluster faults left out of its draw.
        excluded: Vec<ClusterFault>,
        /// `--compacted` (or a seed file's `compacted`).
        compacted: bool,
        /// `--retention` (or a seed file's `retention`).
        retention: bool,
    }

    /// The seeds of a seed file, each checked against the fingerprint of its draw, with the
    /// cluster size its fingerprint names and the faults it was kept without.
    fn read_seed_file(path: &std::path::Path) -> Result<Vec<SeedRun>, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        let kept =
            parse_seed_file(&text).map_err(|error| format!("{}: {error}", path.display()))?;
        let mut runs = Vec::with_capacity(kept.len());
        let mut stale = Vec::new();
        for seed in &kept {
            let cluster = cluster_of(&seed.fingerprint);
            let mut excluded = Vec::new();
            for name in &seed.without {
                match ClusterFault::from_name(name) {
                    Some(fault) if cluster.is_some() => excluded.push(fault),
                    _ => {
                        return Err(format!(
                            "{}:{}: `without={name}` names no cluster fault of a cluster seed",
                            path.display(),
                            seed.line
                        ))
                    }
                }
            }
            let now = fingerprint_now(seed.seed, cluster, &excluded);
            runs.push(SeedRun {
                seed: seed.seed,
                cluster,
                excluded,
                compacted: seed.compacted,
                retention: seed.retention,
            });
            if now != seed.fingerprint {
                stale.push(format!(
                    "{}:{}: seed {} was kept for the draw {} but now draws {now}: the draw \
                     changed (harness::DRAW_VERSION {}), so this seed no longer replays the run \
                     it was kept for; find a seed that reproduces the scenario under the new \
                     draw (see README, Simulation) and record its fingerprint",
                    path.display(),
                    seed.line,
                    seed.seed,
                    seed.fingerprint,
                    harness::DRAW_VERSION
                ));
            }
        }
        if stale.is_empty() {
            Ok(runs)
        } else {
            Err(stale.join("\n"))
        }
    }

    pub fn main() -> i32 {
        let args = Args::parse();
        // Logs of the simulated nodes and clients, for reading a failing seed:
        // BROOK_LOG=warn cargo sim --seed S (off by default: it slows runs down).
        if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("BROOK_LOG") {
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .init();
        }
        let plant = match args
            .plant
            .as_deref()
            .map(|name| (name, Plant::from_name(name)))
        {
            None => None,
            Some((_, Some(plant))) => Some(plant),
            Some((name, None)) => {
                let known: Vec<_> = Plant::ALL.iter().map(|p| p.name()).collect();
                eprintln!("error: unknown plant {name:?}; known: {}", known.join(", "));
                return 2;
            }
        };
        if let Some(nodes) = args.cluster {
            if nodes != 3 && nodes != 5 {
                eprintln!("error: --cluster takes 3 or 5 (nodes; replication factor 3)");
                return 2;
            }
        }
        let mut excluded = Vec::new();
        for name in &args.without_fault {
            match brook_sim::cluster::ClusterFault::from_name(name) {
                Some(fault) if args.cluster.is_some() => excluded.push(fault),
                Some(_) => {
                    eprintln!("error: --without-fault needs --cluster 3 or --cluster 5");
                    return 2;
                }
                None => {
                    let known: Vec<_> = brook_sim::cluster::ClusterFault::ALL
                        .iter()
                        .map(|fault| fault.name())
                        .collect();
                    eprintln!(
                        "error: unknown cluster fault {name:?}; known: {}",
                        known.join(", ")
                    );
                    return 2;
                }
            }
        }
        let restart_after_vote =
            args.restart_after_vote || plant == Some(brook_sim::Plant::ForgetVote);
        if args.restart_after_vote && args.cluster.is_none() {
            eprintln!("error: --restart-after-vote needs --cluster 3 or --cluster 5");
            return 2;
        }
        if let Some(plant) = plant.filter(|plant| plant.cluster_only() && args.cluster.is_none()) {
            eprintln!(
                "error: --plant {} is a replication bug: give --cluster 3 or --cluster 5",
                plant.name()
            );
            return 2;
        }
        let (seeds, verbose): (Vec<SeedRun>, bool) = match (args.seed, args.seeds, &args.seed_file)
        {
            (Some(seed), _, _) => (
                vec![SeedRun {
                    seed,
                    cluster: args.cluster,
                    excluded: excluded.clone(),
                    compacted: args.compacted,
                    retention: args.retention,
                }],
                true,
            ),
            (None, Some(count), _) => (
                (args.from..args.from.saturating_add(count))
                    .map(|seed| SeedRun {
                        seed,
                        cluster: args.cluster,
                        excluded: excluded.clone(),
                        compacted: args.compacted,
                        retention: args.retention,
                    })
                    .collect(),
                args.verbose,
            ),
            (None, None, Some(path)) => match read_seed_file(path) {
                Ok(seeds) => (seeds, args.verbose),
                Err(error) => {
                    eprintln!("error: {error}");
                    return 2;
                }
            },
            (None, None, None) => {
                eprintln!("error: give --seed S, --seeds N or --seed-file FILE");
                return 2;
            }
        };
        let started = wall_now();
        let mut failed = Vec::new();
        let mut run_count = 0u64;
        let mut simulated = 0f64;
        let mut operations = 0usize;
        // Over the seeds run: the lowest progress bar, and the lowest ratio of acknowledged
        // acks=all sends to the bar (margin, bar, seed) among seeds that acknowledged any.
        let mut lowest_bar: Option<(usize, u64)> = None;
        let mut requests = brook_client::ProduceRequestCounts::default();
        let mut lowest_margin: Option<(f64, usize, u64)> = None;
        let mut faults: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut anomalies: BTreeMap<String, usize> = BTreeMap::new();
        let mut last: Option<RunReport> = None;
        let mut batches = BatchStats::default();
        for run in seeds {
            // A seed file's line adds its own mode to the command line's.
            let SeedRun {
                seed,
                cluster,
                excluded,
                compacted,
                retention,
            } = run;
            let compacted = compacted || args.compacted;
            let retention = retention || args.retention;
            if args
                .time_budget_secs
                .is_some_and(|budget| started.elapsed().as_secs() >= budget)
            {
                println!("time budget reached after {run_count} seeds");
                break;
            }
            let options = Options {
                plant,
                fault_secs: args.fault_secs,
                compacted,
                retention,
                cluster_nodes: cluster,
                cluster_faults_excluded: excluded.clone(),
                restart_after_vote,
                ..Options::new(seed)
            };
            if args.seed.is_some() {
                let (draw, fingerprint) = match cluster {
                    Some(nodes) => {
                        let draw = ClusterDraw::for_seed(seed, nodes).without(&excluded);
                        (draw.to_string(), draw.fingerprint())
                    }
                    None => {
                        let draw = Draw::for_seed(seed);
                        (draw.to_string(), draw.fingerprint())
                    }
                };
                println!(
                    "seed {seed}: draw {draw}\n  draw fingerprint {fingerprint} (record it with the seed in sim/regression-seeds.txt)"
                );
            }
            let seed_started = wall_now();
            let wall_limit = std::time::Duration::from_secs(args.seed_wall_secs_max);
            let repro = format!(
                "cargo sim --seed {seed}{}{}{}{}{}",
                cluster
                    .map(|nodes| format!(" --cluster {nodes}"))
                    .unwrap_or_default(),
                excluded
                    .iter()
                    .map(|fault| format!(" --without-fault {}", fault.name()))
                    .collect::<String>(),
                plant
                    .map(|p| format!(" --plant {}", p.name()))
                    .unwrap_or_default(),
                if compacted { " --compacted" } else { "" },
                if retention { " --retention" } else { "" }
            ) + if args.restart_after_vote {
                " --restart-after-vote"
            } else {
                ""
            };
            let report = match run_on_fresh_thread(options.clone(), wall_limit) {
                Ok(report) => report,
                Err(NoReport::Panic(panic)) => {
                    println!("seed {seed}: PANIC {panic}\n  repro: {repro}");
                    failed.push(seed);
                    run_count += 1;
                    continue;
                }
                Err(NoReport::Timeout) => {
                    // The simulation thread cannot be stopped from outside: stop here.
                    println!(
                        "seed {seed}: FAILED no-verdict: the simulation did not end within {} wall s (every phase is bounded in simulated time: a harness defect, e.g. a livelock spending CPU)\n  repro: {repro}\nstopped after {run_count} seeds (the stuck simulation's thread ends with the process)",
                        args.seed_wall_secs_max
                    );
                    return 1;
                }
            };
            let wall = seed_started.elapsed().as_secs_f64();
            run_count += 1;
            let mut problems: Vec<String> = report
                .anomalies()
                .iter()
                .map(|(name, count)| format!("{name}={count}"))
                .collect();
            if args.check_determinism {
                match run_on_fresh_thread(options, wall_limit) {
                    Ok(again) if again.trace_hash() == report.trace_hash() => {}
                    Ok(again) => problems.push(format!(
                        "nondeterministic: trace hash {:08x} then {:08x}",
                        report.trace_hash(),
                        again.trace_hash()
                    )),
                    Err(NoReport::Panic(panic)) => {
                        problems.push(format!("second run panicked: {panic}"))
                    }
                    Err(NoReport::Timeout) => problems.push(format!(
                        "no-verdict: the second run did not end within {} wall s",
                        args.seed_wall_secs_max
                    )),
                }
            }
            simulated += report.simulated_secs;
            if let Some(queue) = &report.queue {
                // The evidence margin: acknowledged acks=all sends over the bar, lowest first.
                let bar = report.progress.sends_ok_min;
                let margin = queue.counts.sends_ok_acks_all as f64 / bar.max(1) as f64;
                if queue.counts.sends_ok_acks_all > 0
                    && !lowest_margin.is_some_and(|(lowest, _, _)| margin >= lowest)
                {
                    lowest_margin = Some((margin, bar, seed));
                }
                if !lowest_bar.is_some_and(|(lowest, _)| bar >= lowest) {
                    lowest_bar = Some((bar, seed));
                }
            }
            batches.add(&report.batch_stats);
            requests.add(&report.produce_requests);
            operations += report.operations();
            for (fault, count) in &report.faults {
                *faults.entry(fault).or_default() += count;
            }
            for (name, count) in report.anomalies() {
                *anomalies.entry(name).or_default() += count;
            }
            let fault_list: Vec<String> = report
                .faults
                .iter()
                .map(|(f, c)| format!("{f}={c}"))
                .collect();
            if problems.is_empty() {
                if verbose {
                    let (sends_ok, records) = report.queue.as_ref().map_or((0, 0), |queue| {
                        (queue.counts.sends_ok_acks_all, queue.counts.records_read)
                    });
                    println!(
                        "seed {seed}: ok ({} ops, {sends_ok} acks=all acknowledged (minimum {}), {records} records read (minimum {}), {:.1} simulated s in {wall:.2} wall s, faults {}, trace {:08x})",
                        report.operations(),
                        report.progress.sends_ok_min,
                        report.progress.records_read_min,
                        report.simulated_secs,
                        fault_list.join(" "),
                        report.trace_hash()
                    );
                }
            } else {
                println!("seed {seed}: FAILED {}", problems.join(" "));
                match &report.cluster {
                    Some(cluster) => println!("  draw: {cluster}"),
                    None => println!("  draw: {}", report.draw),
                }
                println!("  fingerprint: {}", report.fingerprint());
                if let Some(replica) = report.replica.as_ref().filter(|replica| !replica.valid) {
                    for line in replica.summary().lines() {
                        println!("  {line}");
                    }
                }
                if let Some(queue) = &report.queue {
                    if !queue.valid {
                        for line in queue.summary(2).lines() {
                            println!("  {line}");
                        }
                    }
                }
                if let Some(linear) = report.linear.as_ref().filter(|linear| !linear.valid()) {
                    // The verdict, each partition that is not linearizable or undecided with
                    // the states the search explored, and the witness.
                    for line in linear.summary().lines() {
                        println!("  {line}");
                    }
                }
                for error in &report.errors {
                    println!("  {error}");
                }
                println!("  repro: {}", report.repro());
                failed.push(seed);
            }
            if verbose && args.seed.is_some() {
                if let Some(linear) = &report.linear {
                    println!("  {}", linear.summary());
                }
                if let Some(reason) = &report.linear_skipped {
                    println!("  linearizability not checked: {reason}");
                }
                if let Some(replica) = &report.replica {
                    print!("  {}", replica.summary());
                }
                println!(
                    "  progress: at least {} acks=all sends acknowledged and {} records read required",
                    report.progress.sends_ok_min, report.progress.records_read_min
                );
                println!(
                    "  batches on disk: {} holding {} records ({} with more than one record, at most {})",
                    report.batch_stats.batches,
                    report.batch_stats.records,
                    report.batch_stats.multi_record_batches,
                    report.batch_stats.records_per_batch_max
                );
                println!(
                    "  produce requests: {} holding {} batches ({} with more than one, at most {})",
                    report.produce_requests.requests,
                    report.produce_requests.batches,
                    report.produce_requests.multi_batch_requests,
                    report.produce_requests.batches_per_request_max
                );
                if let Some(queue) = &report.queue {
                    println!("  queue: {:?}", queue.counts);
                }
                let tail = report.trace.len().saturating_sub(12);
                println!(
                    "  trace ({} lines, last {}):",
                    report.trace.len(),
                    report.trace.len() - tail
                );
                for line in &report.trace[tail..] {
                    println!("    {line}");
                }
            }
            if args.expect_found {
                if let Some(plant) = plant {
                    let found: Vec<String> = report
                        .anomalies()
                        .into_keys()
                        .filter(|name| plant.expected_anomalies().contains(&name.as_str()))
                        .collect();
                    if !found.is_empty() {
                        println!(
                            "planted bug {} found by seed {seed} after {run_count} seeds: {}",
                            plant.name(),
                            found.join(", ")
                        );
                        return 0;
                    }
                }
            }
            last = Some(report);
        }
        if args.expect_found {
            let names = plant
                .map(|p| p.expected_anomalies().join("/"))
                .unwrap_or_default();
            println!("planted bug NOT found: no seed of {run_count} reported {names}");
            return 1;
        }
        let wall = started.elapsed().as_secs_f64();
        if let Some(report) = &last {
            if let Some(path) = &args.trace {
                if let Err(error) = std::fs::write(path, report.trace.join("\n") + "\n") {
                    eprintln!("error: cannot write {}: {error}", path.display());
                    return 1;
                }
            }
            if let Some(path) = &args.history {
                if let Err(error) = std::fs::write(path, report.history.to_json_lines()) {
                    eprintln!("error: cannot write {}: {error}", path.display());
                    return 1;
                }
            }
        }
        let fault_list: Vec<String> = faults.iter().map(|(f, c)| format!("{f}={c}")).collect();
        let anomaly_list: Vec<String> = anomalies.iter().map(|(a, c)| format!("{a}={c}")).collect();
        println!(
            "summary: {run_count} seeds, {} failed; {simulated:.0} simulated s in {wall:.1} wall s ({:.0} simulated s per wall s); {operations} ops checked; batches on disk: {} holding {} records ({} with more than one, at most {}); faults: {}; anomalies: {}",
            failed.len(),
            simulated / wall.max(1e-9),
            batches.batches,
            batches.records,
            batches.multi_record_batches,
            batches.records_per_batch_max,
            if fault_list.is_empty() { "none".into() } else { fault_list.join(" ") },
            if anomaly_list.is_empty() { "none".into() } else { anomaly_list.join(" ") },
        );
        println!(
            "produce requests: {} holding {} batches ({} with more than one, at most {})",
            requests.requests,
            requests.batches,
            requests.multi_batch_requests,
            requests.batches_per_request_max
        );
        if let (Some((bar, bar_seed)), Some((margin, margin_bar, margin_seed))) =
            (lowest_bar, lowest_margin)
        {
            println!(
                "progress: lowest bar {bar} acks=all sends (seed {bar_seed}); lowest margin {margin:.1} times the bar (seed {margin_seed}, bar {margin_bar})"
            );
        }
        if failed.is_empty() {
            0
        } else {
            println!("failed seeds: {failed:?}");
            1
        }
    }
}
