"""Target and prior distributions: the bottom of the coders' data flow.

:mod:`rcc.targets.distributions` holds the closed-form families (Normal,
TruncatedNormal, Uniform, Product), :mod:`rcc.targets.general` the general 1-D
targets given by a log density (GeneralTarget), :mod:`rcc.targets.general_families`
the ready-made ones (Laplace, GaussianMixture, ScaledBeta), and
:mod:`rcc.targets.scipy_interop` the conversion of frozen ``scipy.stats``
distributions.  Everything is importable from ``rcc.targets`` as before.
"""

from .distributions import (  # noqa: F401 - re-exported, private names included for the coders
    DEFAULT_TAIL_MASS,
    NORMAL_FAMILY,
    UNIFORM_FAMILY,
    Distribution,
    Normal,
    Product,
    TruncatedNormal,
    Uniform,
    _alias,
    _broadcast,
    _check_size,
    _finite,
    _log_ndtr_diff,
    _param,
    normal_half_width,
)
from .scipy_interop import _convert_scipy, _is_frozen_scipy, _is_new_scipy, from_scipy  # noqa: F401

__all__ = [
    "Distribution",
    "Normal",
    "TruncatedNormal",
    "Uniform",
    "Product",
    "from_scipy",
    "NORMAL_FAMILY",
    "UNIFORM_FAMILY",
    "normal_half_width",
    "DEFAULT_TAIL_MASS",
]
