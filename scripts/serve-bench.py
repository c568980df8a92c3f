#!/usr/bin/env python3
# serve-bench: latency of a running `megaqwen serve` under 1, 4 and 16 concurrent streaming clients.
#
#   serve-bench.py URL [--clients 1,4,16] [--requests-per-level 32] [--max-tokens 64] [--json F]
#
# Every request is POST /v1/completions with stream=true, temperature 0 and a fixed prompt (one of
# eight, by request index, so the prefix cache does not hide prompt processing). Per request it
# measures TTFT (request sent -> first text chunk), total latency and decode tok/s (tokens after
# the first / time after the first); per level it prints p50/p99 of each and the aggregate
# throughput (completion tokens of all requests / wall time of the level). Standard library only.
import argparse
import http.client
import json
import sys
import threading
import time
import urllib.parse

PROMPTS = [
    "The history of the printing press begins",
    "Write a short note about the weather in Lisbon in",
    "A list of prime numbers: 2, 3, 5,",
    "In a quiet village by the sea there lived",
    "def fibonacci(n):\n",
    "The three laws of thermodynamics are",
    "Once upon a time, a small robot",
    "Translate to French: the cat sleeps on the",
]


def one(url, i, max_tokens):
    u = urllib.parse.urlparse(url)
    body = json.dumps({"prompt": PROMPTS[i % len(PROMPTS)] + " (%d)" % i, "max_tokens": max_tokens,
                       "temperature": 0, "stream": True, "stream_options": {"include_usage": True}})
    t0 = time.perf_counter()
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    c.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        return {"status": r.status}
    t_first = None
    n_chunks = 0
    usage = None
    buf = b""
    while True:
        line = r.readline()
        if not line:
            break
        line = line.strip()
        if not line.startswith(b"data: "):
            continue
        d = line[6:]
        if d == b"[DONE]":
            break
        o = json.loads(d)
        if o.get("usage"):
            usage = o["usage"]
        ch = o.get("choices") or []
        if ch and ch[0].get("text"):
            n_chunks += 1
            if t_first is None:
                t_first = time.perf_counter()
        buf += d
    t1 = time.perf_counter()
    c.close()
    n = usage["completion_tokens"] if usage else n_chunks
    if t_first is None:
        t_first = t1
    dec = (n - 1) / (t1 - t_first) if n > 1 and t1 > t_first else 0.0
    return {"status": 200, "ttft": t_first - t0, "total": t1 - t0, "tokens": n, "tok_s": dec,
            "prompt_tokens": usage["prompt_tokens"] if usage else 0}


def pct(v, p):
    if not v:
        return float("nan")
    v = sorted(v)
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * (len(v) - 1)))))
    return v[k]


def level(url, clients, nreq, max_tokens):
    res = [None] * nreq
    nxt = [0]
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= nreq:
                return
            try:
                res[i] = one(url, i, max_tokens)
            except Exception as e:  # a broken request is reported, not fatal
                res[i] = {"status": -1, "error": str(e)}

    t0 = time.perf_counter()
    th = [threading.Thread(target=worker) for _ in range(clients)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    wall = time.perf_counter() - t0
    ok = [r for r in res if r and r["status"] == 200]
    toks = sum(r["tokens"] for r in ok)
    return {
        "clients": clients, "requests": nreq, "ok": len(ok), "wall_s": wall,
        "ttft_p50_ms": 1e3 * pct([r["ttft"] for r in ok], 50), "ttft_p99_ms": 1e3 * pct([r["ttft"] for r in ok], 99),
        "lat_p50_ms": 1e3 * pct([r["total"] for r in ok], 50), "lat_p99_ms": 1e3 * pct([r["total"] for r in ok], 99),
        "tok_s_p50": pct([r["tok_s"] for r in ok], 50), "agg_tok_s": toks / wall if wall > 0 else 0,
        "tokens_mean": toks / len(ok) if ok else 0,
        "prompt_tokens_mean": sum(r["prompt_tokens"] for r in ok) / len(ok) if ok else 0,
        "errors": [r for r in res if not r or r["status"] != 200][:3],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--requests-per-level", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--json")
    a = ap.parse_args()
    one(a.url, 999, 8)  # warm-up
    rows = [level(a.url, int(c), a.requests_per_level, a.max_tokens) for c in a.clients.split(",")]
    print("| clients | requests ok | prompt tok | gen tok | TTFT p50 / p99 (ms) | latency p50 / p99 (ms) "
          "| decode tok/s per request (p50) | aggregate tok/s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| %d | %d/%d | %.0f | %.0f | %.2f / %.2f | %.1f / %.1f | %.0f | %.0f |" % (
            r["clients"], r["ok"], r["requests"], r["prompt_tokens_mean"], r["tokens_mean"], r["ttft_p50_ms"],
            r["ttft_p99_ms"], r["lat_p50_ms"], r["lat_p99_ms"], r["tok_s_p50"], r["agg_tok_s"]))
        for e in r["errors"]:
            print("  error:", e, file=sys.stderr)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0 if all(r["ok"] == r["requests"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
