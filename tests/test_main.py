"""The main job, ``python -m nbnorm``: self-check and benchmark."""
from __future__ import annotations

import numpy as np

from nbnorm import __main__ as main_module
from nbnorm._bench import format_table, run_cases


def test_quick_run_passes_its_checks(capsys):
    assert main_module.main(["--quick", "--no-peers", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "all 12 checks passed" in out
    for op in ("moments", "forward", "inference", "backward"):
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


def test_a_wrong_kernel_fails_the_check(monkeypatch):
    """The self-check is not decorative: a kernel off by 1e-3 is reported."""
    import nbnorm._bench as bench
    real = bench.nb.batch_norm_inference
    monkeypatch.setattr(bench.nb, "batch_norm_inference",
                        lambda *a, **k: real(*a, **k) * 1.001)
    rows, _ = run_cases((4, 6, 5, 7), "float32", repeat=1, with_peers=False)
    bad = [r for r in rows if not r.ok]
    assert bad and all(r.op == "inference" for r in bad)
