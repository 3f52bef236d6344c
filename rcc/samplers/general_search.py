"""A* coding of general 1-D targets (:class:`rcc.GeneralTarget`) on the samplers' tree of intervals.

A* coding needs only an upper bound of the log density ratio on each node's
interval: a looser bound costs steps, never exactness (Maddison et al. 2014,
"A* sampling", Section 4).  The bound of a node is the certified cell bound of
:mod:`rcc.targets.general` (from the ``mode``, ``lipschitz`` and
``concavity`` the target states) on the node's part of the support, plus a
relative margin for rounding.  The search itself is the one of
:mod:`rcc.samplers.kernels` (``_search``), which meets its target only through
``_target_log_ratio`` and ``_target_bound``: this module adds their
implementations for a general target, chosen by numba from the target's type.
The tree, its shared and private randomness and the heap indices are therefore
those of the closed-form families, and :func:`rcc.samplers.decode_tree_sample`
decodes these messages unchanged.
GPRS and greedy rejection coding need the target's mass on intervals and
superlevel sets as well; :mod:`rcc.samplers.general_masses` computes them for
targets whose ratio to the prior is unimodal.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import types
from numba.extending import overload

from ..targets.general import _LOGPDF_TYPE, _cell_bound, _minus_log_prior_variable, _typed_kernel
from .kernels import (NORMAL, NUM_PARAMS, P_HIGH, P_LOW, P_PRIOR_FAMILY, P_PRIOR_LOC, P_PRIOR_SCALE, RULE_ASTAR,
                      STATUS_NAN, _QUEUE, _search, _target_bound, _target_log_ratio)

__all__ = ["STATUS_NAN", "general_astar_batch"]

_MARGIN = 1e-9  # relative, as the certificate of rcc.targets.general
_BLOCK = 256

# The certificate of one element (a float64 row): what the cell bound of rcc.targets.general reads.
(C_LOW, C_HIGH, C_MODE, C_MODE_VALUE, C_USE_MODE, C_LIPSCHITZ, C_CONCAVITY, C_PRIOR_CURVATURE, C_PRIOR_FAMILY,
 C_PRIOR_LOC, C_PRIOR_SCALE) = range(11)
_CERTIFICATE = 11

_f8, _i8, _u8, _b1 = types.float64, types.int64, types.uint64, types.boolean
_F1 = types.Array(_f8, 1, "A")
_F2 = types.Array(_f8, 2, "A")
_I1 = types.Array(_i8, 1, "A")


@numba.njit(cache=True, error_model="numpy")
def _with_margin(bound):
    return bound + _MARGIN * (1.0 + abs(bound)) if math.isfinite(bound) else bound


# A general target, as the tree search of rcc.samplers.kernels takes it: (logpdf, params row, certificate).
# The score is log q - (z-dependent part of log p): log r up to a constant, which leaves the search unchanged.


@overload(_target_log_ratio)
def _general_log_ratio(z, target):
    if not isinstance(target, types.BaseTuple):
        return None

    def score(z, target):
        logpdf, row, g = target
        if not (z >= g[C_LOW] and z <= g[C_HIGH]):
            return -np.inf
        return logpdf(z, row) + _minus_log_prior_variable(z, g[C_PRIOR_FAMILY], g[C_PRIOR_LOC], g[C_PRIOR_SCALE])

    return score


@overload(_target_bound)
def _general_bound(za, zb, target):
    if not isinstance(target, types.BaseTuple):
        return None

    def bound(za, zb, target):
        logpdf, row, g = target
        a, b = max(za, g[C_LOW]), min(zb, g[C_HIGH])
        if not a <= b:
            return -np.inf
        pa = _minus_log_prior_variable(a, g[C_PRIOR_FAMILY], g[C_PRIOR_LOC], g[C_PRIOR_SCALE])
        pb = _minus_log_prior_variable(b, g[C_PRIOR_FAMILY], g[C_PRIOR_LOC], g[C_PRIOR_SCALE])
        return _with_margin(_cell_bound(a, b, logpdf(a, row), logpdf(b, row), g[C_MODE], g[C_MODE_VALUE],
                                        g[C_USE_MODE] != 0.0, g[C_LIPSCHITZ], g[C_CONCAVITY], g[C_PRIOR_CURVATURE],
                                        pa, pb))

    return bound


@_typed_kernel(
    types.void(_LOGPDF_TYPE, _F2, _F1, _F1, _F1, _b1, _F1, _F1, _I1, _F1, _F1, _u8, _u8, _u8, _i8, _i8,
               _I1, _F1, _I1, _I1),
    cache=True, parallel=True,
)
def general_astar_batch(logpdf, params, low, high, mode, use_mode, lipschitz, concavity, prior_family, prior_loc,
                        prior_scale, seed, key, stream_offset, split, max_steps, index, sample, steps, status):
    """A* coding of every element (stream ``stream_offset + i``), bounds from the stated facts.

    The search is the samplers' tree search (:func:`rcc.samplers.kernels._search`);
    the target's score at a point and its bound on a node come from the log
    density and its certificate.
    """
    for block in numba.prange((low.shape[0] + _BLOCK - 1) // _BLOCK):
        queue = np.empty((_QUEUE, 8), dtype=np.float64)
        heap = np.empty(_QUEUE, dtype=np.int64)
        top = np.empty(8, dtype=np.float64)
        table = np.empty(1, dtype=np.float64)  # GPRS's stretch function: not used by A* coding
        kinks = np.empty(1, dtype=np.float64)
        p = np.zeros(NUM_PARAMS, dtype=np.float64)
        g = np.empty(_CERTIFICATE, dtype=np.float64)
        for i in range(block * _BLOCK, min(low.shape[0], (block + 1) * _BLOCK)):
            p[P_LOW], p[P_HIGH] = low[i], high[i]
            p[P_PRIOR_FAMILY], p[P_PRIOR_LOC], p[P_PRIOR_SCALE] = prior_family[i], prior_loc[i], prior_scale[i]
            g[C_LOW], g[C_HIGH], g[C_MODE] = low[i], high[i], mode[i]
            g[C_MODE_VALUE] = logpdf(mode[i], params[i]) if use_mode else 0.0
            g[C_USE_MODE] = 1.0 if use_mode else 0.0
            g[C_LIPSCHITZ], g[C_CONCAVITY] = lipschitz[i], concavity[i]
            g[C_PRIOR_CURVATURE] = 1.0 / (prior_scale[i] * prior_scale[i]) if prior_family[i] == NORMAL else 0.0
            g[C_PRIOR_FAMILY], g[C_PRIOR_LOC], g[C_PRIOR_SCALE] = prior_family[i], prior_loc[i], prior_scale[i]
            h, z, n, st = _search(seed, key, stream_offset + np.uint64(i), p, (logpdf, params[i], g), RULE_ASTAR,
                                  split, max_steps, queue, heap, top, table, kinks, False)
            index[i], sample[i], steps[i], status[i] = h, z, n, st
