//! The test network: one network namespace per node, joined by veth pairs to a bridge that
//! lives in a namespace of its own (the "hub"), plus one veth pair from the root namespace to
//! the bridge so that the runner's clients reach every node at its own address.
//!
//! Every name starts with the network's prefix (`brj` for runs), so what a crashed run left
//! behind is found and removed by [`cleanup_leftovers`]. [`Network`] is a guard: dropping it
//! kills every process still inside its namespaces and deletes them (the veth pairs and the
//! bridge go with their namespaces).
//!
//! Addresses: node `n` is `<subnet>.n`, the root namespace's end is `<subnet>.254`, on a /24 of
//! its own (10.213.0.0/24 for runs): nothing here sends traffic anywhere but to these
//! namespaces.

use std::net::Ipv4Addr;
use std::process::{Command, Output, Stdio};

/// Most nodes a network holds (addresses `.1` to `.NODES_MAX`).
pub const NODES_MAX: u32 = 9;
/// Host number of the root namespace's address on the test subnet.
pub const ROOT_HOST: u8 = 254;
/// Name of every node's interface inside its namespace.
pub const NODE_INTERFACE: &str = "eth0";
/// Name of the nft table the runner owns inside each node's namespace.
pub const NFT_TABLE: &str = "brook_jepsen";

/// Why the network could not be set up or changed.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// A command could not be started at all (not installed?).
    #[error("cannot run `{command}`: {source} (is it installed? scripts/setup.sh installs iproute2 and nftables)")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    /// A command ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    /// Not root: namespaces, veths and packet filters need CAP_NET_ADMIN and CAP_SYS_ADMIN.
    #[error("brook-jepsen needs root (network namespaces, veth pairs, nft rules, tc); effective uid is {uid}: run it as root, e.g. with sudo")]
    NotRoot { uid: u32 },
    /// An argument out of range.
    #[error("invalid network: {0}")]
    Invalid(String),
    /// Another live process owns networks with this prefix.
    #[error("another brook-jepsen (pid {pid}) is using the test network `{prefix}-*`: one run at a time")]
    Busy { prefix: String, pid: u32 },
}

/// Where the pid of the process owning networks with `prefix` is written.
fn owner_file(prefix: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/run/brook-jepsen-{prefix}.pid"))
}

/// Claims the prefix for this process: refuses if another live process holds it (its pid
/// file names a process that still exists), else takes it over (what a crashed run left).
fn claim(prefix: &str) -> Result<(), NetworkError> {
    let path = owner_file(prefix);
    let me = std::process::id();
    if let Some(pid) = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
    {
        if pid != me && process_alive(pid) {
            return Err(NetworkError::Busy {
                prefix: prefix.to_owned(),
                pid,
            });
        }
    }
    std::fs::write(&path, me.to_string()).map_err(|source| NetworkError::Spawn {
        command: format!("write {}", path.display()),
        source,
    })
}

/// True if process `pid` exists and is not a zombie. A process SIGKILLed a moment ago may
/// still be exiting: it is given up to `OWNER_EXIT_WAIT` to go.
fn process_alive(pid: u32) -> bool {
    let alive = || {
        std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| {
            status
                .lines()
                .find(|line| line.starts_with("State:"))
                .is_some_and(|line| !line.contains('Z') && !line.contains('X'))
        })
    };
    for _ in 0..OWNER_EXIT_POLLS {
        if !alive() {
            return false;
        }
        std::thread::sleep(OWNER_EXIT_WAIT / OWNER_EXIT_POLLS);
    }
    alive()
}

/// How long a claim waits for the previous owner of a prefix to finish exiting.
const OWNER_EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(3);
/// In how many looks.
const OWNER_EXIT_POLLS: u32 = 30;

/// Gives the prefix up (if this process holds it).
fn release(prefix: &str) {
    let path = owner_file(prefix);
    let mine = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        == Some(std::process::id());
    if mine {
        let _ = std::fs::remove_file(path);
    }
}

/// Runs one command to completion; its stderr becomes the error.
pub fn run(program: &str, args: &[&str]) -> Result<Output, NetworkError> {
    let command = format!("{program} {}", args.join(" "));
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(spawn_error(&command))?;
    succeeded(command, output)
}

/// The error of `command` that could not be started or fed.
fn spawn_error(command: &str) -> impl Fn(std::io::Error) -> NetworkError + '_ {
    move |source| NetworkError::Spawn {
        command: command.to_owned(),
        source,
    }
}

/// `output` if `command` succeeded, else an error with its status and stderr.
fn succeeded(command: String, output: Output) -> Result<Output, NetworkError> {
    if !output.status.success() {
        return Err(NetworkError::Failed {
            command,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(output)
}

/// Runs one command inside namespace `namespace`.
pub fn run_in(namespace: &str, program: &str, args: &[&str]) -> Result<Output, NetworkError> {
    let mut full = vec!["netns", "exec", namespace, program];
    full.extend_from_slice(args);
    run("ip", &full)
}

/// Runs `nft -f -` inside `namespace` with `script` on stdin.
pub fn nft_script(namespace: &str, script: &str) -> Result<(), NetworkError> {
    use std::io::Write;
    let command = format!("ip netns exec {namespace} nft -f - <<< {script:?}");
    let mut child = Command::new("ip")
        .args(["netns", "exec", namespace, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error(&command))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(spawn_error(&command))?;
    }
    let output = child.wait_with_output().map_err(spawn_error(&command))?;
    succeeded(command, output)?;
    Ok(())
}

/// The effective user id (0: root), from /proc (no unsafe code).
pub fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Fails clearly unless the process is root and `ip netns` works.
pub fn require_root() -> Result<(), NetworkError> {
    match effective_uid() {
        Some(0) => {}
        Some(uid) => return Err(NetworkError::NotRoot { uid }),
        None => {
            return Err(NetworkError::Invalid(
                "cannot read the effective uid from /proc/self/status".into(),
            ))
        }
    }
    run("ip", &["netns", "list"])?;
    Ok(())
}

/// Names of the network namespaces that exist.
pub fn namespaces() -> Result<Vec<String>, NetworkError> {
    let output = run("ip", &["netns", "list"])?;
    // Lines look like `brj-n1 (id: 3)` or just `brj-n1`.
    let mut names: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    names.sort();
    Ok(names)
}

/// Names of the links of the root namespace.
pub fn root_links() -> Result<Vec<String>, NetworkError> {
    let output = run("ip", &["-o", "link", "show"])?;
    // Lines look like `7: brj-root@if6: <BROADCAST,...`.
    let mut names: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// Kills every process inside `namespace` (SIGKILL) and deletes it.
fn delete_namespace(namespace: &str) -> Result<(), NetworkError> {
    if let Ok(output) = run("ip", &["netns", "pids", namespace]) {
        for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
            // Gone already is fine.
            let _ = run("kill", &["-KILL", pid]);
        }
    }
    run("ip", &["netns", "del", namespace])?;
    Ok(())
}

/// Removes every namespace and root link whose name starts with `<prefix>-` (what a run that
/// crashed, or was killed, left behind). Returns what it removed.
pub fn cleanup_leftovers(prefix: &str) -> Result<Vec<String>, NetworkError> {
    let start = format!("{prefix}-");
    let mut removed = Vec::new();
    for namespace in namespaces()? {
        if namespace.starts_with(&start) {
            delete_namespace(&namespace)?;
            removed.push(namespace);
        }
    }
    for link in root_links()? {
        if link.starts_with(&start) {
            // Deleting one end of a veth pair deletes the other: it may be gone already.
            if run("ip", &["link", "del", &link]).is_ok() {
                removed.push(link);
            }
        }
    }
    Ok(removed)
}

/// A test network of `nodes` namespaces; torn down when dropped.
#[derive(Debug)]
pub struct Network {
    prefix: String,
    subnet: [u8; 3],
    nodes: u32,
    torn_down: bool,
}

impl Network {
    /// Removes leftovers of an earlier network with this prefix, then creates the hub with its
    /// bridge, one namespace per node (addresses `<subnet>.1..`) and the root namespace's link
    /// (`<subnet>.254`). A failure half-way tears down what was made.
    pub fn create(prefix: &str, subnet: [u8; 3], nodes: u32) -> Result<Network, NetworkError> {
        if nodes == 0 || nodes > NODES_MAX {
            return Err(NetworkError::Invalid(format!(
                "{nodes} nodes (1..={NODES_MAX})"
            )));
        }
        // Link names are at most 15 bytes: `<prefix>-n9-b` and `<prefix>-root` must fit.
        if prefix.is_empty() || prefix.len() > 8 || !prefix.bytes().all(|b| b.is_ascii_lowercase())
        {
            return Err(NetworkError::Invalid(format!(
                "prefix {prefix:?}: 1 to 8 lowercase letters"
            )));
        }
        require_root()?;
        claim(prefix)?;
        cleanup_leftovers(prefix)?;
        let mut network = Network {
            prefix: prefix.to_owned(),
            subnet,
            nodes,
            torn_down: false,
        };
        // On error the guard (dropped here) removes what exists.
        network.build()?;
        Ok(network)
    }

    /// The hub namespace with its bridge, every node's namespace on it, then the root
    /// namespace's link.
    fn build(&mut self) -> Result<(), NetworkError> {
        let hub = self.hub();
        let bridge = format!("{}-br", self.prefix);
        run("ip", &["netns", "add", &hub])?;
        run("ip", &["-n", &hub, "link", "set", "lo", "up"])?;
        run(
            "ip",
            &["-n", &hub, "link", "add", &bridge, "type", "bridge"],
        )?;
        run("ip", &["-n", &hub, "link", "set", &bridge, "up"])?;
        for id in 1..=self.nodes {
            self.add_node(id, &hub, &bridge)?;
        }
        self.add_root_link(&hub, &bridge)
    }

    /// Node `id`'s namespace, with a veth pair from its `NODE_INTERFACE` (holding its address)
    /// to a port of `bridge` in `hub`.
    fn add_node(&self, id: u32, hub: &str, bridge: &str) -> Result<(), NetworkError> {
        let namespace = self.namespace(id);
        let inside = format!("{}-n{id}-a", self.prefix);
        let port = format!("{}-n{id}-b", self.prefix);
        run("ip", &["netns", "add", &namespace])?;
        run("ip", &["-n", &namespace, "link", "set", "lo", "up"])?;
        run(
            "ip",
            &[
                "link", "add", &inside, "netns", &namespace, "type", "veth", "peer", "name", &port,
                "netns", hub,
            ],
        )?;
        run(
            "ip",
            &[
                "-n",
                &namespace,
                "link",
                "set",
                &inside,
                "name",
                NODE_INTERFACE,
            ],
        )?;
        let address = format!("{}/24", self.address(id));
        run(
            "ip",
            &[
                "-n",
                &namespace,
                "addr",
                "add",
                &address,
                "dev",
                NODE_INTERFACE,
            ],
        )?;
        run(
            "ip",
            &["-n", &namespace, "link", "set", NODE_INTERFACE, "up"],
        )?;
        run(
            "ip",
            &["-n", hub, "link", "set", &port, "master", bridge, "up"],
        )?;
        Ok(())
    }

    /// The root namespace's veth pair to a port of `bridge` in `hub`, holding the root address.
    fn add_root_link(&self, hub: &str, bridge: &str) -> Result<(), NetworkError> {
        let root = self.root_link();
        let port = format!("{}-root-b", self.prefix);
        run(
            "ip",
            &[
                "link", "add", &root, "type", "veth", "peer", "name", &port, "netns", hub,
            ],
        )?;
        run(
            "ip",
            &["-n", hub, "link", "set", &port, "master", bridge, "up"],
        )?;
        let address = format!("{}/24", self.root_address());
        run("ip", &["addr", "add", &address, "dev", &root])?;
        run("ip", &["link", "set", &root, "up"])?;
        Ok(())
    }

    /// The prefix of every name.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// How many nodes.
    pub fn nodes(&self) -> u32 {
        self.nodes
    }

    /// The namespace of node `id` (1-based).
    pub fn namespace(&self, id: u32) -> String {
        format!("{}-n{id}", self.prefix)
    }

    /// The hub namespace holding the bridge.
    pub fn hub(&self) -> String {
        format!("{}-hub", self.prefix)
    }

    /// The root namespace's end of its link to the bridge.
    pub fn root_link(&self) -> String {
        format!("{}-root", self.prefix)
    }

    /// Node `id`'s address.
    pub fn address(&self, id: u32) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, u8::try_from(id).unwrap_or(u8::MAX))
    }

    /// The root namespace's address on the test subnet.
    pub fn root_address(&self) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, ROOT_HOST)
    }

    /// Inside node `to`'s namespace, drops every packet arriving from `from` (addresses),
    /// replacing the rules set before; drops also `loss_percent` of the other packets arriving
    /// on its interface (0: none). Packets to and from its own loopback are never touched.
    pub fn set_filter(
        &self,
        to: u32,
        from: &[Ipv4Addr],
        loss_percent: u32,
    ) -> Result<(), NetworkError> {
        let mut script = format!(
            "table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\ntable inet {NFT_TABLE} {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n"
        );
        if !from.is_empty() {
            let set = from
                .iter()
                .map(Ipv4Addr::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            script.push_str(&format!("    ip saddr {{ {set} }} drop\n"));
        }
        if loss_percent >= 100 {
            script.push_str(&format!("    iifname \"{NODE_INTERFACE}\" drop\n"));
        } else if loss_percent > 0 {
            script.push_str(&format!(
                "    iifname \"{NODE_INTERFACE}\" numgen random mod 100 < {loss_percent} drop\n"
            ));
        }
        script.push_str("  }\n}\n");
        nft_script(&self.namespace(to), &script)
    }

    /// Removes node `id`'s packet filter (a heal).
    pub fn clear_filter(&self, id: u32) -> Result<(), NetworkError> {
        // `table ...` first makes the delete succeed whether or not the table exists.
        nft_script(
            &self.namespace(id),
            &format!("table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n"),
        )
    }

    /// Slows node `id`'s outgoing packets: `tc netem` delay when the kernel has it, else a
    /// token-bucket rate limit (queueing delay under load). Returns what it applied, in words.
    pub fn set_latency(&self, id: u32, delay_ms: u32) -> Result<String, NetworkError> {
        let namespace = self.namespace(id);
        let delay = format!("{delay_ms}ms");
        let jitter = format!("{}ms", delay_ms / 4);
        let netem = run_in(
            &namespace,
            "tc",
            &[
                "qdisc",
                "replace",
                "dev",
                NODE_INTERFACE,
                "root",
                "netem",
                "delay",
                &delay,
                &jitter,
            ],
        );
        match netem {
            Ok(_) => Ok(format!("netem delay {delay} ± {jitter}")),
            Err(netem_error) => {
                // Kernels built without sch_netem (some VMs): a slow link instead, whose queue
                // delays packets by up to `delay` once it fills.
                let latency = format!("{delay_ms}ms");
                run_in(
                    &namespace,
                    "tc",
                    &[
                        "qdisc",
                        "replace",
                        "dev",
                        NODE_INTERFACE,
                        "root",
                        "tbf",
                        "rate",
                        "2mbit",
                        "burst",
                        "8kb",
                        "latency",
                        &latency,
                    ],
                )
                .map_err(|tbf_error| {
                    NetworkError::Invalid(format!(
                        "neither netem ({netem_error}) nor tbf ({tbf_error}) works"
                    ))
                })?;
                Ok(format!(
                    "tbf rate 2mbit, queue up to {latency} (the kernel has no netem)"
                ))
            }
        }
    }

    /// Removes node `id`'s latency qdisc.
    pub fn clear_latency(&self, id: u32) -> Result<(), NetworkError> {
        // Fails when none is set: fine.
        let _ = run_in(
            &self.namespace(id),
            "tc",
            &["qdisc", "del", "dev", NODE_INTERFACE, "root"],
        );
        Ok(())
    }

    /// Deletes everything (also done on drop); idempotent.
    pub fn teardown(&mut self) -> Result<(), NetworkError> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        let mut first_error = None;
        for namespace in (1..=self.nodes)
            .map(|id| self.namespace(id))
            .chain([self.hub()])
        {
            if namespaces()?.contains(&namespace) {
                if let Err(error) = delete_namespace(&namespace) {
                    first_error.get_or_insert(error);
                }
            }
        }
        // The root link went with its peer in the hub; a leftover is removed by prefix.
        if let Err(error) = cleanup_leftovers(&self.prefix) {
            first_error.get_or_insert(error);
        }
        release(&self.prefix);
        match first_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        if let Err(error) = self.teardown() {
            eprintln!("brook-jepsen: tearing the test network down: {error}");
        }
    }
}
