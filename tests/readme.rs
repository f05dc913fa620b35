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
    let dependencies = &manifest[manifest.find("[dependencies]").expect("a [dependencies] table")..];
    assert!(
        blocks(&readme, "toml").iter().any(|b| b == dependencies),
        "no ```toml block of README.md is examples/readme/Cargo.toml's [dependencies]:\n{dependencies}"
    );
    assert!(
        blocks(&readme, "rust").iter().any(|b| b == &main),
        "no ```rust block of README.md is examples/readme/src/main.rs"
    );
}
