"""Numba CPU kernels over a :class:`nbnorm._layout.Plan`.

Every full-size operand is a flat 1-D view (float16 as uint16 bits) addressed
through the plan's sizes and strides; see ``_layout`` for the index map.
Reductions come in two loop shapes, chosen by the plan's ``inner_kept``
(is the innermost dimension kept?) — two algorithms, not one loop with two
index maps: along a run the sums are taken per statistic, across a row they
are vector sums over adjacent statistics:

- ``*_inner_reduced`` (:mod:`.inner_reduced`; NCHW over (0, 2, 3), rows of
  (N, D)): a work item is (statistic ``k``, chunk ``c`` of its reduction
  range); it streams along contiguous runs of one statistic.  The fused
  forward/backward (statistics and elementwise pass per statistic, from
  cache) exist only for this shape.
- ``*_inner_kept`` (:mod:`.inner_kept`; channels-last, axis=0 of (N, D)): a
  work item is (outer statistic, tile of ≤ ``TILE`` adjacent statistics,
  chunk of rows); each row is a vector over the tile.

Statistics are computed per block of ≤ ``BLOCK`` elements (whole runs, or
even pieces of a long run): summed about the mean so far in one pass when
that is within ``std/√15`` of the block's mean, else with two passes over
the block while it sits in L1 (shifted sum, then the corrected two-pass
``M2``); a statistic that is one unit-stride run of ≤ ``BLOCK`` values is
one block, taken whole (``_ranges.run_moments``, ``run_dual_sums``: no
block walk, whose bookkeeping costs more than a short run's sums); blocks
are merged with Chan's formula (:mod:`nbnorm._welford`):
one read of memory, no division per element; the next block is
prefetched while one is summed, and large outputs are written with
streaming stores (:mod:`._memory`).
Means are carried relative to one *pivot* per statistic, its first element
(:func:`pivot_at`): a block mean near 10⁸ rounded to float64 is off by
~ulp(10⁸), and Chan's ``δ²·nₐn_b/n`` would square that error into ``M2``;
relative to the pivot the means are small and keep their digits.
Chunk partials land in ``(n_chunks, n_stats)`` arrays merged by
``merge_moments`` / ``merge_sums``; chunking depends only on the shape, so
results do not depend on the thread count.

NaN-skipping statistics (``skipna``) are a compile-time specialization of
the same reductions (:mod:`._skipna`): the kernels take a chunk-count array
``part_count`` that is None (every element counts; the loops compile to
the plain sums) or an array (NaNs are left out of every block's sums and
counted), so a block's ``(n, mean, M2)`` is that of its non-NaN values and
a block or chunk with none is the identity of Chan's merge (``n_b = 0``).
Infinite values are not skipped: ``np.nanmean``/``np.nanvar`` give
``±inf``/NaN for them, and so do the merges.

The kernels live in one file per stage: ``_jit`` (compilation settings,
block sizes, the shared numerics), ``_runs`` (indexing; sums, dual sums and
affine maps over a run), ``_ranges`` (the same over a range of reduction
indices, block by block), ``_memory`` (streaming stores, prefetches), ``inner_reduced`` and
``inner_kept`` (the two loop shapes above), ``elementwise`` (the affine
pass in memory order) and ``merge`` (chunk partials, states); this module
lists the entry points the backend launches.
"""
from __future__ import annotations

from ._jit import TILE, all_finite, invstd_vector, narrow, two_sum  # noqa: F401
from .elementwise import affine, touch_pages  # noqa: F401
from .merge import mean_and_variance, merge_moments, merge_states, merge_sums  # noqa: F401
from .inner_reduced import (backward_fused, dual_sums_inner_reduced,  # noqa: F401
                           forward_fused, moments_inner_reduced)
from .inner_kept import dual_sums_inner_kept, moments_inner_kept  # noqa: F401
