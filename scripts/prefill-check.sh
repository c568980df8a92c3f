#!/usr/bin/env bash
# prefill-check: on a GPU machine, one call builds megaqwen (CUDA, sm_90a), runs test_prefill (with
# TTFT timings), compares cuda prefill logits with HF fp32/bf16 and the CPU backend on a synthetic
# qwen3-0.6b at 1000 (and 5000, budget allowing) tokens, times HF's TTFT, and prints a table last.
#   scripts/prefill-check.sh [--budget-s S]      logs under $OUT (or out/prefill-check)
#   QUICK=1: build and test_prefill only; SKIP_HF=1: no HF TTFT step; PC_BUILD=DIR: use the megaqwen
#   already built in DIR (e.g. device-check's build-dc) and skip the build and test_prefill steps;
#   PC_NS: prompt lengths to compare (default "1000 5000"); PC_VARIANTS: more cuda settings (below)
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD T0=$(date +%s) BUDGET=540
[ "${1:-}" = --budget-s ] && BUDGET=$2
O=${OUT:-$ROOT/out/prefill-check}
mkdir -p "$O"
LOG=$O/prefill-check.log
: >"$LOG"
say() { echo "[pc $(( $(date +%s) - T0 ))s] $*" | tee -a "$LOG" >&2; }
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
declare -a TABLE
row() { TABLE+=("$*"); }

. "$ROOT/scripts/device-env.sh"
say "GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)"
B=${PC_BUILD:-$ROOT/build-pc}
BIN=$B/megaqwen
export MQ_TOKENIZER_DIR=$ROOT/.deps/qwen3-tokenizer
if [ -n "${PC_BUILD:-}" ]; then
  [ -x "$BIN" ] || { echo "prefill-check: no $BIN" >&2; exit 1; }
  row "build | reused $B"
else
cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DMQ_CUDA=ON -DMQ_CUDA_ARCHS=90a ${PKGCFG:-} \
  -DMQ_TOKENIZER_DIR="$MQ_TOKENIZER_DIR" >"$O/build.log" 2>&1 &&
  cmake --build "$B" -j"$(nproc)" --target megaqwen_cli test_prefill >>"$O/build.log" 2>&1
rc=$?
if [ $rc != 0 ]; then grep -E "error|Error" -A3 "$O/build.log" | head -40; row "build | FAILED"; printf '%s\n' "${TABLE[@]}"; exit 1; fi
row "build | ok (sm_90) $(( $(date +%s) - T0 ))s"

say "test_prefill (with TTFT)"
MQ_PREFILL_BENCH=1 timeout 240 "$B/test_prefill" >"$O/test.log" 2>&1
row "test_prefill | rc $? $(grep -cE '^\[ +OK' "$O/test.log") ok, $(grep -cE 'FAILED|SKIPPED' "$O/test.log") failed/skipped"
while read -r l; do row "  $l"; done < <(grep -E "rows|decode after|TTFT|past the cache|FAIL|rror" "$O/test.log" | head -24)
fi

if [ -n "${QUICK:-}" ]; then printf '%s\n' "${TABLE[@]}" | tee "$O/table.txt"; exit 0; fi
M06=/tmp/mq-q06
"$BIN" synth --shape qwen3-0.6b --seed 1 -o $M06 >>"$LOG" 2>&1 || say "synth failed"
for N in ${PC_NS:-1000 5000}; do
  [ "$N" = 5000 ] && [ "$(left)" -lt 200 ] && { row "logits $N | skipped (budget)"; continue; }
  say "logits $N tokens: cuda, HF fp32, HF bf16 (+cpu at 1000)"
  IDS=$(python3 -c "print(','.join(str((1000 + 7919 * i) % 100000) for i in range($N)))")
  echo "[${IDS}]" >/tmp/ids.json
  "$BIN" logits -m $M06 --ids "$IDS" --max-ctx $((N + 8)) -o /tmp/l_cuda.bin --backend cuda 2>>"$LOG"
  # the f16 KV cache (--kv-type f16: one-product f16 attention in the prefill)
  "$BIN" logits -m $M06 --ids "$IDS" --max-ctx $((N + 8)) -o /tmp/l_cudaf16.bin --backend cuda --kv-type f16 2>>"$LOG"
  python3 scripts/ref/hf_logits.py -m $M06 --ids @/tmp/ids.json --dtype fp32 -o /tmp/l_hf32.bin >>"$LOG" 2>&1
  python3 scripts/ref/hf_logits.py -m $M06 --ids @/tmp/ids.json --dtype bf16 -o /tmp/l_hf16.bin >>"$LOG" 2>&1
  C="cuda=/tmp/l_cuda.bin cuda-kvf16=/tmp/l_cudaf16.bin"
  # PC_VARIANTS="LABEL:VAR=VALUE[,VAR=VALUE...] ...": more cuda runs under those settings
  for v in ${PC_VARIANTS:-}; do
    lab=${v%%:*} ev=${v#*:}
    env ${ev//,/ } "$BIN" logits -m $M06 --ids "$IDS" --max-ctx $((N + 8)) -o "/tmp/l_v_$lab.bin" --backend cuda \
      2>>"$LOG" && C="$C cuda-$lab=/tmp/l_v_$lab.bin"
  done
  if [ "$N" = 1000 ] && [ "$(left)" -gt 300 ]; then
    timeout 90 "$BIN" logits -m $M06 --ids "$IDS" --max-ctx $((N + 8)) -o /tmp/l_cpu.bin --backend cpu 2>>"$LOG" &&
      C="$C cpu=/tmp/l_cpu.bin"
  fi
  python3 scripts/ref/compare_logits.py --vocab 151936 --hf32 /tmp/l_hf32.bin --hfbf16 /tmp/l_hf16.bin $C \
    hf-bf16=/tmp/l_hf16.bin >"$O/logits$N.txt" 2>&1
  while read -r l; do row "logits $N $l"; done < <(python3 -c "
import json
for l in open('$O/logits$N.txt'):
    if l.startswith('{'):
        r=json.loads(l); print(f\"{r['name']} vs HF fp32 (T={r['T']}) | mean KL {r['kl_mean']:.2e}, argmax {100*r['argmax_nontie']:.2f}% non-tie ({100*r['argmax_all']:.2f}% all), max|dlogit| {r['max_abs_dlogit']:.3g}\")
" 2>>"$LOG")
  rm -f /tmp/l_*.bin
done

if [ -z "${SKIP_HF:-}" ] && [ "$(left)" -gt 60 ]; then
  say "HF TTFT (bf16, eager and sdpa)"
  python3 - $M06 >"$O/hf_ttft.txt" 2>>"$LOG" <<'EOF'
import sys, time, torch
from transformers import AutoModelForCausalLM
for attn in ("eager", "sdpa"):
    m = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.bfloat16, attn_implementation=attn).cuda().eval()
    for n in (8, 32, 512, 4096):
        ids = torch.tensor([[(1000 + 7919 * i) % 100000 for i in range(n)]], device="cuda")
        ts = []
        with torch.no_grad():
            for r in range(6):
                torch.cuda.synchronize(); t0 = time.perf_counter()
                lg = m(ids, logits_to_keep=1).logits[0, -1].float().cpu()
                ts.append(time.perf_counter() - t0)
        ts = sorted(ts[1:])
        print(f"HF {attn} bf16 TTFT {n} tokens: median {ts[2]*1e3:.2f} ms")
    del m
EOF
  while read -r l; do row "  $l"; done <"$O/hf_ttft.txt"
fi
say "done"
printf '%s\n' "${TABLE[@]}" | tee "$O/table.txt"
