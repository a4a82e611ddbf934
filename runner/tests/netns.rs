//! The test network against the real kernel: it needs root and `ip netns`, and fails (never
//! skips) without them. Each test uses a prefix and a subnet of its own, so that tests running
//! in parallel (and a real run, prefix `brj`) do not see each other's namespaces.
#![allow(clippy::disallowed_methods)] // real sockets and the real clock: not simulated code

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener};
use std::time::Duration;

use brook_runner::netns::{self, Network};

/// Removes what an earlier failed run of this test left (the test then checks it starts clean).
fn clean(prefix: &str) {
    netns::cleanup_leftovers(prefix).expect("remove leftovers of an earlier test");
}

/// Everything of ours the kernel shows: namespaces and root links with `prefix-`, and routes
/// of the subnet.
fn ours(prefix: &str, subnet: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let start = format!("{prefix}-");
    let namespaces = netns::namespaces()
        .expect("ip netns list")
        .into_iter()
        .filter(|name| name.starts_with(&start))
        .collect();
    let links = netns::root_links()
        .expect("ip link show")
        .into_iter()
        .filter(|name| name.starts_with(&start))
        .collect();
    let routes = String::from_utf8_lossy(
        &netns::run("ip", &["route", "show"])
            .expect("ip route")
            .stdout,
    )
    .lines()
    .filter(|line| line.contains(subnet))
    .map(str::to_owned)
    .collect();
    (namespaces, links, routes)
}

/// True if a TCP connection from inside `namespace` to `address:port` succeeds within 2 s.
fn connects_from(namespace: &str, address: Ipv4Addr, port: u16) -> bool {
    let script = format!("exec 3<>/dev/tcp/{address}/{port} && echo hello >&3");
    netns::run_in(namespace, "timeout", &["2", "bash", "-c", &script]).is_ok()
}

fn require_root() {
    if let Err(error) = netns::require_root() {
        panic!("this test needs root and `ip netns` (it never skips): {error}");
    }
}

#[test]
fn setup_connects_the_nodes_and_teardown_leaves_nothing_behind() {
    require_root();
    let (prefix, subnet) = ("brjt", [10, 214, 0]);
    clean(prefix);
    let before = ours(prefix, "10.214.0.");
    assert_eq!(
        before,
        (vec![], vec![], vec![]),
        "leftovers of an earlier test"
    );
    let network = Network::create(prefix, subnet, 3).expect("create the network");
    let during = ours(prefix, "10.214.0.");
    assert_eq!(
        during.0,
        vec!["brjt-hub", "brjt-n1", "brjt-n2", "brjt-n3"],
        "namespaces"
    );
    assert_eq!(during.1, vec!["brjt-root"], "root links");
    assert_eq!(
        during.2.len(),
        1,
        "one route to the test subnet: {:?}",
        during.2
    );
    let inside = String::from_utf8_lossy(
        &netns::run("ip", &["-n", "brjt-n2", "-o", "addr", "show", "eth0"])
            .expect("ip addr")
            .stdout,
    )
    .into_owned();
    assert!(inside.contains("10.214.0.2/24"), "{inside}");

    // The root namespace reaches each node's namespace over the bridge, and back.
    let listener = TcpListener::bind((network.root_address(), 0)).expect("bind in the root");
    let port = listener.local_addr().expect("address").port();
    for id in 1..=3 {
        assert!(
            connects_from(&network.namespace(id), network.root_address(), port),
            "n{id}"
        );
        let (mut stream, peer) = listener.accept().expect("accept");
        assert_eq!(peer.ip(), std::net::IpAddr::V4(network.address(id)));
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut text = String::new();
        stream.read_to_string(&mut text).expect("read");
        assert_eq!(text, "hello\n");
    }

    // A filter dropping the root's packets cuts n1 off from it (the SYN-ACK never arrives),
    // and clearing it heals; n2 is not affected meanwhile.
    network
        .set_filter(1, &[network.root_address()], 0)
        .expect("set the filter");
    assert!(!connects_from(
        &network.namespace(1),
        network.root_address(),
        port
    ));
    assert!(connects_from(
        &network.namespace(2),
        network.root_address(),
        port
    ));
    let _ = listener.accept().expect("accept n2");
    network.clear_filter(1).expect("clear the filter");
    assert!(connects_from(
        &network.namespace(1),
        network.root_address(),
        port
    ));
    let _ = listener.accept().expect("accept n1");
    // 100 % loss is a cut too.
    network.set_filter(3, &[], 100).expect("loss");
    assert!(!connects_from(
        &network.namespace(3),
        network.root_address(),
        port
    ));
    network.clear_filter(3).expect("clear the loss");

    drop(listener);
    drop(network);
    assert_eq!(
        ours(prefix, "10.214.0."),
        before,
        "left behind after teardown"
    );
}

#[test]
fn leftovers_of_a_crashed_run_are_removed_by_the_next_one() {
    require_root();
    let (prefix, subnet) = ("brju", [10, 215, 0]);
    clean(prefix);
    let before = ours(prefix, "10.215.0.");
    assert_eq!(
        before,
        (vec![], vec![], vec![]),
        "leftovers of an earlier test"
    );
    // A run that dies without tearing down: its guard never drops.
    let crashed = Network::create(prefix, subnet, 3).expect("create the network");
    // A process left running inside a namespace, as a node would be.
    let mut sleeper = std::process::Command::new("ip")
        .args(["netns", "exec", &crashed.namespace(2), "sleep", "600"])
        .spawn()
        .expect("start a process in n2");
    std::mem::forget(crashed);
    assert_eq!(ours(prefix, "10.215.0.").0.len(), 4);
    let removed = netns::cleanup_leftovers(prefix).expect("cleanup");
    assert!(removed.contains(&"brju-n2".to_owned()), "{removed:?}");
    assert_eq!(
        ours(prefix, "10.215.0."),
        before,
        "left behind after the cleanup"
    );
    // The process inside was killed with its namespace.
    let status = sleeper.wait().expect("wait");
    assert!(!status.success(), "{status}");
    // And a new network with the prefix comes up over the leftovers of another crash.
    let crashed = Network::create(prefix, subnet, 3).expect("create");
    std::mem::forget(crashed);
    let network = Network::create(prefix, subnet, 3).expect("create over leftovers");
    drop(network);
    assert_eq!(ours(prefix, "10.215.0."), before);
}

#[test]
fn a_second_run_does_not_tear_down_the_network_of_a_live_one() {
    require_root();
    let prefix = "brjv";
    clean(prefix);
    // A live process (init) holds the prefix: a new network must refuse, not clean it up.
    let owner = std::path::PathBuf::from(format!("/run/brook-jepsen-{prefix}.pid"));
    std::fs::write(&owner, "1").expect("write the owner file");
    let refused = Network::create(prefix, [10, 216, 0], 3);
    std::fs::remove_file(&owner).expect("remove the owner file");
    match refused {
        Err(netns::NetworkError::Busy { pid: 1, .. }) => {}
        other => panic!("expected Busy, got {other:?}"),
    }
    // A dead owner (a crashed run) is taken over.
    std::fs::write(&owner, u32::MAX.to_string()).expect("write the owner file");
    let network = Network::create(prefix, [10, 216, 0], 3).expect("take over");
    drop(network);
    assert!(!owner.exists(), "the owner file is removed at teardown");
    assert_eq!(ours(prefix, "10.216.0."), (vec![], vec![], vec![]));
}
