"""``python -m nbnorm``: self-check and benchmark on built-in synthetic data.

Runs every public operation on the CPU for several memory layouts, checks
each against the float64 NumPy reference, and prints a table of time,
effective GB/s, fraction of copy bandwidth, speed-up over NumPy (and
PyTorch CPU when installed) and the maximum scaled error.  Exits with status
1 if any check fails.
"""
from __future__ import annotations

import argparse
import platform
import re
import sys
import time


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
    p.add_argument("--dtype", default="float32", choices=["float16", "float32", "float64"])
    p.add_argument("--threads", type=threads_arg, default=None,
                   help="numba threads, 1..NUMBA_NUM_THREADS (default: all)")
    p.add_argument("--repeat", type=repeat_arg, default=7,
                   help="timed calls per case (median), >= 1")
    p.add_argument("--quick", action="store_true", help="small shape (8,32,28,28), 3 repeats")
    p.add_argument("--no-peers", action="store_true", help="skip NumPy/PyTorch timings")
    p.add_argument("--readme", metavar="PATH",
                   help="also write the table into PATH between its main-table markers")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    import numba
    import numpy as np

    import nbnorm
    from nbnorm._bench import format_table, gpu_available, run_cases, run_cuda_cases
    from nbnorm._bench_family import run_family_cases
    t_import = time.perf_counter() - t0

    shape = (8, 32, 28, 28) if args.quick else args.shape
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
