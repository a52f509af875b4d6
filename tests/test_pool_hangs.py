"""The output pool (nbnorm._pool) never hangs: a child forked while another
thread holds the pool, finalizers and signal handlers that drop pooled
arrays (or call nbnorm) while the pool is in use on their own thread, many
threads; NBNORM_POOL_BYTES and set_pool_limit take what users write or say
clearly what is wrong; one holder class serves every block size.

Whatever could hang runs in a subprocess under a timeout, so that a
regression fails instead of hanging the suite."""
from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import nbnorm
from nbnorm import _pool

TIMEOUT = 60
needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork")

PRELUDE = """
import gc, os, signal, sys, threading, time
import numpy as np, nbnorm
from nbnorm import _pool
X = np.ones((1024, 4096), np.float32)       # 16 MB: its outputs are pooled
nbnorm.layer_norm(X)                        # compiled before anything else

def pooled():
    y = nbnorm.layer_norm(X)[0]
    assert not y.flags.owndata and y[0, 0] == 0
    return y

def wait_child(pid, timeout=20):
    # the child's exit code; a child still running after `timeout` is killed (-1)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return -1
"""


def run_py(code, env=None, prelude=PRELUDE):
    """Run ``prelude`` + ``code`` in a fresh interpreter; the words of the last line
    it prints (TBB may print warnings before it), or a failure on a non-zero
    exit or when it does not finish within TIMEOUT s."""
    env = dict(os.environ, **(env or {}))
    env["PYTHONPATH"] = os.getcwd() + os.pathsep + env.get("PYTHONPATH", "")
    try:
        p = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], env=env,
                           capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"no result within {TIMEOUT} s (hang)\n{e.stdout}\n{e.stderr}")
    assert p.returncode == 0, p.stdout + p.stderr[-3000:]
    lines = p.stdout.strip().splitlines()
    return lines[-1].split() if lines else []


# ---------------------------------------------------------------- fork

@needs_fork
def test_fork_while_another_thread_holds_the_pool_lock():
    out = run_py("""
        held, done = threading.Event(), threading.Event()
        def hold():
            with _pool._pool.lock:
                held.set()
                done.wait()
        t = threading.Thread(target=hold)
        t.start()
        held.wait()
        pid = os.fork()
        if pid == 0:
            y = pooled()
            del y                                   # back into the child's own pool
            os._exit(0 if nbnorm.release_memory() > 0 else 3)
        done.set()
        t.join()
        print(wait_child(pid))
    """)
    assert out == ["0"]


@needs_fork
def test_fork_repeatedly_while_threads_use_the_pool():
    out = run_py("""
        stop = threading.Event()
        def work():
            while not stop.is_set():
                del_me = pooled()
                del del_me
        threads = [threading.Thread(target=work) for _ in range(3)]
        for t in threads:
            t.start()
        codes = []
        for _ in range(40):
            pid = os.fork()
            if pid == 0:
                pooled()
                os._exit(0)
            codes.append(wait_child(pid))
        stop.set()
        for t in threads:
            t.join()
        print(*codes)
    """)
    assert out == ["0"] * 40


# ---------------------------------------------------------------- re-entry

def test_dropping_a_pooled_array_while_this_thread_holds_the_pool_lock():
    out = run_py("""
        y = pooled()
        with _pool._pool.lock:
            del y                                   # its holder's finalizer gives the block back
        print(nbnorm.release_memory() > 0)          # kept, not lost
    """)
    assert out == ["True"]


def test_a_signal_handler_drops_a_pooled_array_while_the_pool_lock_is_held():
    out = run_py("""
        ys = [pooled()]
        ran = []
        def handler(signum, frame):
            ys.clear()
            ran.append(nbnorm.release_memory())
        signal.signal(signal.SIGUSR1, handler)
        with _pool._pool.lock:
            os.kill(os.getpid(), signal.SIGUSR1)
            for _ in range(1000):                   # the handler runs between bytecodes
                if ran:
                    break
                time.sleep(0.001)
        print(len(ran), pooled().shape == X.shape)
    """)
    assert out == ["1", "True"]


class _CallOnGet(dict):
    """A dict whose ``get`` first calls ``hook`` (once): installed as the
    pool's idle map, it runs code inside ``take`` while the pool is in use,
    as a finalizer or signal handler would."""

    hook = None

    def get(self, *args):
        hook, type(self).hook = type(self).hook, None
        if hook is not None:
            hook()
        return super().get(*args)


@pytest.mark.parametrize("inside_take", [
    # gc inside take collects a cycle whose finalizer drops a pooled array
    "ys = [pooled()]\n"
    "class Dropper:\n"
    "    def __del__(self): ys.clear()\n"
    "d = Dropper(); d.me = d; del d\n"
    "hook = gc.collect",
    # a finalizer or signal handler inside take calls nbnorm on a pooled size, or frees memory
    "hook = lambda: pooled()",
    "hook = nbnorm.release_memory",
], ids=["gc-drops-an-array", "calls-nbnorm", "releases-memory"])
def test_finalizers_inside_take_return(inside_take):
    out = run_py(f"""
        gc.disable()
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_pool_hangs import _CallOnGet
        {inside_take.replace(chr(10), chr(10) + ' ' * 8)}
        _CallOnGet.hook = hook
        _pool._pool.idle = _CallOnGet(_pool._pool.idle)
        y = pooled()
        assert _CallOnGet.hook is None              # it ran
        del y
        y = pooled()
        print("ok", nbnorm.release_memory() >= 0)
    """)
    assert out == ["ok", "True"]


def within(seconds, fn):
    """Run ``fn`` on a daemon thread; fail if it is not done after ``seconds``
    (a deadlocked thread is left behind, holding nothing the suite uses)."""
    errors = []

    def run():
        try:
            fn()
        except BaseException as e:              # reported on the test's thread
            errors.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"no result within {seconds} s (hang)"
    if errors:
        raise errors[0]


def test_a_block_given_back_while_the_pool_is_busy_is_kept_for_later():
    within(TIMEOUT, _give_back_while_busy)


def _give_back_while_busy():
    pool = _pool.Pool(1 << 30)
    block = np.empty(_pool.GRAIN, np.uint8)

    def give_back_inside():
        pool.give_back(block)                      # re-entry: must not wait
        assert pool.idle_bytes == 0 and len(pool.returned) == 1

    _CallOnGet.hook = give_back_inside
    pool.idle = _CallOnGet()
    fresh = np.empty(2 * _pool.GRAIN, np.uint8)
    assert pool.take(1, lambda n: fresh) is fresh  # nothing idle yet: the hook ran first
    assert _CallOnGet.hook is None
    assert pool.take(1, lambda n: fresh) is block  # sorted in by the next take
    pool.give_back(block)
    assert pool.release() == _pool.GRAIN and pool.release() == 0


# ---------------------------------------------------------------- limits

@pytest.mark.parametrize("text, nbytes", [
    ("123456789", 123456789), ("1e9", 10**9), ("512M", 512 << 20), ("512MB", 512 * 10**6),
    ("512MiB", 512 << 20), ("1GiB", 1 << 30), ("1G", 1 << 30), ("1gb", 10**9), ("64k", 64 << 10),
    ("1.5GiB", 3 << 29), (" 2 TB ", 2 * 10**12), ("100B", 100), ("0", 0),
])
def test_pool_bytes_accepted(text, nbytes):
    out = run_py("from nbnorm import _pool; print(_pool._pool.limit)", {"NBNORM_POOL_BYTES": text},
                 prelude="")
    assert out == [str(nbytes)]


@pytest.mark.parametrize("text", ["-1", "abc", "nan", "inf", "1e999", "-5M", "12 parsecs", ""])
def test_pool_bytes_rejected_at_import(text):
    p = subprocess.run([sys.executable, "-c", "import nbnorm"], capture_output=True, text=True,
                       env=dict(os.environ, NBNORM_POOL_BYTES=text, PYTHONPATH=os.getcwd()),
                       timeout=TIMEOUT)
    assert p.returncode != 0
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("ValueError: NBNORM_POOL_BYTES: expected") and repr(text) in last


@pytest.mark.parametrize("bad, error", [
    (-1, ValueError), (1.5, ValueError), (float("nan"), ValueError), (float("inf"), ValueError),
    (-1e9, ValueError), ("1G", TypeError), (None, TypeError),
])
def test_set_pool_limit_rejects(bad, error):
    prev = _pool._pool.limit
    with pytest.raises(error, match="nbytes"):
        nbnorm.set_pool_limit(bad)
    assert _pool._pool.limit == prev


def test_set_pool_limit_takes_whole_numbers():
    prev = nbnorm.set_pool_limit(np.int64(1 << 20))
    try:
        assert nbnorm.set_pool_limit(2e6) == 1 << 20 and _pool._pool.limit == 2_000_000
    finally:
        nbnorm.set_pool_limit(prev)


# ---------------------------------------------------------------- holders

def test_holder_classes_stay_bounded_over_many_block_sizes():
    def n_types():
        gc.collect()
        # type(o), not isinstance: a dead weak proxy raises on isinstance
        return sum(issubclass(type(o), type) for o in gc.get_objects())

    fresh = lambda n: np.empty(n, np.uint8)        # pages never touched: cheap
    prev = nbnorm.set_pool_limit(1)                # enabled, but keeps no block
    try:
        before = n_types()
        kinds = set()
        for k in range(200):
            x = np.empty(_pool.MIN_BYTES + k * _pool.GRAIN, np.uint8)
            y = _pool.empty_like(x, fresh)
            assert y is not None and y.shape == x.shape
            kinds.add(type(y.base.base if isinstance(y.base, np.ndarray) else y.base))
            del x, y
        assert n_types() - before < 64 and len(kinds) <= 64
    finally:
        nbnorm.set_pool_limit(prev)
