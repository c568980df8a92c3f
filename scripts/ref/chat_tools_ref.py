#!/usr/bin/env python3
"""chat_tools_ref: Qwen3 chat prompts with tools and tool calls, for tests/test_chat.c.

  python3 scripts/ref/chat_tools_ref.py --tok DIR --out FILE [--hf]

Renders every case of tool_cases() with the checkpoint's chat_template (DIR/tokenizer_config.json)
and writes one JSON object per line: {"messages", "tools", "add_generation_prompt",
"enable_thinking", "text"} after a first {"meta": ...} line.

Two renderers, the same template:
  --hf   transformers' AutoTokenizer.apply_chat_template(messages, tools=tools, tokenize=False)
         (the device machine has transformers);
  default: jinja2 set up as transformers' chat-template renderer sets it up (an immutable sandboxed
         environment with trim_blocks, lstrip_blocks and loop controls; `tojson` = json.dumps with
         ensure_ascii=False and no sorting; `raise_exception`). Before writing anything it re-renders
         every case of tests/data/tok/chat_ref.jsonl (made by transformers, tok_refs.py) and stops
         if a single one differs, so the jinja2 rendering is checked against transformers' own.
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CHAT_REF = os.path.join(ROOT, "tests", "data", "tok", "chat_ref.jsonl")

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city.",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City name, e.g. Zürich"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"]}}}
SEARCH = {"type": "function", "function": {
    "name": "search", "description": "Search the web: \"quoted\" terms, a\\b, tab\there, 日本語 😀",
    "parameters": {"type": "object", "properties": {
        "query": {"type": "string"},
        "top_k": {"type": "integer", "minimum": 1, "maximum": 50, "default": 5},
        "threshold": {"type": "number", "minimum": 0.5, "maximum": 1e-05, "default": -2.25},
        "big": {"type": "number", "default": 1.5e+20},
        "exact": {"type": "boolean", "default": False},
        "filters": {"type": "object", "properties": {}, "additionalProperties": True},
        "tags": {"type": "array", "items": {"type": "string"}, "default": []},
        "note": {"type": ["string", "null"], "default": None}},
        "required": ["query"]}}}
NOPARAM = {"type": "function", "function": {"name": "now", "description": "", "parameters": {}}}


def call(name, args, cid="call_1"):
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}


def tool_cases():
    S = {"role": "system", "content": "You are a helpful assistant."}
    U = lambda c: {"role": "user", "content": c}
    A = lambda c, calls=None: dict({"role": "assistant", "content": c}, **({"tool_calls": calls} if calls else {}))
    T = lambda c, cid="call_1": {"role": "tool", "content": c, "tool_call_id": cid}
    w = call("get_weather", "{\"city\": \"Paris\"}")
    w2 = call("get_weather", "{\"city\": \"Zürich\", \"unit\": \"celsius\"}", "call_2")
    s = call("search", "{\"query\": \"a \\\"b\\\"\", \"top_k\": 3}", "call_3")
    th = "<think>\nI should look it up.\n</think>\n\n"
    convs = [
        ([U("What's the weather in Paris?")], [WEATHER]),
        ([S, U("What's the weather in Paris?")], [WEATHER]),
        ([S, U("Find news")], [WEATHER, SEARCH, NOPARAM]),
        ([U("Paris?"), A("", [w]), T("{\"temp\": 21}")], [WEATHER]),
        ([U("Paris?"), A("Let me check.", [w]), T("sunny")], [WEATHER]),
        ([U("Paris and Zurich?"), A("", [w, w2]), T("sunny"), T("rain", "call_2")], [WEATHER]),
        ([U("Paris and Zurich?"), A("", [w, w2]), T("sunny"), T("rain", "call_2"), A("Sunny, and rain.")],
         [WEATHER]),
        ([U("q"), A(th, [s]), T("[]"), U("and now?")], [SEARCH]),
        ([U("q"), A(th + "Searching.", [s]), T("results")], [SEARCH]),
        ([S, U("q1"), A("plain"), U("q2"), A("", [w]), T("x")], [WEATHER]),
        ([U("no tools in this turn"), A("", [w]), T("x")], None),
        ([U("time?"), A("", [call("now", "{}")]), T("12:00")], [NOPARAM]),
    ]
    out = []
    for msgs, tools in convs:
        for gen in (True, False):
            for think in (None, False):
                out.append((msgs, tools, gen, think))
    return out


def jinja_renderer(template):
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    t = env.from_string(template)

    def render(msgs, tools, gen, think):
        kw = {} if think is None else {"enable_thinking": think}
        return t.render(messages=msgs, tools=tools, add_generation_prompt=gen, **kw)
    return render


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tok", required=True, help="directory with tokenizer_config.json")
    ap.add_argument("--out", required=True)
    ap.add_argument("--hf", action="store_true", help="render with transformers instead of jinja2")
    a = ap.parse_args()
    if a.hf:
        import transformers
        from transformers import AutoTokenizer
        at = AutoTokenizer.from_pretrained(a.tok)

        def render(msgs, tools, gen, think):
            kw = {} if think is None else {"enable_thinking": think}
            return at.apply_chat_template(msgs, tools=tools, tokenize=False, add_generation_prompt=gen, **kw)
        meta = {"renderer": "transformers", "transformers": transformers.__version__}
    else:
        import jinja2
        with open(os.path.join(a.tok, "tokenizer_config.json"), encoding="utf-8") as f:
            render = jinja_renderer(json.load(f)["chat_template"])
        n = 0
        with open(CHAT_REF, encoding="utf-8") as f:
            for line in f:
                e = json.loads(line)
                if "meta" in e:
                    continue
                got = render(e["messages"], None, e["add_generation_prompt"], e["enable_thinking"])
                if got != e["text"]:
                    sys.exit(f"jinja2 rendering differs from transformers' on {CHAT_REF} case {n}:\n"
                             f"{got!r}\n{e['text']!r}")
                n += 1
        print(f"jinja2 {jinja2.__version__}: all {n} cases of {os.path.basename(CHAT_REF)} as transformers renders them")
        meta = {"renderer": "jinja2 as transformers sets it up", "jinja2": jinja2.__version__,
                "checked_against": os.path.basename(CHAT_REF) + f" ({n} cases)"}
    n = 0
    with open(a.out, "w", encoding="utf-8") as f:
        f.write(json.dumps({"meta": meta}) + "\n")
        for msgs, tools, gen, think in tool_cases():
            text = render(msgs, tools, gen, think)
            f.write(json.dumps({"messages": msgs, "tools": tools, "add_generation_prompt": gen,
                                "enable_thinking": think, "text": text}, ensure_ascii=False) + "\n")
            n += 1
    print(f"{a.out}: {n} cases")


if __name__ == "__main__":
    main()
