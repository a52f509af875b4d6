"""Mergeable states (:class:`nbnorm.Moments`): building one from a batch,
and merging states — the per-batch cost of streaming statistics.

``time_stream`` times a whole streaming reduction as a user writes it: 64
batches (one ``small`` array each, see :mod:`.cases`) reduced to states
and merged one by one, beside one ``Moments.of`` of the same data as a
single array (``time_of_whole``), so the merging overhead is the difference.
``time_merge`` is one merge of two states of ``C`` statistics.
"""
import numpy as np

import nbnorm

from .cases import AXES, host_array


class MomentsState:
    params = [["nchw", "nhwc"]]
    param_names = ["layout"]

    def setup(self, layout):
        self.axis = AXES[layout]
        self.batch = host_array(layout, "float32", "small")
        self.whole = np.concatenate([self.batch] * 64)
        self.state = nbnorm.Moments.of(self.batch, self.axis)
        self.time_stream(layout)
        self.time_of_whole(layout)

    def time_stream(self, layout):
        acc = nbnorm.Moments.empty(self.state.shape)
        for _ in range(64):
            acc = acc + nbnorm.Moments.of(self.batch, self.axis)

    def time_of_whole(self, layout):
        nbnorm.Moments.of(self.whole, self.axis)


class MomentsMerge:
    params = [[64, 4096, 1 << 20]]
    param_names = ["n_stats"]

    def setup(self, n_stats):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((3, n_stats))
        self.a = nbnorm.Moments.of(x, 0)
        self.b = nbnorm.Moments.of(x + 1.0, 0)
        self.a + self.b

    def time_merge(self, n_stats):
        self.a + self.b


class MomentsSkipna:
    """``moments(x, axis, skipna=...)`` on a NaN-free ≈103 MB float32 array:
    the cost of leaving NaNs out (goal: within 1.3× of ``skipna=False``)."""
    params = [["nchw", "nhwc"], [False, True]]
    param_names = ["layout", "skipna"]

    def setup(self, layout, skipna):
        self.axis = AXES[layout]
        self.x = host_array(layout, "float32", "large")
        self.time_moments(layout, skipna)

    def time_moments(self, layout, skipna):
        nbnorm.moments(self.x, self.axis, skipna=skipna)
