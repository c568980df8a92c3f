#!/usr/bin/env bash
# device-check: on a GPU machine, one call builds megaqwen (CUDA), runs the tests (GPU ones included),
# checks the cuda backend against the CPU backend and HF transformers on a synthetic Qwen3-0.6B,
# runs compute-sanitizer, benchmarks decode and prints a short table last.
#
#   scripts/device-check.sh [--only LIST] [--skip LIST] [--budget-s S] [--arch SM]
#   steps: build bw fixtures test prefill greedy greedy2 logits sanitize profile bench bench16 benchsample sweep
#   variants serve ctest hf (fixtures: HF fixtures missing from tests/data/hf, e.g. C (YaRN), made here with
#   transformers and used by the tests after it; copy $OUT/hf/NAME into tests/data/hf and commit it)
#   diagnostic steps, run only when --only names them: ncu (Nsight Compute warp-state and scheduler
#   statistics of the dataflow kernel), ttft (DC_TTFT: prefill configurations side by side, with
#   MQ_PREFILL_PROF's per-kernel times), ncu-prefill (kernel durations of a 32-token prefill),
#   mvbench (the decode matvec from shared memory alone and beside a bulk copy; dependency hops
#   through L2 counters and inside thread-block clusters),
#   ncu-src (per-instruction stall samples of decode_df, source page as CSV), ncu-attn (warp states
#   and pipes of the prefill's f16 flash attention at 4,096 tokens),
#   sass (the dataflow kernel's SASS and instruction counts per function), ab
#   (DC_AB_TREE=DIR: another source tree, e.g. main's `git archive` in .deps/main, carried; built
#   beside this one and benched against it ABBA in the same call: for compile-time changes)
#   Logs and raw numbers go to $OUT (the device tool's folder) or out/device-check.
#   DC_PREBUILT=DIR: use the binaries scripts/prebuild.sh left in DIR (carried, gzip-compressed) instead
#   of building. DC_AB_BIN=FILE[.gz]: ab's other megaqwen, prebuilt (then DC_AB_TREE is not built).
# Needs: nvcc, cmake, python3 with torch + transformers (HF reference), and the Debian -dev libraries
# (unpacked from .deps/debs, made by scripts/deps.sh --debs, when pkg-config can't find them).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
T0=$(date +%s)
ONLY="" SKIP="" BUDGET=570 ARCH=""
# decode kernels to check side by side (MQ_CUDA_SYNC): the default (auto: decode_cl for launches
# ending within 1,280 positions, decode_df past them), grid barriers (v4) and dataflow (v5) alone
# (MQ_CUDA_FUSE=0, the dataflow kernel with two MLP stages, runs in the sweep)
SYNCS=${DC_SYNCS:-auto grid df}
while [ $# -gt 0 ]; do
  case $1 in
    --only) ONLY=$2; shift 2;; --skip) SKIP=$2; shift 2;; --budget-s) BUDGET=$2; shift 2;;
    --arch) ARCH=$2; shift 2;;
    -h|--help) sed -n '2,15p' "$0"; exit 0;;
    *) echo "device-check: unknown option $1" >&2; exit 2;;
  esac
done
O=${OUT:-$ROOT/out/device-check}
mkdir -p "$O"
LOG=$O/device-check.log
: >"$LOG"
say() { echo "[dc $(( $(date +%s) - T0 ))s] $*" | tee -a "$LOG" >&2; }
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
want() {
  [ -n "$ONLY" ] && [[ ",$ONLY," != *",$1,"* ]] && return 1
  [[ ",$SKIP," == *",$1,"* ]] && return 1
  return 0
}
declare -a TABLE
row() { TABLE+=("$*"); }
# a decode configuration "KERNEL[,VAR=VALUE...]" -> sy=KERNEL (MQ_CUDA_SYNC), ev="VAR=VALUE ..." (for env)
# and tag: the configuration as a file-name part
split_cfg() { sy=${1%%,*}; ev=$(echo "$1" | cut -s -d, -f2- | tr ',' ' '); tag=${1//[^A-Za-z0-9]/_}; }

# ---- toolchain and Debian libraries
. "$ROOT/scripts/device-env.sh"
[ -n "$ARCH" ] || ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '.')
[ "$ARCH" = 90 ] && ARCH=90a  # Hopper: the sm_90a target, with wgmma (flash3_k)
GPU=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
say "GPU: ${GPU:-none}; arch ${ARCH:-default}"
B=$ROOT/build-dc
BIN=$B/megaqwen
export MQ_TOKENIZER_DIR=$ROOT/.deps/qwen3-tokenizer

# ---- ab: build the other tree in the background, beside this tree's build (its scripts find the
# -dev libraries through the exported environment, so the sysroot is unpacked once)
ABPID="" ABIN=""
if [ -n "$ONLY" ] && want ab && [ -n "${DC_AB_BIN:-}" ] && [ -f "$DC_AB_BIN" ]; then
  ABIN=/tmp/ab-megaqwen
  case $DC_AB_BIN in *.gz) gzip -dc "$DC_AB_BIN" >$ABIN;; *) cp "$DC_AB_BIN" $ABIN;; esac
  chmod +x $ABIN
elif [ -n "$ONLY" ] && want ab && [ -n "${DC_AB_TREE:-}" ] && [ -d "$DC_AB_TREE" ]; then
  mkdir -p "$DC_AB_TREE/.deps"
  ln -sfn "$ROOT/.deps/qwen3-tokenizer" "$DC_AB_TREE/.deps/qwen3-tokenizer"
  export PKGCFG
  (cd "$DC_AB_TREE" && OUT="$O/ab" env -u DC_PREBUILT bash scripts/device-check.sh --only build --arch "$ARCH" >"$O/ab-build.txt" 2>&1) &
  ABPID=$!
fi

if want build && [ -n "${DC_PREBUILT:-}" ] && [ -e "$DC_PREBUILT/megaqwen.gz" -o -x "$DC_PREBUILT/megaqwen" ]; then
  # binaries built elsewhere by scripts/prebuild.sh (no build here: saves 90-140 s of device time)
  say "build: prebuilt binaries from $DC_PREBUILT"
  mkdir -p "$B" && cp "$DC_PREBUILT"/* "$B"/
  for f in "$B"/*.gz; do [ -e "$f" ] && gzip -df "$f" && chmod +x "${f%.gz}"; done
  sd=$(cat "$DC_PREBUILT/source_dir" 2>/dev/null || true)
  # the tests find their fixtures through the source directory compiled into them
  if [ -n "$sd" ] && [ "$sd" != "$ROOT" ]; then
    if [ ! -e "$sd" ]; then mkdir -p "$(dirname "$sd")" && ln -s "$ROOT" "$sd"; fi
    [ "$(cd "$sd" 2>/dev/null && pwd -P)" = "$(pwd -P)" ] || row "build | WARNING: $sd (the tests' fixtures) is not this tree"
  fi
  row "build | prebuilt ($DC_PREBUILT, sm_$(cat "$DC_PREBUILT/arch" 2>/dev/null))"
elif want build; then
  say "build"
  cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DMQ_CUDA=ON ${ARCH:+-DMQ_CUDA_ARCHS=$ARCH} ${PKGCFG:-} \
    -DMQ_TOKENIZER_DIR="$MQ_TOKENIZER_DIR" >/tmp/dc-build.log 2>&1 &&
    cmake --build "$B" -j"$(nproc)" >>/tmp/dc-build.log 2>&1
  rc=$?
  [ $rc = 0 ] && row "build | ok (sm_${ARCH})" || { row "build | FAILED"; tail -40 /tmp/dc-build.log | tee -a "$LOG"; }
fi
[ -x "$BIN" ] || { say "no binary"; printf '%s\n' "${TABLE[@]}"; exit 1; }

# ---- copy bandwidth (cudaMemcpy D2D of 1 GB through torch; read + write counted): the %-of-floor
# columns divide by it, so every benchmark step measures it too (a run without it once printed % of
# an assumed 3,000 GB/s beside measured tok/s); BW_SRC travels into bench's --bw-source
BW=3000 BW_SRC="assumed 3000 GB/s (not measured)"
if want bw || want bench || want bench16 || want benchsample || want sweep || want variants || { [ -n "$ONLY" ] && want ab; }; then
  M=$(python3 - <<'EOF' 2>>"$LOG"
import torch
n = 1 << 30
a = torch.empty(n, dtype=torch.uint8, device="cuda"); b = torch.empty_like(a)
for _ in range(3): b.copy_(a)
torch.cuda.synchronize()
e0, e1 = torch.cuda.Event(True), torch.cuda.Event(True)
ts = []
for _ in range(10):
    e0.record(); b.copy_(a); e1.record(); torch.cuda.synchronize(); ts.append(e0.elapsed_time(e1) / 1e3)
ts.sort()
print(f"{2 * n / ts[len(ts) // 2] / 1e9:.0f}")
EOF
)
  if [ -n "$M" ]; then
    BW=$M BW_SRC="measured: 1 GB D2D copy, read + write, median of 10"
    say "D2D copy bandwidth ${BW} GB/s"
    row "copy bandwidth (1 GB D2D, r+w) | ${BW} GB/s"
  else
    say "copy bandwidth: not measured (torch failed, see the log); % of floor uses 3000 GB/s"
    row "copy bandwidth | NOT MEASURED: % of floor below assumes 3000 GB/s"
  fi
fi

M06=/tmp/mq-q06
if [ ! -s $M06/config.json ]; then
  "$BIN" synth --shape qwen3-0.6b --seed 1 -o $M06 >>"$LOG" 2>&1 || say "synth 0.6b failed"
fi

if want fixtures && [ ! -f tests/data/hf/C/ref.json ]; then
  say "HF fixture C (YaRN RoPE scaling) with transformers"
  timeout 180 python3 scripts/ref/hf_fixtures.py --out "$O/hf" --only C >"$O/fixtures.log" 2>&1
  rc=$?
  if [ $rc = 0 ] && [ -f "$O/hf/C/ref.json" ]; then mkdir -p tests/data/hf/C && cp "$O/hf/C/"* tests/data/hf/C/; fi
  row "fixtures | C (YaRN): rc $rc; $(grep -E 'attention_scaling|wrote trial' "$O/fixtures.log" | cut -c1-150 | tr '\n' ';')"
  if [ -x "$B/test_cpu" ]; then
    (cd "$ROOT" && timeout 120 "$B/test_cpu") >"$O/test_cpu_C.log" 2>&1
    row "test_cpu with C | rc $?; $(grep -E '  C:' "$O/test_cpu_C.log" | tr -s ' ' | tr '\n' ';' | cut -c1-300)"
  fi
fi

if want test; then
  # (300 s: test_greedy_gqa writes and checks two-layer 4B / 14B models, 1.2 + 4.4 GB, since session 24)
  for syc in $SYNCS; do  # KERNEL[,VAR=VALUE...]
    split_cfg "$syc"
    say "test_cuda (MQ_CUDA_SYNC=$sy $ev)"
    if [ -f "$B/CTestTestfile.cmake" ]; then
      (cd "$B" && env MQ_CUDA_SYNC=$sy $ev timeout 300 ctest -R test_cuda --timeout 290 --output-on-failure -V) >"$O/tests-$tag.log" 2>&1
    else  # prebuilt binaries: no CTest files; the test's own environment as CMakeLists.txt sets it
      (env MQ_BIN="$BIN" MQ_SOURCE_DIR="$ROOT" MQ_CUDA_SYNC=$sy $ev timeout 300 "$B/test_cuda"
       echo "test_cuda exit status $?") >"$O/tests-$tag.log" 2>&1
    fi
    res=$(grep -E "tests passed|tests failed|test_cuda exit status" "$O/tests-$tag.log" | tail -1)
    row "test_cuda $syc | ${res:-no result (tests-$tag.log)}"
    while read -r l; do row "  $l"; done < <(grep -E "cuda vs HF|token-by-token|device greedy|device sampling|FAIL|stuck|flips" "$O/tests-$tag.log" | sed 's/^[0-9]*: //' | head -10)
  done
fi

if want prefill; then
  say "test_prefill (GPU prefill vs CPU, graphs, TTFT)"
  MQ_PREFILL_BENCH=1 timeout 360 "$B/test_prefill" >"$O/prefill.log" 2>&1
  row "test_prefill | rc $? $(grep -cE '^\[ +OK' "$O/prefill.log") ok, $(grep -cE '^\[ +(FAILED|SKIPPED)' "$O/prefill.log") failed/skipped"
  # the TTFT table first (session 32: 24 lines of comparisons left it out of the summary), then failures,
  # then the first comparisons
  while read -r l; do row "  $l"; done < <(grep -E "TTFT" "$O/prefill.log" | head -16; grep -E "FAIL|rror" "$O/prefill.log" | head -8;
    grep -E "differ" "$O/prefill.log" | head -10)
fi

if want greedy; then
  say "greedy 256 tokens cuda (f32, bf16 and f16 KV) vs cpu on synthetic 0.6B"
  P=785,3840,315,279,18484,3493,12033,304,279,11128,45387,9294,11,979
  G="run -m $M06 --prompt-ids $P -n 256 --ids --ignore-eos"
  timeout 60 "$BIN" $G --backend cuda >/tmp/g_cuda.txt 2>>"$LOG"
  MQ_CUDA_SYNC=df timeout 60 "$BIN" $G --backend cuda >/tmp/g_cudadf.txt 2>>"$LOG"
  MQ_CUDA_KV=bf16 timeout 60 "$BIN" $G --backend cuda >/tmp/g_cuda16.txt 2>>"$LOG"
  MQ_CUDA_KV=f16 timeout 60 "$BIN" $G --backend cuda >/tmp/g_cudaf16.txt 2>>"$LOG"
  timeout 200 "$BIN" $G --backend cpu >/tmp/g_cpu.txt 2>>"$LOG"
  # the cpu reference with the f16 cache's rounding (--kv-type f16): the like-for-like check of cudaf16
  timeout 200 "$BIN" $G --backend cpu --kv-type f16 >/tmp/g_cpuf16.txt 2>>"$LOG"
  for f in cuda cudadf cuda16 cudaf16 cpu cpuf16; do echo "== $f"; cat /tmp/g_$f.txt; done >"$O/greedy.txt"
  for f in cuda cudadf cuda16 cudaf16 cudaf16:cpuf16; do
    ref=cpu; [[ $f == *:* ]] && { ref=${f#*:}; f=${f%%:*}; }
    n=$(python3 - /tmp/g_$f.txt /tmp/g_$ref.txt <<'EOF'
import re, sys
a, b = [re.findall(r"-?\d+", open(p).read()) for p in sys.argv[1:3]]
same = 0
while same < min(len(a), len(b)) and a[same] == b[same]: same += 1
print(f"{same}/{len(b)} identical (cuda {len(a)} ids)")
EOF
)
    row "greedy 256, synth 0.6B, $f vs $ref | $n"
  done
fi

if want logits; then
  say "teacher-forced logits: cuda, cpu, HF fp32, HF bf16"
  IDS=$(python3 -c "print(','.join(str((1000 + 7919 * i) % 100000) for i in range(128)))")
  "$BIN" logits -m $M06 --ids "$IDS" -o /tmp/l_cuda.bin --backend cuda 2>>"$LOG"
  MQ_CUDA_PREFILL=0 MQ_CUDA_SYNC=df "$BIN" logits -m $M06 --ids "$IDS" -o /tmp/l_cudadf.bin --backend cuda 2>>"$LOG"
  MQ_CUDA_KV=bf16 "$BIN" logits -m $M06 --ids "$IDS" -o /tmp/l_cuda16.bin --backend cuda 2>>"$LOG"
  MQ_CUDA_KV=f16 "$BIN" logits -m $M06 --ids "$IDS" -o /tmp/l_cudaf16.bin --backend cuda 2>>"$LOG"
  MQ_CUDA_KV=f16 MQ_CUDA_PREFILL=0 MQ_CUDA_SYNC=df "$BIN" logits -m $M06 --ids "$IDS" -o /tmp/l_cudaf16df.bin --backend cuda 2>>"$LOG"
  "$BIN" logits -m $M06 --ids "$IDS" -o /tmp/l_cpu.bin --backend cpu 2>>"$LOG"
  python3 scripts/ref/hf_logits.py -m $M06 --ids "$IDS" --dtype fp32 -o /tmp/l_hf32.bin >>"$LOG" 2>&1
  python3 scripts/ref/hf_logits.py -m $M06 --ids "$IDS" --dtype bf16 -o /tmp/l_hf16.bin >>"$LOG" 2>&1
  python3 scripts/ref/compare_logits.py --vocab 151936 --hf32 /tmp/l_hf32.bin --hfbf16 /tmp/l_hf16.bin \
    cuda=/tmp/l_cuda.bin cuda-df-stepwise=/tmp/l_cudadf.bin cuda-kvbf16=/tmp/l_cuda16.bin cuda-kvf16=/tmp/l_cudaf16.bin \
    cuda-kvf16-df-stepwise=/tmp/l_cudaf16df.bin cpu=/tmp/l_cpu.bin hf-bf16=/tmp/l_hf16.bin >"$O/logits.txt" 2>&1
  cat "$O/logits.txt" >>"$LOG"
  while read -r l; do row "logits $l"; done < <(python3 -c "
import json,sys
for l in open('$O/logits.txt'):
    if l.startswith('{'):
        r=json.loads(l); print(f\"{r['name']} vs HF fp32 (T={r['T']}) | mean KL {r['kl_mean']:.2e}, argmax {100*r['argmax_nontie']:.2f}% non-tie ({100*r['argmax_all']:.2f}% all, {r['n_tie']} ties), max|dlogit| {r['max_abs_dlogit']:.3g}\")
" 2>>"$LOG")
fi

if want sanitize; then
  say "compute-sanitizer memcheck + racecheck (tiny model)"
  MT=/tmp/mq-tiny
  [ -s $MT/config.json ] || "$BIN" synth --shape tiny --seed 3 -o $MT >>"$LOG" 2>&1
  CS=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
  for tool in memcheck racecheck synccheck; do
    # racecheck fails inside the tool on the prefill attention kernel (docs/perf-notes.md): under it
    # the decode kernel processes the prompt too (MQ_CUDA_PREFILL=0)
    pf=1; [ $tool = racecheck ] && pf=0
    MQ_CUDA_PREFILL=$pf MQ_CUDA_SYNC=${DC_SAN_SYNC:-grid} timeout 120 "$CS" --tool $tool --kernel-name-exclude kns=nvjet --error-exitcode 9 "$BIN" run -m $MT --prompt-ids 1,2,3,4,5,6,7,8 -n 24 --ids \
      --ignore-eos --backend cuda >/tmp/san.log 2>&1
    rc=$?
    { echo "== $tool rc $rc"; tail -40 /tmp/san.log; } >>"$O/sanitize.log"
    s=$(grep -E "ERROR SUMMARY|RACECHECK SUMMARY" /tmp/san.log | tail -1)
    row "compute-sanitizer $tool (${DC_SAN_SYNC:-grid}) | rc $rc: ${s:-see sanitize.log}"
  done
fi

if want profile; then
  say "per-stage profile (MQ_CUDA_PROFILE=1)"
  # DC_PROF: "KV:KERNEL[:VAR=VALUE...]" entries
  for cfg in ${DC_PROF:-f32:grid bf16:grid f32:df bf16:df}; do
    IFS=: read -r kv sy ev <<<"$cfg"
    env MQ_CUDA_KV=$kv MQ_CUDA_SYNC=$sy ${ev//:/ } MQ_CUDA_PROFILE=1 timeout 60 "$BIN" run -m $M06 \
      --prompt-ids 1,2,3,4,5,6,7,8 -n 124 --ids --ignore-eos --backend cuda 2>/tmp/prof.txt >/dev/null
    row "kv $kv, $sy ${ev}: $(grep profile /tmp/prof.txt | tail -1)"
    grep -q sub-stages /tmp/prof.txt && row "  $(grep sub-stages /tmp/prof.txt | tail -1)"
    grep -E "megakernel|grid" /tmp/prof.txt | head -3 >>"$LOG"
  done
fi

if want bench; then
  for syc in $SYNCS; do
    split_cfg "$syc"
    say "bench (cuda $syc, synthetic 0.6B)"
    env MQ_CUDA_SYNC=$sy $ev timeout $(( $(left) > 150 ? 150 : $(left) )) "$BIN" bench -m $M06 --backend cuda \
      --ctx 16,1024,4096,32768 -n 128 --bw "$BW" --bw-source "$BW_SRC" --power-s 0 --idle-s 0 --json "$O/bench-$tag.json" >"$O/bench-$tag.txt" 2>&1
    TABLE+=("f32 KV, $syc:" "$(grep -A12 -i "context" "$O/bench-$tag.txt" | grep -E '^\|' | head -6)")
  done
fi

if want bench16; then
  for kv in ${DC_BENCHKV:-f16 bf16}; do  # the 16-bit KV caches
    [ "$(left)" -gt 100 ] || break
    MQ_CUDA_KV=$kv timeout $(( $(left) > 150 ? 150 : $(left) )) "$BIN" bench -m $M06 --backend cuda --ctx 16,1024,4096,32768 \
      -n 128 --bw "$BW" --bw-source "$BW_SRC" --power-s 0 --idle-s 0 --json "$O/bench-kv$kv.json" >/tmp/b16.txt 2>&1
    { echo "== bench $kv KV"; cat /tmp/b16.txt; } >>"$O/bench.txt"
    TABLE+=("$kv KV:" "$(grep -A12 -i "context" /tmp/b16.txt | grep -E '^\|' | head -6)")
  done
fi

if want benchsample; then
  # sampled decoding, many tokens per launch: the model's generation_config (the synthetic model's is
  # Qwen3's: temperature 0.6, top-k 20, top-p 0.95), seed 42, re-seeded per prompt and depth
  if [ "$(left)" -gt 60 ]; then
    timeout $(( $(left) > 120 ? 120 : $(left) )) "$BIN" bench -m $M06 --backend cuda --sample --ctx 16,4096 -n 128 \
      --bw "$BW" --bw-source "$BW_SRC" --power-s 0 --idle-s 0 --json "$O/bench-sample.json" >/tmp/bs.txt 2>&1
    { echo "== bench --sample"; cat /tmp/bs.txt; } >>"$O/bench.txt"
    TABLE+=("f32 KV, sampled (generation_config):" "$(grep -A8 -i "context" /tmp/bs.txt | grep -E '^\|' | head -4)")
  fi
fi

if want sweep; then
  # decode configurations: "KERNEL[,VAR=VALUE...]" (MQ_CUDA_SYNC=KERNEL plus those variables):
  # tok/s at ctx 16 / 4096 / 32768 and the per-stage profile
  for cfg in ${DC_SWEEP:-grid df df,MQ_CUDA_ATTPIPE=0 df,MQ_CUDA_MINCH=128 df,MQ_CUDA_MINCH=256 df,MQ_CUDA_LMPF=4 df,MQ_CUDA_LMPF=8}; do
    [ "$(left)" -gt 20 ] || break
    split_cfg "$cfg"
    env MQ_CUDA_SYNC=$sy $ev timeout 40 "$BIN" bench -m $M06 --backend cuda --ctx ${DC_SWEEP_CTX:-16,4096,32768} -n 128 \
      --bw "$BW" --bw-source "$BW_SRC" --power-s 0 --idle-s 0 >/tmp/var.txt 2>&1
    env MQ_CUDA_SYNC=$sy $ev MQ_CUDA_PROFILE=1 timeout 30 "$BIN" run -m $M06 --prompt-ids 1,2,3,4,5,6,7,8 -n 124 \
      --ids --ignore-eos --backend cuda 2>/tmp/prof.txt >/dev/null
    { echo "== $cfg"; cat /tmp/var.txt /tmp/prof.txt; } >>"$LOG"
    row "$cfg: $(grep -E '^\| [0-9]+ \|' /tmp/var.txt | cut -d'|' -f2-3,8 | tr -s ' ' | tr '\n' ' ')"
    row "  $(grep profile /tmp/prof.txt | tail -1 | sed 's/.*block.s work)://; s/.*interval \/ work \/ wake)://')"
  done
fi

if want greedy2; then
  # the dataflow kernel's greedy tokens against the grid kernel's (which the greedy step checks
  # against the CPU backend): 256 tokens on the synthetic 0.6B, no CPU run
  P=785,3840,315,279,18484,3493,12033,304,279,11128,45387,9294,11,979
  G="run -m $M06 --prompt-ids $P -n 256 --ids --ignore-eos --backend cuda"
  MQ_CUDA_SYNC=grid timeout 60 "$BIN" $G >/tmp/g2_grid.txt 2>>"$LOG"
  for sv in ${DC_GREEDY2:-df df,MQ_CUDA_ATTPIPE=0 df,MQ_CUDA_RING_CTX=1}; do
    split_cfg "$sv"
    env MQ_CUDA_SYNC=$sy $ev timeout 60 "$BIN" $G >/tmp/g2_df.txt 2>>"$LOG"
    if cmp -s /tmp/g2_grid.txt /tmp/g2_df.txt && [ -s /tmp/g2_df.txt ]; then r="identical"; else r="DIFFERENT"; fi
    row "greedy 256, synth 0.6B, $sv vs grid kernel | $r ($(tr "," " " </tmp/g2_df.txt | wc -w) ids)"
  done
fi

if want variants; then
  # the same kernel with one design choice switched off: what each buys (ctx 16 and 4096)
  for v in MQ_CUDA_FUSE=0 MQ_CUDA_STAGE=1 MQ_CUDA_BPS=1; do
    [ "$(left)" -gt 50 ] || break
    env $v timeout 45 "$BIN" bench -m $M06 --backend cuda --ctx 16,4096 -n 128 --bw "$BW" --bw-source "$BW_SRC" --power-s 0 \
      --idle-s 0 >/tmp/var.txt 2>&1
    env $v MQ_CUDA_PROFILE=1 timeout 30 "$BIN" run -m $M06 --prompt-ids 1,2,3,4,5,6,7,8 -n 124 --ids --ignore-eos \
      --backend cuda 2>/tmp/prof.txt >/dev/null
    { echo "== $v"; cat /tmp/var.txt /tmp/prof.txt; } >>"$LOG"
    row "$v: $(grep -E '^\| (16|4096) \|' /tmp/var.txt | cut -d'|' -f2-4 | tr '\n' ' ')"
    row "  $(grep profile /tmp/prof.txt | tail -1)"
  done
fi

if want serve && [ "$(left)" -gt 90 ]; then
  say "serve: streaming latency at 1/4/16 clients vs megaqwen run (cuda, synthetic 0.6B)"
  "$BIN" serve -m $M06 --backend cuda --port 18091 --queue 64 -q 2>"$O/serve.log" &
  SP=$!
  for _ in $(seq 60); do (exec 3<>/dev/tcp/127.0.0.1/18091) 2>/dev/null && break; sleep 0.5; done
  timeout 120 python3 scripts/serve-bench.py http://127.0.0.1:18091 --clients 1,4,16 --requests-per-level 32 \
    --max-tokens 64 --json "$O/serve.json" >/tmp/sb.txt 2>&1
  kill $SP 2>/dev/null; wait $SP 2>/dev/null
  cat /tmp/sb.txt >>"$LOG"
  for i in 1 2 3; do
    timeout 30 "$BIN" run -m $M06 --prompt "The history of the printing press begins (0)" -n 64 --backend cuda \
      2>&1 >/dev/null | grep TTFT
  done >/tmp/sr.txt
  TABLE+=("serve (/v1/completions, stream, 64 tokens):" "$(grep -E '^\|' /tmp/sb.txt)" "megaqwen run, same prompt: $(tail -1 /tmp/sr.txt)")
fi

# ---- diagnostics (only when named in --only): where the dataflow kernel's warps stall
if [ -n "$ONLY" ] && want ncu-attn; then
  # the prefill's f16 attention at 4,096 tokens (the second chunk's kernel: 2,048 queries over 4,096
  # keys): warp states, issue slots, shared-memory traffic and the tensor pipe's use (the session 9
  # plan: profile before the next attention change)
  NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null)
  # DC_NCU_KV=f32: the default cache, whose prefill runs flash2_k at MQ_PREFILL_PV16's level (2)
  NKV=${DC_NCU_KV:-f16}
  NK=${DC_NCU_K:-flash2_k}  # the kernel (e.g. flash3g_k, the default on Hopper, or flash3_k with MQ_PREFILL_WGG=0)
  say "ncu: $NK ($NKV KV, 4,096-token prompt)"
  IDS=$(python3 -c "print(','.join(str((1000 + 7919 * i) % 100000) for i in range(4096)))")
  timeout 240 "$NCU" --section WarpStateStats --section SchedulerStats --section ComputeWorkloadAnalysis \
    --section MemoryWorkloadAnalysis --section MemoryWorkloadAnalysis_Tables --section InstructionStats \
    --section LaunchStats --section Occupancy -k regex:$NK -s 28 -c 1 \
    "$BIN" run -m $M06 --backend cuda --kv-type $NKV --max-ctx 4200 --prompt-ids "$IDS" -n 1 --ids --ignore-eos \
    >"$O/ncu-attn.txt" 2>&1
  row "ncu $NK $NKV | rc $? (ncu-attn.txt)"
  while read -r l; do row "  $l"; done < <(grep -E "Duration|Stall|Warp Cycles|Issue Slots|Eligible|Active Warps|Pipe|Bank|Achieved Occ|Registers" "$O/ncu-attn.txt" | tr -s ' ' | head -30)
fi
if [ -n "$ONLY" ] && want ncu; then
  NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null)
  say "ncu: warp states of decode_df (synthetic 0.6B, 64 greedy steps)"
  MQ_CUDA_SYNC=df timeout 180 "$NCU" --section WarpStateStats --section SchedulerStats --section LaunchStats \
    --section MemoryWorkloadAnalysis -k regex:decode_df -c 1 "$BIN" run -m $M06 --prompt-ids 1,2,3,4,5,6,7,8 -n 64 \
    --ids --ignore-eos --backend cuda >"$O/ncu.txt" 2>&1
  row "ncu decode_df | rc $? (ncu.txt)"
  while read -r l; do row "  $l"; done < <(grep -E "Stall|Warp Cycles|Issued|Eligible|No Eligible|Active Warps" "$O/ncu.txt" | tr -s ' ' | head -24)
fi
if [ -n "$ONLY" ] && want ncu-src; then
  # per-instruction warp stall samples of decode_df (source page: SASS lines with their CUDA lines)
  NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null)
  say "ncu-src: source-level stall sampling of decode_df"
  rm -f /tmp/df-src.ncu-rep  # a failed profile must not export an older report
  MQ_CUDA_SYNC=df timeout 240 "$NCU" --clock-control none --set full --import-source yes -k regex:decode_df -c 1 \
    -f -o /tmp/df-src "$BIN" run -m $M06 --prompt-ids 1,2,3,4,5,6,7,8 -n 64 --ids --ignore-eos --backend cuda \
    >"$O/ncu-src.txt" 2>&1
  rc=$?
  "$NCU" -i /tmp/df-src.ncu-rep --page source --csv --print-source sass,cuda >"$O/ncu-src.csv" 2>>"$O/ncu-src.txt"
  "$NCU" -i /tmp/df-src.ncu-rep --page details >"$O/ncu-src-details.txt" 2>>"$O/ncu-src.txt"
  gzip -f "$O/ncu-src.csv"
  row "ncu-src decode_df | rc $rc ($(stat -c %s "$O/ncu-src.csv.gz" 2>/dev/null) bytes of ncu-src.csv.gz)"
fi
if [ -n "$ONLY" ] && want ttft; then
  # prompt-processing configurations side by side: DC_TTFT="CFG ..." with CFG "VAR=VALUE[,VAR=VALUE...]"
  # ("-" for the defaults); each runs test_prefill's TTFT bench (MQ_PREFILL_BENCH=2) and, once, its
  # per-kernel profile (MQ_PREFILL_PROF=1, 32 tokens): ABBA by listing a configuration twice
  for cfg in ${DC_TTFT:--}; do
    ev=$(echo "$cfg" | tr ',' ' '); [ "$ev" = "-" ] && ev=""
    env $ev MQ_PREFILL_BENCH=2 timeout 90 "$B/test_prefill" >/tmp/ttft.txt 2>&1
    row "ttft $cfg | $(grep TTFT /tmp/ttft.txt | sed 's/.*(\(.*\)), \([0-9]*\)-token prompt: median \([0-9.]*\) ms.*/\1 \2: \3/' | tr '\n' ';')"
    if ! grep -q "== $cfg" "$O/ttft-prof.txt" 2>/dev/null; then
      env $ev MQ_PREFILL_BENCH=2 MQ_PREFILL_PROF=1 timeout 90 "$B/test_prefill" >/tmp/ttft.txt 2>&1
      { echo "== $cfg"; grep "profile, " /tmp/ttft.txt | tail -8; } >>"$O/ttft-prof.txt"
      row "  $(grep 'profile, 32 tokens (split' /tmp/ttft.txt | tail -1)"
    fi
  done
fi
if [ -n "$ONLY" ] && want ncu-prefill; then
  # kernel durations of one 32-token prefill (ncu: base clocks, caches flushed per kernel: compare
  # kinds, not totals; MQ_PREFILL_PROF is the real-clock view)
  NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null)
  IDS=$(python3 -c "print(','.join(str((1000 + 7919 * i) % 100000) for i in range(32)))")
  timeout 120 "$NCU" --metrics gpu__time_duration.sum --csv --page raw "$BIN" logits -m $M06 --backend cuda \
    --ids "$IDS" -o /tmp/l_ncu.bin >"$O/ncu-prefill.csv" 2>"$O/ncu-prefill.err"
  row "ncu prefill (32 tokens) | rc $? ($(grep -c '^"' "$O/ncu-prefill.csv") rows in ncu-prefill.csv)"
fi
if [ -n "$ONLY" ] && want mvbench; then
  # the decode kernel's matvec from shared memory on its own, and beside a bulk copy (tools/mvbench.cu)
  timeout 60 "$B/mvbench" 200 >"$O/mvbench.txt" 2>&1
  row "mvbench | rc $? (mvbench.txt)"
  while read -r l; do row "  $l"; done < <(grep -E '^\| (q|o|gate|down|ping|grid|[0-9]+ \|)' "$O/mvbench.txt")
fi
if [ -n "$ONLY" ] && want sass; then
  OBJ=$(command -v cuobjdump || ls /usr/local/cuda/bin/cuobjdump 2>/dev/null)
  "$OBJ" -sass "$BIN" >"$O/megaqwen.sass" 2>/dev/null
  # instructions per function (kernels and out-of-line device functions)
  awk '/Function :/{f=$3} /^ +\/\*[0-9a-f]+\*\//{n[f]++} END{for (k in n) print n[k], k}' "$O/megaqwen.sass" | sort -rn \
    >"$O/sass-sizes.txt"
  gzip -f "$O/megaqwen.sass"
  row "sass | $(wc -l <"$O/sass-sizes.txt") functions; largest: $(head -3 "$O/sass-sizes.txt" | tr '\n' ';')"
fi

if [ -n "$ONLY" ] && want ab; then
  if [ -z "$ABPID" ] && [ -z "$ABIN" ]; then
    row "ab | neither DC_AB_BIN (a prebuilt megaqwen) nor DC_AB_TREE (a source tree directory) is there"
  else
    [ -n "$ABPID" ] && { wait "$ABPID"; ABIN=$DC_AB_TREE/build-dc/megaqwen; }
    if [ ! -x "$ABIN" ]; then
      row "ab | the other tree did not build (ab-build.txt)"
    else
      say "ab: ${DC_AB_TREE:-$DC_AB_BIN} against this tree, ABBA (MQ_CUDA_SYNC=${DC_AB_SYNC:-df})"
      for b in "$ABIN" "$BIN" "$BIN" "$ABIN"; do
        tag=this; [ "$b" = "$ABIN" ] && tag=${DC_AB_TREE:-$DC_AB_BIN}
        MQ_CUDA_SYNC=${DC_AB_SYNC:-df} timeout 60 "$b" bench -m $M06 --backend cuda --ctx ${DC_SWEEP_CTX:-16,1024,4096} \
          -n 128 --bw "$BW" --bw-source "$BW_SRC" --power-s 0 --idle-s 0 >/tmp/ab.txt 2>&1
        { echo "== ab $tag"; cat /tmp/ab.txt; } >>"$LOG"
        r=$(grep -E '^\| [0-9]+ \|' /tmp/ab.txt | cut -d'|' -f2-3,8 | tr -s ' ' | tr '\n' ' ')
        row "ab $tag: ${r:-$(head -1 /tmp/ab.txt)}"
      done
    fi
  fi
fi

if want ctest && [ ! -f "$B/CTestTestfile.cmake" ]; then
  row "ctest (all) | skipped: prebuilt binaries (no CTest files)"
elif want ctest && [ "$(left)" -gt 60 ]; then
  say "ctest (all)"
  (cd "$B" && timeout $(( $(left) - 30 )) ctest -j4 --timeout 120 --output-on-failure) >>"$O/tests.log" 2>&1
  res=$(grep -E "tests passed|tests failed" "$O/tests.log" | tail -1)
  row "ctest (all) | ${res:-no result (ctest.log)} $(grep -A20 'tests FAILED' "$O/tests.log" | grep -E '^\s+[0-9]+ -' | tr -s ' ' | tr '\n' ';')"
fi

if want hf && [ "$(left)" -gt 120 ]; then
  say "HF static-cache + CUDA graph peer"
  timeout $(( $(left) - 20 )) python3 scripts/peers/hf_static.py -m $M06 --ctx 16,1024,4096 -n 64 --power-s 0 \
    --idle-s 0 --json /tmp/hf_static.json >"$O/hf_static.txt" 2>&1; cat /tmp/hf_static.json >>"$O/hf_static.txt" 2>/dev/null
  row "hf static | $(tail -c 600 /tmp/hf_static.json 2>/dev/null || tail -3 "$O/hf_static.txt")"
fi

say "done in $(( $(date +%s) - T0 ))s"
echo
echo "== device-check summary (${GPU:-no GPU}) =="
printf '%s\n' "${TABLE[@]}"
