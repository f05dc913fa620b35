//! The README's quickstart is a program that builds (examples/readme, a workspace member, built
//! by `cargo test --workspace`): its `[dependencies]` block and its code must be exactly the
//! README's, so that a stranger who copies both gets a program that compiles.

use std::fs;
use std::path::Path;

/// The contents of the fenced blocks of `text` whose info string starts with `lang`.
fn blocks(text: &str, lang: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match &mut current {
            None => {
                if let Some(info) = line.strip_prefix("```") {
                    if info.starts_with(lang) {
                        current = Some(String::new());
                    }
                }
            }
            Some(block) => {
                if line == "```" {
                    out.push(std::mem::take(block));
                    current = None;
                } else {
                    block.push_str(line);
                    block.push('\n');
                }
            }
        }
    }
    out
}

#[test]
fn the_readme_snippet_is_the_example_that_builds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = fs::read_to_string(root.join("README.md")).unwrap();
    let manifest = fs::read_to_string(root.join("examples/readme/Cargo.toml")).unwrap();
    let main = fs::read_to_string(root.join("examples/readme/src/main.rs")).unwrap();
    let dependencies = &manifest[manifest
        .find("\n[dependencies]\n")
        .map(|i| i + 1)
        .expect("a [dependencies] table")..];
    assert!(
        blocks(&readme, "toml").iter().any(|b| b == dependencies),
        "no ```toml block of README.md is examples/readme/Cargo.toml's [dependencies]:\n{dependencies}"
    );
    assert!(
        blocks(&readme, "rust").iter().any(|b| b == &main),
        "no ```rust block of README.md is examples/readme/src/main.rs"
    );
}

/// docs/operations.md's exporter line is the one the metrics example and tests/prometheus.rs
/// build with, and with it nothing in the workspace pulls aws-lc (#29).
#[test]
fn the_prometheus_exporter_line_avoids_aws_lc() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let guide = fs::read_to_string(root.join("docs/operations.md")).unwrap();
    let manifest = fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let line = blocks(&guide, "toml")
        .into_iter()
        .flat_map(|b| b.lines().map(str::to_owned).collect::<Vec<_>>())
        .find(|l| l.starts_with("metrics-exporter-prometheus"))
        .expect("docs/operations.md shows the exporter's dependency line");
    assert!(line.contains("default-features = false"), "{line}");
    assert!(
        manifest.lines().any(|l| l == line),
        "Cargo.toml's dev-dependency differs from the documented line {line}"
    );
    let lock = fs::read_to_string(root.join("Cargo.lock")).unwrap();
    assert!(
        !lock.contains("name = \"aws-lc"),
        "an aws-lc crate is in Cargo.lock"
    );
}

/// The front page (the crate docs, docs.rs's first page) lists every feature of Cargo.toml but
/// the fuzzing entry points (#29: it showed 6 of 10).
#[test]
fn the_front_page_lists_every_feature() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let lib = fs::read_to_string(root.join("src/lib.rs")).unwrap();
    let features: Vec<&str> = manifest
        .split("\n[features]\n")
        .nth(1)
        .unwrap()
        .split("\n[")
        .next()
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .filter_map(|l| l.split_once('=').map(|(name, _)| name.trim()))
        .filter(|name| *name != "default" && *name != "fuzzing")
        .collect();
    for feature in &features {
        assert!(
            lib.contains(&format!("//! | `{feature}` |")),
            "feature `{feature}` not in the front page's table"
        );
    }
}

/// The README's test command is the one `.ci/run` runs, and it covers every crate.
#[test]
fn ci_runs_the_readme_s_test_command() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = fs::read_to_string(root.join("README.md")).unwrap();
    let ci = fs::read_to_string(root.join(".ci/run")).unwrap();
    let command = blocks(&readme, "sh")
        .iter()
        .flat_map(|b| b.lines().map(str::to_owned).collect::<Vec<_>>())
        .find(|l| l.starts_with("cargo test"))
        .map(|l| l.split('#').next().unwrap_or_default().trim().to_owned())
        .expect("the README gives a test command");
    assert!(command.contains("--workspace"), "{command}");
    assert!(
        ci.lines().any(|l| l.trim() == command),
        ".ci/run does not run `{command}`"
    );
}
