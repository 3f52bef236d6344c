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

from .random import exponential, private_uniform, uniform_centered

__all__ = [
    "ndtri_lower",
    "prior_ppf_scaled",
    "log_weight",
    "select_one",
    "encode_batch",
    "encode_batch_serial",
    "decode_batch_serial",
    "prepare_batch_serial",
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


@numba.njit(cache=True, error_model="numpy", inline="always")
def _ratio(num, den, x):
    """Horner evaluation of num(x) / den(x), coefficients from degree 0 up."""
    top = num[7]
    bottom = den[7]
    for m in range(6, -1, -1):
        top = top * x + num[m]
        bottom = bottom * x + den[m]
    return top / bottom


@numba.njit(cache=True, error_model="numpy", inline="always")
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


@numba.njit(cache=True, error_model="numpy", inline="always")
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


@numba.njit(cache=True, error_model="numpy", inline="always")
def _quadratic_log_ratio(z, family, loc, scale, const, prior_family, prior_loc, prior_scale):
    value = const
    if family == NORMAL:
        t = (z - loc) / scale
        value -= 0.5 * t * t
    if prior_family == NORMAL:
        s = (z - prior_loc) / prior_scale
        value += 0.5 * s * s
    return value


@numba.njit(cache=True, error_model="numpy", inline="always")
def log_weight(z, family, loc, scale, low, high, const, prior_family, prior_loc, prior_scale):
    """``log q(z) - log p(z) - log M``; ``const`` holds every z-independent term.

    Outside ``[low, high]`` (or for a non-finite ``z``) the weight is zero.
    """
    if not (z >= low and z <= high) or not math.isfinite(z):
        return -np.inf
    return _quadratic_log_ratio(z, family, loc, scale, const, prior_family, prior_loc, prior_scale)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _candidate_factor(centre, u):
    """Decoding factor ``K = round(c - U)``, kept so that ``K + U`` lies in the window."""
    k = math.floor(centre - u + 0.5)
    if k + u < centre - 0.5:
        k += 1.0
    elif k + u >= centre + 0.5:
        k -= 1.0
    return k


@numba.njit(cache=True, error_model="numpy", inline="always")
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


@numba.njit(cache=True, error_model="numpy", inline="always")
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


_RESCALE = 2.0**600
_LOG_RESCALE = 600.0 * math.log(2.0)


@numba.njit(cache=True, error_model="numpy")
def _race(seed, key, stream, params, hybrid, log_w_max, max_candidates):
    """The exponential race with the w_max stopping rule (DESIGN 2.2).

    Arrival times ``T_n = E_1 + ... + E_n`` with ``E_i = -log V_i`` are kept
    as the product ``prod V_i = exp(-T_n)`` (rescaled by ``2**600`` before it
    underflows), so a candidate costs no logarithm unless its weight is
    evaluated.  The race keeps the best score ``log T_n - log w_n`` and stops
    once ``T_n >= exp(best + log w_max)``: no later candidate can win.
    """
    best = np.inf
    best_n = 0
    product = 1.0
    rescaled = 0.0  # log of the rescaling applied to ``product``
    stop_arrival = np.inf
    stop_product = 0.0  # product <= stop_product  <=>  T_n >= stop_arrival
    examined = 0
    n = 0
    while True:
        n += 1
        if n > max_candidates:
            return best_n, examined, STATUS_MAX_CANDIDATES
        product *= private_uniform(key, stream, np.uint64(n))
        if product < 1.0 / _RESCALE:
            product *= _RESCALE
            rescaled += _LOG_RESCALE
            stop_product = math.exp(rescaled - stop_arrival)
        if product <= stop_product:
            break
        examined += 1
        lw = _candidate_log_weight(seed, stream, n, params, hybrid)
        if lw == -np.inf:
            continue
        score = math.log(rescaled - math.log(product)) - lw
        if score < best:
            best = score
            best_n = n
            stop_arrival = math.exp(best + log_w_max)
            stop_product = math.exp(rescaled - stop_arrival)
    return best_n, examined, STATUS_OK


@numba.njit(cache=True, error_model="numpy")
def _importance(seed, key, stream, params, hybrid, log_w_max, mode, num_candidates):
    """ORC (sorted arrivals, stopping rule) or MRC (i.i.d. arrivals) over a fixed count (DESIGN 2.3)."""
    best = np.inf
    best_n = 0
    arrival = 0.0
    stop_arrival = np.inf
    examined = 0
    for n in range(1, num_candidates + 1):
        if mode == ORC:
            # The n-th order statistic of num_candidates Exp(1) variates, times num_candidates.
            arrival += exponential(key, stream, np.uint64(n)) * (num_candidates / (num_candidates - n + 1.0))
            if arrival >= stop_arrival:
                break
        else:
            arrival = exponential(key, stream, np.uint64(n))
        examined += 1
        lw = _candidate_log_weight(seed, stream, n, params, hybrid)
        if lw == -np.inf:
            continue
        score = math.log(arrival) - lw
        if score < best:
            best = score
            best_n = n
            stop_arrival = math.exp(best + log_w_max)
    if best_n == 0:
        # Every candidate outside the support: the importance weights are all
        # zero, and the approximate methods fall back to n = 1.
        best_n = 1
    return best_n, examined, STATUS_OK


@numba.njit(cache=True, error_model="numpy")
def select_one(seed, key, stream, params, hybrid, log_w_max, mode, num_candidates, max_candidates):
    """Run one selection; return (index, examined, status)."""
    if mode == RACE:
        return _race(seed, key, stream, params, hybrid, log_w_max, max_candidates)
    return _importance(seed, key, stream, params, hybrid, log_w_max, mode, num_candidates)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _encode_element(i, seed, key, stream_offset, params, hybrid, log_w_max, mode, num_candidates,
                    max_candidates, index_out, factor_out, sample_out, examined_out, status_out):
    """Encode element ``i`` of a batch with stream ``stream_offset + i``; write its outputs."""
    stream = stream_offset + np.uint64(i)
    element = params[i]
    n, examined, status = select_one(seed, key, stream, element, hybrid, log_w_max[i], mode,
                                     num_candidates[i], max_candidates)
    index_out[i] = n
    examined_out[i] = examined
    status_out[i] = status
    if status != STATUS_OK:
        return
    for j in range(element.shape[0]):
        row = element[j]
        k, offset = _candidate_position(seed, stream, n, j, row[F_CENTRE], hybrid)
        factor_out[i, j] = np.int64(k)
        sample_out[i, j] = prior_ppf_scaled(k, offset, row[F_WIDTH], row[F_PRIOR_FAMILY],
                                            row[F_PRIOR_LOC], row[F_PRIOR_SCALE])


# The batch loops exist twice, threaded and serial (waking the thread pool
# costs more than a small batch).  They must be distinct Python functions:
# numba's on-disk cache is keyed by the function, so two dispatchers of one
# function would load each other's machine code.
@numba.njit(cache=True, error_model="numpy", parallel=True)
def encode_batch(seed, key, stream_offset, params, hybrid, log_w_max, mode, num_candidates,
                 max_candidates, index_out, factor_out, sample_out, examined_out, status_out):
    """Encode a batch; element ``i`` uses stream ``stream_offset + i``.

    ``params`` has shape (B, d, NUM_FIELDS); outputs are written in place.
    """
    for i in numba.prange(params.shape[0]):
        _encode_element(i, seed, key, stream_offset, params, hybrid, log_w_max, mode, num_candidates,
                        max_candidates, index_out, factor_out, sample_out, examined_out, status_out)


@numba.njit(cache=True, error_model="numpy")
def encode_batch_serial(seed, key, stream_offset, params, hybrid, log_w_max, mode, num_candidates,
                        max_candidates, index_out, factor_out, sample_out, examined_out, status_out):
    """:func:`encode_batch` on the calling thread."""
    for i in range(params.shape[0]):
        _encode_element(i, seed, key, stream_offset, params, hybrid, log_w_max, mode, num_candidates,
                        max_candidates, index_out, factor_out, sample_out, examined_out, status_out)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _decode_element(i, seed, stream_offset, index, factor, width, prior_family, prior_loc, prior_scale,
                    hybrid, sample_out, status_out):
    """Decode element ``i``: one dither per dimension, one inverse CDF."""
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


@numba.njit(cache=True, error_model="numpy", parallel=True)
def decode_batch(seed, stream_offset, index, factor, width, prior_family, prior_loc, prior_scale, hybrid,
                 sample_out, status_out):
    """Decode a batch in O(1) per sample (element ``i`` uses stream ``stream_offset + i``)."""
    for i in numba.prange(index.shape[0]):
        _decode_element(i, seed, stream_offset, index, factor, width, prior_family, prior_loc,
                        prior_scale, hybrid, sample_out, status_out)


@numba.njit(cache=True, error_model="numpy")
def decode_batch_serial(seed, stream_offset, index, factor, width, prior_family, prior_loc, prior_scale,
                        hybrid, sample_out, status_out):
    """:func:`decode_batch` on the calling thread."""
    for i in range(index.shape[0]):
        _decode_element(i, seed, stream_offset, index, factor, width, prior_family, prior_loc,
                        prior_scale, hybrid, sample_out, status_out)


# --- per-element preparation (DESIGN 2.6, 2.7) ------------------------------------------

WIDTH_GIVEN, WIDTH_GAUSSIAN, WIDTH_SUPPORT = 0, 1, 2
PREP_OK, PREP_NO_MASS, PREP_TOO_WIDE, PREP_UNBOUNDED = 0, 1, 2, 3
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@numba.njit(cache=True, error_model="numpy", inline="always")
def prior_cdf_pair(x, prior_family, prior_loc, prior_scale):
    """``(F_p(x), 1 - F_p(x))``, each accurate in its own tail."""
    t = (x - prior_loc) / prior_scale
    if prior_family == UNIFORM:
        return min(max(t, 0.0), 1.0), min(max(1.0 - t, 0.0), 1.0)
    return 0.5 * math.erfc(-t * _INV_SQRT2), 0.5 * math.erfc(t * _INV_SQRT2)


@numba.njit(cache=True, error_model="numpy", inline="always")
def transformed_support(low, high, width, prior_family, prior_loc, prior_scale):
    """``(M F_p(low), M F_p(high), F_p(high) - F_p(low))`` without cancellation."""
    f_low, fc_low = prior_cdf_pair(low, prior_family, prior_loc, prior_scale)
    f_high, fc_high = prior_cdf_pair(high, prior_family, prior_loc, prior_scale)
    length = fc_low - fc_high if f_low > 0.5 else f_high - f_low
    start = width - width * fc_low if f_low > 0.5 else width * f_low
    stop = width - width * fc_high if f_high > 0.5 else width * f_high
    return start, stop, length


@numba.njit(cache=True, error_model="numpy")
def gaussian_width_one(std, half_width, prior_family, prior_scale):
    """Largest M such that ``[mu - h std, mu + h std]`` fits for every ``mu``.

    The transformed length ``F_p(mu + h s) - F_p(mu - h s)`` is largest at the
    prior's mode, where it is ``erf(h s / (sqrt(2) s_p))`` (Normal prior) or
    ``2 h s / (high - low)`` (Uniform prior).
    """
    if not math.isfinite(half_width):
        return 1
    if prior_family == UNIFORM:
        length = 2.0 * half_width * std / prior_scale
    else:
        length = math.erf(half_width * std * _INV_SQRT2 / prior_scale)
    if length <= 0.0:
        return 1 << 52
    width = math.floor(min(1.0 / length, 2.0**52) * (1.0 - 1e-12))
    return max(int(width), 1)


@numba.njit(cache=True, error_model="numpy")
def log_weight_max(family, loc, scale, low, high, const, prior_family, prior_loc, prior_scale):
    """Closed-form ``max log w`` on ``[low, high]`` (DESIGN 2.7).

    ``log q - log p`` is a quadratic ``a z^2 + b z + c`` for (truncated) Normal
    or Uniform targets and priors; its maximum is at the clipped stationary
    point or at an endpoint.  A tiny relative margin keeps the bound valid
    under rounding.  Returns ``inf`` where the ratio is unbounded.
    """
    a = 0.0
    b = 0.0
    if family == NORMAL:
        a -= 0.5 / (scale * scale)
        b += loc / (scale * scale)
    if prior_family == NORMAL:
        a += 0.5 / (prior_scale * prior_scale)
        b -= prior_loc / (prior_scale * prior_scale)
    inner = -b / (2.0 * a) if a < 0.0 else 0.0
    inner = min(max(inner, low), high)
    best = _quadratic_log_ratio(inner, family, loc, scale, const, prior_family, prior_loc, prior_scale)
    for end, direction in ((low, -1.0), (high, 1.0)):
        if math.isfinite(end):
            value = _quadratic_log_ratio(end, family, loc, scale, const, prior_family, prior_loc, prior_scale)
            best = max(best, value)
        elif a > 0.0 or (a == 0.0 and b * direction > 0.0):
            return np.inf
    return best + 1e-9 * (1.0 + abs(best) + abs(const))


@numba.njit(cache=True, error_model="numpy")
def kl_nats(family, loc, scale, low, high, log_normalizer, prior_family, prior_loc, prior_scale):
    """``D_KL[target || prior]`` in nats for one dimension, in closed form."""
    if family == NORMAL:
        alpha = (low - loc) / scale
        beta = (high - loc) / scale
        pdf_a = math.exp(-0.5 * alpha * alpha) * _INV_SQRT_2PI if math.isfinite(alpha) else 0.0
        pdf_b = math.exp(-0.5 * beta * beta) * _INV_SQRT_2PI if math.isfinite(beta) else 0.0
        mass = math.exp(log_normalizer)
        m1 = (pdf_a - pdf_b) / mass
        a_term = alpha * pdf_a if math.isfinite(alpha) else 0.0
        b_term = beta * pdf_b if math.isfinite(beta) else 0.0
        m2 = 1.0 + (a_term - b_term) / mass
        mean = loc + scale * m1
        var = scale * scale * (m2 - m1 * m1)
        neg_entropy = -math.log(scale) - _HALF_LOG_2PI - log_normalizer - 0.5 * m2
    else:
        mean = 0.5 * (low + high)
        var = (high - low) ** 2 / 12.0
        neg_entropy = -log_normalizer
    if prior_family == NORMAL:
        second = var + (mean - prior_loc) ** 2
        cross = -math.log(prior_scale) - _HALF_LOG_2PI - 0.5 * second / (prior_scale * prior_scale)
    else:
        cross = -math.log(prior_scale)
    return neg_entropy - cross


@numba.njit(cache=True, error_model="numpy")
def prepare_row(family, loc, scale, low, high, log_normalizer, prior_family, prior_loc, prior_scale,
                width_mode, width_given, half_width, hybrid, row):
    """Fill the packed race parameters of one (element, dimension); return (bound, kl, status).

    Computes the width M (given, derived from the std for Gaussian targets, or
    the largest the support fits), the transformed support and window centre
    (DESIGN 2.6), the constant of the log weight, its closed-form maximum and
    the KL in nats.
    """
    if not hybrid:
        width = 1
    elif width_mode == WIDTH_GIVEN:
        width = width_given
    else:
        if width_mode == WIDTH_GAUSSIAN:
            width = gaussian_width_one(scale, half_width, prior_family, prior_scale)
        else:
            length = transformed_support(low, high, 1.0, prior_family, prior_loc, prior_scale)[2]
            width = max(int(math.floor(min(1.0 / length, 2.0**52))), 1) if length > 0 else 1
        start, stop, length = transformed_support(low, high, float(width), prior_family, prior_loc, prior_scale)
        if stop - start > 1.0 and width > 1:
            width -= 1  # floating-point guard on the derivation
    start, stop, length = transformed_support(low, high, float(width), prior_family, prior_loc, prior_scale)
    status = PREP_OK
    if not length > 0.0:
        status = PREP_NO_MASS
    elif stop - start > 1.0:
        status = PREP_TOO_WIDE
    const = -log_normalizer - math.log(width)
    if family == NORMAL:
        const -= math.log(scale) + _HALF_LOG_2PI
    if prior_family == NORMAL:
        const += math.log(prior_scale) + _HALF_LOG_2PI
    else:
        const += math.log(prior_scale)
    bound = log_weight_max(family, loc, scale, low, high, const, prior_family, prior_loc, prior_scale)
    if not math.isfinite(bound) and status == PREP_OK:
        status = PREP_UNBOUNDED
    kl = kl_nats(family, loc, scale, low, high, log_normalizer, prior_family, prior_loc, prior_scale)
    row[F_FAMILY] = family
    row[F_LOC] = loc
    row[F_SCALE] = scale
    row[F_LOW] = low
    row[F_HIGH] = high
    row[F_CONST] = const
    row[F_PRIOR_FAMILY] = prior_family
    row[F_PRIOR_LOC] = prior_loc
    row[F_PRIOR_SCALE] = prior_scale
    row[F_WIDTH] = width
    row[F_CENTRE] = min(max(0.5 * (start + stop), 0.5), width - 0.5)
    row[F_WINDOW_LOW] = start
    row[F_WINDOW_HIGH] = stop
    return bound, kl, status


@numba.njit(cache=True, error_model="numpy", inline="always")
def _prepare_element(i, family, loc, scale, low, high, log_normalizer, prior_family, prior_loc,
                     prior_scale, width_mode, width_given, half_width, hybrid, params_out, log_w_max_out,
                     kl_out, status_out):
    """:func:`prepare_row` over the event of element ``i``; sums the bound and the KL."""
    status = PREP_OK
    total_log_w_max = 0.0
    total_kl = 0.0
    for j in range(family.shape[1]):
        bound, kl, problem = prepare_row(
            family[i, j], loc[i, j], scale[i, j], low[i, j], high[i, j], log_normalizer[i, j],
            prior_family[i, j], prior_loc[i, j], prior_scale[i, j], width_mode, width_given[i, j],
            half_width, hybrid, params_out[i, j],
        )
        if status == PREP_OK:
            status = problem
        total_log_w_max += bound
        total_kl += kl
    log_w_max_out[i] = total_log_w_max
    kl_out[i] = total_kl
    status_out[i] = status


@numba.njit(cache=True, error_model="numpy", parallel=True)
def prepare_batch(family, loc, scale, low, high, log_normalizer, prior_family, prior_loc, prior_scale,
                  width_mode, width_given, half_width, hybrid, params_out, log_w_max_out, kl_out,
                  status_out):
    """Race parameters of every (element, dimension) of (B, d) inputs.

    ``status_out[i]`` reports the first problem of element ``i``.
    """
    for i in numba.prange(family.shape[0]):
        _prepare_element(i, family, loc, scale, low, high, log_normalizer, prior_family, prior_loc,
                         prior_scale, width_mode, width_given, half_width, hybrid, params_out,
                         log_w_max_out, kl_out, status_out)


@numba.njit(cache=True, error_model="numpy")
def prepare_batch_serial(family, loc, scale, low, high, log_normalizer, prior_family, prior_loc,
                         prior_scale, width_mode, width_given, half_width, hybrid, params_out,
                         log_w_max_out, kl_out, status_out):
    """:func:`prepare_batch` on the calling thread."""
    for i in range(family.shape[0]):
        _prepare_element(i, family, loc, scale, low, high, log_normalizer, prior_family, prior_loc,
                         prior_scale, width_mode, width_given, half_width, hybrid, params_out,
                         log_w_max_out, kl_out, status_out)


@numba.njit(cache=True, error_model="numpy")
def encode_one(seed, key, family, loc, scale, low, high, log_normalizer, prior_family, prior_loc,
               prior_scale, width_mode, width_given, half_width, hybrid, mode, num_candidates,
               max_candidates):
    """One scalar target in one call (the low-latency path of ``encode_sample``).

    Returns (prep_status, race_status, index, factor, sample, examined, width,
    log_w_max, kl_nats); identical to a one-element batch.  With
    ``num_candidates <= 0`` ORC/MRC use ``2**ceil(KL_bits + 4)``, capped at
    ``max_candidates``.
    """
    params = np.empty((1, NUM_FIELDS))
    row = params[0]
    bound, kl, prep_status = prepare_row(family, loc, scale, low, high, log_normalizer, prior_family,
                                         prior_loc, prior_scale, width_mode, width_given, half_width,
                                         hybrid, row)
    width = int(row[F_WIDTH])
    if prep_status != PREP_OK or (mode == RACE and bound > math.log(max_candidates)):
        return prep_status, STATUS_OK, 0, 0, np.nan, 0, width, bound, kl
    if num_candidates <= 0:
        num_candidates = int(min(2.0 ** math.ceil(kl / math.log(2.0) + 4.0), max_candidates))
    stream = np.uint64(0)
    n, examined, status = select_one(seed, key, stream, params, hybrid, bound, mode, num_candidates,
                                     max_candidates)
    if status != STATUS_OK:
        return prep_status, status, n, 0, np.nan, examined, width, bound, kl
    k, offset = _candidate_position(seed, stream, n, 0, row[F_CENTRE], hybrid)
    sample = prior_ppf_scaled(k, offset, row[F_WIDTH], row[F_PRIOR_FAMILY], row[F_PRIOR_LOC], row[F_PRIOR_SCALE])
    return prep_status, status, n, int(k), sample, examined, width, bound, kl
