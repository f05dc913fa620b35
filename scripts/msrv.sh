#!/usr/bin/env bash
# The MSRV check (README, "Minimum supported Rust version"). With the MSRV toolchain installed
# (`rustup toolchain install <msrv>`), the library is built with it, all features. Without it, the
# build is skipped, and this says so; the static checks below run in any case:
# - no dependency of the library (normal dependencies, all features) declares a `rust-version`
#   above the crate's;
# - clippy's `incompatible_msrv` lint (on in `.ci/run`'s clippy step, which denies warnings)
#   flags any std API newer than `rust-version` that the crate itself uses.
set -euo pipefail
cd "$(dirname "$0")/.."
msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
[ -n "$msrv" ] || { echo "msrv: no rust-version in Cargo.toml" >&2; exit 1; }

# Every published crate of the workspace: the core, hyper-client-cache-reqwest and hcc.
deps=$(cargo tree -p hyper-client-cache -p hyper-client-cache-reqwest -p hcc -e normal --all-features --prefix none --format '{p}' \
    | sed 's/ (.*//; s/ v/ /' | sort -u)
cargo metadata --format-version 1 --all-features --locked | python3 -c '
import json, sys
msrv, deps = sys.argv[1], set(tuple(l.split(" ", 1)) for l in sys.argv[2].splitlines() if " " in l)
def v(s): return tuple(int(x) for x in (s.split(".") + ["0", "0"])[:3])
meta = json.load(sys.stdin)
bad = [(p["name"], p["version"], p["rust_version"]) for p in meta["packages"]
       if (p["name"], p["version"]) in deps and p.get("rust_version") and v(p["rust_version"]) > v(msrv)]
top = max(((v(p.get("rust_version") or "0"), p.get("rust_version"), p["name"]) for p in meta["packages"] if (p["name"], p["version"]) in deps))[1:]
if bad:
    print(f"msrv: dependencies need a newer Rust than {msrv}: {bad}"); sys.exit(1)
print(f"msrv: {len(deps)} dependencies (all features) declare at most rust-version {top[0]} ({top[1]}); the crate says {msrv}")
' "$msrv" "$deps"

if rustup toolchain list 2>/dev/null | grep -q "^$msrv"; then
    cargo "+$msrv" check -p hyper-client-cache -p hyper-client-cache-reqwest -p hcc --lib --bins --all-features
    echo "msrv: the crates build with Rust $msrv"
else
    echo "msrv: SKIPPED the build with Rust $msrv: that toolchain is not installed here"
    echo "      (rustup toolchain install $msrv, then run scripts/msrv.sh again)"
fi
