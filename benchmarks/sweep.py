"""The size sweep: every operation, 1 KB to 400 MB, nbnorm beside PyTorch CPU
(and NumPy for ``moments``) in one process, as users call them (every call
allocates its outputs).

    python -m benchmarks.sweep [--runs 3] [--max-mb 420] [--readme] [--plot PNG]

Each (operation, size) is timed in ``--runs`` rounds; in a round the
implementations take turns (see :func:`_round`) for about ``--seconds`` each, and the
round's figure is the median call.  The table gives nbnorm's median time
and the speed-up ``peer time / nbnorm time`` (the median over rounds, with
the lowest and highest round in brackets: the spread on a noisy machine).
``--readme`` writes the table between the ``sweep`` markers of README.md;
``--plot`` draws speed-up against size (log axes; needs matplotlib).  It
also times every public function on a (16, 16) array: a call's fixed cost.
Sizes are float32 ``x``: NCHW ``(N, C, H, W)`` for batch and group norm
and moments over ``(0, 2, 3)``, tokens × hidden rows for layer and RMS norm.
"""
from __future__ import annotations

import argparse
import platform
import re
import time
from pathlib import Path

import numpy as np

NCHW = {"1 KB": (2, 8, 4, 4), "16 KB": (4, 16, 8, 8), "256 KB": (8, 32, 16, 16),
        "1 MB": (16, 64, 16, 16), "4 MB": (64, 64, 16, 16), "16 MB": (64, 256, 16, 16),
        "103 MB": (128, 256, 28, 28), "419 MB": (256, 256, 40, 40)}
ROWS = {"1 KB": (4, 64), "16 KB": (16, 256), "256 KB": (64, 1024), "1 MB": (256, 1024),
        "4 MB": (1024, 1024), "16 MB": (4096, 1024), "103 MB": (25088, 1024),
        "419 MB": (102400, 1024)}
OPS = ("moments", "bn_forward", "bn_inference", "bn_backward", "layer_norm",
       "layer_norm_backward", "rms_norm", "group_norm", "group_norm_backward")
GROUPS = 4
SETTLE = 0.02   # seconds of untimed calls opening a turn (see _round)


def _calls(op, shape, torch):
    """``{implementation: zero-argument call}`` for one case: nbnorm, PyTorch as
    called (:mod:`nbnorm._peers`' ``torch-functional``) and, for ``moments``,
    NumPy's ``x.mean``, ``x.var`` (``numpy-plain``)."""
    import nbnorm as nb
    from nbnorm._peers import peer
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.float32) * 2 + 3
    dy = rng.standard_normal(shape, dtype=np.float32)
    tx, tdy = torch.from_numpy(x), torch.from_numpy(dy)

    def th(name, *args, **kw):
        return peer("torch-functional", name)(*args, **kw)
    if op in ("layer_norm", "layer_norm_backward", "rms_norm"):
        H = shape[-1]
        w, b = np.ones(H, np.float32), np.zeros(H, np.float32)
        tw, tb = torch.from_numpy(w), torch.from_numpy(b)
        if op == "layer_norm":
            return {"nbnorm": lambda: nb.layer_norm(x, w, b, axis=-1),
                    "torch": th("layer_norm", tx, tw, tb, axis=-1)}
        if op == "rms_norm":
            return {"nbnorm": lambda: nb.rms_norm(x, w, axis=-1, eps=1e-6),
                    "torch": th("rms_norm", tx, tw, axis=-1, eps=1e-6)}
        _, mean, inv = nb.layer_norm(x, w, b, axis=-1)
        tm, ti = torch.from_numpy(mean[:, None]), torch.from_numpy(inv[:, None])
        return {"nbnorm": lambda: nb.layer_norm_backward(dy, x, mean, inv, w, axis=-1),
                "torch": th("layer_norm_backward", tdy, tx, tm, ti, tw, tb, axis=-1)}
    C = shape[1]
    w, b = np.ones(C, np.float32), np.zeros(C, np.float32)
    rm, rv = np.zeros(C, np.float32), np.ones(C, np.float32)
    tw, tb = torch.from_numpy(w), torch.from_numpy(b)
    trm, trv = torch.zeros(C), torch.ones(C)
    ax = (0, 2, 3)
    if op == "moments":
        return {"nbnorm": lambda: nb.moments(x, ax),
                "torch": th("moments", tx, axis=ax),
                "numpy": peer("numpy-plain", "moments")(x, axis=ax)}
    if op == "bn_forward":
        return {"nbnorm": lambda: nb.batch_norm_forward(x, w, b, axis=ax, running_mean=rm,
                                                        running_var=rv),
                "torch": th("batch_norm_forward", tx, tw, tb, axis=ax, running_mean=trm,
                            running_var=trv)}
    if op == "bn_inference":
        return {"nbnorm": lambda: nb.batch_norm_inference(x, rm, rv, w, b, axis=ax),
                "torch": th("batch_norm_inference", tx, trm, trv, tw, tb, axis=ax)}
    if op == "bn_backward":
        _, mean, inv = nb.batch_norm_forward(x, w, b, axis=ax)
        tm, ti = torch.from_numpy(mean), torch.from_numpy(inv)
        return {"nbnorm": lambda: nb.batch_norm_backward(dy, x, mean, inv, w, axis=ax),
                "torch": th("batch_norm_backward", tdy, tx, tm, ti, tw, axis=ax)}
    if op == "group_norm":
        return {"nbnorm": lambda: nb.group_norm(x, GROUPS, w, b),
                "torch": th("group_norm", tx, GROUPS, tw, tb)}
    _, mean, inv = nb.group_norm(x, GROUPS, w, b)
    tm, ti = torch.from_numpy(mean), torch.from_numpy(inv)
    return {"nbnorm": lambda: nb.group_norm_backward(dy, x, mean, inv, GROUPS, w),
            "torch": th("group_norm_backward", tdy, tx, tm, ti, GROUPS, tw)}


def _round(calls, seconds, settle=SETTLE):
    """Median seconds per call of each implementation.  The implementations
    take turns; a turn is ``settle`` seconds of untimed calls (at least one),
    then a timed batch of consecutive calls lasting about a millisecond (one
    call for longer ones), so each is timed as a loop of its own calls runs.
    The untimed calls outlast what the previous turn leaves behind:
    PyTorch's OpenMP workers spin on the cores for some milliseconds after
    its last call (about 7 ms here; 1 MB batch-norm inference: nbnorm 32 µs
    per call for the first 220 calls after PyTorch's, 21 µs after its own;
    PyTorch's calls are the same after nbnorm's as after its own).  With a
    single implementation there is nothing to outlast: one untimed call."""
    if len(calls) == 1:
        settle = 0.0
    for f in calls.values():
        f()
    samples = {k: [] for k in calls}
    start = time.perf_counter()
    while time.perf_counter() - start < seconds * len(calls) or len(samples["nbnorm"]) < 3:
        for k, f in calls.items():
            turn = t0 = time.perf_counter()
            f()
            dt = time.perf_counter() - t0
            while time.perf_counter() - turn < settle:
                f()
            reps = max(1, int(1e-3 / max(dt, 1e-7)))
            t0 = time.perf_counter()
            for _ in range(reps):
                f()
            samples[k].append((time.perf_counter() - t0) / reps)
    return {k: float(np.median(v)) for k, v in samples.items()}


def sweep(runs=3, max_mb=420, seconds=0.15, ops=OPS):
    """``[(op, size, nbnorm seconds, {peer: [speed-up per round]})]``."""
    import torch
    rows = []
    for op in ops:
        table = ROWS if op in ("layer_norm", "layer_norm_backward", "rms_norm") else NCHW
        for size, shape in table.items():
            if np.prod(shape) * 4 > max_mb * 1e6:
                continue
            calls = _calls(op, shape, torch)
            rounds = [_round(calls, seconds) for _ in range(runs)]
            nbt = float(np.median([r["nbnorm"] for r in rounds]))
            ratios = {k: [r[k] / r["nbnorm"] for r in rounds] for k in calls if k != "nbnorm"}
            rows.append((op, size, shape, nbt, ratios))
            print(f"{op:20s} {size:>7s} {nbt * 1e6:10.1f} µs  " + "  ".join(
                f"{k} {np.median(v):5.2f}× [{min(v):.2f}–{max(v):.2f}]"
                for k, v in ratios.items()), flush=True)
    return rows


def fixed_costs(runs=3, seconds=0.1):
    """``[(function, [µs per round])]``: each public function on a (16, 16)
    float32 array (statistics over axis 0 for batch norm, -1 for layer and
    RMS norm, 4 groups of channel axis 1 for group norm), outputs allocated:
    the fixed cost of a call, the kernels' own work being < 1 µs here."""
    import nbnorm as nb
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 16), dtype=np.float32)
    dy = rng.standard_normal((16, 16), dtype=np.float32)
    w, b = np.ones(16, np.float32), np.zeros(16, np.float32)
    rm, rv = np.zeros(16, np.float32), np.ones(16, np.float32)
    _, m, i = nb.batch_norm_forward(x, w, b, axis=0)
    _, lm, li = nb.layer_norm(x, w, b)
    _, rs = nb.rms_norm(x, w)
    _, gm, gi = nb.group_norm(x, 4, w, b)
    _, im, ii = nb.instance_norm(x, w, b)
    calls = {
        "moments": lambda: nb.moments(x, 0),
        "batch_norm_forward": lambda: nb.batch_norm_forward(x, w, b, axis=0),
        "batch_norm_forward (running)": lambda: nb.batch_norm_forward(
            x, w, b, axis=0, running_mean=rm, running_var=rv),
        "batch_norm_inference": lambda: nb.batch_norm_inference(x, rm, rv, w, b, axis=0),
        "batch_norm_backward": lambda: nb.batch_norm_backward(dy, x, m, i, w, axis=0),
        "layer_norm": lambda: nb.layer_norm(x, w, b),
        "layer_norm_backward": lambda: nb.layer_norm_backward(dy, x, lm, li, w),
        "rms_norm": lambda: nb.rms_norm(x, w),
        "rms_norm_backward": lambda: nb.rms_norm_backward(dy, x, rs, w),
        "group_norm": lambda: nb.group_norm(x, 4, w, b),
        "group_norm_backward": lambda: nb.group_norm_backward(dy, x, gm, gi, 4, w),
        "instance_norm": lambda: nb.instance_norm(x, w, b),
        "instance_norm_backward": lambda: nb.instance_norm_backward(dy, x, im, ii, w),
    }
    out = []
    for name, f in calls.items():
        per = [_round({"nbnorm": f}, seconds)["nbnorm"] * 1e6 for _ in range(runs)]
        out.append((name, per))
        print(f"{name:30s} {np.median(per):6.1f} µs [{min(per):.1f}–{max(per):.1f}]", flush=True)
    return out


def fixed_table(costs):
    return "\n".join(["| function on (16, 16) float32 | µs per call: median [lowest–highest] |",
                      "|---|---|"] + [f"| `{n}` | {np.median(p):.1f} [{min(p):.1f}–{max(p):.1f}] |"
                                      for n, p in costs])


def _fmt_time(s):
    return f"{s * 1e6:.0f} µs" if s < 1e-3 else f"{s * 1e3:.1f} ms"


def table(rows, runs):
    """The sweep as a Markdown table."""
    import torch
    sizes = list(NCHW)
    lines = [f"nbnorm's median time per call and speed-up over PyTorch {torch.__version__} CPU "
             f"(median of {runs} rounds [lowest–highest]); float32; "
             f"{platform.machine()}, {__import__('os').cpu_count()} cores; "
             f"`python -m benchmarks.sweep`.", "",
             "| operation | " + " | ".join(sizes) + " |",
             "|---|" + "---|" * len(sizes)]
    by = {(op, size): (t, r) for op, size, _, t, r in rows}
    for op in dict.fromkeys(op for op, *_ in rows):
        cells = []
        for size in sizes:
            if (op, size) not in by:
                cells.append("")
                continue
            t, r = by[(op, size)]
            v = r["torch"]
            cells.append(f"{_fmt_time(t)}<br>{np.median(v):.2f}× [{min(v):.2f}–{max(v):.2f}]")
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    if any("numpy" in r for *_, r in rows):
        lines += ["", "moments against NumPy (`x.mean`, `x.var`): " + ", ".join(
            f"{size} {np.median(r['numpy']):.1f}×" for op, size, _, _, r in rows
            if "numpy" in r) + "."]
    return "\n".join(lines)


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5))
    for op in dict.fromkeys(op for op, *_ in rows):
        pts = [(np.prod(shape) * 4, np.median(r["torch"])) for o, _, shape, _, r in rows
               if o == op]
        ax.plot(*zip(*pts), marker="o", label=op)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="bytes of x (float32)",
           ylabel="speed-up over PyTorch CPU (×)", title="nbnorm vs PyTorch, as called")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_readme(text, path=Path(__file__).resolve().parents[1] / "README.md"):
    """Replace the text between ``<!-- sweep -->`` and ``<!-- /sweep -->``."""
    readme = path.read_text()
    new, n = re.subn(r"(<!-- sweep -->\n).*?(<!-- /sweep -->)",
                     lambda m: m.group(1) + text + "\n" + m.group(2), readme, flags=re.S)
    if n != 1:
        raise SystemExit("README.md: expected one <!-- sweep --> … <!-- /sweep --> section")
    path.write_text(new)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--max-mb", type=float, default=420)
    p.add_argument("--seconds", type=float, default=0.15)
    p.add_argument("--ops", default=",".join(OPS))
    p.add_argument("--readme", action="store_true")
    p.add_argument("--plot")
    a = p.parse_args(argv)
    costs = fixed_costs(a.runs)
    rows = sweep(a.runs, a.max_mb, a.seconds, a.ops.split(","))
    text = table(rows, a.runs) + "\n\nThe fixed cost of a call (`fixed_costs`):\n\n" + \
        fixed_table(costs)
    print(text)
    if a.readme:
        write_readme(text)
    if a.plot:
        plot(rows, a.plot)


if __name__ == "__main__":
    main()
