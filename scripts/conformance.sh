#!/usr/bin/env bash
# Runs the public HTTP caching test suite (cache-tests.fyi) against this crate's layer, in
# examples/caching_proxy.rs, everything on 127.0.0.1.
#
# usage: scripts/conformance.sh [--private] [--list] [--floor REQUIRED OPTIMAL]
#   --private        run the proxy as a private cache, with the suite's browser-cache profile
#                    (default: a shared cache, the suite's CLI profile)
#   --list           print every failing test
#   --floor R O      exit 1 if fewer than R required or O optimal tests pass
#
# The suite comes from CACHE_TESTS_DIR when set, else ../shared/cache-tests when present, else the
# copy in scripts/cache-tests (commit b55b8bd, see its SNAPSHOT.md), else a clone of its public
# repository at that commit. It is copied to a scratch directory before `npm i` (its
# dependencies come from the npm registry).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SUITE_COMMIT=b55b8bd   # scripts/cache-tests/SNAPSHOT.md
if [ -n "${CACHE_TESTS_DIR:-}" ]; then SUITE_SRC=$CACHE_TESTS_DIR
elif [ -f "$ROOT/../shared/cache-tests/tests/index.mjs" ]; then SUITE_SRC=$ROOT/../shared/cache-tests
elif [ -f "$ROOT/scripts/cache-tests/tests/index.mjs" ]; then SUITE_SRC=$ROOT/scripts/cache-tests
else
  # No copy at hand: the suite's public repository at the pinned commit.
  SUITE_SRC=$(mktemp -d)/cache-tests
  git clone --quiet https://github.com/http-tests/cache-tests.git "$SUITE_SRC"
  git -C "$SUITE_SRC" checkout --quiet "$SUITE_COMMIT"
fi
[ -f "$SUITE_SRC/tests/index.mjs" ] || { echo "conformance: no test suite in $SUITE_SRC" >&2; exit 1; }
ORIGIN_PORT=${ORIGIN_PORT:-8000}
PROXY_PORT=${PROXY_PORT:-8080}
PRIVATE=""; LIST=""; FLOOR_R=0; FLOOR_O=0
while [ $# -gt 0 ]; do
  case "$1" in
    --private) PRIVATE="--private" ;;
    --list) LIST="--list" ;;
    --floor) FLOOR_R=$2; FLOOR_O=$3; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

command -v node >/dev/null && command -v npm >/dev/null || { echo "conformance: node and npm are needed" >&2; exit 1; }
for port in "$ORIGIN_PORT" "$PROXY_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "conformance: 127.0.0.1:$port is already in use (a server left over?); set ORIGIN_PORT / PROXY_PORT" >&2
    exit 1
  fi
done

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  # npm runs the suite's server as a child: kill the pid it wrote as well as npm's.
  if [ -f "$WORK/server.pid" ]; then kill "$(cat "$WORK/server.pid")" 2>/dev/null || true; fi
  for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

SUITE="$WORK/suite"
cp -r "$SUITE_SRC" "$SUITE"; chmod -R u+w "$SUITE"; rm -rf "$SUITE/node_modules"
( cd "$SUITE" && npm install --silent --omit=dev --no-audit --no-fund >/dev/null )

cargo build --release --example caching_proxy --quiet
"$ROOT/target/release/examples/caching_proxy" --listen "127.0.0.1:$PROXY_PORT" --origin "http://127.0.0.1:$ORIGIN_PORT" \
    --stale-on-error 3600 --accept-language-ties $PRIVATE 2>"$WORK/proxy.log" &
PIDS+=($!)

# The suite's origin, forced onto loopback by a preload that patches net.Server#listen.
( cd "$SUITE" && NODE_OPTIONS="--import $ROOT/scripts/loopback.mjs" npm_config_pidfile="$WORK/server.pid" \
    exec npm run --silent server --port="$ORIGIN_PORT" >"$WORK/server.log" 2>&1 ) &
PIDS+=($!)
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$ORIGIN_PORT") 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$PROXY_PORT") 2>/dev/null; then break; fi
  sleep 0.1
done

PROFILE=""; [ -n "$PRIVATE" ] && PROFILE="--browser"
node --no-warnings "$ROOT/scripts/conformance-run.mjs" "$SUITE" "http://127.0.0.1:$PROXY_PORT" $PROFILE \
    >"$WORK/results.json" 2>"$WORK/cli.log" || true
[ -n "${CONFORMANCE_RESULTS:-}" ] && cp "$WORK/results.json" "$CONFORMANCE_RESULTS"
if ! node -e 'JSON.parse(require("fs").readFileSync(process.argv[1]))' "$WORK/results.json" 2>/dev/null; then
  echo "conformance: the suite did not produce results" >&2
  cat "$WORK/cli.log" "$WORK/server.log" "$WORK/proxy.log" >&2 || true
  exit 1
fi
MODE=${PRIVATE:+private}; MODE=${MODE:-shared}
echo "HTTP caching test suite ($SUITE_SRC), $MODE cache:"
node "$ROOT/scripts/conformance-score.mjs" "$SUITE" "$WORK/results.json" $LIST | tee "$WORK/score.txt"
R=$(awk '/^required [0-9]+\// {split($2, a, "/"); print a[1]}' "$WORK/score.txt")
O=$(awk '/^optimal [0-9]+\// {split($2, a, "/"); print a[1]}' "$WORK/score.txt")
if [ "$R" -lt "$FLOOR_R" ] || [ "$O" -lt "$FLOOR_O" ]; then
  echo "conformance: below the floor ($R < $FLOOR_R required or $O < $FLOOR_O optimal)" >&2
  exit 1
fi
