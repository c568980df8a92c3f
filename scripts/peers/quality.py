"""quality: KL divergence (mean and max per token), perplexity and argmax match of each framework that
exposes full logits, against HF transformers computed in fp32 on the same weights and token ids.

Token ids: tests/data/ppl.txt tokenized by the checkpoint's tokenizer (HF AutoTokenizer, else
`megaqwen tokenize`), first --tokens of them, folded modulo vocab. Every framework sees those ids
teacher-forced in one window; perplexity = exp(mean NLL of ids[t+1] given ids[..t]). megaqwen's
logits come from its own `megaqwen logits` command; `megaqwen perplexity --json` is recorded too
(its sliding-window method over the whole text). Prints one JSON line (schema megaqwen-quality/1).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "report"))
import schema  # noqa: E402


def emit(doc, path=None):
    errs = schema.validate_quality(doc)
    if errs:
        doc = {"schema": schema.QUALITY_SCHEMA, "status": "error", "reason": "; ".join(errs[:3]), "rows": []}
    line = json.dumps(doc)
    if path:
        with open(path, "w") as f:
            f.write(line + "\n")
    print(line, flush=True)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def get_ids(args, vocab):
    text = open(args.text, encoding="utf-8").read()
    ids = None
    try:
        from transformers import AutoTokenizer
        ids = AutoTokenizer.from_pretrained(args.model).encode(text)
    except Exception as e:  # no tokenizer files, or no transformers
        log(f"quality: HF tokenizer unavailable ({type(e).__name__}); trying megaqwen tokenize")
    if ids is None and args.megaqwen:
        r = subprocess.run([args.megaqwen, "tokenize", "-m", args.model, "-f", args.text],
                           capture_output=True, text=True, check=True)
        ids = json.loads(r.stdout)
    if ids is None:
        raise RuntimeError("no tokenizer: neither transformers nor megaqwen tokenize could encode the text")
    return [i % vocab for i in ids[: args.tokens]]


def metrics(torch, ref_logp, logits, ids):
    """KL(ref || x) per position, argmax agreement, perplexity of the next ids under x."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    kl = (ref_logp.exp() * (ref_logp - lp)).sum(-1).clamp_min(0)  # (T)
    match = (lp.argmax(-1) == ref_logp.argmax(-1)).float().mean().item()
    tgt = torch.tensor(ids[1:], device=lp.device)
    nll = -lp[:-1].gather(1, tgt[:, None]).squeeze(1)
    return {"kl_mean": kl.mean().item(), "kl_max": kl.max().item(), "ppl": nll.mean().exp().item(),
            "argmax_match": match}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--text", default=os.path.join(HERE, "..", "..", "tests", "data", "ppl.txt"))
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--megaqwen", help="megaqwen binary (adds megaqwen rows)")
    ap.add_argument("--backends", default="cuda", help="megaqwen backends to score, e.g. cuda,cpu")
    ap.add_argument("--json", help="also write the document here")
    args = ap.parse_args()
    for mod in ("torch", "transformers"):
        import importlib.util
        if importlib.util.find_spec(mod) is None:
            emit({"schema": schema.QUALITY_SCHEMA, "status": "not installed",
                  "reason": f"{mod} is not installed (the fp32 reference needs it)", "rows": []}, args.json)
            return
    import torch
    import transformers
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = json.load(open(os.path.join(args.model, "config.json")))
    vocab = cfg.get("text_config", cfg)["vocab_size"]
    ids = get_ids(args, vocab)
    T = len(ids)
    x = torch.tensor([ids], device=dev)
    rows = []

    def hf_logits(dtype):
        m = transformers.AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype).to(dev).eval()
        with torch.no_grad():
            out = m(x).logits[0].float()
        del m
        return out

    ref = hf_logits(torch.float32)
    ref_logp = torch.log_softmax(ref, dim=-1)
    r = metrics(torch, ref_logp, ref, ids)
    del ref
    rows.append({"framework": "hf-fp32 (reference)", "status": "ok", **r})
    log(f"quality: reference ppl {r['ppl']:.4g} over {T} tokens")

    def add(name, fn):
        try:
            r = metrics(torch, ref_logp, fn(), ids)
            rows.append({"framework": name, "status": "ok", **r})
            log(f"quality: {name}: KL mean {r['kl_mean']:.3g} max {r['kl_max']:.3g}, ppl {r['ppl']:.4g}, "
                f"argmax {100 * r['argmax_match']:.1f}%")
        except Exception as e:
            rows.append({"framework": name, "status": f"error: {type(e).__name__}: {str(e)[:200]}",
                         "kl_mean": None, "kl_max": None, "ppl": None, "argmax_match": None})
            log(f"quality: {name}: {rows[-1]['status']}")
        torch.cuda.empty_cache() if dev == "cuda" else None

    add("hf-eager (bf16)", lambda: hf_logits(torch.bfloat16))

    def gptfast_logits():
        import gptfast
        m = gptfast.build(args.model, device=dev)
        m.setup_caches(((T + 255) // 256) * 256)
        with torch.no_grad():
            out = m(x, torch.arange(T, device=dev))[0]
        del m
        return out
    add("gpt-fast-style (bf16)", gptfast_logits)

    mq_ppl = {}
    if args.megaqwen:
        for be in [b for b in args.backends.split(",") if b]:
            def mq_logits(be=be):
                import numpy as np
                with tempfile.TemporaryDirectory() as td:
                    f = os.path.join(td, "l.f32")
                    subprocess.run([args.megaqwen, "logits", "-m", args.model, "--ids", ",".join(map(str, ids)),
                                    "-o", f, "--backend", be, "--max-ctx", str(max(T, 16))], check=True,
                                   stdout=sys.stderr, stderr=sys.stderr)
                    a = np.fromfile(f, dtype="<f4").reshape(T, vocab)
                return torch.from_numpy(a).to(dev)
            add(f"megaqwen-{be}", mq_logits)
            p = subprocess.run([args.megaqwen, "perplexity", "-m", args.model, "-f", args.text, "--json",
                                "--backend", be], capture_output=True, text=True)
            mq_ppl[be] = json.loads(p.stdout) if p.returncode == 0 and p.stdout.strip() else \
                {"error": (p.stderr.strip().splitlines() or ["failed"])[-1]}
    emit({"schema": schema.QUALITY_SCHEMA, "status": "ok", "reference": "hf-fp32", "tokens": T,
          "text": os.path.relpath(args.text), "device": torch.cuda.get_device_name() if dev == "cuda" else "cpu",
          "rows": rows, "megaqwen_perplexity_cmd": mq_ppl,
          "note": "vLLM, SGLang, llama.cpp, TensorRT-LLM and ExLlamaV2 expose top-k logprobs at most, "
                  "so they have no KL row"}, args.json)


if __name__ == "__main__":
    main()
