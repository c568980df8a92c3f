"""vllm_runner: vLLM offline engine (LLM.generate with token-id prompts), greedy, ignore_eos,
prefix caching off so every prefill is real. Reports "not installed" where vllm is absent."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


class VLLM(common.TwoCallTiming):
    def __init__(self, model_dir, max_len):
        import vllm
        from vllm import LLM, SamplingParams
        self.SP = SamplingParams
        self.llm = LLM(model=model_dir, dtype="bfloat16", max_model_len=max_len, enable_prefix_caching=False,
                       gpu_memory_utilization=0.6, skip_tokenizer_init=True)
        self.vocab = self.llm.llm_engine.model_config.get_vocab_size()
        self.version = f"vllm {vllm.__version__}"

    def _gen(self, ids, new):
        sp = self.SP(temperature=0.0, max_tokens=new, ignore_eos=True, detokenize=False)
        t0 = time.perf_counter()
        out = self.llm.generate([{"prompt_token_ids": list(ids)}], sp, use_tqdm=False)
        return list(out[0].outputs[0].token_ids), time.perf_counter() - t0

    def peak_alloc(self):
        return None  # vLLM reserves gpu_memory_utilization of the card up front


def main():
    common.run_simple("vllm", "vLLM decode benchmark", "vllm", VLLM)


if __name__ == "__main__":
    main()
