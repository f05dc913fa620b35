//! The layout's rules, checked over the `use` lines and paths of `src/` (docs/architecture.md):
//!
//! - no import circle between the crate's modules (a parent declaring or re-exporting its
//!   children is not an import);
//! - nothing below the plumbing (`layer`, `service`, `future`) imports from it;
//! - `policy/` imports only its own modules, `http`, `bytes`, `httpdate`, `sfv` and `std`;
//! - `store/` knows only blobs and keys; `envelope/` knows nothing of HTTP decisions;
//! - no file under `src/` (nor under `crates/*/src/`) is over 600 lines;
//! - the core has no client-library or command-line features or dependencies: those are the
//!   crates under `crates/`, which use its public API only (they are other crates).
//!
//! A small parser, std only: comments are dropped, `use` trees are expanded, `super::` is
//! resolved against the file (and inline `mod tests { .. }`), and crate-root re-exports
//! (`crate::CacheKey`) are resolved through `lib.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The front ends (the tower layer and service, settings from a file) and the request future.
/// (reqwest's middleware is the crate `hyper-client-cache-reqwest`.)
const PLUMBING: &[&str] = &["layer", "service", "future", "settings"];
const MAX_LINES: usize = 600;

struct Source {
    module: String,
    path: PathBuf,
    text: String,
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    if parts.is_empty() {
        "crate".into()
    } else {
        parts.join("::")
    }
}

/// The text without comments (line and block) and without string and char literals' contents.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            while i < b.len() && !b[i..].starts_with(b"*/") {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// Expands `a::{b, c::{d, e}}` into `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(open) = tree.find('{') else {
        return vec![tree];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.len() - 1];
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .filter(|i| !i.is_empty())
        .flat_map(|i| expand(&format!("{prefix}{i}")))
        .collect()
}

/// Every path (as written) in `code`, with the module `super` means where it stands.
fn paths(code: &str, module: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    // Inline modules (`mod tests {`): `super` inside one is the file's module.
    let mut inline_opens: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    let bytes = code.as_bytes();
    let mut i = 0;
    let parent = |m: &str| match m.rsplit_once("::") {
        Some((p, _)) => p.to_owned(),
        None => "crate".to_owned(),
    };
    while i < bytes.len() {
        let rest = &code[i..];
        let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if boundary && rest.starts_with("mod ") {
            let after = &rest[4..];
            let name_len = after
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if after[name_len..].trim_start().starts_with('{') {
                inline_opens.push(depth + 1);
            }
        }
        let here = if inline_opens.is_empty() {
            parent(module)
        } else {
            module.to_owned()
        };
        if boundary && rest.starts_with("use ") {
            let end = rest.find(';').unwrap_or(rest.len());
            for p in expand(&rest[4..end]) {
                out.push((p, here.clone()));
            }
            i += end;
            continue;
        }
        if boundary && (rest.starts_with("crate::") || rest.starts_with("super::")) {
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            out.push((rest[..end].to_owned(), here));
            i += end;
            continue;
        }
        match bytes[i] {
            b'{' => depth += 1,
            b'}' => {
                if inline_opens.last() == Some(&depth) {
                    inline_opens.pop();
                }
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// `(from, to)` module imports.
type Edges = BTreeSet<(String, String)>;
/// The external crates each module names.
type External = BTreeMap<String, BTreeSet<String>>;

struct Crate {
    sources: Vec<Source>,
    modules: BTreeSet<String>,
    /// Names re-exported at the crate root, and the module that defines them.
    root: BTreeMap<String, String>,
    dependencies: BTreeSet<String>,
}

impl Crate {
    fn load() -> Self {
        // ARCH_CHECK_DIR: check another checkout (to see a rule fail on an older tree).
        let dir = std::env::var_os("ARCH_CHECK_DIR")
            .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
        let top = dir.as_path();
        let src = top.join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        files.sort();
        let sources: Vec<Source> = files
            .iter()
            .map(|f| Source {
                module: module_of(&src, f),
                path: f.clone(),
                text: fs::read_to_string(f).unwrap(),
            })
            .collect();
        let modules: BTreeSet<String> = sources.iter().map(|s| s.module.clone()).collect();
        let mut this = Crate {
            modules,
            root: BTreeMap::new(),
            dependencies: BTreeSet::new(),
            sources: Vec::new(),
        };
        let lib = sources.iter().find(|s| s.module == "crate").unwrap();
        for (path, _) in paths(&code_only(&lib.text), "crate") {
            if let Some(module) = this.module_of_path(&path, "crate") {
                if let Some((_, name)) = path.rsplit_once("::") {
                    this.root.insert(name.to_owned(), module);
                }
            }
        }
        let manifest = fs::read_to_string(top.join("Cargo.toml")).unwrap();
        let mut in_deps = false;
        for line in manifest.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                in_deps = line.ends_with("dependencies]") && !line.contains("dev-");
                continue;
            }
            if let (true, Some((name, _))) = (in_deps, line.split_once('=')) {
                this.dependencies.insert(name.trim().replace('-', "_"));
            }
        }
        this.sources = sources;
        this
    }

    /// The module a crate path points into: the longest module prefix of it.
    fn module_of_path(&self, path: &str, here: &str) -> Option<String> {
        let mut segments: Vec<&str> = path.split("::").collect();
        let mut base: Vec<String> = match segments.first() {
            Some(&"crate") => Vec::new(),
            Some(&"super") => {
                let mut base: Vec<String> = if here == "crate" {
                    Vec::new()
                } else {
                    here.split("::").map(str::to_owned).collect()
                };
                segments.remove(0);
                while segments.first() == Some(&"super") {
                    base.pop();
                    segments.remove(0);
                }
                segments.insert(0, "crate");
                std::mem::take(&mut base)
            }
            _ => return None,
        };
        let mut best = None;
        for segment in &segments[1..] {
            base.push((*segment).to_owned());
            let candidate = base.join("::");
            if self.modules.contains(&candidate) {
                best = Some(candidate);
            }
        }
        best.or_else(|| {
            // `crate::Name`: a root re-export.
            segments
                .get(1)
                .and_then(|name| self.root.get(*name).cloned())
        })
    }

    /// `(from, to)` module edges, and the external crates each module names.
    fn edges(&self) -> (Edges, External) {
        let mut edges = Edges::new();
        let mut external = External::new();
        for s in &self.sources {
            if PUBLIC_API_USERS.contains(&s.module.as_str()) {
                continue;
            }
            let code = code_only(&s.text);
            for (path, here) in paths(&code, &s.module) {
                let first = path.split("::").next().unwrap_or("");
                if first == "crate" || first == "super" {
                    if let Some(to) = self.module_of_path(&path, &here) {
                        let child =
                            to.starts_with(&format!("{}::", s.module)) || s.module == "crate";
                        if to != s.module && to != "crate" && !child {
                            edges.insert((s.module.clone(), to));
                        }
                    }
                } else if first.starts_with(|c: char| c.is_ascii_lowercase())
                    && first != "self"
                    && !krate_has_child(&self.modules, &s.module, first)
                {
                    external
                        .entry(s.module.clone())
                        .or_default()
                        .insert(first.to_owned());
                }
            }
            // Paths to dependencies written inline (`tokio::spawn(..)`).
            for dep in &self.dependencies {
                let needle = format!("{dep}::");
                let found = code.match_indices(&needle).any(|(i, _)| {
                    i == 0 || {
                        let c = code.as_bytes()[i - 1];
                        !(c.is_ascii_alphanumeric() || c == b'_' || c == b':')
                    }
                });
                if found {
                    external
                        .entry(s.module.clone())
                        .or_default()
                        .insert(dep.clone());
                }
            }
        }
        (edges, external)
    }
}

/// `name` is a child module of `module` (a relative path such as `cache_control::Foo`).
fn krate_has_child(modules: &BTreeSet<String>, module: &str, name: &str) -> bool {
    let path = if module == "crate" {
        name.to_owned()
    } else {
        format!("{module}::{name}")
    };
    modules.contains(&path)
}

/// Test-support code written against the public API, as a user's test is (compiled only with
/// the `test-util` feature): it drives a whole `CacheLayer` over a store, so the layering rules
/// do not apply to it.
const PUBLIC_API_USERS: &[&str] = &["store::conformance"];

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

#[test]
fn no_import_circles() {
    let krate = Crate::load();
    let (edges, _) = krate.edges();
    let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in &edges {
        graph.entry(from).or_default().push(to);
    }
    // Depth-first search for a back edge; report the circle.
    fn visit<'a>(
        node: &'a str,
        graph: &BTreeMap<&'a str, Vec<&'a str>>,
        stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| *n == node) {
            let mut circle: Vec<String> = stack[at..].iter().map(|s| s.to_string()).collect();
            circle.push(node.to_owned());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node);
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(node);
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(circle) = visit(node, &graph, &mut Vec::new(), &mut done) {
            panic!("import circle: {}", circle.join(" -> "));
        }
    }
    assert!(
        edges.len() > 40,
        "the parser found too few imports: {edges:?}"
    );
}

#[test]
fn nothing_below_the_plumbing_imports_from_it() {
    let krate = Crate::load();
    let (edges, _) = krate.edges();
    let bad: Vec<_> = edges
        .iter()
        .filter(|(from, to)| PLUMBING.contains(&top(to)) && !PLUMBING.contains(&top(from)))
        .collect();
    assert!(bad.is_empty(), "imports up into the plumbing: {bad:?}");
}

#[test]
fn policy_uses_only_http_and_std_and_its_own_types() {
    let krate = Crate::load();
    let (edges, external) = krate.edges();
    let bad: Vec<_> = edges
        .iter()
        .filter(|(from, to)| top(from) == "policy" && top(to) != "policy")
        .collect();
    assert!(
        bad.is_empty(),
        "policy/ imports from the rest of the crate: {bad:?}"
    );
    let allowed = ["std", "core", "http", "bytes", "httpdate", "sfv"];
    for (module, crates) in &external {
        if top(module) == "policy" {
            let extra: Vec<_> = crates
                .iter()
                .filter(|c| !allowed.contains(&c.as_str()))
                .collect();
            assert!(extra.is_empty(), "{module} uses {extra:?}");
        }
    }
    assert!(
        external.contains_key("policy::decision"),
        "the parser saw no `use http`"
    );
}

#[test]
fn stores_know_only_blobs_and_keys_and_the_envelope_no_decisions() {
    let krate = Crate::load();
    let (edges, _) = krate.edges();
    let rules: &[(&str, &[&str])] = &[
        // `metrics::export`: store operations are observed (timed, counted), never decided on.
        (
            "store",
            &["store", "key", "error", "clock", "timer", "rt", "metrics"],
        ),
        ("envelope", &["envelope", "entry", "error", "key"]),
    ];
    for (room, may) in rules {
        let bad: Vec<_> = edges
            .iter()
            .filter(|(from, to)| top(from) == *room && !may.contains(&top(to)))
            .collect();
        assert!(bad.is_empty(), "{room}/ imports {bad:?}");
    }
}

#[test]
fn no_file_under_src_is_over_600_lines() {
    let krate = Crate::load();
    let mut files: Vec<PathBuf> = krate.sources.iter().map(|s| s.path.clone()).collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for entry in fs::read_dir(root.join("crates")).unwrap() {
        let src = entry.unwrap().path().join("src");
        if src.is_dir() {
            rust_files(&src, &mut files);
        }
    }
    assert!(files.iter().any(|f| f.starts_with(root.join("crates"))));
    let long: Vec<_> = files
        .iter()
        .map(|f| {
            (
                f.display().to_string(),
                fs::read_to_string(f).unwrap().lines().count(),
            )
        })
        .filter(|(_, n)| *n > MAX_LINES)
        .collect();
    assert!(long.is_empty(), "files over {MAX_LINES} lines: {long:?}");
}

/// The checkout checked: this one, or `ARCH_CHECK_DIR`'s.
fn checked_dir() -> PathBuf {
    std::env::var_os("ARCH_CHECK_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

/// The sections of a manifest: `[name]` → its `key = ...` lines' keys.
fn manifest_sections(manifest: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in manifest.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            out.entry(section.clone()).or_default();
        } else if let Some((key, _)) = line.split_once('=') {
            if !line.starts_with('#') {
                out.entry(section.clone())
                    .or_default()
                    .insert(key.trim().to_owned());
            }
        }
    }
    out
}

/// #29: reqwest and the CLI are crates of their own. The core's features and normal
/// dependencies name none of theirs, so its version does not follow reqwest-middleware's and
/// a library user's feature list pulls no CLI crates.
#[test]
fn the_core_has_no_reqwest_or_cli_features_or_dependencies() {
    let root = checked_dir();
    let root = root.as_path();
    let sections = manifest_sections(&fs::read_to_string(root.join("Cargo.toml")).unwrap());
    let features = &sections["features"];
    for feature in ["cli", "reqwest", "reqwest-cookies"] {
        assert!(
            !features.contains(feature),
            "feature `{feature}` in the core"
        );
    }
    let normal: BTreeSet<&String> = sections
        .iter()
        .filter(|(name, _)| name.ends_with("dependencies") && !name.contains("dev-"))
        .flat_map(|(_, keys)| keys)
        .collect();
    for dependency in [
        "clap",
        "indicatif",
        "serde_json",
        "toml",
        "reqwest",
        "reqwest-middleware",
        "async-trait",
        "anyhow",
    ] {
        assert!(
            !normal.contains(&dependency.to_owned()),
            "the core depends on {dependency}"
        );
    }
    for krate in ["crates/hyper-client-cache-reqwest", "crates/hcc"] {
        let manifest = fs::read_to_string(root.join(krate).join("Cargo.toml")).unwrap();
        assert!(
            manifest.contains("hyper-client-cache = { version = \"0.1.0\", path = \"../..\""),
            "{krate} depends on the core by path and version"
        );
    }
}

#[test]
fn the_parser_expands_use_trees_and_resolves_super() {
    assert_eq!(
        expand("crate::a::{b, c::{d, e}}"),
        ["crate::a::b", "crate::a::c::d", "crate::a::c::e"]
    );
    let got = paths("use super::{x::Y, z};\nmod tests { use super::*; }", "p::q");
    assert_eq!(got[0], ("super::x::Y".into(), "p".into()));
    assert_eq!(got[2], ("super::*".into(), "p::q".into()));
    assert_eq!(
        code_only("a // crate::x\nb \"crate::y\" /* crate::z */"),
        "a \nb \"\" "
    );
}
