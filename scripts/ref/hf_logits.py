#!/usr/bin/env python3
"""hf_logits: HF transformers teacher-forced logits of an id sequence, as raw float32 [T, vocab].

  hf_logits.py -m DIR --ids 1,2,3|@file.json --dtype fp32|bf16 -o out.bin
fp32: the checkpoint's weights upcast to float32 (the reference); bf16: HF in bfloat16, used to tell
where HF's own top-2 gap is a bf16 tie. Runs on CUDA when present, else CPU.
"""
import argparse
import json

import torch
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--ids", required=True, help="comma-separated ids or @file.json (a list)")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("-o", "--out", required=True)
    a = ap.parse_args()
    if a.ids.startswith("@"):
        ids = json.load(open(a.ids[1:]))
    else:
        ids = [int(x) for x in a.ids.split(",") if x]
    dt = torch.float32 if a.dtype == "fp32" else torch.bfloat16
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    if dt == torch.float32 and dev == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    m = AutoModelForCausalLM.from_pretrained(a.model, dtype=dt).to(dev).eval()
    with torch.no_grad():
        out = m(torch.tensor([ids], device=dev)).logits[0].float().cpu().numpy()
    out.astype("<f4").tofile(a.out)
    print(f"hf_logits: {a.dtype} T={len(ids)} vocab={out.shape[1]} -> {a.out}")


if __name__ == "__main__":
    main()
