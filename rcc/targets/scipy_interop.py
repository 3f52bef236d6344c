"""Frozen ``scipy.stats`` distributions as rcc targets and priors (:func:`from_scipy`).

scipy.stats itself is never imported here: a frozen distribution is recognised
by its class names, so ``import rcc`` stays free of scipy.stats's import cost.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .distributions import Normal, TruncatedNormal, Uniform, _broadcast, _finite, _param

__all__ = ["from_scipy"]


#: Frozen ``scipy.stats`` distributions that :func:`from_scipy` converts.
_SCIPY_NAMES = ("norm", "truncnorm", "uniform", "laplace")


#: Classes of scipy's newer distribution interface (``scipy.stats.Normal(mu=..., sigma=...)``,
#: scipy >= 1.15) that :func:`from_scipy` converts, with the attributes that hold their parameters.
_SCIPY_NEW_CLASSES = {"Normal": ("mu", "sigma"), "StandardNormal": ("mu", "sigma"), "Uniform": ("a", "b")}


def _is_frozen_scipy(obj):
    """Whether ``obj`` is a frozen ``scipy.stats`` distribution (checked without importing scipy.stats)."""
    return type(obj).__module__.startswith("scipy.stats") and hasattr(obj, "dist") and hasattr(obj, "args")


def _is_new_scipy(obj):
    """Whether ``obj`` is a Normal or Uniform of scipy's newer distribution interface."""
    names = _SCIPY_NEW_CLASSES.get(type(obj).__name__)
    return (type(obj).__module__.startswith("scipy.stats") and names is not None
            and all(hasattr(obj, name) for name in names))


def _scipy_parameters(frozen):
    """Shape parameters, ``loc`` and ``scale`` of a frozen distribution, by name."""
    dist = frozen.dist
    names = [n.strip() for n in dist.shapes.split(",")] if dist.shapes else []
    names += ["loc", "scale"]
    if len(frozen.args) > len(names):
        raise TypeError(f"scipy.stats.{dist.name} got {len(frozen.args)} positional parameters, "
                        f"expected at most {len(names)} ({', '.join(names)})")
    values = dict(zip(names, frozen.args))
    for key, value in frozen.kwds.items():
        if key not in names or key in values:
            raise TypeError(f"scipy.stats.{dist.name} got an unexpected or repeated parameter {key!r}")
        values[key] = value
    values.setdefault("loc", 0.0)
    values.setdefault("scale", 1.0)
    missing = [n for n in names if n not in values]
    if missing:
        raise TypeError(f"scipy.stats.{dist.name} is missing the parameters {missing}")
    return values


def from_scipy(dist: Any, *, tail_mass: float | None = None) -> Any:
    """The rcc distribution equal to a frozen ``scipy.stats`` distribution.

    ===============================================  ==============================================
    ``scipy.stats``                                  rcc
    ===============================================  ==============================================
    ``norm(loc, scale)``                             ``Normal(loc, scale)``
    ``truncnorm(a, b, loc, scale)``                  ``TruncatedNormal(loc, scale, loc + a * scale,
                                                     loc + b * scale)``
    ``uniform(loc, scale)``                          ``Uniform(loc, loc + scale)``
    ``laplace(loc, scale)``                          ``rcc.Laplace(loc, scale, tail_mass=...)``
    ``Normal(mu=..., sigma=...)``                    ``Normal(mu, sigma)``
    ``Uniform(a=..., b=...)``                        ``Uniform(a, b)``
    ===============================================  ==============================================

    The last two rows are scipy's newer distribution interface (scipy 1.15
    and later); its shifted, scaled or otherwise transformed distributions
    are not converted.

    The parameters are taken over as they are (the bounds of ``truncnorm``
    with one rounding each); array parameters give a batch.  A Laplace target
    is truncated to its central interval of total tail mass ``tail_mass``, as
    every unbounded general target is; the coders report that truncation.

    Parameters
    ----------
    dist : frozen scipy.stats distribution
        For example ``scipy.stats.norm(0.3, 0.01)`` or ``scipy.stats.Normal(mu=0.3, sigma=0.01)``.
    tail_mass : float, optional
        Only for ``laplace``: the tail mass of its truncation (default: the
        library's, ``rcc.DEFAULT_TAIL_MASS``).

    Returns
    -------
    Normal, TruncatedNormal, Uniform or rcc.Laplace

    Raises
    ------
    TypeError
        If ``dist`` is not a frozen ``scipy.stats`` distribution of one of
        these four families.

    Examples
    --------
    >>> import rcc
    >>> from scipy import stats
    >>> rcc.from_scipy(stats.norm(loc=0.3, scale=0.01))
    Normal(mean=0.3, std=0.01)
    >>> rcc.from_scipy(stats.uniform(-1.0, 2.0))
    Uniform(low=-1.0, high=1.0)
    """
    if _is_new_scipy(dist):
        if tail_mass is not None:
            raise TypeError(f"tail_mass applies to scipy.stats.laplace only, not scipy.stats.{type(dist).__name__}")
        if type(dist).__name__ == "Uniform":
            return Uniform(np.asarray(dist.a, dtype=float), np.asarray(dist.b, dtype=float))
        return Normal(loc=np.asarray(dist.mu, dtype=float), scale=np.asarray(dist.sigma, dtype=float))
    if not _is_frozen_scipy(dist):
        raise TypeError(f"dist must be a frozen scipy.stats distribution (e.g. scipy.stats.norm(0, 1)), "
                        f"got {type(dist).__name__}")
    name = getattr(dist.dist, "name", None)
    if name not in _SCIPY_NAMES:
        raise TypeError(f"scipy.stats.{name} has no rcc equivalent; supported: "
                        f"{', '.join('scipy.stats.' + n for n in _SCIPY_NAMES)}")
    if tail_mass is not None and name != "laplace":
        raise TypeError(f"tail_mass applies to scipy.stats.laplace only, not scipy.stats.{name}")
    values = _scipy_parameters(dist)
    loc, scale = _finite(_param(values["loc"], "loc"), "loc"), _finite(_param(values["scale"], "scale"), "scale")
    if (scale <= 0).any():
        raise ValueError(f"scale must be > 0, got {scale[scale <= 0].ravel()[:3]}")
    if name == "norm":
        return Normal(loc=loc, scale=scale)
    if name == "uniform":
        return Uniform(loc=loc, scale=scale)
    if name == "truncnorm":
        a, b = _param(values["a"], "a"), _param(values["b"], "b")
        loc, scale, a, b = _broadcast(("loc", "scale", "a", "b"), loc, scale, a, b)
        return TruncatedNormal(loc=loc, scale=scale, low=loc + a * scale, high=loc + b * scale)
    # Imported on use: most conversions need no general target.
    from .general_families import Laplace

    return Laplace(loc, scale) if tail_mass is None else Laplace(loc, scale, tail_mass=tail_mass)


def _convert_scipy(obj):
    """``from_scipy(obj)`` for a frozen scipy.stats distribution; anything else unchanged.

    The coders call this on their ``target`` and ``prior`` arguments, so frozen
    scipy distributions are accepted wherever rcc distributions are.
    """
    return from_scipy(obj) if _is_frozen_scipy(obj) or _is_new_scipy(obj) else obj
