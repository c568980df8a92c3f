"""schema: the JSON shapes every benchmark runner emits and the report reads (stdlib only).

A *run* row (schema "megaqwen-bench/1") is one framework's result: `megaqwen bench --json` writes
one, and every runner in scripts/peers/ prints one as its last stdout line. A *quality* document
(schema "megaqwen-quality/1") comes from scripts/peers/quality.py. The report (schema
"megaqwen-report/1") gathers them with the machine's facts.
"""

RUN_SCHEMA = "megaqwen-bench/1"
QUALITY_SCHEMA = "megaqwen-quality/1"
REPORT_SCHEMA = "megaqwen-report/1"
STATUSES = ("ok", "not installed", "error", "timeout", "skipped")

NUM = (int, float)


def _num_or_none(v):
    return v is None or (isinstance(v, NUM) and not isinstance(v, bool))


def _check_fields(obj, spec, where, errs):
    """spec: {key: (required, checker)}; checker returns True when the value is acceptable."""
    if not isinstance(obj, dict):
        errs.append(f"{where}: not an object")
        return
    for k, (req, ok) in spec.items():
        if k not in obj:
            if req:
                errs.append(f"{where}: missing '{k}'")
            continue
        if not ok(obj[k]):
            errs.append(f"{where}: bad value for '{k}': {obj[k]!r}")


def _pos(v):
    return isinstance(v, NUM) and not isinstance(v, bool) and v > 0


def _nonneg(v):
    return isinstance(v, NUM) and not isinstance(v, bool) and v >= 0


def _hex16(v):
    return isinstance(v, str) and len(v) == 16 and all(c in "0123456789abcdef" for c in v)


PROMPT_SPEC = {
    "tokens": (True, lambda v: isinstance(v, int) and v > 0),
    "ttft_s": (True, _nonneg),
    "decode_tok_s": (True, _pos),
    "ms_per_token": (True, _pos),
    "fnv1a": (True, lambda v: v is None or _hex16(v)),
}
SWEEP_SPEC = {
    "ctx": (True, lambda v: isinstance(v, int) and v > 0),
    "status": (True, lambda v: isinstance(v, str)),
    "decode_tok_s": (True, _num_or_none),
    "ms_per_token": (True, _num_or_none),
    "fnv1a": (False, lambda v: v is None or _hex16(v)),  # the decoded ids at that depth (megaqwen)
}
POWER_SPEC = {
    "status": (True, lambda v: v in ("ok", "n/a")),
    "idle_w": (True, _num_or_none),
    "avg_w": (True, _num_or_none),
    "peak_w": (True, _num_or_none),
    "energy_j": (True, _num_or_none),
    "tok_s": (True, _num_or_none),
    "tok_per_j": (True, _num_or_none),
}
OK_SPEC = {
    "decode_tokens": (True, lambda v: isinstance(v, int) and v > 0),
    "decode_mode": (False, lambda v: v in ("greedy", "sampled")),
    "sampling": (False, lambda v: isinstance(v, dict) and all(isinstance(v.get(k), (int, float)) for k in
                 ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "repeat_last_n", "seed"))),
    "prompts": (True, lambda v: isinstance(v, list) and len(v) > 0),
    "ttft_s": (True, _nonneg),
    "decode_tok_s": (True, _pos),
    "ms_per_token": (True, _pos),
    "fnv1a": (True, lambda v: v is None or _hex16(v)),  # None: the framework gives no ids
    "ctx_sweep": (True, lambda v: isinstance(v, list)),
    "memory": (True, lambda v: isinstance(v, dict)),
    "power": (True, lambda v: isinstance(v, dict)),
}


def validate_run(row):
    """Problems with one run row, as a list of strings (empty = valid)."""
    errs = []
    _check_fields(row, {
        "schema": (True, lambda v: v == RUN_SCHEMA),
        "framework": (True, lambda v: isinstance(v, str) and v != ""),
        "status": (True, lambda v: v in STATUSES),
        "reason": (False, lambda v: isinstance(v, str)),
        "version": (False, lambda v: isinstance(v, str)),
        "notes": (False, lambda v: isinstance(v, str)),
    }, "run", errs)
    if errs or row.get("status") != "ok":
        if not errs and row.get("status") != "ok" and not row.get("reason"):
            errs.append(f"run {row.get('framework')}: status '{row.get('status')}' needs a reason")
        return errs
    where = f"run {row['framework']}"
    _check_fields(row, OK_SPEC, where, errs)
    if errs:
        return errs
    for i, p in enumerate(row["prompts"]):
        _check_fields(p, PROMPT_SPEC, f"{where} prompts[{i}]", errs)
    for i, s in enumerate(row["ctx_sweep"]):
        _check_fields(s, SWEEP_SPEC, f"{where} ctx_sweep[{i}]", errs)
        if not errs and s["status"] == "ok" and not _pos(s["decode_tok_s"]):
            errs.append(f"{where} ctx_sweep[{i}]: status ok without decode_tok_s")
    _check_fields(row["power"], POWER_SPEC, f"{where} power", errs)
    return errs


QROW_SPEC = {
    "framework": (True, lambda v: isinstance(v, str) and v != ""),
    "status": (True, lambda v: isinstance(v, str)),
    "kl_mean": (True, _num_or_none),
    "kl_max": (True, _num_or_none),
    "ppl": (True, _num_or_none),
    "argmax_match": (True, lambda v: v is None or (_nonneg(v) and v <= 1)),
}


def validate_quality(doc):
    errs = []
    _check_fields(doc, {
        "schema": (True, lambda v: v == QUALITY_SCHEMA),
        "status": (True, lambda v: v in STATUSES),
        "rows": (True, lambda v: isinstance(v, list)),
    }, "quality", errs)
    if errs:
        return errs
    for i, r in enumerate(doc["rows"]):
        _check_fields(r, QROW_SPEC, f"quality rows[{i}]", errs)
    return errs


def validate_report(doc):
    errs = []
    _check_fields(doc, {
        "schema": (True, lambda v: v == REPORT_SCHEMA),
        "meta": (True, lambda v: isinstance(v, dict)),
        "runs": (True, lambda v: isinstance(v, list) and len(v) > 0),
        "quality": (False, lambda v: v is None or isinstance(v, dict)),
    }, "report", errs)
    if errs:
        return errs
    for r in doc["runs"]:
        errs += validate_run(r)
    if doc.get("quality"):
        errs += validate_quality(doc["quality"])
    return errs


if __name__ == "__main__":
    import json
    import sys
    bad = 0
    for path in sys.argv[1:]:
        with open(path) as f:
            text = f.read()
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:  # a file of JSON lines
            doc = [json.loads(l) for l in text.splitlines() if l.strip()]
        docs = doc if isinstance(doc, list) else [doc]
        for d in docs:
            s = d.get("schema") if isinstance(d, dict) else None
            e = (validate_report(d) if s == REPORT_SCHEMA else validate_quality(d)
                 if s == QUALITY_SCHEMA else validate_run(d))
            for m in e:
                print(f"{path}: {m}")
            bad += len(e)
    sys.exit(1 if bad else 0)
