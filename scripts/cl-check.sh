#!/usr/bin/env bash
# cl-check: decode_cl (MQ_CUDA_CL) on the device in one call: plan line, greedy 256 against decode_df, test_cuda's
# test_greedy_cl, block 0 profiles, bench ABBA against a baseline binary at ctx 16 / 1K / 4K, its knobs, and
# compute-sanitizer on 2 layers; CL_DFVARS: decode_df variants of C. Binaries: prebuilt (scripts/prebuild.sh --out DIR) in $CL_C (this tree) and
# $CL_S (the baseline), default .deps/q29/binC and .deps/q29/binS; else this tree and .deps/main are built here.
#   run: bash scripts/cl-check.sh > $OUT/cl.log 2>&1, carry .deps/debs .deps/qwen3-tokenizer and the binaries
cd "$(dirname "$0")/.."
ROOT=$PWD; T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
. scripts/device-env.sh
export MQ_TOKENIZER_DIR=$ROOT/.deps/qwen3-tokenizer
nvidia-smi --query-gpu=name --format=csv,noheader
bld() { cmake -S "$1" -B "$2" -DCMAKE_BUILD_TYPE=Release -DMQ_CUDA=ON -DMQ_CUDA_ARCHS=90a $PKGCFG -DMQ_TOKENIZER_DIR=$MQ_TOKENIZER_DIR >"$2.log" 2>&1 && cmake --build "$2" -j"$3" >>"$2.log" 2>&1; echo "build $2 rc $? at $(el)s"; }
mkdir -p .deps/main/.deps && ln -sfn "$ROOT/.deps/qwen3-tokenizer" .deps/main/.deps/qwen3-tokenizer
pre() { mkdir -p "$2"; for f in "$1"/*.gz; do gzip -dc "$f" >"$2/$(basename "${f%.gz}")"; chmod +x "$2/$(basename "${f%.gz}")"; done; echo "prebuilt $1 ($(cat $1/commit 2>/dev/null))"; }
if [ -s ${CL_C:-.deps/q29/binC}/megaqwen.gz ]; then pre ${CL_C:-.deps/q29/binC} /tmp/bC; else bld . /tmp/bC 10 & fi
if [ -s ${CL_S:-.deps/q29/binS}/megaqwen.gz ]; then pre ${CL_S:-.deps/q29/binS} /tmp/bS; else bld .deps/main /tmp/bS 6 & fi
# optional third binary (CL_L, default .deps/q30/binL: another decode_df build) beside S in the greedy and ABBA runs
[ -s ${CL_L:-.deps/q30/binL}/megaqwen.gz ] && pre ${CL_L:-.deps/q30/binL} /tmp/bL
wait
C=/tmp/bC/megaqwen S=/tmp/bS/megaqwen L=/tmp/bL/megaqwen
BL=""; [ -x $L ] && BL=L
[ -x $C ] || { tail -30 /tmp/bC.log; exit 1; }
M=/tmp/m06; $C synth --shape qwen3-0.6b --seed 1 -o $M >/dev/null 2>&1
M2=/tmp/m06l2; $C synth --shape qwen3-0.6b --layers 2 --seed 3 -o $M2 >/dev/null 2>&1
CL="MQ_CUDA_CL=100000"
echo "== plan ($(el)s)"
env $CL MQ_CUDA_PROFILE=1 timeout 60 $C run -m $M --prompt-ids 1,2,3,4 -n 4 --ids --ignore-eos --backend cuda 2>&1 | grep -o 'cluster kernel[^;]*\|megaqwen:.*\|megakernel(cl).*' | head -4
P=785,3840,315,279,18484,3493,12033,304,279,11128,45387,9294,11,979
G="run -m $M --prompt-ids $P -n 256 --ids --ignore-eos --backend cuda"
timeout 60 $S $G >/tmp/gS.txt 2>/tmp/gS.err
timeout 60 $C $G >/tmp/gCdf.txt 2>/tmp/gCdf.err
[ -n "$BL" ] && timeout 60 $L $G >/tmp/gL.txt 2>/tmp/gL.err
env $CL timeout 150 $C $G >/tmp/gCcl.txt 2>/tmp/gCcl.err; echo "cl greedy rc $? ($(el)s)"; tail -3 /tmp/gCcl.err
pfx() { python3 -c "import sys,re;a=re.findall(r'-?\d+',open(sys.argv[1]).read());b=re.findall(r'-?\d+',open(sys.argv[2]).read());n=0
while n<min(len(a),len(b)) and a[n]==b[n]: n+=1
print(f'{sys.argv[1]} vs {sys.argv[2]}: {n} of {len(a)}/{len(b)} numbers identical')" "$1" "$2"; }
env $CL MQ_CUDA_CLRED=0 MQ_CUDA_CLGU=0 timeout 150 $C $G >/tmp/gCr.txt 2>/tmp/gCr.err; echo "cl CLRED=0 CLGU=0 greedy rc $?"
pfx /tmp/gS.txt /tmp/gCdf.txt; pfx /tmp/gS.txt /tmp/gCcl.txt; pfx /tmp/gS.txt /tmp/gCr.txt; [ -n "$BL" ] && pfx /tmp/gS.txt /tmp/gL.txt
echo "== test_greedy_cl ($(el)s)"
(cd /tmp/bC && MQ_TEST_FILTER=test_greedy_cl timeout 200 ./test_cuda 2>&1 | grep -E 'identical|PASSED|FAILED|ERROR|SKIP|cluster|Failure|stuck' | head -12)
echo "== profiles ($(el)s)"
for k in cl df; do
  e=""; [ $k = cl ] && e=$CL
  env $e MQ_CUDA_PROFILE=1 timeout 60 $C run -m $M --prompt-ids 1,2,3,4,5,6,7,8 -n 124 --ids --ignore-eos --backend cuda 2>&1 >/dev/null | grep -E 'sub-stages|profile \(' | cut -c1-900
done
echo "== bench ABBA ($(el)s)"
for r in A B; do
  for b in S C Cdf $BL; do
    case $b in S) x="MQ_CUDA_SYNC=df $S";; C) x="$CL $C";; Cdf) x="MQ_CUDA_SYNC=df $C";; L) x="MQ_CUDA_SYNC=df $L";; esac
    echo "$r $b: $(timeout 100 env $x bench -m $M --backend cuda --ctx 16,1024,4096 -n 128 --power-s 0 --idle-s 0 2>&1 | awk -F'|' 'NF==9 && $2+0>0{printf "ctx %s %s tok/s %s | ", $2+0, $3+0, $8}')"
  done
done
echo "== cl variants ($(el)s)"
for v in ${CL_VARS:-MQ_CUDA_CLRED=0 MQ_CUDA_CLGU=0 MQ_CUDA_CLGU=2 MQ_CUDA_CLLM=0}; do
  echo "$v: $(timeout 100 env $CL $(echo $v | tr , ' ') $C bench -m $M --backend cuda --ctx 16,1024,4096 -n 128 --power-s 0 --idle-s 0 2>&1 | awk -F'|' 'NF==9 && $2+0>0{printf "ctx %s %s tok/s %s | ", $2+0, $3+0, $8}')"
done
for v in ${CL_DFVARS:-}; do  # decode_df variants of C
  echo "df $v: $(timeout 100 env MQ_CUDA_SYNC=df $(echo $v | tr , ' ') $C bench -m $M --backend cuda --ctx 16,1024,4096 -n 128 --power-s 0 --idle-s 0 2>&1 | awk -F'|' 'NF==9 && $2+0>0{printf "ctx %s %s tok/s %s | ", $2+0, $3+0, $8}')"
done
echo "== sanitizers on 2 layers ($(el)s)"
for t in memcheck racecheck synccheck; do
  [ $(el) -lt 420 ] || break
  env $CL timeout 90 compute-sanitizer --tool $t $C run -m $M2 --prompt-ids 1,2,3 -n 3 --ids --ignore-eos --backend cuda 2>&1 | grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|Invalid|Race|hazard' | head -4
done
echo "done at $(el)s"
