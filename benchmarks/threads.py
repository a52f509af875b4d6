"""When a second thread pays: every operation's parallel and serial builds
timed side by side around the sizes where one call stops being worth waking
the thread pool (``SERIAL_ELEMENTS`` of ``nbnorm/_cpu/passes.py``).

    python -m benchmarks.threads [--calls 40] [--readme docs/performance.md]

Float32 NCHW ``(N, 32, 16, 16)`` over ``(0, 2, 3)`` (batch norm, moments;
group norm with 4 groups) and the same data as rows of 1024 (layer norm),
2^16 to 2^19 elements.  Each cell is ``parallel / serial`` µs, the best of
``--calls`` calls, every call allocating its outputs: "parallel" is the
call with the threshold set to 0, "serial" the call inside
``nbnorm._cpu._threads.serial_if(True)``.  ``--readme`` writes the table
between the ``threads-table`` markers of that file.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

SIZES = (8, 12, 16, 24, 32, 64)    # N of (N, 32, 16, 16): 2^16 … 2^19 elements


def _best(f, calls):
    f()
    f()
    best = float("inf")
    for _ in range(calls):
        t0 = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t0)
    return best * 1e6


def _cases(n):
    import nbnorm as nb
    rng = np.random.default_rng(0)
    shape = (n, 32, 16, 16)
    x = rng.standard_normal(shape, dtype=np.float32) * 2 + 3
    dy = rng.standard_normal(shape, dtype=np.float32)
    w, b = np.ones(32, np.float32), np.zeros(32, np.float32)
    rm, rv = np.zeros(32, np.float32), np.ones(32, np.float32)
    ax = (0, 2, 3)
    _, mean, inv = nb.batch_norm_forward(x, w, b, axis=ax)
    rows, dyr = x.reshape(-1, 1024), dy.reshape(-1, 1024)
    w2, b2 = np.ones(1024, np.float32), np.zeros(1024, np.float32)
    _, lm, li = nb.layer_norm(rows, w2, b2)
    _, gm, gi = nb.group_norm(x, 4, w, b)
    return x.size, {
        "moments": lambda: nb.moments(x, ax),
        "batch_norm_forward": lambda: nb.batch_norm_forward(x, w, b, axis=ax),
        "batch_norm_inference": lambda: nb.batch_norm_inference(x, rm, rv, w, b, axis=ax),
        "batch_norm_backward": lambda: nb.batch_norm_backward(dy, x, mean, inv, w, axis=ax),
        "layer_norm": lambda: nb.layer_norm(rows, w2, b2),
        "layer_norm_backward": lambda: nb.layer_norm_backward(dyr, rows, lm, li, w2),
        "group_norm": lambda: nb.group_norm(x, 4, w, b),
        "group_norm_backward": lambda: nb.group_norm_backward(dy, x, gm, gi, 4, w),
    }


def measure(calls=40):
    """``{op: [(elements, parallel µs, serial µs)]}``."""
    from nbnorm._cpu import _threads, family, ops
    saved = ops.SERIAL_ELEMENTS
    ops.SERIAL_ELEMENTS = family.SERIAL_ELEMENTS = 0
    table = {}
    try:
        for n in SIZES:
            size, cases = _cases(n)
            for op, f in cases.items():
                par = _best(f, calls)
                with _threads.serial_if(True):
                    ser = _best(f, calls)
                table.setdefault(op, []).append((size, par, ser))
    finally:
        ops.SERIAL_ELEMENTS = family.SERIAL_ELEMENTS = saved
    return table


def markdown(table):
    sizes = [s for s, _, _ in next(iter(table.values()))]
    lines = ["| operation | " + " | ".join(f"2^{np.log2(s):.1f}" for s in sizes) + " |",
             "|---" * (len(sizes) + 1) + "|"]
    for op, cells in table.items():
        lines.append(f"| `{op}` | " + " | ".join(
            f"**{p:.0f}** / {s:.0f}" if p < s else f"{p:.0f} / **{s:.0f}**"
            for _, p, s in cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=40)
    p.add_argument("--readme", help="write the table between the threads-table markers")
    a = p.parse_args()
    text = (f"parallel / serial µs, the faster in bold; float32, best of {a.calls} calls; "
            f"`python -m benchmarks.threads`\n\n" + markdown(measure(a.calls)))
    print(text)
    if a.readme:
        from nbnorm._bench import write_between
        write_between(a.readme, "threads-table", text)
