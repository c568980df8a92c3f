#!/usr/bin/env bash
# bench-report: the whole framework comparison in one command on a GPU machine — builds megaqwen
# (CUDA), runs `megaqwen bench` and every peer runner each in its own process on the same checkpoint,
# the quality comparison, and writes OUT/{REPORT.md,results.json,*.png}.
#
#   scripts/bench-report.sh [-m MODEL_DIR] [-o OUT_DIR] [-n N] [--ctx LIST] [--peer-ctx LIST]
#                           [--power-s S] [--budget-s S] [--bin MEGAQWEN] [--only LIST] [--skip LIST]
#
#   -m DIR       checkpoint (default: a synthetic Qwen3-0.6B written by `megaqwen synth`)
#   -o DIR       report folder (default out/report); raw rows and logs go to DIR/raw
#   -n N         decode tokens per prompt (default 100, the seed's protocol)
#   --ctx LIST   megaqwen's context sweep (default 16,1024,4096,32768)
#   --peer-ctx   the peers' sweep (default 16,1024,4096; deep contexts cost them minutes)
#   --budget-s S wall-clock budget for everything (default 560): each step gets the time left and
#                a step that runs out is recorded as "timeout", so the report always gets written
#   --step-max-s S  no one step may take longer (default 240)
#   --bin PATH   use this megaqwen binary instead of building one
#   --backend B  megaqwen's backend (default cuda; cpu lets CI run this script on a tiny model)
#   --threads N  megaqwen's CPU threads (cpu backend; default 0 = all cores)
#   --settle-s S pause before each measured step so idle power is idle (default 3)
#   --power-s S, --idle-s S  power phase / idle sampling seconds (default 2 / 1)
#   --bw GBPS    bandwidth floor (default: measured with a 1 GB device-to-device copy through torch)
#   --only/--skip  comma-separated step names: megaqwen hf-eager gpt-fast hf-static quality vllm
#                sglang llama.cpp tensorrt-llm exllamav2
# Rows already in OUT/raw/runs (from an earlier partial run) are kept unless a step reruns them.
# The Debian libraries the build needs come from .deps/debs (scripts/deps.sh --debs) when the
# machine lacks them. Nothing here asserts a speed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
T_START=$(date +%s)
ARGS="$*"
MODEL="" OUTD=out/report N=100 CTX=16,1024,4096,32768 PCTX=16,1024,4096 POWER=2 IDLE=1 BACKEND=cuda BW="" THREADS=0 SETTLE=3 BUDGET=560 STEP_MAX_S=240 BIN="" ONLY="" SKIP=""
while [ $# -gt 0 ]; do
  case $1 in
    -m) MODEL=$2; shift 2;;  -o) OUTD=$2; shift 2;;  -n) N=$2; shift 2;;
    --ctx) CTX=$2; shift 2;;  --peer-ctx) PCTX=$2; shift 2;;  --power-s) POWER=$2; shift 2;;
    --budget-s) BUDGET=$2; shift 2;;  --bin) BIN=$2; shift 2;;  --only) ONLY=$2; shift 2;;
    --skip) SKIP=$2; shift 2;;  --step-max-s) STEP_MAX_S=$2; shift 2;;
    --idle-s) IDLE=$2; shift 2;;  --backend) BACKEND=$2; shift 2;;  --bw) BW=$2; shift 2;;
    --threads) THREADS=$2; shift 2;;  --settle-s) SETTLE=$2; shift 2;;
    -h|--help) sed -n '2,29p' "$0"; exit 0;;
    *) echo "bench-report: unknown option $1 (see --help)" >&2; exit 2;;
  esac
done
RAW=$OUTD/raw
mkdir -p "$RAW/runs"
LOG=$RAW/bench-report.log
say() { echo "[bench-report $(( $(date +%s) - T_START ))s] $*" | tee -a "$LOG" >&2; }
left() { echo $(( BUDGET - ($(date +%s) - T_START) )); }
want() { # want STEP: honour --only/--skip
  [ -n "$ONLY" ] && [[ ",$ONLY," != *",$1,"* ]] && return 1
  [[ ",$SKIP," == *",$1,"* ]] && return 1
  return 0
}
PY=${PYTHON:-python3}

# ---- build megaqwen (CUDA) unless given
if [ -z "$BIN" ]; then
  . "$ROOT/scripts/device-env.sh"
  ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '.')
  [ "$ARCH" = 90 ] && ARCH=90a  # Hopper: the sm_90a target, with wgmma (the prefill attention flash3_k)
  say "building megaqwen (CUDA arch ${ARCH:-default})"
  cmake -S . -B build-bench-report -DCMAKE_BUILD_TYPE=Release -DMQ_CUDA=ON ${ARCH:+-DMQ_CUDA_ARCHS=$ARCH} \
        -DMQ_TOKENIZER_DIR="$ROOT/.deps/qwen3-tokenizer" ${PKGCFG:-} >>"$LOG" 2>&1 &&
    cmake --build build-bench-report -j"$(nproc)" --target megaqwen_cli >>"$LOG" 2>&1 ||
    { say "build failed (tail of the log follows)"; tail -30 "$LOG" >&2; }
  BIN=$ROOT/build-bench-report/megaqwen
fi
[ -x "$BIN" ] || { say "no megaqwen binary at $BIN"; BIN=""; }

# ---- checkpoint
if [ -z "$MODEL" ]; then
  MODEL=/tmp/mq-qwen3-0.6b-synth
  CKPT_NOTE="synthetic Qwen3-0.6B shape (megaqwen synth --shape qwen3-0.6b --seed 1: random weights, real tokenizer); speed depends on the shape, not the values"
  if [ ! -s $MODEL/config.json ] && [ -n "$BIN" ]; then
    say "writing $MODEL"
    "$BIN" synth --shape qwen3-0.6b --seed 1 -o $MODEL >>"$LOG" 2>&1 || say "synth failed"
  fi
else
  CKPT_NOTE="$MODEL"
fi
MODEL=$(cd "$MODEL" 2>/dev/null && pwd || echo "$MODEL")

# ---- one step: run with the time left; a step that fails to print a row gets an error row
step() { # step NAME ROWFILE cmd...
  local name=$1 row=$2; shift 2
  [ "$row" != - ] && rm -f "$row"
  local t; t=$(left)
  [ "$t" -gt "${STEP_MAX:-100000}" ] && t=$STEP_MAX
  if [ "$t" -lt 20 ]; then
    echo "{\"schema\": \"megaqwen-bench/1\", \"framework\": \"$name\", \"status\": \"skipped\", \"reason\": \"out of time (budget ${BUDGET}s)\"}" >"$row"
    say "$name: skipped, out of time"; return
  fi
  # Let the GPU settle after the previous process so the next idle-power reading is idle.
  case $name in megaqwen-*|hf-eager|gpt-fast-style|hf-static-cudagraph) [ "$SETTLE" -gt 0 ] && sleep "$SETTLE";; esac
  say "$name: running (up to ${t}s)"
  PYTHONUNBUFFERED=1 timeout -k 10 "$t" "$@" >"$RAW/$name.out" 2>"$RAW/$name.err"; local rc=$?
  if [ "$row" != - ]; then
    if { [ $rc = 124 ] || [ $rc = 137 ]; } && grep -q '"status": "ok"' "$row" 2>/dev/null; then
      # The runner checkpoints its row as it goes: keep what it measured, say where it stopped.
      $PY - "$row" "$t" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read().splitlines()[-1])
r["notes"] = (r.get("notes", "") + "; " if r.get("notes") else "") + f"stopped by the {sys.argv[2]} s step limit"
open(sys.argv[1], "w").write(json.dumps(r) + "\n")
PY
    elif [ $rc = 124 ] || [ $rc = 137 ]; then
      echo "{\"schema\": \"megaqwen-bench/1\", \"framework\": \"$name\", \"status\": \"timeout\", \"reason\": \"stopped after ${t}s (budget ${BUDGET}s)\"}" >"$row"
    elif ! [ -s "$row" ]; then
      local why; why=$(tail -1 "$RAW/$name.err" | tr -d '"\\' | cut -c1-300)
      echo "{\"schema\": \"megaqwen-bench/1\", \"framework\": \"$name\", \"status\": \"error\", \"reason\": \"exit $rc: ${why:-no output}\"}" >"$row"
    fi
  fi
  say "$name: exit $rc"
}

# ---- the bandwidth floor: a measured 1 GB device-to-device copy (read + write), else 3000 assumed
BWARGS=()
if [ -z "$BW" ] && [ "$BACKEND" = cuda ]; then
  BW=$(timeout 60 $PY - 2>>"$LOG" <<'PY'
import torch
n = 1 << 30
a = torch.empty(n, dtype=torch.uint8, device="cuda"); b = torch.empty_like(a)
for _ in range(3): b.copy_(a)
e0, e1, ts = torch.cuda.Event(True), torch.cuda.Event(True), []
for _ in range(10):
    e0.record(); b.copy_(a); e1.record(); torch.cuda.synchronize(); ts.append(e0.elapsed_time(e1) / 1e3)
print(f"{2 * n / sorted(ts)[5] / 1e9:.0f}")
PY
)
  [ -n "$BW" ] && BWSRC="measured: 1 GB device-to-device copy, read + write"
fi
[ -n "$BW" ] && BWARGS=(--bw "$BW" --bw-source "${BWSRC:-given}") && say "bandwidth floor ${BW} GB/s (${BWSRC:-given})"

COMMON=(-m "$MODEL" -n "$N" --power-s "$POWER" --idle-s "$IDLE" --hz 20)
# Cheapest and most important first, so a tight budget loses the least: the frameworks that are
# absent answer in a second; megaqwen and the HF baseline; quality; then the compiled peers.
for r in vllm:vllm_runner sglang:sglang_runner llama.cpp:llamacpp_runner tensorrt-llm:trtllm_runner exllamav2:exllamav2_runner; do
  name=${r%%:*}; script=${r#*:}
  want "$name" && STEP_MAX=$STEP_MAX_S step "$name" "$RAW/runs/$name.json" $PY scripts/peers/$script.py "${COMMON[@]}" --ctx "$PCTX" --json "$RAW/runs/$name.json"
done
if want megaqwen && [ -n "$BIN" ]; then
  STEP_MAX=$STEP_MAX_S step "megaqwen-$BACKEND" "$RAW/runs/megaqwen-$BACKEND.json" "$BIN" bench "${COMMON[@]}" \
       --backend "$BACKEND" --threads "$THREADS" --ctx "$CTX" "${BWARGS[@]}" --json "$RAW/runs/megaqwen-$BACKEND.json"
  cat "$RAW/megaqwen-$BACKEND.out" >&2
fi
want hf-eager && STEP_MAX=$STEP_MAX_S step hf-eager "$RAW/runs/hf-eager.json" $PY scripts/peers/hf_eager.py "${COMMON[@]}" --ctx "$PCTX" --json "$RAW/runs/hf-eager.json"
want quality && rm -f "$RAW/quality.json" && STEP_MAX=$STEP_MAX_S step quality - $PY scripts/peers/quality.py -m "$MODEL" ${BIN:+--megaqwen "$BIN"} --backends "$BACKEND" --json "$RAW/quality.json"
want gpt-fast && STEP_MAX=$STEP_MAX_S step gpt-fast-style "$RAW/runs/gpt-fast-style.json" $PY scripts/peers/gptfast.py "${COMMON[@]}" --ctx "$PCTX" --json "$RAW/runs/gpt-fast-style.json"
want hf-static && STEP_MAX=$STEP_MAX_S step hf-static-cudagraph "$RAW/runs/hf-static.json" $PY scripts/peers/hf_static.py "${COMMON[@]}" --ctx "$PCTX" --json "$RAW/runs/hf-static.json"

# ---- facts about the machine
gitrev=${MQ_GIT_REV:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
$PY - "$RAW/meta.json" "$MODEL" "$CKPT_NOTE" "$gitrev" "$ARGS" <<'PY'
import json, subprocess, sys, datetime, platform
def sh(c):
    try:
        return subprocess.run(c, shell=True, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception:
        return ""
m = {"model": sys.argv[2], "model_name": "Qwen3-0.6B" if "0.6b" in sys.argv[2].lower() else sys.argv[2],
     "checkpoint_note": sys.argv[3], "git": sys.argv[4],
     "gpu": sh("nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -1"),
     "driver": sh("nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1"),
     "cuda": sh("nvcc --version | grep -o 'release [0-9.]*' | cut -d' ' -f2"),
     "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip() + f" ({sh('nproc')} cores)",
     "torch": sh("python3 -c 'import torch; print(torch.__version__)'"),
     "transformers": sh("python3 -c 'import transformers; print(transformers.__version__)'"),
     "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
     "command": "scripts/bench-report.sh " + sys.argv[5],
     "reproduce": "scripts/deps.sh --debs   # once, on a machine with apt, if the GPU machine lacks the -dev libraries\n"
                  "scripts/bench-report.sh  # on the GPU machine; writes out/report/"}
json.dump(m, open(sys.argv[1], "w"), indent=1)
PY
$PY scripts/report/make_report.py --runs "$RAW/runs" --quality "$RAW/quality.json" --meta "$RAW/meta.json" \
    --out "$OUTD" --lenient 2>&1 | tee -a "$LOG" >&2
say "done: $OUTD/REPORT.md"
cat "$OUTD/REPORT.md" 2>/dev/null
