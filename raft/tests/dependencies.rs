//! `raft/` depends on no runtime: its normal dependencies are an allowlist of small crates
//! (`cargo tree -p brook-raft -e normal` shows their whole graph). Adding tokio, madsim,
//! brook-actors or anything else here fails this test; widen the list only for a crate that
//! does no IO, reads no clock and draws no randomness of its own.

/// The only crates `[dependencies]` may name.
const ALLOWED: [&str; 3] = ["rand_chacha", "serde", "thiserror"];

/// The crate names under `[dependencies]` that are not allowed.
fn disallowed_dependencies(manifest: &str) -> Vec<String> {
    let mut in_dependencies = false;
    let mut found = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            // Under `[dependencies.name]` the keys are the crate's, not crate names.
            in_dependencies = line == "[dependencies]";
            if let Some(name) = line
                .strip_prefix("[dependencies.")
                .and_then(|rest| rest.strip_suffix(']'))
            {
                if !ALLOWED.contains(&name) {
                    found.push(name.to_string());
                }
            }
            continue;
        }
        if !in_dependencies || line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name = line
            .split(['=', '.', ' '])
            .next()
            .unwrap_or_default()
            .trim_matches('"');
        if !ALLOWED.contains(&name) {
            found.push(name.to_string());
        }
    }
    found
}

#[test]
fn the_raft_crate_depends_on_no_runtime() {
    let manifest = include_str!("../Cargo.toml");
    assert_eq!(disallowed_dependencies(manifest), Vec::<String>::new());
}

#[test]
fn a_runtime_dependency_is_caught() {
    let manifest = include_str!("../Cargo.toml").replace(
        "[dependencies]\n",
        "[dependencies]\ntokio.workspace = true\nbrook-actors = { path = \"../actors\" }\n",
    );
    assert_eq!(
        disallowed_dependencies(&manifest),
        vec!["tokio".to_string(), "brook-actors".to_string()]
    );
    let manifest = format!(
        "{}\n[dependencies.madsim]\nversion = \"0.2\"\n",
        include_str!("../Cargo.toml")
    );
    assert_eq!(
        disallowed_dependencies(&manifest),
        vec!["madsim".to_string()]
    );
}
