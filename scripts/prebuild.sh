#!/usr/bin/env bash
# prebuild: build the device-check binaries here, for the device's GPU (sm_90a unless told), into the
# git-ignored .deps/bin, so that a device call skips its 90-140 s build: carry .deps/bin and run
#   DC_PREBUILT=.deps/bin bash scripts/device-check.sh --only ...
# (~24 MB gzip-compressed, beside the tokenizer's 11 MB and the .deb files, under the 64 MiB carry limit).
#   scripts/prebuild.sh [ARCH] [--ref REF [--out DIR] [--wt NAME]]
# --ref REF: build git revision REF (e.g. a branch to measure against main) in its own worktree
# (.deps/wt-REF, with its own build directory) into DIR (default .deps/bin-REF), so this checkout's
# files never change under a build running here (switching branches during a build mixes sources).
# --wt NAME: build in the worktree .deps/wt-NAME instead (an earlier ref's: only what differs recompiles).
set -euo pipefail
cd "$(dirname "$0")/.."
ARCH=90a REF="" OUTDIR=.deps/bin WT=
while [ $# -gt 0 ]; do
  case $1 in
    --ref) REF=${2:?--ref needs a revision}; shift 2;;
    --out) OUTDIR=${2:?--out needs a directory}; shift 2;;
    --wt) WT=${2:?--wt needs a name}; shift 2;;
    -*) echo "prebuild: unknown option $1" >&2; exit 2;;
    *) ARCH=$1; shift;;
  esac
done
TOP=$PWD SRC=$PWD
if [ -n "$REF" ]; then
  git rev-parse --verify -q "$REF^{commit}" >/dev/null || { echo "prebuild: no revision '$REF'" >&2; exit 2; }
  tag=$(printf '%s' "${WT:-$REF}" | tr -c 'A-Za-z0-9._-' '-')
  SRC=$TOP/.deps/wt-$tag
  if [ -d "$SRC" ]; then
    git -C "$SRC" checkout -q --detach "$REF"
  else
    git worktree add -q --detach "$SRC" "$REF"
  fi
  [ "$OUTDIR" = .deps/bin ] && OUTDIR=.deps/bin-$tag
fi
B=$SRC/build-pre
cmake -S "$SRC" -B "$B" -DCMAKE_BUILD_TYPE=Release -DMQ_CUDA=ON -DMQ_CUDA_ARCHS="$ARCH" \
  -DMQ_TOKENIZER_DIR="$TOP/.deps/qwen3-tokenizer" >/dev/null
cmake --build "$B" -j"$(nproc)" --target megaqwen_cli test_cuda test_prefill mvbench
mkdir -p "$OUTDIR"
rm -f "$OUTDIR"/*
for f in megaqwen test_cuda test_prefill mvbench; do
  cp "$B/$f" "$OUTDIR/"
  strip "$OUTDIR/$f" 2>/dev/null || true
  gzip -9f "$OUTDIR/$f"   # ~14 -> ~6 MB each: the carry limit is 64 MiB
done
# the tests find their fixtures through the source directory compiled into them (MQ_SOURCE_DIR):
# device-check links that path to its own tree when they differ
echo "$SRC" >"$OUTDIR/source_dir"
echo "$ARCH" >"$OUTDIR/arch"
[ -n "$REF" ] && git -C "$SRC" rev-parse HEAD >"$OUTDIR/commit"
du -sh "$OUTDIR"
