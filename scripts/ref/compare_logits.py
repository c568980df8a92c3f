#!/usr/bin/env python3
"""compare_logits: score megaqwen's teacher-forced logits against HF fp32 (and HF bf16 for ties).

  compare_logits.py --vocab V --hf32 a.bin --hfbf16 b.bin NAME=file.bin [NAME=file.bin ...]
All files are float32 [T, vocab]. Per candidate: mean and max KL(HF fp32 || candidate) per position,
argmax agreement with HF fp32 over all positions and over positions that are not bf16 ties (a tie:
HF bf16's argmax differs from HF fp32's, or HF fp32's top-2 gap is under --tie nats), max |dlogit|.
Prints one JSON line per candidate, then a short table. Exit 1 if a file is malformed.
"""
import argparse
import json
import sys

import numpy as np


def load(path, vocab):
    a = np.fromfile(path, dtype="<f4")
    if a.size % vocab:
        sys.exit(f"compare_logits: {path}: {a.size} floats is not a multiple of vocab {vocab}")
    return a.reshape(-1, vocab).astype(np.float64)


def logsoftmax(x):
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocab", type=int, required=True)
    ap.add_argument("--hf32", required=True)
    ap.add_argument("--hfbf16")
    ap.add_argument("--tie", type=float, default=0.05)
    ap.add_argument("cands", nargs="+")
    a = ap.parse_args()
    ref = load(a.hf32, a.vocab)
    T = ref.shape[0]
    top2 = np.sort(ref, axis=1)[:, -2:]
    gap = top2[:, 1] - top2[:, 0]
    tie = gap < a.tie
    if a.hfbf16:
        hb = load(a.hfbf16, a.vocab)[:T]
        tie |= hb.argmax(1) != ref.argmax(1)
    lr = logsoftmax(ref)
    rows = []
    for c in a.cands:
        name, path = c.split("=", 1)
        x = load(path, a.vocab)
        if x.shape[0] != T:
            sys.exit(f"compare_logits: {path}: {x.shape[0]} rows, HF has {T}")
        if not np.isfinite(x).all():
            sys.exit(f"compare_logits: {path}: non-finite logits")
        kl = (np.exp(lr) * (lr - logsoftmax(x))).sum(axis=1)
        agree = x.argmax(1) == ref.argmax(1)
        r = {"name": name, "T": T, "kl_mean": float(kl.mean()), "kl_max": float(kl.max()),
             "argmax_all": float(agree.mean()), "argmax_nontie": float(agree[~tie].mean()) if (~tie).any() else 1.0,
             "n_tie": int(tie.sum()), "max_abs_dlogit": float(np.abs(x - ref).max())}
        rows.append(r)
        print(json.dumps(r))
    print(f"| vs HF fp32 (T={T}, {int(tie.sum())} bf16 ties) | mean KL | max KL | argmax all | argmax non-tie | max|dlogit| |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['kl_mean']:.2e} | {r['kl_max']:.2e} | {100*r['argmax_all']:.2f}% | "
              f"{100*r['argmax_nontie']:.2f}% | {r['max_abs_dlogit']:.3g} |")


if __name__ == "__main__":
    main()
