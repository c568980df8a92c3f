"""hf_eager: the seed's baseline — HF transformers generate, bf16, dynamic KV cache, eager."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_runner import main  # noqa: E402

main(static=False)
