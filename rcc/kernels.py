"""Numba kernels: inverse CDFs, log weights, the exponential race and its baselines.

Everything here is small and pure: arrays in, arrays out, integer status
codes instead of exceptions.  Validation and Python objects live in
:mod:`rcc.coding`.

Candidate ``n`` of batch element ``i`` in dimension ``j`` is built from the
shared dither ``U = U(seed, i, n, j)`` (:mod:`rcc.random`):

* hybrid coding (DESIGN 2.5, 2.6): ``K = round(c - U)``, ``z' = K + U`` is
  uniform on the unit window ``[c - 1/2, c + 1/2)`` of the transformed axis
  ``z' = M F_p(z)``; the receiver computes ``z = F_p^{-1}((K + U) / M)``;
* prior-proposal methods (PFR, ORC, MRC): ``K = 0`` and ``z' = U + 1/2`` with
  ``M = 1``, i.e. ``z = F_p^{-1}(U + 1/2) ~ p``.

The weight of a candidate is ``w = q'(z') = q(z) / (M p(z))`` (DESIGN 2.6);
kernels work with ``log w = log q(z) - log p(z) - log M``.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from .random import exponential, uniform_centered

__all__ = [
    "ndtri_lower",
    "prior_ppf_scaled",
    "log_weight",
    "select_one",
    "encode_batch",
    "NUM_FIELDS",
    "decode_batch",
    "RACE",
    "ORC",
    "MRC",
    "STATUS_OK",
    "STATUS_MAX_CANDIDATES",
    "STATUS_BAD_FACTOR",
]

RACE, ORC, MRC = 0, 1, 2
STATUS_OK, STATUS_MAX_CANDIDATES, STATUS_BAD_FACTOR = 0, 1, 2

NORMAL, UNIFORM = 0, 1  # family codes, as in rcc.targets


# Wichura's AS 241 (PPND16) rational approximations of the normal quantile,
# accurate to about 1 part in 1e16 (Applied Statistics 37(3), 1988).
_A = (3.3871328727963666080e00, 1.3314166789178437745e02, 1.9715909503065514427e03,
      1.3731693765509461125e04, 4.5921953931549871457e04, 6.7265770927008700853e04,
      3.3430575583588128105e04, 2.5090809287301226727e03)
_B = (1.0, 4.2313330701600911252e01, 6.8718700749205790830e02, 5.3941960214247511077e03,
      2.1213794301586595867e04, 3.9307895800092710610e04, 2.8729085735721942674e04,
      5.2264952788528545610e03)
_C = (1.42343711074968357734e00, 4.63033784615654529590e00, 5.76949722146069140550e00,
      3.64784832476320460504e00, 1.27045825245236838258e00, 2.41780725177450611770e-01,
      2.27238449892691845833e-02, 7.74545014278341407640e-04)
_D = (1.0, 2.05319162663775882187e00, 1.67638483018380384940e00, 6.89767334985100004550e-01,
      1.48103976427480074590e-01, 1.51986665636164571966e-02, 5.47593808499534494600e-04,
      1.05075007164441684324e-09)
_E = (6.65790464350110377720e00, 5.46378491116411436990e00, 1.78482653991729133580e00,
      2.96560571828504891230e-01, 2.65321895265761230930e-02, 1.24266094738807843860e-03,
      2.71155556874348757815e-05, 2.01033439929228813265e-07)
_F = (1.0, 5.99832206555887937690e-01, 1.36929880922735805310e-01, 1.48753612908506148525e-02,
      7.86869131145613259100e-04, 1.84631831751005468180e-05, 1.42151175831644588870e-07,
      2.04426310338993978564e-15)


@numba.njit(cache=True, inline="always")
def _ratio(num, den, x):
    """Horner evaluation of num(x) / den(x), coefficients from degree 0 up."""
    top = num[7]
    bottom = den[7]
    for m in range(6, -1, -1):
        top = top * x + num[m]
        bottom = bottom * x + den[m]
    return top / bottom


@numba.njit(cache=True, inline="always")
def ndtri_lower(p):
    """Standard normal quantile for ``0 <= p <= 1/2`` (callers use symmetry above)."""
    if p <= 0.0:
        return -np.inf
    q = p - 0.5
    if q >= -0.425:
        return q * _ratio(_A, _B, 0.180625 - q * q)
    r = math.sqrt(-math.log(p))
    if r <= 5.0:
        return -_ratio(_C, _D, r - 1.6)
    return -_ratio(_E, _F, r - 5.0)


@numba.njit(cache=True, inline="always")
def prior_ppf_scaled(factor, offset, width, prior_family, prior_loc, prior_scale):
    """``F_p^{-1}(z' / M)`` with ``z' = factor + offset`` (DESIGN 2.6).

    In the upper half the quantile is taken of the complement
    ``(M - factor) - offset``, which is exact in floating point, so targets in
    the prior's upper tail keep full precision.
    """
    if prior_family == UNIFORM:
        return prior_loc + prior_scale * ((factor + offset) / width)
    position = factor + offset
    if position <= 0.5 * width:
        x = ndtri_lower(position / width)
    else:
        x = -ndtri_lower(((width - factor) - offset) / width)
    return prior_loc + prior_scale * x


@numba.njit(cache=True, inline="always")
def log_weight(z, family, loc, scale, low, high, const, prior_family, prior_loc, prior_scale):
    """``log q(z) - log p(z) - log M`` up to the precomputed constant ``const``.

    ``const`` holds every term that does not depend on ``z`` (normalisers and
    ``-log M``); outside ``[low, high]`` the weight is zero.
    """
    if not (z >= low and z <= high) or not math.isfinite(z):
        return -np.inf
    value = const
    if family == NORMAL:
        t = (z - loc) / scale
        value -= 0.5 * t * t
    if prior_family == NORMAL:
        s = (z - prior_loc) / prior_scale
        value += 0.5 * s * s
    return value


@numba.njit(cache=True, inline="always")
def _candidate_factor(centre, u):
    """Decoding factor ``K = round(c - U)``, kept so that ``K + U`` lies in the window."""
    k = math.floor(centre - u + 0.5)
    if k + u < centre - 0.5:
        k += 1.0
    elif k + u >= centre + 0.5:
        k -= 1.0
    return k


@numba.njit(cache=True, inline="always")
def _candidate_position(seed, stream, n, j, centre, hybrid):
    """The dither of candidate ``n`` in dimension ``j`` as (factor, offset) with ``z' = factor + offset``."""
    u = uniform_centered(seed, stream, np.uint64(n), np.uint64(j))
    if hybrid:
        return _candidate_factor(centre, u), u
    return 0.0, u + 0.5


# Field layout of the packed per-(element, dimension) parameters: one float64
# array of shape (B, d, NUM_FIELDS) keeps the kernels' argument lists short.
(F_FAMILY, F_LOC, F_SCALE, F_LOW, F_HIGH, F_CONST, F_PRIOR_FAMILY, F_PRIOR_LOC, F_PRIOR_SCALE,
 F_WIDTH, F_CENTRE, F_WINDOW_LOW, F_WINDOW_HIGH) = range(13)
NUM_FIELDS = 13


@numba.njit(cache=True, inline="always")
def _candidate_log_weight(seed, stream, n, params, hybrid):
    """Log weight of candidate ``n`` for one element (``params``: (d, NUM_FIELDS))."""
    lw = 0.0
    for j in range(params.shape[0]):
        row = params[j]
        k, offset = _candidate_position(seed, stream, n, j, row[F_CENTRE], hybrid)
        position = k + offset
        # Cheap rejection before the inverse CDF: outside the transformed support.
        if position < row[F_WINDOW_LOW] or position > row[F_WINDOW_HIGH]:
            return -np.inf
        z = prior_ppf_scaled(k, offset, row[F_WIDTH], row[F_PRIOR_FAMILY], row[F_PRIOR_LOC], row[F_PRIOR_SCALE])
        lw += log_weight(z, row[F_FAMILY], row[F_LOC], row[F_SCALE], row[F_LOW], row[F_HIGH], row[F_CONST],
                         row[F_PRIOR_FAMILY], row[F_PRIOR_LOC], row[F_PRIOR_SCALE])
        if lw == -np.inf:
            return lw
    return lw


@numba.njit(cache=True)
def select_one(seed, key, stream, params, hybrid, log_w_max, mode, num_candidates, max_candidates):
    """Run one selection; return (index, examined, status).

    The race (DESIGN 2.2) keeps the best score ``log T_n - log w_n`` and stops
    once ``T_n >= exp(best + log w_max)``: no later candidate can win.  ORC
    uses sorted arrival times and MRC i.i.d. ones over a fixed count
    (DESIGN 2.3).  Scores are compared in the log domain but the stopping
    threshold is kept as an arrival time, so candidates that cannot win cost
    no logarithm.
    """
    best = np.inf
    best_n = 0
    arrival = 0.0
    stop_arrival = np.inf
    examined = 0
    n = 0
    while True:
        n += 1
        if mode == RACE:
            if n > max_candidates:
                return best_n, examined, STATUS_MAX_CANDIDATES
            arrival += exponential(key, stream, np.uint64(n))
        else:
            if n > num_candidates:
                break
            if mode == ORC:
                # Sorted exponentials: the n-th order statistic of num_candidates Exp(1), times num_candidates.
                arrival += exponential(key, stream, np.uint64(n)) * (num_candidates / (num_candidates - n + 1.0))
            else:
                arrival = exponential(key, stream, np.uint64(n))
        if arrival >= stop_arrival:
            break
        examined += 1
        lw = _candidate_log_weight(seed, stream, n, params, hybrid)
        if lw == -np.inf:
            continue
        score = math.log(arrival) - lw
        if score < best:
            best = score
            best_n = n
            if mode != MRC:
                stop_arrival = math.exp(best + log_w_max)
    if best_n == 0:
        # ORC/MRC with every candidate outside the support: the importance
        # weights are all zero, and the approximate methods fall back to n = 1.
        best_n = 1
    return best_n, examined, STATUS_OK


@numba.njit(cache=True, parallel=True)
def encode_batch(seed, key, stream_offset, params, hybrid, log_w_max, mode, num_candidates,
                 max_candidates, index_out, factor_out, sample_out, examined_out, status_out):
    """Encode a batch; element ``i`` uses stream ``stream_offset + i``.

    ``params`` has shape (B, d, NUM_FIELDS); outputs are written in place.
    """
    for i in numba.prange(params.shape[0]):
        stream = stream_offset + np.uint64(i)
        element = params[i]
        n, examined, status = select_one(seed, key, stream, element, hybrid, log_w_max[i], mode,
                                         num_candidates[i], max_candidates)
        index_out[i] = n
        examined_out[i] = examined
        status_out[i] = status
        if status != STATUS_OK:
            continue
        for j in range(element.shape[0]):
            row = element[j]
            k, offset = _candidate_position(seed, stream, n, j, row[F_CENTRE], hybrid)
            factor_out[i, j] = np.int64(k)
            sample_out[i, j] = prior_ppf_scaled(k, offset, row[F_WIDTH], row[F_PRIOR_FAMILY],
                                                row[F_PRIOR_LOC], row[F_PRIOR_SCALE])


@numba.njit(cache=True, parallel=True)
def decode_batch(seed, stream_offset, index, factor, width, prior_family, prior_loc, prior_scale, hybrid,
                 sample_out, status_out):
    """Decode a batch in O(1) per sample: one dither per dimension, one inverse CDF."""
    for i in numba.prange(index.shape[0]):
        stream = stream_offset + np.uint64(i)
        status_out[i] = STATUS_OK
        for j in range(factor.shape[1]):
            u = uniform_centered(seed, stream, np.uint64(index[i]), np.uint64(j))
            if hybrid:
                k = np.float64(factor[i, j])
                offset = u
                position = k + u
                if not (position >= 0.0 and position < width[i, j]):
                    status_out[i] = STATUS_BAD_FACTOR
                    sample_out[i, j] = np.nan
                    continue
            else:
                k = 0.0
                offset = u + 0.5
                if factor[i, j] != 0:
                    status_out[i] = STATUS_BAD_FACTOR
                    sample_out[i, j] = np.nan
                    continue
            sample_out[i, j] = prior_ppf_scaled(k, offset, width[i, j], prior_family[i, j],
                                                prior_loc[i, j], prior_scale[i, j])
