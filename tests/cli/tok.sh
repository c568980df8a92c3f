#!/usr/bin/env bash
# CLI contract of tokenize/detokenize/chat: exit codes, one error line, ids vs HF for a few
# strings, round trips, and chat's KV-cache reuse giving the same replies as recomputing.
set -u
BIN=${1:?usage: tok.sh MEGAQWEN_BINARY}
TOK=.deps/qwen3-tokenizer
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fails=0; passes=0
expect() { # expect CODE DESC -- cmd...
  local want=$1 desc=$2; shift 3
  "$@" >"$T/out" 2>"$T/err" <"${STDIN:-/dev/null}"; local got=$?
  if [ "$got" = "$want" ]; then passes=$((passes+1)); else
    fails=$((fails+1)); echo "FAIL: $desc: exit $got, want $want"; sed 's/^/  stderr: /' "$T/err" | head -5; fi
}
one_line() { local n; n=$(wc -l <"$T/err")
  if [ "$n" = 1 ]; then passes=$((passes+1)); else fails=$((fails+1)); echo "FAIL: $1: $n stderr lines"; cat "$T/err"; fi; }
same() { if [ "$2" = "$3" ]; then passes=$((passes+1)); else fails=$((fails+1)); echo "FAIL: $1: got '$2', want '$3'"; fi; }

for c in tokenize detokenize chat; do expect 0 "$c --help" -- "$BIN" $c --help; done
expect 2 "tokenize without -m" -- "$BIN" tokenize --text hi
expect 2 "tokenize without text" -- "$BIN" tokenize -m "$TOK"
expect 2 "tokenize text and file" -- "$BIN" tokenize -m "$TOK" --text a -f b
expect 2 "tokenize unknown option" -- "$BIN" tokenize -m "$TOK" --frob
expect 2 "detokenize bad ids" -- "$BIN" detokenize -m "$TOK" --ids 1,,2
expect 2 "detokenize without ids" -- "$BIN" detokenize -m "$TOK"
expect 2 "chat unknown option" -- "$BIN" chat -m x --frob
expect 2 "chat bad -n" -- "$BIN" chat -m x -n zero
expect 1 "tokenize missing dir" -- "$BIN" tokenize -m "$T/nope" --text hi; one_line "missing tokenizer.json"
grep -q "nope/tokenizer.json" "$T/err" && passes=$((passes+1)) || { fails=$((fails+1)); echo "FAIL: error does not name tokenizer.json"; }
mkdir -p "$T/broken"; echo '{"model": [' >"$T/broken/tokenizer.json"
expect 1 "malformed tokenizer.json" -- "$BIN" tokenize -m "$T/broken" --text hi; one_line "malformed tokenizer.json"
grep -q "tokenizer.json: malformed JSON" "$T/err" && passes=$((passes+1)) || { fails=$((fails+1)); echo "FAIL: malformed message"; }
expect 1 "tokenize missing file" -- "$BIN" tokenize -m "$TOK" -f "$T/none.txt"; one_line "missing input file"

if [ -s "$TOK/tokenizer.json" ]; then
  expect 0 "tokenize" -- "$BIN" tokenize -m "$TOK" --text "Hello world! It's"
  same "Hello world ids (HF)" "$(cat "$T/out")" "[9707,1879,0,1084,594]"
  expect 0 "tokenize specials" -- "$BIN" tokenize -m "$TOK" --text $'<|im_start|>user\nhi<|im_end|>'
  same "special ids (HF)" "$(cat "$T/out")" "[151644,872,198,6023,151645]"
  expect 0 "tokenize empty" -- "$BIN" tokenize -m "$TOK" --text ""
  same "empty" "$(cat "$T/out")" "[]"
  printf 'caf\xc3\xa9 \xff' >"$T/bad.txt"
  expect 1 "invalid UTF-8 file" -- "$BIN" tokenize -m "$TOK" -f "$T/bad.txt"; one_line "invalid UTF-8"
  grep -q "bad.txt: input text: invalid UTF-8 at byte 6" "$T/err" && passes=$((passes+1)) || { fails=$((fails+1)); echo "FAIL: bad UTF-8 message: $(cat "$T/err")"; }
  printf 'e\xcc\x81 \xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9 \xe4\xbd\xa0\xe5\xa5\xbd\r\n\tx<think>' >"$T/u.txt"
  expect 0 "tokenize file" -- "$BIN" tokenize -m "$TOK" -f "$T/u.txt"
  ids=$(tr -d '[]' <"$T/out")
  expect 0 "detokenize" -- "$BIN" detokenize -m "$TOK" --ids "$ids"
  same "round trip (NFC)" "$(xxd -p "$T/out" | tr -d '\n')" "$(printf '\xc3\xa9 \xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9 \xe4\xbd\xa0\xe5\xa5\xbd\r\n\tx<think>\n' | xxd -p | tr -d '\n')"
  expect 1 "detokenize id past vocab" -- "$BIN" detokenize -m "$TOK" --ids 1,999999; one_line "id past vocab"
  expect 0 "tokenize stdin" -- env STDIN= sh -c "printf 'abc' | '$BIN' tokenize -m '$TOK' -f -"
  same "stdin" "$(cat "$T/out")" "[13683]"
  M="$T/tiny"
  if "$BIN" synth --shape tiny --seed 1 -o "$M" >/dev/null 2>&1; then
    printf 'Hello there\nWhat is 2+2?\n/reset\nAnd now?\n' >"$T/in.txt"
    for mode in "" --no-think; do
      STDIN="$T/in.txt" expect 0 "chat $mode" -- "$BIN" chat -m "$M" $mode -n 10 --temp 0 --backend cpu --threads 1 -v --system "Be brief."
      cp "$T/out" "$T/reuse.out"; cp "$T/err" "$T/reuse.err"
      STDIN="$T/in.txt" expect 0 "chat $mode --no-reuse" -- "$BIN" chat -m "$M" $mode -n 10 --temp 0 --backend cpu --threads 1 --no-reuse --system "Be brief."
      cmp -s "$T/out" "$T/reuse.out" && passes=$((passes+1)) || { fails=$((fails+1)); echo "FAIL: chat $mode: KV reuse changes the replies"; }
      same "chat $mode: 3 replies" "$(grep -c 'generated' "$T/reuse.err")" 3
      # turn 2 reuses the system+turn-1 prefix; the turn after /reset starts from 0
      r2=$(sed -n 2p "$T/reuse.err" | sed -E 's/.*, ([0-9]+) reused.*/\1/'); r3=$(sed -n 3p "$T/reuse.err" | sed -E 's/.*, ([0-9]+) reused.*/\1/')
      [ "${r2:-0}" -gt 10 ] && [ "${r3:-1}" = 0 ] && passes=$((passes+1)) || { fails=$((fails+1)); echo "FAIL: chat $mode reuse counts: $(cat "$T/reuse.err")"; }
    done
    printf 'ok\n\xff\xfe\nstill here\n' >"$T/badin.txt"
    STDIN="$T/badin.txt" expect 0 "chat survives bad UTF-8" -- "$BIN" chat -m "$M" -n 4 --temp 0 --backend cpu --threads 1
    grep -q "invalid UTF-8 at byte 0" "$T/err" && passes=$((passes+1)) || { fails=$((fails+1)); echo "FAIL: chat bad UTF-8 message: $(cat "$T/err")"; }
    same "chat replies around a bad line" "$(wc -l <"$T/out" | tr -d ' ')" 2
  else
    echo "FAIL: synth --shape tiny failed"; fails=$((fails+1))
  fi
else
  echo "FAIL: $TOK/tokenizer.json missing (run scripts/deps.sh)"; fails=$((fails+1))
fi
echo "$passes passed, $fails failed"
[ "$fails" = 0 ]
