"""make_report: gather the benchmark runners' JSON rows into results.json, REPORT.md and PNG charts.

  make_report.py --runs DIR [--quality FILE] [--meta FILE] --out DIR [--plotter auto|matplotlib|gnuplot|none]
  make_report.py --results results.json --out DIR      (re-render an existing results.json)

--runs DIR holds one file per runner (*.json or *.jsonl; the last JSON line of each counts).
Stdlib only; charts through matplotlib when importable, else Debian's gnuplot (gnuplot-nox).
"""
import argparse
import glob
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import schema  # noqa: E402

BASE = "hf-eager"  # the seed page's baseline
CHARTS = ("decode_tok_s.png", "tok_per_j.png", "ctx_sweep.png")


def last_json_line(path):
    with open(path) as f:
        text = f.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise ValueError(f"{path}: no JSON object found")


def order_key(r):
    fw = r["framework"]
    first = ["hf-eager", "hf-static-cudagraph", "gpt-fast-style", "megaqwen-cuda", "megaqwen-cpu"]
    return (r["status"] != "ok", first.index(fw) if fw in first else len(first), fw)


def collect(runs_dir, quality_path, meta_path, lenient=False):
    """Gather the rows. lenient: a row that fails the schema becomes an error row (the device run
    must always end with a report); otherwise validation fails the whole report."""
    runs = []
    for p in sorted(glob.glob(os.path.join(runs_dir, "*.json")) + glob.glob(os.path.join(runs_dir, "*.jsonl"))):
        try:
            row = last_json_line(p)
        except (ValueError, OSError) as e:
            if not lenient:
                raise SystemExit(f"make_report: {e}")
            row = {"schema": schema.RUN_SCHEMA, "framework": os.path.basename(p).rsplit(".", 1)[0],
                   "status": "error", "reason": str(e)}
        if not (isinstance(row, dict) and row.get("schema") == schema.RUN_SCHEMA):
            continue
        errs = schema.validate_run(row)
        if errs and lenient:
            print("make_report: " + "; ".join(errs), file=sys.stderr)
            row = {"schema": schema.RUN_SCHEMA, "framework": str(row.get("framework", p)), "status": "error",
                   "reason": "invalid row: " + "; ".join(errs[:2])}
        runs.append(row)
    runs.sort(key=order_key)
    meta = json.load(open(meta_path)) if meta_path and os.path.exists(meta_path) else {}
    quality = None
    if quality_path and os.path.exists(quality_path):
        try:
            quality = last_json_line(quality_path)
        except ValueError as e:
            if not lenient:
                raise SystemExit(f"make_report: {e}")
        if quality is not None and lenient and schema.validate_quality(quality):
            quality = {"schema": schema.QUALITY_SCHEMA, "status": "error", "rows": [],
                       "reason": "; ".join(schema.validate_quality(quality)[:2])}
    return {"schema": schema.REPORT_SCHEMA, "meta": meta, "runs": runs, "quality": quality}


# ---------------------------------------------------------------- numbers
def model_bytes(doc):
    """(weight bytes, kv bytes per position, bandwidth GB/s, bandwidth source) from megaqwen's row."""
    for r in doc["runs"]:
        c = r.get("config")
        if r["status"] == "ok" and c and c.get("weight_bytes"):
            kvpos = 2 * c["n_layers"] * c["n_kv_heads"] * c["head_dim"] * 2  # K+V, bf16 (achieved() rescales)
            bw = r.get("bandwidth", {})
            return c["weight_bytes"], kvpos, bw.get("gb_s", 3000.0), bw.get("source", "assumed")
    return None, None, 3000.0, "assumed"


def achieved(doc, r):
    """Mean GB/s over the prompts (weights + KV at the mean decode depth), or None."""
    wb, kvpos, _, _ = model_bytes(doc)
    if wb is None or r["status"] != "ok":
        return None
    # the KV cache at its real element size: megaqwen's rows say it (f32 by default); the other
    # frameworks keep a bf16 cache for a bf16 model
    kvpos = kvpos * (r.get("config") or {}).get("kv_elt_bytes", 2) / 2
    n = r["decode_tokens"]
    tot_b = tot_t = 0.0
    for p in r["prompts"]:
        t = n * p["ms_per_token"] / 1000
        tot_b += n * (wb + kvpos * (p["tokens"] + n / 2))
        tot_t += t
    return tot_b / tot_t / 1e9


def f(v, fmt="%.1f", na="n/a"):
    return na if v is None else fmt % v


def peak_mem(r):
    m = r.get("memory", {})
    if m.get("nvml_proc_peak_bytes"):
        return "%.2f GB (NVML)" % (m["nvml_proc_peak_bytes"] / 1e9)
    if m.get("alloc_peak_bytes"):
        return "%.2f GB (allocator)" % (m["alloc_peak_bytes"] / 1e9)
    if m.get("weights_kv_bytes"):
        return "%.2f GB (weights+KV)" % (m["weights_kv_bytes"] / 1e9)
    return "n/a"


def base_row(doc):
    return next((r for r in doc["runs"] if r["framework"] == BASE and r["status"] == "ok"), None)


# ---------------------------------------------------------------- markdown
def summary(doc):
    """Findings computed from the numbers (never written by hand): megaqwen against HF and the
    fastest other framework that ran."""
    ok = [r for r in doc["runs"] if r["status"] == "ok"]
    mq = [r for r in ok if r["framework"].startswith("megaqwen")]
    base = base_row(doc)
    if not mq:
        return []
    L = ["## Summary", ""]
    for r in mq:
        fw = r["framework"]
        others = [o for o in ok if not o["framework"].startswith("megaqwen")]
        if base:
            L.append(f"- {fw} decodes {r['decode_tok_s'] / base['decode_tok_s']:.2f}x as fast as {BASE} "
                     f"({r['decode_tok_s']:.1f} vs {base['decode_tok_s']:.1f} tok/s); TTFT "
                     f"{1000 * r['ttft_s']:.2f} ms vs {1000 * base['ttft_s']:.2f} ms.")
        best = max(others, key=lambda o: o["decode_tok_s"], default=None)
        if best is not None and best is not base:
            L.append(f"- Fastest other framework: {best['framework']} at {best['decode_tok_s']:.1f} tok/s; "
                     f"{fw} is {r['decode_tok_s'] / best['decode_tok_s']:.2f}x that.")
        pj, bj = r["power"].get("tok_per_j"), base["power"].get("tok_per_j") if base else None
        if pj and bj:
            L.append(f"- Energy: {pj:.2f} tok/J vs {bj:.2f} for {BASE} ({pj / bj:.2f}x).")
        if base and r.get("fnv1a") and base.get("fnv1a"):
            L.append(f"- Generated ids {'identical to' if r['fnv1a'] == base['fnv1a'] else 'differ from'} "
                     f"{BASE}'s (bf16 rounding can flip near-tied greedy choices).")
        q = doc.get("quality") or {}
        qr = {x["framework"]: x for x in q.get("rows", []) if x.get("status") == "ok"}
        if fw in qr and "hf-eager (bf16)" in qr:
            a, b = qr[fw], qr["hf-eager (bf16)"]
            L.append(f"- Against HF fp32: KL {a['kl_mean']:.3g} (HF bf16: {b['kl_mean']:.3g}), argmax match "
                     f"{100 * a['argmax_match']:.1f}% (HF bf16: {100 * b['argmax_match']:.1f}%).")
    L.append("")
    return L



def render_md(doc, charts):
    m, ok = doc["meta"], [r for r in doc["runs"] if r["status"] == "ok"]
    base = base_row(doc)
    wb, kvpos, bw, bw_src = model_bytes(doc)
    L = ["# Framework benchmark — %s" % m.get("model_name", m.get("model", "Qwen3")), ""]
    L += ["## Hardware and software", ""]
    for k, label in (("gpu", "GPU"), ("driver", "Driver"), ("cuda", "CUDA"), ("cpu", "CPU"), ("torch", "PyTorch"),
                     ("transformers", "transformers"), ("git", "megaqwen commit"), ("date", "Date (UTC)")):
        if m.get(k):
            L.append(f"- {label}: {m[k]}")
    if m.get("checkpoint_note"):
        L.append(f"- Checkpoint: {m['checkpoint_note']}")
    if m.get("command"):
        L.append(f"- Command: `{m['command'].strip()}`")
    if m.get("run_note"):
        L.append(f"- Note: {m['run_note']}")
    L.append("")
    if ok:
        r0 = ok[0]
        L += ["## Configuration", "",
              f"- Prompts: {len(r0['prompts'])} fixed prompts given as token ids (scripts/peers/prompts.json)",
              f"- Decode tokens per prompt: {r0['decode_tokens']}, greedy, end-of-sequence ignored, "
              f"warm-up excluded; each framework in its own process",
              f"- Bandwidth floor: {bw:.0f} GB/s ({bw_src}); bytes per step = weights "
              f"({f(wb and wb / 1e6, '%.0f')} MB) + KV read at the mean depth", ""]

    L += summary(doc)
    L += ["## Throughput", "",
          "| Framework | TTFT (ms) | Decode tok/s | ms/token | GB/s | % of floor | Peak memory | Speed-up vs HF | Output vs HF |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in ok:
        g = achieved(doc, r)
        sp = f(r["decode_tok_s"] / base["decode_tok_s"], "%.2fx") if base else "n/a"
        same = "n/a" if not base or not r.get("fnv1a") or not base.get("fnv1a") else \
            ("ref" if r is base else "same ids" if r["fnv1a"] == base["fnv1a"] else "differs")
        L.append(f"| {r['framework']} | {f(1000 * r['ttft_s'], '%.2f')} | {r['decode_tok_s']:.1f} | "
                 f"{r['ms_per_token']:.3f} | {f(g)} | {f(g and 100 * g / bw)} | {peak_mem(r)} | {sp} | {same} |")
    for r in doc["runs"]:
        if r["status"] != "ok":
            L.append(f"| {r['framework']} | - | - | - | - | - | - | - | {r['status']} |")
    L.append("")
    if "decode_tok_s.png" in charts:
        L += ["![decode tok/s](decode_tok_s.png)", ""]

    L += ["## Power and energy efficiency", "",
          "Idle: before the model loads. Over at least the power phase's seconds of repeated decode: peak is the "
          "largest NVML power reading (the driver smooths these), avg is energy / time with energy from the GPU's "
          "total-energy counter where it has one — so avg can exceed the peak reading.", "",
          "| Framework | Idle (W) | Avg (W) | Peak (W) | tok/s | tok/J | Efficiency vs HF | Energy source |",
          "|---|---|---|---|---|---|---|---|"]
    bp = base["power"].get("tok_per_j") if base else None
    for r in ok:
        p = r["power"]
        eff = f(p["tok_per_j"] / bp, "%.2fx") if bp and p.get("tok_per_j") else "n/a"
        L.append(f"| {r['framework']} | {f(p['idle_w'])} | {f(p['avg_w'])} | {f(p['peak_w'])} | {f(p['tok_s'])} | "
                 f"{f(p['tok_per_j'], '%.2f')} | {eff} | {p.get('energy_source', 'n/a')} |")
    L.append("")
    if "tok_per_j.png" in charts:
        L += ["![tok/J](tok_per_j.png)", ""]

    ctxs = sorted({s["ctx"] for r in ok for s in r["ctx_sweep"]})
    if ctxs:
        L += ["## Decode speed versus context length (tok/s)", "",
              "| Context | " + " | ".join(r["framework"] for r in ok) + " |",
              "|---|" + "---|" * len(ok)]
        for c in ctxs:
            cells = []
            for r in ok:
                s = next((s for s in r["ctx_sweep"] if s["ctx"] == c), None)
                cells.append("-" if s is None else f(s["decode_tok_s"]) if s["status"] == "ok" else "n/a")
            L.append(f"| {c} | " + " | ".join(cells) + " |")
        L.append("")
        if "ctx_sweep.png" in charts:
            L += ["![tok/s vs context](ctx_sweep.png)", ""]

    q = doc.get("quality")
    L += ["## Quality", ""]
    if q and q.get("status") == "ok":
        L += [f"Teacher-forced over {q.get('tokens')} tokens of `{q.get('text', 'tests/data/ppl.txt')}`; KL(HF fp32 ‖ "
              "framework) per token; argmax match against HF fp32.", "",
              "| Framework | KL mean | KL max | Perplexity | Argmax match |", "|---|---|---|---|---|"]
        for r in q["rows"]:
            if r["status"] == "ok":
                L.append(f"| {r['framework']} | {r['kl_mean']:.3g} | {r['kl_max']:.3g} | {r['ppl']:.6g} | "
                         f"{100 * r['argmax_match']:.1f}% |")
            else:
                L.append(f"| {r['framework']} | n/a | n/a | n/a | {r['status']} |")
        for be, v in (q.get("megaqwen_perplexity_cmd") or {}).items():
            if "perplexity" in v:
                L.append("")
                L.append(f"`megaqwen perplexity --backend {be}` (sliding windows, ctx {v.get('ctx')}): "
                         f"{v['perplexity']:.6g} ± {v.get('stderr', 0):.3g} over {v.get('tokens')} tokens")
        if q.get("note"):
            L += ["", q["note"] + "."]
        if "synthetic" in m.get("checkpoint_note", ""):
            L += ["", "The checkpoint has random weights, so its perplexity on real text is astronomically high by "
                      "construction; KL and argmax agreement with HF fp32 are the meaningful numbers here."]
    else:
        L.append("Not measured" + (f": {q.get('reason')}" if q and q.get("reason") else "") + ".")
    L.append("")

    noted = [r for r in doc["runs"] if r.get("notes")]
    if noted:
        L += ["## Notes", ""] + [f"- {r['framework']}: {r['notes']}" for r in noted] + [""]
    missing = [r for r in doc["runs"] if r["status"] != "ok"]
    if missing:
        L += ["## Not run", "", "| Framework | Status | Why |", "|---|---|---|"]
        for r in missing:
            L.append(f"| {r['framework']} | {r['status']} | {r.get('reason', '')} |")
        L.append("")
    if m.get("reproduce"):
        L += ["## Reproduce", "", "```", m["reproduce"], "```", ""]
    return "\n".join(L)


# ---------------------------------------------------------------- charts
def chart_data(doc):
    ok = [r for r in doc["runs"] if r["status"] == "ok"]
    tps = [(r["framework"], r["decode_tok_s"]) for r in ok]
    tpj = [(r["framework"], r["power"]["tok_per_j"]) for r in ok if r["power"].get("tok_per_j")]
    sweep = [(r["framework"], [(s["ctx"], s["decode_tok_s"]) for s in r["ctx_sweep"] if s["status"] == "ok"])
             for r in ok]
    return tps, tpj, [(fw, pts) for fw, pts in sweep if pts]


def plot_matplotlib(doc, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tps, tpj, sweep = chart_data(doc)
    made = []
    for name, data, ylabel in (("decode_tok_s.png", tps, "decode tok/s"), ("tok_per_j.png", tpj, "tok/J")):
        if not data:
            continue
        fig, ax = plt.subplots(figsize=(8, 4.5))
        ax.bar([d[0] for d in data], [d[1] for d in data], color="#4878a8")
        for i, d in enumerate(data):
            ax.text(i, d[1], f"{d[1]:.1f}" if d[1] >= 10 else f"{d[1]:.2f}", ha="center", va="bottom")
        ax.set_ylabel(ylabel)
        ax.set_title(ylabel + " per framework")
        plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
        fig.tight_layout()
        fig.savefig(os.path.join(out, name), dpi=110)
        plt.close(fig)
        made.append(name)
    if sweep:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for fw, pts in sweep:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=fw)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context length (tokens in the KV cache)")
        ax.set_ylabel("decode tok/s")
        ax.set_title("decode speed versus context length")
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(out, "ctx_sweep.png"), dpi=110)
        plt.close(fig)
        made.append("ctx_sweep.png")
    return made


def _gq(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def plot_gnuplot(doc, out):
    tps, tpj, sweep = chart_data(doc)
    made, tmp = [], os.path.join(out, ".gnuplot")
    os.makedirs(tmp, exist_ok=True)
    term = "set terminal pngcairo size 880,500 font 'sans,10'\n"
    for name, data, ylabel in (("decode_tok_s.png", tps, "decode tok/s"), ("tok_per_j.png", tpj, "tok/J")):
        if not data:
            continue
        dat = os.path.join(tmp, name + ".dat")
        with open(dat, "w") as fh:
            for i, (fw, v) in enumerate(data):
                fh.write(f"{i} {v} {_gq(fw)}\n")
        script = (term + f"set output {_gq(os.path.join(out, name))}\n"
                  f"set title {_gq(ylabel + ' per framework')}\nset ylabel {_gq(ylabel)}\n"
                  "set style fill solid 0.8\nset boxwidth 0.6\nset yrange [0:*]\nset xtics rotate by -20\n"
                  "unset key\nset grid ytics\n"
                  f"plot {_gq(dat)} using 1:2:xtic(3) with boxes lc rgb '#4878a8', "
                  f"'' using 1:2:(sprintf('%.1f',$2)) with labels offset 0,0.8\n")
        if _run_gnuplot(script):
            made.append(name)
    if sweep:
        parts, dats = [], []
        for i, (fw, pts) in enumerate(sweep):
            dat = os.path.join(tmp, f"sweep{i}.dat")
            with open(dat, "w") as fh:
                fh.writelines(f"{c} {v}\n" for c, v in pts)
            parts.append(f"{_gq(dat)} using 1:2 with linespoints lw 2 title {_gq(fw)}")
            dats.append(dat)
        script = (term + f"set output {_gq(os.path.join(out, 'ctx_sweep.png'))}\n"
                  "set title 'decode speed versus context length'\nset logscale x 2\n"
                  "set xlabel 'context length (tokens in the KV cache)'\nset ylabel 'decode tok/s'\n"
                  "set yrange [0:*]\nset grid\nset key outside right\n"
                  "plot " + ", ".join(parts) + "\n")
        if _run_gnuplot(script):
            made.append("ctx_sweep.png")
    shutil.rmtree(tmp, ignore_errors=True)
    return made


def _run_gnuplot(script):
    r = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True)
    if r.returncode:
        print("make_report: gnuplot: " + r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed",
              file=sys.stderr)
    return r.returncode == 0


def plot(doc, out, plotter):
    if plotter in ("auto", "matplotlib"):
        try:
            import matplotlib  # noqa: F401
            return plot_matplotlib(doc, out), "matplotlib"
        except ImportError:
            if plotter == "matplotlib":
                raise SystemExit("make_report: matplotlib is not installed")
    if plotter in ("auto", "gnuplot"):
        if shutil.which("gnuplot"):
            return plot_gnuplot(doc, out), "gnuplot"
        if plotter == "gnuplot":
            raise SystemExit("make_report: gnuplot is not installed (scripts/deps.sh installs gnuplot-nox)")
    print("make_report: no plotter (matplotlib or gnuplot): no charts", file=sys.stderr)
    return [], "none"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs")
    ap.add_argument("--quality")
    ap.add_argument("--meta")
    ap.add_argument("--results")
    ap.add_argument("--out", required=True)
    ap.add_argument("--plotter", default="auto", choices=("auto", "matplotlib", "gnuplot", "none"))
    ap.add_argument("--lenient", action="store_true", help="turn invalid rows into error rows instead of failing")
    a = ap.parse_args()
    if bool(a.runs) == bool(a.results):
        ap.error("give exactly one of --runs DIR or --results FILE")
    doc = json.load(open(a.results)) if a.results else collect(a.runs, a.quality, a.meta, a.lenient)
    errs = schema.validate_report(doc)
    if errs:
        for e in errs:
            print("make_report: " + e, file=sys.stderr)
        sys.exit(1)
    os.makedirs(a.out, exist_ok=True)
    charts, used = plot(doc, a.out, a.plotter) if a.plotter != "none" else ([], "none")
    doc["meta"]["charts"] = {"plotter": used, "files": charts}
    with open(os.path.join(a.out, "results.json"), "w") as fh:
        json.dump(doc, fh, indent=1)
        fh.write("\n")
    with open(os.path.join(a.out, "REPORT.md"), "w") as fh:
        fh.write(render_md(doc, charts))
    print(f"make_report: wrote {a.out}/REPORT.md, results.json and {len(charts)} chart(s) ({used})")


if __name__ == "__main__":
    main()
