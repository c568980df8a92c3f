#!/usr/bin/env bash
# server tests: bounded load (load.sh) and the official openai SDK (sdk.mjs) against megaqwen serve.
# usage: run.sh MEGAQWEN_BINARY [MODEL_DIR]  (without MODEL_DIR a tiny synthetic model is made)
set -u
BIN=$(readlink -f "${1:?usage: run.sh MEGAQWEN_BINARY [MODEL_DIR]}")
D=$(dirname "$(readlink -f "$0")")
T=$(mktemp -d); SPID=""
stop() { [ -n "$SPID" ] && kill "$SPID" 2>/dev/null && wait "$SPID" 2>/dev/null; SPID=""; }
trap 'stop; rm -rf "$T"' EXIT
fails=0
M=${2:-}
if [ -z "$M" ]; then M="$T/tiny"; "$BIN" synth --shape tiny --seed 1 -o "$M" >/dev/null 2>&1 || { echo "FAIL: synth"; exit 1; }; fi
start() { # start ARGS...: server on a free loopback port, URL in $U
  # empty the log first: the background job truncates it only once it runs, and until then the
  # loop below could read the previous server's URL
  : >"$T/log"
  ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=0:thread_local_quarantine_size_kb=0" "$BIN" serve -m "$M" --port 0 --backend cpu --threads 1 --max-ctx 256 "$@" >"$T/log" 2>&1 </dev/null &
  SPID=$!
  for _ in $(seq 100); do U=$(grep -o 'http://127.0.0.1:[0-9]*' "$T/log" | head -1); [ -n "$U" ] && return 0; sleep 0.1; done
  echo "FAIL: server did not start: $(cat "$T/log")"; return 1
}
if start --queue 8; then
  bash "$D/load.sh" "$U" "$SPID" || fails=$((fails+1))
else fails=$((fails+1)); fi
stop
if [ ! -d "$D/node_modules" ]; then (cd "$D" && npm ci --silent) || { echo "FAIL: npm ci in tests/server"; exit 1; }; fi
if start --api-key sk-test-h8; then
  MQ_URL="$U/v1" MQ_KEY=sk-test-h8 node "$D/sdk.mjs" || fails=$((fails+1))
else fails=$((fails+1)); fi
stop
[ "$fails" = 0 ] && echo "tests/server: all passed"
[ "$fails" = 0 ]
