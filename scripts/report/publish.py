"""publish: copy a report folder into docs/report/ and splice its summary and main tables into
Markdown files between <!-- bench-report:begin --> and <!-- bench-report:end --> markers.

  publish.py REPORT_DIR [--docs-dir docs/report] FILE.md [FILE.md ...]
"""
import argparse
import os
import re
import shutil
import sys

BEGIN, END = "<!-- bench-report:begin -->", "<!-- bench-report:end -->"
KEEP = ("## Summary", "## Throughput", "## Power and energy efficiency")


def sections(md):
    """The report's sections named in KEEP, chart lines dropped, in order."""
    out, cur = [], None
    for line in md.splitlines():
        if line.startswith("## "):
            cur = line if line in KEEP else None
            if cur:
                out.append("#" + line)  # one level down inside the host document
            continue
        if cur and not line.startswith("!["):
            out.append(line)
    return "\n".join(out).strip()


def splice(path, block):
    text = open(path, encoding="utf-8").read()
    pat = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pat.search(text):
        raise SystemExit(f"publish: {path}: no {BEGIN} ... {END} markers")
    text = pat.sub(lambda _: f"{BEGIN}\n{block}\n{END}", text)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report_dir")
    ap.add_argument("--docs-dir", default="docs/report")
    ap.add_argument("files", nargs="*")
    a = ap.parse_intermixed_args()
    rep = os.path.join(a.report_dir, "REPORT.md")
    if not os.path.exists(rep):
        raise SystemExit(f"publish: {rep}: no such file")
    os.makedirs(a.docs_dir, exist_ok=True)
    for f in os.listdir(a.report_dir):
        if f == "REPORT.md" or f == "results.json" or f.endswith(".png"):
            shutil.copy(os.path.join(a.report_dir, f), os.path.join(a.docs_dir, f))
    md = open(rep, encoding="utf-8").read()
    first = next((l for l in md.splitlines() if l.startswith("- GPU:")), "")
    body = sections(md)
    for f in a.files:
        rel = os.path.relpath(os.path.join(a.docs_dir, "REPORT.md"), os.path.dirname(os.path.abspath(f)))
        head = f"From [{rel}]({rel})" + (f" ({first[2:]})" if first else "") + "."
        splice(f, head + "\n\n" + body)
    print(f"publish: {a.docs_dir} updated; {len(a.files)} file(s) spliced", file=sys.stderr)


if __name__ == "__main__":
    main()
