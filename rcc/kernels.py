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
    "encode_batch",
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

_SQRT_2PI = math.sqrt(2.0 * math.pi)
_INV_SQRT2 = 1.0 / math.sqrt(2.0)

# Acklam's rational approximation of the normal quantile (relative error
# 1.15e-9), refined below with one Halley step to double precision.
_A0, _A1, _A2 = -3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02
_A3, _A4, _A5 = 1.383577518672690e02, -3.066479806614716e01, 2.506628277459239e00
_B0, _B1, _B2 = -5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02
_B3, _B4 = 6.680131188771972e01, -1.328068155288572e01
_C0, _C1, _C2 = -7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00
_C3, _C4, _C5 = -2.549732539343734e00, 4.374664141464968e00, 2.938163982698783e00
_D0, _D1, _D2, _D3 = 7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00
_P_LOW = 0.02425


@numba.njit(cache=True, inline="always")
def ndtri_lower(p):
    """Standard normal quantile for ``0 <= p <= 1/2`` (callers use symmetry above)."""
    if p <= 0.0:
        return -np.inf
    if p < _P_LOW:
        q = math.sqrt(-2.0 * math.log(p))
        x = (((((_C0 * q + _C1) * q + _C2) * q + _C3) * q + _C4) * q + _C5) / (
            (((_D0 * q + _D1) * q + _D2) * q + _D3) * q + 1.0
        )
    else:
        q = p - 0.5
        r = q * q
        x = (((((_A0 * r + _A1) * r + _A2) * r + _A3) * r + _A4) * r + _A5) * q / (
            ((((_B0 * r + _B1) * r + _B2) * r + _B3) * r + _B4) * r + 1.0
        )
    # One Halley step on Phi(x) - p; Phi via erfc is accurate in the lower tail.
    e = 0.5 * math.erfc(-x * _INV_SQRT2) - p
    u = e * _SQRT_2PI * math.exp(0.5 * x * x)
    return x - u / (1.0 + 0.5 * x * u)


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


@numba.njit(cache=True)
def _candidate_log_weight(seed, stream, n, family, loc, scale, low, high, const,
                          prior_family, prior_loc, prior_scale, width, centre,
                          window_low, window_high, hybrid):
    lw = 0.0
    for j in range(family.shape[0]):
        u = uniform_centered(seed, stream, np.uint64(n), np.uint64(j))
        if hybrid:
            k = _candidate_factor(centre[j], u)
            offset = u
        else:
            k = 0.0
            offset = u + 0.5
        position = k + offset
        # Cheap rejection before the inverse CDF: outside the transformed support.
        if position < window_low[j] or position > window_high[j]:
            return -np.inf
        z = prior_ppf_scaled(k, offset, width[j], prior_family[j], prior_loc[j], prior_scale[j])
        lw += log_weight(z, family[j], loc[j], scale[j], low[j], high[j], const[j],
                         prior_family[j], prior_loc[j], prior_scale[j])
        if lw == -np.inf:
            return lw
    return lw


@numba.njit(cache=True)
def _select_one(seed, key, stream, family, loc, scale, low, high, const,
                prior_family, prior_loc, prior_scale, width, centre, window_low, window_high,
                hybrid, log_w_max, mode, num_candidates, max_candidates):
    """Run one selection; return (index, examined, status). DESIGN 2.2 and 2.3."""
    best = np.inf
    best_n = 0
    arrival = 0.0
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
        log_arrival = math.log(arrival)
        # Stopping rule: no later candidate can beat the best score.
        if mode != MRC and log_arrival - log_w_max >= best:
            break
        examined += 1
        lw = _candidate_log_weight(seed, stream, n, family, loc, scale, low, high, const,
                                   prior_family, prior_loc, prior_scale, width, centre,
                                   window_low, window_high, hybrid)
        score = log_arrival - lw
        if score < best:
            best = score
            best_n = n
    return best_n, examined, STATUS_OK


@numba.njit(cache=True)
def _reconstruct(seed, stream, n, width, centre, prior_family, prior_loc, prior_scale, hybrid,
                 factor_out, sample_out):
    for j in range(width.shape[0]):
        u = uniform_centered(seed, stream, np.uint64(n), np.uint64(j))
        if hybrid:
            k = _candidate_factor(centre[j], u)
            offset = u
        else:
            k = 0.0
            offset = u + 0.5
        factor_out[j] = np.int64(k)
        sample_out[j] = prior_ppf_scaled(k, offset, width[j], prior_family[j], prior_loc[j], prior_scale[j])


@numba.njit(cache=True, parallel=True)
def encode_batch(seed, key, stream_offset, family, loc, scale, low, high, const, prior_family, prior_loc,
                 prior_scale, width, centre, window_low, window_high, hybrid, log_w_max, mode,
                 num_candidates, max_candidates, index_out, factor_out, sample_out, examined_out,
                 status_out):
    """Encode a batch of (B, d) targets; element ``i`` uses stream ``stream_offset + i``."""
    for i in numba.prange(family.shape[0]):
        stream = stream_offset + np.uint64(i)
        n, examined, status = _select_one(
            seed, key, stream, family[i], loc[i], scale[i], low[i], high[i], const[i],
            prior_family[i], prior_loc[i], prior_scale[i], width[i], centre[i],
            window_low[i], window_high[i], hybrid, log_w_max[i], mode, num_candidates[i],
            max_candidates,
        )
        index_out[i] = n
        examined_out[i] = examined
        status_out[i] = status
        if status == STATUS_OK:
            _reconstruct(seed, stream, n, width[i], centre[i], prior_family[i], prior_loc[i],
                         prior_scale[i], hybrid, factor_out[i], sample_out[i])


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
