#!/usr/bin/env bash
# scripts/bench-report.sh end to end on the CPU backend and a tiny synthetic model: every step runs
# (absent frameworks answer "not installed"), the report folder is complete and valid.
set -u
BIN=${1:?usage: bench_script.sh MEGAQWEN_BINARY}
case $BIN in /*) ;; *) BIN=$PWD/$BIN;; esac
cd "$(dirname "$0")/../.." || exit 1
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fails=0; passes=0
ok() { passes=$((passes+1)); }
bad() { fails=$((fails+1)); echo "FAIL: $*"; }
"$BIN" synth --shape tiny --seed 5 -o "$T/tiny" >/dev/null 2>&1 || { echo "FAIL: synth"; exit 1; }
# Where torch is installed the HF/gpt-fast steps would really run (minutes): skip them there.
SKIP=none; python3 -c "import torch" 2>/dev/null && SKIP=hf-eager,hf-static,gpt-fast,quality
MQ_NVML_LIB=/nonexistent scripts/bench-report.sh --bin "$BIN" --backend cpu --threads 1 -m "$T/tiny" -n 4 \
  --ctx 16,32 --power-s 0.1 --idle-s 0.1 --budget-s 120 --settle-s 0 --skip "$SKIP" -o "$T/rep" >"$T/out" 2>"$T/err"; rc=$?
[ $rc = 0 ] && ok || { bad "bench-report.sh exit $rc"; tail -20 "$T/err"; }
R="$T/rep/REPORT.md"
for f in REPORT.md results.json raw/meta.json raw/runs/megaqwen-cpu.json; do
  [ -s "$T/rep/$f" ] && ok || bad "missing $f"
done
grep -q '^| megaqwen-cpu | [0-9.]* | [0-9.]* |' "$R" && ok || bad "no megaqwen-cpu throughput row"
grep -q '^| 32 | [0-9.]* |' "$R" && ok || bad "no sweep row for 32"
grep -qF -- "- Command: \`scripts/bench-report.sh --bin $BIN --backend cpu" "$R" && ok || bad "command not recorded"
python3 scripts/report/schema.py "$T/rep/results.json" && ok || bad "results.json fails the schema"
# every runner has a row, whatever is installed here
n=$(python3 -c "import json; print(len(json.load(open('$T/rep/results.json'))['runs']))")
want=9; [ "$SKIP" = none ] || want=6
[ "$n" = $want ] && ok || bad "want $want rows (megaqwen + the peers run), got $n"
if ! python3 -c "import torch" 2>/dev/null; then
  grep -q '^| hf-eager | not installed | torch is not installed |' "$R" && ok || bad "hf-eager not-installed row"
  grep -q '^Not measured: torch is not installed' "$R" && ok || bad "quality not-installed line"
fi
grep -q 'n/a' "$T/rep/raw/megaqwen-cpu.out" && ok || bad "power not n/a without NVML"
echo "bench_script: $passes passed, $fails failed"
[ $fails = 0 ]
