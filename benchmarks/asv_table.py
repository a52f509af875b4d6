"""The "Current numbers" table of ``benchmarks/README.md``, written from stored
asv results, never by hand.

    pip install . && asv run --python=same --set-commit-hash $(git rev-parse HEAD) \\
        -b "bench_ops.*\\('(nchw|nhwc)', 'float32', 'large', 'cpu'"
    python -m benchmarks.asv_table --readme benchmarks/README.md

asv stores one JSON file per commit and environment,
``.asv/results/<machine>/<commit>-<env>.json``: per benchmark a list of
columns named by its ``result_columns`` (``result``, ``params``,
``stats_q_25``, ``stats_q_75``, …), each column's values running over the
Cartesian product of the parameter values (stored as their ``repr``).  This
script takes the float32 large CPU cases of ``bench_ops`` for NCHW and
channels-last and writes one row per operation and layout: each
implementation's median with its interquartile range (asv's samples of one
run: the run-to-run spread), and nbnorm's speed-up over each peer.
"""
from __future__ import annotations

import glob
import itertools
import json
import math
import os

OPS = [("`moments`", "bench_ops.Moments.time_moments"),
       ("`batch_norm_forward` (training)", "bench_ops.BatchNormForward.time_batch_norm_forward"),
       ("`batch_norm_inference`", "bench_ops.BatchNormInference.time_batch_norm_inference"),
       ("`batch_norm_backward` (training)",
        "bench_ops.BatchNormBackward.time_batch_norm_backward")]
LAYOUTS = [("nchw", "NCHW"), ("nhwc", "channels-last")]
IMPLS = [("nbnorm", "nbnorm"), ("numpy", "NumPy"), ("torch", "PyTorch CPU")]
FIXED = {"dtype": "float32", "size": "large", "backend": "cpu"}


def load(results_dir=".asv/results", commit=None):
    """The stored results of ``commit`` (a hash prefix; the newest run of any
    commit if None) in ``results_dir``, as a dict with its ``path`` added."""
    runs = []
    for path in glob.glob(os.path.join(results_dir, "*", "*.json")):
        if os.path.basename(path) == "machine.json":
            continue
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if commit is None or data.get("commit_hash", "").startswith(commit):
            runs.append((data.get("date", 0), path, data))
    if not runs:
        which = f"commit {commit}" if commit else "any commit"
        raise FileNotFoundError(f"no asv results for {which} under {results_dir}")
    _, path, data = max(runs, key=lambda r: r[0])
    return {**data, "path": path}


def cases(data, benchmark):
    """``{parameter dict as a sorted tuple: (median, q25, q75)}`` of one
    benchmark (seconds; NaN where it did not run)."""
    if benchmark not in data["results"]:
        return {}
    columns = dict(zip(data["result_columns"], data["results"][benchmark]))
    names = _param_names(data, benchmark)
    out = {}
    for i, values in enumerate(itertools.product(*columns["params"])):
        def col(name):
            v = (columns.get(name) or [None] * (i + 1))[i]
            return math.nan if v is None else float(v)
        key = tuple(sorted(zip(names, (_unrepr(v) for v in values))))
        out[key] = (col("result"), col("stats_q_25"), col("stats_q_75"))
    return out


def _param_names(data, benchmark):
    """Parameter names of a benchmark: from asv's ``benchmarks.json`` beside the
    results, else bench_ops' (layout, dtype, size, backend, impl)."""
    meta = os.path.join(os.path.dirname(os.path.dirname(data["path"])), "benchmarks.json")
    if os.path.exists(meta):
        with open(meta, encoding="utf-8") as f:
            info = json.load(f).get(benchmark)
        if info:
            return info["param_names"]
    return ["layout", "dtype", "size", "backend", "impl"]


def _unrepr(value):
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == "'" else value


def _ms(seconds):
    ms = seconds * 1e3
    return f"{ms:#.3g}" if ms < 100 else f"{ms:.0f}"


def table(data):
    """Markdown: a line naming the run, then the table."""
    m = data.get("params", {})
    ram = int(m.get("ram") or 0) / 2**30
    head = (f"asv results of commit `{data['commit_hash'][:8]}` on `{m.get('machine', '?')}` "
            f"({m.get('cpu', '?')}, {m.get('num_cpu', '?')} cores, {ram:.0f} GiB), "
            f"Python {os.path.basename(str(m.get('python', '?')))}; median of asv's samples, interquartile range in "
            f"brackets, ms per call; each call allocates its outputs.")
    rows = [head, "", "| operation | layout | " + " | ".join(n for _, n in IMPLS)
            + " | nbnorm vs NumPy | nbnorm vs PyTorch |",
            "|---|---|" + "---:|" * (len(IMPLS) + 2)]
    for label, bench in OPS:
        found = cases(data, bench)
        for layout, layout_name in LAYOUTS:
            cells, medians = [], {}
            for impl, _ in IMPLS:
                key = tuple(sorted({**FIXED, "layout": layout, "impl": impl}.items()))
                med, q25, q75 = found.get(key, (math.nan,) * 3)
                medians[impl] = med
                if math.isnan(med):
                    cells.append("n/a")
                    continue
                text = f"{_ms(med)} ({_ms(q25)}–{_ms(q75)})" if not math.isnan(q25) else _ms(med)
                cells.append(f"**{text}**" if impl == "nbnorm" else text)
            ratios = [f"{medians[p] / medians['nbnorm']:.1f}×"
                      if not (math.isnan(medians[p]) or math.isnan(medians["nbnorm"])) else "n/a"
                      for p in ("numpy", "torch")]
            rows.append(f"| {label} | {layout_name} | " + " | ".join(cells + ratios) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    import argparse
    p = argparse.ArgumentParser(description="benchmarks/README.md's table from asv results")
    p.add_argument("--results", default=".asv/results", help="asv's results folder")
    p.add_argument("--commit", help="commit hash prefix (default: the newest results)")
    p.add_argument("--readme", help="rewrite the asv-table of this file")
    a = p.parse_args()
    text = table(load(a.results, a.commit))
    print(text)
    if a.readme:
        from nbnorm._bench import write_between
        write_between(a.readme, "asv-table", text)
