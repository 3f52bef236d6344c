"""What the coders return, and the defaults they share.

:class:`EncodedSample` is the result of :func:`rcc.encode_sample` and of every
coder behind it (:mod:`rcc.general`, :mod:`rcc.samplers`); the defaults here
(tail mass, candidate cap, coding-transform scale) are the ones those coders
and the message coding assume, so they live below all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .targets import DEFAULT_TAIL_MASS

__all__ = [
    "METHODS",
    "DEFAULT_TAIL_MASS",
    "DEFAULT_MAX_CANDIDATES",
    "DEFAULT_TRANSFORM_SCALE",
    "EncodedSample",
]

METHODS = ("hybrid", "pfr", "orc", "mrc")


# A* coding and GPRS (rcc.samplers); kept out of METHODS, whose order the bitstream header encodes.
_TREE_METHODS = ("astar", "astar-dyadic", "gprs", "gprs-sac", "gprs-dyadic", "grc-sample", "grc-dyadic")


DEFAULT_MAX_CANDIDATES = 2**24


#: The default coding transform of a Normal prior N(m, s^2) is N(m, (8 s)^2)
#: (:func:`coding_transform`).  Measured on the Gaussian channel: the mean
#: candidate count of a target at ``mu`` prior stds grows like
#: ``exp(mu^2 / (2 * 8^2))`` (1.3x at ``mu = 6``), the bits equal those of
#: narrower transforms, and the width's rounding loss at small ``I`` shrinks.
DEFAULT_TRANSFORM_SCALE = 8.0


@dataclass(frozen=True)
class EncodedSample:
    """What :func:`encode_sample` returns.

    Attributes
    ----------
    index : int or ndarray of int64
        The selected candidate ``N >= 1`` (batch shape).
    factor : int or ndarray of int64
        Decoding factors ``K_N`` (batch shape + event shape); zeros for the
        prior-proposal methods.
    sample : float or ndarray of float64
        Exactly what :func:`decode_sample` returns for this message.
    candidates : int or ndarray of int64
        How many candidates the selection examined (weights evaluated).
    width : int or ndarray of int64
        The width ``M`` of the CDF transform (1 for prior-proposal methods).
    tail_mass : float or ndarray
        Total-variation distance between the target and the distribution
        actually sampled (the truncation of :ref:`truncation-tv`).
    kl_bits : float or ndarray
        ``D_KL[truncated target || prior]`` in bits: what an ideal coder pays.
    method : str
    num_candidates : int or ndarray or None
        The fixed candidate count of ORC/MRC, else ``None``.
    seed : int or None
        The shared seed the message was encoded with (what
        :func:`rcc.encode_messages` codes the factors against).
    """

    index: Any
    factor: Any
    sample: Any
    candidates: Any
    width: Any
    tail_mass: Any
    kl_bits: Any
    method: str
    num_candidates: Any = None
    seed: int | None = None


def _scalar_encoded_sample(**fields):
    """``EncodedSample(**fields)`` for the scalar path, without the frozen dataclass's ``__init__``.

    That ``__init__`` sets each field through ``object.__setattr__`` (about
    1 µs of a 5 µs scalar encode); filling ``__dict__`` directly builds the
    same object (equal, hashable alike, still frozen).  Fields left out take
    their class defaults, like keyword arguments left out.
    """
    encoded = object.__new__(EncodedSample)
    encoded.__dict__.update(fields)
    return encoded
