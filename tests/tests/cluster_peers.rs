//! Issue 11, bad input: a node started with a `--peers` list that disagrees with the cluster's
//! stored metadata refuses to start and says why, as a real `brook node` process.
//!
//! Two ways to disagree: (1) a fresh data directory whose `--peers` differs from the cluster
//! record the running nodes hold (another address for the node itself): the node learns the
//! record, refuses to take part, and the process exits non-zero naming the difference, while
//! the other nodes carry on (reached through a `BROOK_BOOTSTRAP` list whose first entry is
//! dead); (2) a data directory first started with one list, restarted with another: refused
//! before it serves anything, naming what differs.
#![allow(clippy::disallowed_methods)] // real processes and the real clock: not simulated code

use std::process::{Command, Stdio};
use std::time::Duration;

use brook_e2e::{brook_binary, free_ports, run_cli, wait_until, work_dir, Broker, CliOutput};

/// Bound of every wait for the cluster (start, election, the refusal).
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(60);
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

fn node_args(id: u32, port: u16, data_dir: &std::path::Path, peers: &str) -> Vec<String> {
    vec![
        "--node-id".into(),
        id.to_string(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--peers".into(),
        peers.into(),
    ]
}

fn cluster_status(port: u16) -> CliOutput {
    run_cli(
        &[
            "-b",
            &format!("127.0.0.1:{port}"),
            "cluster",
            "status",
            "--output",
            "json",
        ],
        b"",
        CLI_TIMEOUT,
    )
}

#[test]
fn a_node_whose_peers_disagree_with_the_cluster_refuses_to_start_and_says_why() {
    let work = work_dir();
    let ports = <[u16; 4]>::try_from(free_ports(4)).expect("four ports");
    let peers = format!(
        "1@127.0.0.1:{},2@127.0.0.1:{},3@127.0.0.1:{}",
        ports[0], ports[1], ports[2]
    );
    let mut nodes: Vec<Broker> = (1..=2u32)
        .map(|id| {
            let dir = work.path().join(format!("node-{id}"));
            Broker::node_with_args(
                work.path(),
                &node_args(id, ports[id as usize - 1], &dir, &peers),
            )
        })
        .collect();
    // Nodes 1 and 2 are a majority of the three voters: they elect a controller.
    let elected = wait_until(CLUSTER_TIMEOUT, || {
        let status = cluster_status(ports[0]);
        status.status.success()
            && status.stdout.contains("\"controller\":")
            && !status.stdout.contains("\"controller\":null")
    });
    assert!(elected, "no controller: {}", cluster_status(ports[0]));

    // (1) Node 3 on a fresh data directory, listening where the others expect it, but its
    // --peers gives itself another address than the cluster record holds.
    let other_peers = format!(
        "1@127.0.0.1:{},2@127.0.0.1:{},3@127.0.0.1:{}",
        ports[0], ports[1], ports[3]
    );
    let mut stranger = Broker::node_with_args(
        work.path(),
        &node_args(3, ports[2], &work.path().join("node-3"), &other_peers),
    );
    let status = stranger.wait_exit(CLUSTER_TIMEOUT);
    let stderr = stranger.stderr();
    assert!(
        status.is_some_and(|status| !status.success()),
        "node 3 must exit non-zero, not keep running ({status:?}):\n{stderr}"
    );
    let expected = format!(
        "peer 3: stored address 127.0.0.1:{}, given 127.0.0.1:{}",
        ports[2], ports[3]
    );
    assert!(
        stderr.contains(&expected),
        "{expected:?} not said:\n{stderr}"
    );
    assert!(stderr.contains("stopped"), "{stderr}");
    // The others carry on; BROOK_BOOTSTRAP takes a list, and a dead first entry (node 3's
    // port, closed now) is passed over.
    let output = Command::new(brook_binary())
        .args(["cluster", "status", "--output", "json"])
        .env(
            "BROOK_BOOTSTRAP",
            format!("127.0.0.1:{},127.0.0.1:{}", ports[2], ports[1]),
        )
        .env_remove("BROOK_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run brook cluster status");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("\"controller\":"),
        "{output:?}"
    );
    for node in &mut nodes {
        assert!(node.is_running(), "{}", node.stderr());
    }

    // (2) Node 1's data directory restarted with another list: refused at once, naming it.
    let status = nodes[0].interrupt(CLUSTER_TIMEOUT);
    assert!(status.is_some_and(|status| status.success()), "{status:?}");
    let args = node_args(1, ports[0], &work.path().join("node-1"), &other_peers);
    let mut command: Vec<&str> = vec!["node"];
    command.extend(args.iter().map(String::as_str));
    let refused = run_cli(&command, b"", CLUSTER_TIMEOUT);
    assert_eq!(refused.code(), Some(1), "{refused}");
    // The node logs its effective config first (info); the error is the last line.
    let line = refused.stderr_lines().last().copied().unwrap_or_default();
    assert!(
        line.starts_with("error:") && line.contains("other peers") && line.contains("peer 3"),
        "{refused}"
    );
    assert!(!refused.stdout.contains("listening on"), "{refused}");
}
