#!/usr/bin/env bash
# test: build and run every test twice — a normal build (CUDA compiled; GPU tests skip without a
# GPU) and an ASan+UBSan build — with a libFuzzer smoke run of the parsers and a Debug build of the
# CPU reference test in between.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
J=$(nproc)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$J"
ctest --test-dir build --output-on-failure -j"$J"
# Fuzz smoke: the parsers and the tokenizer under libFuzzer + ASan/UBSan, a few seconds each.
FZ=${MQ_FUZZ_SECONDS:-10}
if [ "$FZ" -gt 0 ] && command -v clang >/dev/null; then
  CC=clang cmake -S . -B build-fuzz -DMQ_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
  cmake --build build-fuzz -j"$J" --target fuzz_safetensors fuzz_config fuzz_tokenizer fuzz_server_request >/dev/null
  for t in safetensors config tokenizer server_request; do
    mkdir -p build-fuzz/corpus-$t
    seeds=tests/fuzz/seeds/$t; [ -d "$seeds" ] || seeds=
    build-fuzz/fuzz_$t -max_total_time="$FZ" -max_len=4096 -print_final_stats=0 \
      build-fuzz/corpus-$t $seeds >build-fuzz/fuzz_$t.log 2>&1 || { tail -30 build-fuzz/fuzz_$t.log; echo "fuzz_$t FAILED"; exit 1; }
    echo "fuzz_$t: no findings in ${FZ} s"
  done
fi
# A plain Debug (-O0) build of the CPU reference: the dot products' x86-64-v3 clones with helpers left
# out of line (the sanitizer build compiles no clones, the Release build inlines everything)
cmake -S . -B build-debug -DMQ_CUDA=OFF -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-debug -j"$J" --target test_cpu >/dev/null
ctest --test-dir build-debug --output-on-failure -R '^test_cpu$'
cmake -S . -B build-asan -DMQ_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-asan -j"$J"
ASAN_OPTIONS=detect_leaks=1 ctest --test-dir build-asan --output-on-failure -j"$J"
