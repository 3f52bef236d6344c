"""A* coding of general 1-D targets (:class:`rcc.GeneralTarget`) on the samplers' tree of intervals.

A* coding needs only an upper bound of the log density ratio on each node's
interval: a looser bound costs steps, never exactness (Maddison et al. 2014,
"A* sampling", Section 4).  The bound of a node is the certified cell bound of
:mod:`rcc.targets.general` (from the ``mode``, ``lipschitz`` and
``concavity`` the target states) on the node's part of the support, plus a
relative margin for rounding.  The tree, its shared and private randomness and
the heap indices are those of :mod:`rcc.samplers.kernels`, so
:func:`rcc.samplers.decode_tree_sample` decodes these messages unchanged.
GPRS and greedy rejection coding need the target's mass on intervals and
superlevel sets as well; :mod:`rcc.samplers.general_masses` computes them for
targets whose ratio to the prior is unimodal.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import types

from ..random import DOMAIN_PRIVATE, DOMAIN_SHARED, _private_uniform, _stream_prefix
from ..targets.general import _LOGPDF_TYPE, _cell_bound, _minus_log_prior_variable, _typed_kernel
from .kernels import (MAX_DEPTH, NORMAL, OK, SPLIT_SAMPLE, STATUS_DEPTH, STATUS_MAX_STEPS, STATUS_QUEUE, _QUEUE,
                      _cut, _dither, _mass, _pair_ppf, _pop, _push)

__all__ = ["STATUS_NAN", "general_astar_batch"]

#: The log density returned NaN at a point or a bound of the search.
STATUS_NAN = 5
_MARGIN = 1e-9  # relative, as the certificate of rcc.targets.general
_BLOCK = 256

_f8, _i8, _u8, _b1 = types.float64, types.int64, types.uint64, types.boolean
_F1 = types.Array(_f8, 1, "A")
_F2 = types.Array(_f8, 2, "A")
_I1 = types.Array(_i8, 1, "A")


@_typed_kernel(
    types.void(_LOGPDF_TYPE, _F2, _F1, _F1, _F1, _b1, _F1, _F1, _I1, _F1, _F1, _u8, _u8, _u8, _i8, _i8,
               _I1, _F1, _I1, _I1),
    cache=True, parallel=True,
)
def general_astar_batch(logpdf, params, low, high, mode, use_mode, lipschitz, concavity, prior_family, prior_loc,
                        prior_scale, seed, key, stream_offset, split, max_steps, index, sample, steps, status):
    """A* coding of every element (stream ``stream_offset + i``), bounds from the stated facts.

    The score of a point is ``log T - f(z)`` with ``f = log q - (z-dependent part of log p)`` up to a
    constant, which does not change the arg min; a node's bound is ``log T - sup f`` over its interval.
    """
    for block in numba.prange((low.shape[0] + _BLOCK - 1) // _BLOCK):
        queue = np.empty((_QUEUE, 8), dtype=np.float64)
        heap = np.empty(_QUEUE, dtype=np.int64)
        top = np.empty(8, dtype=np.float64)
        for i in range(block * _BLOCK, min(low.shape[0], (block + 1) * _BLOCK)):
            _search_one(logpdf, params[i], low[i], high[i], mode[i], use_mode, lipschitz[i], concavity[i],
                        prior_family[i], prior_loc[i], prior_scale[i], seed, key, stream_offset + np.uint64(i),
                        split, max_steps, queue, heap, top, index, sample, steps, status, i)


@numba.njit(cache=True, error_model="numpy")
def _with_margin(bound):
    return bound + _MARGIN * (1.0 + abs(bound)) if math.isfinite(bound) else bound


@numba.njit(cache=True, error_model="numpy")
def _search_one(logpdf, row, lo_i, hi_i, m, use_mode, lip, conc, pf, ploc, pscale, seed, key, stream, split,
                max_steps, queue, heap, top, index, sample, steps, status, i):
    """One element's search; writes its results at ``i``."""
    prior_curvature = 1.0 / (pscale * pscale) if pf == NORMAL else 0.0
    mode_value = logpdf(m, row) if use_mode else 0.0
    shared = _stream_prefix(DOMAIN_SHARED, seed, stream)
    private = _stream_prefix(DOMAIN_PRIVATE, key, stream)
    a, b = lo_i, hi_i
    qa, qb = logpdf(a, row), logpdf(b, row)
    pa, pb = _minus_log_prior_variable(a, pf, ploc, pscale), _minus_log_prior_variable(b, pf, ploc, pscale)
    root = _with_margin(_cell_bound(a, b, qa, qb, m, mode_value, use_mode, lip, conc, prior_curvature, pa, pb))
    t_root = -math.log(_private_uniform(private, np.uint64(1)))
    size = _push(queue, heap, 0, math.log(t_root) - root, t_root, 0.0, 1.0, 1.0, 0.0, -np.inf, np.inf,
                 np.int64(1))
    best, best_h, best_z = np.inf, np.int64(0), np.nan
    count, state = 0, OK
    if math.isnan(root):
        size, state = 0, STATUS_NAN
    while size > 0:
        h, size = _pop(queue, heap, size, top)
        if top[0] >= best:
            break
        count += 1
        if count > max_steps:
            state = STATUS_MAX_STEPS
            break
        t, ua, ca, ub, cb, za, zb = top[1], top[2], top[3], top[4], top[5], top[6], top[7]
        u, c = _cut(ua, ca, ub, cb, _dither(shared, h))
        z = _pair_ppf(u, c, pf, ploc, pscale)
        if z >= lo_i and z <= hi_i:
            f = logpdf(z, row) + _minus_log_prior_variable(z, pf, ploc, pscale)
            if math.isnan(f):
                state = STATUS_NAN
                break
            if math.log(t) - f < best:
                best, best_h, best_z = math.log(t) - f, h, z
        if h >= np.int64(1) << MAX_DEPTH:
            state = STATUS_DEPTH
            break
        if split == SPLIT_SAMPLE:
            um, cm, zm = u, c, z
        else:
            um, cm = _cut(ua, ca, ub, cb, 0.5)
            zm = _pair_ppf(um, cm, pf, ploc, pscale)
        for side in range(2):
            if side == 0:
                lu, lc, hu, hc, cza, czb = ua, ca, um, cm, za, zm
            else:
                lu, lc, hu, hc, cza, czb = um, cm, ub, cb, zm, zb
            mass = _mass(lu, lc, hu, hc)
            a, b = max(cza, lo_i), min(czb, hi_i)
            if not (mass > 0.0 and a <= b):
                continue
            qa, qb = logpdf(a, row), logpdf(b, row)
            pa = _minus_log_prior_variable(a, pf, ploc, pscale)
            pb = _minus_log_prior_variable(b, pf, ploc, pscale)
            bound = _with_margin(_cell_bound(a, b, qa, qb, m, mode_value, use_mode, lip, conc,
                                             prior_curvature, pa, pb))
            if math.isnan(bound):
                state = STATUS_NAN
                break
            if bound == -np.inf or math.log(t) - bound >= best:
                continue
            child = 2 * h + side
            tc = t + -math.log(_private_uniform(private, np.uint64(child))) / mass
            priority = math.log(tc) - bound
            if priority >= best:
                continue
            if size == queue.shape[0]:
                state = STATUS_QUEUE
                break
            size = _push(queue, heap, size, priority, tc, lu, lc, hu, hc, cza, czb, child)
        if state != OK:
            break
    if state == OK and best_h == 0:
        state = STATUS_NAN  # no point of the support scored (a log density of -inf everywhere it was met)
    if state != OK:
        best_h, best_z = np.int64(0), np.nan
    index[i], sample[i], steps[i], status[i] = best_h, best_z, count, state
