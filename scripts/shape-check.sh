#!/usr/bin/env bash
# shape-check: decode past the 0.6B in one device call. A decode_df binary L ($SC_L, default .deps/bin, prebuilt
# with test_cuda by scripts/prebuild.sh) and optionally a baseline S ($SC_S): the 1.7B, a 4B with 12 of its 36
# layers and an 8B with 8 of 36 (synthetic, real widths) at ctx 16 and 1K (tok/s, MB read per step, GB/s), L
# under each of $SC_VARS (comma-separated VAR=VALUE sets, "base" = none; default: the streamed stages' L2
# prefetch knobs MQ_CUDA_SPF / MQ_CUDA_DPF), the grid kernel beside; then L's test_cuda with the time left
# (SC_TEST=0: not).
#   run: bash scripts/shape-check.sh > $OUT/sc.log 2>&1, carry .deps/debs .deps/qwen3-tokenizer and the binaries
cd "$(dirname "$0")/.."
ROOT=$PWD; T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
. scripts/device-env.sh
export MQ_TOKENIZER_DIR=$ROOT/.deps/qwen3-tokenizer
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
pre() { mkdir -p "$2"; for f in "$1"/*.gz; do gzip -dc "$f" >"$2/$(basename "${f%.gz}")"; chmod +x "$2/$(basename "${f%.gz}")"; done; echo "prebuilt $1 ($(cat $1/commit 2>/dev/null))"; }
LD=${SC_L:-.deps/bin} SD=${SC_S:-}
[ -s $LD/megaqwen.gz ] || { echo "shape-check: no prebuilt binaries in $LD"; exit 1; }
pre $LD /tmp/bL; [ -n "$SD" ] && pre $SD /tmp/bS
L=/tmp/bL/megaqwen S=/tmp/bS/megaqwen
VARS=${SC_VARS:-base MQ_CUDA_SPF=1 MQ_CUDA_SPF=2 MQ_CUDA_SPF=4 MQ_CUDA_DPF=4 MQ_CUDA_DPF=8 MQ_CUDA_DPF=16 MQ_CUDA_SPF=2,MQ_CUDA_DPF=8 base}
# the tests find their fixtures through the source directory compiled into them
SRCD=$(cat $LD/source_dir 2>/dev/null); [ -n "$SRCD" ] && [ "$SRCD" != "$ROOT" ] && mkdir -p "$(dirname "$SRCD")" && ln -sfn "$ROOT" "$SRCD"
syn() { [ -s $2/config.json ] || $L synth --shape $1 ${3:+--layers $3} --seed 5 -o $2 >/dev/null 2>&1; echo "synth $1 ${3:+($3 layers)} rc $? at $(el)s, $(du -sh $2 | cut -f1)"; }
row() { awk -F'|' 'NF==9 && $2+0>0{printf "ctx %s %s tok/s %s MB %s GB/s %s | ", $2+0, $3+0, $5+0, $6+0, $8}'; }
B="bench --backend cuda --ctx 16,1024 -n 64 --power-s 0 --idle-s 0"
for sh in "qwen3-1.7b /tmp/m17" "qwen3-4b /tmp/m4 12" "qwen3-8b /tmp/m8 8"; do
  set -- $sh
  syn $1 $2 $3
  [ -s $2/config.json ] || continue
  echo "== $1 ($(el)s)"
  env MQ_CUDA_PROFILE=1 timeout 60 $L run -m $2 --prompt-ids 1,2,3 -n 2 --ids --ignore-eos --backend cuda 2>&1 | grep -o "dataflow: grid[^;]*;" | head -1
  if [ -n "$SD" ]; then
    for r in A B; do
      for b in S L; do
        x=$S; [ $b = L ] && x=$L
        echo "$r $b df: $(timeout 120 env MQ_CUDA_SYNC=df $x $B -m $2 2>&1 | row)"
      done
    done
  fi
  for v in $VARS; do
    e=$(echo "$v" | sed 's/^base$//; s/,/ /g')
    echo "L $v: $(timeout 120 env MQ_CUDA_SYNC=df $e $L $B -m $2 2>&1 | row)"
  done
  echo "L grid: $(timeout 120 env MQ_CUDA_SYNC=grid $L $B -m $2 2>&1 | row)"
  rm -rf $2
done
echo "== L test_cuda ($(el)s)"
left=$(( 540 - $(el) )); [ "${SC_TEST:-1}" = 1 ] && [ $left -gt 30 ] && (cd /tmp/bL && timeout $left ./test_cuda 2>&1 | grep -E '^\[  (PASSED|FAILED|  OK|  ERROR|  SKIP)|identical|Failure|error' | tail -40)
echo "done at $(el)s"
