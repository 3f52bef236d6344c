"""Bits reports: ideal and measured bits against the KL on the Gaussian channel.

:func:`measure_bits` and :func:`bits_report` compare the ideal information
content of a batch of messages with the bytes :func:`~rcc.entropy.encode_messages`
really writes and with the KL each message carries.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..coding import EncodedSample, coding_transform, decode_sample, DEFAULT_TAIL_MASS, encode_sample, gaussian_width
from ..targets import Normal, Product, Uniform
from ._checks import _check_int, _check_real
from .conditioned import ConditionedIndexCode
from .factor_codes import FactorCode
from .index_codes import IndexCode, ZipfIndexCode
from .messages import (_check_index_code, _conditioned_factor_code, decode_messages, encode_messages, _message_arrays,
                       message_bits, _message_seed, _parse_header)

__all__ = [
    "BitsReport",
    "measure_bits",
    "gaussian_channel_targets",
    "index_kl_bits_gaussian_channel",
    "bits_report",
]


@dataclass(frozen=True)
class BitsReport:
    """Ideal and measured bits of a batch of messages (means per message).

    Attributes
    ----------
    info_bits : float or None
        Mutual information ``I`` per dimension of the channel (``None`` if unknown).
    block_size : int
        Dimensions per message ``d``.
    count : int
        Messages.
    mean_kl_bits : float
        Mean ``D_KL[target || prior]`` per message (bits, summed over the block).
    mean_index_bits, mean_factor_bits : float
        Mean ideal information content of index and factor.
    mean_measured_bits : float
        ``8 * len(data) / count``: the real cost, header included.
    header_bits : int
        ``8 *`` the header length.
    encode_seconds, decode_seconds : float
        Wall time of :func:`encode_messages` and :func:`decode_messages`.
    index_code, factor_code : str
        ``repr`` of the codes.
    """

    info_bits: float | None
    block_size: int
    count: int
    mean_kl_bits: float
    mean_index_bits: float
    mean_factor_bits: float
    mean_measured_bits: float
    header_bits: int
    encode_seconds: float
    decode_seconds: float
    index_code: str
    factor_code: str

    @property
    def mean_ideal_bits(self) -> float:
        """Mean ideal bits of index plus factor."""
        return self.mean_index_bits + self.mean_factor_bits

    @property
    def mean_payload_bits(self) -> float:
        """Measured bits per message without the header."""
        return self.mean_measured_bits - self.header_bits / self.count

    @property
    def overhead_bits(self) -> float:
        """Measured bits minus ``d * I`` per message (``nan`` without ``info_bits``)."""
        if self.info_bits is None:
            return math.nan
        return self.mean_measured_bits - self.block_size * self.info_bits

    @property
    def measured_bits_per_dim(self) -> float:
        """Measured bits per dimension."""
        return self.mean_measured_bits / self.block_size

    @property
    def overhead_bits_per_dim(self) -> float:
        """Measured bits per dimension minus ``I`` per dimension."""
        return self.overhead_bits / self.block_size

    @property
    def messages_per_second(self) -> float:
        """Throughput of encoding plus decoding the bitstream."""
        return self.count / max(self.encode_seconds + self.decode_seconds, 1e-12)

    def as_dict(self) -> dict[str, Any]:
        """Fields and derived quantities as a flat dict (for CSV rows)."""
        out = {f: getattr(self, f) for f in self.__dataclass_fields__}
        for name in ("mean_ideal_bits", "mean_payload_bits", "overhead_bits", "measured_bits_per_dim",
                     "overhead_bits_per_dim", "messages_per_second"):
            out[name] = getattr(self, name)
        return out


def measure_bits(enc: EncodedSample, seed: int | None = None, *, index_code: IndexCode | ConditionedIndexCode,
                 width: ArrayLike | None = None, factor_code: FactorCode | None = None,
                 info_bits: float | None = None, block_size: int | None = None, verify: bool = True,
                 prior: Normal | Uniform | None = None,
                 transform: str | Normal | Uniform | None = None) -> BitsReport:
    """Code ``enc`` into bytes, decode them back, and report ideal against measured bits.

    Parameters
    ----------
    enc : rcc.EncodedSample
    seed : int
    index_code, width, factor_code, prior, transform
        As for :func:`encode_messages`.
    info_bits : float, optional
        ``I`` per dimension, for the overhead fields of the report.
    block_size : int, optional
        Dimensions per message (default: the factor's event size, else 1).
    verify : bool
        Check that the decoded messages equal ``enc`` (``RuntimeError`` if not).

    Returns
    -------
    BitsReport
    """
    seed = _message_seed(enc, seed)
    index_code = _check_index_code(index_code)
    factor_code = _conditioned_factor_code(index_code, factor_code, prior, transform)
    bits = message_bits(enc, seed, index_code=index_code, width=width, factor_code=factor_code)
    index, factor, widths, event, method = _message_arrays(enc, width)
    count, dims = widths.shape
    start = time.perf_counter()
    data = encode_messages(enc, seed, index_code=index_code, width=width, factor_code=factor_code)
    encode_seconds = time.perf_counter() - start
    start = time.perf_counter()
    decoded_index, decoded_factor = decode_messages(data, count, seed, index_code=index_code,
                                                    width=widths if event else widths.reshape(count),
                                                    factor_code=factor_code)
    decode_seconds = time.perf_counter() - start
    if verify and not (np.array_equal(decoded_index, index)
                       and np.array_equal(decoded_factor.reshape(count, dims), factor)):
        raise RuntimeError("decoded messages differ from the encoded ones")
    header_bytes = _parse_header(data)["header_bytes"]
    if block_size is None:
        block_size = dims if event else 1
    return BitsReport(
        info_bits=None if info_bits is None else float(info_bits),
        block_size=int(block_size),
        count=int(count),
        mean_kl_bits=float(np.mean(np.asarray(enc.kl_bits))),
        mean_index_bits=float(bits.index.mean()) if count else 0.0,
        mean_factor_bits=float(bits.factor.mean()) if count else 0.0,
        mean_measured_bits=8.0 * len(data) / max(count, 1),
        header_bits=8 * header_bytes,
        encode_seconds=encode_seconds,
        decode_seconds=decode_seconds,
        index_code=repr(index_code),
        factor_code=repr(factor_code),
    )


def gaussian_channel_targets(info_bits: float, count: int, *, rng: np.random.Generator | int,
                             block_size: int = 1) -> Normal | Product:
    """Targets of the Gaussian channel with ``I = info_bits`` bits per dimension.

    Prior ``N(0, 1)``, target ``N(mu, s**2)`` with ``s = 2**-I`` and
    ``mu ~ N(0, 1 - s**2)``, so that the marginal of the samples is the prior
    and ``I(X; Z) = -log2 s`` bits per dimension.

    Parameters
    ----------
    info_bits : float
        ``I > 0`` per dimension.
    count : int
        Targets (messages).
    rng : numpy.random.Generator or int
        Source of the means (``numpy.random.default_rng(rng)``).
    block_size : int
        Dimensions per target; ``> 1`` gives an ``rcc.Product`` of shape ``(count, d)``.

    Returns
    -------
    rcc.Normal or rcc.Product
    """
    info_bits = _check_real(info_bits, "info_bits", low=0.0, low_open=True, high=40.0)
    count = _check_int(count, "count", 1)
    block_size = _check_int(block_size, "block_size", 1)
    generator = np.random.default_rng(rng)
    std = 2.0**-info_bits
    shape = (count, block_size) if block_size > 1 else (count,)
    mean = generator.normal(0.0, math.sqrt(1.0 - std * std), size=shape)
    target = Normal(mean, std)
    return Product(target) if block_size > 1 else target


def index_kl_bits_gaussian_channel(info_bits: float, *, prior: Normal | None = None,
                                   transform: str | Normal | Uniform | None = None,
                                   tail_mass: float = DEFAULT_TAIL_MASS) -> float:
    """Mean KL in bits that the index carries per dimension on the Gaussian channel.

    With factors coded under the prior's marginal, the factor carries about
    ``log2 M - D_KL[prior || transform]`` bits of the ``I`` the message
    carries, so the index carries ``D = I - log2 M + D_KL[prior || transform]``
    (``I - log2 M`` with the transform through the prior).  Everything here
    is known to the receiver, so ``ZipfIndexCode(d * D)`` needs no side
    information.

    Parameters
    ----------
    info_bits : float
        ``I`` per dimension.
    prior : rcc.Normal, optional
        ``Normal(0, 1)`` by default (scalar).
    transform : None, "prior", rcc.Normal or rcc.Uniform
    tail_mass : float

    Returns
    -------
    float
    """
    prior = Normal(0.0, 1.0) if prior is None else prior
    transform = coding_transform(prior, transform)
    width = int(gaussian_width(2.0**-info_bits, prior=prior, tail_mass=tail_mass, transform=transform))
    divergence = 0.0
    if transform is not prior and isinstance(prior, Normal) and isinstance(transform, Normal):
        ratio = float(prior.std) / float(transform.std)
        shift = (float(prior.mean) - float(transform.mean)) / float(transform.std)
        divergence = (-math.log(ratio) + 0.5 * (ratio * ratio + shift * shift) - 0.5) / math.log(2.0)
    return max(0.0, info_bits - math.log2(width) + divergence)


def _zipf_for_gaussian_channel(info_bits, block_size, tail_mass, transform=None):
    """``ZipfIndexCode`` with ``D = d * index_kl_bits_gaussian_channel(I)``, all known to the receiver."""
    return ZipfIndexCode(block_size * index_kl_bits_gaussian_channel(info_bits, transform=transform,
                                                                     tail_mass=tail_mass))


def bits_report(info_bits: float, count: int, *, seed: int, rng: np.random.Generator | int,
                index_code: str | IndexCode | ConditionedIndexCode = "zipf", block_size: int = 1,
                factor_code: FactorCode | None = None, tail_mass: float = DEFAULT_TAIL_MASS,
                method: str = "hybrid", max_candidates: int = 2**30,
                transform: str | Normal | Uniform | None = None) -> BitsReport:
    """Measure the bits of hybrid-coded samples of the Gaussian channel.

    Draws ``count`` targets (:func:`gaussian_channel_targets`), encodes them with
    :func:`rcc.encode_sample` (``width = gaussian_width(s)``, std-based so the
    receiver knows it; the default coding transform), writes the bitstream
    with the default factor code (the prior's marginal), decodes it and
    checks it, and reports mean ``I``, KL, ideal index/factor bits and
    measured bits.

    Parameters
    ----------
    info_bits : float
        ``I`` per dimension.
    count : int
    seed : int
        Shared seed of the encodings.
    rng : numpy.random.Generator or int
        Draws the targets' means.
    index_code : IndexCode, ConditionedIndexCode or "zipf"
        ``"zipf"`` uses ``ZipfIndexCode(d * D)``, ``D`` the index's KL
        (:func:`index_kl_bits_gaussian_channel`).
    block_size : int
        Dimensions per message (:ref:`blocks-product`).
    factor_code : FactorCode, optional
    tail_mass : float
    method : str
        ``"hybrid"`` (default) or a prior-proposal method.
    max_candidates : int
        Passed to :func:`rcc.encode_sample`; blocks of small per-dimension
        widths occasionally need many candidates for targets far in the tails.
    transform : None, "prior", rcc.Normal or rcc.Uniform
        The coding transform (:func:`rcc.coding_transform`).

    Returns
    -------
    BitsReport

    Examples
    --------
    >>> import rcc
    >>> report = rcc.bits_report(6.0, 2000, seed=3, rng=1)
    >>> report.overhead_bits < 2.5
    True
    """
    targets = gaussian_channel_targets(info_bits, count, rng=rng, block_size=block_size)
    hybrid = method == "hybrid"
    enc = encode_sample(targets, seed, method=method, tail_mass=tail_mass, max_candidates=max_candidates,
                        transform=transform if hybrid else None)
    code: IndexCode | ConditionedIndexCode
    if isinstance(index_code, str):
        if index_code != "zipf":
            raise ValueError(f"index_code must be an index code or 'zipf', got {index_code!r}")
        if hybrid:
            code = _zipf_for_gaussian_channel(float(info_bits), block_size, tail_mass, transform)
        else:
            code = ZipfIndexCode(float(info_bits) * block_size)
    else:
        code = index_code
    report = measure_bits(enc, seed, index_code=code, factor_code=factor_code, info_bits=info_bits,
                          block_size=block_size, transform=transform if hybrid else None)
    # Sanity: the decoded messages reproduce the encoder's samples.
    sample = decode_sample(enc.index, enc.factor, seed, width=enc.width, method=method,
                           transform=transform if hybrid else None)
    if not np.array_equal(np.asarray(sample), np.asarray(enc.sample)):
        raise RuntimeError("decode_sample did not reproduce the encoded samples")
    return report
