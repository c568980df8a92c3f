#!/usr/bin/env bash
# ab-bench: decode bench ABBA of several binaries and knob settings in one device call (timings compare only
# within one call). Each argument is LABEL:BINARY:SETTINGS, SETTINGS = "base" or comma-separated VAR=VALUE;
# rounds in order, then reversed ($AB_ROUNDS, default 3) at contexts $AB_CTX (default 16,1024), -n 128, on the
# synthetic 0.6B in $AB_MODEL (default /tmp/m06k, written by the first binary's synth when missing).
#   bash scripts/ab-bench.sh main:/tmp/bM/megaqwen:base new:/tmp/bK/megaqwen:MQ_CUDA_CLPF=3 > $OUT/ab.log 2>&1
cd "$(dirname "$0")/.."
. scripts/device-env.sh >/dev/null 2>&1
export MQ_TOKENIZER_DIR=$PWD/.deps/qwen3-tokenizer
[ $# -ge 1 ] || { echo "ab-bench: give LABEL:BINARY:SETTINGS arguments" >&2; exit 2; }
M=${AB_MODEL:-/tmp/m06k}
first=${1#*:}; first=${first%%:*}
[ -s "$M/config.json" ] || "$first" synth --shape qwen3-0.6b --seed 1 -o "$M" >/dev/null 2>&1 ||
  { echo "ab-bench: could not write the synthetic model with $first" >&2; exit 1; }
row() { awk -F'|' 'NF==9 && $2+0>0{printf "ctx %s %s tok/s %s | ", $2+0, $3+0, $8}'; }
L="$*"
for r in $(seq 1 "${AB_ROUNDS:-3}"); do
  for a in $L; do
    lab=${a%%:*} rest=${a#*:}
    bin=${rest%%:*} vars=${rest#*:}
    [ "$vars" = base ] && vars=
    echo "$r $lab: $(env $(echo "$vars" | tr , ' ') timeout 60 "$bin" bench -m "$M" --backend cuda --ctx "${AB_CTX:-16,1024}" \
      -n 128 --power-s 0 --idle-s 0 2>&1 | row)"
  done
  L=$(echo $L | tr ' ' '\n' | tac | tr '\n' ' ')
done
