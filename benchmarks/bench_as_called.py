"""Speed as a user calls it: every call allocating its outputs (``alloc``)
beside a preallocated ``out=`` (``out``, kernel time only), on the large
float32 NCHW array (102.8 MB), statistics over (0, 2, 3).

``time_call`` is asv's timing of one call (asv keeps the median and the
interquartile range of its samples: the run-to-run spread);
``track_alloc_over_out`` is the median over 11 rounds, the two calls
alternating, of (allocating time) / (``out=`` time) — 1.0 means a fresh
output costs nothing (nbnorm's output pool keeps output pages mapped).
"""
import numpy as np

from .cases import BACKENDS, Case
from .skips import skip, static_skips
from .timing import alternating

OPS = ("batch_norm_forward", "batch_norm_inference", "batch_norm_backward")
ROUNDS = 11


def _case(op, output, backend):
    return Case(op, "nchw", "float32", "large", backend, out=output == "out")


class AsCalled:
    params = [list(OPS), ["alloc", "out"], list(BACKENDS)]
    param_names = ["op", "output", "backend"]
    skip_params = static_skips(params, param_names, layout="nchw", dtype="float32",
                               size="large")
    timeout = 600

    def setup(self, op, output, backend):
        try:
            self.case = _case(op, output, backend)
        except NotImplementedError as e:
            skip(str(e))

    def time_call(self, op, output, backend):
        """One call, outputs allocated (``alloc``) or preallocated (``out``)."""
        self.case.run()


class AllocOverOut:
    params = [list(OPS), list(BACKENDS)]
    param_names = ["op", "backend"]
    skip_params = static_skips(params, param_names, layout="nchw", dtype="float32",
                               size="large", output="alloc")
    timeout = 600

    def setup(self, op, backend):
        try:
            self.cases = [_case(op, output, backend) for output in ("alloc", "out")]
        except NotImplementedError as e:
            skip(str(e))

    def track_alloc_over_out(self, op, backend):
        """Median over rounds of (allocating call) / (``out=`` call)."""
        alloc, out = alternating([c.run for c in self.cases], ROUNDS)
        return float(np.median(np.divide(alloc, out)))
    track_alloc_over_out.unit = "ratio"


# ------------------------------------------------------------ hand measurement
#: goals (issue "speed as users call it"): nbnorm as called over its peer
GOALS = {"batch_norm_forward": ("torch", 3.0), "batch_norm_inference": ("torch", 2.0),
         "batch_norm_backward": ("torch", 2.0), "moments": ("numpy", 10.0)}
#: the fused NCHW forward with ``out=`` against the 2-pass limit: read x, write y
#: at the copy bandwidth, the best of copies timed in the same rounds as the
#: forward calls (a machine that slows down for a while slows both)
OUT_GOAL = 0.8
#: untimed calls before each timed one when a peer takes turns (see timing.alternating)
SETTLE = 0.02


def one_run(repeat=7):
    """One process's medians (ms) of nbnorm as called and of its peers, calls
    alternating between them (each timed call after ``SETTLE`` seconds of
    untimed calls of its own), and the ``out=`` forward's fraction of the
    2-pass limit: a dict for :func:`table`."""
    from nbnorm._bandwidth import copier
    res = {}
    for op, (peer, _) in GOALS.items():
        cases = {"nbnorm": Case(op, "nchw", "float32", "large")}
        try:
            cases[peer] = Case(op, "nchw", "float32", "large", impl=peer)
        except NotImplementedError:
            pass
        times = alternating([c.run for c in cases.values()], repeat, settle=SETTLE)
        res[op] = {k: float(np.median(v)) * 1e3 for k, v in zip(cases, times)}
        del cases
    fwd = Case("batch_norm_forward", "nchw", "float32", "large", out=True)
    copy, moved = copier(fwd.x.nbytes)
    t, t_copy = alternating([fwd.run, copy], repeat)
    bandwidth = moved / min(t_copy)
    res["out_forward"] = {"ms": float(np.median(t)) * 1e3,
                          "fraction": fwd.nbytes / float(np.median(t)) / bandwidth,
                          "copy_gbs": bandwidth / 1e9}
    return res


def table(runs):
    """Markdown table of several runs: each cell lists every run's value."""
    def spread(values, fmt):
        return " / ".join(fmt.format(v) for v in values)
    rows = ["| as called, float32 (64,128,56,56) | nbnorm ms | peer ms | ratio per run | goal "
            "| met in |", "|---|---|---|---|---|---|"]
    for op, (peer, goal) in GOALS.items():
        ours = [r[op]["nbnorm"] for r in runs]
        theirs = [r[op].get(peer) for r in runs]
        if None in theirs:
            rows.append(f"| `{op}` | {spread(ours, '{:.1f}')} | ({peer} not installed) | — "
                        f"| ≥ {goal:g}× {peer} | — |")
            continue
        ratios = [b / a for a, b in zip(ours, theirs)]
        met = sum(r >= goal for r in ratios)
        rows.append(f"| `{op}` | {spread(ours, '{:.1f}')} | {peer} {spread(theirs, '{:.1f}')} "
                    f"| {spread(ratios, '{:.2f}×')} | ≥ {goal:g}× | {met} of {len(runs)} |")
    out = [r["out_forward"] for r in runs]
    met = sum(o["fraction"] >= OUT_GOAL for o in out)
    rows.append(f"| `batch_norm_forward(out=y)` | {spread([o['ms'] for o in out], '{:.1f}')} "
                f"| copy {spread([o['copy_gbs'] for o in out], '{:.1f}')} GB/s "
                f"| {spread([o['fraction'] for o in out], '{:.0%}')} of the 2-pass limit "
                f"| ≥ {OUT_GOAL:.0%} | {met} of {len(runs)} |")
    return "\n".join(rows)


if __name__ == "__main__":
    import argparse
    import json
    import subprocess
    import sys
    p = argparse.ArgumentParser(
        description="nbnorm as a user calls it beside PyTorch/NumPy, in separate processes")
    p.add_argument("--runs", type=int, default=5, help="separate processes (default 5)")
    p.add_argument("--repeat", type=int, default=7, help="calls per median (default 7)")
    p.add_argument("--readme", help="rewrite the as-called table of this Markdown file (docs/performance.md)")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(one_run(a.repeat)))
        sys.exit(0)
    runs = []
    for i in range(a.runs):
        out = subprocess.run([sys.executable, "-m", "benchmarks.bench_as_called", "--one",
                              "--repeat", str(a.repeat)], capture_output=True, text=True,
                             check=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
        print(f"run {i + 1} of {a.runs} done", file=sys.stderr)
    text = table(runs)
    print(text)
    if a.readme:
        from nbnorm._bench import write_between
        write_between(a.readme, "as-called-table", text)
