"""nbnorm — batch normalization and its statistics as Numba kernels.

Public functions (see each docstring for the math and the shapes):
:func:`moments`, :func:`standardize`, :func:`batch_norm_forward`, :func:`batch_norm_inference`,
:func:`batch_norm_backward`; the normalization family on the same engine:
:func:`layer_norm`, :func:`group_norm`, :func:`instance_norm`,
:func:`rms_norm` and their ``*_backward``; layers with PyTorch's semantics
(:class:`BatchNorm`, :class:`LayerNorm`, :class:`GroupNorm`,
:class:`InstanceNorm`, :class:`RMSNorm`) and :func:`fold_batch_norm`.  NumPy arrays run on the CPU; arrays exposing
``__cuda_array_interface__`` run on the GPU; results come back as the
caller's array type.
"""
from ._api import batch_norm_backward, batch_norm_forward, batch_norm_inference, moments
from ._family import (group_norm, group_norm_backward, instance_norm, instance_norm_backward,
                      layer_norm, layer_norm_backward, rms_norm, rms_norm_backward)
from ._fold import fold_batch_norm
from ._layers import BatchNorm, GroupNorm, InstanceNorm, LayerNorm, RMSNorm
from ._layout import AxisError
from ._moments import Moments
from ._pool import release_memory, set_pool_limit
from ._standardize import standardize

__version__ = "0.1.0"
__all__ = ["moments", "Moments", "standardize", "batch_norm_forward", "batch_norm_inference", "batch_norm_backward",
           "layer_norm", "layer_norm_backward", "group_norm", "group_norm_backward",
           "instance_norm", "instance_norm_backward", "rms_norm", "rms_norm_backward",
           "BatchNorm", "LayerNorm", "GroupNorm", "InstanceNorm", "RMSNorm", "fold_batch_norm",
           "release_memory", "set_pool_limit", "AxisError", "__version__"]
