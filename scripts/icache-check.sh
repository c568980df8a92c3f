#!/usr/bin/env bash
# icache-check: where the decode kernels' warps stall (Nsight Compute stall reasons, instruction-fetch
# stalls among them) and a bench ABBA of two prebuilt binaries, in one device call. The kernels are
# 545-657 KB of code each (session 31), so a layer's stages may fetch their instructions from L2.
#   IC_A, IC_B: prebuilt binary directories (scripts/prebuild.sh --out DIR); IC_NCU: "A:cl A:df B:cl"
#   run: bash scripts/icache-check.sh > $OUT/ic.log 2>&1, carry .deps/debs .deps/qwen3-tokenizer and both
cd "$(dirname "$0")/.."
ROOT=$PWD; T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
. scripts/device-env.sh
export MQ_TOKENIZER_DIR=$ROOT/.deps/qwen3-tokenizer
nvidia-smi --query-gpu=name,clocks.sm --format=csv,noheader
pre() { mkdir -p "$2"; gzip -dc "$1/megaqwen.gz" >"$2/megaqwen"; chmod +x "$2/megaqwen"; echo "prebuilt $1 ($(cat $1/commit 2>/dev/null))"; }
pre ${IC_A:?IC_A: a prebuilt directory} /tmp/icA; pre ${IC_B:?IC_B: a prebuilt directory} /tmp/icB
A=/tmp/icA/megaqwen B=/tmp/icB/megaqwen
M=/tmp/m06; $A synth --shape qwen3-0.6b --seed 1 -o $M >/dev/null 2>&1
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
echo "== ncu ($NCU, $(el)s)"
for c in ${IC_NCU:-A:cl A:df B:cl}; do
  b=${c%%:*} k=${c##*:}; x=$A; [ $b = B ] && x=$B
  e="MQ_CUDA_SYNC=auto"; [ $k = df ] && e="MQ_CUDA_SYNC=df"
  [ $(el) -lt 300 ] || break
  echo "-- $b $k"
  env $e timeout 120 $NCU --kernel-name regex:decode_ --launch-count 1 --section WarpStateStats \
    --metrics 'regex:smsp__warp_issue_stalled_.*_per_warp_active\.pct$,smsp__inst_executed.sum,sm__cycles_elapsed.max' \
    $x run -m $M --prompt-ids 1,2,3,4 -n 32 --ids --ignore-eos --backend cuda 2>&1 |
    grep -E 'decode_|stalled|Stall|inst_executed|cycles_elapsed|Warp Cycles|Issued' | grep -vE ' 0(\.0+)?$' | sed 's/  */ /g' | head -40
done
echo "== bench ABBA ($(el)s)"
row() { awk -F'|' 'NF==9 && $2+0>0{printf "ctx %s %s tok/s %s | ", $2+0, $3+0, $8}'; }
BN="bench -m $M --backend cuda --ctx 16,1024 -n 128 --power-s 0 --idle-s 0"
for r in 1 2; do
  for v in "A auto" "B auto" "A df" "B df"; do
    set -- $v; x=$A; [ $1 = B ] && x=$B
    echo "$r $1 $2: $(env MQ_CUDA_SYNC=$2 timeout 60 $x $BN 2>&1 | row)"
  done
done
echo "== profiles ($(el)s)"
for v in "A auto" "B auto"; do
  set -- $v; x=$A; [ $1 = B ] && x=$B
  env MQ_CUDA_SYNC=$2 MQ_CUDA_PROFILE=1 timeout 60 $x run -m $M --prompt-ids 1,2,3,4,5,6,7,8 -n 124 --ids --ignore-eos \
    --backend cuda 2>&1 >/dev/null | grep -E 'sub-stages' | sed "s/^/$1: /" | cut -c1-700
done
echo "done at $(el)s"
