"""The CPU outputs are bitwise those recorded in ``tests/data/snapshot_cpu.json``
(see ``tests/snapshot.py``): a move that should not change results did not."""
from __future__ import annotations

import pytest

import snapshot as S


def test_outputs_are_bitwise_the_recorded_snapshot():
    recorded = S.load()
    if recorded is None or recorded["machine"] != S.machine():
        pytest.skip(f"no snapshot recorded on this CPU ({S.machine()}); "
                    "python -m tests.snapshot --write records one")
    diff = S.differences(recorded["cases"], S.snapshot())
    assert not diff, f"{len(diff)} cases changed, e.g. {diff[:10]}"


def test_a_changed_bit_is_seen():
    """The comparison is bitwise: the next float after an output differs."""
    import numpy as np
    a = np.linspace(0, 1, 7, dtype=np.float32)
    b = a.copy()
    b[3] = np.nextafter(b[3], np.float32(2))
    assert S._digest(a) != S._digest(b)
    assert S._digest((a, a)) != S._digest((a,))
    assert S.differences({"k": S._digest(a)}, {"k": S._digest(b)}) == ["k"]
