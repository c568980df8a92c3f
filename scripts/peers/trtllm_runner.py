"""trtllm_runner: TensorRT-LLM through its LLM API (builds an engine from the HF checkpoint),
greedy, ignore_eos. Reports "not installed" where tensorrt_llm is absent."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


class TRT(common.TwoCallTiming):
    def __init__(self, model_dir, max_len):
        import tensorrt_llm
        from tensorrt_llm import LLM, SamplingParams
        self.SP = SamplingParams
        self.llm = LLM(model=model_dir, dtype="bfloat16", max_seq_len=max_len, skip_tokenizer_init=True)
        import json
        self.vocab = json.load(open(os.path.join(model_dir, "config.json")))["vocab_size"]
        self.version = f"tensorrt_llm {tensorrt_llm.__version__}"

    def _gen(self, ids, new):
        sp = self.SP(temperature=0.0, max_tokens=new, ignore_eos=True, detokenize=False)
        t0 = time.perf_counter()
        out = self.llm.generate([list(ids)], sp)
        return list(out[0].outputs[0].token_ids), time.perf_counter() - t0

    def peak_alloc(self):
        return None


def main():
    common.run_simple("tensorrt-llm", "TensorRT-LLM decode benchmark", "tensorrt_llm", TRT)


if __name__ == "__main__":
    main()
