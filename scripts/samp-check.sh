#!/usr/bin/env bash
# samp-check: device sampling of a candidate build B against a baseline A in one device call: B's test_cuda
# sampling tests (draws against src/sampler.c, one launch against one per token, on decode_df's tiny shape
# and on decode_cl), `bench --sample` (Qwen3's generation_config) ABBA, the ids of sampled runs under both
# (top-k 40 + top-p + min-p + repeat penalty, top-k 20 + top-p + temp 0.6, top-k 64 + temp 1.3: they must be
# identical), and MQ_CUDA_PROFILE's lm_head lines (its rows, and the last block's tail: the token's choice).
#   SC_A, SC_B: prebuilt binaries (scripts/prebuild.sh --out DIR with megaqwen.gz, test_cuda.gz, source_dir);
#   SC_CTX (default 16,1024). Run: bash scripts/samp-check.sh > $OUT/samp.log 2>&1, carry .deps/debs,
#   .deps/qwen3-tokenizer and both binary directories.
cd "$(dirname "$0")/.."
ROOT=$PWD; T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
. scripts/device-env.sh >/dev/null 2>&1
export MQ_TOKENIZER_DIR=$ROOT/.deps/qwen3-tokenizer
echo "$(nvidia-smi --query-gpu=name --format=csv,noheader)"
for v in A B; do
  d=$(eval echo \${SC_$v:-}); [ -s "$d/megaqwen.gz" ] || { echo "samp-check: no prebuilt binaries in SC_$v='$d'"; exit 1; }
  mkdir -p /tmp/s$v
  for f in megaqwen test_cuda; do [ -s $d/$f.gz ] && gzip -dc $d/$f.gz >/tmp/s$v/$f && chmod +x /tmp/s$v/$f; done
  echo "$v: $(cat $d/commit)"
done
SRCD=$(cat $SC_B/source_dir 2>/dev/null); [ -n "$SRCD" ] && [ "$SRCD" != "$ROOT" ] && mkdir -p "$(dirname "$SRCD")" && ln -sfn "$ROOT" "$SRCD"
echo "== B: test_cuda test_sample* ($(el)s)"
(cd /tmp/sB && MQ_TEST_FILTER='test_sample*' timeout 150 ./test_cuda 2>&1 | grep -E 'draws|sequences|OK|FAIL|PASS|rror')
M=/tmp/m06s; [ -s $M/config.json ] || /tmp/sB/megaqwen synth --shape qwen3-0.6b --seed 1 -o $M >/dev/null 2>&1
echo "== bench --sample, generation_config, ABBA ($(el)s)"
row() { awk -F'|' 'NF==9 && $2+0>0{printf "ctx %s %s tok/s %s | ", $2+0, $3+0, $8}'; }
for v in A B B A; do
  echo "$v: $(timeout 60 /tmp/s$v/megaqwen bench -m $M --backend cuda --sample --ctx ${SC_CTX:-16,1024} -n 128 --power-s 0 --idle-s 0 2>&1 | row)"
done
echo "== sampled runs, ids md5 ($(el)s)"
for s in "--top-k 40 --top-p 0.9 --min-p 0.05 --repeat-penalty 1.2" "--top-k 20 --top-p 0.95 --temp 0.6" "--top-k 64 --temp 1.3"; do
  for v in A B; do
    ids=$(timeout 60 /tmp/s$v/megaqwen run -m $M --prompt-ids 785,3840,315,279 -n 256 --ids --ignore-eos --seed 42 \
      $s --backend cuda 2>/tmp/e.txt | md5sum | cut -c1-12)
    echo "$v $s: ids $ids, $(grep -o 'decode [0-9.]* tok/s' /tmp/e.txt)"
  done
done
echo "== profiles, sampled (generation_config) ($(el)s)"
for v in A B; do
  echo "-- $v"
  MQ_CUDA_PROFILE=1 timeout 60 /tmp/s$v/megaqwen run -m $M --prompt-ids 1,2,3,4,5,6,7,8 -n 124 --ids --ignore-eos --backend cuda 2>&1 >/dev/null |
    grep -E 'last block|profile \(' | tail -2 | grep -o 'lm_head rows[^;]*;\|lm_head tail[^;]*;\|megakernel lm_head last block.*'
done
echo "done at $(el)s"
