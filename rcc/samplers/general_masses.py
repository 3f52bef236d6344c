"""GPRS and greedy rejection coding of general 1-D targets (:class:`rcc.GeneralTarget`) with a unimodal ratio.

Both algorithms need more than a bound of the density ratio ``r = q / p``:
GPRS's stretch function needs ``E_P[(r - eta)_+]`` at every level ``eta``,
greedy rejection coding the same on each node's interval.  For a unimodal
ratio (mode ``m``) the superlevel set ``{r >= eta}`` is one interval
``[a(eta), b(eta)]``, found by bisection on ``[low, m]`` and ``[m, high]``
(to adjacent doubles, at most 64 steps a side), so

``E_P[(r - eta)_+ ; [za, zb]] = Q(I) - eta P(I)``, ``I = [za, zb] & [a(eta), b(eta)]``.

``P(I)`` is the prior's closed form; ``Q(I)`` comes from a per-target table:
the support is cut into 256 equal cells, graded geometrically (ratio 2, down
to ``2**-40`` of the width) towards both ends and split at the stated
breakpoints and the mode, each cell integrated by a 10-point Gauss-Legendre
rule; ``Q([lo, hi])`` is the table's whole cells between them plus one rule
on each partial cell, so every term is a sum of positive parts.  For
densities smooth on each cell (algebraic singularities at the ends, as a
Beta's, are caught by the grading) this is accurate to about 1e-15 of the
total mass, and the normaliser is the table's own total, so the masses
and the ratio ``r`` agree.  GPRS's stretch function is then integrated as for
the closed-form targets (:mod:`rcc.samplers.kernels`: the same grid in
``s = -log(1 - eta / r_max)``, the same 8-point rules; kinks where the set
meets a support end); the measured errors are given in
:ref:`samplers-general`.  Exactness is up to these
errors, like the hybrid coder's transform of a general target.

Unimodality of ``r`` is taken from the target's statements (checked in
:mod:`rcc.samplers.core`): under a Uniform prior ``r`` is proportional to
``q`` on the support, so the stated ``mode`` is the ratio's mode; under a
Normal prior of std ``s``, ``log_concavity >= 1 / s**2`` makes ``log r``
concave, and its mode is found by golden-section search.

The tree, the shared and private randomness and the heap indices are those of
:mod:`rcc.samplers.kernels`, so :func:`rcc.samplers.decode_tree_sample`
decodes these messages unchanged.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import types

from .. import kernels as base_kernels
from ..random import DOMAIN_PRIVATE, DOMAIN_SHARED, _private_uniform, _shared_dither, _stream_prefix
from ..targets.general import _GL_NODES, _GL_WEIGHTS, _HALF_LOG_2PI, _LOGPDF_TYPE, _typed_kernel
from .kernels import (_GL_W, _GL_X, _S_GRID, _S_MAX, MAX_DEPTH, NORMAL, OK, RULE_GPRS, STATUS_NAN,
                      STATUS_DEPTH, STATUS_MAX_STEPS, STATUS_NO_MASS, STATUS_QUEUE, _QUEUE, _cut, _dither, _mass,
                      _cell_of, _normal_mass, _pair_ppf, _piece_of, _pop, _private_coin, _push,
                      _splits_at_point)

__all__ = ["TABLE_CELLS", "general_masses_batch", "general_sigma"]

#: Equal cells of a target's mass table (before grading and breakpoints).
TABLE_CELLS = 256
_GRADE = 40  # geometric cells towards each end: widths 2**-9 .. 2**-40 of the support
_MARGIN = 1e-9  # relative, on sup log r in GPRS's bounds (as rcc.samplers.general_search)
_BLOCK = 256
_ROOT_TOL = 1e-15  # the superlevel sets' ends, relative to the support's width

# The per-element state (one float64 row).
(G_LOW, G_HIGH, G_MODE, G_LOG_RMAX, G_SHIFT, G_TOTAL, G_CONST, G_PF, G_PLOC, G_PSCALE, G_EDGES) = range(11)
_STATE = 11

_f8, _i8, _u8, _b1 = types.float64, types.int64, types.uint64, types.boolean
_F1 = types.Array(_f8, 1, "A")
_F2 = types.Array(_f8, 2, "A")
_I1 = types.Array(_i8, 1, "A")


# --------------------------------------------------------------------------- the target's table


@numba.njit(cache=True, error_model="numpy", inline="always")
def _log_ratio(logpdf, row, z, g):
    """``log r(z) = log q(z) - log p(z)`` (``-inf`` outside the support), normalised by the table."""
    if not (z >= g[G_LOW] and z <= g[G_HIGH]):
        return -np.inf
    value = logpdf(z, row) - g[G_SHIFT] - math.log(g[G_TOTAL]) + g[G_CONST]
    if g[G_PF] == NORMAL:
        s = (z - g[G_PLOC]) / g[G_PSCALE]
        value += 0.5 * s * s
    return value


@numba.njit(cache=True, error_model="numpy")
def _rule(logpdf, row, a, b, shift):
    """``int_a^b exp(logpdf - shift)`` by the 10-point Gauss-Legendre rule."""
    width = b - a
    total = 0.0
    for k in range(_GL_NODES.shape[0]):
        v = logpdf(a + width * _GL_NODES[k], row)
        if v > -np.inf:
            total += _GL_WEIGHTS[k] * math.exp(v - shift)
    return total * width


@numba.njit(cache=True, error_model="numpy")
def _setup(logpdf, row, low, high, breaks, mode, use_mode, pf, ploc, pscale, edges, cdf, g):
    """Fill the mass table (``edges``; ``cdf[0]`` the unnormalised mass below each edge, ``cdf[1]`` above it)
    and the state ``g``; returns a status."""
    width = high - low
    n = 0
    for c in range(TABLE_CELLS + 1):
        edges[n] = low + width * (c / TABLE_CELLS)
        n += 1
    edges[TABLE_CELLS] = high
    for k in range(9, _GRADE + 1):
        edges[n] = low + width * 2.0**-k
        edges[n + 1] = high - width * 2.0**-k
        n += 2
    for j in range(breaks.shape[0]):
        if breaks[j] > low and breaks[j] < high:
            edges[n] = breaks[j]
            n += 1
    edges[:n] = np.sort(edges[:n])
    m = 1
    for k in range(1, n):  # drop repeated edges
        if edges[k] > edges[m - 1]:
            edges[m] = edges[k]
            m += 1
    shift = -np.inf
    for c in range(m - 1):
        for k in range(_GL_NODES.shape[0]):
            v = logpdf(edges[c] + (edges[c + 1] - edges[c]) * _GL_NODES[k], row)
            if math.isnan(v) or v == np.inf:
                return STATUS_NAN
            shift = max(shift, v)
    if shift == -np.inf:
        return STATUS_NAN
    for c in range(m - 1):  # cell masses, for the moment in cdf[1]
        cdf[1, c] = _rule(logpdf, row, edges[c], edges[c + 1], shift)
    cdf[0, 0] = 0.0
    for c in range(m - 1):
        cdf[0, c + 1] = cdf[0, c] + cdf[1, c]
    cdf[1, m - 1] = 0.0  # the mass above each edge, summed from the top: small upper masses keep precision
    for c in range(m - 2, -1, -1):
        cdf[1, c] = cdf[1, c + 1] + cdf[1, c]
    g[G_LOW], g[G_HIGH], g[G_SHIFT], g[G_TOTAL], g[G_EDGES] = low, high, shift, cdf[0, m - 1], m
    g[G_PF], g[G_PLOC], g[G_PSCALE] = pf, ploc, pscale
    g[G_CONST] = math.log(pscale) + (_HALF_LOG_2PI if pf == NORMAL else 0.0)
    if use_mode:
        g[G_MODE] = mode
    else:
        # log r is concave: golden-section search for its maximum
        a, b = low, high
        inv_phi = 0.5 * (math.sqrt(5.0) - 1.0)
        x1, x2 = b - inv_phi * (b - a), a + inv_phi * (b - a)
        f1, f2 = _log_ratio(logpdf, row, x1, g), _log_ratio(logpdf, row, x2, g)
        for _ in range(200):
            if not (a < x1 and x1 < x2 and x2 < b):
                break
            if f1 < f2:
                a, x1, f1 = x1, x2, f2
                x2 = a + inv_phi * (b - a)
                f2 = _log_ratio(logpdf, row, x2, g)
            else:
                b, x2, f2 = x2, x1, f1
                x1 = b - inv_phi * (b - a)
                f1 = _log_ratio(logpdf, row, x1, g)
        best = x1 if f1 >= f2 else x2
        for z in (low, high):
            if _log_ratio(logpdf, row, z, g) > _log_ratio(logpdf, row, best, g):
                best = z
        g[G_MODE] = best
    g[G_LOG_RMAX] = _log_ratio(logpdf, row, g[G_MODE], g)
    if math.isnan(g[G_LOG_RMAX]) or g[G_LOG_RMAX] == -np.inf:
        return STATUS_NAN
    return OK


@numba.njit(cache=True, error_model="numpy")
def _target_mass(logpdf, row, lo, hi, g, edges, cdf):
    """``Q([lo, hi])`` for ``low <= lo <= hi <= high``: partial cells by the rule, whole cells from the table
    (a sum of positive parts, so every mass is accurate to about 1e-16 of the total)."""
    if not lo < hi:
        return 0.0
    n = np.int64(g[G_EDGES])
    i, j = _cell_of(lo, edges, n), _cell_of(hi, edges, n)
    if i == j:
        total = _rule(logpdf, row, lo, hi, g[G_SHIFT])
    else:
        # the whole cells i + 1 .. j - 1, from the end of the table nearer to them
        whole = cdf[0, j] - cdf[0, i + 1] if cdf[0, j] <= cdf[1, i + 1] else cdf[1, i + 1] - cdf[1, j]
        total = (_rule(logpdf, row, lo, edges[i + 1], g[G_SHIFT]) + whole
                 + _rule(logpdf, row, edges[j], hi, g[G_SHIFT]))
    return total / g[G_TOTAL]


@numba.njit(cache=True, error_model="numpy", inline="always")
def _prior_mass(lo, hi, g):
    if g[G_PF] == NORMAL:
        return _normal_mass((lo - g[G_PLOC]) / g[G_PSCALE], (hi - g[G_PLOC]) / g[G_PSCALE])
    return (hi - lo) / g[G_PSCALE]


@numba.njit(cache=True, error_model="numpy")
def _boundary(logpdf, row, log_level, outside, inside, g):
    """A point of ``{log r >= log_level}`` within ``_ROOT_TOL`` of the set's end between ``outside``
    (``log r < log_level`` there) and ``inside`` (``>=``), ``log r`` monotone between them.

    Regula falsi with the Illinois modification (superlinear), falling back to bisection where a value is
    infinite or the bracket fails to halve; the bracket is kept throughout, so the result is certain.
    """
    tol = _ROOT_TOL * max(g[G_HIGH] - g[G_LOW], abs(outside), abs(inside))
    f_out = _log_ratio(logpdf, row, outside, g) - log_level
    f_in = _log_ratio(logpdf, row, inside, g) - log_level
    last, slow = -1, 0
    for _ in range(200):
        width = abs(inside - outside)
        if not width > tol:
            break
        x = 0.5 * (outside + inside)
        if slow < 2 and math.isfinite(f_out) and math.isfinite(f_in) and f_in > f_out:
            guess = inside - f_in * (inside - outside) / (f_in - f_out)
            if min(outside, inside) < guess and guess < max(outside, inside):
                x = guess
        if x == outside or x == inside:
            break
        fx = _log_ratio(logpdf, row, x, g) - log_level
        if math.isnan(fx):
            break
        if fx >= 0.0:
            inside, f_in = x, fx
            if last == 1:
                f_out *= 0.5
            last = 1
        else:
            outside, f_out = x, fx
            if last == 0:
                f_in *= 0.5
            last = 0
        slow = slow + 1 if abs(inside - outside) > 0.5 * width else 0
    return inside


@numba.njit(cache=True, error_model="numpy")
def _level_set(logpdf, row, log_level, g):
    """``[a, b] = {log r >= log_level}`` (empty when ``a > b``): a bracketed root on each side of the mode."""
    m = g[G_MODE]
    if not log_level <= g[G_LOG_RMAX]:
        return np.inf, -np.inf
    a, b = g[G_LOW], g[G_HIGH]
    if _log_ratio(logpdf, row, a, g) < log_level:
        a = _boundary(logpdf, row, log_level, a, m, g)
    if _log_ratio(logpdf, row, b, g) < log_level:
        b = _boundary(logpdf, row, log_level, b, m, g)
    return a, b


@numba.njit(cache=True, error_model="numpy", inline="always")
def _excess_in(logpdf, row, level, za, zb, set_lo, set_hi, g, edges, cdf):
    """``E_P[(r - level)_+ ; [za, zb]]`` given the level's superlevel set ``[set_lo, set_hi]``."""
    lo, hi = max(za, set_lo), min(zb, set_hi)
    if not lo < hi:
        return 0.0
    return _target_mass(logpdf, row, lo, hi, g, edges, cdf) - level * _prior_mass(lo, hi, g)


@numba.njit(cache=True, error_model="numpy")
def _excess(logpdf, row, eta, g, edges, cdf):
    """``w_Q(eta) - eta w_P(eta) = E_P[(r - eta)_+]``."""
    if eta > 0.0:
        set_lo, set_hi = _level_set(logpdf, row, math.log(eta), g)
    else:
        set_lo, set_hi = g[G_LOW], g[G_HIGH]
    return _excess_in(logpdf, row, eta, g[G_LOW], g[G_HIGH], set_lo, set_hi, g, edges, cdf)


# --------------------------------------------------------------------------- GPRS's stretch function


@numba.njit(cache=True, error_model="numpy")
def _integrand(logpdf, row, s, g, edges, cdf):
    """``d sigma / d s`` at ``s = -log(1 - eta / r_max)``."""
    r_max = math.exp(g[G_LOG_RMAX])
    tail = math.exp(-s)
    eta = r_max * (1.0 - tail) if s > 1e-3 else r_max * -math.expm1(-s)
    if eta <= 0.0:
        return r_max
    excess = _excess(logpdf, row, eta, g, edges, cdf)
    if not excess > 0.0:
        return np.inf
    return r_max * tail / excess


@numba.njit(cache=True, error_model="numpy")
def _integrate(logpdf, row, sa, sb, g, edges, cdf, kinks):
    """``int_sa^sb`` of the integrand by 8-point rules, split at the kinks."""
    total = 0.0
    start = sa
    for k in range(kinks.shape[0]):
        if kinks[k] > start and kinks[k] < sb:
            stop = kinks[k]
            half, mid = 0.5 * (stop - start), 0.5 * (start + stop)
            for q in range(8):
                total += half * _GL_W[q] * _integrand(logpdf, row, mid + half * _GL_X[q], g, edges, cdf)
            start = stop
    half, mid = 0.5 * (sb - start), 0.5 * (start + sb)
    for q in range(8):
        total += half * _GL_W[q] * _integrand(logpdf, row, mid + half * _GL_X[q], g, edges, cdf)
    return total


@numba.njit(cache=True, error_model="numpy", inline="always")
def _level_s(log_value, g):
    d = log_value - g[G_LOG_RMAX]
    if d >= 0.0:
        return np.inf
    return -math.log1p(-math.exp(d))


@numba.njit(cache=True, error_model="numpy")
def _sigma_setup(logpdf, row, g, table, kinks):
    """Reset the lazily filled table of ``sigma`` and find the kinks (the set meets ``low`` or ``high``)."""
    table[0] = 0.0
    table[1:] = np.nan
    kinks[0] = _level_s(_log_ratio(logpdf, row, g[G_LOW], g), g)
    kinks[1] = _level_s(_log_ratio(logpdf, row, g[G_HIGH], g), g)
    kinks.sort()


@numba.njit(cache=True, error_model="numpy")
def _sigma_node(logpdf, row, k, g, edges, cdf, table, kinks):
    if np.isnan(table[k]):
        j = k
        while np.isnan(table[j]):
            j -= 1
        while j < k:
            table[j + 1] = table[j] + _integrate(logpdf, row, _S_GRID[j], _S_GRID[j + 1], g, edges, cdf, kinks)
            j += 1
    return table[k]


@numba.njit(cache=True, error_model="numpy")
def _sigma_at_s(logpdf, row, s, g, edges, cdf, table, kinks):
    if not s < _S_MAX:
        return np.inf
    k = _piece_of(s)
    below = _sigma_node(logpdf, row, k, g, edges, cdf, table, kinks)
    if s == _S_GRID[k]:
        return below
    return below + _integrate(logpdf, row, _S_GRID[k], s, g, edges, cdf, kinks)


@numba.njit(cache=True, error_model="numpy")
def _under_graph(logpdf, row, t, log_value, g, edges, cdf, table, kinks):
    """``t < sigma(r)`` for a point at time ``t`` and log ratio ``log_value``."""
    if log_value == -np.inf:
        return False
    s = _level_s(log_value, g)
    if not s < _S_MAX:
        return True
    k = _piece_of(s)
    below = _sigma_node(logpdf, row, k, g, edges, cdf, table, kinks)
    if t < below:
        return True
    if t >= _sigma_node(logpdf, row, k + 1, g, edges, cdf, table, kinks):
        return False
    return t < below + _integrate(logpdf, row, _S_GRID[k], s, g, edges, cdf, kinks)


# --------------------------------------------------------------------------- the searches


@numba.njit(cache=True, error_model="numpy")
def _gprs_tree(logpdf, row, seed, key, stream, split, max_steps, g, edges, cdf, table, kinks, queue, heap, top):
    """Branch-and-bound GPRS (the rule of :func:`rcc.samplers.kernels._search`); ``(h, z, steps, status)``."""
    shared = _stream_prefix(DOMAIN_SHARED, seed, stream)
    private = _stream_prefix(DOMAIN_PRIVATE, key, stream)
    pf, ploc, pscale = np.int64(g[G_PF]), g[G_PLOC], g[G_PSCALE]
    t_root = -math.log(_private_uniform(private, np.uint64(1)))
    size = _push(queue, heap, 0, t_root, t_root, 0.0, 1.0, 1.0, 0.0, -np.inf, np.inf, np.int64(1))
    steps = 0
    while size > 0:
        h, size = _pop(queue, heap, size, top)
        steps += 1
        if steps > max_steps:
            return 0, np.nan, steps, STATUS_MAX_STEPS
        t, ua, ca, ub, cb, za, zb = top[1], top[2], top[3], top[4], top[5], top[6], top[7]
        u, c = _cut(ua, ca, ub, cb, _dither(shared, h))
        z = _pair_ppf(u, c, pf, ploc, pscale)
        lr = _log_ratio(logpdf, row, z, g)
        if math.isnan(lr):
            return 0, np.nan, steps, STATUS_NAN
        if _under_graph(logpdf, row, t, lr, g, edges, cdf, table, kinks):
            return h, z, steps, OK
        if h >= np.int64(1) << MAX_DEPTH:
            return 0, np.nan, steps, STATUS_DEPTH
        if _splits_at_point(split, h):
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
            lo, hi = max(cza, g[G_LOW]), min(czb, g[G_HIGH])
            if not (mass > 0.0 and lo <= hi):
                continue
            # sup log r over the child: at the mode clamped into it (a unimodal ratio), plus a rounding margin
            bound = _log_ratio(logpdf, row, min(max(g[G_MODE], lo), hi), g)
            if bound == -np.inf:
                continue
            bound += _MARGIN * (1.0 + abs(bound))
            if bound <= lr or not _under_graph(logpdf, row, t, bound, g, edges, cdf, table, kinks):
                continue
            child = 2 * h + side
            tc = t + -math.log(_private_uniform(private, np.uint64(child))) / mass
            if not _under_graph(logpdf, row, tc, bound, g, edges, cdf, table, kinks):
                continue
            if size == queue.shape[0]:
                return 0, np.nan, steps, STATUS_QUEUE
            size = _push(queue, heap, size, tc, tc, lu, lc, hu, hc, cza, czb, child)
    return 0, np.nan, steps, STATUS_QUEUE  # unreachable: the mode's node is always kept


@numba.njit(cache=True, error_model="numpy")
def _gprs_global(logpdf, row, seed, key, stream, max_steps, g, edges, cdf, table, kinks):
    """Global GPRS on the prior-proposal candidates (as :func:`rcc.samplers.kernels._global_gprs`)."""
    shared = _stream_prefix(DOMAIN_SHARED, seed, stream)
    private = _stream_prefix(DOMAIN_PRIVATE, key, stream)
    t = 0.0
    for n in range(1, max_steps + 1):
        t += -math.log(_private_uniform(private, np.uint64(n)))
        z = base_kernels.prior_ppf_scaled(0.0, _shared_dither(shared, np.uint64(n), 0) + 0.5, 1.0,
                                          np.int64(g[G_PF]), g[G_PLOC], g[G_PSCALE])
        lr = _log_ratio(logpdf, row, z, g)
        if math.isnan(lr):
            return 0, np.nan, n, STATUS_NAN
        if _under_graph(logpdf, row, t, lr, g, edges, cdf, table, kinks):
            return n, z, n, OK
    return 0, np.nan, max_steps, STATUS_MAX_STEPS


@numba.njit(cache=True, error_model="numpy")
def _greedy_rejection(logpdf, row, seed, key, stream, split, max_steps, g, edges, cdf):
    """Greedy rejection coding (the rule of :func:`rcc.samplers.kernels._greedy_rejection`)."""
    shared = _stream_prefix(DOMAIN_SHARED, seed, stream)
    private = _stream_prefix(DOMAIN_PRIVATE, key, stream)
    pf, ploc, pscale = np.int64(g[G_PF]), g[G_PLOC], g[G_PSCALE]
    ua, ca, ub, cb, za, zb = 0.0, 1.0, 1.0, 0.0, -np.inf, np.inf
    level, residual = 0.0, 1.0
    r_top = math.exp(g[G_LOG_RMAX]) * (1.0 + _MARGIN)
    set_lo, set_hi = g[G_LOW], g[G_HIGH]
    h = np.int64(1)
    u, c, z = 0.0, 1.0, np.nan
    for step in range(1, max_steps + 1):
        mass = _mass(ua, ca, ub, cb)
        coin = _private_coin(private, h, 1) * residual
        at_point = _splits_at_point(split, h)
        if at_point or coin <= (r_top - level) * mass:
            u, c = _cut(ua, ca, ub, cb, _dither(shared, h))
            z = _pair_ppf(u, c, pf, ploc, pscale)
            lr = _log_ratio(logpdf, row, z, g)
            if math.isnan(lr):
                return 0, np.nan, step, STATUS_NAN
            above = math.exp(lr) - level
            if above > 0.0 and coin <= above * mass:
                return h, z, step, OK
        if h >= np.int64(1) << MAX_DEPTH:
            return 0, np.nan, step, STATUS_DEPTH
        level += residual / mass
        if at_point:
            um, cm, zm = u, c, z
        else:
            um, cm = _cut(ua, ca, ub, cb, 0.5)
            zm = _pair_ppf(um, cm, pf, ploc, pscale)
        set_lo, set_hi = _level_set(logpdf, row, math.log(level), g)
        left = max(_excess_in(logpdf, row, level, za, zm, set_lo, set_hi, g, edges, cdf), 0.0)
        right = max(_excess_in(logpdf, row, level, zm, zb, set_lo, set_hi, g, edges, cdf), 0.0)
        if not left + right > 0.0:
            return 0, np.nan, step, STATUS_NO_MASS
        if _private_coin(private, h, 2) * (left + right) <= left:
            ub, cb, zb, residual, h = um, cm, zm, left, 2 * h
        else:
            ua, ca, za, residual, h = um, cm, zm, right, 2 * h + 1
    return 0, np.nan, max_steps, STATUS_MAX_STEPS


@numba.njit(cache=True, error_model="numpy", inline="always")
def _same_element(params, low, high, breaks, mode, pf, ploc, pscale, i):
    """Whether element ``i`` is element ``i - 1`` (same target and prior): its tables still hold."""
    if (low[i] != low[i - 1] or high[i] != high[i - 1] or mode[i] != mode[i - 1] or pf[i] != pf[i - 1]
            or ploc[i] != ploc[i - 1] or pscale[i] != pscale[i - 1]):
        return False
    for k in range(params.shape[1]):
        if params[i, k] != params[i - 1, k]:
            return False
    for k in range(breaks.shape[1]):
        if breaks[i, k] != breaks[i - 1, k]:
            return False
    return True


@_typed_kernel(
    types.void(_LOGPDF_TYPE, _F2, _F1, _F1, _F2, _F1, _b1, _I1, _F1, _F1, _u8, _u8, _u8, _i8, _i8, _i8,
               _I1, _F1, _I1, _I1),
    cache=True, parallel=True,
)
def general_masses_batch(logpdf, params, low, high, breaks, mode, use_mode, prior_family, prior_loc, prior_scale,
                         seed, key, stream_offset, rule, split, max_steps, index, sample, steps, status):
    """GPRS (``rule == RULE_GPRS``; ``split < 0``: global) or greedy rejection coding of every element.

    ``use_mode``: ``mode`` is the ratio's mode (Uniform priors); else ``log r`` is concave and its mode is
    searched for.  Element ``i`` uses stream ``stream_offset + i``.
    """
    capacity = TABLE_CELLS + 1 + 2 * (_GRADE - 8) + breaks.shape[1]
    for block in numba.prange((low.shape[0] + _BLOCK - 1) // _BLOCK):
        edges = np.empty(capacity)
        cdf = np.empty((2, capacity))
        g = np.empty(_STATE)
        table = np.empty(_S_GRID.shape[0])
        kinks = np.empty(2)
        queue = np.empty((_QUEUE, 8))
        heap = np.empty(_QUEUE, dtype=np.int64)
        top = np.empty(8)
        start = block * _BLOCK
        state = OK
        for i in range(start, min(low.shape[0], (block + 1) * _BLOCK)):
            row = params[i]
            if i == start or not _same_element(params, low, high, breaks, mode, prior_family, prior_loc,
                                               prior_scale, i):
                state = _setup(logpdf, row, low[i], high[i], breaks[i], mode[i], use_mode, prior_family[i],
                               prior_loc[i], prior_scale[i], edges, cdf, g)
                if state == OK and rule == RULE_GPRS:
                    _sigma_setup(logpdf, row, g, table, kinks)
            stream = stream_offset + np.uint64(i)
            if state != OK:
                h, z, n, st = 0, np.nan, 0, state
            elif rule != RULE_GPRS:
                h, z, n, st = _greedy_rejection(logpdf, row, seed, key, stream, split, max_steps, g, edges, cdf)
            elif split < 0:
                h, z, n, st = _gprs_global(logpdf, row, seed, key, stream, max_steps, g, edges, cdf, table, kinks)
            else:
                h, z, n, st = _gprs_tree(logpdf, row, seed, key, stream, split, max_steps, g, edges, cdf, table,
                                         kinks, queue, heap, top)
            index[i], sample[i], steps[i], status[i] = h, z, n, st


@_typed_kernel(
    types.void(_LOGPDF_TYPE, _F1, _f8, _f8, _F1, _f8, _b1, _i8, _f8, _f8, _F1, _F1, _F1),
    cache=True,
)
def general_sigma(logpdf, row, low, high, breaks, mode, use_mode, prior_family, prior_loc, prior_scale,
                  levels, out, info):
    """GPRS's ``sigma`` of one target at ratios ``levels`` (``0 <= levels``); ``info = (log r_max, status)``."""
    capacity = TABLE_CELLS + 1 + 2 * (_GRADE - 8) + breaks.shape[0]
    edges, cdf, g = np.empty(capacity), np.empty((2, capacity)), np.empty(_STATE)
    table, kinks = np.empty(_S_GRID.shape[0]), np.empty(2)
    state = _setup(logpdf, row, low, high, breaks, mode, use_mode, prior_family, prior_loc, prior_scale,
                   edges, cdf, g)
    info[0], info[1] = g[G_LOG_RMAX], state
    if state != OK:
        out[:] = np.nan
        return
    _sigma_setup(logpdf, row, g, table, kinks)
    for i in range(levels.shape[0]):
        log_value = math.log(levels[i]) if levels[i] > 0.0 else -np.inf
        out[i] = 0.0 if log_value == -np.inf else _sigma_at_s(logpdf, row, _level_s(log_value, g), g, edges,
                                                               cdf, table, kinks)
