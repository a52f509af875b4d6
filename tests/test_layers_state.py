"""load_state_dict checks every value before assigning any (issue 21, part 6),
and layers agree with the functions on array-likes (torch CPU tensors).

The rule (``NormLayer.load_state_dict``): ``weight``, ``bias``,
``running_mean``, ``running_var`` are real (float or integer) arrays of the
layer's shape, finite in the layer's dtype, ``running_var >= 0``;
``num_batches_tracked`` a 0-d non-negative integer fitting int64 (a float
only when exactly whole).  ``TypeError`` for kinds, ``ValueError`` for values
and shapes, ``KeyError`` for keys; each names the key, and a call that
raises leaves the layer's state bitwise as it was.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nbnorm

from helpers import normal

LAYERS = {
    "batch": lambda: nbnorm.BatchNorm(3),
    "batch-f16": lambda: nbnorm.BatchNorm(3, dtype=np.float16),
    "batch-f64": lambda: nbnorm.BatchNorm(3, dtype=np.float64),
    "instance": lambda: nbnorm.InstanceNorm(3, affine=True, track_running_stats=True),
    "group": lambda: nbnorm.GroupNorm(1, 3),
    "layer": lambda: nbnorm.LayerNorm((3, 2)),
    "rms": lambda: nbnorm.RMSNorm(2),
}


def trained(kind):
    """A layer whose every state value differs from its defaults."""
    layer = LAYERS[kind]()
    for name in ("weight", "bias"):
        v = getattr(layer, name, None)
        if v is not None:
            v[...] = np.arange(1, v.size + 1).reshape(v.shape) * 0.5
    for i in range(2):
        layer(normal((4, 3, 2), np.float32, seed=i, loc=1.0 + i, scale=1.0 + i))
    return layer


def snapshot(layer):
    """The state dict, bitwise (dtype, shape and bytes of every value)."""
    return {k: (v.dtype.str, v.shape, v.tobytes()) for k, v in layer.state_dict().items()}


def good_state(layer):
    """A valid state dict different from the layer's."""
    return {k: (v + 3 if k == "num_batches_tracked" else v * 2 + 1)
            for k, v in layer.state_dict().items()}


def _bad_values(key, shape, dtype):
    """``(label, value, exception)``: values ``key`` must refuse."""
    if key == "num_batches_tracked":
        return [
            ("nan", np.float64("nan"), ValueError),
            ("inf", np.inf, ValueError),
            ("-inf", -np.inf, ValueError),
            ("-1", np.array(-1), ValueError),
            ("-1.0", -1.0, ValueError),
            ("2.7", np.array(2.7), ValueError),
            ("0.5-f32", np.float32(0.5), ValueError),
            ("1e30", np.array(1e30), ValueError),
            ("2**63-float", float(2**63), ValueError),
            ("2**63-int", 2**63, ValueError),
            ("10**30-int", 10**30, ValueError),
            ("uint64-max", np.array(2**64 - 1, np.uint64), ValueError),
            ("shape-(1,)", np.array([3]), ValueError),
            ("shape-(2,)", np.array([3, 4]), ValueError),
            ("complex", np.array(3 + 0j), TypeError),
            ("complex-py", 3 + 1j, TypeError),
            ("string", "5", TypeError),
            ("bytes", b"5", TypeError),
            ("bool", True, TypeError),
            ("np-bool", np.bool_(True), TypeError),
            ("none", None, TypeError),
            ("datetime", np.datetime64("2020-01-01"), TypeError),
        ]
    big = float(np.finfo(dtype).max) * 2 if dtype != np.float64 else None

    def at(v, dt=np.float64):
        a = np.ones(shape, dt)
        a.flat[-1] = v
        return a
    cases = [
        ("nan", at(np.nan), ValueError),
        ("inf", at(np.inf), ValueError),
        ("-inf", at(-np.inf), ValueError),
        ("nan-f16", at(np.nan, np.float16), ValueError),
        ("complex", np.ones(shape, np.complex128), TypeError),
        ("complex-real-valued", np.ones(shape) + 0j, TypeError),
        ("strings", np.full(shape, "1"), TypeError),
        ("bool", np.ones(shape, bool), TypeError),
        ("objects", np.full(shape, None, object), TypeError),
        ("datetime", np.full(shape, np.datetime64("2020-01-01")), TypeError),
        ("shape+1", np.ones(shape[:-1] + (shape[-1] + 1,)), ValueError),
        ("scalar", np.float64(1.0), ValueError),
        ("2-d", np.ones((1,) + shape), ValueError),
        ("ragged", [[1.0], [1.0, 2.0]], TypeError),
    ]
    if big is not None:
        cases.append(("past-dtype-max", at(big), ValueError))
        cases.append(("int-past-dtype-max", at(int(big), np.uint64 if big < 2**64 else object),
                      ValueError if big < 2**64 else TypeError))
    if key == "running_var":
        cases.append(("negative", at(-1.0), ValueError))
        cases.append(("tiny-negative", at(-1e-30), ValueError))
    return cases


def _cases():
    out = []
    for kind, make in LAYERS.items():
        layer = make()
        for key in layer.state_dict():
            shape = () if key == "num_batches_tracked" else tuple(getattr(layer, key).shape)
            for label, value, exc in _bad_values(key, shape, layer.dtype):
                out.append(pytest.param(kind, key, value, exc, id=f"{kind}-{key}-{label}"))
    return out


@pytest.mark.parametrize("kind,key,value,exc", _cases())
def test_a_bad_value_raises_and_changes_nothing(kind, key, value, exc):
    """Every key × bad value: the error names the key, and the layer's state
    is bitwise the same after it — also when the bad key comes last, after
    the others were read."""
    layer = trained(kind)
    before = snapshot(layer)
    good = good_state(layer)
    state = {k: v for k, v in good.items() if k != key}
    state[key] = value                                  # last: the others are read first
    with pytest.raises(exc, match=f"'{key}'"):
        layer.load_state_dict(state)
    assert snapshot(layer) == before
    with pytest.raises(exc, match=f"'{key}'"):
        layer.load_state_dict(state, strict=False)
    assert snapshot(layer) == before
    layer.load_state_dict(good)                         # the good state still loads
    assert snapshot(layer) != before


@pytest.mark.parametrize("kind", list(LAYERS))
def test_keys_and_non_mappings_raise_and_change_nothing(kind):
    layer = trained(kind)
    before = snapshot(layer)
    good = good_state(layer)
    for key in good:
        with pytest.raises(KeyError, match=f"missing keys \\['{key}'\\]"):
            layer.load_state_dict({k: v for k, v in good.items() if k != key})
        assert snapshot(layer) == before
    with pytest.raises(KeyError, match="unexpected keys \\['extra'\\]"):
        layer.load_state_dict(dict(good, extra=np.zeros(3)))
    assert snapshot(layer) == before
    for bad in ([("weight", np.ones(3))], list(good.values()), "weight", None):
        with pytest.raises(TypeError, match="expected a mapping"):
            layer.load_state_dict(bad)
        assert snapshot(layer) == before
    # not strict: unexpected keys are ignored (even bad ones), missing ones keep their values
    first = next(iter(good))
    partial = {first: good[first], "extra": "not an array"}
    layer.load_state_dict(partial, strict=False)
    after = snapshot(layer)
    assert after[first] != before[first]
    assert all(after[k] == before[k] for k in before if k != first)


@pytest.mark.parametrize("value,want", [
    (np.array(7), 7), (7, 7), (np.int32(7), 7), (np.uint64(7), 7), (np.array(7.0), 7),
    (7.0, 7), (np.float16(2048), 2048), (0, 0), (-0.0, 0), (2**63 - 1, 2**63 - 1),
    (np.array(2**63 - 1, np.uint64), 2**63 - 1), (float(2**62), 2**62),
])
def test_num_batches_tracked_accepts_whole_numbers(value, want):
    bn = trained("batch")
    bn.load_state_dict(dict(bn.state_dict(), num_batches_tracked=value))
    assert type(bn.num_batches_tracked) is int and bn.num_batches_tracked == want
    assert bn.state_dict()["num_batches_tracked"] == want


def test_accepted_arrays_and_the_layers_own_copies():
    """Integer arrays, zero and negative values where allowed (running_var 0,
    negative weight and mean), the largest finite value of the dtype; the
    loaded arrays are the layer's own copies in its dtype."""
    bn = nbnorm.BatchNorm(3)
    f32max = float(np.finfo(np.float32).max)
    state = {"weight": np.array([-1, 0, 2]), "bias": np.array([-f32max, 0.0, f32max]),
             "running_mean": np.array([-5.0, 0.0, 1e-45]), "running_var": np.array([0, 1, 2],
                                                                                   np.uint8),
             "num_batches_tracked": np.array(4)}
    bn.load_state_dict(state)
    for k in ("weight", "bias", "running_mean", "running_var"):
        v = getattr(bn, k)
        assert v.dtype == np.float32 and not np.shares_memory(v, state[k])
        np.testing.assert_array_equal(v, state[k].astype(np.float32))
    state["weight"][0] = 99
    assert bn.weight[0] == -1


@settings(max_examples=60)
@given(kind=st.sampled_from(list(LAYERS)), data=st.data(),
       value=st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                       st.floats(min_value=-1e6, max_value=1e6).map(round).map(float),
                       st.integers(min_value=-2**70, max_value=2**70),
                       st.complex_numbers(max_magnitude=1e6),
                       st.booleans(), st.text(max_size=3)))
def test_load_either_succeeds_as_the_rule_says_or_changes_nothing(kind, data, value):
    """One entry of a valid state replaced by a drawn scalar (the count) or
    an array holding it: the load succeeds exactly when the rule allows the
    value, with that value loaded; otherwise it raises and nothing changes."""
    layer = trained(kind)
    before = snapshot(layer)
    good = good_state(layer)
    key = data.draw(st.sampled_from(sorted(good)), label="key")
    if key == "num_batches_tracked":
        if isinstance(value, (bool, str, complex)):
            ok = False
        elif isinstance(value, int):
            ok = 0 <= value <= np.iinfo(np.int64).max
        else:
            ok = math.isfinite(value) and value.is_integer() and 0 <= value < 2.0**63
    else:
        arr = np.asarray(good[key]).astype(object)
        arr.flat[0] = value
        try:
            value = np.array(arr.tolist())       # the array NumPy makes of such a list
        except (ValueError, OverflowError):
            value = arr
        ok = value.dtype.kind in "fiu"
        if ok:
            with np.errstate(over="ignore"):
                cast = value.astype(layer.dtype)
            ok = bool(np.all(np.isfinite(value)) and np.all(np.isfinite(cast))
                      and (key != "running_var" or np.all(value >= 0)))
    state = dict(good, **{key: value})
    try:
        layer.load_state_dict(state)
    except (ValueError, TypeError) as e:
        assert not ok, f"{key}={value!r} refused: {e}"
        assert repr(key) in str(e)
        assert snapshot(layer) == before
    else:
        assert ok, f"{key}={value!r} accepted"
        got = layer.state_dict()[key]
        with np.errstate(over="ignore"):
            want = (np.int64(int(value)) if key == "num_batches_tracked"
                    else np.asarray(value).astype(layer.dtype))
        np.testing.assert_array_equal(got, want)


# ------------------------------------------ array-likes: layers and functions agree
def test_torch_cpu_tensors_come_back_as_numpy_from_layers_and_functions():
    """The function contract ("array-likes such as PyTorch CPU tensors ...
    return NumPy arrays") holds for the layers as well: outputs, ``dx`` and
    the parameter gradients of a layer called on torch CPU tensors are
    NumPy arrays equal to those of the same call on NumPy arrays, and so
    are the functions' results."""
    torch = pytest.importorskip("torch")
    x = normal((4, 3, 2), np.float64, seed=1, loc=1.0)
    dy = normal(x.shape, np.float64, seed=2)
    xt, dyt = torch.from_numpy(x.copy()), torch.from_numpy(dy.copy())
    xg = torch.from_numpy(x.copy()).requires_grad_(True)      # an autograd leaf, read via detach
    makers = [lambda: nbnorm.BatchNorm(3, dtype=np.float64),
              lambda: nbnorm.InstanceNorm(3, affine=True, track_running_stats=True,
                                          dtype=np.float64),
              lambda: nbnorm.GroupNorm(1, 3, dtype=np.float64),
              lambda: nbnorm.LayerNorm(2, dtype=np.float64),
              lambda: nbnorm.RMSNorm(2, dtype=np.float64)]
    for make in makers:
        for mode in ("train", "freeze", "eval"):
            for xin in (xt, xg):
                ref, ours = getattr(make(), mode)(), getattr(make(), mode)()
                y_ref, y = ref(x), ours(xin)
                name = f"{type(ours).__name__} {mode}"
                assert type(y) is np.ndarray, name
                np.testing.assert_array_equal(y, y_ref, err_msg=name)
                if mode == "eval":
                    continue
                dx_ref, dx = ref.backward(dy), ours.backward(dyt)
                assert type(dx) is np.ndarray, name
                np.testing.assert_array_equal(dx, dx_ref, err_msg=name)
                for g in ("weight_grad", "bias_grad"):
                    if getattr(ref, g) is not None:
                        assert type(getattr(ours, g)) is np.ndarray, (name, g)
                        np.testing.assert_array_equal(getattr(ours, g), getattr(ref, g))
                for k, v in ref.state_dict().items():
                    np.testing.assert_array_equal(ours.state_dict()[k], v, err_msg=name)
    # the functions, on the same tensors
    y, mean, invstd = nbnorm.batch_norm_forward(xt, axis=(0, 2))
    y_ref, mean_ref, invstd_ref = nbnorm.batch_norm_forward(x, axis=(0, 2))
    back = nbnorm.batch_norm_backward(dyt, xt, mean, invstd, axis=(0, 2))
    back_ref = nbnorm.batch_norm_backward(dy, x, mean_ref, invstd_ref, axis=(0, 2))
    for got, want in [(y, y_ref), (mean, mean_ref), (invstd, invstd_ref),
                      *zip(back, back_ref),
                      (nbnorm.batch_norm_inference(xg, mean, 1 / invstd**2, axis=(0, 2)),
                       nbnorm.batch_norm_inference(x, mean_ref, 1 / invstd_ref**2, axis=(0, 2))),
                      (nbnorm.layer_norm(xt)[0], nbnorm.layer_norm(x)[0]),
                      (nbnorm.group_norm(xt, 1)[0], nbnorm.group_norm(x, 1)[0])]:
        assert type(got) is np.ndarray
        np.testing.assert_array_equal(got, want)


def test_torch_state_dicts_are_checked_the_same():
    """A torch state dict (CPU tensors, an int64 count) loads; its bad values
    are refused as NumPy's are, changing nothing."""
    torch = pytest.importorskip("torch")
    bn = nbnorm.BatchNorm(3, dtype=np.float64)
    bn.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in
                        trained("batch-f64").state_dict().items()})
    assert snapshot(bn) == snapshot(trained("batch-f64"))
    with pytest.raises(ValueError, match="'num_batches_tracked'"):
        bn.load_state_dict(dict(bn.state_dict(), num_batches_tracked=torch.tensor(2.5)))
    with pytest.raises(ValueError, match="'running_var'"):
        bn.load_state_dict(dict(bn.state_dict(), running_var=torch.tensor([1.0, -1.0, 1.0])))
    assert snapshot(bn) == snapshot(trained("batch-f64"))


@pytest.mark.cuda
def test_a_layer_on_the_device_is_left_unchanged_by_a_failed_load():
    """On the device (Numba device arrays; the simulator without a GPU) the
    same: nothing is copied to the device until every value passed."""
    bn = trained("batch").to("cuda")
    before = snapshot(bn)
    good = good_state(bn)
    ptrs = {k: getattr(bn, k) for k in ("weight", "bias", "running_mean", "running_var")}
    for key, value in [("num_batches_tracked", 2.7), ("num_batches_tracked", np.nan),
                       ("running_var", -np.ones(3)), ("weight", np.array([1.0, np.inf, 1.0]))]:
        with pytest.raises(ValueError, match=f"'{key}'"):
            bn.load_state_dict(dict(good, **{key: value}))
        assert snapshot(bn) == before
        assert all(getattr(bn, k) is v for k, v in ptrs.items())
    bn.load_state_dict(good)
    assert all(hasattr(getattr(bn, k), "copy_to_host") for k in ptrs)
    assert snapshot(bn) == {k: (np.asarray(v).dtype.str, np.shape(v),
                                np.asarray(v, np.int64 if k == "num_batches_tracked"
                                           else np.float32).tobytes())
                            for k, v in good.items()}


def test_torch_bfloat16_values_load_exactly():
    torch = pytest.importorskip("torch")
    bn = trained("batch")
    sd = {k: torch.from_numpy(np.asarray(v)) for k, v in bn.state_dict().items()}
    sd["weight"] = torch.tensor([1.5, -2.0, 3.0], dtype=torch.bfloat16)
    bn.load_state_dict(sd)
    np.testing.assert_array_equal(bn.weight, np.array([1.5, -2.0, 3.0], np.float32))
    before = snapshot(bn)
    sd["bias"] = torch.tensor([1.0, float("nan"), 3.0], dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="'bias': expected finite values"):
        bn.load_state_dict(sd)
    assert snapshot(bn) == before
