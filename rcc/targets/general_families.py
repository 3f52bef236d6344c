"""Ready-made general targets with stated certificates: truncated Laplace, two-component mixture, scaled Beta.

Each is a :class:`rcc.GeneralTarget` whose log density is one compiled
function of its parameter row, so all targets of a family share one machine
code, and whose certificate (mode, Lipschitz or concavity bound) is derived
from its parameters in closed form.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numba
import numpy as np
from numpy.typing import ArrayLike
from scipy import special

from .distributions import DEFAULT_TAIL_MASS
from .general import _HALF_LOG_2PI, GeneralTarget, _finite_array, _real_array

__all__ = ["Laplace", "GaussianMixture", "ScaledBeta"]


def _check_tail_mass(tail_mass):
    if isinstance(tail_mass, (bool, np.bool_)) or not isinstance(tail_mass, numbers.Real):
        raise TypeError(f"tail_mass must be a float in (0, 1), got {tail_mass!r}")
    tail_mass = float(tail_mass)
    if not 0.0 < tail_mass < 1.0:
        raise ValueError(f"tail_mass must be in (0, 1) (the support must be bounded), got {tail_mass}")
    return tail_mass


@numba.njit(cache=True)  # compiled for LOGPDF_SIGNATURE on first use
def _laplace_logpdf(z, params):
    """params = (loc, scale, log normaliser)."""
    return -abs(z - params[0]) / params[1] + params[2]


class Laplace(GeneralTarget):
    """Laplace(loc, scale) truncated to its central interval of total tail mass ``tail_mass``.

    Support ``loc -/+ scale * log(1 / tail_mass)``.  Certified by its mode
    ``loc`` (log-concave) and the Lipschitz constant ``1 / scale``.
    """

    def __init__(self, loc: ArrayLike, scale: ArrayLike, *, tail_mass: float = DEFAULT_TAIL_MASS) -> None:
        loc = _finite_array(loc, "loc")
        scale = _finite_array(scale, "scale")
        if (scale <= 0).any():
            raise ValueError(f"scale must be > 0, got {scale[scale <= 0].ravel()[:3]}")
        eps = _check_tail_mass(tail_mass)
        loc, scale = np.broadcast_arrays(loc, scale)
        half = scale * math.log(1.0 / eps)
        log_norm = -np.log(2.0 * scale) - math.log1p(-eps)
        self.loc, self.scale = loc, scale
        super().__init__(_laplace_logpdf, loc - half, loc + half, np.stack([loc, scale, log_norm], axis=-1),
                         mode=loc, lipschitz=1.0 / scale, tail_mass=np.full(loc.shape, eps), name="Laplace")

    def _closed_form_log_normalizer(self):
        # params carry -log(2 scale (1 - tail_mass)), the exact log mass of exp(-|z - loc| / scale) on the support.
        return np.zeros(self.batch_shape)

    def cdf(self, x: ArrayLike) -> Any:
        """Closed-form CDF of the truncated Laplace."""
        x = np.clip(_real_array(x, "x"), self.low, self.high)
        t = (x - self.loc) / self.scale
        full = np.where(t < 0, 0.5 * np.exp(np.minimum(t, 0.0)), 1.0 - 0.5 * np.exp(-np.maximum(t, 0.0)))
        eps = self.tail_mass
        out = np.clip((full - 0.5 * eps) / (1.0 - eps), 0.0, 1.0)
        return out if out.ndim else float(out)


@numba.njit(cache=True)  # compiled for LOGPDF_SIGNATURE on first use
def _mixture_logpdf(z, params):
    """params = (log w1, m1, s1, log w2, m2, s2, log normaliser): log-sum-exp of two Gaussians."""
    t1 = (z - params[1]) / params[2]
    t2 = (z - params[4]) / params[5]
    a = params[0] - math.log(params[2]) - 0.5 * t1 * t1
    b = params[3] - math.log(params[5]) - 0.5 * t2 * t2
    top = max(a, b)
    return top + math.log(math.exp(a - top) + math.exp(b - top)) + params[6]


class GaussianMixture(GeneralTarget):
    """``weight N(mean1, std1^2) + (1 - weight) N(mean2, std2^2)``, truncated.

    The support ``[low, high]`` covers the central interval of tail mass
    ``tail_mass`` of each component, so the truncation removes at most
    ``tail_mass`` (its exact value is :attr:`tail_mass`).  Certified by the
    concavity bound ``1 / min(std1, std2)^2`` (``-(log q)''`` is the
    responsibility-weighted mean of ``1 / std_k^2`` minus the variance of the
    components' scores) and the Lipschitz constant
    ``max_k max_z |z - mean_k| / std_k^2`` (the score of a mixture is a convex
    combination of the components' scores).
    """

    def __init__(self, weight: ArrayLike, mean1: ArrayLike, std1: ArrayLike, mean2: ArrayLike, std2: ArrayLike, *,
                 tail_mass: float = DEFAULT_TAIL_MASS) -> None:
        weight = _finite_array(weight, "weight")
        if ((weight <= 0) | (weight >= 1)).any():
            raise ValueError("weight must lie in (0, 1)")
        mean1, mean2 = _finite_array(mean1, "mean1"), _finite_array(mean2, "mean2")
        std1, std2 = _finite_array(std1, "std1"), _finite_array(std2, "std2")
        if (std1 <= 0).any() or (std2 <= 0).any():
            raise ValueError("std1 and std2 must be > 0")
        eps = _check_tail_mass(tail_mass)
        weight, mean1, std1, mean2, std2 = np.broadcast_arrays(weight, mean1, std1, mean2, std2)
        z = -special.ndtri(0.5 * eps)
        low = np.minimum(mean1 - z * std1, mean2 - z * std2)
        high = np.maximum(mean1 + z * std1, mean2 + z * std2)
        mass = weight * (special.ndtr((high - mean1) / std1) - special.ndtr((low - mean1) / std1)) + (1 - weight) * (
            special.ndtr((high - mean2) / std2) - special.ndtr((low - mean2) / std2))
        log_norm = -_HALF_LOG_2PI - np.log(mass)
        lipschitz = np.maximum(np.maximum(np.abs(low - mean1), np.abs(high - mean1)) / std1**2,
                               np.maximum(np.abs(low - mean2), np.abs(high - mean2)) / std2**2)
        self.weight, self.mean1, self.std1, self.mean2, self.std2 = weight, mean1, std1, mean2, std2
        params = np.stack([np.log(weight), mean1, std1, np.log1p(-weight), mean2, std2, log_norm], axis=-1)
        # -(log q)'' = sum_k r_k / s_k^2 - Var_r(score) <= 1 / min(s_k)^2 (r: component responsibilities).
        concavity = 1.0 / np.minimum(std1, std2) ** 2
        super().__init__(_mixture_logpdf, low, high, params, lipschitz=lipschitz, concavity=concavity,
                         tail_mass=1.0 - mass,
                         name="GaussianMixture")

    def _closed_form_log_normalizer(self):
        # params carry -log(sqrt(2 pi) mass), mass the mixture's probability of [low, high] (ndtr, closed form).
        return np.zeros(self.batch_shape)

    def cdf(self, x: ArrayLike) -> Any:
        """Closed-form CDF of the truncated mixture."""
        x = np.clip(_real_array(x, "x"), self.low, self.high)

        def full(v):
            return self.weight * special.ndtr((v - self.mean1) / self.std1) + (1 - self.weight) * special.ndtr(
                (v - self.mean2) / self.std2)

        out = np.clip((full(x) - full(self.low)) / (full(self.high) - full(self.low)), 0.0, 1.0)
        return out if out.ndim else float(out)


@numba.njit(cache=True)  # compiled for LOGPDF_SIGNATURE on first use
def _beta_logpdf(z, params):
    """params = (a, b, low, high, log normaliser); Beta(a, b) rescaled to [low, high]."""
    t = (z - params[2]) / (params[3] - params[2])
    value = params[4]
    if params[0] != 1.0:
        value += (params[0] - 1.0) * math.log(t) if t > 0.0 else -np.inf
    if params[1] != 1.0:
        value += (params[1] - 1.0) * math.log1p(-t) if t < 1.0 else -np.inf
    return value


class ScaledBeta(GeneralTarget):
    """Beta(a, b) rescaled to ``[low, high]``, with ``a, b >= 1`` (log-concave, bounded density).

    No truncation.  Certified by its mode ``low + (high - low) (a - 1) / (a + b - 2)``; states
    ``log_concavity = ((a - 1)**(1/3) + (b - 1)**(1/3))**3 / (high - low)**2``, the minimum over the
    support of ``-d^2 log q / dz^2 = ((a - 1) / t**2 + (b - 1) / (1 - t)**2) / (high - low)**2``.
    """

    def __init__(self, a: ArrayLike, b: ArrayLike, low: ArrayLike = 0.0, high: ArrayLike = 1.0) -> None:
        a, b = _finite_array(a, "a"), _finite_array(b, "b")
        if (a < 1).any() or (b < 1).any():
            raise ValueError("a and b must be >= 1 (a bounded, log-concave density)")
        low, high = _finite_array(low, "low"), _finite_array(high, "high")
        a, b, low, high = np.broadcast_arrays(a, b, low, high)
        if (low >= high).any():
            raise ValueError("low must be < high for every element")
        with np.errstate(invalid="ignore", divide="ignore"):
            mode_t = np.where(a + b > 2.0, (a - 1.0) / np.where(a + b > 2.0, a + b - 2.0, 1.0), 0.0)
        log_norm = -special.betaln(a, b) - np.log(high - low)
        log_concavity = (np.cbrt(a - 1.0) + np.cbrt(b - 1.0)) ** 3 / (high - low) ** 2
        self.a, self.b = a, b
        super().__init__(_beta_logpdf, low, high, np.stack([a, b, low, high, log_norm], axis=-1),
                         mode=low + (high - low) * mode_t, log_concavity=log_concavity, name="ScaledBeta")

    def _closed_form_log_normalizer(self):
        # params carry -log B(a, b) - log(high - low), the Beta density's exact normaliser on [low, high].
        return np.zeros(self.batch_shape)

    def cdf(self, x: ArrayLike) -> Any:
        """Closed-form CDF (regularised incomplete beta function)."""
        x = _real_array(x, "x")
        t = np.clip((x - self.low) / (self.high - self.low), 0.0, 1.0)
        out = special.betainc(self.a, self.b, t)
        return out if out.ndim else float(out)
