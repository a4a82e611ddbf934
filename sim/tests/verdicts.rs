//! The harness's verdicts need evidence: a healthy run passes and stores multi-record batches;
//! a broker that acknowledges nothing fails as no-progress. Each test runs whole simulations
//! (`harness::run`), so it lives in the simulated build only.
#![cfg(madsim)]

use brook_client::ProduceRequestCounts;
use brook_sim::harness::{self, BatchStats, Options};
use brook_sim::Plant;

/// Seeds of these tests: few and short, so the test stays quick in a debug build.
const SEEDS: std::ops::Range<u64> = 0..3;
const FAULT_SECS: u64 = 8;

#[test]
fn healthy_runs_pass_with_multi_record_batches() {
    let mut batches = BatchStats::default();
    for seed in SEEDS {
        let report = harness::run(&Options {
            fault_secs: FAULT_SECS,
            ..Options::new(seed)
        });
        assert!(
            report.passed(),
            "seed {seed}: {:?} (draw {})",
            report.anomalies(),
            report.draw
        );
        let queue = report.queue.as_ref().expect("the history pairs");
        assert!(queue.counts.sends_ok_acks_all >= report.progress.sends_ok_min);
        batches.add(&report.batch_stats);
    }
    // Workers share their client's producers and linger: records meet in batches.
    assert!(
        batches.multi_record_batches > 0 && batches.records > batches.batches,
        "{batches:?}"
    );
}

/// Seeds whose draw makes one-record batches (a producer `batch_bytes_max` of 224 bytes and
/// 48 bytes of padding per record) on a single partition shared by five workers per producer
/// and at most three requests in flight: batches queue behind the requests in flight and the
/// next request carries them together. Most draws make this rare (about one request in a
/// thousand over `cargo sim --seeds 20`); these seeds were found by scanning seeds 0..30, and
/// the test checks they still draw what this comment says.
const MULTI_BATCH_SEEDS: [u64; 2] = [14, 19];

#[test]
fn produce_requests_carry_several_batches() {
    let mut requests = ProduceRequestCounts::default();
    for seed in MULTI_BATCH_SEEDS {
        let report = harness::run(&Options {
            fault_secs: FAULT_SECS,
            ..Options::new(seed)
        });
        let draw = &report.draw;
        assert_eq!(
            (
                draw.producer_batch_bytes_max,
                draw.record_padding_bytes,
                draw.partitions,
                draw.workers_per_producer
            ),
            (224, 48, 1, 5),
            "seed {seed} no longer draws the run this test needs: {draw}"
        );
        requests.add(&report.produce_requests);
    }
    // The broker's multi-batch produce path runs (several batches validated and appended for
    // one request, one acknowledgement for all).
    assert!(
        requests.multi_batch_requests > 0 && requests.batches > requests.requests,
        "{requests:?}"
    );
}

#[test]
fn a_broker_that_acknowledges_nothing_fails_as_no_progress() {
    let report = harness::run(&Options {
        fault_secs: FAULT_SECS,
        plant: Some(Plant::RefuseProduce),
        ..Options::new(0)
    });
    let anomalies = report.anomalies();
    assert!(anomalies.contains_key("no-progress"), "{anomalies:?}");
    let queue = report.queue.as_ref().expect("the history pairs");
    assert_eq!(queue.counts.sends_ok_acks_all, 0);
    let message = &queue.of(brook_jepsen::AnomalyKind::NoProgress)[0].message;
    assert!(message.contains("minimum"), "{message}");
}

#[test]
fn an_undecided_linearizability_search_fails_the_seed() {
    // A budget of one state cannot decide any partition of a real run: the seed must fail as
    // `unknown`, with the states explored in the report, never pass.
    let report = harness::run(&Options {
        fault_secs: FAULT_SECS,
        linear_states_max: 1,
        ..Options::new(0)
    });
    let anomalies = report.anomalies();
    assert!(anomalies.contains_key("unknown"), "{anomalies:?}");
    assert!(!report.passed());
    let linear = report.linear.as_ref().expect("checked");
    assert!(
        linear.summary().contains("unknown after"),
        "{}",
        linear.summary()
    );
}
