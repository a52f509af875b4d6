"""The examples run as users run them, and the digits network trains like
the same network in PyTorch, step for step."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nbnorm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))


def test_digits_example_trains_and_folds():
    pytest.importorskip("sklearn")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    p = subprocess.run([sys.executable, str(ROOT / "examples" / "digits.py")], env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    line = p.stdout.strip().splitlines()[-1]
    acc = float(line.split("test accuracy ")[1].split(";")[0])
    assert acc >= 0.97 and "predicts the same: True" in line, line


def test_digits_network_matches_pytorch_step_for_step():
    """float64: the same initial weights and batches give the same losses for
    200 SGD steps (1e-10 relative), and the state dicts load both ways."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    import digits
    x_tr, y_tr, x_te, _ = digits.data(np.float64)
    net = digits.network(seed=3, dtype=np.float64)
    lin = [m for m in net.layers if isinstance(m, digits.Linear)]
    bns = [m for m in net.layers if isinstance(m, nbnorm.BatchNorm)]
    nn = torch.nn
    tnet = nn.Sequential(nn.Linear(64, 128), nn.BatchNorm1d(128), nn.ReLU(),
                         nn.Linear(128, 64), nn.BatchNorm1d(64), nn.ReLU(),
                         nn.Linear(64, 10)).double()
    tlin = [m for m in tnet if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for ours, theirs in zip(lin, tlin):
            theirs.weight.copy_(torch.from_numpy(ours.weight))
            theirs.bias.copy_(torch.from_numpy(ours.bias))
    opt = torch.optim.SGD(tnet.parameters(), lr=0.1)
    net.mode("train")
    tnet.train()
    gen = digits.batches(len(y_tr), 64, 20, seed=4)
    for step in range(200):
        idx = next(gen)
        loss, dlogits = digits.cross_entropy(net(x_tr[idx]), y_tr[idx])
        net.backward(dlogits)
        net.step(0.1)
        opt.zero_grad()
        tloss = nn.functional.cross_entropy(tnet(torch.from_numpy(x_tr[idx])),
                                            torch.from_numpy(y_tr[idx]))
        tloss.backward()
        opt.step()
        assert abs(loss - tloss.item()) <= 1e-10 * abs(tloss.item()), f"step {step}"
    net.mode("eval")
    tnet.eval()
    ref = tnet(torch.from_numpy(x_te)).detach().numpy()
    np.testing.assert_allclose(net(x_te), ref, rtol=1e-9, atol=1e-9)
    tbns = [m for m in tnet if isinstance(m, nn.BatchNorm1d)]
    for ours, theirs in zip(bns, tbns):
        tsd = {k: v.numpy() for k, v in theirs.state_dict().items()}
        for k, v in ours.state_dict().items():          # trained alike
            np.testing.assert_allclose(v, tsd[k], rtol=1e-9, atol=1e-12 * np.abs(tsd[k]).max())
        fresh = nbnorm.BatchNorm(ours.num_features, dtype=np.float64).load_state_dict(
            theirs.state_dict())                         # torch → nbnorm
        for k, v in fresh.state_dict().items():
            np.testing.assert_array_equal(v, tsd[k])
        back = nn.BatchNorm1d(ours.num_features).double()
        back.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in
                              ours.state_dict().items()})   # nbnorm → torch
        for k, v in ours.state_dict().items():
            np.testing.assert_array_equal(back.state_dict()[k].numpy(), v)


def test_anomalies_example_matches_xarray_and_finds_the_warm_spell():
    pytest.importorskip("xarray")
    pytest.importorskip("pandas")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, str(ROOT / "examples" / "anomalies.py")], env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    line = p.stdout.strip().splitlines()[-1]
    err = float(line.split("max |z − xarray's| = ")[1].split(";")[0])
    peak = float(line.split("warm spell peak z = ")[1].split(";")[0])
    assert err < 1e-6 and peak > 3, line
