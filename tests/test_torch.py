"""PyTorch (CPU) as a second oracle: training forward with running stats,
eval mode, and autograd gradients, for NCHW and channels-last tensors."""
from __future__ import annotations

import numpy as np
import pytest

import nbnorm

from helpers import channels_last, normal

torch = pytest.importorskip("torch")

F32 = float(np.finfo(np.float32).eps)


def close(got, ref, scale=1.0, k=64):
    """float32 agreement: k·eps relative to the data scale."""
    ref = np.asarray(ref, np.float64)
    np.testing.assert_allclose(np.asarray(got, np.float64), ref, rtol=k * F32,
                               atol=k * F32 * scale * max(1.0, float(np.abs(ref).max())))


@pytest.mark.parametrize("memory", ["nchw", "channels_last"])
@pytest.mark.parametrize("shape", [(8, 5, 7, 6), (2, 3, 1, 2), (16, 2, 33, 33)])
def test_training_forward_backward_and_running_stats(shape, memory):
    x = normal(shape, np.float32, seed=60, loc=1.5, scale=2.0)
    C = shape[1]
    rng = np.random.default_rng(61)
    w = rng.standard_normal(C).astype(np.float32)
    b = rng.standard_normal(C).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    rm0 = rng.standard_normal(C).astype(np.float32)
    rv0 = (rng.random(C) + 0.5).astype(np.float32)

    bn = torch.nn.BatchNorm2d(C, eps=1e-5, momentum=0.1)
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(w))
        bn.bias.copy_(torch.from_numpy(b))
        bn.running_mean.copy_(torch.from_numpy(rm0))
        bn.running_var.copy_(torch.from_numpy(rv0))
    xt = torch.from_numpy(x.copy())
    if memory == "channels_last":
        xt = xt.contiguous(memory_format=torch.channels_last)
    xt.requires_grad_(True)
    bn.train()
    yt = bn(xt)
    (yt * torch.from_numpy(g)).sum().backward()

    xv = channels_last(x) if memory == "channels_last" else x
    gv = channels_last(g) if memory == "channels_last" else g
    rm, rv = rm0.copy(), rv0.copy()
    y, mean, invstd = nbnorm.batch_norm_forward(xv, w, b, axis=(0, 2, 3), running_mean=rm,
                                                running_var=rv, momentum=0.1)
    close(y, yt.detach().numpy())
    close(rm, bn.running_mean.numpy())
    close(rv, bn.running_var.numpy())
    dx, dw, db = nbnorm.batch_norm_backward(gv, xv, mean, invstd, w, axis=(0, 2, 3))
    n = x.size // C
    close(dx, xt.grad.numpy())
    close(dw, bn.weight.grad.numpy(), k=4 * int(np.sqrt(n)) + 64)
    close(db, bn.bias.grad.numpy(), k=4 * int(np.sqrt(n)) + 64)

    # eval mode with the updated running statistics
    bn.eval()
    xe = torch.from_numpy(x.copy()).requires_grad_(True)
    ye = bn(xe)
    (ye * torch.from_numpy(g)).sum().backward()
    y2 = nbnorm.batch_norm_inference(xv, rm, rv, w, b, axis=(0, 2, 3))
    close(y2, ye.detach().numpy())
    dx2, _, _ = nbnorm.batch_norm_backward(gv, xv, rm, 1 / np.sqrt(rv.astype(np.float64) + 1e-5),
                                           w, axis=(0, 2, 3), training=False)
    close(dx2, xe.grad.numpy())


def test_batchnorm1d_over_axis_0():
    x = normal((20, 7), np.float32, seed=62, loc=-3.0)
    bn = torch.nn.BatchNorm1d(7, affine=False)
    yt = bn(torch.from_numpy(x))
    rm, rv = np.zeros(7, np.float32), np.ones(7, np.float32)
    y, _, _ = nbnorm.batch_norm_forward(x, axis=0, running_mean=rm, running_var=rv)
    close(y, yt.numpy())
    close(rm, bn.running_mean.numpy())
    close(rv, bn.running_var.numpy())
