"""Numba kernels: inverse CDFs, log weights, the exponential race and its baselines.

Everything here is small and pure: arrays in, arrays out, integer status
codes instead of exceptions.  Validation and Python objects live in
:mod:`rcc.checks` and :mod:`rcc.coding`; the functions of the transformed axis
(inverse CDFs, CDF pairs, supports, widths, factor tables) in
:mod:`rcc.axis_kernels`, re-exported here.

Candidate ``n`` of batch element ``i`` in dimension ``j`` is built from the
shared dither ``U = U(seed, i, n, j)`` (:mod:`rcc.random`):

* hybrid coding (:ref:`hybrid-window`, :ref:`transform-width-m`): ``K = round(c - U)``, ``z' = K + U`` is
  uniform on the unit window ``[c - 1/2, c + 1/2)`` of the transformed axis
  ``z' = M F_c(z)`` of the coding transform ``c``; the receiver computes
  ``z = F_c^{-1}((K + U) / M)``;
* prior-proposal methods (PFR, ORC, MRC): ``K = 0`` and ``z' = U + 1/2`` with
  ``M = 1`` and the prior as the transform, i.e. ``z = F_p^{-1}(U + 1/2) ~ p``.

The weight of a candidate is ``w = q'(z') = q(z) / (M c(z))`` (:ref:`transform-width-m`);
kernels work with ``log w = log q(z) - log c(z) - log M``.  The prior ``p``
enters only the KL.  The axis functions (``prior_ppf_scaled``,
``prior_cdf_pair``, ``transformed_support``, ``log_weight``...) take the
distribution that defines the axis as their ``prior_*`` arguments: the coding
transform for hybrid coding, the prior itself for the prior-proposal methods.

Inlining: helpers of the candidate loop and of decoding (the inverse CDF, the
log weight, the dither) are inlined by numba (``inline="always"``); the
once-per-element preparation (``_prepare_element``, ``_prepare_row`` and what
they call), the searches (the races, ORC/MRC) and the winner's write-out are
ordinary compiled functions that numba types and compiles once and every
kernel links.  Inlining the preparation too
measured within 5% of the throughput but doubled the first-run compilation of
the batch encoder.  The batch encoders' block and element functions take their
search as an argument and are inlined into each entry point (see
:func:`encode_fused`).
"""

from __future__ import annotations

import math

import numba
import numpy as np

# The transformed axis's functions (re-exported: rcc.kernels.<name> keeps working).
from .axis_kernels import (  # noqa: F401 - re-exported
    _INV_SQRT2,
    _SURELY_UPPER,
    _cdf_side,
    _quadratic_log_ratio,
    _ratio,
    _support_at,
    _support_cdfs,
    factor_block_cdf,
    factor_table_exact,
    gaussian_width_array,
    gaussian_width_one,
    log_weight,
    ndtri_lower,
    prior_cdf_pair,
    prior_ppf_scaled,
    transformed_support,
)
from .random import (
    DOMAIN_KEY,
    DOMAIN_PRIVATE,
    DOMAIN_SHARED,
    _private_uniform,
    _shared_dither,
    _stream_prefix,
    hash_counter,
    uniform_centered,
)

__all__ = [
    "ndtri_lower",
    "prior_ppf_scaled",
    "log_weight",
    "race",
    "select_one",
    "encode_fused",
    "encode_fused_serial",
    "encode_fused_product",
    "encode_fused_product_serial",
    "encode_fused_fixed_count",
    "encode_fused_fixed_count_serial",
    "encode_one",
    "encode_one_fixed_count",
    "decode_batch_serial",
    "decode_one",
    "prepare_batch",
    "prepare_batch_serial",
    "gaussian_width_array",
    "factor_table_exact",
    "factor_block_cdf",
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
def _candidate_position(shared, n, j, centre, hybrid):
    """The dither of candidate ``n`` in dimension ``j`` as (factor, offset) with ``z' = factor + offset``."""
    u = _shared_dither(shared, n, j)
    if hybrid:
        return _candidate_factor(centre, u), u
    return 0.0, u + 0.5


# Field layout of the packed per-(element, dimension) parameters: one float64
# array of shape (d, NUM_FIELDS) per element keeps the kernels' argument lists short.
# The race reads only the coding transform (F_TRANSFORM_*); the prior enters through the KL alone.
(F_FAMILY, F_LOC, F_SCALE, F_LOW, F_HIGH, F_CONST, F_TRANSFORM_FAMILY, F_TRANSFORM_LOC, F_TRANSFORM_SCALE,
 F_WIDTH, F_CENTRE, F_WINDOW_LOW, F_WINDOW_HIGH) = range(13)
NUM_FIELDS = 13


@numba.njit(cache=True, error_model="numpy", inline="always")
def _candidate_log_weight(shared, n, params, hybrid):
    """Log weight of candidate ``n`` for one element (``params``: (d, NUM_FIELDS))."""
    lw = 0.0
    for j in range(params.shape[0]):
        row = params[j]
        k, offset = _candidate_position(shared, n, j, row[F_CENTRE], hybrid)
        position = k + offset
        # Cheap rejection before the inverse CDF: outside the transformed support.
        if position < row[F_WINDOW_LOW] or position > row[F_WINDOW_HIGH]:
            return -np.inf
        z = prior_ppf_scaled(k, offset, row[F_WIDTH], row[F_TRANSFORM_FAMILY], row[F_TRANSFORM_LOC],
                             row[F_TRANSFORM_SCALE])
        lw += log_weight(z, row[F_FAMILY], row[F_LOC], row[F_SCALE], row[F_LOW], row[F_HIGH], row[F_CONST],
                         row[F_TRANSFORM_FAMILY], row[F_TRANSFORM_LOC], row[F_TRANSFORM_SCALE])
        if lw == -np.inf:
            return lw
    return lw


_RESCALE = 2.0**600
_LOG_RESCALE = 600.0 * math.log(2.0)


@numba.njit(cache=True, error_model="numpy", inline="always")
def race(log_weight_of, state, shared, private, log_w_max, max_candidates):
    """The exponential race with the w_max stopping rule (:ref:`race-rule`), for any candidate weight.

    ``log_weight_of(state, shared, n) -> (log w_n, status)`` gives the log
    weight of candidate ``n`` (``-inf`` outside the target's support); a
    status other than ``STATUS_OK`` ends the race at once with that status.
    Each weight function is a compiled variant of this one loop: the built-in
    targets' (:func:`_packed_log_weight`, :func:`_row_log_weight`) and the
    general targets' log-density callback (:mod:`rcc.general`).

    Arrival times ``T_n = E_1 + ... + E_n`` with ``E_i = -log V_i`` are kept
    as the product ``prod V_i = exp(-T_n)`` (rescaled by ``2**600`` before it
    underflows), so a candidate costs no logarithm unless its weight is
    evaluated.  The race keeps the best score ``log T_n - log w_n`` and stops
    once ``T_n >= exp(best + log w_max)``: no later candidate can win.
    ``shared`` and ``private`` are the stream prefixes of the dither and of
    the arrival times.  Returns (index, examined, status).
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
        product *= _private_uniform(private, n)
        if product < 1.0 / _RESCALE:
            product *= _RESCALE
            rescaled += _LOG_RESCALE
            stop_product = math.exp(rescaled - stop_arrival)
        if product <= stop_product:
            break
        examined += 1
        lw, status = log_weight_of(state, shared, n)
        if status != STATUS_OK:
            return n, examined, status
        if lw == -np.inf:
            continue
        score = math.log(rescaled - math.log(product)) - lw
        if score < best:
            best = score
            best_n = n
            stop_arrival = math.exp(best + log_w_max)
            stop_product = math.exp(rescaled - stop_arrival)
    return best_n, examined, STATUS_OK


@numba.njit(cache=True, error_model="numpy", inline="always")
def _packed_log_weight(state, shared, n):
    """:func:`race`'s weight of a d-dimensional built-in target; ``state = (params, hybrid)``."""
    params, hybrid = state
    return _candidate_log_weight(shared, n, params, hybrid), STATUS_OK


@numba.njit(cache=True, error_model="numpy", inline="always")
def _row_log_weight(state, shared, n):
    """:func:`race`'s weight of a 1-D built-in target, its parameters unpacked (held in registers)."""
    (family, loc, scale, low, high, const, width, centre, prior_family, prior_loc, prior_scale, window_low,
     window_high, hybrid) = state
    k, offset = _candidate_position(shared, n, 0, centre, hybrid)
    position = k + offset
    # Cheap rejection before the inverse CDF: outside the transformed support.
    if position < window_low or position > window_high:
        return -np.inf, STATUS_OK
    z = prior_ppf_scaled(k, offset, width, prior_family, prior_loc, prior_scale)
    return log_weight(z, family, loc, scale, low, high, const, prior_family, prior_loc, prior_scale), STATUS_OK


@numba.njit(cache=True, error_model="numpy", inline="always")
def _row_state(row, hybrid):
    """The state tuple of :func:`_row_log_weight` from one packed parameter row."""
    return (row[F_FAMILY], row[F_LOC], row[F_SCALE], row[F_LOW], row[F_HIGH], row[F_CONST], row[F_WIDTH],
            row[F_CENTRE], row[F_TRANSFORM_FAMILY], row[F_TRANSFORM_LOC], row[F_TRANSFORM_SCALE],
            row[F_WINDOW_LOW], row[F_WINDOW_HIGH], hybrid)


@numba.njit(cache=True, error_model="numpy")
def _fixed_count(shared, private, params, hybrid, log_w_max, mode, num_candidates, max_candidates):
    """ORC (sorted arrivals, stopping rule) or MRC (i.i.d. arrivals) over ``num_candidates`` (:ref:`race-baselines`).

    A search of :func:`_select` (``max_candidates`` unused: the count is fixed).
    """
    best = np.inf
    best_n = 0
    arrival = 0.0
    stop_arrival = np.inf
    examined = 0
    for n in range(1, num_candidates + 1):
        exponential = -np.log(_private_uniform(private, n))
        if mode == ORC:
            # The n-th order statistic of num_candidates Exp(1) variates, times num_candidates.
            arrival += exponential * (num_candidates / (num_candidates - n + 1.0))
            if arrival >= stop_arrival:
                break
        else:
            arrival = exponential
        examined += 1
        lw = _candidate_log_weight(shared, n, params, hybrid)
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


# The searches of :func:`_select`: (shared, private, params, hybrid, log_w_max, mode, num_candidates,
# max_candidates) -> (index, examined, status), each compiled once and linked into the entry points
# that use it, so a first hybrid batch of scalar targets compiles neither ORC/MRC nor the
# d-dimensional race.  The functions that take a search as an argument (_select, _encode_element,
# _encode_block) are inlined into each entry point, which names its search: a function passed
# across a compiled call becomes a run-time pointer, and numba cannot cache machine code holding one.
@numba.njit(cache=True, error_model="numpy")
def _race_row(shared, private, params, hybrid, log_w_max, mode, num_candidates, max_candidates):
    """The race of a 1-D target, its parameters unpacked (:func:`_row_log_weight`)."""
    return race(_row_log_weight, _row_state(params[0], hybrid), shared, private, log_w_max, max_candidates)


@numba.njit(cache=True, error_model="numpy")
def _race_packed(shared, private, params, hybrid, log_w_max, mode, num_candidates, max_candidates):
    """The race of a d-dimensional target (:func:`_packed_log_weight`)."""
    return race(_packed_log_weight, (params, hybrid), shared, private, log_w_max, max_candidates)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _select(search, seed, key, stream, params, hybrid, log_w_max, mode, num_candidates, max_candidates, factor_out,
            sample_out):
    """:func:`select_one` by the search ``search`` (:func:`_race_row`, :func:`_race_packed` or :func:`_fixed_count`)."""
    shared = _stream_prefix(DOMAIN_SHARED, seed, stream)
    private = _stream_prefix(DOMAIN_PRIVATE, key, stream)
    n, examined, status = search(shared, private, params, hybrid, log_w_max, mode, num_candidates, max_candidates)
    if status == STATUS_OK:
        _write_winner(shared, n, params, hybrid, factor_out, sample_out)
    return n, examined, status


@numba.njit(cache=True, error_model="numpy")
def select_one(seed, key, stream, params, hybrid, log_w_max, mode, num_candidates, max_candidates, factor_out,
               sample_out):
    """Run one selection for stream ``stream``; return (index, examined, status).

    On success the winner's factor and sample of each dimension are written
    to ``factor_out`` and ``sample_out`` (length d): exactly what
    :func:`decode_batch` computes from the index.  The search follows
    ``mode`` and d, as the batch encoders' choice between :func:`encode_fused`,
    :func:`encode_fused_product` and :func:`encode_fused_fixed_count` does.
    """
    if mode == RACE and params.shape[0] == 1:
        return _select(_race_row, seed, key, stream, params, hybrid, log_w_max, mode, num_candidates,
                       max_candidates, factor_out, sample_out)
    if mode == RACE:
        return _select(_race_packed, seed, key, stream, params, hybrid, log_w_max, mode, num_candidates,
                       max_candidates, factor_out, sample_out)
    return _select(_fixed_count, seed, key, stream, params, hybrid, log_w_max, mode, num_candidates,
                   max_candidates, factor_out, sample_out)


@numba.njit(cache=True, error_model="numpy")
def _write_winner(shared, n, params, hybrid, factor_out, sample_out):
    """Candidate ``n``'s factor and sample in each dimension: exactly what :func:`decode_batch` computes."""
    for j in range(params.shape[0]):
        row = params[j]
        k, offset = _candidate_position(shared, n, j, row[F_CENTRE], hybrid)
        factor_out[j] = np.int64(k)
        sample_out[j] = prior_ppf_scaled(k, offset, row[F_WIDTH], row[F_TRANSFORM_FAMILY],
                                         row[F_TRANSFORM_LOC], row[F_TRANSFORM_SCALE])


@numba.njit(cache=True, error_model="numpy", inline="always")
def _decode_value(seed, stream, index, j, factor, width, prior_family, prior_loc, prior_scale, hybrid):
    """Dimension ``j`` of message ``(index, factor)`` on ``stream``: (sample, ok), one dither, one inverse CDF.

    ``ok`` is False (and the sample NaN) where the factor is inconsistent with
    the dither: ``K + U_N`` outside ``[0, M)``, or ``K != 0`` for prior proposals.
    """
    u = uniform_centered(seed, stream, np.uint64(index), np.uint64(j))
    if hybrid:
        k = np.float64(factor)
        offset = u
        position = k + u
        if not (position >= 0.0 and position < width):
            return np.nan, False
    else:
        k = 0.0
        offset = u + 0.5
        if factor != 0:
            return np.nan, False
    return prior_ppf_scaled(k, offset, width, prior_family, prior_loc, prior_scale), True


@numba.njit(cache=True, error_model="numpy", inline="always")
def _decode_element(i, seed, stream_offset, index, factor, width, prior_family, prior_loc, prior_scale,
                    hybrid, sample_out, status_out):
    """Decode element ``i``: one dither per dimension, one inverse CDF."""
    stream = stream_offset + np.uint64(i)
    status_out[i] = STATUS_OK
    for j in range(factor.shape[1]):
        value, ok = _decode_value(seed, stream, index[i], j, factor[i, j], width[i, j], prior_family[i, j],
                                  prior_loc[i, j], prior_scale[i, j], hybrid)
        if not ok:
            status_out[i] = STATUS_BAD_FACTOR
        sample_out[i, j] = value


@numba.njit(cache=True, error_model="numpy")
def decode_one(seed, stream, index, factor, width, prior_family, prior_loc, prior_scale, hybrid):
    """One 1-D message in one call (the low-latency path of ``decode_sample``): (sample, status).

    Identical to element 0 of :func:`decode_batch` with ``stream_offset = stream``.
    """
    value, ok = _decode_value(seed, stream, index, 0, factor, width, prior_family, prior_loc, prior_scale, hybrid)
    return value, STATUS_OK if ok else STATUS_BAD_FACTOR


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


# --- per-element preparation (docs/transform.rst, 'Choosing the width'; docs/truncation.rst, 'The central interval')

WIDTH_GIVEN, WIDTH_GAUSSIAN, WIDTH_SUPPORT = 0, 1, 2
PREP_OK, PREP_NO_MASS, PREP_TOO_WIDE, PREP_UNBOUNDED = 0, 1, 2, 3
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@numba.njit(cache=True, error_model="numpy")
def log_weight_max(family, loc, scale, low, high, const, prior_family, prior_loc, prior_scale):
    """Closed-form ``max log w`` on ``[low, high]`` (:ref:`truncation-bound`).

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


# Memo of the transcendental functions of per-element parameters that repeat
# along a batch (a shared std, prior or tail mass): slot pairs (argument, value).
MEMO_SIZE = 16
_M_LOG_SCALE, _M_LOG_PRIOR_SCALE, _M_LOG_WIDTH, _M_MASS, _M_WIDTH = 0, 2, 4, 6, 8  # _M_WIDTH: 4 keys, 1 value
_M_LOG_TRANSFORM_SCALE = 14


@numba.njit(cache=True, error_model="numpy")
def new_memo():
    """An empty memo for :func:`prepare_row` (NaN keys never match)."""
    return np.full(MEMO_SIZE, np.nan)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _memo_log(x, memo, slot):
    if memo[slot] != x:
        memo[slot] = x
        memo[slot + 1] = math.log(x)
    return memo[slot + 1]


@numba.njit(cache=True, error_model="numpy")
def _memo_gaussian_width(std, half_width, prior_family, prior_scale, memo):
    s = _M_WIDTH
    if not (memo[s] == std and memo[s + 1] == half_width and memo[s + 2] == prior_family
            and memo[s + 3] == prior_scale):
        memo[s] = std
        memo[s + 1] = half_width
        memo[s + 2] = prior_family
        memo[s + 3] = prior_scale
        memo[s + 4] = gaussian_width_one(std, half_width, prior_family, prior_scale)
    return int(memo[s + 4])


_TINY_MASS = 1e-250


@numba.njit(cache=True, error_model="numpy")
def _kl_nats(family, loc, scale, low, high, log_normalizer, prior_family, prior_loc, prior_scale, memo):
    """:func:`kl_nats` with the logarithms of repeated parameters taken from ``memo``."""
    if family == NORMAL:
        alpha = (low - loc) / scale
        beta = (high - loc) / scale
        pdf_a = math.exp(-0.5 * alpha * alpha) * _INV_SQRT_2PI if math.isfinite(alpha) else 0.0
        pdf_b = math.exp(-0.5 * beta * beta) * _INV_SQRT_2PI if math.isfinite(beta) else 0.0
        if memo[_M_MASS] != log_normalizer:
            memo[_M_MASS] = log_normalizer
            memo[_M_MASS + 1] = math.exp(log_normalizer)
        mass = memo[_M_MASS + 1]
        if mass < _TINY_MASS:
            # Far in the base's tail (e.g. N(0, 1) on [40, 41]) the mass underflows: divide in logs.
            pdf_a = math.exp(-0.5 * alpha * alpha - _HALF_LOG_2PI - log_normalizer) if math.isfinite(alpha) else 0.0
            pdf_b = math.exp(-0.5 * beta * beta - _HALF_LOG_2PI - log_normalizer) if math.isfinite(beta) else 0.0
            mass = 1.0
        m1 = (pdf_a - pdf_b) / mass
        a_term = alpha * pdf_a if math.isfinite(alpha) else 0.0
        b_term = beta * pdf_b if math.isfinite(beta) else 0.0
        m2 = 1.0 + (a_term - b_term) / mass
        mean = loc + scale * m1
        var = scale * scale * (m2 - m1 * m1)
        neg_entropy = -_memo_log(scale, memo, _M_LOG_SCALE) - _HALF_LOG_2PI - log_normalizer - 0.5 * m2
    else:
        mean = 0.5 * (low + high)
        var = (high - low) ** 2 / 12.0
        neg_entropy = -log_normalizer
    if prior_family == NORMAL:
        second = var + (mean - prior_loc) ** 2
        cross = (-_memo_log(prior_scale, memo, _M_LOG_PRIOR_SCALE) - _HALF_LOG_2PI
                 - 0.5 * second / (prior_scale * prior_scale))
    else:
        cross = -_memo_log(prior_scale, memo, _M_LOG_PRIOR_SCALE)
    return neg_entropy - cross


@numba.njit(cache=True, error_model="numpy")
def kl_nats(family, loc, scale, low, high, log_normalizer, prior_family, prior_loc, prior_scale):
    """``D_KL[target || prior]`` in nats for one dimension, in closed form."""
    return _kl_nats(family, loc, scale, low, high, log_normalizer, prior_family, prior_loc, prior_scale,
                    np.full(MEMO_SIZE, np.nan))


@numba.njit(cache=True, error_model="numpy")
def _prepare_row(family, loc, scale, low, high, log_normalizer, prior_family, prior_loc, prior_scale,
                 transform_family, transform_loc, transform_scale, width_mode, width_given, half_width, hybrid,
                 row, memo):
    """:func:`prepare_row` with a memo (see :func:`new_memo`) carried along a batch."""
    # The transform's CDF at the support's ends, once: every width below reuses it.
    cdfs = _support_cdfs(low, high, transform_family, transform_loc, transform_scale)
    if not hybrid:
        width = 1
    elif width_mode == WIDTH_GIVEN:
        width = width_given
    else:
        if width_mode == WIDTH_GAUSSIAN:
            width = _memo_gaussian_width(scale, half_width, transform_family, transform_scale, memo)
        else:
            length = _support_at(cdfs, 1.0)[2]
            width = max(int(math.floor(min(1.0 / length, 2.0**52))), 1) if length > 0 else 1
        start, stop, length = _support_at(cdfs, float(width))
        if stop - start > 1.0 and width > 1:
            width -= 1  # floating-point guard on the derivation
    start, stop, length = _support_at(cdfs, float(width))
    status = PREP_OK
    if not length > 0.0:
        status = PREP_NO_MASS
    elif stop - start > 1.0:
        status = PREP_TOO_WIDE
    const = -log_normalizer - _memo_log(float(width), memo, _M_LOG_WIDTH)
    if family == NORMAL:
        const -= _memo_log(scale, memo, _M_LOG_SCALE) + _HALF_LOG_2PI
    # The weight is q / (M c), c the transform's density (the proposal the race corrects).
    if transform_family == NORMAL:
        const += _memo_log(transform_scale, memo, _M_LOG_TRANSFORM_SCALE) + _HALF_LOG_2PI
    else:
        const += _memo_log(transform_scale, memo, _M_LOG_TRANSFORM_SCALE)
    bound = log_weight_max(family, loc, scale, low, high, const, transform_family, transform_loc,
                           transform_scale)
    if not math.isfinite(bound) and status == PREP_OK:
        status = PREP_UNBOUNDED
    kl = _kl_nats(family, loc, scale, low, high, log_normalizer, prior_family, prior_loc, prior_scale, memo)
    row[F_FAMILY] = family
    row[F_LOC] = loc
    row[F_SCALE] = scale
    row[F_LOW] = low
    row[F_HIGH] = high
    row[F_CONST] = const
    row[F_TRANSFORM_FAMILY] = transform_family
    row[F_TRANSFORM_LOC] = transform_loc
    row[F_TRANSFORM_SCALE] = transform_scale
    row[F_WIDTH] = width
    row[F_CENTRE] = min(max(0.5 * (start + stop), 0.5), width - 0.5)
    row[F_WINDOW_LOW] = start
    row[F_WINDOW_HIGH] = stop
    return bound, kl, status


@numba.njit(cache=True, error_model="numpy")
def prepare_row(family, loc, scale, low, high, log_normalizer, prior_family, prior_loc, prior_scale,
                transform_family, transform_loc, transform_scale, width_mode, width_given, half_width, hybrid,
                row):
    """Fill the packed race parameters of one (element, dimension); return (bound, kl, status).

    Computes the width M (given, derived from the std for Gaussian targets, or
    the largest the support fits), the support on the transformed axis
    ``z' = M F_c(z)`` of the coding transform ``c`` and the window centre
    (:ref:`transform-width-m`), the constant of the log weight ``log q - log c - log M``, its
    closed-form maximum and ``D_KL[target || prior]`` in nats.  Prior-proposal
    methods pass the prior as the transform.
    """
    return _prepare_row(family, loc, scale, low, high, log_normalizer, prior_family, prior_loc, prior_scale,
                        transform_family, transform_loc, transform_scale, width_mode, width_given, half_width,
                        hybrid, row, new_memo())


# --- batches: columns in, everything of an element computed in one pass ----------------
# A batch's parameters arrive as COLUMNS flat float64 arrays with (row, column)
# steps: element (i, j) of column c is ``columns[c][i * steps[c, 0] + j * steps[c, 1]]``,
# so scalars (steps 0, 0), full arrays (d, 1) and per-dimension values (0, 1)
# share one compiled signature and are never copied to full size.
(C_FAMILY, C_LOC, C_SCALE, C_LOW, C_HIGH, C_LOG_NORMALIZER, C_PRIOR_FAMILY, C_PRIOR_LOC, C_PRIOR_SCALE,
 C_TRANSFORM_FAMILY, C_TRANSFORM_LOC, C_TRANSFORM_SCALE, C_WIDTH) = range(13)
NUM_COLUMNS = 13
# Elements per block of the threaded loops: a block shares its scratch arrays and memo.
_BLOCK = 512
# Status codes of the fused encoder beyond STATUS_*: the bound exceeds max_candidates,
# and PREP_* problems offset by STATUS_PREP.
STATUS_BOUND, STATUS_PREP = 3, 10


@numba.njit(cache=True, error_model="numpy", inline="always")
def _column(columns, steps, c, i, j):
    return columns[c][i * steps[c, 0] + j * steps[c, 1]]


@numba.njit(cache=True, error_model="numpy")
def _prepare_element(i, columns, steps, width_mode, half_width, hybrid, params, memo):
    """Race parameters of element ``i`` into ``params`` (d, NUM_FIELDS); returns (bound, kl, status).

    The bound and the KL are summed over the event; the status is the first problem.
    """
    status = PREP_OK
    total_log_w_max = 0.0
    total_kl = 0.0
    for j in range(params.shape[0]):
        bound, kl, problem = _prepare_row(
            _column(columns, steps, C_FAMILY, i, j), _column(columns, steps, C_LOC, i, j),
            _column(columns, steps, C_SCALE, i, j), _column(columns, steps, C_LOW, i, j),
            _column(columns, steps, C_HIGH, i, j), _column(columns, steps, C_LOG_NORMALIZER, i, j),
            _column(columns, steps, C_PRIOR_FAMILY, i, j), _column(columns, steps, C_PRIOR_LOC, i, j),
            _column(columns, steps, C_PRIOR_SCALE, i, j), _column(columns, steps, C_TRANSFORM_FAMILY, i, j),
            _column(columns, steps, C_TRANSFORM_LOC, i, j), _column(columns, steps, C_TRANSFORM_SCALE, i, j),
            width_mode,
            int(_column(columns, steps, C_WIDTH, i, j)), half_width, hybrid, params[j], memo,
        )
        if status == PREP_OK:
            status = problem
        total_log_w_max += bound
        total_kl += kl
    return total_log_w_max, total_kl, status


@numba.njit(cache=True, error_model="numpy")
def _prepare_block(block, begin, end, columns, steps, width_mode, half_width, hybrid, params_out,
                   log_w_max_out, kl_out, status_out):
    first = begin + block * _BLOCK
    memo = new_memo()
    for i in range(first, min(end, first + _BLOCK)):
        bound, kl, status = _prepare_element(i, columns, steps, width_mode, half_width, hybrid,
                                             params_out[i - begin], memo)
        log_w_max_out[i - begin] = bound
        kl_out[i - begin] = kl
        status_out[i - begin] = status


@numba.njit(cache=True, error_model="numpy", parallel=True)
def prepare_batch(begin, end, columns, steps, width_mode, half_width, hybrid, params_out, log_w_max_out,
                  kl_out, status_out):
    """Race parameters, bounds, KLs (nats) and statuses of elements ``begin:end``.

    ``params_out`` has shape (end - begin, d, NUM_FIELDS); ``status_out[i]``
    reports the first problem of element ``begin + i``.  Used for the KL
    alone and to describe a failed encode; encoding uses :func:`encode_fused`.
    """
    for block in numba.prange((end - begin + _BLOCK - 1) // _BLOCK):
        # np.int64: prange's index is unsigned, the serial loop's signed; one type, one compiled block.
        _prepare_block(np.int64(block), begin, end, columns, steps, width_mode, half_width, hybrid, params_out,
                       log_w_max_out, kl_out, status_out)


@numba.njit(cache=True, error_model="numpy")
def prepare_batch_serial(begin, end, columns, steps, width_mode, half_width, hybrid, params_out,
                         log_w_max_out, kl_out, status_out):
    """:func:`prepare_batch` on the calling thread."""
    for block in range((end - begin + _BLOCK - 1) // _BLOCK):
        _prepare_block(block, begin, end, columns, steps, width_mode, half_width, hybrid, params_out,
                       log_w_max_out, kl_out, status_out)


_LOG2 = math.log(2.0)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _encode_element(search, i, seed, key, stream_offset, columns, steps, width_mode, half_width, hybrid, mode,
                    num_candidates, max_candidates, log_max_candidates, params, memo, index_out, factor_out,
                    sample_out, examined_out, width_out, kl_bits_out, counts_out, status_out):
    """Prepare and encode element ``i`` (stream ``stream_offset + i``) by ``search``; write its outputs."""
    bound, kl, problem = _prepare_element(i, columns, steps, width_mode, half_width, hybrid, params, memo)
    dims = params.shape[0]
    for j in range(dims):
        width_out[i, j] = np.int64(params[j, F_WIDTH])
    kl_bits = kl / _LOG2
    kl_bits_out[i] = kl_bits
    if problem != PREP_OK:
        status_out[i] = STATUS_PREP + problem
        return
    if mode == RACE:
        if bound > log_max_candidates:
            status_out[i] = STATUS_BOUND
            return
        count = 0
    else:
        if num_candidates > 0:
            count = num_candidates
        else:
            count = np.int64(min(np.exp2(np.ceil(kl_bits + 4.0)), np.float64(max_candidates)))
        counts_out[i] = count  # ORC/MRC only: the race passes an empty array
    n, examined, status = _select(search, seed, key, stream_offset + np.uint64(i), params, hybrid, bound, mode,
                                  count, max_candidates, factor_out[i], sample_out[i])
    index_out[i] = n
    examined_out[i] = examined
    status_out[i] = status


@numba.njit(cache=True, error_model="numpy", inline="always")
def _encode_block(search, block, begin, end, seed, key, stream_offset, columns, steps, width_mode, half_width,
                  hybrid, mode, num_candidates, max_candidates, log_max_candidates, index_out, factor_out,
                  sample_out, examined_out, width_out, kl_bits_out, counts_out, status_out):
    dims = width_out.shape[1]
    params = np.empty((dims, NUM_FIELDS))
    memo = new_memo()
    first = begin + block * _BLOCK
    for i in range(first, min(end, first + _BLOCK)):
        _encode_element(search, i, seed, key, stream_offset, columns, steps, width_mode, half_width, hybrid, mode,
                        num_candidates, max_candidates, log_max_candidates, params, memo, index_out, factor_out,
                        sample_out, examined_out, width_out, kl_bits_out, counts_out, status_out)


# The batch encoders: one block function (_encode_block), inlined with its search
# into six entry points that only loop over blocks:
# the 1-D race (encode_fused), the d-dimensional race (encode_fused_product) and
# ORC/MRC (encode_fused_fixed_count), each threaded and serial (waking the thread
# pool costs more than a small batch).  The Python layer picks one by the method and
# d, so a first batch compiles only its own search.  They must be distinct Python
# functions without function arguments: numba's on-disk cache is keyed by the
# function, so two dispatchers of one function would load each other's machine code,
# and a function passed from Python is typed by its identity, which no cache can key.
@numba.njit(cache=True, error_model="numpy", parallel=True)
def encode_fused(begin, end, seed, key, stream_offset, columns, steps, width_mode, half_width, hybrid, mode,
                 num_candidates, max_candidates, log_max_candidates, index_out, factor_out, sample_out,
                 examined_out, width_out, kl_bits_out, counts_out, status_out):
    """Prepare and encode elements ``begin:end`` of a batch of 1-D targets by the race, in one pass.

    Element ``i`` uses stream ``stream_offset + i`` (uint64), so a batch
    encoded in parts with matching offsets equals one call.

    Outputs are indexed by the element (shape (B,) or (B, d)) and written in
    place: index, factor, sample, candidates examined, width, KL in bits,
    the ORC/MRC candidate count and a status (``STATUS_*``, or
    ``STATUS_PREP + PREP_*``).  The race is skipped where its bound exceeds
    ``log_max_candidates``.  :func:`encode_fused_product` (d > 1) and
    :func:`encode_fused_fixed_count` (ORC/MRC) take the same arguments.
    """
    for block in numba.prange((end - begin + _BLOCK - 1) // _BLOCK):
        # np.int64: prange's index is unsigned, the serial loop's signed; one type, one compiled block.
        _encode_block(_race_row, np.int64(block), begin, end, seed, key, stream_offset, columns, steps, width_mode,
                      half_width, hybrid, mode, num_candidates, max_candidates, log_max_candidates, index_out,
                      factor_out, sample_out, examined_out, width_out, kl_bits_out, counts_out, status_out)


@numba.njit(cache=True, error_model="numpy")
def encode_fused_serial(begin, end, seed, key, stream_offset, columns, steps, width_mode, half_width, hybrid, mode,
                        num_candidates, max_candidates, log_max_candidates, index_out, factor_out, sample_out,
                        examined_out, width_out, kl_bits_out, counts_out, status_out):
    """:func:`encode_fused` on the calling thread."""
    for block in range((end - begin + _BLOCK - 1) // _BLOCK):
        _encode_block(_race_row, block, begin, end, seed, key, stream_offset, columns, steps, width_mode, half_width,
                      hybrid, mode, num_candidates, max_candidates, log_max_candidates, index_out, factor_out,
                      sample_out, examined_out, width_out, kl_bits_out, counts_out, status_out)


@numba.njit(cache=True, error_model="numpy", parallel=True)
def encode_fused_product(begin, end, seed, key, stream_offset, columns, steps, width_mode, half_width, hybrid, mode,
                         num_candidates, max_candidates, log_max_candidates, index_out, factor_out, sample_out,
                         examined_out, width_out, kl_bits_out, counts_out, status_out):
    """:func:`encode_fused` for targets of d > 1 dimensions (products): the race over the packed rows."""
    for block in numba.prange((end - begin + _BLOCK - 1) // _BLOCK):
        _encode_block(_race_packed, np.int64(block), begin, end, seed, key, stream_offset, columns, steps,
                      width_mode, half_width, hybrid, mode, num_candidates, max_candidates, log_max_candidates,
                      index_out, factor_out, sample_out, examined_out, width_out, kl_bits_out, counts_out, status_out)


@numba.njit(cache=True, error_model="numpy")
def encode_fused_product_serial(begin, end, seed, key, stream_offset, columns, steps, width_mode, half_width, hybrid,
                                mode, num_candidates, max_candidates, log_max_candidates, index_out, factor_out,
                                sample_out, examined_out, width_out, kl_bits_out, counts_out, status_out):
    """:func:`encode_fused_product` on the calling thread."""
    for block in range((end - begin + _BLOCK - 1) // _BLOCK):
        _encode_block(_race_packed, block, begin, end, seed, key, stream_offset, columns, steps, width_mode,
                      half_width, hybrid, mode, num_candidates, max_candidates, log_max_candidates, index_out,
                      factor_out, sample_out, examined_out, width_out, kl_bits_out, counts_out, status_out)


@numba.njit(cache=True, error_model="numpy", parallel=True)
def encode_fused_fixed_count(begin, end, seed, key, stream_offset, columns, steps, width_mode, half_width, hybrid,
                             mode, num_candidates, max_candidates, log_max_candidates, index_out, factor_out,
                             sample_out, examined_out, width_out, kl_bits_out, counts_out, status_out):
    """:func:`encode_fused` for ORC and MRC (``mode``), any d.

    ``num_candidates <= 0`` gives each element ``2**ceil(KL_bits + 4)``
    candidates, capped at ``max_candidates``.
    """
    for block in numba.prange((end - begin + _BLOCK - 1) // _BLOCK):
        _encode_block(_fixed_count, np.int64(block), begin, end, seed, key, stream_offset, columns, steps,
                      width_mode, half_width, hybrid, mode, num_candidates, max_candidates, log_max_candidates,
                      index_out, factor_out, sample_out, examined_out, width_out, kl_bits_out, counts_out, status_out)


@numba.njit(cache=True, error_model="numpy")
def encode_fused_fixed_count_serial(begin, end, seed, key, stream_offset, columns, steps, width_mode, half_width,
                                    hybrid, mode, num_candidates, max_candidates, log_max_candidates, index_out,
                                    factor_out, sample_out, examined_out, width_out, kl_bits_out, counts_out,
                                    status_out):
    """:func:`encode_fused_fixed_count` on the calling thread."""
    for block in range((end - begin + _BLOCK - 1) // _BLOCK):
        _encode_block(_fixed_count, block, begin, end, seed, key, stream_offset, columns, steps, width_mode,
                      half_width, hybrid, mode, num_candidates, max_candidates, log_max_candidates, index_out,
                      factor_out, sample_out, examined_out, width_out, kl_bits_out, counts_out, status_out)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _prepare_one(seed, key, derive_key, family, loc, scale, low, high, log_normalizer, prior_family, prior_loc,
                 prior_scale, transform_family, transform_loc, transform_scale, width_mode, width_given, half_width,
                 hybrid):
    """The scalar kernels' preparation: (key, params of shape (1, NUM_FIELDS), bound, kl, prep_status, width)."""
    if derive_key:
        key = hash_counter(DOMAIN_KEY, seed, np.uint64(0), np.uint64(0), np.uint64(0))
    params = np.empty((1, NUM_FIELDS))
    # Family codes as float64, as a batch's columns hold them: one compiled _prepare_row serves both.
    bound, kl, prep_status = prepare_row(np.float64(family), loc, scale, low, high, log_normalizer,
                                         np.float64(prior_family), prior_loc, prior_scale,
                                         np.float64(transform_family), transform_loc, transform_scale,
                                         width_mode, width_given, half_width, hybrid, params[0])
    return key, params, bound, kl, prep_status, int(params[0, F_WIDTH])


# Two scalar kernels, the race's and the fixed-count baselines', so that a first
# hybrid or pfr call compiles neither ORC/MRC nor the d-dimensional race.
@numba.njit(cache=True, error_model="numpy")
def encode_one(seed, key, derive_key, stream, family, loc, scale, low, high, log_normalizer, prior_family,
               prior_loc, prior_scale, transform_family, transform_loc, transform_scale, width_mode, width_given,
               half_width, hybrid, max_candidates, log_max_candidates):
    """One scalar target in one call, by the race (the low-latency path of ``encode_sample``, hybrid and pfr).

    Returns (prep_status, race_status, index, factor, sample, examined, width,
    log_w_max, kl_nats); identical to a one-element batch whose element
    uses stream ``stream`` (uint64).  With
    ``derive_key`` the private key is derived from the seed as
    :func:`rcc.random.private_key` does for ``rng=None``.
    """
    key, params, bound, kl, prep_status, width = _prepare_one(
        seed, key, derive_key, family, loc, scale, low, high, log_normalizer, prior_family, prior_loc, prior_scale,
        transform_family, transform_loc, transform_scale, width_mode, width_given, half_width, hybrid)
    if prep_status != PREP_OK or bound > log_max_candidates:
        return prep_status, STATUS_OK, 0, 0, np.nan, 0, width, bound, kl
    factor = np.zeros(1, dtype=np.int64)
    sample = np.full(1, np.nan)
    n, examined, status = _select(_race_row, seed, key, stream, params, hybrid, bound, RACE, 0, max_candidates,
                                  factor, sample)
    return prep_status, status, n, factor[0], sample[0], examined, width, bound, kl


@numba.njit(cache=True, error_model="numpy")
def encode_one_fixed_count(seed, key, derive_key, stream, family, loc, scale, low, high, log_normalizer,
                           prior_family, prior_loc, prior_scale, transform_family, transform_loc, transform_scale,
                           width_mode, width_given, half_width, hybrid, mode, num_candidates, max_candidates):
    """:func:`encode_one` for ORC and MRC (``mode``) over ``num_candidates`` prior candidates.

    ``num_candidates <= 0`` uses ``2**ceil(KL_bits + 4)``, capped at ``max_candidates``.
    """
    key, params, bound, kl, prep_status, width = _prepare_one(
        seed, key, derive_key, family, loc, scale, low, high, log_normalizer, prior_family, prior_loc, prior_scale,
        transform_family, transform_loc, transform_scale, width_mode, width_given, half_width, hybrid)
    if prep_status != PREP_OK:
        return prep_status, STATUS_OK, 0, 0, np.nan, 0, width, bound, kl
    if num_candidates <= 0:
        num_candidates = np.int64(min(np.exp2(np.ceil(kl / _LOG2 + 4.0)), np.float64(max_candidates)))
    factor = np.zeros(1, dtype=np.int64)
    sample = np.full(1, np.nan)
    n, examined, status = _select(_fixed_count, seed, key, stream, params, hybrid, bound, mode, num_candidates,
                                  max_candidates, factor, sample)
    return prep_status, status, n, factor[0], sample[0], examined, width, bound, kl
