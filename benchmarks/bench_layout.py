"""What channels-last storage costs: time on the NHWC array / time on NCHW.

The same logical float32 (64, 128, 56, 56) array (the large size, 102.8 MB)
stored NCHW and channels-last (``nhwc``: a transposed view of an (N, H, W,
C) buffer), statistics over (0, 2, 3).  Calls alternate between the two
layouts for 11 rounds, so that the drifts of a shared machine hit both
alike, and the value is the median of the per-round ratios.  ``alloc``:
each call allocates its output, as a user's call does; ``out``: a
preallocated ``out=`` (kernel time only).  1.0 means channels-last is free.
"""
import numpy as np

from .cases import BACKENDS, OPS, Case
from .skips import skip, static_skips
from .timing import alternating

ROUNDS = 11


class ChannelsLastCost:
    params = [OPS, ["alloc", "out"], BACKENDS]
    param_names = ["op", "output", "backend"]
    skip_params = (static_skips(params, param_names, layout="nhwc", dtype="float32", size="large")
                   + [("moments", "out", backend) for backend in BACKENDS])  # no output
    timeout = 900

    def setup_cache(self):
        ratios = {}
        for op in OPS:
            for output in ("alloc", "out"):
                for backend in BACKENDS:
                    if (op, output, backend) in self.skip_params:
                        continue
                    try:
                        cases = [Case(op, layout, "float32", "large", backend, out=output == "out")
                                 for layout in ("nchw", "nhwc")]
                    except NotImplementedError:
                        continue
                    nchw, nhwc = alternating([c.run for c in cases], ROUNDS)
                    ratios[op, output, backend] = float(np.median(np.divide(nhwc, nchw)))
                    del cases
        return ratios

    def setup(self, ratios, op, output, backend):
        if (op, output, backend) not in ratios:
            skip("not measurable here (see setup_cache)")

    def track_nhwc_over_nchw(self, ratios, op, output, backend):
        """Median over rounds of (channels-last time) / (NCHW time)."""
        return ratios[op, output, backend]
    track_nhwc_over_nchw.unit = "ratio"


def _cell(values):
    return " / ".join(f"{v:.2f}" for v in values) if values else "—"


if __name__ == "__main__":
    import argparse
    import json
    import subprocess
    import sys
    p = argparse.ArgumentParser(description="channels-last / NCHW time, in separate processes")
    p.add_argument("--runs", type=int, default=3, help="separate processes (default 3)")
    p.add_argument("--readme", help="rewrite the channels-last table of this Markdown file (docs/performance.md)")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        found = ChannelsLastCost().setup_cache()
        print(json.dumps({f"{op} {output}": r for (op, output, backend), r in found.items()
                          if backend == "cpu"}))
        sys.exit(0)
    runs = [json.loads(subprocess.run([sys.executable, "-m", "benchmarks.bench_layout", "--one"],
                                      capture_output=True, text=True, check=True
                                      ).stdout.strip().splitlines()[-1]) for _ in range(a.runs)]
    rows = ["| op | each call allocates its output | preallocated `out=` |", "|---|---|---|"]
    for op in OPS:
        cells = [_cell([r[f"{op} {output}"] for r in runs if f"{op} {output}" in r])
                 for output in ("alloc", "out")]
        rows.append(f"| `{op}` | {cells[0]} | {cells[1]} |")
    text = "\n".join(rows)
    print(text)
    if a.readme:
        from nbnorm._bench import write_between
        write_between(a.readme, "layout-table", text)
