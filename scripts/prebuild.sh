#!/usr/bin/env bash
# prebuild: build the device-check binaries here, for the device's GPU (sm_90 unless told), into the
# git-ignored .deps/bin, so that a device call skips its 90-140 s build: carry .deps/bin and run
#   DC_PREBUILT=.deps/bin bash scripts/device-check.sh --only ...
# (~24 MB gzip-compressed, beside the tokenizer's 11 MB and the .deb files, under the 64 MiB carry limit).
#   scripts/prebuild.sh [ARCH]
set -euo pipefail
cd "$(dirname "$0")/.."
ARCH=${1:-90a}
B=build-pre
cmake -S . -B $B -DCMAKE_BUILD_TYPE=Release -DMQ_CUDA=ON -DMQ_CUDA_ARCHS="$ARCH" \
  -DMQ_TOKENIZER_DIR="$PWD/.deps/qwen3-tokenizer" >/dev/null
cmake --build $B -j"$(nproc)" --target megaqwen_cli test_cuda test_prefill mvbench
mkdir -p .deps/bin
rm -f .deps/bin/*
for f in megaqwen test_cuda test_prefill mvbench; do
  cp "$B/$f" .deps/bin/
  strip ".deps/bin/$f" 2>/dev/null || true
  gzip -9f ".deps/bin/$f"   # ~14 -> ~6 MB each: the carry limit is 64 MiB
done
# the tests find their fixtures through the source directory compiled into them (MQ_SOURCE_DIR):
# device-check links that path to its own tree when they differ
echo "$PWD" >.deps/bin/source_dir
echo "$ARCH" >.deps/bin/arch
du -sh .deps/bin
