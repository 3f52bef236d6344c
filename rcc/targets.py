"""Target and prior distributions with vectorised parameters.

Targets are what the sender wants the receiver to sample (DESIGN 1); priors
are the shared marginal ``p`` used as the proposal of PFR and for the width-M
CDF transform of hybrid coding (DESIGN 2.6).  Parameters broadcast like
``scipy.stats`` frozen distributions: ``rcc.Normal(means, stds)`` is a batch
of independent 1-D targets.  :class:`Product` reinterprets the last batch axis
as the event (a diagonal, d-dimensional target coded with one index, DESIGN
2.9).

Gaussian targets have unbounded support; the coders truncate them to the
central interval of total tail mass ``tail_mass`` (DESIGN 2.7), i.e. they
sample ``Normal.truncate(tail_mass)`` exactly, whose total-variation distance
to the untruncated Normal is exactly ``tail_mass``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import special

__all__ = [
    "Distribution",
    "Normal",
    "TruncatedNormal",
    "Uniform",
    "Product",
    "NORMAL_FAMILY",
    "UNIFORM_FAMILY",
    "normal_half_width",
]

#: Integer codes of the families understood by the numba kernels.
NORMAL_FAMILY = 0
UNIFORM_FAMILY = 1

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _param(value, name):
    arr = np.asarray(value, dtype=np.float64) if not isinstance(value, np.ndarray) else value
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN")
    return arr


def _finite(arr, name):
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite, got {arr[~np.isfinite(arr)].ravel()[:3]}")
    return arr


def _broadcast(names, *arrays):
    """Broadcast parameters to one shape; each result is a contiguous array of its own."""
    try:
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
        return [a if a.shape == shape and a.flags.c_contiguous else np.broadcast_to(a, shape).copy()
                for a in arrays]
    except ValueError as exc:
        shapes = ", ".join(f"{n}{a.shape}" for n, a in zip(names, arrays))
        raise ValueError(f"parameter shapes do not broadcast: {shapes}") from exc


def _log_ndtr_diff(alpha, beta):
    """log(Phi(beta) - Phi(alpha)) for alpha < beta, accurate in both tails."""
    alpha, beta = np.broadcast_arrays(np.asarray(alpha, float), np.asarray(beta, float))
    upper = alpha > 0  # both in the upper tail: use the symmetric complement
    lo = np.where(upper, -beta, alpha)
    hi = np.where(upper, -alpha, beta)
    log_hi = special.log_ndtr(hi)
    log_lo = special.log_ndtr(lo)
    with np.errstate(divide="ignore"):
        return log_hi + np.log1p(-np.exp(log_lo - log_hi))


@functools.lru_cache(maxsize=64)
def normal_half_width(tail_mass):
    """Half-width, in stds, of a Normal's central interval of total tail mass ``tail_mass``."""
    return math.inf if tail_mass == 0 else float(-special.ndtri(0.5 * tail_mass))


class Distribution:
    """Base class: a batch of independent 1-D distributions.

    Subclasses provide ``batch_shape``, ``cdf``, ``logpdf`` and a kernel
    specification (:meth:`_spec`) of the family, location, scale, support
    and log normaliser in the form the numba kernels read.
    """

    event_shape: tuple = ()

    @property
    def shape(self):
        """Batch shape followed by event shape."""
        return self.batch_shape + self.event_shape

    def truncate(self, tail_mass):
        """The distribution the coders sample given a tail mass (itself by default)."""
        return self

    def tail_mass_of(self, tail_mass):
        """Total-variation distance between ``self`` and ``self.truncate(tail_mass)``."""
        return np.zeros(self.shape)

    def __repr__(self):
        fields = ", ".join(f"{k}={_short(v)}" for k, v in self._params().items())
        return f"{type(self).__name__}({fields})"


def _short(value):
    value = np.asarray(value)
    return repr(float(value)) if value.ndim == 0 else f"array{value.shape}"


class Normal(Distribution):
    """Normal distribution ``N(mean, std**2)`` with broadcast parameters.

    Parameters
    ----------
    mean : array_like
        Finite means.
    std : array_like
        Finite, strictly positive standard deviations.
    """

    family = NORMAL_FAMILY

    def __init__(self, mean, std):
        mean = _finite(_param(mean, "mean"), "mean")
        std = _finite(_param(std, "std"), "std")
        if (std <= 0).any():
            raise ValueError(f"std must be > 0, got {std[std <= 0].ravel()[:3]}")
        self.mean, self.std = _broadcast(("mean", "std"), mean, std)

    batch_shape = property(lambda self: self.mean.shape)

    def _params(self):
        return {"mean": self.mean, "std": self.std}

    def cdf(self, x):
        return special.ndtr((np.asarray(x, float) - self.mean) / self.std)

    def logpdf(self, x):
        t = (np.asarray(x, float) - self.mean) / self.std
        return -0.5 * t * t - np.log(self.std) - _HALF_LOG_2PI

    def ppf(self, p):
        return self.mean + self.std * special.ndtri(p)

    def truncate(self, tail_mass):
        """The central interval of total tail mass ``tail_mass`` (DESIGN 2.7)."""
        if tail_mass == 0:
            return TruncatedNormal(self.mean, self.std, -np.inf, np.inf)
        half_width = normal_half_width(tail_mass)
        return TruncatedNormal(
            self.mean, self.std, self.mean - half_width * self.std, self.mean + half_width * self.std
        )

    def tail_mass_of(self, tail_mass):
        return np.full(self.shape, float(tail_mass))

    def _spec(self, tail_mass):
        # The central interval: bounds mean -/+ h std and normaliser 1 - tail_mass.
        if tail_mass == 0:
            low, high, log_normalizer = -np.inf, np.inf, 0.0
        else:
            half_width = normal_half_width(tail_mass)
            low, high = self.mean - half_width * self.std, self.mean + half_width * self.std
            log_normalizer = math.log1p(-tail_mass)
        return {
            "family": NORMAL_FAMILY, "loc": self.mean, "scale": self.std, "low": low, "high": high,
            "log_normalizer": log_normalizer,
        }


class TruncatedNormal(Distribution):
    """``N(mean, std**2)`` conditioned on ``[low, high]`` (bounds may be infinite).

    Sampled exactly as given: no further truncation is applied.
    """

    family = NORMAL_FAMILY

    def __init__(self, mean, std, low, high):
        mean = _finite(_param(mean, "mean"), "mean")
        std = _finite(_param(std, "std"), "std")
        low = _param(low, "low")
        high = _param(high, "high")
        if (std <= 0).any():
            raise ValueError(f"std must be > 0, got {std[std <= 0].ravel()[:3]}")
        self.mean, self.std, self.low, self.high = _broadcast(
            ("mean", "std", "low", "high"), mean, std, low, high
        )
        if (self.low >= self.high).any():
            raise ValueError("low must be < high for every element")
        if np.isposinf(self.low).any() or np.isneginf(self.high).any():
            raise ValueError("low must not be +inf and high must not be -inf")
        self.log_normalizer = _log_ndtr_diff(
            (self.low - self.mean) / self.std, (self.high - self.mean) / self.std
        )
        if not np.isfinite(self.log_normalizer).all():
            raise ValueError(
                "the interval [low, high] carries no probability mass under N(mean, std) in "
                "double precision; move the bounds towards the mean"
            )

    batch_shape = property(lambda self: self.mean.shape)

    def _params(self):
        return {"mean": self.mean, "std": self.std, "low": self.low, "high": self.high}

    def _scipy(self):
        from scipy import stats  # imported on use: scipy.stats costs ~0.5 s at import

        return stats.truncnorm(
            (self.low - self.mean) / self.std, (self.high - self.mean) / self.std,
            loc=self.mean, scale=self.std,
        )

    def cdf(self, x):
        return self._scipy().cdf(x)

    def ppf(self, p):
        return self._scipy().ppf(p)

    def logpdf(self, x):
        x = np.asarray(x, float)
        t = (x - self.mean) / self.std
        inside = (x >= self.low) & (x <= self.high)
        return np.where(inside, -0.5 * t * t - np.log(self.std) - _HALF_LOG_2PI - self.log_normalizer, -np.inf)

    def _spec(self, tail_mass):
        return {
            "family": NORMAL_FAMILY, "loc": self.mean, "scale": self.std, "low": self.low, "high": self.high,
            "log_normalizer": self.log_normalizer,
        }


class Uniform(Distribution):
    """Uniform distribution on ``[low, high)`` with broadcast parameters."""

    family = UNIFORM_FAMILY

    def __init__(self, low, high):
        low = _finite(_param(low, "low"), "low")
        high = _finite(_param(high, "high"), "high")
        self.low, self.high = _broadcast(("low", "high"), low, high)
        if (self.low >= self.high).any():
            raise ValueError("low must be < high for every element")

    batch_shape = property(lambda self: self.low.shape)

    def _params(self):
        return {"low": self.low, "high": self.high}

    def cdf(self, x):
        return np.clip((np.asarray(x, float) - self.low) / (self.high - self.low), 0.0, 1.0)

    def ppf(self, p):
        return self.low + (self.high - self.low) * np.asarray(p, float)

    def logpdf(self, x):
        x = np.asarray(x, float)
        inside = (x >= self.low) & (x < self.high)
        return np.where(inside, -np.log(self.high - self.low), -np.inf)

    def _spec(self, tail_mass):
        width = self.high - self.low
        return {
            "family": UNIFORM_FAMILY,
            "loc": 0.5 * (self.low + self.high), "scale": width, "low": self.low, "high": self.high,
            "log_normalizer": np.log(width),
        }


class Product(Distribution):
    """A diagonal d-dimensional target: the last axis of ``base`` is the event.

    ``Product(Normal(means, stds))`` with parameters of shape ``(B, d)`` is a
    batch of ``B`` independent d-dimensional targets, each coded with one
    index and ``d`` decoding factors (DESIGN 2.9).
    """

    def __init__(self, base):
        if not isinstance(base, (Normal, TruncatedNormal, Uniform)):
            raise TypeError(f"base must be a Normal, TruncatedNormal or Uniform, got {type(base).__name__}")
        if base.event_shape or len(base.batch_shape) < 1:
            raise ValueError("base must have at least one batch axis to become the event axis")
        self.base = base

    batch_shape = property(lambda self: self.base.batch_shape[:-1])
    event_shape = property(lambda self: self.base.batch_shape[-1:])

    def _params(self):
        return self.base._params()

    def cdf(self, x):
        """Per-dimension marginal CDFs (the coordinates are independent)."""
        return self.base.cdf(x)

    def logpdf(self, x):
        return self.base.logpdf(x).sum(axis=-1)

    def truncate(self, tail_mass):
        return Product(self.base.truncate(tail_mass))

    def tail_mass_of(self, tail_mass):
        # TV of a product of truncations: 1 - prod(1 - eps_j) per element.
        per_dim = self.base.tail_mass_of(tail_mass)
        return 1.0 - np.prod(1.0 - per_dim, axis=-1)

    def _spec(self, tail_mass):
        return self.base._spec(tail_mass)
