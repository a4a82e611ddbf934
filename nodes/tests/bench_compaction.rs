//! `brook bench compaction` end to end on a tiny configuration, as the `brook` binary: it
//! starts its node, measures, reports JSON with the fields the README quotes, the cleaner
//! visibly shrank the compacted topic, and nothing is left in its work directory. Not timed.
#![cfg(not(madsim))]

mod common;

use common::{bench_in_temporary_directory, number};

#[test]
fn bench_compaction_measures_produce_latency_and_the_cleaner() {
    let report = bench_in_temporary_directory(&[
        "compaction",
        "--fsync",
        "interval",
        "--backlog-mib",
        "4",
        "--keys",
        "50",
        "--segment-bytes",
        "262144",
        "--rate",
        "200",
        "--duration-secs",
        "2",
        "--cleaner-interval-ms",
        "200",
        "--settle-secs-max",
        "60",
    ]);
    assert_eq!(report["bench"], "compaction");
    for phase in ["idle", "backlog", "cleaning"] {
        assert_eq!(
            number(&report, &format!("/{phase}/errors")),
            0.0,
            "{report:#}"
        );
        assert!(
            number(&report, &format!("/{phase}/records")) > 0.0,
            "{report:#}"
        );
        assert!(number(&report, &format!("/{phase}/latency/p99_ms")) > 0.0);
    }
    assert_eq!(number(&report, "/backlog/records"), 4096.0);
    let before = number(&report, "/bytes_after_backlog");
    let after = number(&report, "/bytes_final");
    // 50 keys of 1 KiB each remain, plus the active segment: far below the 4 MiB backlog.
    assert!(
        after < before / 2.0,
        "the cleaner did not shrink the topic: {report:#}"
    );
    let secs = number(&report, "/cleaner_secs");
    let mb_per_sec = number(&report, "/cleaner_mb_per_sec");
    assert!((mb_per_sec - before / 1e6 / secs).abs() < 1e-6 * mb_per_sec.max(1.0));
}
