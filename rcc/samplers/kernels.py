"""Numba kernels of the tree samplers: density ratios, masses, GPRS's stretch function and the searches.

Everything here is a pure function of packed per-element parameters (one
float64 row each, see ``P_*``); validation lives in :mod:`rcc.samplers.core`.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba.extending import overload

from .. import kernels as base_kernels
from ..random import (_GAMMA, _S11, _TWO_M53, DOMAIN_PRIVATE, DOMAIN_SHARED, _mix64, _private_uniform,
                      _shared_dither, _stream_prefix)

__all__ = [
    "SAMPLER_METHODS",
    "MAX_DEPTH",
    "SAMPLE_SPLIT_DEPTH",
    "NUM_PARAMS",
    "encode_batch",
    "decode_batch",
    "decode_candidates_batch",
    "left_fractions",
]

#: ``method=`` values handled by this module (``encode_sample`` / ``decode_sample`` dispatch here).
SAMPLER_METHODS = ("astar", "astar-dyadic", "gprs", "gprs-sac", "gprs-dyadic", "grc-sample", "grc-dyadic")
#: Deepest node a search may reach (heap indices stay below ``2**63``).
MAX_DEPTH = 62
#: Depth from which the sample-split methods split a node at its midpoint instead of its point: a
#: dyadic level halves the prior mass, where a split at the point shrinks the interval that holds
#: the target by less on average (about 0.7 bits a level) and by much less on unlucky paths, so
#: the mixed tree keeps targets of about 40 bits of KL within ``MAX_DEPTH`` levels (a pure
#: sample-split tree: about 30).  Nodes above this depth, and so every heap index of at most this
#: depth, are those of the pure sample-split tree.
SAMPLE_SPLIT_DEPTH = 32

RULE_ASTAR, RULE_GPRS, RULE_GRC = 0, 1, 2
SPLIT_SAMPLE, SPLIT_DYADIC = 0, 1
_RULES = {"astar": (RULE_ASTAR, SPLIT_SAMPLE), "astar-dyadic": (RULE_ASTAR, SPLIT_DYADIC),
          "gprs-sac": (RULE_GPRS, SPLIT_SAMPLE), "gprs-dyadic": (RULE_GPRS, SPLIT_DYADIC),
          "grc-sample": (RULE_GRC, SPLIT_SAMPLE), "grc-dyadic": (RULE_GRC, SPLIT_DYADIC)}

OK, STATUS_MAX_STEPS, STATUS_DEPTH, STATUS_QUEUE, STATUS_NO_MASS = 0, 1, 2, 3, 4
STATUS_NAN = 5  # a log density of NaN at a point or a bound (general targets), or no point of the support
NORMAL, UNIFORM, LAPLACE = 0, 1, 2  # target families (the first two are also the prior families)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_QUEUE = 4096
_KINKS = 5  # breakpoints of the stretch function's integrand
_BLOCK = 256

# Per-element parameters (one float64 row): target, prior and the quadratic log ratio.
(P_FAMILY, P_LOC, P_SCALE, P_LOW, P_HIGH, P_LOGNORM, P_PRIOR_FAMILY, P_PRIOR_LOC, P_PRIOR_SCALE,
 P_CURVATURE, P_VERTEX, P_LOG_RMAX, P_CONST) = range(13)
NUM_PARAMS = 13

# Stretch function: pieces of width _DS in s = -log(1 - eta / r_max) up to _S_MAX, where
# eta / r_max = 1 - 1e-13 (closer, the masses cancel in double precision and sigma = inf).
_DS = 2.0
_S_MAX = 30.0
# Near s = 0 (eta -> 0) the superlevel sets run out to the prior's tails and the integrand behaves
# like 1 + O(s log s), which Gauss-Legendre rules converge on slowly: there the grid is geometric,
# 4**-20 .. 4**-1, 1.  sigma is tabulated at every grid point (lazily, per target), so a query costs
# one 8-point rule inside its piece.
_S_GRID = np.concatenate((np.zeros(1), 4.0 ** -np.arange(20.0, -1.0, -1.0), np.arange(_DS, _S_MAX + 0.5 * _DS, _DS)))
_GL_X = np.array([-0.9602898564975363, -0.7966664774136267, -0.5255324099163290, -0.1834346424956498,
                  0.1834346424956498, 0.5255324099163290, 0.7966664774136267, 0.9602898564975363])
_GL_W = np.array([0.1012285362903763, 0.2223810344533745, 0.3137066458778873, 0.3626837833783620,
                  0.3626837833783620, 0.3137066458778873, 0.2223810344533745, 0.1012285362903763])


# --------------------------------------------------------------------------- density ratio


@numba.njit(cache=True, error_model="numpy", inline="always")
def _log_ratio(z, p):
    """``log q(z) - log p(z)`` (``-inf`` outside the target's support)."""
    if not (z >= p[P_LOW] and z <= p[P_HIGH]) or not math.isfinite(z):
        return -np.inf
    value = p[P_CONST]  # every z-independent term
    if p[P_FAMILY] == NORMAL:
        t = (z - p[P_LOC]) / p[P_SCALE]
        value -= 0.5 * t * t
    elif p[P_FAMILY] == LAPLACE:
        value -= abs(z - p[P_LOC]) / p[P_SCALE]
    if p[P_PRIOR_FAMILY] == NORMAL:
        s = (z - p[P_PRIOR_LOC]) / p[P_PRIOR_SCALE]
        value += 0.5 * s * s
    return value


@numba.njit(cache=True, error_model="numpy", inline="always")
def _sup_log_ratio(za, zb, p):
    """``sup log r`` over ``[za, zb]``: exact, because ``log r`` is a quadratic on the support (on each side
    of the mode for a Laplace target, where it is convex or linear, so the supremum is at an end or the mode)."""
    lo = max(za, p[P_LOW])
    hi = min(zb, p[P_HIGH])
    if not lo <= hi:
        return -np.inf
    if p[P_FAMILY] == LAPLACE:
        best = max(_log_ratio(lo, p), _log_ratio(hi, p))
        if lo <= p[P_VERTEX] and p[P_VERTEX] <= hi:  # the vertex holds the mode, where the pieces meet
            best = max(best, _log_ratio(p[P_VERTEX], p))
        return best
    if p[P_CURVATURE] < 0.0:
        return _log_ratio(min(max(p[P_VERTEX], lo), hi), p)
    return max(_log_ratio(lo, p), _log_ratio(hi, p))


@numba.njit(cache=True, error_model="numpy", inline="always")
def _fill_params(family, loc, scale, low, high, lognorm, prior_family, prior_loc, prior_scale, out):
    """Pack the parameters and the quadratic's curvature, vertex and maximum; returns the maximum."""
    out[P_FAMILY], out[P_LOC], out[P_SCALE], out[P_LOW], out[P_HIGH] = family, loc, scale, low, high
    out[P_LOGNORM], out[P_PRIOR_FAMILY], out[P_PRIOR_LOC], out[P_PRIOR_SCALE] = (
        lognorm, prior_family, prior_loc, prior_scale)
    const = -lognorm + math.log(prior_scale)
    if family == NORMAL:
        const -= math.log(scale) + _HALF_LOG_2PI
    elif family == LAPLACE:
        const -= math.log(2.0 * scale)
    if prior_family == NORMAL:
        const += _HALF_LOG_2PI
    out[P_CONST] = const
    curvature = 0.0  # coefficient of z**2 in log r
    slope = 0.0  # coefficient of z
    if family == NORMAL:
        curvature -= 0.5 / (scale * scale)
        slope += loc / (scale * scale)
    if prior_family == NORMAL:
        curvature += 0.5 / (prior_scale * prior_scale)
        slope -= prior_loc / (prior_scale * prior_scale)
    out[P_CURVATURE] = curvature
    if family == LAPLACE:
        # two pieces, z <= loc and z >= loc, each a quadratic of curvature 1 / (2 prior_scale**2) (or 0)
        out[P_VERTEX] = loc
    elif family == NORMAL and prior_family == NORMAL:
        # vertex (loc tau^2 - m sigma^2) / (tau^2 - sigma^2), written without the coefficients' cancellation
        tau2, sig2 = prior_scale * prior_scale, scale * scale
        out[P_VERTEX] = (loc * tau2 - prior_loc * sig2) / (tau2 - sig2) if tau2 != sig2 else 0.0
    elif family == NORMAL:
        out[P_VERTEX] = loc
    elif prior_family == NORMAL:
        out[P_VERTEX] = prior_loc
    else:
        out[P_VERTEX] = 0.5 * (low + high)
    out[P_LOG_RMAX] = _sup_log_ratio(-np.inf, np.inf, out)
    return out[P_LOG_RMAX]


# --------------------------------------------------------------------------- masses and sigma


@numba.njit(cache=True, error_model="numpy", inline="always")
def _normal_mass(a, b):
    """``Phi(b) - Phi(a)`` for standardised ``a <= b``, from the tail that keeps precision."""
    if a > 0.0:
        return 0.5 * (math.erfc(a * _INV_SQRT2) - math.erfc(b * _INV_SQRT2))
    return 0.5 * (math.erfc(-b * _INV_SQRT2) - math.erfc(-a * _INV_SQRT2))


@numba.njit(cache=True, error_model="numpy", inline="always")
def _laplace_mass(a, b):
    """Mass of the standard Laplace on ``[a, b]`` (``a <= b``), from the tail that keeps precision."""
    if b <= 0.0:
        return 0.5 * math.exp(b) * -math.expm1(a - b)
    if a >= 0.0:
        return 0.5 * math.exp(-a) * -math.expm1(a - b)
    return 0.5 * (-math.expm1(a) - math.expm1(-b))


@numba.njit(cache=True, error_model="numpy", inline="always")
def _masses(lo, hi, p):
    """``(Q([lo, hi]), P([lo, hi]))`` of an interval inside the target's support."""
    if not lo < hi:
        return 0.0, 0.0
    if p[P_FAMILY] == NORMAL:
        q = _normal_mass((lo - p[P_LOC]) / p[P_SCALE], (hi - p[P_LOC]) / p[P_SCALE]) / math.exp(p[P_LOGNORM])
    elif p[P_FAMILY] == LAPLACE:
        q = _laplace_mass((lo - p[P_LOC]) / p[P_SCALE], (hi - p[P_LOC]) / p[P_SCALE]) / math.exp(p[P_LOGNORM])
    else:
        q = (hi - lo) / p[P_SCALE]
    if p[P_PRIOR_FAMILY] == NORMAL:
        prior = _normal_mass((lo - p[P_PRIOR_LOC]) / p[P_PRIOR_SCALE], (hi - p[P_PRIOR_LOC]) / p[P_PRIOR_SCALE])
    else:
        prior = (hi - lo) / p[P_PRIOR_SCALE]
    return q, prior


@numba.njit(cache=True, error_model="numpy", inline="always")
def _excess(eta, p):
    """``w_Q(eta) - eta w_P(eta) = E_P[(r - eta)_+]`` from the closed-form superlevel set of ``r``."""
    return _excess_on(eta, -np.inf, np.inf, p)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _excess_on(eta, za, zb, p):
    """``E_P[(r - eta)_+ ; za <= z <= zb]``: the target mass above level ``eta`` in an interval."""
    a, v = p[P_CURVATURE], p[P_VERTEX]
    low, high = max(p[P_LOW], za), min(p[P_HIGH], zb)
    if not low < high:
        return 0.0
    if not eta > 0.0:
        q, prior = _masses(low, high, p)
        return q - eta * prior
    level = math.log(eta)
    if p[P_FAMILY] == LAPLACE:
        return _laplace_excess_on(eta, level, low, high, p)
    if a == 0.0:
        # constant ratio (only a Uniform target under a Uniform prior is linear-free and bounded)
        q, prior = _masses(low, high, p) if p[P_LOG_RMAX] >= level else (0.0, 0.0)
        return q - eta * prior
    top = _log_ratio(min(max(v, low), high), p) if a < 0.0 else -np.inf
    if a < 0.0:
        if level >= top:
            return 0.0
        half = math.sqrt((top - level) / -a) if v >= low and v <= high else 0.0
        if v >= low and v <= high:
            lo, hi = max(low, v - half), min(high, v + half)
        else:
            # the vertex lies outside the support: r is monotone on it, the set touches one end
            end = low if v < low else high
            gap = math.sqrt(max(((_log_ratio(end, p) - level) / -a) + (end - v) ** 2, 0.0))
            lo, hi = (low, min(high, v + gap)) if v < low else (max(low, v - gap), high)
        q, prior = _masses(lo, hi, p)
        return q - eta * prior
    # convex: the set is the support minus a window around the vertex
    base = _log_ratio(v, p) if v >= low and v <= high else -np.inf
    if v >= low and v <= high:
        inner = math.sqrt(max((level - base) / a, 0.0))
    else:
        end = low if v < low else high
        inner = math.sqrt(max((level - _log_ratio(end, p)) / a + (end - v) ** 2, 0.0))
    q1, p1 = _masses(low, min(high, v - inner), p)
    q2, p2 = _masses(max(low, v + inner), high, p)
    return (q1 + q2) - eta * (p1 + p2)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _below_level(curvature, slope, offset):
    """The open interval ``(x1, x2)`` where ``curvature x**2 + slope x + offset < 0`` (``curvature >= 0``);
    empty when ``x1 >= x2``.  The roots are taken in the form that avoids cancellation."""
    if curvature == 0.0:
        root = -offset / slope
        return (-np.inf, root) if slope > 0.0 else (root, np.inf)
    disc = slope * slope - 4.0 * curvature * offset
    if not disc > 0.0:
        return np.inf, -np.inf
    q = -0.5 * (slope + math.copysign(math.sqrt(disc), slope))
    if q == 0.0:
        return np.inf, -np.inf
    r1, r2 = q / curvature, offset / q
    return min(r1, r2), max(r1, r2)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _laplace_piece_slope(side, p):
    """Slope at the mode ``x = 0`` of the piece's log ratio in ``x = z - m`` (side 0: ``z <= m``; the mode
    ``m`` is held in ``P_VERTEX``)."""
    slope = (1.0 if side == 0 else -1.0) / p[P_SCALE]
    if p[P_PRIOR_FAMILY] == NORMAL:
        slope += 2.0 * p[P_CURVATURE] * (p[P_VERTEX] - p[P_PRIOR_LOC])
    return slope


@numba.njit(cache=True, error_model="numpy")
def _laplace_excess_on(eta, level, low, high, p):
    """:func:`_excess_on` of a Laplace target on ``[low, high]`` inside its support, ``eta > 0``.

    On each side of the mode ``m`` the log ratio is ``a x**2 + b x + g(m)`` in
    ``x = z - m`` (``a = 1 / (2 prior_scale**2) >= 0``, or 0 for a Uniform
    prior): convex, so the superlevel set is the piece minus one window.
    """
    m = p[P_VERTEX]
    top = _log_ratio(m, p) - level  # the log ratio at the mode, minus the level
    total = 0.0
    for side in range(2):
        lo, hi = (low, min(high, m)) if side == 0 else (max(low, m), high)
        if not lo < hi:
            continue
        x1, x2 = _below_level(p[P_CURVATURE], _laplace_piece_slope(side, p), top)
        if x1 >= x2 or m + x2 <= lo or m + x1 >= hi:
            q, prior = _masses(lo, hi, p)
            total += q - eta * prior
            continue
        if m + x1 > lo:
            q, prior = _masses(lo, m + x1, p)
            total += q - eta * prior
        if m + x2 < hi:
            q, prior = _masses(m + x2, hi, p)
            total += q - eta * prior
    return total


@numba.njit(cache=True, error_model="numpy", inline="always")
def _three_point_masses(a, m, b, family, loc, scale):
    """Masses of ``[a, m]`` and ``[m, b]`` (``a <= m <= b``) as :func:`_normal_mass` computes them,
    with the tail value at the shared point ``m`` computed once."""
    if family != NORMAL:
        return (m - a) / scale, (b - m) / scale
    ta, tm, tb = (a - loc) / scale, (m - loc) / scale, (b - loc) / scale
    # the same tail choice as _normal_mass: upper tails when the piece's lower end is above the mean
    if ta > 0.0:
        em = math.erfc(tm * _INV_SQRT2)
        left = 0.5 * (math.erfc(ta * _INV_SQRT2) - em)
    else:
        em_neg = math.erfc(-tm * _INV_SQRT2)
        left = 0.5 * (em_neg - math.erfc(-ta * _INV_SQRT2))
    if tm > 0.0:
        right = 0.5 * ((em if ta > 0.0 else math.erfc(tm * _INV_SQRT2)) - math.erfc(tb * _INV_SQRT2))
    else:
        right = 0.5 * (math.erfc(-tb * _INV_SQRT2) - em_neg)
    return left, right


@numba.njit(cache=True, error_model="numpy", inline="always")
def _prior_position(x, za, zm, zb, ua, ca, um, cm, ub, cb, p):
    """``(F_p(x), 1 - F_p(x))`` of a Normal prior: the node's pair if ``x`` is one of its three points."""
    if x == za:
        return ua, ca
    if x == zm:
        return um, cm
    if x == zb:
        return ub, cb
    t = (x - p[P_PRIOR_LOC]) / p[P_PRIOR_SCALE]
    if t > 0.0:
        c = 0.5 * math.erfc(t * _INV_SQRT2)
        return 1.0 - c, c
    u = 0.5 * math.erfc(-t * _INV_SQRT2)
    return u, 1.0 - u


@numba.njit(cache=True, error_model="numpy", inline="always")
def _child_excesses(level, za, zm, zb, ua, ca, um, cm, ub, cb, p):
    """``(_excess_on(level, za, zm, p), _excess_on(level, zm, zb, p))`` for ``level > 0``, in one pass.

    Both children share the superlevel set ``{r >= level}``; for a concave log
    ratio it is one interval, so the masses of the two children's parts need
    the distribution functions at three points instead of four (the shared
    point ``zm`` once).  Other shapes fall back to two :func:`_excess_on` calls.
    """
    a, v = p[P_CURVATURE], p[P_VERTEX]
    if not (a < 0.0 and level > 0.0):
        return _excess_on(level, za, zm, p), _excess_on(level, zm, zb, p)
    log_level = math.log(level)
    if log_level >= p[P_LOG_RMAX]:
        return 0.0, 0.0
    low, high = p[P_LOW], p[P_HIGH]
    if v >= low and v <= high:
        half = math.sqrt((p[P_LOG_RMAX] - log_level) / -a)
        set_lo, set_hi = v - half, v + half
    else:
        # the vertex lies outside the support: r is monotone on it, the set touches one end
        end = low if v < low else high
        gap = math.sqrt(max(((_log_ratio(end, p) - log_level) / -a) + (end - v) ** 2, 0.0))
        set_lo, set_hi = (low, v + gap) if v < low else (v - gap, high)
    lo = max(za, max(low, set_lo))
    hi = min(zb, min(high, set_hi))
    if not lo < hi:
        return 0.0, 0.0
    mid = min(max(zm, lo), hi)
    if mid == lo or mid == hi:
        # the set lies in one child (most steps while a node is wider than the set): two points, not three,
        # and the same arithmetic as the three-point masses with the middle point at an end
        if p[P_FAMILY] == NORMAL:
            q = _normal_mass((lo - p[P_LOC]) / p[P_SCALE], (hi - p[P_LOC]) / p[P_SCALE]) / math.exp(p[P_LOGNORM])
        else:
            q = (hi - lo) / p[P_SCALE]
        if p[P_PRIOR_FAMILY] == NORMAL:
            lo_u, lo_c = _prior_position(lo, za, zm, zb, ua, ca, um, cm, ub, cb, p)
            hi_u, hi_c = _prior_position(hi, za, zm, zb, ua, ca, um, cm, ub, cb, p)
            prior = _mass(lo_u, lo_c, hi_u, hi_c)
        else:
            prior = (hi - lo) / p[P_PRIOR_SCALE]
        return (0.0, q - level * prior) if mid == lo else (q - level * prior, 0.0)
    q_left, q_right = _three_point_masses(lo, mid, hi, p[P_FAMILY], p[P_LOC], p[P_SCALE])
    if p[P_FAMILY] == NORMAL:
        norm = math.exp(p[P_LOGNORM])
        q_left, q_right = q_left / norm, q_right / norm
    if p[P_PRIOR_FAMILY] == NORMAL:
        # the node's own ends carry their CDF positions: only points cut by the superlevel set need erfc
        lo_u, lo_c = _prior_position(lo, za, zm, zb, ua, ca, um, cm, ub, cb, p)
        mid_u, mid_c = _prior_position(mid, za, zm, zb, ua, ca, um, cm, ub, cb, p)
        hi_u, hi_c = _prior_position(hi, za, zm, zb, ua, ca, um, cm, ub, cb, p)
        p_left, p_right = _mass(lo_u, lo_c, mid_u, mid_c), _mass(mid_u, mid_c, hi_u, hi_c)
    else:
        p_left, p_right = _three_point_masses(lo, mid, hi, p[P_PRIOR_FAMILY], p[P_PRIOR_LOC], p[P_PRIOR_SCALE])
    left = q_left - level * p_left if mid > lo else 0.0
    right = q_right - level * p_right if hi > mid else 0.0
    return left, right


@numba.njit(cache=True, error_model="numpy")
def _integrand(s, p):
    """``d sigma / d s`` at ``s = -log(1 - eta / r_max)``."""
    r_max = math.exp(p[P_LOG_RMAX])
    tail = math.exp(-s)
    eta = r_max * (1.0 - tail) if s > 1e-3 else r_max * -math.expm1(-s)
    if eta <= 0.0:
        return 1.0 * r_max  # w_Q(0) - 0 = 1
    excess = _excess(eta, p)
    if not excess > 0.0:
        return np.inf
    return r_max * tail / excess


@numba.njit(cache=True, error_model="numpy")
def _gauss_legendre(sa, sb, p):
    half = 0.5 * (sb - sa)
    mid = 0.5 * (sa + sb)
    total = 0.0
    for k in range(8):
        total += _GL_W[k] * _integrand(mid + half * _GL_X[k], p)
    return total * half


@numba.njit(cache=True, error_model="numpy")
def _integrate_smooth(sa, sb, p, kinks):
    """``int_sa^sb`` of the integrand, split at the kinks (where a superlevel set meets a support end)."""
    total = 0.0
    start = sa
    for k in range(kinks.shape[0]):
        if kinks[k] > start and kinks[k] < sb:
            total += _gauss_legendre(start, kinks[k], p)
            start = kinks[k]
    return total + _gauss_legendre(start, sb, p)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _level_s(log_value, p):
    """``s = -log(1 - r / r_max)`` of a ratio value (``inf`` at the maximum)."""
    d = log_value - p[P_LOG_RMAX]
    if d >= 0.0:
        return np.inf
    return -math.log1p(-math.exp(d))


@numba.njit(cache=True, error_model="numpy")
def _sigma_setup(p, table, kinks):
    """Reset the lazily filled table of ``sigma`` at the points of ``_S_GRID`` and find the kinks."""
    table[0] = 0.0
    table[1:] = np.nan
    kinks[0] = _level_s(_log_ratio(p[P_LOW], p), p) if math.isfinite(p[P_LOW]) else np.inf
    kinks[1] = _level_s(_log_ratio(p[P_HIGH], p), p) if math.isfinite(p[P_HIGH]) else np.inf
    kinks[2:] = np.inf
    if p[P_FAMILY] == LAPLACE:
        # also where the level passes the mode and, on each side, the piece's minimum (a window opens)
        m = p[P_VERTEX]
        kinks[2] = _level_s(_log_ratio(m, p), p)
        for side in range(2):
            if p[P_CURVATURE] > 0.0:
                z = m - _laplace_piece_slope(side, p) / (2.0 * p[P_CURVATURE])
                if (side == 0 and p[P_LOW] < z < m) or (side == 1 and m < z < p[P_HIGH]):
                    kinks[3 + side] = _level_s(_log_ratio(z, p), p)
        kinks.sort()  # the integration walks the kinks in order


@numba.njit(cache=True, error_model="numpy", inline="always")
def _cell_of(x, edges, n):
    """The cell ``k`` with ``edges[k] <= x < edges[k + 1]`` of the first ``n`` sorted edges (clamped to
    ``0 .. n - 2``), by bisection."""
    lo, hi = 0, n - 1
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        if edges[mid] <= x:
            lo = mid
        else:
            hi = mid
    return lo


@numba.njit(cache=True, error_model="numpy", inline="always")
def _piece_of(s):
    """The piece ``k`` of ``_S_GRID`` holding ``0 <= s < _S_MAX``: ``_S_GRID[k] <= s < _S_GRID[k + 1]``."""
    return _cell_of(s, _S_GRID, _S_GRID.shape[0])


@numba.njit(cache=True, error_model="numpy")
def _sigma_node(k, p, table, kinks):
    """``sigma`` at the grid point ``_S_GRID[k]``, filling the table up to it on first use."""
    if np.isnan(table[k]):
        j = k
        while np.isnan(table[j]):
            j -= 1
        while j < k:
            table[j + 1] = table[j] + _integrate_smooth(_S_GRID[j], _S_GRID[j + 1], p, kinks)
            j += 1
    return table[k]


@numba.njit(cache=True, error_model="numpy")
def _sigma_at_s(s, p, table, kinks):
    """``sigma`` at level ``s`` (``inf`` beyond ``_S_MAX``): the table, plus one rule inside a piece."""
    if not s < _S_MAX:
        return np.inf
    k = _piece_of(s)
    below = _sigma_node(k, p, table, kinks)
    if s == _S_GRID[k]:
        return below
    return below + _integrate_smooth(_S_GRID[k], s, p, kinks)


@numba.njit(cache=True, error_model="numpy")
def _under_graph(t, log_value, p, table, kinks):
    """``t < sigma(r)`` for a point at time ``t`` and log ratio ``log_value``."""
    if log_value == -np.inf:
        return False
    s = _level_s(log_value, p)
    if not s < _S_MAX:
        return True
    # sigma is increasing: the table's values at the piece's ends decide most comparisons
    k = _piece_of(s)
    below = _sigma_node(k, p, table, kinks)
    if t < below:
        return True
    if t >= _sigma_node(k + 1, p, table, kinks):
        return False
    return t < below + _integrate_smooth(_S_GRID[k], s, p, kinks)


# --------------------------------------------------------------------------- the searches


# A position on the CDF axis is a pair (u, c = 1 - u); in the upper half the complement
# is the exact one, so intervals deep in the prior's upper tail keep full precision.


@numba.njit(cache=True, error_model="numpy", inline="always")
def _cut(ua, ca, ub, cb, v):
    """The point a fraction ``v`` into the interval ``(a, b)``, as ``(u, 1 - u)``."""
    if ua >= 0.5:
        c = ca - (ca - cb) * v
        return 1.0 - c, c
    u = ua + (ub - ua) * v
    return u, 1.0 - u


@numba.njit(cache=True, error_model="numpy", inline="always")
def _mass(ua, ca, ub, cb):
    """Prior mass ``b - a`` of an interval."""
    return ca - cb if ua >= 0.5 else ub - ua


@numba.njit(cache=True, error_model="numpy", inline="always")
def _pair_ppf(u, c, prior_family, prior_loc, prior_scale):
    """``F_p^{-1}`` of the position ``(u, c)``, from the tail that holds it."""
    if prior_family == UNIFORM:
        return prior_loc + prior_scale * u if u <= 0.5 else (prior_loc + prior_scale) - prior_scale * c
    if u <= 0.5:
        return prior_loc + prior_scale * base_kernels.ndtri_lower(u)
    return prior_loc - prior_scale * base_kernels.ndtri_lower(c)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _splits_at_point(split, h):
    """Whether node ``h`` splits at its own point: sample splits above :data:`SAMPLE_SPLIT_DEPTH`, else at
    the midpoint.  A function of the node alone, so the receiver rebuilds the sender's tree."""
    return split == SPLIT_SAMPLE and h < (np.int64(1) << SAMPLE_SPLIT_DEPTH)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _dither(prefix, h):
    """``V_h = U(seed, stream, h) + 1/2`` in ``[0, 1)``."""
    return _shared_dither(prefix, np.uint64(h), 0) + 0.5


@numba.njit(cache=True, error_model="numpy")
def _push(queue, heap, size, key, t, ua, ca, ub, cb, za, zb, h):
    """Insert into the binary min-heap (rows of ``queue``: key, t, ua, ca, ub, cb, za, zb; ``heap``: the
    node's heap index); returns the new size."""
    i = size
    while i > 0:
        parent = (i - 1) >> 1
        if queue[parent, 0] <= key:
            break
        queue[i] = queue[parent]
        heap[i] = heap[parent]
        i = parent
    queue[i, 0], queue[i, 1], queue[i, 2], queue[i, 3] = key, t, ua, ca
    queue[i, 4], queue[i, 5], queue[i, 6], queue[i, 7] = ub, cb, za, zb
    heap[i] = h
    return size + 1


@numba.njit(cache=True, error_model="numpy")
def _pop(queue, heap, size, top):
    """Remove the smallest row into ``top`` (its heap index is returned with the new size)."""
    top[:] = queue[0]
    h = heap[0]
    size -= 1
    if size == 0:
        return h, size
    last_key = queue[size, 0]
    i = 0
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and queue[child + 1, 0] < queue[child, 0]:
            child += 1
        if queue[child, 0] >= last_key:
            break
        queue[i] = queue[child]
        heap[i] = heap[child]
        i = child
    queue[i] = queue[size]
    heap[i] = heap[size]
    return h, size


def _target_log_ratio(z, target):
    """``log dq/dp`` at ``z`` of the target a search runs on, up to a constant (``-inf`` off its support).

    :func:`_search` reaches its target only through this function and
    :func:`_target_bound`; in compiled code the implementation is chosen by the
    type of ``target``: a packed parameter row (``P_*``) of the closed-form
    families here, a certified general target in
    :mod:`rcc.samplers.general_search`.  This Python version takes a row.
    """
    return _log_ratio.py_func(z, target)


def _target_bound(za, zb, target):
    """An upper bound of :func:`_target_log_ratio` on ``[za, zb]`` (``-inf`` where the interval misses the
    support, NaN where the target's density is NaN); the supremum itself for a packed row."""
    return _sup_log_ratio.py_func(za, zb, target)


@overload(_target_log_ratio)
def _row_log_ratio(z, target):
    if isinstance(target, numba.types.Array):
        return lambda z, target: _log_ratio(z, target)
    return None


@overload(_target_bound)
def _row_bound(za, zb, target):
    if isinstance(target, numba.types.Array):
        return lambda za, zb, target: _sup_log_ratio(za, zb, target)
    return None


@numba.njit(cache=True, error_model="numpy")
def _search(seed, key, stream, p, target, rule, split, max_steps, queue, heap, top, table, kinks, same_target):
    """One element's branch and bound; returns ``(heap index, sample, steps, status)``.

    ``p`` holds the prior (``P_PRIOR_*``) and, for GPRS, the packed target;
    the search meets its target only through :func:`_target_log_ratio` and
    :func:`_target_bound` of ``target`` (``p`` itself for the closed-form
    families).  ``same_target``: the previous element had these parameters, so
    its table of ``sigma`` still holds.
    """
    shared = _stream_prefix(DOMAIN_SHARED, seed, stream)
    private = _stream_prefix(DOMAIN_PRIVATE, key, stream)
    if rule == RULE_GPRS and not same_target:
        _sigma_setup(p, table, kinks)
    root = _target_bound(-np.inf, np.inf, target)
    if math.isnan(root):
        return 0, np.nan, 0, STATUS_NAN
    t_root = -math.log(_private_uniform(private, np.uint64(1)))
    size = _push(queue, heap, 0, t_root if rule == RULE_GPRS else math.log(t_root) - root,
                 t_root, 0.0, 1.0, 1.0, 0.0, -np.inf, np.inf, np.int64(1))
    best, best_h, best_z = np.inf, np.int64(0), np.nan
    steps = 0
    while size > 0:
        h, size = _pop(queue, heap, size, top)
        if rule == RULE_ASTAR and top[0] >= best:
            break
        steps += 1
        if steps > max_steps:
            return 0, np.nan, steps, STATUS_MAX_STEPS
        t, ua, ca, ub, cb, za, zb = top[1], top[2], top[3], top[4], top[5], top[6], top[7]
        u, c = _cut(ua, ca, ub, cb, _dither(shared, h))
        z = _pair_ppf(u, c, p[P_PRIOR_FAMILY], p[P_PRIOR_LOC], p[P_PRIOR_SCALE])
        lr = _target_log_ratio(z, target)
        if math.isnan(lr):
            return 0, np.nan, steps, STATUS_NAN
        if rule == RULE_GPRS:
            if _under_graph(t, lr, p, table, kinks):
                return h, z, steps, OK
        elif math.log(t) - lr < best:
            best, best_h, best_z = math.log(t) - lr, h, z
        if h >= np.int64(1) << MAX_DEPTH:
            return 0, np.nan, steps, STATUS_DEPTH
        if _splits_at_point(split, h):
            um, cm, zm = u, c, z
        else:
            um, cm = _cut(ua, ca, ub, cb, 0.5)
            zm = _pair_ppf(um, cm, p[P_PRIOR_FAMILY], p[P_PRIOR_LOC], p[P_PRIOR_SCALE])
        for side in range(2):
            if side == 0:
                lu, lc, hu, hc, cza, czb = ua, ca, um, cm, za, zm
            else:
                lu, lc, hu, hc, cza, czb = um, cm, ub, cb, zm, zb
            mass = _mass(lu, lc, hu, hc)
            if not mass > 0.0:
                continue
            bound = _target_bound(cza, czb, target)
            if math.isnan(bound):
                return 0, np.nan, steps, STATUS_NAN
            if bound == -np.inf:
                continue
            # The child's time exceeds t: children that fail at time t are pruned without drawing it
            # (for sample splits and a unimodal ratio, the child away from the mode, bound r(z) <= r(z_h)).
            if rule == RULE_GPRS:
                if bound <= lr or not _under_graph(t, bound, p, table, kinks):
                    continue
            elif math.log(t) - bound >= best:
                continue
            child = 2 * h + side
            tc = t + -math.log(_private_uniform(private, np.uint64(child))) / mass
            if rule == RULE_GPRS:
                if not _under_graph(tc, bound, p, table, kinks):
                    continue
                priority = tc
            else:
                priority = math.log(tc) - bound
                if priority >= best:
                    continue
            if size == queue.shape[0]:
                return 0, np.nan, steps, STATUS_QUEUE
            size = _push(queue, heap, size, priority, tc, lu, lc, hu, hc, cza, czb, child)
    if rule == RULE_GPRS:
        return 0, np.nan, steps, STATUS_QUEUE  # unreachable: the mode's node is always kept
    if best_h == 0:
        return 0, np.nan, steps, STATUS_NAN  # no point of the support scored
    return best_h, best_z, steps, OK


@numba.njit(cache=True, error_model="numpy", inline="always")
def _private_coin(prefix, n, dim):
    """A private uniform in ``(0, 1]`` for node ``n``; ``dim`` keeps a node's coins apart."""
    h = _mix64((prefix ^ np.uint64(n)) + _GAMMA)
    h = _mix64((h ^ np.uint64(dim)) + _GAMMA)
    return (np.float64(h >> _S11) + 1.0) * _TWO_M53


@numba.njit(cache=True, error_model="numpy")
def _greedy_rejection(seed, key, stream, p, split, max_steps):
    """Greedy rejection coding along one path of nested intervals; returns ``(h, z, steps, status)``.

    At node ``B`` the residual target density is ``p (r - c)_+ / K`` on ``B``
    (``c = 0``, ``K = 1`` at the root).  The node's point is accepted with
    probability ``min(1, (r(z) - c) P(B) / K)``; otherwise the level rises to
    ``c + K / P(B)`` and the search moves into a child with probability
    proportional to its residual mass ``K_child = E_P[(r - c')_+ ; child]``
    (Flamich, Markou & Hernandez-Lobato 2023, Algorithm 1).
    """
    shared = _stream_prefix(DOMAIN_SHARED, seed, stream)
    private = _stream_prefix(DOMAIN_PRIVATE, key, stream)
    ua, ca, ub, cb, za, zb = 0.0, 1.0, 1.0, 0.0, -np.inf, np.inf
    level, residual = 0.0, 1.0
    # r(z) <= r_max: a point whose coin fails even at r_max is rejected without computing it (dyadic
    # splits need the point only when it is accepted); the margin covers rounding in log r
    r_top = math.exp(p[P_LOG_RMAX]) * (1.0 + 1e-9)
    h = np.int64(1)
    u, c, z = 0.0, 1.0, np.nan
    for step in range(1, max_steps + 1):
        mass = _mass(ua, ca, ub, cb)
        coin = _private_coin(private, h, 1) * residual
        at_point = _splits_at_point(split, h)
        if at_point or coin <= (r_top - level) * mass:
            u, c = _cut(ua, ca, ub, cb, _dither(shared, h))
            z = _pair_ppf(u, c, p[P_PRIOR_FAMILY], p[P_PRIOR_LOC], p[P_PRIOR_SCALE])
            above = math.exp(_log_ratio(z, p)) - level
            if above > 0.0 and coin <= above * mass:
                return h, z, step, OK
        if h >= np.int64(1) << MAX_DEPTH:
            return 0, np.nan, step, STATUS_DEPTH
        level += residual / mass
        if at_point:
            um, cm, zm = u, c, z  # always computed where the node splits at its point
        else:
            um, cm = _cut(ua, ca, ub, cb, 0.5)
            zm = _pair_ppf(um, cm, p[P_PRIOR_FAMILY], p[P_PRIOR_LOC], p[P_PRIOR_SCALE])
        left, right = _child_excesses(level, za, zm, zb, ua, ca, um, cm, ub, cb, p)
        left, right = max(left, 0.0), max(right, 0.0)
        if not left + right > 0.0:
            return 0, np.nan, step, STATUS_NO_MASS
        if _private_coin(private, h, 2) * (left + right) <= left:
            ub, cb, zb, residual, h = um, cm, zm, left, 2 * h
        else:
            ua, ca, za, residual, h = um, cm, zm, right, 2 * h + 1
    return 0, np.nan, max_steps, STATUS_MAX_STEPS


@numba.njit(cache=True, error_model="numpy")
def _global_gprs(seed, key, stream, p, max_steps, table, kinks, same_target):
    """Global GPRS on the prior-proposal candidates of ``method="pfr"``; returns ``(N, z, N, status)``."""
    shared = _stream_prefix(DOMAIN_SHARED, seed, stream)
    private = _stream_prefix(DOMAIN_PRIVATE, key, stream)
    if not same_target:
        _sigma_setup(p, table, kinks)
    t = 0.0
    for n in range(1, max_steps + 1):
        t += -math.log(_private_uniform(private, np.uint64(n)))
        z = base_kernels.prior_ppf_scaled(0.0, _shared_dither(shared, np.uint64(n), 0) + 0.5, 1.0,
                                     p[P_PRIOR_FAMILY], p[P_PRIOR_LOC], p[P_PRIOR_SCALE])
        if _under_graph(t, _log_ratio(z, p), p, table, kinks):
            return n, z, n, OK
    return 0, np.nan, max_steps, STATUS_MAX_STEPS


@numba.njit(cache=True, error_model="numpy", inline="always")
def _same_row(params, i):
    """Whether element ``i`` has the parameters of element ``i - 1``."""
    for k in range(params.shape[1]):
        if params[i, k] != params[i - 1, k]:
            return False
    return True


@numba.njit(cache=True, error_model="numpy")
def _encode_block(block, seed, key, stream_offset, params, rule, split, max_steps, index, sample, steps, status):
    queue = np.empty((_QUEUE, 8), dtype=np.float64)
    heap = np.empty(_QUEUE, dtype=np.int64)
    top = np.empty(8, dtype=np.float64)
    table = np.empty(_S_GRID.shape[0], dtype=np.float64)
    kinks = np.empty(_KINKS, dtype=np.float64)
    count = params.shape[0]
    start = block * _BLOCK
    for i in range(start, min(count, (block + 1) * _BLOCK)):
        stream = stream_offset + np.uint64(i)
        # sigma's lazily filled table is a function of the parameters alone: kept for repeated targets
        same_target = (split < 0 or rule == RULE_GPRS) and i > start and _same_row(params, i)
        if split < 0:
            h, z, n, st = _global_gprs(seed, key, stream, params[i], max_steps, table, kinks, same_target)
        elif rule == RULE_GRC:
            h, z, n, st = _greedy_rejection(seed, key, stream, params[i], split, max_steps)
        else:
            h, z, n, st = _search(seed, key, stream, params[i], params[i], rule, split, max_steps, queue, heap,
                                  top, table, kinks, same_target)
        index[i], sample[i], steps[i], status[i] = h, z, n, st


@numba.njit(cache=True, error_model="numpy", parallel=True)
def encode_batch(seed, key, stream_offset, params, rule, split, max_steps, index, sample, steps, status):
    """Encode every element (``split < 0``: global GPRS); element ``i`` uses stream ``stream_offset + i``."""
    for block in numba.prange((params.shape[0] + _BLOCK - 1) // _BLOCK):
        _encode_block(block, seed, key, stream_offset, params, rule, split, max_steps, index, sample, steps,
                      status)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _decode_node(seed, stream, h, split, prior_family, prior_loc, prior_scale):
    """``z_h``: walk from the root to node ``h``, splitting as the sender did."""
    shared = _stream_prefix(DOMAIN_SHARED, seed, stream)
    depth = 0
    while (h >> np.int64(depth + 1)) > 0:
        depth += 1
    ua, ca, ub, cb = 0.0, 1.0, 1.0, 0.0
    for level in range(depth - 1, -1, -1):
        node = h >> np.int64(level + 1)
        um, cm = _cut(ua, ca, ub, cb, _dither(shared, node) if _splits_at_point(split, node) else 0.5)
        if (h >> np.int64(level)) & 1:
            ua, ca = um, cm
        else:
            ub, cb = um, cm
    u, c = _cut(ua, ca, ub, cb, _dither(shared, h))
    return _pair_ppf(u, c, prior_family, prior_loc, prior_scale)


@numba.njit(cache=True, error_model="numpy", parallel=True)
def decode_batch(seed, stream_offset, index, split, prior_family, prior_loc, prior_scale, out):
    """Decode heap indices in ``O(depth)`` each (prior parameters per element)."""
    for i in numba.prange(index.shape[0]):
        out[i] = _decode_node(seed, stream_offset + np.uint64(i), index[i], split, prior_family[i],
                              prior_loc[i], prior_scale[i])


@numba.njit(cache=True, error_model="numpy", parallel=True)
def decode_candidates_batch(seed, stream_offset, index, prior_family, prior_loc, prior_scale, out):
    """Global GPRS: candidate ``index[i]`` of element ``i``'s unsplit process, as :func:`_global_gprs` built it."""
    for i in numba.prange(index.shape[0]):
        shared = _stream_prefix(DOMAIN_SHARED, seed, stream_offset + np.uint64(i))
        out[i] = base_kernels.prior_ppf_scaled(0.0, _shared_dither(shared, np.uint64(index[i]), 0) + 0.5, 1.0,
                                          prior_family[i], prior_loc[i], prior_scale[i])


@numba.njit(cache=True, error_model="numpy")
def left_fractions(seed, stream_offset, index, split, out):
    """The left child's share of the prior mass of node ``index[i]`` of element ``i`` (into ``out``).

    ``V`` of the node for sample splits above :data:`SAMPLE_SPLIT_DEPTH`, 1/2 for
    dyadic ones and deeper nodes: a function of the shared randomness only, so
    sender and receiver agree on it.
    """
    for i in range(index.shape[0]):
        node = np.int64(index[i])
        if not _splits_at_point(split, node):
            out[i] = 0.5
        else:
            out[i] = _dither(_stream_prefix(DOMAIN_SHARED, seed, stream_offset + np.uint64(i)), node)


@numba.njit(cache=True, error_model="numpy")
def _fill_params_batch(columns, out, log_rmax):
    for i in range(out.shape[0]):
        log_rmax[i] = _fill_params(columns[0][i], columns[1][i], columns[2][i], columns[3][i], columns[4][i],
                                   columns[5][i], columns[6][i], columns[7][i], columns[8][i], out[i])


@numba.njit(cache=True, error_model="numpy")
def _sigma_batch(params, log_values, out):
    table = np.empty(_S_GRID.shape[0], dtype=np.float64)
    kinks = np.empty(_KINKS, dtype=np.float64)
    _sigma_setup(params, table, kinks)
    for i in range(log_values.shape[0]):
        out[i] = _sigma_at_s(_level_s(log_values[i], params), params, table, kinks)
