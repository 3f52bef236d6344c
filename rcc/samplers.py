"""Exact samplers on a shared tree of nested intervals: A* coding, GPRS and greedy rejection coding.

The mathematics is explained in :ref:`samplers`.

The sender and the receiver share one Poisson process per batch element on
``(0, inf) x R`` with intensity ``dt x P`` (``P`` the prior).  Its points are
built on the prior's CDF axis ``u = F_p(z)``, where the prior is uniform on
``(0, 1)``, as a binary tree of nested intervals (Maddison et al. 2014,
"A* sampling", Section 3):

* node 1 (the root) is the interval ``(0, 1)``; node ``h`` has the children
  ``2h`` (left) and ``2h + 1`` (right), so a node is named by its *heap index*
  ``h`` and its depth is ``floor(log2 h)``;
* the point of node ``h`` with interval ``(a, b)`` is at
  ``u_h = a + (b - a) V_h``, ``V_h = U(seed, stream, h) + 1/2`` from the shared
  counter-based generator (:mod:`rcc.random`): O(1) access to any node;
* its arrival time is ``T_h = T_parent + E_h / (b - a)`` (``T_1 = E_1``) with
  ``E_h`` a *private* Exp(1) variate of the sender;
* a node splits at its own point (``"sample"`` splits: AS* coding, GPRS "sac",
  GRCS) or at its interval's midpoint (``"dyadic"`` splits: AD*, dyadic GPRS,
  GRCD).  Positions are kept as pairs ``(u, 1 - u)`` so that intervals deep in
  the prior's upper tail keep full precision.

The receiver needs only the heap index: it walks from the root to node ``h``
(``depth`` shared uniforms for sample splits, none for dyadic splits) and
returns ``z = F_p^{-1}(u_h)``, bit for bit the sender's sample.

Selection rules (both exact for the untruncated target):

``"astar"`` / ``"astar-dyadic"``
    A* coding (Flamich, Markou & Hernandez-Lobato 2022, Algorithm 2): the
    point minimising ``T_h / r(z_h)``, ``r = dq/dp``, found by branch and
    bound with the bound ``T_h / sup_{node} r`` and a priority queue.
``"gprs"``
    Global greedy Poisson rejection sampling (Flamich 2023, Algorithm 3):
    the first point of the *unsplit* process (the prior-proposal candidates
    of ``method="pfr"``, decoded by the same code) under the graph of
    ``sigma(r(z))``; the message is the candidate's index ``N``.
``"gprs-sac"`` / ``"gprs-dyadic"``
    Branch-and-bound GPRS (Flamich 2023, Algorithm 5 and Appendix F): the
    earliest tree point under the same graph.
``"grc-sample"`` / ``"grc-dyadic"``
    Greedy rejection coding, GRCS and GRCD (Flamich, Markou &
    Hernandez-Lobato 2023, Algorithm 1): one path down the tree; at each node
    the point is accepted with the greedy probability of the residual target
    mass, else the search moves into a child chosen (with the sender's
    private coins) in proportion to the child's residual mass.  No arrival
    times; exact for any target of the supported families.

``sigma`` is GPRS's stretch function ``sigma(h) = int_0^h d eta / (w_Q(eta) -
eta w_P(eta))`` with ``w_P(eta) = P(r >= eta)`` and ``w_Q(eta) = Q(r >=
eta)`` (Flamich 2023, Section 3).  For the targets here ``log r`` is a
quadratic on the target's support, so superlevel sets are at most two
intervals with closed-form masses; the integral is taken by 8-point
Gauss-Legendre rules on the variable ``s = -log(1 - eta / r_max)`` with
breakpoints where a superlevel set meets the support's ends and a geometric
grid near ``s = 0`` (relative error about 1e-11 against adaptive quadrature;
the accept test ``t < sigma`` is therefore exact up to that error).  A* coding needs no ``sigma``: its bound, the supremum of the
quadratic over an interval, is exact.

For a density ratio that is unimodal (every Normal narrower than a Normal
prior, every target under a Uniform prior, truncated ones included) a
sibling that does not hold the mode can never beat the best point found so
far once the node splits at its own point, so the sample-split searches
follow one path and take ``O(D_KL)`` steps; the dyadic ones keep a few
nodes in their queue.

Messages: ``index`` is the heap index ``h >= 1`` of the selected node (its
depth is ``floor(log2 h)``, its path the binary digits below the leading one;
the candidate index ``N`` for ``"gprs"``); ``factor`` is 0.  Write heap indices
to bytes with :func:`encode_tree_messages` and a :class:`TreeIndexCode`, which
codes the depth with fitted probabilities and each step of the path with the
left child's share of the prior mass (known to both sides from the seed), so
a message costs about ``-log2 P(node)`` bits; or, index-only like PFR's
streams, with :func:`encode_index_messages` and any :class:`rcc.IndexCode`
(:func:`heap_index_code` fits a :class:`rcc.BucketIndexCode`: uniform path bits).

Limits: one dimension per element; Normal, TruncatedNormal and Uniform
targets under Normal and Uniform priors (a Normal at least as wide as a
Normal prior needs a bounded support); searches deeper than ``MAX_DEPTH``
levels (about 40 bits of KL for sample splits, 60 for dyadic ones) raise.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import numba
import numpy as np

from . import kernels
from .random import (_GAMMA, _S11, _TWO_M53, DOMAIN_PRIVATE, DOMAIN_SHARED, _mix64, _private_uniform,
                     _shared_dither, _stream_prefix)

__all__ = [
    "SAMPLER_METHODS",
    "MAX_DEPTH",
    "encode_tree_sample",
    "decode_tree_sample",
    "heap_index_code",
    "left_fractions",
    "TreeIndexCode",
    "encode_tree_messages",
    "decode_tree_messages",
    "encode_index_messages",
    "decode_index_messages",
    "stretch_function",
    "log_ratio_max",
]

#: ``method=`` values handled by this module (``encode_sample`` / ``decode_sample`` dispatch here).
SAMPLER_METHODS = ("astar", "astar-dyadic", "gprs", "gprs-sac", "gprs-dyadic", "grc-sample", "grc-dyadic")
#: Deepest node a search may reach (heap indices stay below ``2**63``).
MAX_DEPTH = 62

RULE_ASTAR, RULE_GPRS, RULE_GRC = 0, 1, 2
SPLIT_SAMPLE, SPLIT_DYADIC = 0, 1
_RULES = {"astar": (RULE_ASTAR, SPLIT_SAMPLE), "astar-dyadic": (RULE_ASTAR, SPLIT_DYADIC),
          "gprs-sac": (RULE_GPRS, SPLIT_SAMPLE), "gprs-dyadic": (RULE_GPRS, SPLIT_DYADIC),
          "grc-sample": (RULE_GRC, SPLIT_SAMPLE), "grc-dyadic": (RULE_GRC, SPLIT_DYADIC)}

OK, STATUS_MAX_STEPS, STATUS_DEPTH, STATUS_QUEUE, STATUS_NO_MASS = 0, 1, 2, 3, 4
NORMAL, UNIFORM = 0, 1
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_QUEUE = 4096
_BLOCK = 256

# Per-element parameters (one float64 row): target, prior and the quadratic log ratio.
(P_FAMILY, P_LOC, P_SCALE, P_LOW, P_HIGH, P_LOGNORM, P_PRIOR_FAMILY, P_PRIOR_LOC, P_PRIOR_SCALE,
 P_CURVATURE, P_VERTEX, P_LOG_RMAX, P_CONST) = range(13)
NUM_PARAMS = 13

# Stretch function: pieces of width _DS in s = -log(1 - eta / r_max) up to _S_MAX, where
# eta / r_max = 1 - 1e-13 (closer, the masses cancel in double precision and sigma = inf).
_DS = 2.0
_S_MAX = 30.0
_GRADE_TOP, _GRADE_BOTTOM = 1.0, 4.0**-20
_PIECES = int(_S_MAX / _DS)
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
    if p[P_PRIOR_FAMILY] == NORMAL:
        s = (z - p[P_PRIOR_LOC]) / p[P_PRIOR_SCALE]
        value += 0.5 * s * s
    return value


@numba.njit(cache=True, error_model="numpy", inline="always")
def _sup_log_ratio(za, zb, p):
    """``sup log r`` over ``[za, zb]``: exact, because ``log r`` is a quadratic on the support."""
    lo = max(za, p[P_LOW])
    hi = min(zb, p[P_HIGH])
    if not lo <= hi:
        return -np.inf
    if p[P_CURVATURE] < 0.0:
        return _log_ratio(min(max(p[P_VERTEX], lo), hi), p)
    return max(_log_ratio(lo, p), _log_ratio(hi, p))


@numba.njit(cache=True, error_model="numpy")
def _fill_params(family, loc, scale, low, high, lognorm, prior_family, prior_loc, prior_scale, out):
    """Pack the parameters and the quadratic's curvature, vertex and maximum; returns the maximum."""
    out[P_FAMILY], out[P_LOC], out[P_SCALE], out[P_LOW], out[P_HIGH] = family, loc, scale, low, high
    out[P_LOGNORM], out[P_PRIOR_FAMILY], out[P_PRIOR_LOC], out[P_PRIOR_SCALE] = (
        lognorm, prior_family, prior_loc, prior_scale)
    const = -lognorm + math.log(prior_scale)
    if family == NORMAL:
        const -= math.log(scale) + _HALF_LOG_2PI
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
    if family == NORMAL and prior_family == NORMAL:
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
def _masses(lo, hi, p):
    """``(Q([lo, hi]), P([lo, hi]))`` of an interval inside the target's support."""
    if not lo < hi:
        return 0.0, 0.0
    if p[P_FAMILY] == NORMAL:
        q = _normal_mass((lo - p[P_LOC]) / p[P_SCALE], (hi - p[P_LOC]) / p[P_SCALE]) / math.exp(p[P_LOGNORM])
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


@numba.njit(cache=True, error_model="numpy")
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


@numba.njit(cache=True, error_model="numpy")
def _integrate(sa, sb, p, kinks):
    """``int_sa^sb`` of the integrand.

    Near ``s = 0`` (``eta -> 0``) the superlevel sets run out to the prior's tails and
    the integrand behaves like ``1 + O(s log s)``, which Gauss-Legendre rules converge
    on slowly; there the interval is cut on the geometric grid ``_GRADE_TOP * 4**-k``.
    """
    total = 0.0
    if sa < _GRADE_TOP:
        edge = _GRADE_TOP
        while edge > _GRADE_BOTTOM and edge > sa:
            low = max(0.25 * edge, sa)
            if low < sb:
                total += _integrate_smooth(low, min(edge, sb), p, kinks)
            edge *= 0.25
        if sa < _GRADE_BOTTOM:
            total += _integrate_smooth(sa, min(_GRADE_BOTTOM, sb), p, kinks)
        sa = _GRADE_TOP
    if sa < sb:
        total += _integrate_smooth(sa, sb, p, kinks)
    return total


@numba.njit(cache=True, error_model="numpy", inline="always")
def _level_s(log_value, p):
    """``s = -log(1 - r / r_max)`` of a ratio value (``inf`` at the maximum)."""
    d = log_value - p[P_LOG_RMAX]
    if d >= 0.0:
        return np.inf
    return -math.log1p(-math.exp(d))


@numba.njit(cache=True, error_model="numpy")
def _sigma_setup(p, table, kinks):
    """Reset the lazily filled table of ``sigma`` at ``s = k * _DS`` and find the kinks."""
    table[0] = 0.0
    table[1:] = np.nan
    kinks[0] = _level_s(_log_ratio(p[P_LOW], p), p) if math.isfinite(p[P_LOW]) else np.inf
    kinks[1] = _level_s(_log_ratio(p[P_HIGH], p), p) if math.isfinite(p[P_HIGH]) else np.inf


@numba.njit(cache=True, error_model="numpy")
def _sigma_at_s(s, p, table, kinks):
    """``sigma`` at level ``s`` (``inf`` beyond ``_S_MAX``)."""
    if not s < _S_MAX:
        return np.inf
    k = int(s / _DS)
    if np.isnan(table[k]):
        j = k
        while np.isnan(table[j]):
            j -= 1
        while j < k:
            table[j + 1] = table[j] + _integrate(j * _DS, (j + 1) * _DS, p, kinks)
            j += 1
    if s == k * _DS:
        return table[k]
    return table[k] + _integrate(k * _DS, s, p, kinks)


@numba.njit(cache=True, error_model="numpy")
def _under_graph(t, log_value, p, table, kinks):
    """``t < sigma(r)`` for a point at time ``t`` and log ratio ``log_value``."""
    if log_value == -np.inf:
        return False
    s = _level_s(log_value, p)
    if not s < _S_MAX:
        return True
    # sigma is increasing: the table's values at the piece's ends decide most comparisons
    k = int(s / _DS)
    below = _sigma_at_s(k * _DS, p, table, kinks)
    if t < below:
        return True
    if k + 1 <= _PIECES and t >= _sigma_at_s((k + 1) * _DS, p, table, kinks):
        return False
    return t < _sigma_at_s(s, p, table, kinks)


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
        return prior_loc + prior_scale * kernels.ndtri_lower(u)
    return prior_loc - prior_scale * kernels.ndtri_lower(c)


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


@numba.njit(cache=True, error_model="numpy")
def _search(seed, key, stream, p, rule, split, max_steps, queue, heap, top, table, kinks):
    """One element's branch and bound; returns ``(heap index, sample, steps, status)``."""
    shared = _stream_prefix(DOMAIN_SHARED, seed, stream)
    private = _stream_prefix(DOMAIN_PRIVATE, key, stream)
    if rule == RULE_GPRS:
        _sigma_setup(p, table, kinks)
    t_root = -math.log(_private_uniform(private, np.uint64(1)))
    size = _push(queue, heap, 0, t_root if rule == RULE_GPRS else math.log(t_root) - p[P_LOG_RMAX],
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
        lr = _log_ratio(z, p)
        if rule == RULE_GPRS:
            if _under_graph(t, lr, p, table, kinks):
                return h, z, steps, OK
        elif math.log(t) - lr < best:
            best, best_h, best_z = math.log(t) - lr, h, z
        if h >= np.int64(1) << MAX_DEPTH:
            return 0, np.nan, steps, STATUS_DEPTH
        if split == SPLIT_SAMPLE:
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
            bound = _sup_log_ratio(cza, czb, p)
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
    h = np.int64(1)
    for step in range(1, max_steps + 1):
        mass = _mass(ua, ca, ub, cb)
        u, c = _cut(ua, ca, ub, cb, _dither(shared, h))
        z = _pair_ppf(u, c, p[P_PRIOR_FAMILY], p[P_PRIOR_LOC], p[P_PRIOR_SCALE])
        above = math.exp(_log_ratio(z, p)) - level
        if above > 0.0 and _private_coin(private, h, 1) * residual <= above * mass:
            return h, z, step, OK
        if h >= np.int64(1) << MAX_DEPTH:
            return 0, np.nan, step, STATUS_DEPTH
        level += residual / mass
        if split == SPLIT_SAMPLE:
            um, cm, zm = u, c, z
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
def _global_gprs(seed, key, stream, p, max_steps, table, kinks):
    """Global GPRS on the prior-proposal candidates of ``method="pfr"``; returns ``(N, z, N, status)``."""
    shared = _stream_prefix(DOMAIN_SHARED, seed, stream)
    private = _stream_prefix(DOMAIN_PRIVATE, key, stream)
    _sigma_setup(p, table, kinks)
    t = 0.0
    for n in range(1, max_steps + 1):
        t += -math.log(_private_uniform(private, np.uint64(n)))
        z = kernels.prior_ppf_scaled(0.0, _shared_dither(shared, np.uint64(n), 0) + 0.5, 1.0,
                                     p[P_PRIOR_FAMILY], p[P_PRIOR_LOC], p[P_PRIOR_SCALE])
        if _under_graph(t, _log_ratio(z, p), p, table, kinks):
            return n, z, n, OK
    return 0, np.nan, max_steps, STATUS_MAX_STEPS


@numba.njit(cache=True, error_model="numpy")
def _encode_block(block, seed, key, stream_offset, params, rule, split, max_steps, index, sample, steps, status):
    queue = np.empty((_QUEUE, 8), dtype=np.float64)
    heap = np.empty(_QUEUE, dtype=np.int64)
    top = np.empty(8, dtype=np.float64)
    table = np.empty(_PIECES + 1, dtype=np.float64)
    kinks = np.empty(2, dtype=np.float64)
    count = params.shape[0]
    for i in range(block * _BLOCK, min(count, (block + 1) * _BLOCK)):
        stream = stream_offset + np.uint64(i)
        if split < 0:
            h, z, n, st = _global_gprs(seed, key, stream, params[i], max_steps, table, kinks)
        elif rule == RULE_GRC:
            h, z, n, st = _greedy_rejection(seed, key, stream, params[i], split, max_steps)
        else:
            h, z, n, st = _search(seed, key, stream, params[i], rule, split, max_steps, queue, heap, top,
                                  table, kinks)
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
        um, cm = _cut(ua, ca, ub, cb, _dither(shared, node) if split == SPLIT_SAMPLE else 0.5)
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


@numba.njit(cache=True, error_model="numpy")
def left_fractions(seed, stream_offset, index, split, out):
    """The left child's share of the prior mass of node ``index[i]`` of element ``i`` (into ``out``).

    ``V`` of the node for sample splits, 1/2 for dyadic ones: a function of the
    shared randomness only, so sender and receiver agree on it.
    """
    for i in range(index.shape[0]):
        node = np.int64(index[i])
        if split == SPLIT_DYADIC:
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
    table = np.empty(_PIECES + 1, dtype=np.float64)
    kinks = np.empty(2, dtype=np.float64)
    _sigma_setup(params, table, kinks)
    for i in range(log_values.shape[0]):
        out[i] = _sigma_at_s(_level_s(log_values[i], params), params, table, kinks)


# --------------------------------------------------------------------------- Python side


def _check_method(method):
    if method not in SAMPLER_METHODS:
        raise ValueError(f"method must be one of {SAMPLER_METHODS}, got {method!r}")
    return method


def _params(target, prior, tail_mass):
    """Validated ``(params (count, NUM_PARAMS), batch shape)`` of a 1-D target batch."""
    from .coding import _check_prior, _check_prior_support, _check_tail_mass, _prior_arrays
    from .targets import Distribution, Normal, Product, TruncatedNormal, Uniform

    if isinstance(target, Product) or not isinstance(target, (Normal, TruncatedNormal, Uniform)):
        kind = type(target).__name__
        raise TypeError(f"the tree samplers take rcc.Normal, rcc.TruncatedNormal or rcc.Uniform targets "
                        f"(one dimension per element), got {kind}"
                        + ("" if isinstance(target, Distribution) else "; use method='hybrid' or 'pfr'"))
    prior = _check_prior(prior)
    tail_mass = _check_tail_mass(tail_mass)
    shape = target.shape
    spec = target._spec(tail_mass)
    family, loc, scale = _prior_arrays(prior, shape)
    _check_prior_support(prior, spec, loc, scale)
    values = (spec["family"], spec["loc"], spec["scale"], spec["low"], spec["high"], spec["log_normalizer"],
              family, loc, scale)
    columns = tuple(np.ascontiguousarray(np.broadcast_to(np.asarray(v, dtype=np.float64), shape)).reshape(-1)
                    for v in values)
    count = columns[0].size
    params = np.empty((count, NUM_PARAMS), dtype=np.float64)
    log_rmax = np.empty(count, dtype=np.float64)
    if count:
        _fill_params_batch(columns, params, log_rmax)
    bad = np.flatnonzero(~np.isfinite(log_rmax))
    if bad.size:
        raise ValueError(
            f"the density ratio of the target to the prior is unbounded for {bad.size} element(s) (first: flat "
            f"index {bad[0]}): a target at least as wide as a Normal prior needs a bounded support; "
            "use tail_mass > 0 or a TruncatedNormal")
    return params, shape, prior, tail_mass


def log_ratio_max(target, prior=None, tail_mass=0.0):
    """``D_inf[target || prior] = log2 sup dq/dp`` in bits, per element (batch shape)."""
    params, shape, _, _ = _params(target, prior, tail_mass)
    return params[:, P_LOG_RMAX].reshape(shape) / math.log(2.0)


def stretch_function(target, levels, prior=None, tail_mass=0.0):
    """GPRS's stretch function ``sigma(h)`` of one scalar target at ratios ``levels`` (``0 <= h``).

    ``sigma(h) = int_0^h d eta / (w_Q(eta) - eta w_P(eta))`` (Flamich 2023,
    Section 3); ``inf`` from ``h >= r_max (1 - 1e-13)`` on.
    """
    params, shape, _, _ = _params(target, prior, tail_mass)
    if shape != ():
        raise ValueError("stretch_function takes a scalar target")
    levels = np.asarray(levels, dtype=np.float64)
    if (levels < 0).any() or np.isnan(levels).any():
        raise ValueError("levels must be >= 0")
    with np.errstate(divide="ignore"):
        logs = np.log(levels).reshape(-1)
    out = np.empty(logs.size, dtype=np.float64)
    _sigma_batch(params[0], logs, out)
    return out.reshape(levels.shape)


def _check_positive_int(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _run_search(params, seed, key, stream_offset, method, max_candidates):
    """The kernel call on packed parameters: ``(index, sample, steps, status)``."""
    rule, split = _RULES.get(method, (RULE_GPRS, -1))
    count = params.shape[0]
    index = np.empty(count, dtype=np.int64)
    sample = np.empty(count, dtype=np.float64)
    steps = np.empty(count, dtype=np.int64)
    status = np.empty(count, dtype=np.int64)
    if count:
        encode_batch(np.uint64(seed), np.uint64(key), np.uint64(stream_offset), params, rule, split,
                     max_candidates, index, sample, steps, status)
    return index, sample, steps, status


def encode_tree_sample(target, seed, *, prior=None, method="gprs-dyadic", tail_mass=0.0,
                       max_candidates=2**24, rng=None, num_threads=None, stream_offset=0):
    """Encode exact samples with A* coding, greedy Poisson rejection sampling or greedy rejection coding.

    Called by :func:`rcc.encode_sample` for the methods in
    :data:`SAMPLER_METHODS`; the algorithms are explained in :ref:`samplers`.

    Parameters
    ----------
    target : rcc.Normal, rcc.TruncatedNormal or rcc.Uniform
        One-dimensional targets (a batch); element ``i`` uses stream
        ``(seed, stream_offset + i)``.
    seed : int
    prior : rcc.Normal or rcc.Uniform, optional
    method : {"astar", "astar-dyadic", "gprs", "gprs-sac", "gprs-dyadic", "grc-sample", "grc-dyadic"}
    tail_mass : float
        Truncation of Normal targets, as for the other methods; ``0``
        (untruncated, exact) is the default here.
    max_candidates : int
        Bound on the points examined per element; exceeding it raises.
    rng : None, int or numpy.random.Generator
        The sender's private randomness (the arrival times; greedy rejection coding's coins).
    num_threads : int, optional
        Threads over the batch; results do not depend on it.
    stream_offset : int
        First stream of the batch.

    Returns
    -------
    rcc.EncodedSample
        ``index`` holds heap indices (the candidate index for ``"gprs"``),
        ``candidates`` the points examined, ``factor`` zeros, ``width`` ones.
    """
    from .coding import EncodedSample, _Threads, _scalar_or_array, kl_divergence_bits
    from .random import check_seed, private_key

    method = _check_method(method)
    seed_u64 = check_seed(seed)
    offset = check_seed(stream_offset, "stream_offset")
    max_candidates = _check_positive_int(max_candidates, "max_candidates")
    params, shape, prior, tail_mass = _params(target, prior, tail_mass)
    if method.startswith(("gprs", "grc")):
        linear = (params[:, P_CURVATURE] == 0.0) & (params[:, P_FAMILY] == NORMAL)
        if linear.any():
            raise ValueError(
                f"GPRS needs a target std different from the Normal prior's std (flat index "
                f"{int(np.flatnonzero(linear)[0])} has equal stds: a linear log ratio); use method='astar'")
    key = private_key(seed_u64, rng)
    with _Threads(num_threads):
        index, sample, steps, status = _run_search(params, seed_u64, key, offset, method, max_candidates)
    failed = np.flatnonzero(status)
    if failed.size:
        first = int(failed[0])
        why = {STATUS_MAX_STEPS: f"examined more than max_candidates={max_candidates} points; increase it",
               STATUS_DEPTH: f"went deeper than {MAX_DEPTH} levels (heap indices must stay below 2**63)",
               STATUS_QUEUE: f"needed more than {_QUEUE} open nodes",
               STATUS_NO_MASS: "lost the residual target mass to rounding (a target too narrow for double "
                               "precision)"}[int(status[first])]
        raise ValueError(f"the {method} search {why} for {failed.size} element(s) (first: flat index {first})")
    kl_bits = np.asarray(kl_divergence_bits(target, prior, tail_mass), dtype=np.float64)
    return EncodedSample(
        index=_scalar_or_array(index.reshape(shape)), factor=_scalar_or_array(np.zeros(shape, dtype=np.int64)),
        sample=_scalar_or_array(sample.reshape(shape)), candidates=_scalar_or_array(steps.reshape(shape)),
        width=_scalar_or_array(np.ones(shape, dtype=np.int64)),
        tail_mass=_scalar_or_array(np.broadcast_to(target.tail_mass_of(tail_mass), shape)),
        kl_bits=_scalar_or_array(kl_bits), method=method,
    )


def decode_tree_sample(index, seed, *, prior=None, method="gprs-dyadic", num_threads=None, stream_offset=0):
    """The samples of heap indices written by :func:`encode_tree_sample`, bit for bit.

    Parameters
    ----------
    index : int or array_like of int
        Heap indices ``>= 1`` (candidate indices for ``"gprs"``).
    seed : int
    prior : rcc.Normal or rcc.Uniform, optional
    method : str
        The encoder's method (it fixes the split rule).
    num_threads : int, optional
    stream_offset : int

    Returns
    -------
    float or ndarray of float64
    """
    from .coding import _Threads, _check_prior, _integer_array, _prior_arrays, _scalar_or_array
    from .random import check_seed

    method = _check_method(method)
    seed_u64 = check_seed(seed)
    offset = check_seed(stream_offset, "stream_offset")
    index = _integer_array(index, "index")
    if (index < 1).any():
        raise ValueError(f"index must be >= 1 (heap indices count from 1), got {index[index < 1].ravel()[:3]}")
    prior = _check_prior(prior)
    family, loc, scale = _prior_arrays(prior, index.shape)
    if method == "gprs":
        from .coding import decode_sample  # global GPRS examines the prior-proposal race's candidates

        return decode_sample(index, np.zeros_like(index), seed_u64, prior=prior, method="pfr",
                             num_threads=num_threads, stream_offset=offset)
    out = np.empty(index.size, dtype=np.float64)
    with _Threads(num_threads):
        if index.size:
            decode_batch(seed_u64, offset, np.ascontiguousarray(index.reshape(-1)), _RULES[method][1],
                         np.ascontiguousarray(family, dtype=np.int64).reshape(-1),
                         np.ascontiguousarray(loc, dtype=np.float64).reshape(-1),
                         np.ascontiguousarray(scale, dtype=np.float64).reshape(-1), out)
    return _scalar_or_array(out.reshape(index.shape))


# --------------------------------------------------------------------------- messages to bytes


def heap_index_code(indices, **fit_options):
    """A :class:`rcc.BucketIndexCode` fitted to heap indices of representative targets.

    ``P(h) = p_d / 2**d`` for depth ``d = floor(log2 h)``: a fitted mass per
    depth and ``d`` uniform path bits.  The path of a target placed by the
    prior is close to uniform, so this costs about ``d + H(depth)`` bits.
    """
    from .entropy import BucketIndexCode

    return BucketIndexCode.fit(indices, **fit_options)


def _as_index_message(enc):
    from .coding import EncodedSample

    if not isinstance(enc, EncodedSample) or enc.method not in SAMPLER_METHODS:
        raise TypeError(f"enc must be an EncodedSample of one of {SAMPLER_METHODS}")
    # An index-only message: the stream layout of the prior-proposal methods (factor 0, not sent).
    return dataclasses.replace(enc, method="pfr")


def encode_index_messages(enc, seed, *, index_code):
    """Entropy code the indices of a tree-sampler batch to bytes (:func:`rcc.encode_messages`)."""
    from .entropy import encode_messages

    return encode_messages(_as_index_message(enc), seed, index_code=index_code)


def decode_index_messages(data, count, seed, *, index_code):
    """The indices written by :func:`encode_index_messages` (flat, int64)."""
    from .entropy import decode_messages

    index, _ = decode_messages(data, count, seed, index_code=index_code, method="pfr")
    return index


# --------------------------------------------------------------------------- path code

_TREE_MAGIC = b"RCT"
_TREE_VERSION = 1


class TreeIndexCode:
    """Code of heap indices that spends ``-log2`` of the node's prior mass on the path (:ref:`samplers-message`).

    The depth ``d = floor(log2 h)`` is coded with fitted probabilities; then the
    path, level by level, each step ``left`` with the probability of the left
    child's share of the prior mass (the shared point ``V`` of the node for
    sample splits, 1/2 for dyadic ones).  Sender and receiver both know these
    shares from the seed, so the path costs ``-log2 P(node)`` bits instead of
    ``d``: for sample splits, whose paths are about 1.4 times deeper than the
    information, this saves most of the difference.

    Parameters
    ----------
    depth_weights : array_like of float, shape (MAX_DEPTH + 1,)
        Positive weights of the depths ``0 .. MAX_DEPTH``.
    """

    def __init__(self, depth_weights):
        weights = np.asarray(depth_weights, dtype=np.float64).reshape(-1)
        if weights.size != MAX_DEPTH + 1 or not (np.all(np.isfinite(weights)) and np.all(weights > 0)):
            raise ValueError(f"depth_weights must be {MAX_DEPTH + 1} positive finite numbers")
        self.depth_weights = weights
        self.depth_probabilities = weights / weights.sum()

    @classmethod
    def fit(cls, indices, *, pseudo_count=0.5, tail_ratio=0.5):
        """Depth probabilities from heap indices of representative targets (as :class:`rcc.BucketIndexCode`)."""
        from .entropy import BucketIndexCode

        weights = BucketIndexCode.fit(indices, pseudo_count=pseudo_count, tail_ratio=tail_ratio).bucket_weights
        return cls(weights[: MAX_DEPTH + 1])

    def to_dict(self):
        return {"format": "rcc.TreeIndexCode", "version": 1, "depth_weights": [float(w) for w in self.depth_weights]}

    @classmethod
    def from_dict(cls, data):
        if not isinstance(data, dict) or data.get("format") != "rcc.TreeIndexCode" or data.get("version") != 1:
            raise ValueError("not a version-1 rcc.TreeIndexCode description")
        return cls(data["depth_weights"])

    def bits(self, index, seed, *, method, stream_offset=0):
        """Ideal information content ``-log2 P(depth) - log2 P(path)`` of each message, in bits."""
        from .random import check_seed

        index = _flat_heap_indices(index)
        depth = _depths(index)
        total = -np.log2(self.depth_probabilities[depth])
        seed_u64, offset, split = check_seed(seed), check_seed(stream_offset, "stream_offset"), _split_of(method)
        share = np.empty(index.size, dtype=np.float64)
        for level in range(int(depth.max(initial=0))):
            active = depth > level
            nodes = np.where(active, index >> np.maximum(depth - level, 0), 1)
            left_fractions(seed_u64, offset, nodes, split, share)
            go_right = ((index >> np.maximum(depth - level - 1, 0)) & 1).astype(bool)
            with np.errstate(divide="ignore"):
                cost = -np.log2(np.where(go_right, 1.0 - share, share))
            total += np.where(active, cost, 0.0)
        return total


def _split_of(method):
    method = _check_method(method)
    if method == "gprs":
        raise ValueError("method='gprs' sends a candidate index, not a heap index: use encode_index_messages")
    return _RULES[method][1]


def _flat_heap_indices(index):
    index = np.asarray(index)
    if index.dtype.kind not in "iu" or (index.size and index.min() < 1):
        raise ValueError("heap indices must be integers >= 1")
    if index.dtype.kind == "u" and index.size and index.max() > np.iinfo(np.int64).max:
        raise ValueError(f"heap indices must be below 2**{MAX_DEPTH + 1}")
    return index.astype(np.int64).reshape(-1)


def _depths(index):
    depth = np.zeros(index.shape, dtype=np.int64)
    rest = index >> 1
    while rest.any():
        depth += rest > 0
        rest = rest >> 1
    return depth


def _bernoulli(share):
    return np.ascontiguousarray(np.stack([share, 1.0 - share], axis=1).clip(0.0, 1.0))


def encode_tree_messages(enc, seed, *, index_code, stream_offset=0):
    """Bytes of a batch's heap indices under a :class:`TreeIndexCode` (range coded).

    Layout: ``b"RCT"``, a version byte, the method, the count (varint), a
    CRC32 of the seed, method, code and count, a CRC32 of the payload, and the
    payload (depths, then the paths level by level).
    """
    import zlib

    from .coding import EncodedSample
    from .entropy import _constriction, _read_varint, _varint
    from .random import check_seed

    if not isinstance(enc, EncodedSample) or enc.method not in SAMPLER_METHODS:
        raise TypeError(f"enc must be an EncodedSample of one of {SAMPLER_METHODS}")
    if not isinstance(index_code, TreeIndexCode):
        raise TypeError(f"index_code must be a TreeIndexCode, got {type(index_code).__name__}")
    split = _split_of(enc.method)
    seed_u64, offset = check_seed(seed), check_seed(stream_offset, "stream_offset")
    index = _flat_heap_indices(enc.index)
    depth = _depths(index)
    cons = _constriction()
    family = cons.stream.model.Categorical(perfect=False)
    encoder = cons.stream.queue.RangeEncoder()
    if index.size:
        encoder.encode(depth.astype(np.int32), cons.stream.model.Categorical(index_code.depth_probabilities,
                                                                             perfect=False))
    share = np.empty(index.size, dtype=np.float64)
    for level in range(int(depth.max(initial=0))):
        active = np.flatnonzero(depth > level)
        nodes = np.ones(index.size, dtype=np.int64)
        nodes[active] = index[active] >> (depth[active] - level)
        left_fractions(seed_u64, offset, nodes, split, share)
        bits = (index[active] >> (depth[active] - level - 1)) & 1
        encoder.encode(bits.astype(np.int32), family, _bernoulli(share[active]))
    payload = np.asarray(encoder.get_compressed(), dtype=np.uint32).astype(">u4").tobytes()
    prefix = _TREE_MAGIC + bytes([_TREE_VERSION, SAMPLER_METHODS.index(enc.method)]) + _varint(index.size)
    context = zlib.crc32(repr((int(seed_u64), int(offset), index_code.to_dict())).encode(), zlib.crc32(prefix))
    return prefix + context.to_bytes(4, "little") + zlib.crc32(payload).to_bytes(4, "little") + payload


def decode_tree_messages(data, count, seed, *, index_code, method, stream_offset=0):
    """Heap indices (flat, int64) from bytes written by :func:`encode_tree_messages`.

    Raises ``ValueError`` for truncated or corrupted bytes and for a stream
    written with another count, method, seed, stream offset or code.
    """
    import zlib

    from .entropy import _constriction, _read_varint, _varint
    from .random import check_seed

    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    if not isinstance(index_code, TreeIndexCode):
        raise TypeError(f"index_code must be a TreeIndexCode, got {type(index_code).__name__}")
    data = bytes(data)
    split = _split_of(method)
    seed_u64, offset = check_seed(seed), check_seed(stream_offset, "stream_offset")
    if len(data) < 5 or data[:3] != _TREE_MAGIC:
        raise ValueError("not an rcc tree message stream (bad magic bytes or too short)")
    if data[3] != _TREE_VERSION:
        raise ValueError(f"unsupported tree message stream version {data[3]}")
    if data[4] >= len(SAMPLER_METHODS) or SAMPLER_METHODS[data[4]] != method:
        raise ValueError(f"the stream was not written with method={method!r}")
    stored, pos = _read_varint(data, 5)
    if stored != count:
        raise ValueError(f"the stream holds {stored} messages, expected count={count}")
    if len(data) < pos + 8:
        raise ValueError("tree message stream truncated inside its header")
    context = zlib.crc32(repr((int(seed_u64), int(offset), index_code.to_dict())).encode(), zlib.crc32(data[:pos]))
    if int.from_bytes(data[pos:pos + 4], "little") != context:
        raise ValueError("the stream was written with another seed, stream offset or index code")
    payload = data[pos + 8:]
    if zlib.crc32(payload) != int.from_bytes(data[pos + 4:pos + 8], "little"):
        raise ValueError("tree message stream corrupted or truncated (payload checksum mismatch)")
    if len(payload) % 4:
        raise ValueError("tree message stream truncated (payload is not whole 32-bit words)")
    cons = _constriction()
    decoder = cons.stream.queue.RangeDecoder(np.frombuffer(payload, dtype=">u4").astype(np.uint32))
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    depth = np.asarray(decoder.decode(cons.stream.model.Categorical(index_code.depth_probabilities,
                                                                     perfect=False), count), dtype=np.int64)
    index = np.ones(count, dtype=np.int64)
    family = cons.stream.model.Categorical(perfect=False)
    share = np.empty(count, dtype=np.float64)
    for level in range(int(depth.max(initial=0))):
        active = np.flatnonzero(depth > level)
        left_fractions(seed_u64, offset, index, split, share)
        bits = np.asarray(decoder.decode(family, _bernoulli(share[active])), dtype=np.int64)
        index[active] = 2 * index[active] + bits
    return index
