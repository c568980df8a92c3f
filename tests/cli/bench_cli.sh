#!/usr/bin/env bash
# `megaqwen bench` on the CPU backend with a tiny synthetic model: exit codes, tables, the JSON
# schema, the NVML-absent path (power n/a, not failure), the output hash against `megaqwen run`,
# the built-in prompts against scripts/peers/prompts.json. No speed is asserted.
set -u
BIN=${1:?usage: bench_cli.sh MEGAQWEN_BINARY}
case $BIN in /*) ;; *) BIN=$PWD/$BIN;; esac
cd "$(dirname "$0")/../.." || exit 1
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fails=0; passes=0
ok() { passes=$((passes+1)); }
bad() { fails=$((fails+1)); echo "FAIL: $*"; }
expect() { # expect CODE DESC -- cmd...
  local want=$1 desc=$2; shift 3
  "$@" >"$T/out" 2>"$T/err"; local got=$?
  [ "$got" = "$want" ] && ok || { bad "$desc: exit $got, want $want"; sed 's/^/  stderr: /' "$T/err" | head -5; }
}
jq_() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

expect 0 "bench --help" -- "$BIN" bench --help
expect 2 "bench without -m" -- "$BIN" bench -n 4
expect 2 "bench bad -n" -- "$BIN" bench -m x -n 0
expect 2 "bench bad --ctx" -- "$BIN" bench -m x --ctx 16,,32
expect 2 "bench bad --bw" -- "$BIN" bench -m x --bw fast
expect 2 "bench unknown option" -- "$BIN" bench -m x --frob
printf '{"prompts": [{"ids": [1, -2]}]}' >"$T/badp.json"
expect 2 "bench bad prompts file" -- "$BIN" bench -m x --prompts "$T/badp.json"
grep -q "want {\"prompts\"" "$T/err" && ok || bad "bad prompts message: $(cat "$T/err")"
expect 1 "bench missing model" -- "$BIN" bench -m "$T/nope" --idle-s 0 --power-s 0
[ "$(wc -l <"$T/err")" = 1 ] && ok || bad "missing model: not one stderr line"

# The built-in prompts are the ones the peers use.
expect 0 "print prompts" -- "$BIN" bench --print-prompts
python3 -c "
import json, sys
a = json.load(open('$T/out')); b = [p['ids'] for p in json.load(open('scripts/peers/prompts.json'))['prompts']]
sys.exit(a != b)" && ok || bad "built-in prompts differ from scripts/peers/prompts.json"

M="$T/tiny"
if ! "$BIN" synth --shape tiny --seed 3 -o "$M" >/dev/null 2>&1; then
  bad "synth tiny failed"; echo "bench_cli: $passes passed, $fails failed"; exit 1
fi
run_bench() { MQ_NVML_LIB=/nonexistent/libnvidia-ml.so.1 "$BIN" bench -m "$M" --backend cpu --threads 1 -n 8 \
  --ctx 16,40,99999999 --warmup 1 --power-s 0.2 --idle-s 0.1 --hz 50 "$@"; }
expect 0 "bench cpu tiny" -- run_bench --json "$T/b.json"
cp "$T/out" "$T/b.md"
[ "$(grep -c '^| [0-2] | 1[2-4] |' "$T/b.md")" = 3 ] && ok || bad "want 3 prompt rows"; 
grep -q '^| \*\*all\*\* |' "$T/b.md" && ok || bad "no summary row"
grep -q '^| 16 | [0-9]' "$T/b.md" && grep -q '^| 40 | [0-9]' "$T/b.md" && ok || bad "sweep rows"
grep -q '^| 99999999 | n/a (exceeds' "$T/b.md" && ok || bad "too-deep sweep row not n/a"
grep -q '^| n/a | n/a | n/a | n/a (n/a) | [0-9.]* | n/a |' "$T/b.md" && ok || bad "power row not n/a: $(grep -A2 'idle (W)' "$T/b.md")"
grep -q 'n/a: /nonexistent/libnvidia-ml.so.1 could not be loaded' "$T/b.md" && ok || bad "NVML reason missing"
python3 scripts/report/schema.py "$T/b.json" && ok || bad "bench JSON fails the schema"
[ "$(jq_ "$T/b.json" 'd["power"]["status"], d["power"]["avg_w"], d["power"]["tok_per_j"], d["framework"]')" = "('n/a', None, None, 'megaqwen-cpu')" ] \
  && ok || bad "power JSON not n/a"
[ "$(jq_ "$T/b.json" 'len(d["prompts"]), d["decode_tokens"], [s["status"] for s in d["ctx_sweep"]]')" = \
  "(3, 8, ['ok', 'ok', \"exceeds the model's context\"])" ] && ok || bad "prompt/sweep shape in JSON"
[ "$(jq_ "$T/b.json" 'd["bandwidth"]["source"], d["bandwidth"]["gb_s"]')" = "('assumed', 3000)" ] && ok || bad "bandwidth default"
# each reached depth carries the hash of its decoded ids (table and JSON), the same run after run
grep -qE '^\| 16 \| [0-9.]+ \|.*\| [0-9a-f]{16} \|$' "$T/b.md" && ok || bad "sweep row without its fnv1a"
[ "$(jq_ "$T/b.json" '[len(s["fnv1a"]) for s in d["ctx_sweep"][:2]], "fnv1a" in d["ctx_sweep"][2]')" = "([16, 16], False)" ] \
  && ok || bad "sweep fnv1a in JSON"
# GB/s = (weights + KV at the mean depth) x tok/s, consistent with the config it reports
python3 - "$T/b.json" <<'PY' && ok || bad "GB/s arithmetic"
import json, sys
d = json.load(open(sys.argv[1])); c = d["config"]; n = d["decode_tokens"]
for p in d["prompts"]:
    assert c["kv_elt_bytes"] == 4, c  # the CPU backend's cache is fp32
    b = c["weight_bytes"] + 2 * c["n_layers"] * (p["tokens"] + n / 2) * c["n_kv_heads"] * c["head_dim"] * c["kv_elt_bytes"]
    assert abs(b * p["decode_tok_s"] / 1e9 - p["gb_s"]) < 1e-6 * p["gb_s"] + 1e-9, p
    assert abs(p["pct_floor"] - 100 * p["gb_s"] / 3000) < 1e-9
    assert abs(p["ms_per_token"] * p["decode_tok_s"] - 1000) < 1e-6
PY

# Same greedy ids as `megaqwen run`: the hash of first + n tokens for prompt 0.
P0=$(python3 -c "import json; print(','.join(map(str, json.load(open('scripts/peers/prompts.json'))['prompts'][0]['ids'])))")
V=$(jq_ "$M/config.json" 'd["vocab_size"]')
P0=$(python3 -c "print(','.join(str(int(i) % $V) for i in '$P0'.split(',')))")
expect 0 "run prompt 0" -- "$BIN" run -m "$M" --prompt-ids "$P0" -n 9 --temp 0 --ids --ignore-eos --backend cpu --threads 1
H=$(python3 -c "
import sys; sys.path.insert(0, 'scripts/peers'); import common
print('%016x' % common.fnv1a([int(x) for x in open('$T/out').read().strip().split(',')]))")
[ "$H" = "$(jq_ "$T/b.json" 'd["prompts"][0]["fnv1a"]')" ] && ok || bad "bench hash $(jq_ "$T/b.json" 'd["prompts"][0]["fnv1a"]') != run's $H"

# Deterministic answer, --bw labelled given, a prompts file, --ctx none.
printf '{"prompts": [{"ids": [5, 6, 7]}, {"ids": [9]}]}' >"$T/p.json"
expect 0 "bench again" -- run_bench --json "$T/b2.json" --bw 100
[ "$(jq_ "$T/b.json" 'd["fnv1a"]')" = "$(jq_ "$T/b2.json" 'd["fnv1a"]')" ] && ok || bad "greedy hash not reproducible"
[ "$(jq_ "$T/b.json" '[s.get("fnv1a") for s in d["ctx_sweep"]]')" = "$(jq_ "$T/b2.json" '[s.get("fnv1a") for s in d["ctx_sweep"]]')" ] \
  && ok || bad "sweep hashes not reproducible"
[ "$(jq_ "$T/b2.json" 'd["bandwidth"]["source"], d["bandwidth"]["gb_s"]')" = "('given', 100)" ] && ok || bad "--bw not recorded"
expect 0 "bench prompts file" -- "$BIN" bench -m "$M" --backend cpu --threads 1 -n 4 --ctx none --power-s 0 --idle-s 0 \
  --prompts "$T/p.json" --json "$T/b3.json" --bw 2000 --bw-source "measured: test"
[ "$(jq_ "$T/b3.json" '[p["tokens"] for p in d["prompts"]], d["ctx_sweep"], d["power"]["seconds"], d["bandwidth"]["source"]')" = \
  "([3, 1], [], None, 'measured: test')" ] && ok || bad "prompts file / ctx none / no power phase / bw source"
grep -q "Bandwidth floor at 2000 GB/s (measured: test)" "$T/out" && ok || bad "bw source not printed"
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  expect 1 "bench cuda without GPU" -- "$BIN" bench -m "$M" --backend cuda -n 2 --ctx none --power-s 0 --idle-s 0
  [ "$(wc -l <"$T/err")" = 1 ] && ok || bad "cuda without GPU: not one stderr line: $(cat "$T/err")"
fi
# --sample: the model's generation_config sampling (seeded: the same hashes run after run), named in
# the table's header and the JSON; the sampled prompt 0 is the one `megaqwen run` samples
[ "$(jq_ "$T/b.json" 'd["decode_mode"], "sampling" in d')" = "('greedy', False)" ] && ok || bad "greedy decode_mode in JSON"
expect 0 "bench --sample" -- "$BIN" bench -m "$M" --backend cpu --threads 1 -n 8 --ctx 16 --power-s 0 --idle-s 0 --sample --json "$T/s1.json"
grep -q "decode tokens per prompt, sampled (temperature 0.6, top-k 20, top-p 0.95" "$T/out" && ok || bad "sampled header: $(grep 'decode tokens' "$T/out")"
python3 scripts/report/schema.py "$T/s1.json" && ok || bad "sampled bench JSON fails the schema"
[ "$(jq_ "$T/s1.json" 'd["decode_mode"], d["sampling"]["top_k"], d["sampling"]["seed"]')" = "('sampled', 20, 42)" ] && ok || bad "sampling in JSON"
expect 0 "bench --sample again" -- "$BIN" bench -m "$M" --backend cpu --threads 1 -n 8 --ctx 16 --power-s 0 --idle-s 0 --top-k 20 --json "$T/s2.json"
[ "$(jq_ "$T/s1.json" 'd["fnv1a"], d["ctx_sweep"][0]["fnv1a"]')" = "$(jq_ "$T/s2.json" 'd["fnv1a"], d["ctx_sweep"][0]["fnv1a"]')" ] \
  && ok || bad "sampled hashes not reproducible"
[ "$(jq_ "$T/s1.json" 'd["fnv1a"]')" != "$(jq_ "$T/b.json" 'd["fnv1a"]')" ] && ok || bad "sampled hash equals the greedy one"
expect 0 "run prompt 0 sampled" -- "$BIN" run -m "$M" --prompt-ids "$P0" -n 9 --ids --ignore-eos --backend cpu --threads 1
H=$(python3 -c "
import sys; sys.path.insert(0, 'scripts/peers'); import common
print('%016x' % common.fnv1a([int(x) for x in open('$T/out').read().strip().split(',')]))")
[ "$H" = "$(jq_ "$T/s1.json" 'd["prompts"][0]["fnv1a"]')" ] && ok || bad "sampled bench hash $(jq_ "$T/s1.json" 'd["prompts"][0]["fnv1a"]') != run's $H"
expect 0 "bench --temp 0 is greedy" -- "$BIN" bench -m "$M" --backend cpu --threads 1 -n 8 --ctx none --power-s 0 --idle-s 0 --temp 0 --json "$T/s3.json"
[ "$(jq_ "$T/s3.json" 'd["decode_mode"]')" = "greedy" ] && ok || bad "--temp 0 not greedy"
expect 2 "bench bad --top-p" -- "$BIN" bench -m "$M" --top-p 2
expect 1 "bench unwritable json" -- "$BIN" bench -m "$M" --backend cpu --threads 1 -n 2 --ctx none --power-s 0 --idle-s 0 \
  --json "$T/no/such/dir/b.json"

echo "bench_cli: $passes passed, $fails failed"
[ $fails = 0 ]
