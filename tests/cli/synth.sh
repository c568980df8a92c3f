#!/usr/bin/env bash
# CLI contract of synth: exit codes (0 ok, 1 runtime, 2 usage), one error line, the files written,
# determinism in the seed, and that the result loads (logits runs on it when the CPU backend exists).
set -u
BIN=${1:?usage: synth.sh MEGAQWEN_BINARY}
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fails=0; passes=0
expect() { # expect CODE DESC -- cmd...
  local want=$1 desc=$2; shift 3
  "$@" >"$T/out" 2>"$T/err"; local got=$?
  if [ "$got" = "$want" ]; then passes=$((passes+1)); else
    fails=$((fails+1)); echo "FAIL: $desc: exit $got, want $want"; sed 's/^/  stderr: /' "$T/err" | head -5; fi
}
check() { # check DESC -- cmd... (must succeed)
  local desc=$1; shift 2
  if "$@"; then passes=$((passes+1)); else fails=$((fails+1)); echo "FAIL: $desc"; fi
}
one_line() {
  local n; n=$(wc -l <"$T/err")
  if [ "$n" = 1 ]; then passes=$((passes+1)); else fails=$((fails+1)); echo "FAIL: $1: $n stderr lines"; cat "$T/err"; fi
}
expect 0 "synth --help" -- "$BIN" synth --help
expect 2 "synth without args" -- "$BIN" synth
expect 2 "synth without -o" -- "$BIN" synth --shape tiny
expect 2 "synth without --shape" -- "$BIN" synth -o "$T/x"
expect 2 "synth bad shape" -- "$BIN" synth --shape qwen3-70b -o "$T/x"; one_line "bad shape"
expect 2 "synth bad dtype" -- "$BIN" synth --shape tiny --dtype f16 -o "$T/x"
expect 2 "synth bad seed" -- "$BIN" synth --shape tiny --seed -3 -o "$T/x"
expect 2 "synth seed garbage" -- "$BIN" synth --shape tiny --seed 12x -o "$T/x"
expect 2 "synth unknown option" -- "$BIN" synth --shape tiny -o "$T/x" --frob
expect 2 "synth -o without value" -- "$BIN" synth --shape tiny -o
expect 2 "synth --layers 0" -- "$BIN" synth --shape tiny --layers 0 -o "$T/x"; one_line "bad layers"
expect 2 "synth --layers garbage" -- "$BIN" synth --shape tiny --layers 2x -o "$T/x"
touch "$T/file"
expect 1 "synth into a file" -- "$BIN" synth --shape tiny -o "$T/file/sub"; one_line "output under a file"

expect 0 "synth tiny seed 5" -- "$BIN" synth --shape tiny --seed 5 -o "$T/a"
for f in config.json generation_config.json model.safetensors; do
  check "$f written" -- test -s "$T/a/$f"
done
check "prints what it wrote" -- grep -q "model.safetensors" "$T/out"
check "prints the scale note" -- grep -q "scales:" "$T/out"
check "config is the 4.x layout" -- grep -q '"rope_theta"' "$T/a/config.json"
check "config names the architecture" -- grep -q '"Qwen3ForCausalLM"' "$T/a/config.json"
expect 0 "synth tiny seed 5 again" -- env MQ_TOKENIZER_DIR="$T/none" "$BIN" synth --shape tiny --seed 5 -o "$T/b"
check "warns without tokenizer files" -- grep -q "warning: no tokenizer.json" "$T/err"
check "same seed, same bytes" -- cmp -s "$T/a/model.safetensors" "$T/b/model.safetensors"
expect 0 "synth tiny seed 6" -- "$BIN" synth --shape tiny --seed 6 -o "$T/c"
check "other seed, other bytes" -- bash -c "! cmp -s '$T/a/model.safetensors' '$T/c/model.safetensors'"
expect 0 "synth untied f32" -- "$BIN" synth --shape tiny --untied --dtype f32 -o "$T/d"
check "untied config" -- grep -q '"tie_word_embeddings":[[:space:]]*false' "$T/d/config.json"
check "f32 config" -- grep -q '"torch_dtype":[[:space:]]*"float32"' "$T/d/config.json"
check "lm_head stored" -- grep -q "lm_head.weight" "$T/d/model.safetensors"
expect 0 "synth tiny-gqa5 --layers 1" -- "$BIN" synth --shape tiny-gqa5 --layers 1 -o "$T/e"
check "one layer" -- grep -q '"num_hidden_layers":[[:space:]]*1[,}]' "$T/e/config.json"
check "no second layer" -- bash -c "! grep -q 'model.layers.1.' '$T/e/model.safetensors'"
check "5 q heads per kv head" -- grep -q '"num_attention_heads":[[:space:]]*10[,}]' "$T/e/config.json"
expect 2 "synth --yarn 0.5" -- "$BIN" synth --shape tiny --yarn 0.5 -o "$T/x"; one_line "bad yarn factor"
expect 2 "synth --yarn 4,0" -- "$BIN" synth --shape tiny --yarn 4,0 -o "$T/x"
expect 2 "synth --yarn 4x" -- "$BIN" synth --shape tiny --yarn 4x -o "$T/x"

# YaRN as Qwen's model cards add it: the context grows to factor x the original length (131072),
# past it is one error line; a run at 50,000 positions (past max_position_embeddings) works.
expect 0 "synth --yarn 4" -- "$BIN" synth --shape tiny --seed 5 --yarn 4 -o "$T/y"
check "yarn config" -- grep -q '"rope_type":[[:space:]]*"yarn"' "$T/y/config.json"
check "yarn original length" -- grep -q '"original_max_position_embeddings":[[:space:]]*32768' "$T/y/config.json"
expect 1 "yarn past its context" -- "$BIN" logits -m "$T/y" --ids 1,2,3 -o "$T/l.bin" --backend cpu --max-ctx 131073
one_line "yarn past its context"
check "says the limit" -- grep -q "exceeds the model's context 131072 (YaRN scaling of 40960)" "$T/err"
expect 1 "plain model past max_position_embeddings" -- "$BIN" logits -m "$T/a" --ids 1,2 -o "$T/l.bin" --backend cpu --max-ctx 50000
check "plain limit" -- grep -q "exceeds the model's max_position_embeddings 40960" "$T/err"
expect 0 "yarn at 50000 positions" -- "$BIN" logits -m "$T/y" --ids 1,2,3 -o "$T/ly.bin" --backend cpu --max-ctx 50000
check "yarn logits differ from plain RoPE's (same weights)" -- bash -c "\"$BIN\" logits -m '$T/a' --ids 1,2,3 -o '$T/lp.bin' --backend cpu >/dev/null 2>&1 && ! cmp -s '$T/ly.bin' '$T/lp.bin'"

# The checkpoint loads through the public API (needs the CPU backend; ids only, no tokenizer needed).
expect 0 "logits on the synthetic checkpoint" -- "$BIN" logits -m "$T/a" --ids 1,2,3 -o "$T/l.bin" --backend cpu
check "logits size" -- test "$(stat -c %s "$T/l.bin" 2>/dev/null)" = $((3 * 151936 * 4))

echo "synth.sh: $passes passed, $fails failed"
[ "$fails" = 0 ]
