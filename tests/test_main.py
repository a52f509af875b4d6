"""The main job, ``python -m nbnorm``: self-check and benchmark."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest

from nbnorm import __main__ as main_module
from nbnorm.__main__ import max_threads, repeat_arg, shape_arg, threads_arg
from nbnorm._bench import format_table, run_cases


def test_quick_run_passes_its_checks(capsys):
    assert main_module.main(["--quick", "--no-peers", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "all 20 checks passed" in out       # 4 ops × 3 layouts + 4 members × 2
    for op in ("moments", "forward", "inference", "backward", "group_norm", "instance_norm",
               "layer_norm", "rms_norm"):
        assert op in out


def test_every_case_is_checked_against_the_reference():
    rows, copy_bw = run_cases((4, 6, 5, 7), "float64", repeat=1, with_peers=False)
    assert copy_bw > 0
    assert {(r.op, r.layout) for r in rows} == {
        (op, lay) for op in ("moments", "forward", "inference", "backward")
        for lay in ("NCHW", "NHWC-as-NCHW", "rows (N*C, H*W)")}
    assert all(r.ok and r.error < 1e-12 for r in rows)
    assert all(np.isnan(r.vs_numpy) for r in rows)
    table = format_table(rows)
    assert table.count("\n") == len(rows) + 1


def test_every_member_of_the_family_is_checked():
    from nbnorm._bench_family import run_family_cases
    rows = run_family_cases((4, 6, 5, 7), "float64", repeat=1, with_peers=False)
    assert {r.op for r in rows} == {f"{m}_norm {op}" for m in ("group", "instance", "layer", "rms")
                                     for op in ("forward", "backward")}
    assert all(r.ok and r.error < 1e-12 for r in rows)


def test_a_wrong_family_kernel_fails_the_check(monkeypatch):
    import nbnorm._bench_family as bench
    from nbnorm._bench_family import run_family_cases
    real = bench.nb.layer_norm_backward
    monkeypatch.setattr(bench.nb, "layer_norm_backward",
                        lambda *a, **k: (real(*a, **k)[0] * 1.001,) + real(*a, **k)[1:])
    rows = run_family_cases((4, 6, 5, 7), "float32", repeat=1, with_peers=False)
    assert [r.op for r in rows if not r.ok] == ["layer_norm backward"]


def test_a_wrong_kernel_fails_the_check(monkeypatch):
    """The self-check is not decorative: a kernel off by 1e-3 is reported."""
    import nbnorm._bench as bench
    real = bench.nb.batch_norm_inference
    monkeypatch.setattr(bench.nb, "batch_norm_inference",
                        lambda *a, **k: real(*a, **k) * 1.001)
    rows, _ = run_cases((4, 6, 5, 7), "float32", repeat=1, with_peers=False)
    bad = [r for r in rows if not r.ok]
    assert bad and all(r.op == "inference" for r in bad)


# ------------------------------------------------------- command-line errors
REPO = Path(__file__).resolve().parents[1]


def run_cli(*args, timeout=120):
    """``python -m nbnorm *args`` in a subprocess; returns the CompletedProcess."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "nbnorm", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _bad_options():
    hi = max_threads()
    threads = f"1..{hi}"
    shape = "N,C,H,W"
    return [
        (["--threads", "-1"], "--threads", threads),
        (["--threads", "0"], "--threads", threads),
        (["--threads", str(hi + 1)], "--threads", threads),
        (["--threads", "99999"], "--threads", threads),
        (["--threads", "two"], "--threads", "integer"),
        (["--repeat", "0"], "--repeat", ">= 1"),
        (["--repeat", "-3"], "--repeat", ">= 1"),
        (["--repeat", "1.5"], "--repeat", "integer"),
        (["--shape", "a,b,c,d"], "--shape", shape),
        (["--shape", "1,1,1,1"], "--shape", "H*W >= 2"),
        (["--shape", "3,2,1,1"], "--shape", "H*W >= 2"),     # N·H·W = 3 but H·W = 1
        (["--shape", "0,3,4,4"], "--shape", ">= 1"),
        (["--shape", "8,0,4,4"], "--shape", ">= 1"),
        (["--shape", "-1,3,4,4"], "--shape", ">= 1"),
        (["--shape=-1,3,4,4"], "--shape", ">= 1"),
        (["--shape", "8,3,-4,4"], "--shape", ">= 1"),
        (["--shape", "8,3,4"], "--shape", shape),
        (["--shape", "8,3,4,4,1"], "--shape", shape),
        (["--shape", "8,3,4,"], "--shape", shape),
        (["--shape", "8.0,3,4,4"], "--shape", shape),
        (["--shape", ""], "--shape", shape),
        (["--quick", "--shape", "0,3,4,4"], "--shape", ">= 1"),
        (["--dtype", "int8"], "--dtype", "float16"),
    ]


@pytest.mark.parametrize("args,option,valid", _bad_options(),
                         ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_option_is_a_usage_error(args, option, valid):
    """Exit status 2, argparse's usage message naming the option and the
    valid range, no traceback and nothing run."""
    r = run_cli(*args)
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    assert r.stderr.startswith("usage: python -m nbnorm"), r.stderr
    assert f"argument {option}" in r.stderr, r.stderr
    assert valid in r.stderr, r.stderr
    assert "checks passed" not in r.stdout


def test_option_checks_accept_their_bounds():
    hi = max_threads()
    assert hi == numba.config.NUMBA_NUM_THREADS and hi >= 1
    assert threads_arg("1") == 1 and threads_arg(str(hi)) == hi
    assert repeat_arg("1") == 1
    assert shape_arg("1,1,1,2") == (1, 1, 1, 2) and shape_arg(" 8, 32,28,28") == (8, 32, 28, 28)


@pytest.fixture
def restore_threads():
    before = numba.get_num_threads()
    yield
    numba.set_num_threads(before)


def test_smallest_valid_run_passes_its_checks(capsys, restore_threads):
    """The edge values of every option run; (2, 3, 2, 2) has 4 values per
    statistic in the rows case.  In process: the kernels are compiled once."""
    argv = ["--shape", "2,3,2,2", "--repeat", "1", "--threads", "1", "--no-peers"]
    assert main_module.main(argv) == 0
    out = capsys.readouterr().out
    assert "1 threads" in out and "all 20 checks passed" in out


# ------------------------------------------------- --shape against the memory
HUGE_SHAPES = [
    (["--shape", "100000,100000,100,100"], (100000, 100000, 100, 100), "float32"),
    (["--shape=100000,100000,100,100", "--dtype", "float64"], (100000, 100000, 100, 100),
     "float64"),
    (["--shape", "1000,1000,1000,1000", "--dtype", "float16"], (1000,) * 4, "float16"),
    # more bytes than one array can address (the product overflows int64)
    (["--shape", "99999999999,99999999999,99999999,2"], (99999999999, 99999999999, 99999999, 2),
     "float32"),
    (["--shape", f"{2**62},{2**62},{2**62},{2**62}", "--no-peers"], (2**62,) * 4, "float32"),
]


@pytest.mark.parametrize("args,shape,dtype", HUGE_SHAPES, ids=lambda v: " ".join(v)
                         if isinstance(v, list) else None)
def test_shape_too_large_for_memory_is_a_usage_error(args, shape, dtype):
    """Exit status 2 at once, a usage message naming --shape, the bytes
    needed and the bytes available — not NumPy's MemoryError traceback and
    status 1 ("check failed")."""
    from nbnorm.__main__ import needed_bytes
    r = run_cli(*args, timeout=60)
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    assert r.stderr.startswith("usage: python -m nbnorm"), r.stderr
    assert "argument --shape" in r.stderr and "available" in r.stderr, r.stderr
    assert r.stdout == ""                                  # nothing run, no header printed
    if math.prod(shape) * {"float16": 2, "float32": 4, "float64": 8}[dtype] > sys.maxsize:
        assert "more than one array can address" in r.stderr, r.stderr
    else:
        assert f"needs about {needed_bytes(shape, dtype):,} bytes" in r.stderr, r.stderr


def test_shape_is_checked_against_the_memory_available(monkeypatch, capsys):
    """The check compares ``needed_bytes`` with ``available_memory()``; a run
    that fits is not refused.  In process, with the available memory faked."""
    from nbnorm.__main__ import memory_error, needed_bytes
    shape = (2, 3, 2, 2)
    need = needed_bytes(shape, "float64")
    monkeypatch.setattr(main_module, "available_memory", lambda: need - 1)
    with pytest.raises(SystemExit) as e:
        main_module.main(["--shape", "2,3,2,2", "--dtype", "float64", "--no-peers"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --shape: 2,3,2,2 needs about {need:,} bytes" in err, err
    assert f"only {need - 1:,} bytes" in err, err
    # the count: arrays of x's size in x's dtype and in float64, and the process
    assert needed_bytes((1, 1, 1, 2), "float32") == main_module.BASE_BYTES + 2 * (
        main_module.DTYPE_ARRAYS * 4 + main_module.REFERENCE_BYTES)
    assert needed_bytes((64, 128, 56, 56), "float32") < 4 * 10**9      # the default shape
    assert memory_error((64, 128, 56, 56), "float32", 4 * 10**9) is None
    assert memory_error((2, 3, 2, 2), "float64", None) is None           # unknown: not refused
    assert "more than one array can address" in memory_error((2**62, 2, 1, 2), "float16", None)
    monkeypatch.setattr(main_module, "available_memory", lambda: need)
    argv = ["--shape", "2,3,2,2", "--dtype", "float64", "--no-peers", "--repeat", "1"]
    assert main_module.main(argv) == 0


def test_available_memory_is_plausible():
    from nbnorm.__main__ import available_memory
    avail = available_memory()
    if avail is None:
        pytest.skip("no way to read the available memory on this platform")
    assert 10**7 < avail < 2**50


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="Linux: VmHWM")
def test_needed_bytes_covers_a_measured_run():
    """A whole run's peak resident memory (VmHWM, the imports and kernels
    included) stays under ``needed_bytes`` (measured: 0.93 GB with the
    kernels cached, 1.19 GB compiling them, against 1.29 GB)."""
    from nbnorm.__main__ import needed_bytes
    code = ("import runpy, sys\n"
            "sys.argv = ['nbnorm', '--shape', '16,32,64,64', '--dtype', 'float64', "
            "'--repeat', '1']\n"
            "try:\n    runpy.run_module('nbnorm', run_name='__main__')\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0])\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    peak = int(r.stdout.strip().splitlines()[-1].split()[1]) * 1024
    assert peak <= needed_bytes((16, 32, 64, 64), "float64"), peak
