"""Layer, group, instance and RMS norm: nbnorm beside PyTorch CPU, float32.

``case``: ``group`` (G=32) and ``instance`` on (64,128,56,56) NCHW,
``group-nhwc`` the same in channels-last memory, ``layer`` and ``rms`` over
the last axis of (8192,4096), ``layer-h256`` over the last axis of
(131072,256) (short rows: tokens × hidden) (``large``: 103 / 134 MB per array); ``small``
divides the batch so it runs in cache.  Each call allocates its outputs,
as a user's call does; the backward is timed alone (torch:
``torch.autograd.grad`` of a retained graph).  ``impl`` = ``nbnorm`` or
``torch`` (skipped when PyTorch is not installed).

Run as a script for the hand measurement of the documentation
(``python -m benchmarks.bench_family [--repeat 7] [--runs 2] [--readme docs/guide/family.md]``):
every case, forward and backward, medians of ``repeat`` calls per run, both
libraries in one process, runs alternating; ``--readme`` rewrites
the documentation table (between its ``family-table`` markers) from the results.
"""
from __future__ import annotations

import numpy as np

import nbnorm
from nbnorm._peers import autograd, peer

from .skips import have, skip

CASES = ("group", "group-nhwc", "instance", "layer", "layer-h256", "rms")
SHAPES = {"group": (64, 128, 56, 56), "group-nhwc": (64, 128, 56, 56),
          "instance": (64, 128, 56, 56), "layer": (8192, 4096), "layer-h256": (131072, 256),
          "rms": (8192, 4096)}
GROUPS = 32


def _shape(case, size):
    shape = SHAPES[case]
    return shape if size == "large" else (max(1, shape[0] // 64),) + shape[1:]


def _inputs(case, size, seed=0):
    rng = np.random.default_rng(seed)
    shape = _shape(case, size)
    x = rng.standard_normal(shape, dtype=np.float32)
    dy = rng.standard_normal(shape, dtype=np.float32)
    if case == "group-nhwc":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
        dy = np.ascontiguousarray(dy.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    n_par = shape[-1] if case.startswith(("layer", "rms")) else shape[1]
    w = (rng.standard_normal(n_par) + 1).astype(np.float32)
    b = rng.standard_normal(n_par).astype(np.float32)
    return x, dy, w, b


class _Nbnorm:
    def __init__(self, case, x, dy, w, b):
        self.case, self.x, self.dy, self.w, self.b = case, x, dy, w, b
        self.stats = self.forward()[1:]

    def forward(self):
        c, x, w, b = self.case, self.x, self.w, self.b
        if c in ("group", "group-nhwc"):
            return nbnorm.group_norm(x, GROUPS, w, b)
        if c == "instance":
            return nbnorm.instance_norm(x, w, b)
        if c.startswith("layer"):
            return nbnorm.layer_norm(x, w, b)
        return nbnorm.rms_norm(x, w)

    def backward(self):
        c, x, dy, w, s = self.case, self.x, self.dy, self.w, self.stats
        if c in ("group", "group-nhwc"):
            return nbnorm.group_norm_backward(dy, x, *s, GROUPS, w)
        if c == "instance":
            return nbnorm.instance_norm_backward(dy, x, *s, w)
        if c.startswith("layer"):
            return nbnorm.layer_norm_backward(dy, x, *s, w)
        return nbnorm.rms_norm_backward(dy, x, *s, w)


def _torch_bind(case, x, w, b):
    """PyTorch's forward of ``case`` bound to the tensors (:mod:`nbnorm._peers`)."""
    if case in ("group", "group-nhwc"):
        return peer("torch-functional", "group_norm")(x, GROUPS, w, b)
    if case == "instance":
        return peer("torch-functional", "instance_norm")(x, w, b)
    if case.startswith("layer"):
        return peer("torch-functional", "layer_norm")(x, w, b, axis=-1)
    return peer("torch-functional", "rms_norm")(x, w, axis=-1)


class _Torch:
    """``torch.nn.functional``'s forward (without autograd) and autograd's
    backward to x, the weight and the bias (RMS: x and the weight) of a graph
    built here."""

    def __init__(self, case, x, dy, w, b):
        import torch
        self.torch = torch
        x = torch.from_numpy(x)
        dy = torch.from_numpy(np.ascontiguousarray(dy))
        if case == "group-nhwc":
            x = x.contiguous(memory_format=torch.channels_last)
            dy = dy.contiguous(memory_format=torch.channels_last)
        w, b = torch.from_numpy(w), torch.from_numpy(b)
        self.call = _torch_bind(case, x, w, b)
        xg = x.detach().clone().requires_grad_(True)
        wg = w.clone().requires_grad_(True)
        bg = b.clone().requires_grad_(True)
        self.grad = autograd(_torch_bind(case, xg, wg, bg)(),
                             (xg, wg) if case == "rms" else (xg, wg, bg), dy)

    def forward(self):
        with self.torch.no_grad():
            return self.call()

    def backward(self):
        return self.grad()


def _impl(impl, case, size):
    if impl == "torch":
        if not have("torch"):
            skip("torch is not installed")
        return _Torch(case, *_inputs(case, size))
    return _Nbnorm(case, *_inputs(case, size))


class Family:
    params = [list(CASES), ["small", "large"], ["nbnorm", "torch"]]
    param_names = ["case", "size", "impl"]

    def setup(self, case, size, impl):
        self.run = _impl(impl, case, size)
        self.run.forward()
        self.run.backward()

    def time_forward(self, case, size, impl):
        """Forward with weight and bias (RMS: weight), outputs allocated."""
        self.run.forward()

    def time_backward(self, case, size, impl):
        """``dx`` and the parameter gradients, outputs allocated."""
        self.run.backward()


# ------------------------------------------------------------------ by hand
LABELS = {"group": "group_norm G=32 (64,128,56,56)", "group-nhwc": "same, channels-last",
          "instance": "instance_norm (64,128,56,56)", "layer": "layer_norm (8192,4096)",
          "layer-h256": "layer_norm (131072,256): tokens × hidden",
          "rms": "rms_norm (8192,4096)"}


def manual(repeat=7, runs=2, cases=CASES):
    """Print every case's medians per run; returns ``{(case, op): {impl: [ms per run]}}``."""
    import numba

    from nbnorm._bench import median_time
    print(f"float32, medians of {repeat} calls, {runs} runs alternating; numba threads "
          f"{numba.get_num_threads()}" + ("" if have("torch") else "; torch not installed"))
    results = {}
    for case in cases:
        impls = {"nbnorm": _Nbnorm(case, *_inputs(case, "large"))}
        if have("torch"):
            import torch
            impls["torch"] = _Torch(case, *_inputs(case, "large"))
            torch.set_num_threads(numba.get_num_threads())
        for op in ("forward", "backward"):
            med = {k: [] for k in impls}
            for _ in range(runs):
                for name, impl in impls.items():
                    med[name].append(median_time(getattr(impl, op), repeat) * 1e3)
            results[(case, op)] = med
            line = f"{case:10s} {op:8s} " + "  ".join(
                f"{k} {'/'.join(f'{v:.1f}' for v in vs)} ms" for k, vs in med.items())
            if "torch" in med:
                ratios = [t / n for t, n in zip(med["torch"], med["nbnorm"])]
                line += f"  (torch/nbnorm {'/'.join(f'{r:.2f}' for r in ratios)})"
            print(line, flush=True)
    return results


def _span(values, fmt="{:.1f}"):
    lo, hi = min(values), max(values)
    a, b = fmt.format(lo), fmt.format(hi)
    return a if a == b else f"{a}–{b}"


def markdown(results):
    """The documentation table of :func:`manual`'s results: ranges over the runs;
    ratios torch/nbnorm of the same run."""
    rows = ["| case | nbnorm forward | torch forward | nbnorm backward | torch backward |",
            "|---|---|---|---|---|"]
    for case in dict.fromkeys(c for c, _ in results):
        cells = []
        for op in ("forward", "backward"):
            med = results[(case, op)]
            cells.append(f"{_span(med['nbnorm'])} ms")
            if "torch" in med:
                r = [t / n for t, n in zip(med["torch"], med["nbnorm"])]
                cells.append(f"{_span(med['torch'])} ms ({_span(r, '{:.2f}')}×)")
            else:
                cells.append("—")
        rows.append(f"| {LABELS[case]} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    import argparse
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--case", action="append", choices=CASES)
    p.add_argument("--readme", help="rewrite the family table of this Markdown file (docs/guide/family.md) from the results")
    a = p.parse_args()
    res = manual(a.repeat, a.runs, tuple(a.case) if a.case else CASES)
    table = markdown(res)
    print(table)
    if a.readme:
        from nbnorm._bench import write_between
        write_between(a.readme, "family-table", table)
