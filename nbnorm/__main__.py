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
import sys
import time


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m nbnorm", description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="64,128,56,56",
                   help="4-D NCHW shape (default 64,128,56,56: 103 MB of float32)")
    p.add_argument("--dtype", default="float32", choices=["float16", "float32", "float64"])
    p.add_argument("--threads", type=int, default=None, help="numba threads (default: all)")
    p.add_argument("--repeat", type=int, default=7, help="timed calls per case (median)")
    p.add_argument("--quick", action="store_true", help="small shape (8,32,28,28), 3 repeats")
    p.add_argument("--no-peers", action="store_true", help="skip NumPy/PyTorch timings")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    import numba
    import numpy as np

    import nbnorm
    from nbnorm._bench import format_table, gpu_available, run_cases, run_cuda_cases
    t_import = time.perf_counter() - t0

    shape = (8, 32, 28, 28) if args.quick else tuple(int(s) for s in args.shape.split(","))
    repeat = 3 if args.quick else args.repeat
    if len(shape) != 4:
        p.error("--shape: expected 4 comma-separated sizes (N,C,H,W)")
    if args.threads:
        numba.set_num_threads(args.threads)
    print(f"nbnorm {nbnorm.__version__} · numba {numba.__version__} · numpy {np.__version__} · "
          f"{platform.processor() or platform.machine()} · {numba.get_num_threads()} threads · "
          f"import {t_import:.2f} s")
    rows, copy_bw = run_cases(shape, args.dtype, repeat=repeat, with_peers=not args.no_peers)
    print(f"copy bandwidth (parallel copy, read + write): {copy_bw / 1e9:.1f} GB/s")
    if gpu_available():
        gpu_rows, gpu_bw = run_cuda_cases(shape, args.dtype, repeat=repeat)
        rows += gpu_rows
        print(f"GPU copy bandwidth (device to device, read + write): {gpu_bw / 1e9:.0f} GB/s")
    print()
    print(format_table(rows))
    print("* vs NumPy: the speed-up over NumPy on the CPU rows, over CuPy on the GPU rows")
    failed = [r for r in rows if not r.ok]
    if failed:
        print(f"\n{len(failed)} check(s) FAILED", file=sys.stderr)
        return 1
    print(f"\nall {len(rows)} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
