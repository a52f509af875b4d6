"""CUDA backend (not yet available)."""
name = "cuda"


def asarray(obj, argname):
    raise NotImplementedError(
        f"{argname}: CUDA arrays are not supported yet: the nbnorm CUDA backend is not "
        "implemented; pass NumPy arrays (copy_to_host / .get() / .cpu().numpy())")
