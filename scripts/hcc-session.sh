#!/usr/bin/env bash
# The `hcc` session of docs/operations.md, from a real run: fills a temporary DiskStore
# directory as an application would (crates/hcc/examples/fill_demo.rs), runs the commands, and
# prints the session with the directory shown as /var/cache/app. `--write` puts it in
# docs/operations.md, between the `hcc-session` markers.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
# A demo key (never a real one): the variable's bytes are the key.
export HTTP_CACHE_KEY="0c5d3e1f8a9b2c4d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5"
cargo build -q -p hcc --bin hcc --example fill_demo
"$target/debug/examples/fill_demo" "$dir"

run() {  # run ARGS...: the command line and its output (stdout and stderr), as a terminal shows them
    local line="\$ hcc" arg
    for arg in "$@"; do
        case "$arg" in
            *[\*\?\ ]*) line+=" '$arg'" ;;
            *) line+=" $arg" ;;
        esac
    done
    printf '%s\n' "$line" | sed "s|$dir|/var/cache/app|g"
    local rc=0
    "$target/debug/hcc" "$@" >"$dir.out" 2>&1 || rc=$?
    sed "s|$dir|/var/cache/app|g" "$dir.out"
    rm -f "$dir.out"
    if [ "$rc" -ne 0 ]; then echo "(exit code $rc)"; fi
}

text=$(
    run --dir "$dir" stats
    run list --dir "$dir"
    run --dir "$dir" list --url 'api.example.com/v1/users/*' --json
    run --dir "$dir" show '127.0.0.1/*'
    run show '127.0.0.1:8080/*' --dir "$dir"
    run --dir "$dir" show 'https://api.example.com/v1/users/1'
    run --dir "$dir" verify
    run --dir "$dir" purge --expired
    run --dir "$dir" purge --tag users
    run --dir "$dir" verify --delete
    run --dir "$dir" stats --json
)
if [ "${1:-}" = "--write" ]; then
    python3 - "$text" <<'PY'
import sys
text = sys.argv[1]
path = "docs/operations.md"
doc = open(path).read()
start, end = "<!-- hcc-session:start -->\n", "<!-- hcc-session:end -->"
a, b = doc.index(start) + len(start), doc.index(end)
doc = doc[:a] + "```text\n" + text + "\n```\n" + doc[b:]
open(path, "w").write(doc)
PY
    echo "docs/operations.md: session rewritten"
else
    printf '%s\n' "$text"
fi
