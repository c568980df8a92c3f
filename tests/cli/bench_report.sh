#!/usr/bin/env bash
# Report generation from a fixed fixture (tables hold the right rows and values, charts are PNGs),
# the JSON schema check, the peer runners' "not installed" path and the python NVML-absent path.
# Needs python3 (stdlib only) and, for charts, gnuplot or matplotlib. No speed is asserted.
set -u
cd "$(dirname "$0")/../.." || exit 1
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fails=0; passes=0
ok() { passes=$((passes+1)); }
bad() { fails=$((fails+1)); echo "FAIL: $*"; }
has() { grep -qF -- "$2" "$1" && ok || bad "$3: '$2' not in $1"; }

# ---- report from the fixture
if python3 scripts/report/make_report.py --runs tests/report/runs --quality tests/report/quality.json \
     --meta tests/report/meta.json --out "$T/rep" >"$T/out" 2>"$T/err"; then ok; else bad "make_report exit $?"; cat "$T/err"; fi
R="$T/rep/REPORT.md"
has "$R" "| hf-eager | 50.00 | 80.0 | 12.500 | 96.6 | 3.2 | 2.00 GB (NVML) | 1.00x | ref |" "HF row"
has "$R" "| hf-static-cudagraph | 40.00 | 400.0 | 2.500 | 482.9 | 16.1 | 1.60 GB (allocator) | 5.00x | same ids |" "static row"
has "$R" "| megaqwen-cuda | 4.00 | 1000.0 | 1.000 | 1207.2 | 40.2 | 2.10 GB (NVML) | 12.50x | differs |" "megaqwen row"
has "$R" "| vllm | - | - | - | - | - | - | - | not installed |" "not-installed row"
has "$R" "| megaqwen-cuda | 60.0 | 300.0 | 330.0 | 1000.0 | 3.33 | 6.66x | counter |" "power row"
has "$R" "| 4096 | 70.0 | - | 700.0 |" "sweep row"
has "$R" "| 32768 | - | - | n/a |" "sweep n/a row"
has "$R" "| hf-eager (bf16) | 0.00123 | 0.0456 | 35.6 | 98.6% |" "quality row"
has "$R" "| gpt-fast-style (bf16) | n/a | n/a | n/a | error: RuntimeError: fixture |" "quality error row"
has "$R" "- GPU: Fixture GPU 80GB" "hardware"
has "$R" "- hf-static-cudagraph: torch.compile captured 2 graph(s)" "notes"
has "$R" "- megaqwen-cuda decodes 12.50x as fast as hf-eager (1000.0 vs 80.0 tok/s); TTFT 4.00 ms vs 50.00 ms." "summary speed"
has "$R" "- Fastest other framework: hf-static-cudagraph at 400.0 tok/s; megaqwen-cuda is 2.50x that." "summary best peer"
has "$R" "- Energy: 3.33 tok/J vs 0.50 for hf-eager (6.66x)." "summary energy"
has "$R" "- Generated ids differ from hf-eager's" "summary ids"
has "$R" "- Against HF fp32: KL 0.00101 (HF bf16: 0.00123), argmax match 99.0% (HF bf16: 98.6%)." "summary quality"
has "$R" "Bandwidth floor: 3000 GB/s (assumed)" "bandwidth label"
[ "$(grep -c '^| ' "$R")" -ge 20 ] && ok || bad "too few table rows"
if command -v gnuplot >/dev/null 2>&1 || python3 -c 'import matplotlib' 2>/dev/null; then
  for c in decode_tok_s.png tok_per_j.png ctx_sweep.png; do
    [ "$(head -c 8 "$T/rep/$c" 2>/dev/null | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] && ok || bad "$c is not a PNG"
    has "$R" "($c)" "chart link $c"
  done
else
  echo "note: neither gnuplot nor matplotlib: chart files not checked (scripts/deps.sh installs gnuplot-nox)"
fi
# results.json validates and re-renders to the same tables
python3 scripts/report/schema.py "$T/rep/results.json" && ok || bad "results.json fails the schema"
python3 scripts/report/make_report.py --results "$T/rep/results.json" --out "$T/rep2" --plotter none >/dev/null 2>&1 && ok || bad "re-render"
diff <(grep '^| ' "$R") <(grep '^| ' "$T/rep2/REPORT.md") >/dev/null && ok || bad "re-rendered tables differ"
grep -q '"plotter": "none"' "$T/rep2/results.json" && ok || bad "plotter none not recorded"

# ---- publish: report folder copied, tables spliced between the markers, text around them kept
printf 'intro\n<!-- bench-report:begin -->\nold\n<!-- bench-report:end -->\noutro\n' >"$T/doc.md"
python3 scripts/report/publish.py "$T/rep" --docs-dir "$T/pub" "$T/doc.md" 2>/dev/null && ok || bad "publish exit"
[ -s "$T/pub/REPORT.md" ] && [ -s "$T/pub/results.json" ] && ok || bad "publish did not copy the report"
has "$T/doc.md" "| megaqwen-cuda | 4.00 | 1000.0 | 1.000 | 1207.2 | 40.2 | 2.10 GB (NVML) | 12.50x | differs |" "published table"
has "$T/doc.md" "From [pub/REPORT.md](pub/REPORT.md) (GPU: Fixture GPU 80GB)." "published link"
[ "$(head -1 "$T/doc.md")" = intro ] && [ "$(tail -1 "$T/doc.md")" = outro ] && ! grep -q '^old$' "$T/doc.md" && ok || bad "splice kept/dropped the wrong text"
printf 'no markers\n' >"$T/nomark.md"
python3 scripts/report/publish.py "$T/rep" --docs-dir "$T/pub" "$T/nomark.md" 2>/dev/null && bad "publish without markers succeeded" || ok

# ---- schema: a broken row is refused with a message naming it
mkdir -p "$T/broken"; cp tests/report/runs/*.json "$T/broken/"
python3 - "$T/broken/megaqwen.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); del d["prompts"][0]["decode_tok_s"]; d["power"]["status"] = "maybe"
json.dump(d, open(sys.argv[1], "w"))
PY
python3 scripts/report/make_report.py --runs "$T/broken" --out "$T/rep3" >"$T/out" 2>"$T/err"; rc=$?
[ $rc = 1 ] && ok || bad "broken fixture: exit $rc, want 1"
has "$T/err" "run megaqwen-cuda prompts[0]: missing 'decode_tok_s'" "schema message"
[ ! -e "$T/rep3/REPORT.md" ] && ok || bad "report written despite schema errors"
# --lenient (the device script's mode) turns the broken row into an error row and still reports
python3 scripts/report/make_report.py --runs "$T/broken" --out "$T/rep4" --lenient --plotter none >/dev/null 2>&1 && ok || bad "lenient exit"
has "$T/rep4/REPORT.md" "| megaqwen-cuda | error | invalid row: run megaqwen-cuda prompts[0]: missing 'decode_tok_s'" "lenient error row"
has "$T/rep4/REPORT.md" "| hf-eager | 50.00 | 80.0 |" "lenient keeps good rows"
echo '{"schema": "megaqwen-bench/1", "framework": "x", "status": "error"}' >"$T/noreason.json"
python3 scripts/report/schema.py "$T/noreason.json" >/dev/null && bad "status error without reason accepted" || ok

# ---- runners: absent frameworks print one "not installed" JSON line and exit 0
for r in hf_eager:torch hf_static:torch gptfast:torch vllm_runner:vllm sglang_runner:sglang \
         trtllm_runner:tensorrt_llm exllamav2_runner:exllamav2 llamacpp_runner:llama_cpp_absent; do
  s=${r%%:*}; mod=${r#*:}
  if [ "$mod" != llama_cpp_absent ] && python3 -c "import $mod" 2>/dev/null; then continue; fi
  if [ "$mod" = llama_cpp_absent ] && command -v llama-bench >/dev/null 2>&1; then continue; fi
  LLAMA_CPP_DIR='' python3 scripts/peers/$s.py -m "$T/nomodel" --json "$T/$s.json" >"$T/$s.out" 2>"$T/$s.err"; rc=$?
  [ $rc = 0 ] && ok || bad "$s: exit $rc"
  [ "$(wc -l <"$T/$s.out")" = 1 ] && ok || bad "$s: stdout is not one line"
  python3 -c "import json,sys; d=json.load(open('$T/$s.out')); sys.exit(d['status']!='not installed' or not d['reason'])" \
    && ok || bad "$s: status is not 'not installed': $(cat "$T/$s.out")"
  cmp -s "$T/$s.out" "$T/$s.json" && ok || bad "$s: --json file differs from stdout"
  python3 scripts/report/schema.py "$T/$s.out" && ok || bad "$s: row fails the schema"
done
# quality.py without torch: one JSON line, status not installed
if ! python3 -c "import torch" 2>/dev/null; then
  python3 scripts/peers/quality.py -m "$T/nomodel" >"$T/q.out" 2>/dev/null && ok || bad "quality.py exit"
  grep -q '"status": "not installed"' "$T/q.out" && ok || bad "quality.py status: $(cat "$T/q.out")"
fi

# ---- python NVML helper: absent library -> n/a, never an exception
MQ_NVML_LIB=/nonexistent/libnvidia-ml.so.1 python3 - <<'PY' && ok || bad "python NVML absent path"
import sys; sys.path.insert(0, "scripts/peers")
import common, time
nv = common.Nvml()
assert not nv.ok and "n/a" in nv.reason and "/nonexistent" in nv.reason, nv.reason
assert nv.power_w() is None and nv.energy_j() is None and nv.proc_mem() is None and nv.name() is None
assert common.idle_power(nv, 0.05, 20) is None
with common.Sampler(nv, 50, mem=True) as s:
    time.sleep(0.05)
assert s.w == [] and s.energy_j is None and s.energy_source == "n/a" and s.peak_proc is None
assert "%016x" % common.fnv1a([1, 2, 3]) == "%016x" % common.fnv1a([1, 2, 3]) != "%016x" % common.fnv1a([3, 2, 1])
assert common.fnv1a([]) == 0xcbf29ce484222325
PY

# ---- the shared protocol (common.measure) on a fake framework with fixed timings
MQ_NVML_LIB=/nonexistent python3 - "$T/measure.json" 2>"$T/measure.err" <<'PY' && ok || { bad "common.measure protocol"; cat "$T/measure.err"; }
import sys, types; sys.path.insert(0, "scripts/peers"); sys.path.insert(0, "scripts/report")
import common, schema
class Fake:
    vocab, calls = 1000, []
    def run(self, ids, n):
        self.calls.append(len(ids))
        return [sum(ids) % 1000 + i for i in range(n + 1)], 0.01, 0.5
    def sweep(self, d, fill, n):
        assert len(fill) == d + 1 and fill[:3] == [1000 % 1000, 8919 % 1000, 16838 % 1000]
        if d == 1024:  # the runner has checkpointed its row: a time limit now would keep it
            import json
            cp = json.load(open(a.json))
            assert schema.validate_run(cp) == [] and cp["decode_tok_s"] == 20, cp
            assert [s["status"] for s in cp["ctx_sweep"]] == ["ok"] + ["not reached (time limit)"] * 3, cp["ctx_sweep"]
        if d == 4096:
            raise RuntimeError("out of memory")
        return 1.0 if d <= 1024 else None
    def peak_alloc(self):
        return 12345
a = types.SimpleNamespace(prompts="scripts/peers/prompts.json", n=10, warmup=1, ctx_list=[16, 1024, 2048, 4096],
                          power_s=0.05, hz=50, model="m", json=sys.argv[1])
impl = Fake()
row = common.measure("fake", a, impl, common.Nvml(), None, "fake 1.0")
assert schema.validate_run(row) == [], schema.validate_run(row)
assert row["decode_tok_s"] == 20 and row["ms_per_token"] == 50 and abs(row["ttft_s"] - 0.01) < 1e-12
ps = common.load_prompts(a.prompts, 1000)
assert [p["tokens"] for p in row["prompts"]] == [14, 12, 13]
assert row["prompts"][1]["fnv1a"] == "%016x" % common.fnv1a([sum(ps[1]) % 1000 + i for i in range(11)])
h = common.FNV_INIT
for p in ps:
    h = common.fnv1a([sum(p) % 1000 + i for i in range(11)], h)
assert row["fnv1a"] == "%016x" % h
st = [s["status"] for s in row["ctx_sweep"]]
assert st[:3] == ["ok", "ok", "not supported"] and st[3].startswith("error: RuntimeError: out of memory"), st
assert row["ctx_sweep"][0]["decode_tok_s"] == 10
pw = row["power"]
assert pw["status"] == "n/a" and pw["avg_w"] is None and pw["tok_per_j"] is None and pw["tokens"] % 11 == 0 and pw["tokens"] > 0
assert row["memory"]["alloc_peak_bytes"] == 12345 and impl.calls[0] == 14  # warm-up ran prompt 0 first
PY

echo "bench_report: $passes passed, $fails failed"
[ $fails = 0 ]
