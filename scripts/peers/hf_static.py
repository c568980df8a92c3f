"""hf_static: HF transformers generate with cache_implementation="static", which compiles the
decode step (torch.compile, reduce-overhead: the step replays as a CUDA graph)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_runner import main  # noqa: E402

main(static=True)
