#!/usr/bin/env bash
# knob-check: one binary's decode under a few settings of its knobs, in one device call: test_cuda's tests
# matching $KC_TESTS, 256 greedy ids on the synthetic 0.6B per setting against the CPU backend's, the
# MQ_CUDA_PROFILE lines (decode_cl: per half-layer and block 0's sub-stages) per setting after prompts of
# $KC_PROFCTX tokens (default 8), and bench ABBA (settings in order, then reversed) at $KC_CTX.
#   KC_BIN: prebuilt binaries (scripts/prebuild.sh --out DIR), default .deps/bin; KC_VARS: settings, each
#   comma-separated VAR=VALUE pairs ("base" = none), default "base"; KC_CTX default 16,1024; KC_TESTS
#   default 'test_greedy_cl*' ("" = none); KC_ROUNDS: ABBA rounds (default 2).
#   Run: bash scripts/knob-check.sh > $OUT/kc.log 2>&1, carry .deps/debs, .deps/qwen3-tokenizer and KC_BIN.
cd "$(dirname "$0")/.."
ROOT=$PWD; T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
. scripts/device-env.sh >/dev/null 2>&1
export MQ_TOKENIZER_DIR=$ROOT/.deps/qwen3-tokenizer
D=${KC_BIN:-.deps/bin}
[ -s $D/megaqwen.gz ] || { echo "knob-check: no prebuilt binaries in $D"; exit 1; }
mkdir -p /tmp/bK
for f in megaqwen test_cuda; do gzip -dc $D/$f.gz >/tmp/bK/$f; chmod +x /tmp/bK/$f; done
echo "binaries $(cat $D/commit) on $(nvidia-smi --query-gpu=name --format=csv,noheader)"
SRCD=$(cat $D/source_dir 2>/dev/null); [ -n "$SRCD" ] && [ "$SRCD" != "$ROOT" ] && mkdir -p "$(dirname "$SRCD")" && ln -sfn "$ROOT" "$SRCD"
X=/tmp/bK/megaqwen M=/tmp/m06k
[ -s $M/config.json ] || $X synth --shape qwen3-0.6b --seed 1 -o $M >/dev/null 2>&1
VARS=${KC_VARS:-base}
envof() { [ "$1" = base ] || echo "$1" | tr , ' '; }
if [ -n "${KC_TESTS-test_greedy_cl*}" ]; then
  echo "== test_cuda ${KC_TESTS-test_greedy_cl*} ($(el)s)"
  for v in $VARS; do
    echo "-- $v"
    (cd /tmp/bK && env $(envof $v) MQ_TEST_FILTER="${KC_TESTS-test_greedy_cl*}" timeout 150 ./test_cuda 2>&1 |
      grep -E 'identical|PASSED|FAILED|ERROR|SKIP|Failure|stuck|does not run' | head -8)
  done
fi
echo "== greedy 256 against the CPU ($(el)s)"
P=785,3840,315,279,18484,3493,12033,304,279,11128,45387,9294,11,979
G="run -m $M --prompt-ids $P -n 256 --ids --ignore-eos --temp 0"
timeout 150 $X $G --backend cpu >/tmp/gk_cpu.txt 2>/dev/null &
i=0
for v in $VARS; do env $(envof $v) timeout 60 $X $G --backend cuda >/tmp/gk_$i.txt 2>/dev/null; i=$((i + 1)); done
wait
i=0
for v in $VARS; do
  python3 -c "import sys,re;a=re.findall(r'-?\d+',open(sys.argv[1]).read());b=re.findall(r'-?\d+',open(sys.argv[2]).read());n=0
while n<min(len(a),len(b)) and a[n]==b[n]: n+=1
print(f'{sys.argv[3]}: {n} of {len(a)}/{len(b)} ids identical to the CPU')" /tmp/gk_cpu.txt /tmp/gk_$i.txt "$v"
  i=$((i + 1))
done
for c in ${KC_PROFCTX:-8}; do
  echo "== profiles (MQ_CUDA_PROFILE), prompt $c + 124 tokens ($(el)s)"
  ids=$(python3 -c "print(','.join(str(i % 997 + 1) for i in range($c)))")
  for v in $VARS; do
    echo "-- $v"
    env $(envof $v) MQ_CUDA_PROFILE=1 timeout 60 $X run -m $M --prompt-ids $ids -n 124 --ids --ignore-eos --temp 0 ${KC_RUNFLAGS:-} --backend cuda 2>&1 >/dev/null |
      grep -E 'sub-stages|profile \(' | tail -2 | cut -c1-900
  done
done
echo "== bench ABBA, ctx ${KC_CTX:-16,1024}, n 128 ($(el)s)"
row() { awk -F'|' 'NF==9 && $2+0>0{printf "ctx %s %s tok/s %s | ", $2+0, $3+0, $8}'; }
for r in $(seq 1 ${KC_ROUNDS:-2}); do
  for v in $VARS; do
    echo "$r $v: $(env $(envof $v) timeout 60 $X bench -m $M --backend cuda --ctx ${KC_CTX:-16,1024} -n 128 --power-s 0 --idle-s 0 2>&1 | row)"
  done
  VARS=$(echo $VARS | tr ' ' '\n' | tac | tr '\n' ' ')
done
echo "done at $(el)s"
