"""A small network in NumPy + nbnorm layers, trained on scikit-learn's digits.

    linear(64→128) → BatchNorm → ReLU → linear(128→64) → BatchNorm → ReLU → linear(64→10)

trained with plain SGD on softmax cross-entropy, then evaluated in eval mode
and folded for inference (each BatchNorm folded into the linear layer
before it with ``fold_into``); the folded network must predict exactly what
the eval-mode network predicts.

    python examples/digits.py            # about 5 s: prints accuracy and timing
"""
from __future__ import annotations

import sys
import time

import numpy as np

import nbnorm


class Linear:
    """``y = x·Wᵀ + b`` with PyTorch's layout ``W`` (out, in) and initialization
    (uniform in ±1/√in for both)."""

    def __init__(self, n_in, n_out, rng, dtype):
        bound = 1 / np.sqrt(n_in)
        self.weight = rng.uniform(-bound, bound, (n_out, n_in)).astype(dtype)
        self.bias = rng.uniform(-bound, bound, n_out).astype(dtype)

    def __call__(self, x):
        self.x = x
        return x @ self.weight.T + self.bias

    def backward(self, dy):
        self.weight_grad = dy.T @ self.x
        self.bias_grad = dy.sum(axis=0)
        return dy @ self.weight


class ReLU:
    def __call__(self, x):
        self.mask = x > 0
        return x * self.mask

    def backward(self, dy):
        return dy * self.mask


class Network:
    def __init__(self, layers):
        self.layers = layers

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def backward(self, dy):
        for layer in reversed(self.layers):
            dy = layer.backward(dy)

    def step(self, lr):
        for layer in self.layers:
            for name in ("weight", "bias"):
                if getattr(layer, name, None) is not None:
                    setattr(layer, name, getattr(layer, name) - lr * getattr(layer, name + "_grad"))

    def mode(self, mode):
        for layer in self.layers:
            if isinstance(layer, nbnorm.BatchNorm):
                getattr(layer, mode)()


def network(seed=0, dtype=np.float32, widths=(64, 128, 64, 10)):
    rng = np.random.default_rng(seed)
    a, b, c, d = widths
    return Network([Linear(a, b, rng, dtype), nbnorm.BatchNorm(b, dtype=dtype), ReLU(),
                    Linear(b, c, rng, dtype), nbnorm.BatchNorm(c, dtype=dtype), ReLU(),
                    Linear(c, d, rng, dtype)])


def cross_entropy(logits, labels):
    """``(mean loss, d loss / d logits)`` of softmax cross-entropy."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    n = len(labels)
    loss = -np.log(p[np.arange(n), labels]).mean()
    p[np.arange(n), labels] -= 1
    return loss, p / n


def data(dtype=np.float32, seed=0):
    from sklearn.datasets import load_digits
    digits = load_digits()
    x = (digits.data / 16.0).astype(dtype)
    y = digits.target
    order = np.random.default_rng(seed).permutation(len(y))
    n_train = int(0.75 * len(y))
    tr, te = order[:n_train], order[n_train:]
    return x[tr], y[tr], x[te], y[te]


def batches(n, batch, epochs, seed=0):
    """The index batches of every epoch (drop the last partial one)."""
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(n)
        for i in range(0, n - batch + 1, batch):
            yield order[i:i + batch]


def train(net, x, y, *, epochs=30, batch=64, lr=0.1, seed=0):
    """Plain SGD; returns the loss of every step."""
    net.mode("train")
    losses = []
    for idx in batches(len(y), batch, epochs, seed):
        loss, dlogits = cross_entropy(net(x[idx]), y[idx])
        net.backward(dlogits)
        net.step(lr)
        losses.append(float(loss))
    return losses


def folded(net):
    """An inference network with every BatchNorm folded into its linear layer."""
    out = []
    for layer in net.layers:
        if isinstance(layer, nbnorm.BatchNorm):
            lin = out[-1]
            fused = Linear.__new__(Linear)
            fused.weight, fused.bias = layer.fold_into(lin.weight, lin.bias, out_axis=0)
            out[-1] = fused
        else:
            out.append(layer)
    return Network(out)


def main():
    t0 = time.perf_counter()
    x_tr, y_tr, x_te, y_te = data()
    net = network()
    losses = train(net, x_tr, y_tr)
    net.mode("eval")
    pred = net(x_te).argmax(axis=1)
    acc = float((pred == y_te).mean())
    fpred = folded(net)(x_te).argmax(axis=1)
    same = bool(np.array_equal(fpred, pred))
    dt = time.perf_counter() - t0
    print(f"digits: {len(losses)} SGD steps, final loss {losses[-1]:.4f}, test accuracy "
          f"{acc:.4f}; folded network predicts the same: {same}; {dt:.1f} s")
    return 0 if acc >= 0.97 and same else 1


if __name__ == "__main__":
    sys.exit(main())
