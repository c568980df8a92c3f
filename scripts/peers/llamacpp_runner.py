"""llamacpp_runner: llama.cpp — converts the checkpoint with its own convert_hf_to_gguf.py (bf16),
then times prompt processing and generation with llama-bench (-ngl 99; sweep with -d DEPTH).
llama-bench returns no token ids, so the output hash is null. Finds the tools through
$LLAMA_CPP_DIR or PATH; reports "not installed" when they are absent."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def find_tools():
    d = os.environ.get("LLAMA_CPP_DIR", "")
    bench = shutil.which("llama-bench") or next(
        (p for p in (os.path.join(d, "build/bin/llama-bench"), os.path.join(d, "llama-bench"))
         if d and os.access(p, os.X_OK)), None)
    conv = next((p for p in (os.path.join(d, "convert_hf_to_gguf.py"),) if d and os.path.exists(p)),
                shutil.which("convert_hf_to_gguf.py"))
    return bench, conv


class LlamaCpp:
    def __init__(self, model_dir, bench, conv):
        self.bench = bench
        self.tmp = tempfile.mkdtemp(prefix="mq-gguf-")
        self.gguf = os.path.join(self.tmp, "model-bf16.gguf")
        subprocess.run([sys.executable, conv, model_dir, "--outtype", "bf16", "--outfile", self.gguf],
                       check=True, stdout=sys.stderr, stderr=sys.stderr)
        self.vocab = json.load(open(os.path.join(model_dir, "config.json")))["vocab_size"]
        v = subprocess.run([bench, "--version"], capture_output=True, text=True)
        self.version = "llama.cpp " + ((v.stdout or v.stderr).strip().splitlines() or ["?"])[0]

    def _bench(self, p, n, depth=0):
        cmd = [self.bench, "-m", self.gguf, "-p", str(p), "-n", str(n), "-ngl", "99", "-r", "1", "-o", "json"]
        if depth:
            cmd += ["-d", str(depth)]
        r = subprocess.run(cmd, capture_output=True, text=True, check=True)
        res = json.loads(r.stdout)
        pp = [x["avg_ts"] for x in res if x.get("n_prompt", 0) > 0 and x.get("n_gen", 0) == 0]
        tg = [x["avg_ts"] for x in res if x.get("n_gen", 0) > 0 and x.get("n_prompt", 0) == 0]
        return (pp[0] if pp else None), (tg[0] if tg else None)

    def run(self, ids, n):
        pp, tg = self._bench(len(ids), n)
        return None, len(ids) / pp, n / tg

    def sweep(self, depth, fill, n):
        try:
            _, tg = self._bench(0, n, depth)
        except subprocess.CalledProcessError:  # an older llama-bench without -d
            return None
        return n / tg if tg else None

    def peak_alloc(self):
        return None

    def close(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


def main():
    fw = "llama.cpp"
    args = common.parse_args("llama.cpp (GGUF bf16, llama-bench) decode benchmark")
    bench, conv = find_tools()
    if not bench or not conv:
        common.not_installed(fw, "llama.cpp (llama-bench and convert_hf_to_gguf.py; set LLAMA_CPP_DIR)", args)
    common.measure_and_emit(fw, args, lambda: LlamaCpp(args.model, bench, conv))


if __name__ == "__main__":
    main()
