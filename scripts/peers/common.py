"""common: what every peer runner shares — arguments, prompts, NVML power sampling (ctypes), the
measurement protocol, hashing and the one JSON line each runner prints.

Stdlib only at import time, so a runner can report "not installed" on a machine without torch.
The protocol mirrors `megaqwen bench` (tools/cmd_bench.c):
  * prompts: scripts/peers/prompts.json token ids (folded modulo vocab for tiny models); greedy;
    n decode tokens after the first token, end-of-sequence ignored; warm-up runs excluded;
  * TTFT: prompt ids in hand -> first token chosen (prefill + argmax);
  * decode tok/s: n / (time of the n tokens after the first);
  * context sweep: KV cache filled to depth d with fill(i) = (1000 + 7919 i) mod min(vocab, 100000),
    then n tokens decoded from fill(d);
  * power: idle W sampled before the model loads; avg/peak W and energy (NVML total-energy counter
    where present, else the trapezoid of the readings) over >= --power-s seconds of repeated decode;
  * fnv1a: FNV-1a 64 of the generated ids (first + n per prompt) as little-endian int32 bytes.
"""
import argparse
import ctypes
import json
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "report"))
import schema  # noqa: E402

FNV_INIT = 0xcbf29ce484222325


def fnv1a(ids, h=FNV_INIT):
    for v in ids:
        v &= 0xffffffff
        for b in range(4):
            h ^= (v >> (8 * b)) & 0xff
            h = (h * 0x100000001b3) & 0xffffffffffffffff
    return h


def fill_id(i, vocab):
    return (1000 + 7919 * i) % min(vocab, 100000)


def parse_args(desc, extra=None):
    ap = argparse.ArgumentParser(description=desc)
    ap.add_argument("-m", "--model", required=True, help="checkpoint directory (config.json, safetensors)")
    ap.add_argument("--prompts", default=os.path.join(HERE, "prompts.json"))
    ap.add_argument("-n", type=int, default=100, help="decode tokens per prompt / sweep point")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--ctx", default="16,1024,4096,32768", help="sweep depths, or 'none'")
    ap.add_argument("--power-s", type=float, default=2.0)
    ap.add_argument("--idle-s", type=float, default=1.0)
    ap.add_argument("--hz", type=float, default=20.0)
    ap.add_argument("--json", help="also write the row to this file")
    if extra:
        extra(ap)
    a = ap.parse_args()
    a.ctx_list = [] if a.ctx in ("none", "") else [int(x) for x in a.ctx.split(",")]
    return a


def load_prompts(path, vocab=None):
    with open(path) as f:
        ps = [list(p["ids"]) for p in json.load(f)["prompts"]]
    if vocab:
        ps = [[i % vocab for i in p] for p in ps]
    return ps


def emit(row, args=None):
    """Validate and print the row as the runner's one JSON line (stdout's last line)."""
    row.setdefault("schema", schema.RUN_SCHEMA)
    errs = schema.validate_run(row)
    if errs:
        row = {"schema": schema.RUN_SCHEMA, "framework": row.get("framework", "?"), "status": "error",
               "reason": "runner produced an invalid row: " + "; ".join(errs[:3])}
    line = json.dumps(row)
    if args is not None and getattr(args, "json", None):
        with open(args.json, "w") as f:
            f.write(line + "\n")
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def not_installed(framework, what, args=None):
    emit({"framework": framework, "status": "not installed", "reason": f"{what} is not installed"}, args)
    sys.exit(0)


def error(framework, reason, args=None):
    emit({"framework": framework, "status": "error", "reason": reason[:500]}, args)
    sys.exit(0)


def have_module(name):
    import importlib.util
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


T0 = time.monotonic()


def log(*a):
    print(f"[{time.monotonic() - T0:6.1f}s]", *a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- NVML (ctypes, no pynvml)
class _Mem(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


class _Proc(ctypes.Structure):  # nvmlProcessInfo_t v2/v3
    _fields_ = [("pid", ctypes.c_uint), ("used", ctypes.c_ulonglong), ("gi", ctypes.c_uint), ("ci", ctypes.c_uint)]


class Nvml:
    """NVML through ctypes; every reading returns None when unavailable (never raises)."""

    def __init__(self, index=None):
        self.ok, self.reason, self.has_energy = False, "", False
        given = os.environ.get("MQ_NVML_LIB")
        path = given or "libnvidia-ml.so.1"
        if index is None:
            index = int(os.environ.get("MQ_NVML_DEVICE", "0") or 0)
        # Containers often mount the driver's libraries outside the loader's path (as src/nvml.c).
        for p in [path] + ([] if given else ["/usr/local/nvidia/lib64/libnvidia-ml.so.1",
                                             "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1"]):
            try:
                self.lib = ctypes.CDLL(p)
                break
            except OSError:
                continue
        else:
            self.reason = f"n/a: {path} could not be loaded (no NVIDIA driver?)"
            return
        try:
            init = getattr(self.lib, "nvmlInit_v2", None) or self.lib.nvmlInit
            if init() != 0:
                self.reason = "n/a: nvmlInit failed"
                return
            get = getattr(self.lib, "nvmlDeviceGetHandleByIndex_v2", None) or self.lib.nvmlDeviceGetHandleByIndex
            self.dev = ctypes.c_void_p()
            if get(ctypes.c_uint(index), ctypes.byref(self.dev)) != 0:
                self.reason = f"n/a: no GPU {index}"
                return
            self._ready = True
        except AttributeError:
            self.reason = f"n/a: {path} lacks NVML symbols"
            return
        self.ok = self.power_w() is not None
        if not self.ok:
            self.reason = "n/a: GPU does not report power"
        self.has_energy = self.energy_j() is not None

    def _call(self, name, *args):
        f = getattr(self.lib, name, None) if getattr(self, "_ready", False) else None
        return f is not None and f(self.dev, *args) == 0

    def power_w(self):
        mw = ctypes.c_uint()
        return mw.value / 1000.0 if self._call("nvmlDeviceGetPowerUsage", ctypes.byref(mw)) else None

    def energy_j(self):
        mj = ctypes.c_ulonglong()
        ok = self._call("nvmlDeviceGetTotalEnergyConsumption", ctypes.byref(mj))
        return mj.value / 1000.0 if ok else None

    def mem_used(self):
        m = _Mem()
        return m.used if self.ok and self._call("nvmlDeviceGetMemoryInfo", ctypes.byref(m)) else None

    def proc_mem(self, pid=None):
        if not self.ok:
            return None
        pid = os.getpid() if pid is None else pid
        arr, cnt = (_Proc * 64)(), ctypes.c_uint(64)
        for name in ("nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetComputeRunningProcesses_v2"):
            if getattr(self.lib, name, None) is not None:
                if not self._call(name, ctypes.byref(cnt), arr):
                    return None
                for i in range(min(cnt.value, 64)):
                    if arr[i].pid == pid and arr[i].used != 2**64 - 1:
                        return arr[i].used
                return None
        return None

    def name(self):
        if not self.ok:
            return None
        buf = ctypes.create_string_buffer(96)
        return buf.value.decode() if self._call("nvmlDeviceGetName", buf, ctypes.c_uint(96)) else None

    def driver(self):
        if not self.ok:
            return None
        buf = ctypes.create_string_buffer(80)
        f = getattr(self.lib, "nvmlSystemGetDriverVersion", None)
        return buf.value.decode() if f is not None and f(buf, ctypes.c_uint(80)) == 0 else None


class Sampler:
    """Reads power (and this process's GPU memory) hz times a second on a thread, like src/nvml.c."""

    def __init__(self, nv, hz=20.0, power=True, mem=False):
        self.nv, self.period, self.power, self.mem = nv, 1.0 / hz, power, mem
        self.w, self.t, self.peak_proc = [], [], None
        self._stop = threading.Event()

    def _take(self):
        if self.power:
            w = self.nv.power_w()
            if w is not None:
                self.w.append(w)
                self.t.append(time.monotonic())
        if self.mem:
            p = self.nv.proc_mem()
            if p is not None and (self.peak_proc is None or p > self.peak_proc):
                self.peak_proc = p

    def _main(self):
        nxt = time.monotonic()
        self._take()
        while not self._stop.is_set():
            nxt += self.period
            self._stop.wait(max(0.0, nxt - time.monotonic()))
            if not self._stop.is_set():
                self._take()

    def __enter__(self):
        self.e0 = self.nv.energy_j() if self.power else None
        self.t0 = time.monotonic()
        self.th = threading.Thread(target=self._main, daemon=True)
        self.th.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.th.join()
        self._take()
        self.seconds = time.monotonic() - self.t0
        e1 = self.nv.energy_j() if self.power else None
        self.energy_source = "n/a"
        self.energy_j = None
        if self.e0 is not None and e1 is not None and e1 >= self.e0:
            self.energy_j, self.energy_source = e1 - self.e0, "counter"
        elif len(self.w) >= 2:
            self.energy_j = sum(0.5 * (self.w[i] + self.w[i - 1]) * (self.t[i] - self.t[i - 1])
                                for i in range(1, len(self.w)))
            self.energy_source = "samples"
        return False


def idle_power(nv, seconds, hz):
    if not nv.ok or seconds <= 0:
        return None
    with Sampler(nv, hz) as s:
        time.sleep(seconds)
    return sum(s.w) / len(s.w) if s.w else None


# ---------------------------------------------------------------- the protocol
def measure(framework, args, impl, nv, idle_w, version="", extra=None):
    """Run the protocol on impl and return the row.

    impl must provide:
      vocab                         vocabulary size
      run(ids, n) -> (tokens, ttft_s, decode_s)   greedy; tokens = first + n decoded ids
      sweep(depth, fill_ids, n) -> decode_s or None (None: this depth is not supported)
      peak_alloc() -> bytes or None  (the framework allocator's peak, e.g. torch)
    """
    prompts = load_prompts(args.prompts, impl.vocab)
    n = args.n
    memsamp = Sampler(nv, 10, power=False, mem=True)
    memsamp.__enter__()
    for _ in range(args.warmup):
        impl.run(prompts[0], n)
    log(f"{framework}: warm-up done")
    rows, h, tot_ttft, tot_dec = [], FNV_INIT, 0.0, 0.0
    for p in prompts:
        toks, ttft, dec = impl.run(p, n)
        if toks is None:  # the framework does not return ids (e.g. llama-bench)
            hx, h = None, None
        else:
            toks = [int(t) for t in toks][: n + 1]
            hx = "%016x" % fnv1a(toks)
            h = fnv1a(toks, h) if h is not None else None
        rows.append({"tokens": len(p), "ttft_s": ttft, "decode_tok_s": n / dec, "ms_per_token": 1000 * dec / n,
                     "fnv1a": hx})
        tot_ttft += ttft
        tot_dec += dec
        log(f"{framework}: prompt of {len(p)} tokens: TTFT {1000 * ttft:.2f} ms, {n / dec:.1f} tok/s")
    # Power before the sweep: the sweep may resize caches (and recompile) for deep contexts.
    power = {"status": "ok" if nv.ok else "n/a", "reason": nv.reason, "idle_w": idle_w, "avg_w": None,
             "peak_w": None, "energy_j": None, "energy_source": "n/a", "seconds": None, "tokens": 0,
             "tok_s": None, "tok_per_j": None, "samples": 0, "hz": args.hz}
    if args.power_s > 0:
        toks = 0
        with Sampler(nv, args.hz) as s:
            t0 = time.monotonic()
            while True:
                _, _, dec = impl.run(prompts[0], n)
                toks += n + 1
                if time.monotonic() - t0 >= args.power_s:
                    break
        secs = s.seconds
        power.update(seconds=secs, tokens=toks, tok_s=toks / secs, samples=len(s.w),
                     energy_source=s.energy_source)
        if s.w:
            power["peak_w"] = max(s.w)
            power["avg_w"] = sum(s.w) / len(s.w)
        if s.energy_j:
            power["energy_j"] = s.energy_j
            power["avg_w"] = s.energy_j / secs
            power["tok_per_j"] = toks / s.energy_j
    def row_now(sweep):
        """The row as measured so far; depths not yet reached say so (a time limit may stop us)."""
        done = {x["ctx"] for x in sweep}
        rest = [{"ctx": d, "status": "not reached (time limit)", "decode_tok_s": None, "ms_per_token": None}
                for d in args.ctx_list if d not in done]
        r = {"schema": schema.RUN_SCHEMA, "framework": framework, "status": "ok", "version": version,
             "model": args.model, "decode_tokens": n, "warmup": args.warmup, "prompts": rows,
             "ttft_s": tot_ttft / len(prompts), "decode_tok_s": n * len(prompts) / tot_dec,
             "ms_per_token": 1000 * tot_dec / (n * len(prompts)), "fnv1a": None if h is None else "%016x" % h,
             "ctx_sweep": sweep + rest,
             "memory": {"alloc_peak_bytes": impl.peak_alloc(), "nvml_proc_peak_bytes": memsamp.peak_proc},
             "power": power, "gpu": {"name": nv.name() or "n/a", "driver": nv.driver() or "n/a"}}
        if extra:
            r.update(extra)
        return r

    def checkpoint(sweep):
        if getattr(args, "json", None) and not schema.validate_run(row_now(sweep)):
            with open(args.json, "w") as f:
                f.write(json.dumps(row_now(sweep)) + "\n")

    sweep = []
    checkpoint(sweep)
    for d in args.ctx_list:
        log(f"{framework}: ctx {d} ...")
        try:
            dec = impl.sweep(d, [fill_id(i, impl.vocab) for i in range(d + 1)], n)
        except Exception as e:  # e.g. out of memory at a deep context
            dec, why = None, f"error: {type(e).__name__}: {str(e)[:120]}"
        else:
            why = "not supported"
        if dec:
            sweep.append({"ctx": d, "status": "ok", "decode_tok_s": n / dec, "ms_per_token": 1000 * dec / n})
            log(f"{framework}: ctx {d}: {n / dec:.1f} tok/s")
        else:
            sweep.append({"ctx": d, "status": why, "decode_tok_s": None, "ms_per_token": None})
        checkpoint(sweep)
    memsamp.__exit__(None, None, None)
    return row_now(sweep)


class TwoCallTiming:
    """run() and sweep() for an engine that can only time whole generate calls: self._gen(ids, new)
    returns (token ids, seconds). TTFT is a 1-token call; decode time is an (n + 1)-token call
    minus it (vLLM's and TensorRT-LLM's offline LLM APIs)."""

    def run(self, ids, n):
        _, ttft = self._gen(ids, 1)
        toks, total = self._gen(ids, n + 1)
        return toks, ttft, max(total - ttft, 1e-9)

    def sweep(self, depth, fill, n):
        _, ttft = self._gen(fill[:depth], 1)
        _, total = self._gen(fill[:depth], n + 1)
        return max(total - ttft, 1e-9)


def max_len(args):
    """KV/sequence capacity a runner must allocate: the deepest sweep point plus the decode."""
    return max([256] + [d + args.n + 2 for d in args.ctx_list])


def measure_and_emit(framework, args, make, after=None):
    """The end of every runner's main(): idle power, then impl = make() measured (after(row, impl, nv)
    may add to the row); any exception becomes the runner's error row (error() exits, past the
    finally); impl.close(), where it has one, runs either way. Prints / writes the row."""
    nv = Nvml()
    idle = idle_power(nv, args.idle_s, args.hz)
    impl = None
    try:
        impl = make()
        row = measure(framework, args, impl, nv, idle, impl.version)
        if after:
            after(row, impl, nv)
    except Exception as e:  # any framework failure becomes this runner's error row
        error(framework, f"{type(e).__name__}: {e}", args)
    finally:
        if impl is not None and hasattr(impl, "close"):
            impl.close()
    emit(row, args)


def run_simple(framework, desc, module, factory):
    """main() of a runner whose only requirement is one importable module: parse the shared
    arguments, report "not installed" without it, else measure factory(model_dir, max_len)."""
    args = parse_args(desc)
    if not have_module(module):
        not_installed(framework, module, args)
    measure_and_emit(framework, args, lambda: factory(args.model, max_len(args)))
