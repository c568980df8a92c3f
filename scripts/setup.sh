#!/usr/bin/env bash
# setup: deps, build, write a synthetic Qwen3-0.6B-shaped checkpoint, and run it on the best backend.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
M=out/qwen3-0.6b-synth
[ -s "$M/model.safetensors" ] || build/megaqwen synth --shape qwen3-0.6b --seed 1 -o "$M"
build/megaqwen run -m "$M" -p "The quick brown fox" -n 24
