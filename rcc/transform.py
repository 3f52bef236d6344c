"""The coding transform of hybrid coding and the width it implies for Gaussian targets.

Hybrid candidates are built on the axis ``z' = M F_c(z)`` (:ref:`transform-width-m`),
``c`` the coding transform: by default a Normal prior's copy
``DEFAULT_TRANSFORM_SCALE`` times wider (:func:`coding_transform`).
:func:`gaussian_width` is the width that every Gaussian target of a given std
fits, which the receiver can recompute.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from . import kernels
from .checks import _STANDARD_NORMAL, _check_prior, _check_tail_mass, _prior_arrays, _read_only, _scalar_or_array
from .encoded import DEFAULT_TAIL_MASS, DEFAULT_TRANSFORM_SCALE
from .targets import Normal, Uniform, normal_half_width

#: The largest prior std whose default coding transform has a finite std.
_LARGEST_PRIOR_STD = float(np.finfo(np.float64).max) / DEFAULT_TRANSFORM_SCALE

__all__ = ["coding_transform", "gaussian_width"]

_STANDARD_TRANSFORM = Normal(0.0, DEFAULT_TRANSFORM_SCALE * 1.0)


_LAST_DEFAULT_TRANSFORM = [(_STANDARD_NORMAL, _STANDARD_TRANSFORM)]


def coding_transform(prior: Normal | Uniform | Any | None = None,
                     transform: Normal | Uniform | str | None = None) -> Normal | Uniform:
    """The coding transform ``c`` through whose CDF hybrid candidates are built.

    Hybrid coding places its candidates on the transformed axis
    ``z' = M F_c(z)``.  Building that axis through the prior itself
    (``transform="prior"``, Theis & Yosri 2022) makes a target far in the
    prior's tail fill a small part of its window, so its race examines about
    ``exp(mu^2 / 2)`` more candidates.  A transform wider than the prior keeps
    the cost nearly flat; the prior still describes the samples' marginal, so
    the KL and the factor code (:class:`rcc.MarginalFactorCode`) use it.

    Parameters
    ----------
    prior : rcc.Normal or rcc.Uniform, optional
        The shared prior, ``Normal(0, 1)`` by default.
    transform : None, "prior", rcc.Normal or rcc.Uniform
        ``None`` (default): ``Normal(prior.mean, DEFAULT_TRANSFORM_SCALE * prior.std)``
        for a Normal prior, and the prior itself for a Uniform prior (whose
        targets lie inside its support, which a uniform transform already
        covers evenly).  ``"prior"``: the prior itself.  A distribution: that
        transform (parameters broadcast against the prior's); both sides must
        use the same.

    Returns
    -------
    rcc.Normal or rcc.Uniform

    Examples
    --------
    >>> import rcc
    >>> rcc.coding_transform(rcc.Normal(0.0, 1.0))
    Normal(mean=0.0, std=8.0)
    """
    prior = _check_prior(prior)
    if transform is None:
        if prior is _STANDARD_NORMAL:
            return _STANDARD_TRANSFORM  # built once: constructing a Normal is most of a scalar call
        if isinstance(prior, Normal):
            # Distributions are immutable: the last prior's transform is reused (one entry, by identity).
            last_prior, last_transform = _LAST_DEFAULT_TRANSFORM[0]
            if last_prior is prior:
                return last_transform
            std = np.asarray(prior.std)
            if np.any(std > _LARGEST_PRIOR_STD):
                # The default transform is DEFAULT_TRANSFORM_SCALE times wider than the prior; its
                # std must stay a finite float.
                raise ValueError(
                    f"prior.std must be at most {_LARGEST_PRIOR_STD:.3g} for the default coding transform (which is "
                    f"{DEFAULT_TRANSFORM_SCALE:g} times wider), got {float(np.max(std)):.3g}; rescale the target and "
                    "the prior by a common factor, or pass transform='prior'")
            transform = Normal(prior.mean, DEFAULT_TRANSFORM_SCALE * std)
            _LAST_DEFAULT_TRANSFORM[0] = (prior, transform)
            return transform
        return prior
    if isinstance(transform, str):
        if transform == "prior":
            return prior
        raise ValueError(f"transform must be None, 'prior', an rcc.Normal or an rcc.Uniform, got {transform!r}")
    if not isinstance(transform, (Normal, Uniform)):
        raise TypeError(f"transform must be None, 'prior', an rcc.Normal or an rcc.Uniform, "
                        f"got {type(transform).__name__}")
    return transform


def _check_transform(transform, prior, hybrid) -> Normal | Uniform:
    """The transform the kernels use: :func:`coding_transform` for hybrid, the prior otherwise."""
    if not hybrid:
        if transform is not None and transform is not prior and not (isinstance(transform, str)
                                                                     and transform == "prior"):
            raise ValueError("transform applies to method='hybrid' only; the prior-proposal methods use the prior")
        return prior
    return coding_transform(prior, transform)


def gaussian_width(std: ArrayLike, prior: Normal | Uniform | Any | None = None, tail_mass: float = DEFAULT_TAIL_MASS,
                   transform: Normal | Uniform | str | None = None) -> Any:
    """Largest width ``M`` such that every ``Normal(mean, std)`` target fits.

    A truncated Gaussian of fixed std has its widest transformed support when
    it sits at the coding transform's mode (:ref:`transform-choosing-width`), so this width depends
    on the std, the prior (through the transform) and the tail mass alone and
    can be known to the receiver.  It is exactly the width ``encode_sample``
    uses with ``width=None``.

    Parameters
    ----------
    std : array_like
        Target standard deviations (> 0).
    prior : rcc.Normal or rcc.Uniform, optional
        The shared prior, ``Normal(0, 1)`` by default.
    tail_mass : float
        Total tail mass removed from each target (:ref:`truncation-central`).
    transform : None, "prior", rcc.Normal or rcc.Uniform
        The coding transform (:func:`coding_transform`).

    Returns
    -------
    int or ndarray of int64
    """
    transform = coding_transform(prior, transform)
    half_width = _half_width(_check_tail_mass(tail_mass))
    std = np.asarray(Normal(0.0, std).std)
    try:
        shape = np.broadcast_shapes(std.shape, transform.batch_shape)
    except ValueError as exc:
        raise ValueError(f"std of shape {std.shape} does not broadcast against the transform's "
                         f"{transform.batch_shape}") from exc
    std = np.broadcast_to(std, shape)
    family, _, scale = _prior_arrays(transform, std.shape)
    widths = np.empty(std.size, dtype=np.int64)
    kernels.gaussian_width_array(
        _read_only(np.ascontiguousarray(std, dtype=np.float64).reshape(-1)), half_width,
        _read_only(np.ascontiguousarray(family, dtype=np.int64).reshape(-1)),
        _read_only(np.ascontiguousarray(scale, dtype=np.float64).reshape(-1)), widths,
    )
    return _scalar_or_array(widths.reshape(std.shape))


def _half_width(tail_mass):
    """Half-width in stds of the central interval of a Normal with this tail mass."""
    return normal_half_width(tail_mass)
