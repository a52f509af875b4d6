"""Hypothesis strategies: shapes, axis subsets, dtypes and strided views."""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from helpers import FLOATS, keep_shape, norm_axis, relayout

# sizes 1 and 2 are the edge cases of merging and of n − 1; bias towards them
sides = st.one_of(st.sampled_from([1, 2]), st.integers(1, 7))
dtypes = st.sampled_from(FLOATS)


@st.composite
def shapes(draw, min_dims=1, max_dims=5, max_size=2000):
    """Shapes of 1–5 dimensions with small sides (1 and 2 frequent)."""
    nd = draw(st.integers(min_dims, max_dims))
    shape = tuple(draw(sides) for _ in range(nd))
    while np.prod(shape) > max_size:
        shape = tuple(max(1, s // 2) for s in shape)
    return shape


@st.composite
def axes(draw, ndim, allow_none=False, allow_empty=False, min_n=1, shape=None):
    """A random axis subset as an int or a tuple, with random negative aliases.

    With ``shape`` and ``min_n``: at least ``min_n`` elements per statistic
    (tried by adding axes; ``None`` if impossible).
    """
    if allow_none and draw(st.booleans()):
        chosen = list(range(ndim))
        return None
    lo = 0 if allow_empty else 1
    chosen = draw(st.lists(st.integers(0, ndim - 1), min_size=lo, max_size=ndim, unique=True))
    if shape is not None and min_n > 1:
        rest = [d for d in range(ndim) if d not in chosen]
        while np.prod([shape[d] for d in chosen]) < min_n and rest:
            chosen.append(rest.pop(0))
    spelled = [d - ndim if draw(st.booleans()) else d for d in chosen]
    if len(spelled) == 1 and draw(st.booleans()):
        return spelled[0]
    return tuple(spelled)


@st.composite
def layouts(draw, ndim):
    """Keyword arguments of :func:`helpers.relayout`: memory order of the
    dimensions, C/F order, a step (gaps filled with NaN), flipped dims."""
    return dict(
        perm=tuple(draw(st.permutations(range(ndim)))),
        order=draw(st.sampled_from("CF")),
        step=draw(st.sampled_from([1, 1, 2])),
        start=draw(st.sampled_from([0, 1])),
        flip=tuple(d for d in range(ndim) if draw(st.booleans())),
    )


@st.composite
def arrays(draw, shape, dtype, *, loc=None, scale=None):
    """Random normal values of ``shape``/``dtype`` (drawn offset and scale),
    stored in a random layout.  Returns the strided array."""
    seed = draw(st.integers(0, 2**32 - 1))
    if loc is None:
        loc = draw(st.sampled_from([0.0, 0.0, 1.0, -3.0, 50.0]))
    if scale is None:
        scale = draw(st.sampled_from([1.0, 1.0, 0.01, 10.0]))
    rng = np.random.default_rng(seed)
    values = (rng.standard_normal(shape) * scale + loc).astype(dtype)
    return relayout(values, **draw(layouts(len(shape))))


@st.composite
def reduction_cases(draw, *, min_n=1, allow_none=False, allow_empty=False, dtype=None, max_dims=5):
    """``(x, axis)``: a strided float array and an axis spec reducing
    at least ``min_n`` elements into each statistic."""
    shape, ax, dt = draw(shape_axis_dtype(min_n, allow_none, allow_empty, dtype, max_dims))
    return draw(arrays(shape, dt)), ax


@st.composite
def shape_axis_dtype(draw, min_n, allow_none, allow_empty, dtype, max_dims):
    """``(shape, axis, dtype)`` with at least ``min_n`` elements per statistic."""
    shape = draw(shapes(max_dims=max_dims))
    if min_n > 1 and np.prod(shape) < min_n:
        shape = shape[:-1] + (shape[-1] + min_n,)
    ax = draw(axes(len(shape), allow_none=allow_none, allow_empty=allow_empty,
                   min_n=min_n, shape=shape))
    return shape, ax, draw(dtypes) if dtype is None else dtype


# ------------------------------------------------------------ adversarial data
#: large offsets, |mean|/std: float16 1e3 (spacing 0.5 there), float32 1e4,
#: float64 1e8 — where E[x²] − E[x]² in the statistics' precision is garbage
BIG_OFFSET = {np.dtype(np.float16): 1e3, np.dtype(np.float32): 1e4, np.dtype(np.float64): 1e8}
#: large constants per dtype for constant statistics
BIG_CONSTANT = {np.dtype(np.float16): 60000.0, np.dtype(np.float32): 3.0e7,
                np.dtype(np.float64): 1.0e15}
#: kinds of adversarial values (``near_max`` is float16 only)
KINDS = ("normal", "offset", "subnormal", "near_max")


@st.composite
def adversarial_values(draw, shape, dtype, axis, *, kinds=KINDS, nonfinite=True):
    """C-contiguous values of ``shape``/``dtype`` and their kind.

    ``kind``: ``normal`` (drawn offset and scale), ``offset`` (standard
    normal about ±BIG_OFFSET), ``subnormal`` (magnitudes below the dtype's
    smallest normal), ``near_max`` (float16 only: uniform in ±65504, some
    exactly ±65504; squares overflow float16).  Then, each with some
    probability: a random subset of the statistics (reductions over
    ``axis``) made constant (0, ±1.5, ±BIG_CONSTANT or a subnormal), and
    one to three values set to NaN, +inf or −inf.  The kind is suffixed with
    ``+const`` and ``+nonfinite`` when they apply.
    """
    dt = np.dtype(dtype)
    fi = np.finfo(dt)
    kinds = [k for k in kinds if k != "near_max" or dt == np.float16]
    kind = draw(st.sampled_from(kinds))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    z = rng.standard_normal(shape)
    with np.errstate(under="ignore"):
        if kind == "normal":
            loc = draw(st.sampled_from([0.0, 1.0, -3.0, 50.0]))
            scale = draw(st.sampled_from([1.0, 0.01, 10.0]))
            v = z * scale + loc
        elif kind == "offset":
            v = z + draw(st.sampled_from([1.0, -1.0])) * BIG_OFFSET[dt]
        elif kind == "subnormal":
            k = draw(st.integers(1, fi.nmant))
            v = z * (float(fi.smallest_normal) * 2.0 ** -k)
        else:
            v = rng.uniform(-1.0, 1.0, shape) * float(fi.max)
            v[rng.random(shape) < 0.25] = float(fi.max)
            v[rng.random(shape) < 0.25] = -float(fi.max)
        v = np.asarray(v.astype(dt))
    ax = norm_axis(axis, v.ndim)
    if draw(st.integers(0, 2)) == 0:
        mask = rng.random(keep_shape(shape, ax)) < draw(st.sampled_from([0.3, 0.7, 1.0]))
        c = draw(st.sampled_from([0.0, 1.5, -1.5, BIG_CONSTANT[dt], -BIG_CONSTANT[dt],
                                  float(fi.smallest_subnormal) * 3]))
        v[np.broadcast_to(mask, shape)] = c
        kind += "+const"
    if nonfinite and v.size and draw(st.integers(0, 3)) == 0:
        for _ in range(draw(st.integers(1, 3))):
            i = tuple(int(rng.integers(0, s)) for s in shape)
            v[i] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        kind += "+nonfinite"
    return v, kind


def constant_statistics(x, axis):
    """Keepdims boolean mask of the statistics over which ``x`` is one
    finite value."""
    ax = norm_axis(axis, np.ndim(x))
    x = np.asarray(x)
    with np.errstate(invalid="ignore"):
        hi = np.max(x, axis=ax, keepdims=True)
        lo = np.min(x, axis=ax, keepdims=True)
    return (hi == lo) & np.isfinite(hi)


@st.composite
def adversarial_cases(draw, *, min_n=1, allow_none=False, allow_empty=False, dtype=None,
                      max_dims=5, nonfinite=True):
    """``(x, axis, kind)`` as :func:`reduction_cases`, with the values of
    :func:`adversarial_values` stored in a random layout."""
    shape, ax, dt = draw(shape_axis_dtype(min_n, allow_none, allow_empty, dtype, max_dims))
    values, kind = draw(adversarial_values(shape, dt, ax, nonfinite=nonfinite))
    return relayout(values, **draw(layouts(len(shape)))), ax, kind
