"""Every CUDA kernel compiles to PTX for sm_80 and sm_90 with every signature
the backend launches it with (``nbnorm._cuda.kernels.kernel_signatures``),
and the PTX assembles (``ptxas`` inside nvJitLink, from the ``nvidia-nvjitlink``
wheel) without register spills, within :data:`REGISTER_CEILING` registers
per thread; the counts are printed (``-s``) and recorded in the documentation's GPU page
section.

Runs in a subprocess without ``NUMBA_ENABLE_CUDASIM`` (the simulator replaces
``numba.cuda`` in-process).  No GPU is needed, only NVVM; compiling a device
function asks for the current device's compute capability, which the
subprocess answers with the target one when no GPU is present.
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.cuda

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import json, sys
    cc = tuple(int(v) for v in sys.argv[1].split(","))
    try:
        from numba.cuda.cudadrv.nvvm import NVVM
        NVVM()
    except Exception as e:
        print(json.dumps({"skip": f"NVVM unavailable: {type(e).__name__}: {e}"}))
        sys.exit(0)
    from numba import cuda
    import numba.cuda.dispatcher as dispatcher
    try:
        cuda.get_current_device()
    except Exception:
        class _Target:
            compute_capability = cc
        dispatcher.get_current_device = lambda: _Target
    import re
    try:
        from cuda.bindings import nvjitlink
    except Exception:
        nvjitlink = None

    def resources(ptx):
        # (registers, spill bytes) of the PTX's kernel assembled for cc
        data = ptx.encode()
        h = nvjitlink.create(2, [f"-arch=sm_{cc[0]}{cc[1]}", "-verbose"])
        try:
            nvjitlink.add_data(h, nvjitlink.InputType.PTX, data, len(data), "kernel.ptx")
            nvjitlink.complete(h)
            log = bytearray(nvjitlink.get_info_log_size(h))
            nvjitlink.get_info_log(h, log)
        finally:
            nvjitlink.destroy(h)
        log = log.decode(errors="replace")
        regs = max(int(v) for v in re.findall(r"[Uu]sed (\\d+) registers", log))
        spills = sum(int(v) for v in re.findall(r"(\\d+) bytes spill stores", log))
        return regs, spills

    from nbnorm._cuda import kernels as K
    done, failed, shuffles, usage = [], [], [], {}
    for name, dispatcher_obj, sigs in K.kernel_signatures():
        for sig in sigs:
            try:
                ptx, _ = cuda.compile_ptx(dispatcher_obj.py_func, sig, cc=cc)
                assert ".entry" in ptx
                done.append(name)
                if "shfl.sync" in ptx:
                    shuffles.append(name)
                if nvjitlink is not None:
                    regs, spills = resources(ptx)
                    key = name.split("[")[0] + ("[" + name.split("[")[1] if "[" in name else "")
                    old = usage.get(key, (0, 0))
                    usage[key] = (max(old[0], regs), max(old[1], spills))
            except Exception as e:
                failed.append(f"{name} {sig}: {type(e).__name__}: {str(e)[:2000]}")
    print(json.dumps({"done": done, "failed": failed, "shuffles": shuffles, "usage": usage}))
""")

#: registers per thread no kernel may exceed (the hardware allows 255; the
#: hot element kernels use 106-130 today (sm_90, sm_80), where 64 would let twice
#: as many threads stay resident: an open item for a GPU session)
REGISTER_CEILING = 136


CCS = ["8,0", "9,0"]


@pytest.fixture(scope="module")
def compiled():
    """Both targets compiled concurrently, one subprocess each."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    procs = {cc: subprocess.Popen([sys.executable, "-c", SCRIPT, cc], cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for cc in CCS}
    results = {}
    for cc, p in procs.items():
        out, err = p.communicate(timeout=900)
        results[cc] = (p.returncode, out, err)
    return results


def _result(compiled, cc):
    """The compiling subprocess's report for ``cc`` (skips where NVVM is missing)."""
    rc, out, err = compiled[cc]
    assert rc == 0 and out.strip(), err[-4000:]
    res = json.loads(out.strip().splitlines()[-1])
    if "skip" in res:
        pytest.skip(res["skip"] + ' (pip install "numba-cuda[cu13]")')
    return res


@pytest.mark.parametrize("cc", CCS)
def test_every_kernel_compiles_to_ptx(compiled, cc):
    res = _result(compiled, cc)
    assert not res["failed"], "\n".join(res["failed"])
    names = {n.split("[")[0] for n in res["done"]}
    assert {"welford", "dual_sums", "affine", "finalize_welford", "finalize_sums", "sum_partials",
            "inference_coefficients", "gather", "update_running", "merge_states"} <= names
    for op in ("welford", "dual_sums"):
        for mapping in ("inner_kept", "inner_reduced"):
            assert any(s.startswith(op + "[") and mapping in s for s in res["shuffles"]), \
                f"{op} ({mapping}): no warp shuffle"
    assert "finalize_welford" in res["shuffles"], "finalize_welford: no warp shuffle"


@pytest.mark.parametrize("cc", CCS)
def test_kernels_assemble_without_spills_within_the_register_ceiling(compiled, cc):
    usage = _result(compiled, cc)["usage"]
    if not usage:
        pytest.skip("nvJitLink unavailable (pip install nvidia-nvjitlink)")
    print(f"\nsm_{cc.replace(',', '')} registers per thread (spill bytes):")
    for name, (regs, spills) in sorted(usage.items()):
        print(f"  {name:40s} {regs:4d} ({spills})")
    assert not {n: u for n, u in usage.items() if u[1]}, "register spills"
    over = {n: u[0] for n, u in usage.items() if u[0] > REGISTER_CEILING}
    assert not over, f"registers above {REGISTER_CEILING}: {over}"
