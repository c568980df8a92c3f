#!/usr/bin/env python3
"""hf_fixtures: build two small random Qwen3 checkpoints with HF transformers and dump reference
logits and greedy continuations for tests/test_cpu.c (output goes to tests/data/hf/{A,B}).

  A: tied embeddings, stored float32, vocab 1000, hidden 64, 3 layers, 4 q heads / 2 kv heads,
     head_dim 32 (n_heads*head_dim != hidden), intermediate 160, rope_theta 1e6.
  B: untied (lm_head.weight stored), stored bfloat16, vocab 1200, hidden 96, 4 layers,
     8 q heads / 2 kv heads (GQA 4:1), head_dim 16, intermediate 256, rope_theta 1e4.
  C: YaRN RoPE scaling (factor 4 over 32 original positions, so the 80 teacher-forced positions
     run past it; attention factor 0.1 ln 4 + 1), tied, stored bfloat16, vocab 900, hidden 64,
     2 layers, 4 q heads / 2 kv heads, head_dim 32, intermediate 128, rope_theta 1e4.

Weights: every matrix ~ N(0, init_std) with init_std large (0.15/0.2) so next-token distributions
are peaked and argmax comparisons mean something; every RMSNorm weight (layer norms, q_norm,
k_norm, final norm) is 1 + 0.1*N(0,1) so a norm weight applied wrongly shows up.

THE ORACLE. HF run natively on a bf16 checkpoint computes in bf16 (activations rounded to bf16
between ops), which is not what the megaqwen CPU reference does (fp32 activations, fp32
accumulation, weights upcast exactly). The mathematically right oracle for a bf16-*stored* model
is therefore HF in float32 on the exactly-upcast bf16 weights: we save B in bf16, reload the saved
directory with dtype=torch.float32, and run that. A is float32 throughout. Both run on the CPU,
eager attention, so there is no TF32 or fused-kernel noise in the reference.

Outputs per model, in OUT/<name>/:
  config.json, generation_config.json, model.safetensors   (save_pretrained)
  logits.bin  float32 little-endian, shape [T, vocab] row-major: teacher-forced logits of `ids`
  ref.json    ids, T, vocab, prompt, greedy (HF generate, do_sample=False, eos disabled),
              per-position top1-top2 margins, versions.
The id sequences are drawn from a seeded RNG; the first seed whose teacher-forced and greedy
top1-top2 margins are all >= 1e-4 * max|logit| is used, so that no position is a numerical tie
(a tie would make "same argmax" depend on fp32 rounding order rather than on correctness).

Usage: python3 scripts/ref/hf_fixtures.py --out DIR [--only C]   (needs torch, transformers, safetensors)
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import transformers
from transformers import Qwen3Config, Qwen3ForCausalLM

T_TF = 80        # teacher-forced sequence length
PROMPT_LEN = 6   # greedy prompt length
N_NEW = 32       # greedy new tokens
MARGIN_REL = 1e-4

SPECS = {
    "A": dict(vocab_size=1000, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=2, head_dim=32, intermediate_size=160, rope_theta=1e6,
              tie_word_embeddings=True, store=torch.float32, init_std=0.2, seed=1234),
    "B": dict(vocab_size=1200, hidden_size=96, num_hidden_layers=4, num_attention_heads=8,
              num_key_value_heads=2, head_dim=16, intermediate_size=256, rope_theta=1e4,
              tie_word_embeddings=False, store=torch.bfloat16, init_std=0.15, seed=5678),
    "C": dict(vocab_size=900, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=32, intermediate_size=128, rope_theta=1e4,
              rope={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32},
              tie_word_embeddings=True, store=torch.bfloat16, init_std=0.2, seed=4321),
}


def make_config(s):
    kw = dict(vocab_size=s["vocab_size"], hidden_size=s["hidden_size"],
              num_hidden_layers=s["num_hidden_layers"], num_attention_heads=s["num_attention_heads"],
              num_key_value_heads=s["num_key_value_heads"], head_dim=s["head_dim"],
              intermediate_size=s["intermediate_size"], max_position_embeddings=512,
              rms_norm_eps=1e-6, tie_word_embeddings=s["tie_word_embeddings"],
              attention_bias=False, use_sliding_window=False, hidden_act="silu",
              initializer_range=s["init_std"], bos_token_id=1, eos_token_id=2)
    theta = s["rope_theta"]
    rope = dict(s.get("rope", {"rope_type": "default"}))
    try:  # transformers 5.x layout
        cfg = Qwen3Config(**kw, rope_parameters={**rope, "rope_theta": theta})
    except TypeError:  # 4.x
        cfg = Qwen3Config(**kw, rope_theta=theta, rope_scaling=None if rope["rope_type"] == "default" else rope)
    for attr in ("rope_theta",):
        if hasattr(cfg, attr) and getattr(cfg, attr) != theta:
            setattr(cfg, attr, theta)
    rp = getattr(cfg, "rope_parameters", None)
    if isinstance(rp, dict):
        rp["rope_theta"] = theta
    try:
        cfg._attn_implementation = "eager"
    except Exception as e:  # noqa: BLE001 - version-dependent attribute
        print("note: cannot set _attn_implementation:", e)
    return cfg


def check_rope(model, s):
    inv = model.model.rotary_emb.inv_freq.detach().double().cpu().numpy()
    hd = s["head_dim"]
    if "rope" in s:  # scaled: print what HF made of it (megaqwen's tests check its own against these logits)
        print(f"rope {s['rope']}: inv_freq {inv[:2]} .. {inv[-2:]}, attention_scaling "
              f"{getattr(model.model.rotary_emb, 'attention_scaling', '?')}")
        return
    want = 1.0 / (s["rope_theta"] ** (np.arange(0, hd, 2) / hd))
    if not np.allclose(inv, want, rtol=1e-5):
        print(f"WARNING rope_theta: inv_freq {inv[:3]} want {want[:3]} (config.json is what HF used)")


def init_weights(model, s):
    g = torch.Generator().manual_seed(s["seed"])
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied lm_head appears once (as embed)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(s["init_std"] * torch.randn(p.shape, generator=g))


def load_f32(d):
    try:
        m = Qwen3ForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
    except TypeError:
        m = Qwen3ForCausalLM.from_pretrained(d, torch_dtype=torch.float32, attn_implementation="eager")
    m.eval()
    return m


def margins(logits):
    top2 = torch.topk(logits, 2, dim=-1).values
    return (top2[..., 0] - top2[..., 1])


@torch.no_grad()
def greedy_manual(m, prompt, n):
    ids = list(prompt)
    for _ in range(n):
        lg = m(torch.tensor([ids])).logits[0, -1]
        ids.append(int(torch.argmax(lg)))
    return ids[len(prompt):]


@torch.no_grad()
def build(name, s, out):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    torch.manual_seed(s["seed"])
    cfg = make_config(s)
    model = Qwen3ForCausalLM(cfg)
    check_rope(model, s)
    init_weights(model, s)
    if s["tie_word_embeddings"]:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(), "not tied"
    model = model.to(s["store"])
    try:
        model.save_pretrained(d, safe_serialization=True)
    except TypeError:  # 5.x dropped the argument (safetensors is the only format)
        model.save_pretrained(d)

    # The oracle: reload what was saved, upcast to float32 (exact for bf16).
    m = load_f32(d)
    check_rope(m, s)
    from safetensors import safe_open
    with safe_open(os.path.join(d, "model.safetensors"), "pt") as f:
        keys = sorted(f.keys())
        dtypes = sorted({str(f.get_tensor(k).dtype) for k in keys})
    print(f"{name}: {len(keys)} tensors, dtypes {dtypes}, lm_head stored: {'lm_head.weight' in keys}")

    vocab = s["vocab_size"]
    chosen = None
    for trial in range(50):
        rng = np.random.default_rng(1000 * s["seed"] + trial)
        ids = [int(x) for x in rng.integers(3, vocab, size=T_TF)]
        logits = m(torch.tensor([ids])).logits[0].float()  # (T, vocab)
        mx = float(logits.abs().max())
        tf_marg = margins(logits)
        prompt = [int(x) for x in rng.integers(3, vocab, size=PROMPT_LEN)]
        m.generation_config.eos_token_id = None
        m.generation_config.pad_token_id = 0
        manual = greedy_manual(m, prompt, N_NEW)
        try:
            gen = m.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, PROMPT_LEN, dtype=torch.long),
                             do_sample=False, max_new_tokens=N_NEW, min_new_tokens=0, pad_token_id=0)
            greedy = [int(x) for x in gen[0, PROMPT_LEN:]]
        except Exception as e:  # noqa: BLE001 - keep the run useful if generate's API moved
            print(f"{name}: generate failed ({e}); using the no-cache argmax loop")
            greedy = list(manual)
        full = m(torch.tensor([prompt + greedy])).logits[0].float()
        g_marg = margins(full[PROMPT_LEN - 1:-1])
        gmx = float(full.abs().max())
        ok = (len(greedy) == N_NEW and manual == greedy and float(tf_marg.min()) >= MARGIN_REL * mx
              and float(g_marg.min()) >= MARGIN_REL * gmx)
        print(f"{name} trial {trial}: max|logit| {mx:.3f} min tf margin {float(tf_marg.min()):.4g} "
              f"min greedy margin {float(g_marg.min()):.4g} len {len(greedy)} manual==generate {manual == greedy}"
              f" distinct greedy {len(set(greedy))}")
        if ok:
            chosen = (trial, ids, logits, tf_marg, prompt, greedy, g_marg, mx, gmx)
            break
    if chosen is None:
        sys.exit(f"{name}: no trial without near-ties")
    trial, ids, logits, tf_marg, prompt, greedy, g_marg, mx, gmx = chosen
    logits.numpy().astype("<f4").tofile(os.path.join(d, "logits.bin"))
    ref = {
        "model": name, "trial": trial, "T": T_TF, "vocab": vocab, "ids": ids,
        "logits_file": "logits.bin", "logits_format": "float32 little-endian, [T, vocab] row-major",
        "max_abs_logit": mx, "argmax": [int(x) for x in torch.argmax(logits, -1)],
        "tf_margins": [float(x) for x in tf_marg],
        "prompt": prompt, "greedy": greedy, "greedy_margins": [float(x) for x in g_marg],
        "greedy_max_abs_logit": gmx,
        "oracle": "HF Qwen3ForCausalLM, float32 on the saved weights (bf16 upcast exactly), CPU, eager",
        "stored_dtype": str(s["store"]), "tensors": keys,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    with open(os.path.join(d, "ref.json"), "w") as f:
        json.dump(ref, f, indent=1)
    print(f"{name}: wrote trial {trial}; greedy {greedy}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", default="", help="comma-separated fixture names (default: all)")
    a = ap.parse_args()
    torch.set_num_threads(4)
    print("torch", torch.__version__, "transformers", transformers.__version__)
    for name, s in SPECS.items():
        if not a.only or name in a.only.split(","):
            build(name, s, a.out)


if __name__ == "__main__":
    main()
