"""sglang_runner: SGLang as users run it — a server process (sglang.launch_server, radix cache off,
tokenizer skipped so prompts go in as ids) and streamed /generate requests; TTFT is the first
streamed chunk. Reports "not installed" where sglang is absent."""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


class SGLang:
    def __init__(self, model_dir, max_len, port=30517):
        import sglang
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sglang.launch_server", "--model-path", model_dir, "--port", str(port),
             "--dtype", "bfloat16", "--disable-radix-cache", "--skip-tokenizer-init",
             "--context-length", str(max_len), "--mem-fraction-static", "0.6"],
            stdout=sys.stderr, stderr=sys.stderr, start_new_session=True)
        t0 = time.time()
        while True:
            try:
                urllib.request.urlopen(self.url + "/health", timeout=2).read()
                break
            except Exception:
                if self.proc.poll() is not None or time.time() - t0 > 300:
                    raise RuntimeError("sglang server did not come up")
                time.sleep(1)
        self.vocab = json.load(open(os.path.join(model_dir, "config.json")))["vocab_size"]
        self.version = f"sglang {sglang.__version__} (server)"
        self.server_pid = self.proc.pid

    def close(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=60)

    def _gen(self, ids, new):
        body = json.dumps({"input_ids": list(ids), "stream": True, "sampling_params": {
            "temperature": 0, "max_new_tokens": new, "ignore_eos": True}}).encode()
        req = urllib.request.Request(self.url + "/generate", body, {"Content-Type": "application/json"})
        t0 = time.perf_counter()
        first, toks = None, []
        with urllib.request.urlopen(req, timeout=600) as r:
            for line in r:
                line = line.decode().strip()
                if not line.startswith("data:") or line == "data: [DONE]":
                    continue
                if first is None:
                    first = time.perf_counter() - t0
                ids_now = json.loads(line[5:]).get("output_ids") or []
                # Chunks carry either all ids so far or only the new ones.
                toks = ids_now if ids_now[:len(toks)] == toks and len(ids_now) >= len(toks) else toks + ids_now
        return toks, first or 0.0, time.perf_counter() - t0

    def run(self, ids, n):
        toks, ttft, total = self._gen(ids, n + 1)
        return toks, ttft, max(total - ttft, 1e-9)

    def sweep(self, depth, fill, n):
        _, ttft, total = self._gen(fill[:depth], n + 1)
        return max(total - ttft, 1e-9)

    def peak_alloc(self):
        return None


def main():
    fw = "sglang"
    args = common.parse_args("SGLang (server) decode benchmark")
    if not common.have_module("sglang"):
        common.not_installed(fw, "sglang", args)

    def proc_peak(row, impl, nv):
        row["memory"]["nvml_proc_peak_bytes"] = nv.proc_mem(impl.server_pid)

    common.measure_and_emit(fw, args, lambda: SGLang(args.model, common.max_len(args)), proc_peak)


if __name__ == "__main__":
    main()
