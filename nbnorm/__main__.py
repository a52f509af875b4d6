"""``python -m nbnorm``: self-check and benchmark on built-in synthetic data.

Runs every public operation on the CPU for several memory layouts, checks
each against the float64 NumPy reference, and prints a table of time,
effective GB/s, fraction of copy bandwidth, speed-up over NumPy (and
PyTorch CPU when installed) and the maximum scaled error.  Exits with status
1 if any check fails, 2 for a usage error (an option out of range, or a
``--shape`` whose run needs more memory than is available).  ``--compile``
only builds Numba's cache of every CPU kernel (:mod:`nbnorm._compile`).
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import re
import sys
import time

#: Memory a run holds at its peak (``needed_bytes``), measured (VmHWM) on
#: 1–17 M elements, PyTorch peers included: 73, 90 and 120 bytes per element
#: of x for float16, float32 and float64 at 17 M elements — about 8 arrays
#: of x's dtype (x, dy, their channels-last copies, outputs, the NumPy
#: peers' temporaries) and 7 float64 arrays (the references and their error
#: arithmetic); counted here with about 15 % to spare: 9 of the dtype ...
DTYPE_ARRAYS = 9
#: ... and 64 bytes (8 float64 arrays) per element
REFERENCE_BYTES = 64
ITEMSIZE = {"float16": 2, "float32": 4, "float64": 8}
#: the process: Python, NumPy, Numba and PyTorch imported (0.2–0.6 GB
#: resident), the kernels compiled on a cold cache (0.25 GB more at the
#: peak: 1.19 GB in all for 2 M float64 elements, against 0.93 GB warm), and
#: the freed arrays below the allocator's mmap threshold that it keeps
BASE_BYTES = 10**9


def _int(text):
    """``int(text)`` with argparse's error for anything else."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def max_threads():
    """The most threads Numba allows (``numba.config.NUMBA_NUM_THREADS``);
    reading it launches no threads."""
    from numba import config
    return int(config.NUMBA_NUM_THREADS)


def threads_arg(text):
    """``--threads``: an integer in 1..NUMBA_NUM_THREADS."""
    n, hi = _int(text), max_threads()
    if not 1 <= n <= hi:
        raise argparse.ArgumentTypeError(
            f"expected an integer in 1..{hi} (1..NUMBA_NUM_THREADS on this machine), got {n}")
    return n


def repeat_arg(text):
    """``--repeat``: an integer >= 1."""
    n = _int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {n}")
    return n


def shape_arg(text):
    """``--shape``: four positive integers ``N,C,H,W`` with ``H·W >= 2``.

    Training-mode batch norm needs more than one value per statistic; the
    NCHW cases reduce ``N·H·W`` values into each, the "rows (N*C, H*W)"
    case only ``H·W``, so ``H·W >= 2`` is what every case needs.
    """
    parts = text.split(",")
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(
            f"expected four comma-separated positive integers N,C,H,W, got {text!r}")
    try:
        shape = tuple(int(s) for s in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected four comma-separated positive integers N,C,H,W, got {text!r}") from None
    if min(shape) < 1:
        raise argparse.ArgumentTypeError(
            f"expected four positive integers N,C,H,W (each >= 1), got {text!r}")
    n, c, h, w = shape
    if h * w < 2:
        raise argparse.ArgumentTypeError(
            f"expected H*W >= 2 (at least 2 values per statistic: training-mode batch norm "
            f"of the rows (N*C, H*W) case reduces over H*W alone), got {text!r}")
    return shape


def needed_bytes(shape, dtype):
    """Bytes of memory a run on ``shape`` holds at its peak, the process
    included (an estimate slightly above the measured peaks; see
    ``REFERENCE_BYTES``)."""
    return BASE_BYTES + math.prod(shape) * (DTYPE_ARRAYS * ITEMSIZE[dtype] + REFERENCE_BYTES)


def _cgroup_free():
    """Memory left under this process's cgroup limit (v2, then v1), or None."""
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                          "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit) as f:
                text = f.read().strip()
            if text == "max":
                return None
            with open(usage) as f:
                return max(int(text) - int(f.read().strip()), 0)
        except (OSError, ValueError):
            continue
    return None


def available_memory():
    """Bytes of memory available to this process without swapping, or None
    when unknown: Linux's ``MemAvailable`` (else ``os.sysconf``'s available,
    else physical pages), capped by a cgroup limit."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    for name in ("SC_AVPHYS_PAGES", "SC_PHYS_PAGES"):
        if avail is not None:
            break
        try:
            avail = os.sysconf(name) * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            pass
    if avail is not None and avail <= 0:
        avail = None
    cg = _cgroup_free()
    if cg is not None:
        avail = cg if avail is None else min(avail, cg)
    return avail


def _size(n):
    return f"{n:,} bytes ({n / 1e9:.3g} GB)"


def memory_error(shape, dtype, available):
    """Why a run on ``shape`` cannot fit (a message for ``--shape``), or None."""
    elements = math.prod(shape)
    nbytes = elements * ITEMSIZE[dtype]
    dims = ",".join(map(str, shape))
    if nbytes > sys.maxsize:
        have = "" if available is None else f"; {_size(available)} of memory is available"
        return (f"{dims} is {elements:,} elements: {_size(nbytes)} of {dtype} for x alone, more "
                f"than one array can address ({_size(sys.maxsize)}){have}")
    need = needed_bytes(shape, dtype)
    if available is not None and need > available:
        return (f"{dims} needs about {_size(need)} of memory ({elements:,} elements: x, dy and "
                f"their copies in {dtype}, the references in float64), but only "
                f"{_size(available)} is available; choose a smaller shape")
    return None


def write_readme(path, text):
    """Replace the code block between the ``main-table`` markers of ``path``."""
    from nbnorm._bench import write_between
    write_between(path, "main-table", "```\n" + text.rstrip() + "\n```")


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m nbnorm", description=__doc__.splitlines()[0])
    # a negative value such as "-1,3,4,4" is read as the option's argument,
    # not as an unknown option, so that its error names the valid range
    # (Python >= 3.13 does this by default)
    if hasattr(p, "_negative_number_matcher"):
        p._negative_number_matcher = re.compile(r"^-\d")
    p.add_argument("--shape", type=shape_arg, default="64,128,56,56",
                   help="4-D NCHW shape: positive integers N,C,H,W with H*W >= 2 "
                        "(default 64,128,56,56: 103 MB of float32)")
    p.add_argument("--dtype", default=None, choices=["float16", "float32", "float64"],
                   help="default float32 (with --compile: all three)")
    p.add_argument("--threads", type=threads_arg, default=None,
                   help="numba threads, 1..NUMBA_NUM_THREADS (default: all)")
    p.add_argument("--repeat", type=repeat_arg, default=7,
                   help="timed calls per case (median), >= 1")
    p.add_argument("--quick", action="store_true", help="small shape (8,32,28,28), 3 repeats")
    p.add_argument("--no-peers", action="store_true", help="skip NumPy/PyTorch timings")
    p.add_argument("--readme", metavar="PATH",
                   help="also write the table into PATH between its main-table markers")
    p.add_argument("--compile", action="store_true",
                   help="only build Numba's cache of every CPU kernel (for --dtype, default "
                        "all), so that later processes start without compiling")
    args = p.parse_args(argv)
    if args.compile:
        from nbnorm._compile import compile_all
        t0 = time.perf_counter()
        built = compile_all((args.dtype,) if args.dtype else ("float16", "float32", "float64"))
        print(f"{built} builds compiled in {time.perf_counter() - t0:.1f} s; the cache is ready")
        return 0
    args.dtype = args.dtype or "float32"
    shape = (8, 32, 28, 28) if args.quick else args.shape
    why = memory_error(shape, args.dtype, available_memory())
    if why:
        p.error(f"argument --shape: {why}")

    t0 = time.perf_counter()
    import numba
    import numpy as np

    import nbnorm
    from nbnorm._bench import format_table, gpu_available, run_cases, run_cuda_cases
    from nbnorm._bench_family import run_family_cases
    t_import = time.perf_counter() - t0

    repeat = 3 if args.quick else args.repeat
    if args.threads is not None:
        numba.set_num_threads(args.threads)
    head = (f"nbnorm {nbnorm.__version__} · numba {numba.__version__} · numpy {np.__version__} · "
            f"{platform.processor() or platform.machine()} · {numba.get_num_threads()} threads · "
            f"import {t_import:.2f} s")
    print(head)
    rows, copy_bw = run_cases(shape, args.dtype, repeat=repeat, with_peers=not args.no_peers)
    rows += run_family_cases(shape, args.dtype, repeat=repeat, copy_bw=copy_bw,
                             with_peers=not args.no_peers)
    print(f"copy bandwidth (parallel copy, read + write): {copy_bw / 1e9:.1f} GB/s")
    if gpu_available():
        gpu_rows, gpu_bw = run_cuda_cases(shape, args.dtype, repeat=repeat)
        rows += gpu_rows
        print(f"GPU copy bandwidth (device to device, read + write): {gpu_bw / 1e9:.0f} GB/s")
    print()
    table = format_table(rows)
    print(table)
    if args.readme:
        write_readme(args.readme, f"{head}\ncopy bandwidth {copy_bw / 1e9:.1f} GB/s\n\n{table}")
    print("* vs NumPy: the speed-up over NumPy on the CPU rows, over CuPy on the GPU rows")
    failed = [r for r in rows if not r.ok]
    if failed:
        print(f"\n{len(failed)} check(s) FAILED", file=sys.stderr)
        return 1
    print(f"\nall {len(rows)} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
