"""exllamav2_runner: ExLlamaV2 on the unquantized checkpoint, a plain greedy loop over
model.forward with its own KV cache. Reports "not installed" where exllamav2 is absent."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


class EXL:
    def __init__(self, model_dir, max_len):
        import exllamav2
        import torch
        from exllamav2 import ExLlamaV2, ExLlamaV2Cache, ExLlamaV2Config
        self.torch = torch
        cfg = ExLlamaV2Config(model_dir)
        cfg.max_seq_len = max_len
        self.model = ExLlamaV2(cfg)
        self.cache = ExLlamaV2Cache(self.model, max_seq_len=max_len, lazy=True)
        self.model.load_autosplit(self.cache)
        self.vocab = cfg.vocab_size
        self.version = f"exllamav2 {getattr(exllamav2, '__version__', '?')}"

    def _prefill(self, ids):
        torch = self.torch
        self.cache.current_seq_len = 0
        logits = self.model.forward(torch.tensor([ids]), self.cache, preprocess_only=False)
        return int(logits[0, -1].argmax())

    def _decode(self, first, n):
        torch = self.torch
        out, cur = [], first
        for _ in range(n):
            logits = self.model.forward(torch.tensor([[cur]]), self.cache)
            cur = int(logits[0, -1].argmax())
            out.append(cur)
        return out

    def run(self, ids, n):
        t0 = time.perf_counter()
        first = self._prefill(ids)
        t1 = time.perf_counter()
        toks = self._decode(first, n)
        t2 = time.perf_counter()
        return [first] + toks, t1 - t0, t2 - t1

    def sweep(self, depth, fill, n):
        self._prefill(fill[:depth])
        t0 = time.perf_counter()
        self._decode(fill[depth], n)
        return time.perf_counter() - t0

    def peak_alloc(self):
        return self.torch.cuda.max_memory_allocated()


def main():
    common.run_simple("exllamav2", "ExLlamaV2 decode benchmark", "exllamav2", EXL)


if __name__ == "__main__":
    main()
