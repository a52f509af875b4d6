"""Layer, group, instance and RMS norm (forward and backward) against the
float64 references of ``nbnorm.reference``, finite differences and, where
installed, PyTorch CPU; over layouts, axes, groups, dtypes and adversarial
data.  Error bounds: ``k·eps·scale`` with ``eps`` of the accumulation type
(of the storage type for rounded outputs) and ``scale`` the magnitude of the
terms (see ``bound``).  The Hypothesis sweep over random members, shapes and
layouts (``run_forward``/``run_backward`` below) is in ``test_sweep.py``.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import nbnorm
from nbnorm import reference as R

from helpers import (CPU, FLOATS, Backend, channels_last, eps, named_layouts, normal, relayout,
                     stat_dtype)

MEMBERS = ("layer", "group", "instance", "rms")


# ------------------------------------------------------------------ calls
class Member:
    """One member of the family with its arguments: ``forward(x, w, b)`` →
    ``(y, stats…)``, ``backward(dy, x, stats, w)`` → grads; the same on the
    reference; ``param_shape``/``stat_shape`` for ``x``'s shape."""

    def __init__(self, name, shape, axis=-1, groups=2, channel_axis=1):
        self.name, self.axis, self.groups, self.ca = name, axis, groups, channel_axis
        nd = len(shape)
        if name in ("layer", "rms"):
            ax = sorted(a % nd for a in (axis if isinstance(axis, tuple) else (axis,)))
            self.param_shape = tuple(shape[a] for a in ax)
            self.stat_shape = tuple(s for d, s in enumerate(shape) if d not in ax)
        else:
            c = channel_axis % nd
            g = shape[c] if name == "instance" else groups
            self.param_shape = (shape[c],)
            self.stat_shape = (shape[0], g)

    def kwargs(self):
        if self.name in ("layer", "rms"):
            return {"axis": self.axis}
        return {"channel_axis": self.ca}

    def forward(self, mod, x, w, b, **kw):
        f = getattr(mod, f"{self.name}_norm")
        if self.name == "group":
            return f(x, self.groups, w, b, **self.kwargs(), **kw)
        if self.name == "rms":
            return f(x, w, **self.kwargs(), **kw)
        return f(x, w, b, **self.kwargs(), **kw)

    def backward(self, mod, dy, x, stats, w, **kw):
        f = getattr(mod, f"{self.name}_norm_backward")
        if self.name == "group":
            return f(dy, x, *stats, self.groups, w, **self.kwargs(), **kw)
        return f(dy, x, *stats, w, **self.kwargs(), **kw)


def member(name, shape):
    """A typical configuration of ``name`` for ``shape`` (≥ 3 dims)."""
    if name in ("layer", "rms"):
        return Member(name, shape, axis=(-2, -1))
    c = shape[1]
    return Member(name, shape, groups=2 if c % 2 == 0 else 1)


def params(m, dtype, seed, with_bias=True):
    rng = np.random.default_rng(seed)
    sd = stat_dtype(dtype)
    w = (rng.standard_normal(m.param_shape) + 1).astype(sd)
    b = rng.standard_normal(m.param_shape).astype(sd) if with_bias and m.name != "rms" else None
    return w, b


def bound(dtype, ref, scale, k=64):
    """``k·eps·scale`` (accumulation precision) plus the output's rounding."""
    acc = eps(stat_dtype(dtype))
    return k * acc * scale + eps(dtype) * np.abs(ref)


def check_close(got, ref, dtype, scale, what, k=64):
    got = np.asarray(got, np.float64)
    err = np.abs(got - ref)
    b = bound(dtype, ref, scale, k)
    assert got.shape == np.shape(ref), f"{what}: shape {got.shape} != {np.shape(ref)}"
    bad = ~(err <= b)
    assert not bad.any(), (f"{what}: {bad.sum()} of {bad.size} beyond the bound; worst "
                           f"err/bound {np.nanmax(err / b):.3g}")


def run_forward(m, x, w, b, out=None, bk=CPU):
    """``m``'s forward on backend ``bk`` against the reference; the inputs
    (on that backend) are unchanged."""
    saved = [None if a is None else a.copy() for a in (x, w, b)]
    args = bk.on(x, w, b)
    got = bk.back(m.forward(nbnorm, *args, out=out))
    ref = m.forward(R, x, w, b)
    for a, s in zip(bk.back(args), saved):
        if a is not None and a is not out:
            np.testing.assert_array_equal(a, s)
    y = got[0]
    assert y.dtype == x.dtype and y.shape == x.shape
    for s in got[1:]:
        assert s.dtype == stat_dtype(x.dtype) and s.shape == m.stat_shape
    what = f"{m.name} {x.dtype} {x.shape} strides {x.strides}"
    wmax = 1.0 if w is None else float(np.max(np.abs(w)))
    bmax = 0.0 if b is None else float(np.max(np.abs(b)))
    # y = x̂·w + b with |x̂| ≤ √n; its error is relative to |x̂|·|w| + |b|, plus
    # the conditioning of x − mean: a few ulp(|x|)·invstd·|w| (as for batch norm)
    n = x.size // max(int(np.prod(m.stat_shape)), 1)
    xmax = float(np.max(np.abs(x.astype(np.float64))))
    invmax = float(np.max(np.abs(ref[-1])))
    check_close(y, ref[0], x.dtype, np.sqrt(n) * wmax + bmax + xmax * invmax * wmax / 16,
                "y " + what)
    for g, r in zip(got[1:], ref[1:]):      # mean: error relative to |x|; (r)std to itself
        check_close(g, r, x.dtype, xmax if g is got[1] and m.name != "rms" else np.abs(r),
                    "statistic " + what)
    return got


def run_backward(m, x, w, seed, out=None, dy=None, bk=CPU):
    rng = np.random.default_rng(seed)
    if dy is None:
        dy = rng.standard_normal(x.shape).astype(x.dtype)
    stats = m.forward(nbnorm, x, w, None)[1:]
    saved = [a.copy() for a in (dy, x, *stats)]
    dyb, xb, wb, *statsb = bk.on(dy, x, w, *stats)
    got = bk.back(m.backward(nbnorm, dyb, xb, statsb, wb, out=out))
    ref = m.backward(R, dy, x, stats, w)
    for a, s in zip(bk.back((dyb, xb, *statsb)), saved):
        if a is not out:
            np.testing.assert_array_equal(a, s)
    what = f"{m.name} backward {x.dtype} {x.shape} strides {x.strides}"
    assert got[0].dtype == x.dtype and got[0].shape == x.shape
    n = x.size // max(int(np.prod(m.stat_shape)), 1)
    wmax = 1.0 if w is None else float(np.max(np.abs(w)))
    inv = float(np.max(np.abs(stats[-1])))
    g = float(np.max(np.abs(dy))) * wmax
    # dx: terms up to inv·|g|·(1 + 2) with sums of n terms
    check_close(got[0], ref[0], x.dtype, 4 * inv * g * (1 + np.sqrt(n)), "dx " + what)
    total = x.size / max(int(np.prod(m.param_shape)), 1)
    for gg, r, name in zip(got[1:], ref[1:], ("dweight", "dbias")):
        assert gg.dtype == stat_dtype(x.dtype) and gg.shape == m.param_shape
        check_close(gg, r, x.dtype, total * float(np.max(np.abs(dy))) * np.sqrt(n),
                    f"{name} " + what)
    return got


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", MEMBERS)
def test_forward_and_backward_over_layouts(name, dtype, backend):
    """Every layout (on the simulator: float32 on two, the other dtypes on C order)."""
    x0 = normal((3, 4, 5, 6), dtype, seed=1, loc=2.0, scale=3.0)
    few = ("F", "channels-last-step-flip") if dtype == np.float32 else ("C",)
    for label, x in named_layouts(x0).items():
        if backend.small and label not in few:
            continue
        m = member(name, x.shape)
        w, b = params(m, dtype, seed=2)
        run_forward(m, x, w, b, bk=backend)
        run_backward(m, x, w, seed=3, bk=backend)
        if label == "C" or not backend.small:
            run_forward(m, x, None, None, bk=backend)
            run_backward(m, x, None, seed=4, bk=backend)


@pytest.mark.parametrize("name", ["layer", "rms"])
def test_every_axis_subset(name):
    x = normal((3, 4, 5), np.float64, seed=5, loc=1.0)
    for r in range(1, 4):
        for ax in itertools.combinations(range(3), r):
            spelled = tuple(a - 3 if a % 2 else a for a in ax)
            m = Member(name, x.shape, axis=spelled)
            w, b = params(m, x.dtype, seed=len(ax))
            run_forward(m, x, w, b)
            run_backward(m, x, w, seed=6)


@pytest.mark.parametrize("name", ["group", "instance"])
@pytest.mark.parametrize("channel_axis", [1, -1, 2])
def test_channel_axis_and_groups(name, channel_axis, backend):
    x = normal((2, 6, 4, 3) if channel_axis != -1 else (2, 4, 3, 6), np.float32, seed=7)
    groups_tried = (1, 3) if backend.small else (1, 2, 3, 6)
    for groups in (groups_tried if name == "group" else (None,)):
        if channel_axis == 2:
            x = normal((2, 3, 6, 5), np.float32, seed=7)
        m = Member(name, x.shape, groups=groups or 1, channel_axis=channel_axis)
        w, b = params(m, x.dtype, seed=8)
        run_forward(m, x, w, b, bk=backend)
        run_backward(m, x, w, seed=9, bk=backend)


@pytest.mark.parametrize("name", MEMBERS)
def test_out_and_in_place(name, backend):
    if backend.small and name in ("instance", "rms"):
        pytest.skip("the simulator runs the two geometries (layer: over axes, group: split)")
    x = normal(backend.fit((4, 6, 5, 5)), np.float32, seed=10, loc=1.0)
    m = member(name, x.shape)
    w, b = params(m, x.dtype, seed=11)
    xb, wb, bb = backend.on(x, w, b)
    ref = backend.get(m.forward(nbnorm, xb, wb, bb)[0])
    (out,) = backend.on(np.empty_like(x))
    assert m.forward(nbnorm, xb, wb, bb, out=out)[0] is out
    np.testing.assert_array_equal(backend.get(out), ref)
    (xi,) = backend.on(x.copy())
    assert m.forward(nbnorm, xi, wb, bb, out=xi)[0] is xi
    np.testing.assert_array_equal(backend.get(xi), ref)
    dy = normal(x.shape, np.float32, seed=12)
    stats = m.forward(nbnorm, xb, wb, bb)[1:]
    (dyb,) = backend.on(dy)
    dref = backend.back(m.backward(nbnorm, dyb, xb, stats, wb))
    for target in ("dy", "x"):           # dx written over either input
        dyi, xi = backend.on(dy.copy(), x.copy())
        got = m.backward(nbnorm, dyi, xi, stats, wb, out=dyi if target == "dy" else xi)
        assert got[0] is (dyi if target == "dy" else xi)
        for g, r in zip(backend.back(got), dref):
            np.testing.assert_array_equal(g, r)


@pytest.mark.parametrize("name", ["layer", "rms"])
@pytest.mark.parametrize("shape", [(8, 16, 16), (300, 7, 20), (64, 32, 32), (2048, 4, 16)])
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_parameter_gradients_over_part_counts(name, shape, dtype):
    """The fused backward sums the parameter gradients in parts of the
    statistics, added up at the end: 1, 2 (uneven), 4 and 8 parts here
    (``family.PART_ELEMENTS``); every part must count, once."""
    x = normal(shape, dtype, seed=21, loc=3.0, scale=2.0)
    m = member(name, shape)
    w, _ = params(m, dtype, seed=22)
    run_backward(m, x, w, seed=23)


@pytest.mark.parametrize("name", ["group", "instance"])
@pytest.mark.parametrize("shape", [(2, 4, 3, 5), (8, 32, 16, 16)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float32_and_float64_parameters_give_the_same_bits(name, shape, dtype):
    """Group and instance norm's per-channel coefficients take a float32
    weight/bias/mean (the backward also invstd) as they are and widen them
    exactly: the same bits as the same values in float64 (and as a
    read-only float32 copy, which a prepared call converts)."""
    x = normal(shape, dtype, seed=24, loc=1.0, scale=3.0)
    dy = normal(shape, dtype, seed=25)
    m = member(name, shape)
    w, b = params(m, np.float32, seed=26)
    frozen_w, frozen_b = w.copy(), b.copy()
    frozen_w.flags.writeable = frozen_b.flags.writeable = False
    runs = []
    for ww, bb in ((w, b), (w.astype(np.float64), b.astype(np.float64)), (frozen_w, frozen_b)):
        y, mean, inv = m.forward(nbnorm, x, ww, bb)
        got = [y, mean, inv]
        frozen_inv = inv.copy()
        frozen_inv.flags.writeable = False
        for stats in ((mean, inv), (mean.astype(np.float32), inv), (mean.astype(np.float64), inv),
                      (mean, inv.astype(np.float64)), (mean, frozen_inv)):
            got += list(m.backward(nbnorm, dy, x, stats, ww))
        runs.append([g.tobytes() for g in got])
    assert runs[1] == runs[0] and runs[2] == runs[0]


@pytest.mark.parametrize("name", MEMBERS)
def test_finite_differences(name):
    """dx, dweight, dbias against central differences of L = Σ y·dy (float64)."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((2, 4, 3, 2)) * 2 + 1
    m = member(name, x.shape)
    w, b = params(m, x.dtype, seed=14)
    dy = rng.standard_normal(x.shape)

    def loss(xv, wv, bv):
        return float((m.forward(nbnorm, xv, wv, bv)[0] * dy).sum())

    stats = m.forward(nbnorm, x, w, b)[1:]
    grads = m.backward(nbnorm, dy, x, stats, w)
    h = 1e-6
    for target, grad in ((0, grads[0]), (1, grads[1])) + (((2, grads[2]),) if b is not None
                                                           else ()):
        base = [x, w, b][target]
        v = rng.standard_normal(base.shape)
        args_p = [x, w, b]
        args_m = [x, w, b]
        args_p[target] = base + h * v
        args_m[target] = base - h * v
        fd = (loss(*args_p) - loss(*args_m)) / (2 * h)
        an = float((grad * v).sum())
        assert abs(fd - an) <= 1e-6 * (1 + abs(an)), f"{name} arg {target}: fd {fd} vs {an}"


@pytest.mark.parametrize("name", MEMBERS)
@pytest.mark.parametrize("loc,dtype", [(1e4, np.float32), (1e8, np.float64)])
def test_large_offsets_and_constant_statistics(name, loc, dtype, backend):
    if backend.small and name in ("instance", "rms"):
        pytest.skip("the simulator runs the two geometries (layer: over axes, group: split)")
    x = normal(backend.fit((4, 8, 6, 6)), dtype, seed=15, loc=loc)
    m = member(name, x.shape)
    w, b = params(m, dtype, seed=16)
    for v in (x, channels_last(x))[:1 if backend.small else 2]:   # CPU: fused, per-channel
        run_forward(m, v, w, b, bk=backend)
        run_backward(m, v, w, seed=17, bk=backend)
    if name == "rms":
        return
    c = np.full(x.shape, loc, dtype)        # every statistic constant: y is exactly the bias
    y = backend.get(m.forward(nbnorm, *backend.on(c, w, b))[0])
    expected = m.forward(R, c, w, b)[0]
    assert np.all(expected == np.broadcast_to(expected, x.shape))
    np.testing.assert_array_equal(y, expected.astype(dtype))


def test_rms_eps_default_is_the_dtype_epsilon():
    x = np.zeros((3, 4), np.float32)
    x[0, 0] = 1e-6
    _, rstd = nbnorm.rms_norm(x)
    np.testing.assert_allclose(rstd[1], 1 / np.sqrt(np.finfo(np.float32).eps), rtol=1e-6)
    _, rstd16 = nbnorm.rms_norm(x.astype(np.float16))
    np.testing.assert_allclose(rstd16[1], 1 / np.sqrt(np.finfo(np.float16).eps), rtol=1e-6)


# ------------------------------------------------------------------ PyTorch
@pytest.mark.parametrize("memory", ["nchw", "channels_last"])
@pytest.mark.parametrize("name", MEMBERS)
def test_pytorch_forward_and_autograd(name, memory):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    shape = (4, 6, 5, 7)
    x = normal(shape, np.float32, seed=20, loc=1.5, scale=2.0)
    if memory == "channels_last":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    m = Member(name, shape, axis=(-2, -1), groups=3)
    w, b = params(m, np.float32, seed=21)
    dy = normal(shape, np.float32, seed=22)
    xt = torch.from_numpy(x).requires_grad_(True)
    wt = torch.from_numpy(w).requires_grad_(True)
    bt = None if b is None else torch.from_numpy(b).requires_grad_(True)
    if name == "layer":
        yt = F.layer_norm(xt, (5, 7), wt, bt, eps=1e-5)
    elif name == "group":
        yt = F.group_norm(xt, 3, wt, bt, eps=1e-5)
    elif name == "instance":
        yt = F.instance_norm(xt, weight=wt, bias=bt, eps=1e-5)
    else:
        yt = F.rms_norm(xt, (5, 7), wt)
    yt.backward(torch.from_numpy(dy))
    got = m.forward(nbnorm, x, w, b)
    grads = m.backward(nbnorm, dy, x, got[1:], w)
    scale = float(np.abs(yt.detach().numpy()).max())
    check_close(got[0], yt.detach().numpy(), np.float32, scale, f"{name} y vs torch", k=64)
    check_close(grads[0], xt.grad.numpy(), np.float32, float(np.abs(xt.grad.numpy()).max()),
                f"{name} dx vs torch", k=256)
    for g, t in zip(grads[1:], (wt, bt)):
        if t is not None:
            check_close(g, t.grad.numpy(), np.float32, float(np.abs(t.grad.numpy()).max()),
                        f"{name} param grad vs torch", k=256)


def test_instance_norm_running_statistics_as_pytorch():
    torch = pytest.importorskip("torch")
    x = normal((5, 3, 4, 6), np.float32, seed=23, loc=2.0, scale=3.0)
    rm = np.arange(3, dtype=np.float32)
    rv = np.ones(3, np.float32) * 2
    rmt, rvt = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
    torch.nn.functional.instance_norm(torch.from_numpy(x), rmt, rvt, use_input_stats=True,
                                      momentum=0.3, eps=1e-5)
    nbnorm.instance_norm(x, running_mean=rm, running_var=rv, momentum=0.3)
    np.testing.assert_allclose(rm, rmt.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(rv, rvt.numpy(), rtol=1e-6, atol=1e-6)
    rm2, rv2 = np.arange(3.0), np.ones(3) * 2
    R.instance_norm(x, running_mean=rm2, running_var=rv2, momentum=0.3)
    np.testing.assert_allclose(rm, rm2, rtol=1e-6)
    np.testing.assert_allclose(rv, rv2, rtol=1e-6)


# ------------------------------------------------------------------ errors
def test_bad_arguments_raise_named_errors_and_change_nothing():
    x = normal((2, 6, 3, 3), np.float32, seed=30)
    out = np.zeros_like(x)
    w = np.ones(6, np.float32)
    rm, rv = np.zeros(6, np.float32), np.ones(6, np.float32)
    saved = [a.copy() for a in (x, out, rm, rv)]
    cases = [
        (ValueError, "num_groups", lambda: nbnorm.group_norm(x, 4, out=out)),
        (ValueError, "num_groups", lambda: nbnorm.group_norm(x, 0, out=out)),
        (TypeError, "num_groups", lambda: nbnorm.group_norm(x, 2.0, out=out)),
        (ValueError, "channel_axis", lambda: nbnorm.group_norm(x, 2, channel_axis=0, out=out)),
        (nbnorm.AxisError, "channel_axis", lambda: nbnorm.instance_norm(x, channel_axis=4,
                                                                        out=out)),
        (ValueError, "weight", lambda: nbnorm.group_norm(x, 2, np.ones(5, np.float32), out=out)),
        (ValueError, "bias", lambda: nbnorm.layer_norm(x, None, np.ones(6), out=out)),
        (nbnorm.AxisError, "axis", lambda: nbnorm.layer_norm(x, axis=4, out=out)),
        (ValueError, "axis", lambda: nbnorm.rms_norm(x, axis=(1, -3), out=out)),
        (ValueError, "axis", lambda: nbnorm.layer_norm(x, axis=(), out=out)),
        (TypeError, "x", lambda: nbnorm.layer_norm(x.astype(np.int32), out=out)),
        (ValueError, "out", lambda: nbnorm.layer_norm(x, out=out[:1])),
        (ValueError, "out", lambda: nbnorm.rms_norm(x, out=out.astype(np.float64))),
        (ValueError, "running_var", lambda: nbnorm.instance_norm(x, running_mean=rm, out=out)),
        (ValueError, "running_mean", lambda: nbnorm.instance_norm(
            x, running_mean=rm[:3], running_var=rv, out=out)),
        (ValueError, "x", lambda: nbnorm.instance_norm(
            x[:, :, :1, :1], running_mean=rm, running_var=rv)),
        (ValueError, "eps", lambda: nbnorm.rms_norm(x, eps=-1.0, out=out)),
        (ValueError, "invstd", lambda: nbnorm.group_norm_backward(
            x, x, np.zeros((2, 2)), np.ones((2, 3)), 2, out=out)),
        (TypeError, "dy", lambda: nbnorm.layer_norm_backward(
            x.astype(np.float64), x, np.zeros((2, 6, 3)), np.ones((2, 6, 3)), out=out)),
        (TypeError, "rstd", lambda: nbnorm.rms_norm_backward(x, x, None, out=out)),
        (ValueError, "out", lambda: nbnorm.layer_norm(x, out=x[::-1])),   # partial overlap
    ]
    for exc, word, call in cases:
        with pytest.raises(exc, match=word):
            call()
        for a, s in zip((x, out, rm, rv), saved):
            np.testing.assert_array_equal(a, s)


@pytest.mark.cuda
def test_device_arrays_property_and_running_statistics():
    """CUDA (simulator without a GPU): random members, shapes and layouts
    against the reference; instance norm's running statistics as on the CPU;
    errors as on the CPU, device arguments untouched."""
    bk = Backend("cuda")
    rng = np.random.default_rng(41)
    for case in range(6):
        name = MEMBERS[case % 4]
        nd = int(rng.integers(2, 5))
        shape = tuple(int(v) for v in rng.integers(1, 5, nd))
        if name in ("layer", "rms"):
            ax = tuple(sorted(rng.choice(nd, int(rng.integers(1, nd + 1)), replace=False)))
            m = Member(name, shape, axis=tuple(int(a) - nd if a % 2 else int(a) for a in ax))
        else:
            ca = int(rng.integers(1, nd))
            m = Member(name, shape, groups=1, channel_axis=ca)
        x = relayout(normal(shape, np.float32, seed=case, loc=3.0),
                     perm=tuple(rng.permutation(nd)), flip=(0,), step=1 + case % 2)
        w, b = params(m, np.float32, seed=case, with_bias=bool(case % 2))
        run_forward(m, x, w, b, bk=bk)
        run_backward(m, x, w, seed=case, bk=bk)
    x = normal((3, 4, 3, 2), np.float32, seed=42, loc=2.0)
    rm, rv = np.arange(4, dtype=np.float32), np.full(4, 2, np.float32)
    xd, rmd, rvd = bk.on(x, rm, rv)
    nbnorm.instance_norm(xd, running_mean=rmd, running_var=rvd, momentum=0.3)
    nbnorm.instance_norm(x, running_mean=rm, running_var=rv, momentum=0.3)
    np.testing.assert_allclose(bk.get(rmd), rm, rtol=1e-6)
    np.testing.assert_allclose(bk.get(rvd), rv, rtol=1e-6)
    saved = bk.get(xd).copy()
    with pytest.raises(ValueError, match="num_groups"):
        nbnorm.group_norm(xd, 3)
    with pytest.raises(ValueError, match="weight"):
        nbnorm.layer_norm(xd, *bk.on(np.ones(3, np.float32)))
    with pytest.raises(TypeError, match="weight"):
        nbnorm.layer_norm(xd, np.ones(2, np.float32))        # a host weight for device x
    np.testing.assert_array_equal(bk.get(xd), saved)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape, axis, order", [
    ((300, 1000), -1, "C"),         # short rows: the one-run path, threads
    ((5, 4097), -1, "C"),           # rows beyond one block: the fused walk
    ((3, 70000), -1, "C"),          # few long statistics: the chunked reduction
    ((40, 30, 20), 1, "C"),         # innermost dimension kept: by columns
    ((64, 3, 40), (0, 2), "F"),
    ((300, 1000), -1, "F"),
])
def test_layer_norm_is_batch_norm_on_every_path(shape, axis, order, dtype):
    """Without weight and bias, layer norm's statistics and ``y`` are
    ``batch_norm_forward``'s over the same axes bit for bit, at a large
    offset (where a rounded mean would show), on each of its paths; with
    per-element weight and bias ``y`` is batch norm's ``y·w + b`` to the
    rounding of that map."""
    x = np.asarray(normal(shape, dtype, seed=7, loc=2000.0), order=order)
    got = nbnorm.layer_norm(x, axis=axis)
    expect = nbnorm.batch_norm_forward(x, axis=axis)
    for g, e in zip(got, expect):
        np.testing.assert_array_equal(g, e)
    ax = tuple(sorted(a % x.ndim for a in np.atleast_1d(axis)))
    pshape = tuple(shape[a] for a in ax)
    rng = np.random.default_rng(3)
    w, b = (rng.standard_normal(pshape).astype(stat_dtype(dtype)) for _ in range(2))
    y = nbnorm.layer_norm(x, w, b, axis=axis)[0].astype(np.float64)
    expand = tuple(slice(None) if d in ax else None for d in range(x.ndim))
    scaled = expect[0].astype(np.float64) * w[expand]
    ref = scaled + b[expand]
    # the map's float32 rounding, then the rounding of batch norm's y (in
    # the reference) and of layer norm's y, each half an ulp of x's dtype
    tol = (4 * eps(stat_dtype(dtype)) * (np.abs(scaled) + np.abs(b[expand]))
           + eps(dtype) * (np.abs(scaled) + np.abs(ref)))
    assert np.all(np.abs(y - ref) <= tol)


@pytest.mark.parametrize("name", ["layer", "rms"])
def test_short_rows_exact_at_large_offsets(name):
    """Short contiguous rows (the tokens × hidden case) take the one-run path
    of the fused kernel; its float64 y at mean/std = 10⁸ is exact to a few ulp of y, not of the
    mean (a rounded mean would leave errors of ulp(10⁸)·invstd ≈ 1.5·10⁻⁸)."""
    from fractions import Fraction

    from nbnorm._cpu import backend  # noqa: F401  (loads the CPU backend and its family)
    from nbnorm._cpu import family as F
    from nbnorm._cpu.norms import one_run
    from nbnorm import _geometry
    from exact import exact_moments
    x = normal((6, 64), np.float64, seed=50, loc=1e8 if name == "layer" else 3.0)
    geo = _geometry.over_axes(x.shape, -1)
    assert one_run(F._plan(geo, x, np.empty_like(x)))
    y = (nbnorm.layer_norm(x) if name == "layer" else nbnorm.rms_norm(x, eps=1e-5))[0]
    mean, var = exact_moments(x, -1)
    for k in range(x.shape[0]):
        if name == "layer":
            inv = 1 / np.sqrt(float(var[k]) + 1e-5)
            exact = np.array([float((Fraction(v) - mean[k]) * Fraction(inv)) for v in x[k]])
        else:
            ms = sum(Fraction(v) ** 2 for v in x[k]) / x.shape[1]
            exact = x[k] / np.sqrt(float(ms) + 1e-5)
        assert np.abs(y[k] - exact).max() <= 8 * np.finfo(np.float64).eps * np.abs(exact).max()
