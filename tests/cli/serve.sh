#!/usr/bin/env bash
# megaqwen serve over raw HTTP (curl): SSE framing, greedy output == `megaqwen run`, KV prefix reuse,
# OpenAI-shaped errors (400/401/404/405/413), 503 past the queue, client disconnect, slow clients.
# Loopback only; the server is always stopped (trap). Then the openai-SDK tests in tests/server/.
set -u
BIN=$(readlink -f "${1:?usage: serve.sh MEGAQWEN_BINARY}")
# MQ_SERVE_BACKEND=cuda: the same checks against the cuda backend (on a machine with a GPU)
BK=${MQ_SERVE_BACKEND:-cpu}
T=$(mktemp -d); SPID=""
stop() { [ -n "$SPID" ] && kill "$SPID" 2>/dev/null && wait "$SPID" 2>/dev/null; SPID=""; }
trap 'stop; rm -rf "$T"' EXIT
fails=0; passes=0
ok() { passes=$((passes+1)); }
bad() { fails=$((fails+1)); echo "FAIL: $*"; }
check() { if eval "$2"; then ok; else bad "$1"; fi; }
start() { # start ARGS...: server on a free loopback port, URL in $U
  # empty the log first: the background job truncates it only once it runs, and until then the
  # loop below could read the previous server's URL
  : >"$T/log"
  "$BIN" serve -m "$M" --port 0 --backend $BK --threads 1 --max-ctx 256 "$@" >"$T/log" 2>&1 </dev/null &
  SPID=$!
  for _ in $(seq 100); do U=$(grep -o 'http://127.0.0.1:[0-9]*' "$T/log" | head -1); [ -n "$U" ] && return 0; sleep 0.1; done
  bad "server did not start: $(cat "$T/log")"; return 1
}
post() { curl -s -o "$T/body" -w '%{http_code}' "$U$1" -H 'Content-Type: application/json' "${@:3}" -d "$2"; }

M="$T/tiny"
"$BIN" synth --shape tiny --seed 1 -o "$M" >/dev/null 2>&1 || { echo "FAIL: synth"; echo "0 passed, 1 failed"; exit 1; }
"$BIN" serve >/dev/null 2>&1; check "serve without -m exits 2" '[ $? = 2 ]'
"$BIN" serve -m "$M" --port 99999 >/dev/null 2>&1; check "bad port exits 2" '[ $? = 2 ]'

start --queue 2 --timeout 2 || { echo "$passes passed, $((fails+1)) failed"; exit 1; }
check "binds loopback" 'grep -q "listening on http://127.0.0.1:" "$T/log"'
check "health" '[ "$(curl -s "$U/health" | python3 -c "import json,sys;print(json.load(sys.stdin)[\"status\"])")" = ok ]'
check "models lists tiny" 'curl -s "$U/v1/models" | grep -q "\"id\":\"tiny\""'

# Greedy through the server equals `megaqwen run --temp 0` (text prompt, raw completion).
want=$("$BIN" run -m "$M" -p "Hello there" -n 12 --temp 0 --backend $BK --threads 1 --max-ctx 256 --ignore-eos 2>/dev/null)
code=$(post /v1/completions '{"model":"tiny","prompt":"Hello there","max_tokens":12,"temperature":0}')
got=$(python3 -c "import json;print(json.load(open('$T/body'))['choices'][0]['text'])")
check "completion 200" '[ "$code" = 200 ]'
check "greedy completion == run ($got vs $want)" '[ "$got" = "$want" ]'
check "usage numbers" 'python3 -c "import json;u=json.load(open(\"$T/body\"))[\"usage\"];assert u[\"completion_tokens\"]==12 and u[\"total_tokens\"]==u[\"prompt_tokens\"]+12"'
# The same prompt again: all but the last prompt token come from the KV cache, same text.
post /v1/completions '{"prompt":"Hello there","max_tokens":12,"temperature":0}' >/dev/null
check "prefix reuse reported" 'python3 -c "import json;d=json.load(open(\"$T/body\"));assert d[\"usage\"][\"prompt_tokens_details\"][\"cached_tokens\"]==d[\"usage\"][\"prompt_tokens\"]-1"'
check "prefix reuse same text" '[ "$(python3 -c "import json;print(json.load(open(\"$T/body\"))[\"choices\"][0][\"text\"])")" = "$want" ]'
# A model id past the tokenizer's vocabulary (embedding padding: this tiny model picks 151908 as
# its 3rd greedy token after [1994, 62]) adds no text instead of failing the request.
code=$(post /v1/completions '{"prompt":[1994,62],"max_tokens":6,"temperature":0}')
check "padding id: 200 ($code: $(head -c 200 "$T/body"))" '[ "$code" = 200 ]'
check "padding id: all 6 tokens counted" 'python3 -c "import json;d=json.load(open(\"$T/body\"));assert d[\"usage\"][\"completion_tokens\"]==6"'
# Chat greedy == run --chat.
wantc=$("$BIN" run -m "$M" -p "Hi" --chat -n 8 --temp 0 --backend $BK --threads 1 --max-ctx 256 --ignore-eos 2>/dev/null)
post /v1/chat/completions '{"messages":[{"role":"user","content":"Hi"}],"max_tokens":8,"temperature":0}' >/dev/null
check "greedy chat == run --chat" '[ "$(python3 -c "import json;print(json.load(open(\"$T/body\"))[\"choices\"][0][\"message\"][\"content\"])")" = "$wantc" ]'

# Raw SSE framing: every event is "data: ..." + blank line, JSON chunks, usage chunk, then [DONE].
curl -sN "$U/v1/completions" -d '{"prompt":"Hello there","max_tokens":6,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}' >"$T/sse"
check "SSE framing" 'python3 - "$T/sse" "$want" <<EOF
import json, sys
raw = open(sys.argv[1]).read()
assert raw.endswith("data: [DONE]\n\n"), raw[-80:]
evs = [e for e in raw.split("\n\n") if e]
assert all(e.startswith("data: ") and "\n" not in e for e in evs), evs
chunks = [json.loads(e[6:]) for e in evs[:-1]]
text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
assert sys.argv[2].startswith(text), (text, sys.argv[2])
assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 6
assert chunks[-2]["choices"][0]["finish_reason"] == "length"
EOF'

# Stop strings, matched across token boundaries: the text ends right before the stop string.
stopstr=${want:3:4}
post /v1/completions "{\"prompt\":\"Hello there\",\"max_tokens\":12,\"temperature\":0,\"stop\":[\"$stopstr\"]}" >/dev/null
check "stop string ('$stopstr')" 'python3 -c "import json,sys;c=json.load(open(\"$T/body\"))[\"choices\"][0];assert c[\"finish_reason\"]==\"stop\" and c[\"text\"]==sys.argv[1][:3], c" "$want"'

C_=/v1/chat/completions
# Logprobs: the echoed prompt's (max_tokens 0, as lm-eval's loglikelihood requests) and the greedy
# tokens' equal log-softmax of `megaqwen logits` on the same ids; the chosen token leads the top list.
"$BIN" logits -m "$M" --ids 1994,62,315,279,11 -o "$T/lg.bin" --backend $BK --threads 1 --max-ctx 256 >/dev/null 2>&1
code=$(post /v1/completions '{"prompt":[1994,62,315,279],"max_tokens":1,"logprobs":3,"echo":true,"temperature":0}')
check "echo + logprobs: 200 ($code)" '[ "$code" = 200 ]'
check "echo + logprobs == log-softmax of logits" 'python3 - "$T/body" "$T/lg.bin" <<EOF
import json, math, struct, sys
c = json.load(open(sys.argv[1]))["choices"][0]
V = 151936
raw = open(sys.argv[2], "rb").read()
rows = [struct.unpack_from("<%df" % V, raw, 4 * V * r) for r in range(5)]
def lsm(row, i):
    m = max(row); return row[i] - (m + math.log(sum(math.exp(x - m) for x in row)))
lp = c["logprobs"]
ids = [1994, 62, 315, 279]
assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None, lp
for k in range(1, 4):
    assert abs(lp["token_logprobs"][k] - lsm(rows[k - 1], ids[k])) < 1e-4, (k, lp["token_logprobs"][k])
g = lp["token_logprobs"][4]  # the greedy token after the prompt: row 3 argmax
best = max(range(V), key=lambda i: rows[3][i])
assert abs(g - lsm(rows[3], best)) < 1e-4, (g, lsm(rows[3], best))
top = lp["top_logprobs"][4]
assert len(top) == 3 and abs(max(top.values()) - g) < 1e-6, top
assert lp["text_offset"][0] == 0 and lp["text_offset"] == sorted(lp["text_offset"]), lp["text_offset"]
assert len(lp["tokens"]) == 5 and c["text"].startswith("".join(lp["tokens"][:4])), c
EOF'
post /v1/completions '{"prompt":"Hello there","max_tokens":12,"temperature":0,"logprobs":0}' >/dev/null
check "text_offset counts characters, as vLLM's" 'python3 - "$T/body" <<EOF
import json, sys
c = json.load(open(sys.argv[1]))["choices"][0]; lp = c["logprobs"]
toks, off = lp["tokens"], lp["text_offset"]
assert off[0] == 0 and len(toks) == 12, lp
for k in range(11):
    if not toks[k].startswith("bytes:"):
        assert off[k + 1] - off[k] == len(toks[k]), (k, toks, off)
EOF'
code=$(post /v1/completions '{"prompt":[1994,62,315],"max_tokens":0,"logprobs":0,"echo":true}')
check "max_tokens 0 with echo: prompt only ($code)" 'python3 -c "import json;d=json.load(open(\"$T/body\"));c=d[\"choices\"][0];assert len(c[\"logprobs\"][\"tokens\"])==3 and d[\"usage\"][\"completion_tokens\"]==0 and c[\"finish_reason\"]==\"length\", d"'
post $C_ '{"messages":[{"role":"user","content":"Hi"}],"max_tokens":4,"temperature":0,"logprobs":true,"top_logprobs":2}' >/dev/null
check "chat logprobs: one entry per token, bytes spell the text" 'python3 - "$T/body" "$wantc" <<EOF
import json, sys
c = json.load(open(sys.argv[1]))["choices"][0]
ents = c["logprobs"]["content"]
assert len(ents) == 4 and all(len(e["top_logprobs"]) == 2 and e["logprob"] <= 0 for e in ents), ents
assert all(abs(e["top_logprobs"][0]["logprob"] - e["logprob"]) < 1e-6 for e in ents), ents  # greedy: the best
assert bytes(b for e in ents for b in e["bytes"]).decode() == c["message"]["content"], c
assert sys.argv[2].startswith(c["message"]["content"]), (c, sys.argv[2])
EOF'
curl -sN "$U/v1/chat/completions" -d '{"messages":[{"role":"user","content":"Hi"}],"max_tokens":4,"temperature":0,"logprobs":true,"stream":true}' >"$T/sse"
check "streamed chat logprobs: one entry per content chunk" 'python3 - "$T/sse" <<EOF
import json, sys
evs = [json.loads(e[6:]) for e in open(sys.argv[1]).read().split("\n\n") if e.startswith("data: {")]
ents = [x for e in evs for x in ((e["choices"][0].get("logprobs") or {}).get("content") or [])]
text = "".join(e["choices"][0]["delta"].get("content") or "" for e in evs)
assert len(ents) == 4 and bytes(b for x in ents for b in x["bytes"]).decode() == text, (ents, text)
EOF'

# Tools: each conversation of tests/data/tok/chat_tools_ref.jsonl with tools, tool messages and
# assistant tool_calls (as a client sends them) reaches the model as the reference prompt: the
# server's prompt_tokens equals the token count of the reference text.
python3 - "$T" "$(dirname "$(readlink -f "$0")")/../data/tok/chat_tools_ref.jsonl" <<'EOF'
import json, sys
cases = [json.loads(l) for l in open(sys.argv[2])][1:]
k = 0
for c in cases:
    if not c["add_generation_prompt"] or c["enable_thinking"] is not None:
        continue
    body = {"messages": c["messages"], "max_tokens": 1, "temperature": 0}
    if c["tools"]:
        body["tools"] = c["tools"]
    open(f"{sys.argv[1]}/tool{k:02d}.json", "w").write(json.dumps(body, ensure_ascii=False))
    open(f"{sys.argv[1]}/tool{k:02d}.txt", "w").write(c["text"])
    k += 1
EOF
for f in "$T"/tool*.json; do
  want=$("$BIN" tokenize -m "$M" -f "${f%.json}.txt" | python3 -c "import json,sys;print(len(json.load(sys.stdin)))")
  code=$(curl -s -o "$T/body" -w '%{http_code}' "$U/v1/chat/completions" -H 'Content-Type: application/json' --data-binary @"$f")
  if [ "$want" -lt 256 ]; then
    got=$(python3 -c "import json;print(json.load(open('$T/body'))['usage']['prompt_tokens'])" 2>/dev/null)
  else  # past this server's 256 positions: the context error names the prompt's length
    got=$(grep -o "the prompt has [0-9]* tokens" "$T/body" | grep -o "[0-9]*"); code="$code (too long)"
  fi
  check "tools prompt $(basename "$f"): HTTP $code, $got tokens, want $want" '[ "$got" = "$want" ]'
done

# /metrics: Prometheus text, the counts of what ran so far.
curl -s "$U/metrics" >"$T/metrics"
check "metrics: Prometheus text with the finished requests" 'python3 - "$T/metrics" <<EOF
import re, sys
v = {}
for line in open(sys.argv[1]):
    if line.startswith("#"):
        assert re.match(r"# (HELP|TYPE) megaqwen_\w+ ", line), line
        continue
    m = re.match(r"(megaqwen_\w+(?:\{outcome=\"\w+\"\})?) ([0-9.e+-]+)$", line.strip())
    assert m, line
    v[m.group(1)] = float(m.group(2))
assert v["megaqwen_requests_total{outcome=\"length\"}"] >= 5, v
assert v["megaqwen_generation_tokens_total"] >= 40 and v["megaqwen_prompt_tokens_total"] >= 10, v
assert v["megaqwen_cached_prompt_tokens_total"] >= 1, v  # the prefix-reuse request above
assert v["megaqwen_time_to_first_token_seconds_count"] >= 5 and v["megaqwen_e2e_request_latency_seconds_sum"] > 0, v
EOF'

# Errors: OpenAI-shaped JSON with the right status.
err() { # err DESC WANT PATH BODY [curl args]
  local code; code=$(post "$3" "$4" "${@:5}")
  if [ "$code" = "$2" ] && python3 -c "import json;e=json.load(open('$T/body'))['error'];assert e['message'] and e['type']" 2>/dev/null; then ok
  else bad "$1: HTTP $code $(head -c 200 "$T/body")"; fi
}
C=/v1/chat/completions
err "malformed JSON" 400 $C '{"messages":'
err "not an object" 400 $C '[1]'
err "messages wrong type" 400 $C '{"messages":"hi"}'
err "unknown role" 400 $C '{"messages":[{"role":"wizard","content":"x"}]}'
err "temperature wrong type" 400 $C '{"messages":[{"role":"user","content":"x"}],"temperature":"hot"}'
err "temperature out of range" 400 $C '{"messages":[{"role":"user","content":"x"}],"temperature":7}'
err "max_tokens not integer" 400 $C '{"messages":[{"role":"user","content":"x"}],"max_tokens":1.5}'
# n > 1: the choices one after the other; choice i samples with seed + i, so choice 0 is the n = 1
# reply with the same seed and choice 1 the n = 1 reply with seed + 1
post $C '{"messages":[{"role":"user","content":"x"}],"max_tokens":6,"temperature":2,"top_p":1,"top_k":0,"seed":5,"n":3}' >/dev/null
cp "$T/body" "$T/n3"
post $C '{"messages":[{"role":"user","content":"x"}],"max_tokens":6,"temperature":2,"top_p":1,"top_k":0,"seed":5}' >/dev/null
cp "$T/body" "$T/n1s5"
post $C '{"messages":[{"role":"user","content":"x"}],"max_tokens":6,"temperature":2,"top_p":1,"top_k":0,"seed":6}' >/dev/null
check "n 3: indexes, usage, choice i = seed + i" 'python3 - "$T/n3" "$T/n1s5" "$T/body" <<EOF
import json, sys
d, a, b = (json.load(open(p)) for p in sys.argv[1:4])
ch = d["choices"]
assert [c["index"] for c in ch] == [0, 1, 2], ch
assert d["usage"]["completion_tokens"] == 18 and d["usage"]["prompt_tokens"] == a["usage"]["prompt_tokens"], d["usage"]
assert ch[0]["message"] == a["choices"][0]["message"] and ch[1]["message"] == b["choices"][0]["message"], (ch, a, b)
assert len({c["message"]["content"] for c in ch}) > 1, ch
EOF'
curl -sN "$U/v1/completions" -d '{"prompt":"Hello there","max_tokens":5,"temperature":0.9,"seed":5,"n":2,"stream":true,"stream_options":{"include_usage":true}}' >"$T/sse"
post /v1/completions '{"prompt":"Hello there","max_tokens":5,"temperature":0.9,"seed":5,"n":2}' >/dev/null
check "n 2 streamed: per-index text = non-stream, two finishes, one usage" 'python3 - "$T/sse" "$T/body" <<EOF
import json, sys
evs = [e[6:] for e in open(sys.argv[1]).read().split("\n\n") if e.startswith("data: ")]
assert evs[-1] == "[DONE]", evs[-1]
t, fin, usage = {}, {}, []
for e in evs[:-1]:
    o = json.loads(e)
    if o.get("usage"): usage.append(o["usage"])
    for c in o["choices"]:
        t[c["index"]] = t.get(c["index"], "") + c["text"]
        if c["finish_reason"]: fin[c["index"]] = c["finish_reason"]
d = json.load(open(sys.argv[2]))
assert sorted(fin) == [0, 1] and len(usage) == 1 and usage[0]["completion_tokens"] == 10, (fin, usage)
assert [t[0], t[1]] == [c["text"] for c in d["choices"]], (t, d)
EOF'
post $C '{"messages":[{"role":"user","content":"Zebra quartz n3 cache check"}],"max_tokens":2,"n":3}' >/dev/null
check "n 3: cached_tokens from the first choice" 'python3 -c "import json;d=json.load(open(\"$T/body\"));assert d[\"usage\"][\"prompt_tokens_details\"][\"cached_tokens\"]<d[\"usage\"][\"prompt_tokens\"]-1, d"'
# echoed prompt logprobs: a special token in the prompt is in the echoed text, so it advances text_offset
post /v1/completions '{"prompt":"<|im_start|>user\nhi","max_tokens":1,"temperature":0,"echo":true,"logprobs":0}' >/dev/null
check "echo: text_offset past a special prompt token" 'python3 -c "import json;d=json.load(open(\"$T/body\"));o=d[\"choices\"][0][\"logprobs\"][\"text_offset\"];assert o[:4]==[0,12,16,17], o"'
err "n past 16" 400 $C '{"messages":[{"role":"user","content":"x"}],"n":17}'
err "n 0" 400 $C '{"messages":[{"role":"user","content":"x"}],"n":0}'
err "top_logprobs without logprobs" 400 $C '{"messages":[{"role":"user","content":"x"}],"top_logprobs":2}'
err "top_logprobs past 20" 400 $C '{"messages":[{"role":"user","content":"x"}],"logprobs":true,"top_logprobs":21}'
err "tool_choice required" 400 $C '{"messages":[{"role":"user","content":"x"}],"tool_choice":"required"}'
err "tool without a name" 400 $C '{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{}}]}'
err "completions logprobs: true" 400 /v1/completions '{"prompt":"x","logprobs":true}'
err "max_tokens 0 without echo" 400 /v1/completions '{"prompt":"x","max_tokens":0}'
err "stream_options without stream" 400 $C '{"messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":true}}'
err "past the context" 400 $C '{"messages":[{"role":"user","content":"x"}],"max_tokens":100000}'
check "context error names both numbers" 'grep -q "256 tokens" "$T/body" && grep -q "max_tokens is 100000" "$T/body"'
err "token id out of vocab" 400 /v1/completions '{"prompt":[1,2,999999999]}'
err "empty body" 400 /v1/completions ''
err "wrong model" 404 $C '{"model":"gpt-4","messages":[{"role":"user","content":"x"}]}'
err "unknown path" 404 /v1/nothing '{}'
err "wrong method" 405 /v1/models '{}'
head -c 5000000 /dev/zero | tr '\0' ' ' >"$T/big"
code=$(curl -s -o "$T/body" -w '%{http_code}' "$U/v1/completions" --data-binary @"$T/big")
check "body over the limit: 413 ($code)" '[ "$code" = 413 ]'

# /tokenize and /detokenize (vLLM's): the tokenizer's ids for a prompt, the template's for messages.
code=$(post /tokenize '{"prompt":"Hello there, world"}')
check "tokenize prompt ($code) == megaqwen tokenize" '[ "$code" = 200 ] && [ "$(python3 -c "import json;print(json.load(open(\"$T/body\"))[\"tokens\"])" | tr -d " ")" = "$("$BIN" tokenize -m "$M" --text "Hello there, world" | tr -d " ")" ]'
post /tokenize '{"messages":[{"role":"user","content":"Hi"}]}' >/dev/null
check "tokenize messages: the chat request's prompt" 'python3 -c "import json;d=json.load(open(\"$T/body\"));assert d[\"tokens\"][:3]==[151644,872,198] and d[\"count\"]==len(d[\"tokens\"]) and d[\"max_model_len\"]==256, d"'
code=$(post /detokenize '{"tokens":[9707,1052,11,1879,151908]}')
check "detokenize ($code), padding ids add nothing" 'python3 -c "import json;assert json.load(open(\"$T/body\"))[\"prompt\"]==\"Hello there, world\""'
err "detokenize: bad id" 400 /detokenize '{"tokens":[1,-5]}'
err "detokenize: no tokens" 400 /detokenize '{"ids":[1]}'
err "tokenize: no prompt" 400 /tokenize '{}'
err "tokenize: another model" 404 /tokenize '{"model":"gpt-4","prompt":"x"}'
# ignore_eos with an end-of-sequence id in stop_token_ids: that one still stops (vLLM's test pairs them)
code=$(post /v1/completions '{"prompt":[1994,62],"max_tokens":10,"temperature":0,"ignore_eos":true,"stop_token_ids":[151908]}')
check "ignore_eos + stop_token_ids: $code, stops at the 3rd token" 'python3 -c "import json;d=json.load(open(\"$T/body\"));assert d[\"usage\"][\"completion_tokens\"]==3, d"'
# ignore_eos (vLLM's, what benchmark clients send for fixed-length replies): all max_tokens come back.
code=$(post /v1/completions '{"prompt":"Hello there","max_tokens":20,"temperature":0,"ignore_eos":true}')
check "ignore_eos: $code, 20 tokens, length" 'python3 -c "import json;d=json.load(open(\"$T/body\"));assert d[\"usage\"][\"completion_tokens\"]==20 and d[\"choices\"][0][\"finish_reason\"]==\"length\", d"'
err "ignore_eos not a boolean" 400 /v1/completions '{"prompt":"x","ignore_eos":1}'
# presence / frequency penalties (OpenAI's, over the reply's tokens): the same text as `run` with them,
# and not the unpenalized one (this model repeats a token within 40 greedy steps)
wantpf=$("$BIN" run -m "$M" -p "Hello there" -n 40 --temp 0 --presence-penalty 2 --frequency-penalty 2 --backend $BK --threads 1 --max-ctx 256 --ignore-eos 2>/dev/null)
want40=$("$BIN" run -m "$M" -p "Hello there" -n 40 --temp 0 --backend $BK --threads 1 --max-ctx 256 --ignore-eos 2>/dev/null)
post /v1/completions '{"prompt":"Hello there","max_tokens":40,"temperature":0,"presence_penalty":2,"frequency_penalty":2}' >/dev/null
check "presence / frequency penalties == run's, != without" 'python3 -c "import json,sys;t=json.load(open(\"$T/body\"))[\"choices\"][0][\"text\"];assert t==sys.argv[1] and t!=sys.argv[2], (t, sys.argv[1])" "$wantpf" "$want40"'
err "presence_penalty out of range" 400 /v1/completions '{"prompt":"x","presence_penalty":2.5}'
# what would constrain the reply is refused, not ignored; the defaults pass
# logit_bias (OpenAI's): +100 on "," (id 11) makes the greedy reply ",,,"; -100 on the greedy first token changes it
post /v1/completions '{"prompt":"Hello there","max_tokens":3,"temperature":0,"logit_bias":{"11":100}}' >/dev/null
check "logit_bias +100" 'python3 -c "import json;t=json.load(open(\"$T/body\"))[\"choices\"][0][\"text\"];assert t==\",,,\", t"'
first=$(curl -s "$U/tokenize" -d "{\"prompt\":$(python3 -c 'import json,sys;print(json.dumps(sys.argv[1]))' "$want")}" | python3 -c "import json,sys;print(json.load(sys.stdin)['tokens'][0])")
post /v1/completions "{\"prompt\":\"Hello there\",\"max_tokens\":12,\"temperature\":0,\"logit_bias\":{\"$first\":-100}}" >/dev/null
check "logit_bias -100 on the greedy first token ($first)" 'python3 -c "import json,sys;t=json.load(open(\"$T/body\"))[\"choices\"][0][\"text\"];assert t!=sys.argv[1], t" "$want"'
err "logit_bias id past the vocabulary" 400 /v1/completions '{"prompt":"x","logit_bias":{"999999":1}}'
err "logit_bias value past 100" 400 /v1/completions '{"prompt":"x","logit_bias":{"11":150}}'
err "logit_bias key not an id" 400 /v1/completions '{"prompt":"x","logit_bias":{"abc":1}}'
# skip_special_tokens (vLLM's, default true): a special token the model emits (<|im_start|>, 151644,
# forced by logit_bias) adds no text but counts; false keeps it; <think> (151667) is added but not special
post /v1/completions '{"prompt":"Hello there","max_tokens":3,"temperature":0,"logit_bias":{"151644":100},"logprobs":1}' >/dev/null
check "skip_special_tokens default: no text, 3 tokens, offsets 0" 'python3 -c "import json;d=json.load(open(\"$T/body\"));c=d[\"choices\"][0];assert c[\"text\"]==\"\" and d[\"usage\"][\"completion_tokens\"]==3 and c[\"logprobs\"][\"tokens\"]==[\"<|im_start|>\"]*3 and c[\"logprobs\"][\"text_offset\"]==[0,0,0], d"'
post /v1/completions '{"prompt":"Hello there","max_tokens":3,"temperature":0,"logit_bias":{"151644":100},"skip_special_tokens":false}' >/dev/null
check "skip_special_tokens false keeps them" 'python3 -c "import json;t=json.load(open(\"$T/body\"))[\"choices\"][0][\"text\"];assert t==\"<|im_start|>\"*3, t"'
post /v1/completions '{"prompt":"Hello there","max_tokens":2,"temperature":0,"logit_bias":{"151667":100}}' >/dev/null
check "an added, non-special token stays" 'python3 -c "import json;t=json.load(open(\"$T/body\"))[\"choices\"][0][\"text\"];assert t==\"<think>\"*2, t"'
curl -sN "$U/v1/chat/completions" -d '{"messages":[{"role":"user","content":"x"}],"max_tokens":3,"temperature":0,"logit_bias":{"151644":100},"stream":true}' >"$T/sse"
check "skip_special_tokens streamed: no content" 'python3 - "$T/sse" <<EOF
import json, sys
t = ""
for ev in open(sys.argv[1]).read().split("\n\n"):
    if ev.startswith("data: {"):
        for ch in json.loads(ev[6:])["choices"]:
            t += ch.get("delta", {}).get("content") or ""
assert t == "", repr(t)
EOF'
err "skip_special_tokens not a boolean" 400 /v1/completions '{"prompt":"x","skip_special_tokens":"no"}'
err "response_format json" 400 $C '{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"}}'
err "guided_json" 400 $C '{"messages":[{"role":"user","content":"x"}],"guided_json":{}}'
# min_tokens (vLLM's): +100 on the end-of-sequence id (151645) ends the reply at once; with
# min_tokens 5 it is banned for 5 tokens, then ends it (the EOS counts as a completion token, as vLLM).
# Stop strings wait for min_tokens too (vLLM V1: checked from the token after them, looking back):
# "," forced with stop "," and min_tokens 3 gives ",,," (the 4th token's match cuts it), and a stop
# string that begins in the first min_tokens tokens' text and ends later still stops the reply.
post /v1/completions '{"prompt":"Hello there","max_tokens":20,"temperature":0,"logit_bias":{"151645":100}}' >/dev/null
check "EOS forced: only the EOS token (counted, as vLLM)" 'python3 -c "import json;d=json.load(open(\"$T/body\"));assert d[\"usage\"][\"completion_tokens\"]==1 and d[\"choices\"][0][\"text\"]==\"\" and d[\"choices\"][0][\"finish_reason\"]==\"stop\", d"'
post /v1/completions '{"prompt":"Hello there","max_tokens":20,"temperature":0,"logit_bias":{"151645":100},"min_tokens":5}' >/dev/null
check "min_tokens 5: 5 tokens, then the EOS" 'python3 -c "import json;d=json.load(open(\"$T/body\"));assert d[\"usage\"][\"completion_tokens\"]==6 and d[\"choices\"][0][\"finish_reason\"]==\"stop\", d"'
post /v1/completions '{"prompt":"Hello there","max_tokens":10,"temperature":0.8,"seed":3,"logit_bias":{"151645":100},"min_tokens":4}' >/dev/null
check "min_tokens 4, sampled: 4 tokens + EOS" 'python3 -c "import json;d=json.load(open(\"$T/body\"));assert d[\"usage\"][\"completion_tokens\"]==5, d"'
post /v1/completions '{"prompt":"Hello there","max_tokens":10,"temperature":0,"logit_bias":{"11":100},"stop":",","min_tokens":3}' >/dev/null
check "min_tokens holds stop strings back" 'python3 -c "import json;d=json.load(open(\"$T/body\"));c=d[\"choices\"][0];assert c[\"text\"]==\",,,\" and c[\"finish_reason\"]==\"stop\" and d[\"usage\"][\"completion_tokens\"]==4, d"'
post /v1/completions '{"prompt":"Hello there","max_tokens":8,"temperature":0}' >/dev/null
gtoks=$(python3 -c "import json;d=json.load(open('$T/body'));print(d['choices'][0]['text'])")
post /v1/completions '{"prompt":"Hello there","max_tokens":8,"temperature":0,"logprobs":0}' >/dev/null
# the stop string: the first token's last 2 characters + the second token + the third's first 2
stopstr=$(python3 -c "import json;t=json.load(open('$T/body'))['choices'][0]['logprobs']['tokens'];print(t[0][-2:]+t[1]+t[2][:2])")
body=$(python3 -c "import json,sys;print(json.dumps({'prompt':'Hello there','max_tokens':8,'temperature':0,'min_tokens':2,'stop':[sys.argv[1]]}))" "$stopstr")
post /v1/completions "$body" >/dev/null
check "min_tokens: a stop string straddling its end stops ($stopstr)" 'python3 - "$T/body" "$gtoks" "$stopstr" <<EOF
import json, sys
d = json.load(open(sys.argv[1])); c = d["choices"][0]
assert c["finish_reason"] == "stop" and c["text"] == sys.argv[2][:sys.argv[2].index(sys.argv[3])], (d, sys.argv)
EOF'
err "min_tokens past max_tokens" 400 /v1/completions '{"prompt":"x","max_tokens":2,"min_tokens":5}'
err "min_tokens not an integer" 400 /v1/completions '{"prompt":"x","min_tokens":1.5}'
code=$(post $C '{"messages":[{"role":"user","content":"x"}],"max_tokens":1,"logit_bias":{},"response_format":{"type":"text"},"min_tokens":0}')
check "defaults of the refused fields pass ($code)" '[ "$code" = 200 ]'
# stop_token_ids (vLLM's): [1994, 62]'s 3rd greedy token is 151908 (see the padding-id check above)
code=$(post /v1/completions '{"prompt":[1994,62],"max_tokens":10,"temperature":0,"stop_token_ids":[151908]}')
check "stop_token_ids: $code, stops at the 3rd token" 'python3 -c "import json;d=json.load(open(\"$T/body\"));assert d[\"usage\"][\"completion_tokens\"]==3 and d[\"choices\"][0][\"finish_reason\"]==\"stop\", d"'
err "stop_token_ids not ids" 400 /v1/completions '{"prompt":"x","stop_token_ids":["a"]}'

# A client that disconnects mid-stream frees the engine at once for the next request.
timeout 0.25 curl -sN "$U/v1/completions" -d '{"prompt":"Hello","max_tokens":200,"temperature":0,"stream":true}' >/dev/null 2>&1
code=$(post /v1/completions '{"prompt":"Hello there","max_tokens":2,"temperature":0}')
check "after a disconnect the next request runs ($code)" '[ "$code" = 200 ]'
sleep 0.3
# (the cpu backend only: on a GPU the tiny model's 200 tokens are done before the 0.25 s disconnect,
# run 152)
if [ "$BK" = cpu ]; then
  check "disconnect stopped generation early" 'grep "client gone" "$T/log" | grep -qv "+ 200 tokens"'
else
  echo "SKIP: disconnect mid-stream ($BK decodes the tiny model's 200 tokens before the client leaves)"
fi

# Half-sent request: the connection times out (--timeout 2) and the engine keeps serving.
python3 - "$U" <<'EOF' &
import socket, sys, time
host, port = sys.argv[1].split("//")[1].split(":")
s = socket.create_connection((host, int(port)))
s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"prompt\"")
s.settimeout(6)
t = time.time()
try:
    r = s.recv(100)
except Exception:
    r = b"?"
sys.exit(0 if r == b"" and time.time() - t < 5.5 else 1)
EOF
slow=$!
code=$(post /v1/completions '{"prompt":"Hi","max_tokens":2}')
check "serves while a client is half-sent ($code)" '[ "$code" = 200 ]'
wait $slow; check "half-sent request timed out" '[ $? = 0 ]'

# Past the queue (1 running + 2 waiting): 503 with Retry-After; every other request succeeds.
cps=""
for i in $(seq 8); do
  curl -s -o /dev/null -D "$T/h$i" -w '%{http_code}\n' "$U/v1/completions" -d '{"prompt":"Hello there","max_tokens":40,"temperature":0}' >"$T/c$i" &
  cps="$cps $!"
done
wait $cps  # not a bare wait: the server is a child too
n503=$(cat "$T"/c* | grep -c 503); n200=$(cat "$T"/c* | grep -c 200)
check "queue: 200s and 503s only ($n200 ok, $n503 busy)" '[ $((n200+n503)) = 8 ] && [ "$n503" -ge 1 ] && [ "$n200" -ge 3 ]'
check "503 carries Retry-After" 'grep -qi "^Retry-After: 1" $(grep -l " 503" "$T"/h* | head -1)'
stop

# API key: 401 without or with a wrong key (health stays open), 200 with it.
start --api-key s3cret
code=$(post /v1/models '' -X GET); check "no key: 401 ($code)" '[ "$code" = 401 ]'
code=$(post /v1/models '' -X GET -H 'Authorization: Bearer s3cre'); check "wrong key: 401 ($code)" '[ "$code" = 401 ]'
code=$(post /v1/models '' -X GET -H 'Authorization: Bearer s3cret'); check "right key: 200 ($code)" '[ "$code" = 200 ]'
code=$(curl -s -o /dev/null -w '%{http_code}' "$U/health"); check "health without key ($code)" '[ "$code" = 200 ]'
code=$(curl -s -o /dev/null -w '%{http_code}' "$U/metrics"); check "metrics without key ($code)" '[ "$code" = 200 ]'
stop

# --reasoning-parser qwen3: a reply without <think> tags (this model's) is all content, streamed or not.
"$BIN" serve -m "$M" --reasoning-parser deepseek >/dev/null 2>&1; check "unknown reasoning parser exits 2" '[ $? = 2 ]'
start --reasoning-parser qwen3
post /v1/chat/completions '{"messages":[{"role":"user","content":"Hi"}],"max_tokens":8,"temperature":0}' >/dev/null
check "reasoning parser: plain reply is the content" 'python3 -c "import json,sys;m=json.load(open(\"$T/body\"))[\"choices\"][0][\"message\"];assert m[\"content\"]==sys.argv[1] and \"reasoning_content\" not in m, m" "$wantc"'
curl -sN "$U/v1/chat/completions" -d '{"messages":[{"role":"user","content":"Hi"}],"max_tokens":8,"temperature":0,"stream":true}' >"$T/sse"
check "reasoning parser, streamed: the same content" 'python3 - "$T/sse" "$wantc" <<EOF
import json, sys
evs = [json.loads(e[6:]) for e in open(sys.argv[1]).read().split("\n\n") if e.startswith("data: {")]
d = [e["choices"][0]["delta"] for e in evs if e["choices"]]
assert "".join(x.get("content") or "" for x in d) == sys.argv[2] and not any("reasoning_content" in x for x in d), d
EOF'
stop

# The official openai SDK (node) against the same server, when node/npm are here.
if command -v node >/dev/null && command -v npm >/dev/null; then
  D=$(dirname "$(readlink -f "$0")")/../server
  if [ -f "$D/run.sh" ]; then
    if bash "$D/run.sh" "$BIN" "$M"; then ok; else bad "openai SDK tests (tests/server)"; fi
  fi
fi
echo "$passes passed, $fails failed"
[ "$fails" = 0 ]
