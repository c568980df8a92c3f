#!/usr/bin/env bash
# dk-check: branch dk's distributed top-k for sampling in one device call. test_cuda's sampling tests
# (draws against src/sampler.c, on decode_df's tiny shape and on decode_cl), `bench --sample` with
# MQ_CUDA_DK=1 / 0 (ABBA), and the ids of a sampled `run` (top-k 40, top-p, min-p, penalty) under both.
#   DK_BIN: a directory with megaqwen.gz, test_cuda.gz and source_dir (scripts/prebuild.sh --ref dk),
#   default .deps/q31/dkD. Run: bash scripts/dk-check.sh > $OUT/dk.log 2>&1, carry .deps/debs,
#   .deps/qwen3-tokenizer and DK_BIN.
cd "$(dirname "$0")/.."
ROOT=$PWD; T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
. scripts/device-env.sh >/dev/null 2>&1
export MQ_TOKENIZER_DIR=$ROOT/.deps/qwen3-tokenizer
nvidia-smi --query-gpu=name --format=csv,noheader
D=${DK_BIN:-.deps/q31/dkD}
[ -s $D/megaqwen.gz ] || { echo "dk-check: no prebuilt binaries in $D"; exit 1; }
mkdir -p /tmp/bD
for f in megaqwen test_cuda; do gzip -dc $D/$f.gz >/tmp/bD/$f; chmod +x /tmp/bD/$f; done
echo "binaries $(cat $D/commit)"
# the tests find their fixtures through the source directory compiled into them
SRCD=$(cat $D/source_dir 2>/dev/null); [ -n "$SRCD" ] && [ "$SRCD" != "$ROOT" ] && mkdir -p "$(dirname "$SRCD")" && ln -sfn "$ROOT" "$SRCD"
echo "== test_cuda test_sample* ($(el)s)"
(cd /tmp/bD && MQ_TEST_FILTER='test_sample*' timeout 150 ./test_cuda 2>&1 | grep -E 'draws|sequences|set [0-9]|OK|FAIL|PASS|rror')
M=/tmp/m06; /tmp/bD/megaqwen synth --shape qwen3-0.6b --seed 1 -o $M >/dev/null 2>&1
echo "== bench --sample, generation_config ($(el)s)"
row() { awk -F'|' 'NF==9 && $2+0>0{printf "ctx %s %s tok/s %s | ", $2+0, $3+0, $8}'; }
for v in 1 0 0 1; do
  echo "DK=$v: $(MQ_CUDA_DK=$v timeout 60 /tmp/bD/megaqwen bench -m $M --backend cuda --sample --ctx 16,1024,4096 -n 128 --power-s 0 --idle-s 0 2>&1 | row)"
done
echo "== sampled run, ids md5 ($(el)s)"
for v in 1 0; do
  for s in "--top-k 40 --top-p 0.9 --min-p 0.05 --repeat-penalty 1.2" "--top-k 20 --top-p 0.95 --temp 0.6" "--top-k 64 --temp 1.3"; do
    ids=$(MQ_CUDA_DK=$v timeout 60 /tmp/bD/megaqwen run -m $M --prompt-ids 785,3840,315,279 -n 256 --ids --ignore-eos --seed 42 \
      $s --backend cuda 2>/tmp/e.txt | md5sum | cut -c1-12)
    echo "DK=$v $s: ids $ids, $(grep -o 'decode [0-9.]* tok/s' /tmp/e.txt)"
  done
done
echo "done at $(el)s"
