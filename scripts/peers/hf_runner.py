"""hf_runner: HF transformers decode benchmark through model.generate, eager or with a static KV
cache (which makes generate torch.compile the decode step, mode reduce-overhead = CUDA graphs).
Run through hf_eager.py / hf_static.py, each its own process."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


class HF:
    def __init__(self, model_dir, static):
        import torch
        import transformers
        self.torch, self.static = torch, static
        self.model = transformers.AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=torch.bfloat16).to("cuda").eval()
        gc = self.model.generation_config
        # Greedy, and no stop at end-of-sequence: every framework decodes exactly n tokens.
        gc.eos_token_id, gc.pad_token_id = None, 0
        gc.do_sample, gc.temperature, gc.top_p, gc.top_k = False, None, None, None
        self.vocab = self.model.config.vocab_size
        self.version = f"transformers {transformers.__version__}, torch {torch.__version__}"

    def _gen(self, ids, new):
        torch = self.torch
        x = torch.tensor([ids], device="cuda")
        kw = {"cache_implementation": "static"} if self.static else {}
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=new,
                                      min_new_tokens=new, do_sample=False, **kw)
        torch.cuda.synchronize()
        return out[0, len(ids):].tolist(), time.perf_counter() - t0

    def run(self, ids, n):
        _, ttft = self._gen(ids, 1)          # prefill + first token alone
        toks, total = self._gen(ids, n + 1)  # the same, then n decode steps
        return toks, ttft, max(total - ttft, 1e-9)

    def sweep(self, depth, fill, n):
        if self.static:  # a deeper static cache means a new compiled step: build it untimed
            self._gen(fill[:depth], n + 1)
        _, ttft = self._gen(fill[:depth], 1)
        _, total = self._gen(fill[:depth], n + 1)
        return max(total - ttft, 1e-9)

    def peak_alloc(self):
        return self.torch.cuda.max_memory_allocated()


def main(static):
    fw = "hf-static-cudagraph" if static else "hf-eager"
    args = common.parse_args(f"{fw}: HF transformers decode benchmark")
    for mod in ("torch", "transformers"):
        if not common.have_module(mod):
            common.not_installed(fw, mod, args)
    import torch
    if not torch.cuda.is_available():
        common.error(fw, "no CUDA device visible to torch", args)

    def notes(row, impl, nv):
        from torch._dynamo.utils import counters
        graphs = counters["stats"]["unique_graphs"]
        row["notes"] = (f"torch.compile captured {graphs} graph(s)" if static or graphs else "eager (no torch.compile)")

    common.measure_and_emit(fw, args, lambda: HF(args.model, static), notes)
