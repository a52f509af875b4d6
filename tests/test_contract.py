"""Every registered backend module fulfils the backend contract
(``nbnorm._contract``): the attributes exist and the operations take the
contract's parameters, by name and in order."""
from __future__ import annotations

import inspect

import pytest

from nbnorm import _contract, _router

MODULES = {"cpu": "nbnorm._cpu.backend", "cuda": "nbnorm._cuda.backend",
           "dask": "nbnorm._dask.backend"}


def load(name):
    if name == "cuda":
        pytest.importorskip("numba.cuda")
    if name == "dask":
        pytest.importorskip("dask.array")
    return _router.load(name)


def contract_methods(protocol):
    return {k: v for k, v in vars(protocol).items()
            if inspect.isfunction(v) and not k.startswith("_")}


def parameters(fn):
    return [p for p in inspect.signature(fn).parameters if p != "self"]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_backend_modules_fulfil_the_contract(name):
    module = load(name)
    assert module.__name__ == MODULES[name]
    assert isinstance(module, _contract.Backend), name
    assert module.name == name
    protocols = [v for v in vars(_contract).values()
                 if isinstance(v, type) and getattr(v, "_is_protocol", False)
                 and v.__module__ == _contract.__name__]
    assert _contract.ChunkBackward in protocols and _contract.Prepared in protocols
    for protocol in protocols:
        if protocol is not _contract.Backend and not isinstance(module, protocol):
            continue
        for method, spec in contract_methods(protocol).items():
            want = parameters(spec)
            got = parameters(getattr(module, method))
            assert got[:len(want)] == want, f"{name}.{method}{tuple(got)} != contract {want}"


def test_the_optional_parts_are_where_they_are_used():
    assert isinstance(load("cpu"), _contract.NormFamily)
    assert isinstance(load("cuda"), _contract.NormFamily)
    assert isinstance(load("dask"), _contract.NormFamily)
    assert isinstance(load("dask"), _contract.LazyForward)
    assert not isinstance(load("cpu"), _contract.LazyForward)
    assert isinstance(load("cpu"), _contract.ChunkBackward)
    assert isinstance(load("cuda"), _contract.ChunkBackward)
    assert not isinstance(load("dask"), _contract.ChunkBackward)


def test_torch_cuda_tensors_are_routed_by_their_device():
    """A CUDA tensor that requires grad (every nn.Parameter) refuses
    ``__cuda_array_interface__``; the router reads its device instead, so a
    CUDA weight Parameter with a CUDA x is not a mixed-device call (a CPU
    tensor stays on the host)."""
    from nbnorm import _router

    class Device:
        def __init__(self, kind):
            self.type = kind

    class Tensor:
        requires_grad = True

        def __init__(self, kind):
            self.device = Device(kind)

        @property
        def __cuda_array_interface__(self):
            raise RuntimeError("Can't get __cuda_array_interface__ on Variable that requires "
                               "grad. If gradients aren't required, use var.detach()")

    Tensor.__module__ = "torch"
    assert _router.is_cuda_array(Tensor("cuda"))
    assert not _router.is_cuda_array(Tensor("cpu"))
