#!/usr/bin/env bash
# CLI contract of run/logits/perplexity: exit codes (0 ok, 1 runtime, 2 usage), one error line,
# greedy determinism and --ids vs text consistency on a tiny synthetic checkpoint.
set -u
BIN=${1:?usage: run.sh MEGAQWEN_BINARY}
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fails=0; passes=0
expect() { # expect CODE DESC -- cmd...
  local want=$1 desc=$2; shift 3
  "$@" >"$T/out" 2>"$T/err"; local got=$?
  if [ "$got" = "$want" ]; then passes=$((passes+1)); else
    fails=$((fails+1)); echo "FAIL: $desc: exit $got, want $want"; sed 's/^/  stderr: /' "$T/err" | head -5; fi
}
one_line() { # the error is exactly one line on stderr
  local n; n=$(wc -l <"$T/err")
  if [ "$n" = 1 ]; then passes=$((passes+1)); else fails=$((fails+1)); echo "FAIL: $1: $n stderr lines"; cat "$T/err"; fi
}
expect 2 "no command" -- "$BIN"
expect 2 "unknown command" -- "$BIN" frobnicate
expect 0 "run --help" -- "$BIN" run --help
expect 2 "run without -m" -- "$BIN" run -p hi
expect 2 "run bad -n" -- "$BIN" run -m x -p hi -n abc
expect 2 "run two prompts" -- "$BIN" run -m x -p hi --prompt-ids 1
expect 2 "run bad ids" -- "$BIN" run -m x --prompt-ids 1,,2
expect 2 "run unknown option" -- "$BIN" run -m x -p hi --frob
expect 1 "run missing model dir" -- "$BIN" run -m "$T/nope" -p hi; one_line "missing model dir"
expect 2 "logits without -o" -- "$BIN" logits -m x --ids 1
expect 2 "perplexity without -f" -- "$BIN" perplexity -m x

M="$T/tiny"
if "$BIN" synth --shape tiny --seed 3 -o "$M" >/dev/null 2>&1; then
  expect 0 "greedy ids" -- "$BIN" run -m "$M" --prompt-ids 1,2,3 -n 12 --temp 0 --ids --backend cpu --ignore-eos
  a=$(cat "$T/out")
  expect 0 "greedy ids again" -- "$BIN" run -m "$M" --prompt-ids 1,2,3 -n 12 --temp 0 --ids --backend cpu --ignore-eos
  [ "$a" = "$(cat "$T/out")" ] && [ "$(echo "$a" | tr ',' '\n' | wc -l)" = 12 ] && passes=$((passes+1)) || { fails=$((fails+1)); echo "FAIL: greedy not deterministic or wrong count: $a"; }
  expect 0 "sampled seed 7" -- "$BIN" run -m "$M" --prompt-ids 5,6 -n 16 --temp 1 --top-k 50 --seed 7 --ids --backend cpu --ignore-eos
  s1=$(cat "$T/out")
  expect 0 "sampled seed 7 again" -- "$BIN" run -m "$M" --prompt-ids 5,6 -n 16 --temp 1 --top-k 50 --seed 7 --ids --backend cpu --ignore-eos
  [ "$s1" = "$(cat "$T/out")" ] && passes=$((passes+1)) || { fails=$((fails+1)); echo "FAIL: seeded sampling not reproducible"; }
  expect 1 "prompt past context" -- "$BIN" run -m "$M" --prompt-ids 1,2,3,4,5,6,7,8 -n 8 --max-ctx 10 --backend cpu; one_line "context overflow"
  expect 1 "id out of vocab" -- "$BIN" run -m "$M" --prompt-ids 99999999 -n 2 --ids --backend cpu; one_line "id out of vocab"
  expect 2 "unknown backend" -- "$BIN" run -m "$M" --prompt-ids 1 -n 2 --backend tpu
  expect 1 "unknown KV type" -- "$BIN" run -m "$M" --prompt-ids 1 -n 2 --kv-type f8 --backend cpu; one_line "unknown KV type"
  expect 0 "f16 KV on cpu" -- "$BIN" logits -m "$M" --ids 1,2,3,4,5,6,7,8 -o "$T/l16.f32" --kv-type f16 --backend cpu
  expect 0 "f32 KV logits" -- "$BIN" logits -m "$M" --ids 1,2,3,4,5,6,7,8 -o "$T/l32.f32" --kv-type f32 --backend cpu
  # the f16 rounding of K/V changes the logits a little (not at all would mean it was not applied)
  ! cmp -s "$T/l16.f32" "$T/l32.f32" && passes=$((passes+1)) || { fails=$((fails+1)); echo "FAIL: --kv-type f16 did not change the cpu logits"; }
  expect 0 "f32 KV on cpu" -- "$BIN" run -m "$M" --prompt-ids 1,2,3 -n 12 --temp 0 --ids --backend cpu --ignore-eos --kv-type f32
  if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    expect 1 "cuda without GPU" -- "$BIN" run -m "$M" --prompt-ids 1 -n 2 --backend cuda; one_line "cuda without GPU"
  fi
  expect 0 "logits" -- "$BIN" logits -m "$M" --ids 1,2,3,4 -o "$T/l.f32" --backend cpu
  V=$(python3 -c "import json;print(json.load(open('$M/config.json'))['vocab_size'])")
  [ "$(stat -c %s "$T/l.f32")" = $((4*4*V)) ] && passes=$((passes+1)) || { fails=$((fails+1)); echo "FAIL: logits file size"; }
  if [ -s "$M/tokenizer.json" ]; then
    printf 'The quick brown fox jumps over the lazy dog. %.0s' $(seq 1 30) >"$T/p.txt"
    expect 0 "perplexity" -- "$BIN" perplexity -m "$M" -f "$T/p.txt" --ctx 64 --stride 32 --backend cpu
    grep -qE '^perplexity [0-9.]+ \+/- [0-9.]+ over [0-9]+ tokens' "$T/out" && passes=$((passes+1)) || { fails=$((fails+1)); echo "FAIL: perplexity output: $(cat "$T/out")"; }
    expect 0 "run text" -- "$BIN" run -m "$M" -p "Hello there" -n 8 --temp 0 --backend cpu
  fi
else
  echo "FAIL: synth --shape tiny failed"; fails=$((fails+1))
fi
echo "$passes passed, $fails failed"
[ "$fails" = 0 ]
