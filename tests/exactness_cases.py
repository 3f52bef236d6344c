"""The exactness battery as one table: every case the per-case tests and the joint battery read.

Each :class:`ExactnessCase` names a target, the keyword arguments of
:func:`rcc.encode_sample` and the seed its samples are drawn with, so a case is
reproduced bit for bit wherever it is read (like the parameter table that
scipy.stats feeds its distribution tests from).  The promised distribution of
every case is the target truncated to its tail mass.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import rcc

__all__ = ["ExactnessCase", "EXACTNESS_CASES", "SAMPLES_PER_CASE"]

#: Samples drawn per case (one batch of this many copies of the target).
SAMPLES_PER_CASE = 20_000


@dataclasses.dataclass(frozen=True)
class ExactnessCase:
    """One target of the exactness battery."""

    name: str
    target: Any
    options: dict[str, Any]
    seed: int

    @property
    def tail_mass(self) -> float:
        return self.options.get("tail_mass", rcc.DEFAULT_TAIL_MASS)

    def reference(self):
        """The distribution the coder promises: the target truncated to the case's tail mass."""
        return self.target.truncate(self.tail_mass)


# (name, target, keyword arguments of encode_sample); case k is drawn with seed 100 + k.
_TABLE = [
    ("near prior mean, std 0.5", rcc.Normal(0.0, 0.5), {}),
    ("std 0.01", rcc.Normal(0.3, 0.01), {}),
    ("far from prior mean", rcc.Normal(2.5, 0.1), {}),
    ("std 1e-4", rcc.Normal(-1.2, 1e-4), {}),
    ("std larger than prior", rcc.Normal(0.5, 1.2), {}),
    ("truncated normal", rcc.TruncatedNormal(0.2, 0.3, -0.1, 0.4), {}),
    ("uniform target", rcc.Uniform(0.1, 0.15), {}),
    ("uniform prior", rcc.Normal(1.0, 0.05), {"prior": rcc.Uniform(-1.0, 3.0)}),
    ("explicit width", rcc.Normal(-0.4, 0.02), {"width": 16}),
    ("adaptive width, tail of prior", rcc.Normal(1.8, 0.01), {"width": "adaptive"}),
    ("width 1, untruncated", rcc.Normal(-0.3, 0.8), {"width": 1, "tail_mass": 0.0}),
    ("pfr", rcc.Normal(0.7, 0.3), {"method": "pfr"}),
    ("pfr, untruncated", rcc.Normal(0.4, 0.5), {"method": "pfr", "tail_mass": 0.0}),
    # Far in the prior's tail, where the default (wide) coding transform keeps the race short.
    ("far, mu = 6", rcc.Normal(6.0, 0.01), {}),
    ("far, mu = -8", rcc.Normal(-8.0, 0.3), {}),
    ("far, mu = 12", rcc.Normal(12.0, 1e-3), {}),
    ("far, mu = 12, wide", rcc.Normal(-12.0, 2.0), {}),
    ("far truncated normal", rcc.TruncatedNormal(7.0, 0.5, 6.5, 9.0), {}),
    ("far uniform target", rcc.Uniform(-9.0, -8.5), {}),
    ("transform through the prior", rcc.Normal(0.6, 0.02), {"transform": "prior"}),
    ("explicit transform", rcc.Normal(-1.5, 0.05), {"transform": rcc.Normal(0.5, 3.0)}),
    ("uniform transform", rcc.Normal(0.2, 0.05), {"transform": rcc.Uniform(-1.0, 1.5)}),
]

#: Every case of the battery, in order (the seeds are part of the table).
EXACTNESS_CASES = tuple(ExactnessCase(name, target, options, seed)
                        for seed, (name, target, options) in enumerate(_TABLE, start=100))
