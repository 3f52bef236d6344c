"""Target and prior distributions with vectorised parameters.

Targets are what the sender wants the receiver to sample; priors are the
shared marginal ``p`` used as the proposal of PFR and for the width-M CDF
transform of hybrid coding (:ref:`transform-width-m`).  Parameters broadcast like ``scipy.stats`` frozen
distributions: ``rcc.Normal(means, stds)`` (or ``rcc.Normal(loc=means,
scale=stds)``) is a batch of independent 1-D targets.  :class:`Product`
reinterprets the last batch axis as the event (a diagonal, d-dimensional
target coded with one index, :ref:`blocks-product`).

Every distribution has ``cdf``, ``logpdf``, ``pdf`` and ``rvs(size, rng)``, and
:func:`rcc.from_scipy` converts frozen ``scipy.stats`` ``norm``, ``truncnorm``,
``uniform`` and ``laplace`` distributions, which the coders also accept
directly as targets and priors.

Gaussian targets have unbounded support; the coders truncate them to the
central interval of total tail mass ``tail_mass`` (:ref:`truncation-central`),
i.e. they sample ``Normal.truncate(tail_mass)``
exactly, whose total-variation distance to the untruncated Normal is exactly
``tail_mass``.
"""

from __future__ import annotations

import abc
import functools
import math
import numbers
import operator
from typing import Any, cast

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

# scipy.stats is imported inside the functions that need it: importing it costs
# more than the rest of rcc.targets together.

__all__ = [
    "Distribution",
    "Normal",
    "TruncatedNormal",
    "Uniform",
    "Product",
    "NORMAL_FAMILY",
    "UNIFORM_FAMILY",
    "normal_half_width",
    "DEFAULT_TAIL_MASS",
]

#: Default total tail mass removed from Gaussian targets (and the ready-made general targets).
DEFAULT_TAIL_MASS = 1e-4

#: Integer codes of the families understood by the numba kernels.
NORMAL_FAMILY = 0
UNIFORM_FAMILY = 1

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _param(value, name) -> np.ndarray:
    if isinstance(value, np.ndarray):
        arr = value
    else:
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be real numbers, got {value!r}"[:200]) from None
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN")
    return arr


def _finite(arr, name) -> np.ndarray:
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


def _alias(primary, alias, primary_name, alias_name, owner):
    """One of two names for a parameter (``mean`` or scipy's ``loc``): exactly one must be given."""
    if primary is not None and alias is not None:
        raise TypeError(f"{owner}: give {primary_name} or {alias_name}, not both")
    if primary is None and alias is None:
        raise TypeError(f"{owner}: missing parameter {primary_name} (or {alias_name})")
    return (primary, primary_name) if primary is not None else (alias, alias_name)


def _check_size(size, batch_shape):
    """The output shape of ``rvs``: ``size`` (as scipy reads it), or the batch shape."""
    if size is None:
        return tuple(batch_shape)
    if isinstance(size, (numbers.Integral, np.integer)) and not isinstance(size, bool):
        size = (int(size),)
    try:
        shape = tuple(operator.index(n) for n in size)
    except TypeError:
        raise TypeError(f"size must be None, an int or a tuple of ints, got {size!r}") from None
    if any(n < 0 for n in shape):
        raise ValueError(f"size must not be negative, got {shape}")
    try:
        broadcast = np.broadcast_shapes(tuple(batch_shape), shape)
    except ValueError:
        broadcast = None
    if broadcast != shape:
        raise ValueError(f"size {shape} does not hold the parameters' shape {tuple(batch_shape)}; "
                         "use a size whose trailing axes broadcast with it")
    return shape


@functools.lru_cache(maxsize=64)
def normal_half_width(tail_mass: float) -> float:
    """Half-width, in stds, of a Normal's central interval of total tail mass ``tail_mass``."""
    return math.inf if tail_mass == 0 else float(-special.ndtri(0.5 * tail_mass))


class Distribution(abc.ABC):
    """Base class: a batch of independent 1-D distributions.

    Subclasses provide ``batch_shape``, ``cdf``, ``logpdf`` and a kernel
    specification (:meth:`_spec`) of the family, location, scale, support
    and log normaliser in the form the numba kernels read.
    """

    event_shape: tuple = ()

    @property
    @abc.abstractmethod
    def batch_shape(self) -> tuple:
        """Shape of the batch of independent distributions."""

    @abc.abstractmethod
    def cdf(self, x) -> np.ndarray:
        """Cumulative distribution function at ``x`` (per dimension for products)."""

    @abc.abstractmethod
    def logpdf(self, x) -> np.ndarray:
        """Log density at ``x``."""

    @property
    def shape(self) -> tuple:
        """Batch shape followed by event shape."""
        return self.batch_shape + self.event_shape

    def pdf(self, x) -> np.ndarray:
        """Density at ``x`` (``exp(logpdf(x))``)."""
        return np.exp(self.logpdf(x))

    def rvs(self, size: int | tuple[int, ...] | None = None,
            rng: int | np.random.Generator | None = None) -> np.ndarray:
        """Independent samples, drawn with the private generator ``rng``.

        These are samples of the distribution itself, for comparisons and
        tests; the coders sample ``self.truncate(tail_mass)``.

        Parameters
        ----------
        size : None, int or tuple of int
            Output shape, as in ``scipy.stats``: ``None`` gives one sample per
            batch element; otherwise the parameters broadcast to ``size``.
        rng : None, int or numpy.random.Generator
            Source of randomness, passed to :func:`numpy.random.default_rng`
            (Scientific Python SPEC 7); ``None`` draws fresh entropy.

        Returns
        -------
        ndarray of float64
            Shape ``size`` (``batch_shape`` if ``size`` is None), followed by
            the event shape.
        """
        shape = _check_size(size, self.batch_shape)
        return self._rvs(shape, np.random.default_rng(rng))

    @abc.abstractmethod
    def _rvs(self, shape, rng) -> np.ndarray:
        """Samples of shape ``shape + event_shape`` from the validated generator ``rng``."""

    @abc.abstractmethod
    def _params(self) -> dict:
        """The parameters by name, for ``repr``."""

    def truncate(self, tail_mass: float) -> Distribution:
        """The distribution the coders sample given a tail mass (itself by default)."""
        return self

    def tail_mass_of(self, tail_mass: float) -> np.ndarray:
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
        Finite means (``loc`` is accepted instead, as in ``scipy.stats.norm``).
    std : array_like
        Finite, strictly positive standard deviations (or ``scale``).

    Examples
    --------
    >>> import rcc
    >>> rcc.Normal(0.3, 0.01)
    Normal(mean=0.3, std=0.01)
    >>> rcc.Normal(loc=0.3, scale=0.01).std
    array(0.01)
    """

    family = NORMAL_FAMILY

    def __init__(self, mean: ArrayLike | None = None, std: ArrayLike | None = None, *,
                 loc: ArrayLike | None = None, scale: ArrayLike | None = None) -> None:
        mean, mean_name = _alias(mean, loc, "mean", "loc", "Normal")
        std, std_name = _alias(std, scale, "std", "scale", "Normal")
        mean = _finite(_param(mean, mean_name), mean_name)
        std = _finite(_param(std, std_name), std_name)
        if (std <= 0).any():
            raise ValueError(f"{std_name} must be > 0, got {std[std <= 0].ravel()[:3]}")
        self.mean, self.std = _broadcast((mean_name, std_name), mean, std)

    batch_shape = property(lambda self: self.mean.shape)
    loc = property(lambda self: self.mean, doc="The means (scipy's name).")
    scale = property(lambda self: self.std, doc="The standard deviations (scipy's name).")

    def _rvs(self, shape, rng):
        return self.mean + self.std * rng.standard_normal(shape)

    def _params(self):
        return {"mean": self.mean, "std": self.std}

    def cdf(self, x: ArrayLike) -> np.ndarray:
        return special.ndtr((np.asarray(x, float) - self.mean) / self.std)

    def logpdf(self, x: ArrayLike) -> np.ndarray:
        t = (np.asarray(x, float) - self.mean) / self.std
        return -0.5 * t * t - np.log(self.std) - _HALF_LOG_2PI

    def ppf(self, p: ArrayLike) -> np.ndarray:
        return self.mean + self.std * special.ndtri(p)

    def truncate(self, tail_mass: float) -> TruncatedNormal:
        """The central interval of total tail mass ``tail_mass`` (:ref:`truncation-central`)."""
        if tail_mass == 0:
            return TruncatedNormal(self.mean, self.std, -np.inf, np.inf)
        half_width = normal_half_width(tail_mass)
        return TruncatedNormal(
            self.mean, self.std, self.mean - half_width * self.std, self.mean + half_width * self.std
        )

    def tail_mass_of(self, tail_mass: float) -> np.ndarray:
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

    Parameters
    ----------
    mean : array_like
        Finite means of the untruncated Normal (or ``loc``).
    std : array_like
        Its finite, strictly positive standard deviations (or ``scale``).
    low, high : array_like
        Bounds on the original axis, ``low < high``; ``-inf`` and ``inf`` are
        allowed.  (``scipy.stats.truncnorm`` takes standardised bounds
        ``a = (low - loc) / scale`` instead; :func:`from_scipy` converts.)
    """

    family = NORMAL_FAMILY

    def __init__(self, mean: ArrayLike | None = None, std: ArrayLike | None = None, low: ArrayLike | None = None,
                 high: ArrayLike | None = None, *, loc: ArrayLike | None = None,
                 scale: ArrayLike | None = None) -> None:
        mean, mean_name = _alias(mean, loc, "mean", "loc", "TruncatedNormal")
        std, std_name = _alias(std, scale, "std", "scale", "TruncatedNormal")
        if low is None or high is None:
            raise TypeError("TruncatedNormal: missing parameter low or high (use -inf / inf for no bound)")
        mean = _finite(_param(mean, mean_name), mean_name)
        std = _finite(_param(std, std_name), std_name)
        low = _param(low, "low")
        high = _param(high, "high")
        if (std <= 0).any():
            raise ValueError(f"{std_name} must be > 0, got {std[std <= 0].ravel()[:3]}")
        self.mean, self.std, self.low, self.high = _broadcast(
            (mean_name, std_name, "low", "high"), mean, std, low, high
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
    loc = property(lambda self: self.mean, doc="The means of the untruncated Normal (scipy's name).")
    scale = property(lambda self: self.std, doc="Its standard deviations (scipy's name).")

    def _params(self):
        return {"mean": self.mean, "std": self.std, "low": self.low, "high": self.high}

    def _rvs(self, shape, rng):
        # Inverse-CDF sampling, accurate in both tails (scipy's truncnorm ppf).
        return self.ppf(rng.random(shape))

    def _scipy(self):
        from scipy import stats  # imported on use: scipy.stats costs ~0.5 s at import

        return stats.truncnorm(
            (self.low - self.mean) / self.std, (self.high - self.mean) / self.std,
            loc=self.mean, scale=self.std,
        )

    def cdf(self, x: ArrayLike) -> np.ndarray:
        return self._scipy().cdf(x)

    def ppf(self, p: ArrayLike) -> np.ndarray:
        return self._scipy().ppf(p)

    def logpdf(self, x: ArrayLike) -> np.ndarray:
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
    """Uniform distribution on ``[low, high)`` with broadcast parameters.

    Parameters
    ----------
    low, high : array_like
        Finite bounds, ``low < high``.
    loc, scale : array_like, optional
        Instead of ``low`` and ``high``, scipy's parametrisation
        (``scipy.stats.uniform(loc, scale)``): ``low = loc``,
        ``high = loc + scale``.

    Examples
    --------
    >>> import rcc
    >>> rcc.Uniform(loc=-1.0, scale=2.0)
    Uniform(low=-1.0, high=1.0)
    """

    family = UNIFORM_FAMILY

    def __init__(self, low: ArrayLike | None = None, high: ArrayLike | None = None, *,
                 loc: ArrayLike | None = None, scale: ArrayLike | None = None) -> None:
        if loc is not None or scale is not None:
            if low is not None or high is not None:
                raise TypeError("Uniform: give low and high, or loc and scale, not both")
            if loc is None or scale is None:
                raise TypeError("Uniform: loc and scale go together (low = loc, high = loc + scale)")
            loc = _finite(_param(loc, "loc"), "loc")
            scale = _finite(_param(scale, "scale"), "scale")
            if (scale <= 0).any():
                raise ValueError(f"scale must be > 0, got {scale[scale <= 0].ravel()[:3]}")
            low, high = loc, loc + scale
        elif low is None or high is None:
            raise TypeError("Uniform: missing parameter low or high (or give loc and scale)")
        low = _finite(_param(low, "low"), "low")
        high = _finite(_param(high, "high"), "high")
        self.low, self.high = _broadcast(("low", "high"), low, high)
        if (self.low >= self.high).any():
            raise ValueError("low must be < high for every element")

    batch_shape = property(lambda self: self.low.shape)
    loc = property(lambda self: self.low, doc="The lower bounds (scipy's name).")
    scale = property(lambda self: self.high - self.low, doc="The widths ``high - low`` (scipy's name).")

    def _rvs(self, shape, rng):
        return self.low + (self.high - self.low) * rng.random(shape)

    def _params(self):
        return {"low": self.low, "high": self.high}

    def cdf(self, x: ArrayLike) -> np.ndarray:
        return np.clip((np.asarray(x, float) - self.low) / (self.high - self.low), 0.0, 1.0)

    def ppf(self, p: ArrayLike) -> np.ndarray:
        return self.low + (self.high - self.low) * np.asarray(p, float)

    def logpdf(self, x: ArrayLike) -> np.ndarray:
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


def _prior_arrays(prior, shape):
    """Family code, location and scale of the prior (or transform) broadcast to ``shape`` (read-only views)."""
    try:
        if isinstance(prior, Normal):
            loc, scale = np.broadcast_to(prior.mean, shape), np.broadcast_to(prior.std, shape)
            family = NORMAL_FAMILY
        else:
            loc = np.broadcast_to(prior.low, shape)
            scale = np.broadcast_to(prior.high - prior.low, shape)
            family = UNIFORM_FAMILY
    except ValueError as exc:
        raise ValueError(_prior_shape_message(prior.batch_shape, shape)) from exc
    return np.broadcast_to(np.int64(family), shape), loc, scale


def _prior_shape_message(prior_shape, shape):
    """The error for a prior whose parameters do not broadcast to the target's batch shape."""
    return (f"prior has parameters of shape {tuple(prior_shape)}, which do not broadcast to the target's shape "
            f"{tuple(shape)}: the prior describes each element of the target, so give it scalar parameters or "
            f"parameters of a shape that broadcasts to {tuple(shape)} (for a target of shape () and a prior of "
            f"shape (1,), pass the target with shape (1,) or the prior with scalar parameters)")


class Product(Distribution):
    """A diagonal d-dimensional target: the last axis of ``base`` is the event.

    ``Product(Normal(means, stds))`` with parameters of shape ``(B, d)`` is a
    batch of ``B`` independent d-dimensional targets, each coded with one
    index and ``d`` decoding factors (:ref:`blocks-product`).
    """

    def __init__(self, base: Normal | TruncatedNormal | Uniform) -> None:
        if not isinstance(base, (Normal, TruncatedNormal, Uniform)):
            raise TypeError(f"base must be a Normal, TruncatedNormal or Uniform, got {type(base).__name__}")
        if base.event_shape or len(base.batch_shape) < 1:
            raise ValueError("base must have at least one batch axis to become the event axis")
        self.base = base

    batch_shape = property(lambda self: self.base.batch_shape[:-1])
    event_shape = property(lambda self: self.base.batch_shape[-1:])

    def _params(self):
        return self.base._params()

    def cdf(self, x: ArrayLike) -> np.ndarray:
        """Per-dimension marginal CDFs (the coordinates are independent)."""
        return self.base.cdf(x)

    def logpdf(self, x: ArrayLike) -> np.ndarray:
        return self.base.logpdf(x).sum(axis=-1)

    def _rvs(self, shape, rng):
        # ``size`` is the batch part of the shape; the event axis is appended.
        return self.base._rvs(shape + self.event_shape, rng)

    def truncate(self, tail_mass: float) -> Product:
        # The truncation of a Normal, TruncatedNormal or Uniform is one of these again.
        return Product(cast("Normal | TruncatedNormal | Uniform", self.base.truncate(tail_mass)))

    def tail_mass_of(self, tail_mass: float) -> np.ndarray:
        # TV of a product of truncations: 1 - prod(1 - eps_j) per element.
        per_dim = self.base.tail_mass_of(tail_mass)
        return 1.0 - np.prod(1.0 - per_dim, axis=-1)

    def _spec(self, tail_mass):
        return self.base._spec(tail_mass)


# --------------------------------------------------------------------------- scipy.stats
