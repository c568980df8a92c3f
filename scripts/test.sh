#!/usr/bin/env bash
# test: build and run every test twice — a normal build (CUDA compiled; GPU tests skip without a
# GPU) and an ASan+UBSan build.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
J=$(nproc)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$J"
ctest --test-dir build --output-on-failure -j"$J"
cmake -S . -B build-asan -DMQ_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-asan -j"$J"
ASAN_OPTIONS=detect_leaks=1 ctest --test-dir build-asan --output-on-failure -j"$J"
