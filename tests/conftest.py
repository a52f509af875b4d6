"""Test configuration: the CUDA simulator where there is no GPU, Hypothesis
profiles, and a count of the Hypothesis examples a run executes.

Hypothesis profiles (``HYPOTHESIS_PROFILE=<name> python -m pytest``, or
pytest's ``--hypothesis-profile=<name>``; the default is ``ci``):

``ci``
    What CI runs: every property test runs ``5 ×`` its base count of
    examples (the run's last line says how many that was).
``long``
    A soak: ``200 ×`` the base counts.  The numerics' sweep is one file:
    ``HYPOTHESIS_PROFILE=long python -m pytest tests/test_sweep.py``, or
    the whole suite.
``dev``
    ``1 ×`` the base counts, for quick local iterations.

The *base count* of a test is the ``max_examples`` of its own
``@settings(...)`` (Hypothesis' default, 100, for a test without one).  A
test's own ``@settings`` would override the profile, so at collection the
base is multiplied by the profile's factor here, in one place, for every
``@given`` test of the suite: write ``@settings(max_examples=<base>)`` and
the profile scales it.

All profiles: no deadline (the first example of a test compiles Numba
kernels, and the machine may be shared); randomized, not derandomized, so
that each CI run tries examples no earlier run has tried — a failure prints
the falsifying example and a ``@reproduce_failure`` blob, and is saved in
the local example database (``.hypothesis/``) to be replayed first next
time; the ``too_slow`` health check is off because the strategies draw
only small arrays and seeds, so a slow draw means a loaded machine, not a
strategy that needs fixing.

At the end of a run one line reports the examples executed (counted by
wrapping each test's body, ``test.hypothesis.inner_test``)::

    hypothesis: 5260 examples in 19 tests (profile ci, 5 × base counts, 182 rejected)

("rejected": bodies stopped by ``assume`` or an invalid ``data.draw``; the
count was checked against ``--hypothesis-show-statistics``' passing +
failing examples.)
"""
import os
import shutil
import tempfile

if not os.path.exists("/dev/nvidiactl"):
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

# The run compiles into one Numba cache of its own, empty at the start (unless
# NUMBA_CACHE_DIR is set): the process that starts the run (the xdist
# controller, or the only process with -n 0) creates it before any worker
# starts, the workers inherit it through the environment, and it is removed
# when the run ends.  The workers share it safely: nbnorm locks every save to
# its cache directories (nbnorm._cache).
_RUN_CACHE = None
if "PYTEST_XDIST_WORKER" not in os.environ and "NUMBA_CACHE_DIR" not in os.environ:
    _RUN_CACHE = tempfile.mkdtemp(prefix="nbnorm-tests-numba-")
    os.environ["NUMBA_CACHE_DIR"] = _RUN_CACHE

from collections import Counter  # noqa: E402
from functools import wraps  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis.errors import StopTest, UnsatisfiedAssumption  # noqa: E402

# ------------------------------------------------------------ profiles
#: examples per test = FACTOR[profile] × the test's base count
FACTOR = {"dev": 1, "ci": 5, "long": 200}

for _name, _factor in FACTOR.items():
    settings.register_profile(
        _name,
        max_examples=100 * _factor,          # tests without @settings: base 100
        deadline=None,
        derandomize=False,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def profile_factor():
    """The current profile's factor (1 for a profile not defined here)."""
    return FACTOR.get(settings.get_current_profile_name(), 1)


# ------------------------------------------- scaling and counting plugin
_counts = {}            # nodeid -> Counter(valid=..., invalid=...)
_current = [None]       # nodeid of the test being run


def _count(fn):
    """Wrap the body of a @given test to count its executions."""
    inner = fn.hypothesis.inner_test

    @wraps(inner)
    def counted(*args, **kwargs):
        c = _counts.setdefault(_current[0], Counter())
        try:
            result = inner(*args, **kwargs)
        except (UnsatisfiedAssumption, StopTest):
            c["invalid"] += 1          # rejected by assume()/a draw: not an example
            raise
        except BaseException:
            c["valid"] += 1            # a failing example
            raise
        c["valid"] += 1
        return result

    fn.hypothesis.inner_test = counted


def _scale(fn, factor):
    """Multiply the max_examples of the test's own @settings by ``factor``."""
    own = getattr(fn, "_hypothesis_internal_settings_applied", False)
    current = getattr(fn, "_hypothesis_internal_use_settings", None)
    if own and current is not None:
        fn._hypothesis_internal_use_settings = settings(
            current, max_examples=max(1, round(current.max_examples * factor)))
    elif own:
        raise pytest.UsageError(
            "conftest.py: cannot find the @settings of a Hypothesis test to scale it "
            "(Hypothesis internals changed?)")


#: the files that take longest, longest first (seconds of a worker in a run on
#: an empty cache, 2 workers: 460, 180, 170, 150, 130, 130, 110, 100, 100, 90,
#: 60, 50, 40): they start first, so that under ``-n`` the rest fills in around
#: them (``--no-loadscope-reorder`` in ``pyproject.toml`` keeps this order; by
#: default xdist would start the files with the most tests first)
FIRST = ("test_compile.py", "test_grouped.py", "test_family.py", "test_moments.py",
         "test_placement.py", "test_skipna.py", "test_exact.py", "test_dask.py",
         "test_forward.py", "test_backward.py", "test_memory.py", "test_concurrency.py",
         "test_cuda_ptx.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(FIRST)))   # stable otherwise
    factor = profile_factor()
    for item in items:
        fn = getattr(getattr(item, "obj", None), "__func__", getattr(item, "obj", None))
        if not getattr(fn, "is_hypothesis_test", False):
            continue
        _counts.setdefault(item.nodeid, Counter())
        if getattr(fn, "_nbnorm_scaled", False):       # parametrized: once per function
            continue
        _scale(fn, factor)
        _count(fn)
        fn._nbnorm_scaled = True


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    _current[0] = item.nodeid
    try:
        yield
    finally:
        _current[0] = None


def pytest_sessionfinish(session):
    """An xdist worker hands its counts to the controller (``-n``)."""
    out = getattr(session.config, "workeroutput", None)
    if out is not None:
        out["nbnorm_hypothesis"] = {k: dict(c) for k, c in _counts.items() if k is not None}


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """The xdist controller adds up the counts of its workers."""
    for k, c in getattr(node, "workeroutput", {}).get("nbnorm_hypothesis", {}).items():
        _counts.setdefault(k, Counter()).update(c)


def pytest_terminal_summary(terminalreporter):
    ran = {k: c for k, c in _counts.items() if k is not None and sum(c.values())}
    if not _counts:
        return
    valid = sum(c["valid"] for c in ran.values())
    invalid = sum(c["invalid"] for c in ran.values())
    extra = f", {invalid} rejected" if invalid else ""
    terminalreporter.write_line(
        f"hypothesis: {valid} examples in {len(ran)} tests (profile "
        f"{settings.get_current_profile_name()}, {profile_factor()} × base counts{extra})")


# ------------------------------------------------------------ backends
@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def backend(request):
    """Every backend with an array type of its own (CPU; CUDA on a GPU or
    the simulator): one set of checks, run on each."""
    from helpers import Backend
    return Backend(request.param)


_SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


@pytest.fixture(params=["cpu"] + ([] if _SIMULATED else
                                  [pytest.param("cuda", marks=pytest.mark.cuda)]))
def large_backend(request):
    """The backends for checks on large shapes (the chunked, multi-block
    paths): the CPU, and CUDA on a real GPU — not on the simulator, which
    runs each GPU thread in Python."""
    from helpers import Backend
    return Backend(request.param)


def pytest_unconfigure(config):
    """Remove the run's Numba cache (see the top of this module)."""
    if _RUN_CACHE is not None:
        shutil.rmtree(_RUN_CACHE, ignore_errors=True)