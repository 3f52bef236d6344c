"""Numba kernels of the transformed axis ``z' = M F_c(z)``: inverse CDFs, CDFs, supports, widths.

What both sides of a message compute on the axis of the coding transform
``c`` (:ref:`transform-width-m`): the inverse CDF that turns ``(K + U) / M``
into a sample, the CDF pairs accurate in both tails, a target's transformed
support and the width a Gaussian target fits (:ref:`transform-choosing-width`),
and the factor-code tables of :class:`rcc.MarginalFactorCode`.  The race
(:mod:`rcc.kernels`) builds its candidates with these functions.  Like every
kernel here they are small and pure: floats and arrays in, no exceptions.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = [
    "ndtri_lower",
    "prior_ppf_scaled",
    "log_weight",
    "prior_cdf_pair",
    "transformed_support",
    "gaussian_width_one",
    "gaussian_width_array",
    "factor_table_exact",
    "factor_block_cdf",
]

NORMAL, UNIFORM = 0, 1  # family codes, as in rcc.targets
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
# Above this standardised position erfc(-t / sqrt 2) > 1 for certain, i.e. F_p > 1/2,
# so the decision needs no erfc (measured margin: erfc(-1e-12) = 1 + 1.1e-12).
_SURELY_UPPER = 1e-8


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
    """``F_p^{-1}(z' / M)`` with ``z' = factor + offset`` (:ref:`transform-width-m`).

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


@numba.njit(cache=True, error_model="numpy")
def prior_cdf_pair(x, prior_family, prior_loc, prior_scale):
    """``(F_p(x), 1 - F_p(x))``, each accurate in its own tail."""
    t = (x - prior_loc) / prior_scale
    if prior_family == UNIFORM:
        return min(max(t, 0.0), 1.0), min(max(1.0 - t, 0.0), 1.0)
    return 0.5 * math.erfc(-t * _INV_SQRT2), 0.5 * math.erfc(t * _INV_SQRT2)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _cdf_side(x, prior_family, prior_loc, prior_scale, need_lower, need_upper):
    """``(F_p(x) > 1/2, F_p(x), 1 - F_p(x))`` computing only what is used.

    :func:`transformed_support` reads ``1 - F`` in the upper half and ``F``
    in the lower half, and the other member where ``need_lower`` or
    ``need_upper`` says so; members not computed are NaN.  The values
    computed equal :func:`prior_cdf_pair`'s bit for bit.
    """
    t = (x - prior_loc) / prior_scale
    if prior_family == UNIFORM:
        lower, upper = min(max(t, 0.0), 1.0), min(max(1.0 - t, 0.0), 1.0)
        return lower > 0.5, lower, upper
    lower = np.nan
    if t > _SURELY_UPPER:
        is_upper = True
    else:
        lower = 0.5 * math.erfc(-t * _INV_SQRT2)
        is_upper = lower > 0.5
    if need_lower and math.isnan(lower):
        lower = 0.5 * math.erfc(-t * _INV_SQRT2)
    upper = 0.5 * math.erfc(t * _INV_SQRT2) if is_upper or need_upper else np.nan
    return is_upper, lower, upper


@numba.njit(cache=True, error_model="numpy")
def _support_cdfs(low, high, prior_family, prior_loc, prior_scale):
    """The prior CDF values at the support's ends that :func:`_support_at` reads."""
    upper_low, f_low, fc_low = _cdf_side(low, prior_family, prior_loc, prior_scale, False, False)
    # The length is 1 - F(low) - (1 - F(high)) from an upper-half low end, else F(high) - F(low).
    upper_high, f_high, fc_high = _cdf_side(high, prior_family, prior_loc, prior_scale, not upper_low, upper_low)
    return upper_low, f_low, fc_low, upper_high, f_high, fc_high


@numba.njit(cache=True, error_model="numpy", inline="always")
def _support_at(cdfs, width):
    """``(M F_p(low), M F_p(high), F_p(high) - F_p(low))`` from :func:`_support_cdfs`."""
    upper_low, f_low, fc_low, upper_high, f_high, fc_high = cdfs
    length = fc_low - fc_high if upper_low else f_high - f_low
    start = width - width * fc_low if upper_low else width * f_low
    stop = width - width * fc_high if upper_high else width * f_high
    return start, stop, length


@numba.njit(cache=True, error_model="numpy")
def transformed_support(low, high, width, prior_family, prior_loc, prior_scale):
    """``(M F_p(low), M F_p(high), F_p(high) - F_p(low))`` without cancellation."""
    return _support_at(_support_cdfs(low, high, prior_family, prior_loc, prior_scale), width)


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
    # The encoder measures each target's transformed support as M (F_c(high) - F_c(low)): for a
    # narrow target that difference carries an absolute rounding error of a few 2**-52, and the
    # window edges M F_c(.) one of about M 2**-52.  The margin 2**-48 keeps every target of
    # this std inside its window wherever it sits, so no element needs a narrower width than
    # the receiver derives.
    width = math.floor(min(1.0 / (length + 2.0**-48), 2.0**52) * (1.0 - 1e-12))
    return max(int(width), 1)


@numba.njit(cache=True, error_model="numpy")
def gaussian_width_array(std, half_width, prior_family, prior_scale, out):
    """:func:`gaussian_width_one` over flat arrays of equal length."""
    for i in range(out.shape[0]):
        # float64 family code, as the batch preparation passes it: one compiled gaussian_width_one.
        out[i] = gaussian_width_one(std[i], half_width, np.float64(prior_family[i]), prior_scale[i])



# --- factor-code tables (rcc.entropy.MarginalFactorCode) ---------------------------------
# The decoding factor K of a sample whose marginal is m is coded given the dither u:
# on the transformed axis z' = M F_c(z) the sample's density is m(z) / (M c(z)).  Both
# sides compute these tables with the functions below (no scipy), so they agree bit for bit.


@numba.njit(cache=True, error_model="numpy")
def factor_table_exact(lowest, dither, width, family, loc, scale, low, high, transform_family,
                       transform_loc, transform_scale, out):
    """``P(K = lowest + t | u)`` for ``t = 0 .. M-1`` on each row: the marginal's density on the lattice.

    ``out`` has shape (rows, M).  The density ``m(z) / c(z)`` at
    ``z = F_c^{-1}((K + u) / M)`` is normalised over the ``M`` lattice points
    of ``[0, M)``; each probability is floored at ``2**-40`` so that every
    factor stays codable, then the row is renormalised.
    """
    for r in range(out.shape[0]):
        peak = -np.inf
        for t in range(width):
            k = lowest[r] + t
            z = prior_ppf_scaled(np.float64(k), dither[r], width, transform_family, transform_loc, transform_scale)
            value = log_weight(z, family, loc, scale, low, high, 0.0, transform_family, transform_loc,
                               transform_scale)
            out[r, t] = value
            if value > peak:
                peak = value
        total = 0.0
        for t in range(width):
            weight = math.exp(out[r, t] - peak) if peak > -np.inf else 1.0
            out[r, t] = weight
            total += weight
        floor_total = 0.0
        for t in range(width):
            p = max(out[r, t] / total, 2.0**-40)
            out[r, t] = p
            floor_total += p
        for t in range(width):
            out[r, t] /= floor_total


@numba.njit(cache=True, error_model="numpy")
def factor_block_cdf(edges, width, family, loc, scale, transform_family, transform_loc, transform_scale,
                     lower_out, upper_out):
    """``(F_m(z_e), 1 - F_m(z_e))`` at ``z_e = F_c^{-1}(e / M)`` for each edge ``e`` of the axis ``[0, M]``.

    ``F_m`` is the CDF of the (untruncated) Normal or Uniform marginal; the
    complement keeps precision in the upper tail.
    """
    for i in range(edges.shape[0]):
        e = edges[i]
        if e <= 0.0:
            lower_out[i], upper_out[i] = 0.0, 1.0
        elif e >= width:
            lower_out[i], upper_out[i] = 1.0, 0.0
        else:
            z = prior_ppf_scaled(e, 0.0, width, transform_family, transform_loc, transform_scale)
            lower_out[i], upper_out[i] = prior_cdf_pair(z, family, loc, scale)
