"""Decoding-factor codes, all given the shared dither ``U_N`` (:ref:`uq-factor-cost`).

:class:`UniformFactorCode`
    Uniform over the ``M`` values that ``K + U_N in [0, M)`` allows: exactly
    ``log2 M`` bits (:ref:`transform-width-cost`).  The default where the coding transform is
    the prior (``transform="prior"``).
:class:`MarginalFactorCode`
    ``P(K = k | U = u)`` from the density of a known sample marginal at
    ``k + u`` on the transformed axis (:ref:`uq-factor-cost`), exact for small widths and
    by blocks of cells (``O(1)`` per factor) for widths up to ``2**52``.  With
    the prior as the marginal it is the default (:func:`default_factor_code`)
    under the default, wider coding transform: about
    ``log2 M - D_KL[prior || transform]`` bits on a Gaussian channel.
:class:`TabulatedFactorCode`
    The same with a fitted, tabulated density per *context* (e.g. per latent
    dimension): a learned marginal, like the factorised entropy models of
    learned compression.

The functions below them code a batch of factors with one vectorised call per
group of equal tables, given the dither, or (for the conditioned index code)
without it.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .. import kernels
from ..coding import coding_transform
from ..random import shared_uniform
from ..targets import Normal, NORMAL_FAMILY, TruncatedNormal, Uniform, UNIFORM_FAMILY
from ._checks import _libm, _load_code, _log2, _to_factor_shape
from .streams import _constriction, _decode_uniform, _encode_uniform

__all__ = [
    "FactorCode",
    "UniformFactorCode",
    "default_factor_code",
    "MarginalFactorCode",
    "TabulatedFactorCode",
]


class FactorCode:
    """Base class of the decoding-factor codes (coded given ``U_N``)."""

    def to_dict(self) -> dict[str, Any]:
        raise TypeError(f"{type(self).__name__} does not define to_dict")

    @property
    def fingerprint(self) -> int:
        """CRC32 of the code's canonical description."""
        return zlib.crc32(json.dumps(self.to_dict(), sort_keys=True).encode("utf-8"))


class UniformFactorCode(FactorCode):
    """``K`` uniform over the ``M`` values that ``K + U_N in [0, M)`` allows: ``log2 M`` bits.

    Under the Gaussian (or any) channel whose aggregate of samples is the prior,
    the transformed sample is uniform on ``[0, M)``, so this is the exact law of
    ``K`` given ``U_N`` (:ref:`transform-width-cost`); with ``M = 1`` the factor costs nothing.
    """

    def to_dict(self) -> dict[str, Any]:
        return {"type": "UniformFactorCode"}

    def __repr__(self):
        return "UniformFactorCode()"


class MarginalFactorCode(FactorCode):
    """``P(K = k | U_N = u)`` from a known marginal of the samples (:ref:`uq-factor-cost`).

    The receiver's transformed sample ``z' = K + u`` lies on the lattice
    ``u + Z`` within ``[0, M)`` of the axis ``z' = M F_c(z)`` of the coding
    transform ``c``; if the decoded samples follow ``marginal``, ``z'`` has
    density ``marginal.pdf(z) / (M c(z))``.  On a Gaussian channel the
    marginal is the prior, and this is the code :func:`encode_messages` uses
    by default whenever the transform differs from the prior: it costs about
    ``log2 M - D_KL[prior || transform]`` bits instead of ``log2 M``.  With
    ``marginal`` equal to the transform it is the uniform code.

    Two exact codes (both sides compute the same tables, with no
    dependence on scipy):

    * ``M <= exact_max_width``: the exact conditional, ``P(K = k | u)``
      proportional to the density at ``k + u``, ``O(M)`` per factor;
    * larger ``M``: the axis is cut into ``B = 4096`` blocks of
      ``L = ceil(M / B)`` lattice cells (cells ``[t, t + 1)`` of the offset
      ``t = K - lowest``, ``lowest`` the smallest factor ``u`` allows); the
      block is coded with the marginal's mass of its cells (one table per
      width, shared by all factors) and the cell within it uniformly.  That
      is ``O(1)`` per factor for any width up to ``2**52``; it ignores only
      the information ``u`` carries about the cell, which vanishes as ``M``
      grows (below 0.01 bits per factor at ``M > exact_max_width``).

    Parameters
    ----------
    marginal : rcc.Normal, rcc.TruncatedNormal or rcc.Uniform
        Scalar parameters; the distribution of the decoded samples.
    prior : rcc.Normal or rcc.Uniform, optional
        The coder's prior, ``Normal(0, 1)`` by default.
    transform : None, "prior", rcc.Normal or rcc.Uniform
        The coding transform the samples were encoded with
        (:func:`rcc.coding_transform` of ``prior``; scalar parameters).
    """

    max_width = 1 << 52
    #: Widths up to this use the exact ``O(M)`` conditional table.
    exact_max_width = 64
    _BLOCKS = 4096

    def __init__(self, marginal: Normal | TruncatedNormal | Uniform, prior: Normal | Uniform | None = None, *,
                 transform: str | Normal | Uniform | None = None) -> None:
        if not isinstance(marginal, (Normal, TruncatedNormal, Uniform)):
            raise TypeError(f"marginal must be an rcc.Normal, TruncatedNormal or Uniform, got {type(marginal).__name__}")
        if marginal.shape != ():
            raise ValueError(f"marginal must have scalar parameters, got shape {marginal.shape}")
        prior = Normal(0.0, 1.0) if prior is None else prior
        if not isinstance(prior, (Normal, Uniform)) or prior.shape != ():
            raise TypeError("prior must be a scalar rcc.Normal or rcc.Uniform")
        axis = coding_transform(prior, transform)
        if axis.shape != ():
            raise ValueError(f"transform must have scalar parameters, got shape {axis.shape}")
        self.marginal = marginal
        self.prior = prior
        self.transform = axis
        if isinstance(marginal, Uniform):
            low, high = float(marginal.low), float(marginal.high)
            self._marginal_args = (UNIFORM_FAMILY, low, high - low, low, high)
        else:
            spec = marginal._spec(0.0)
            self._marginal_args = (NORMAL_FAMILY, float(spec["loc"]), float(spec["scale"]),
                                   float(spec["low"]), float(spec["high"]))
        if isinstance(axis, Normal):
            self._transform_args = (NORMAL_FAMILY, float(axis.mean), float(axis.std))
        else:
            self._transform_args = (UNIFORM_FAMILY, float(axis.low), float(axis.high - axis.low))
        self._blocks: dict[int, Any] = {}

    def to_dict(self) -> dict[str, Any]:
        def describe(dist):
            return {"type": type(dist).__name__, **{k: float(v) for k, v in dist._params().items()}}

        return {"type": "MarginalFactorCode", "marginal": describe(self.marginal), "prior": describe(self.prior),
                "transform": describe(self.transform)}

    def __repr__(self):
        return f"MarginalFactorCode(marginal={self.marginal!r}, prior={self.prior!r}, transform={self.transform!r})"

    def _probs(self, lowest, dither, width):
        """``P(K = lowest + t | u)`` for ``t = 0 .. M-1``, rows of one width ``M <= exact_max_width``."""
        out = np.empty((lowest.size, width), dtype=np.float64)
        family, loc, scale, low, high = self._marginal_args
        kernels.factor_table_exact(np.ascontiguousarray(lowest, dtype=np.int64),
                                   np.ascontiguousarray(dither, dtype=np.float64), width, family, loc, scale,
                                   low, high, *self._transform_args, out)
        return out

    def block_table(self, width: int) -> Any:
        """``(block length L, block probabilities)`` of the code for widths above ``exact_max_width``.

        Block ``i`` holds the offsets ``t in [i L, min((i + 1) L, M))``; its
        probability is the marginal's mass of ``z' in [i L, min((i + 1) L, M))``
        (floored at ``2**-40`` and renormalised, so every block stays codable).
        A pure function of the width and the code: sender and receiver compute
        the same table.
        """
        width = int(width)
        cached = self._blocks.get(width)
        if cached is not None:
            return cached
        length = -(-width // self._BLOCKS)
        count = -(-width // length)
        edges = np.minimum(np.arange(count + 1, dtype=np.float64) * length, float(width))
        lower = np.empty(edges.size)
        upper = np.empty(edges.size)
        family, loc, scale, low, high = self._marginal_args
        kernels.factor_block_cdf(edges, float(width), family, loc, scale, *self._transform_args, lower, upper)
        if isinstance(self.marginal, TruncatedNormal):
            # F_T = (F - F(low)) / (F(high) - F(low)), clipped to [0, 1].
            f_low, fc_low = kernels.prior_cdf_pair(low, family, loc, scale)
            f_high, fc_high = kernels.prior_cdf_pair(high, family, loc, scale)
            mass = f_high - f_low
            lower, upper = (np.clip((lower - f_low) / mass, 0.0, 1.0),
                            np.clip((upper - fc_high) / mass, 0.0, 1.0))
        # Block masses from the CDF in the lower half, from its complement in the upper half.
        from_lower = lower[1:] - lower[:-1]
        from_upper = upper[:-1] - upper[1:]
        probs = np.where(upper[:-1] < 0.5, from_upper, from_lower)
        probs = np.maximum(probs, 0.0)
        probs = probs / probs.sum()
        probs = np.maximum(probs, 2.0**-40)
        probs = probs / probs.sum()
        if len(self._blocks) > 64:
            self._blocks.clear()
        self._blocks[width] = (length, probs)
        return length, probs


class TabulatedFactorCode(FactorCode):
    r"""``P(K | U_N)`` from a fitted density of the transformed sample, one table per context.

    A learned marginal for the decoding factor, in the spirit of the factorised
    entropy models of learned compression (Balle et al. 2018): the density of the
    transformed sample ``z' = K + U_N`` on ``[0, M)`` is modelled by the masses
    ``h_0 .. h_{L-1}`` of ``L`` equal cells (``L`` a multiple of ``M``; cell ``i`` is
    ``[i M / L, (i + 1) M / L)``), interpolated linearly between the cell centres
    and held constant beyond the outer ones,

    .. math:: P(K = k \mid U_N = u) \propto f(k + u),

    normalised over the ``M`` values of ``k`` that ``k + u in [0, M)`` allows
    (:ref:`uq-factor-cost`, :ref:`transform-width-cost`).  Every factor belongs to a *context* ``c`` (by default its event
    dimension; see ``factor_context`` of :func:`encode_messages`) and is coded with
    table ``c``, whose width must equal the factor's.  Where the samples'
    aggregate differs from the prior (a VAE's aggregate posterior against its
    ``N(0, 1)`` prior), a table fitted to it makes the factors cheaper than
    :class:`MarginalFactorCode` with the prior, by up to ``KL[aggregate || prior]``.

    Parameters
    ----------
    tables : sequence of array_like
        ``tables[c]``: positive, finite cell masses of context ``c`` (any scale; each
        table is normalised).
    widths : sequence of int, optional
        The width ``M_c`` of each context; ``tables[c]`` must have a multiple of
        ``M_c`` cells.  By default the table lengths (one cell per value of ``K``).
        Tables finer than the width model a density that changes within a unit
        cell (small widths) without bias.  A width of 1 costs nothing.

    Examples
    --------
    >>> import numpy as np, rcc
    >>> enc = rcc.encode_sample(rcc.Normal(np.array([0.3, -0.2]), 0.05), seed=3, width=6)
    >>> code = rcc.TabulatedFactorCode([[1.0, 2.0, 4.0, 4.0, 2.0, 1.0]])
    >>> data = rcc.encode_messages(enc, seed=3, index_code=rcc.ZipfIndexCode(2.0), factor_code=code)
    >>> _, factor = rcc.decode_messages(data, 2, seed=3, index_code=rcc.ZipfIndexCode(2.0), width=6,
    ...                                 factor_code=code)
    >>> bool((factor == enc.factor).all())
    True
    """

    max_width = 1 << 16

    def __init__(self, tables: Sequence[ArrayLike], widths: ArrayLike | None = None) -> None:
        if isinstance(tables, np.ndarray) and tables.ndim == 1 and tables.dtype != object:
            raise TypeError("tables must be a sequence of 1-D arrays (one per context), not one 1-D array")
        try:
            rows = [np.asarray(t, dtype=np.float64) for t in tables]
        except (TypeError, ValueError) as exc:
            raise TypeError(f"tables must be a sequence of 1-D arrays of floats: {exc}") from exc
        if not rows:
            raise ValueError("tables must hold at least one table")
        for c, row in enumerate(rows):
            if row.ndim != 1 or row.size == 0:
                raise ValueError(f"tables[{c}] must be a non-empty 1-D array, got shape {row.shape}")
            if row.size > 16 * self.max_width:
                raise ValueError(f"tables[{c}] has {row.size} cells; at most {16 * self.max_width} are supported")
            if not (np.all(np.isfinite(row)) and np.all(row > 0)):
                raise ValueError(f"tables[{c}] must be positive and finite")
            with np.errstate(over="ignore"):
                row_total = row.sum()
            if not np.isfinite(row_total) or not np.all(row / row_total > 0):
                raise ValueError(f"tables[{c}] must sum to a finite total in which every cell keeps a positive share")
        if widths is None:
            widths = [row.size for row in rows]
        widths = np.asarray(widths)
        if widths.dtype == bool or widths.dtype.kind not in "iu" or widths.shape != (len(rows),):
            raise ValueError(f"widths must be {len(rows)} integers (one per table), got {widths!r}")
        for c, (row, width) in enumerate(zip(rows, widths.tolist())):
            if not 1 <= width <= self.max_width or row.size % width:
                raise ValueError(
                    f"widths[{c}] = {width} must be in [1, {self.max_width}] and divide the "
                    f"{row.size} cells of tables[{c}]"
                )
        self.tables = [row / row.sum() for row in rows]
        self._raw = rows
        self.widths = widths.astype(np.int64)

    @property
    def num_contexts(self) -> int:
        """Number of tables."""
        return len(self.tables)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "TabulatedFactorCode", "tables": [row.tolist() for row in self._raw],
                "widths": self.widths.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TabulatedFactorCode:
        """Inverse of :meth:`to_dict`."""
        if not isinstance(data, dict) or data.get("type") != "TabulatedFactorCode":
            raise ValueError("data is not a TabulatedFactorCode description")
        tables, widths = data.get("tables"), data.get("widths")
        if not isinstance(tables, list) or not all(isinstance(t, list) for t in tables):
            raise ValueError("TabulatedFactorCode data: the field 'tables' must be a list of lists of numbers")
        if widths is not None and not (isinstance(widths, list) and all(
                isinstance(w, int) and not isinstance(w, bool) for w in widths)):
            raise ValueError("TabulatedFactorCode data: the field 'widths' must be a list of integers")
        try:
            return cls(tables, widths)
        except TypeError as exc:
            raise ValueError(f"TabulatedFactorCode data: {exc}") from None

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the code as JSON to ``path`` (:meth:`load` reads it)."""
        with open(os.fspath(path), "w", encoding="utf-8") as handle:
            json.dump(self.to_dict(), handle)
            handle.write("\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TabulatedFactorCode:
        """Read a code written by :meth:`save`; raises ``ValueError`` naming the file on a damaged one."""
        return _load_code(path, cls.from_dict)

    def __repr__(self):
        return f"TabulatedFactorCode(contexts={self.num_contexts}, widths={self.widths.tolist()})"

    def _probs_table(self, context, lowest, dither):
        """``P(K = lowest + t | u)``, ``t = 0 .. M-1``, for rows of one context."""
        table = self.tables[context]
        width = int(self.widths[context])
        cell = width / table.size
        centres = (np.arange(table.size, dtype=np.float64) + 0.5) * cell
        position = lowest[:, None] + np.arange(width, dtype=np.float64)[None, :] + dither[:, None]
        density = np.interp(position, centres, table)
        return density / density.sum(axis=1, keepdims=True)

    def _check_contexts(self, context, width):
        """Every coded factor's context exists and its table has the factor's width."""
        coded = width > 1
        if not coded.any():
            return
        used = context[coded]
        if used.min() < 0 or used.max() >= self.num_contexts:
            raise ValueError(
                f"factor_context must lie in [0, {self.num_contexts}) (the code's tables), "
                f"got values in [{used.min()}, {used.max()}]"
            )
        mismatch = self.widths[used] != width[coded]
        if mismatch.any():
            first = int(np.flatnonzero(mismatch)[0])
            raise ValueError(
                f"TabulatedFactorCode table {int(used[first])} has {int(self.widths[used[first]])} cells, "
                f"but a factor of that context has width {int(width[coded][first])}"
            )


def default_factor_code(prior: Normal | Uniform | None = None,
                        transform: str | Normal | Uniform | None = None) -> FactorCode:
    """The factor code :func:`encode_messages` uses when none is given.

    The samples' marginal is taken to be the prior (as on a Gaussian
    channel): :class:`MarginalFactorCode` of the prior on the transform's
    axis where the coding transform differs from the prior, else the uniform
    code (exactly the law of ``K`` given ``U_N`` then).  A prior with array
    parameters gets the uniform code (valid, but about
    ``D_KL[prior || transform]`` bits dearer per factor); pass a factor code
    to do better.

    Parameters
    ----------
    prior : rcc.Normal or rcc.Uniform, optional
    transform : None, "prior", rcc.Normal or rcc.Uniform
        As for :func:`rcc.encode_sample`.

    Returns
    -------
    FactorCode
    """
    prior = Normal(0.0, 1.0) if prior is None else prior
    axis = coding_transform(prior, transform)
    if axis is prior or prior.batch_shape or axis.batch_shape:
        return UniformFactorCode()
    return MarginalFactorCode(prior, prior, transform=axis)


def _check_factor_code(factor_code, prior=None, transform=None):
    if factor_code is None:
        return default_factor_code(prior, transform)
    if not isinstance(factor_code, FactorCode):
        raise TypeError(f"factor_code must be an rcc FactorCode, got {type(factor_code).__name__}")
    return factor_code


def _lowest_factor(seed, index, dims, stream_offset=np.uint64(0)):
    """Smallest ``K`` with ``K + U_N >= 0``: 0 where ``U_N >= 0`` else 1; shape (count, dims).

    Message ``i`` uses stream ``stream_offset + i``.
    """
    count = index.size
    stream = np.repeat(np.arange(count, dtype=np.uint64) + np.uint64(stream_offset), dims)
    dim = np.tile(np.arange(dims, dtype=np.int64), count)
    dither = shared_uniform(seed, stream, np.repeat(index, dims), dim)
    dither = np.asarray(dither, dtype=np.float64).reshape(count, dims)
    return np.where(dither >= 0.0, 0, 1).astype(np.int64), dither


def _context_groups(context, width):
    """``(context, rows)`` for each context of the factors with width ``M > 1``."""
    coded = width > 1
    for value in np.unique(context[coded]):
        yield int(value), np.flatnonzero(coded & (context == value))


def _factor_probs(factor_code, width, lowest, dither, context=None):
    """``(rows, P(K = lowest + t | u))`` for the factors coded with a per-row table: those
    of a :class:`MarginalFactorCode` of width ``1 < M <= exact_max_width`` (grouped by width) or
    of a :class:`TabulatedFactorCode` (grouped by context), in parts small enough for one
    probability table each.

    Both coder sides hand these tables to the range coder as they are: they come from
    IEEE arithmetic (and the C library's double functions in the kernels) only, never
    from numpy's vectorised transcendentals, whose rounding depends on the CPU.
    """
    if isinstance(factor_code, TabulatedFactorCode):
        for c, rows in _context_groups(context, width):
            for part in _row_chunks(rows, int(factor_code.widths[c])):
                yield part, factor_code._probs_table(c, lowest[part], dither[part])
        return
    for value, rows in _width_groups(width):
        if value > factor_code.exact_max_width:
            break
        for part in _row_chunks(rows, value):
            yield part, factor_code._probs(lowest[part], dither[part], value)


def _factor_blocks(factor_code, width):
    """``(rows, L, probabilities)`` per width of the block-coded factors of a :class:`MarginalFactorCode`."""
    if not isinstance(factor_code, MarginalFactorCode):
        return
    for value, rows in _width_groups(width):
        if value > factor_code.exact_max_width:
            length, probs = factor_code.block_table(value)
            yield rows, value, length, probs


def _block_sizes(block, width, length):
    """Cells in each block: ``L``, or what is left of the axis in the last one."""
    return np.minimum(length, width - block * length)


def _encode_factors_given_dither(encoder, factor_code, factor, width, lowest, dither, context=None):
    """Flat arrays (one entry per coded factor)."""
    offset = factor - lowest
    if isinstance(factor_code, UniformFactorCode):
        _encode_uniform(encoder, offset, width)
        return
    cons = _constriction()
    for part, probs in _factor_probs(factor_code, width, lowest, dither, context):
        encoder.encode(offset[part].astype(np.int32), cons.stream.model.Categorical(perfect=False), probs)
    for rows, value, length, probs in _factor_blocks(factor_code, width):
        block = offset[rows] // length
        encoder.encode(block.astype(np.int32), cons.stream.model.Categorical(probs, perfect=False))
        _encode_uniform(encoder, offset[rows] - block * length, _block_sizes(block, value, length))


def _decode_factors_given_dither(decoder, factor_code, width, lowest, dither, context=None):
    if isinstance(factor_code, UniformFactorCode):
        return lowest + _decode_uniform(decoder, width)
    cons = _constriction()
    offset = np.zeros(width.size, dtype=np.int64)
    for part, probs in _factor_probs(factor_code, width, lowest, dither, context):
        offset[part] = np.asarray(decoder.decode(cons.stream.model.Categorical(perfect=False), probs),
                                  dtype=np.int64)
    for rows, value, length, probs in _factor_blocks(factor_code, width):
        block = np.asarray(decoder.decode(cons.stream.model.Categorical(probs, perfect=False), rows.size),
                           dtype=np.int64)
        offset[rows] = block * length + _decode_uniform(decoder, _block_sizes(block, value, length))
    return lowest + offset


def _factor_bits(factor_code, factor, width, lowest, dither, context=None):
    """``-log2 P(K | U_N)`` of each factor (flat arrays), as the coders above code it."""
    if isinstance(factor_code, UniformFactorCode):
        return np.log2(width.astype(np.float64))
    bits = np.zeros(factor.size)
    offset = factor - lowest
    for part, probs in _factor_probs(factor_code, width, lowest, dither, context):
        bits[part] = -_libm(_log2, probs[np.arange(part.size), offset[part]])
    for rows, value, length, probs in _factor_blocks(factor_code, width):
        block = offset[rows] // length
        bits[rows] = -_libm(_log2, probs[block]) + _libm(_log2, _block_sizes(block, value, length))
    return bits


def _row_chunks(rows, width):
    """Split ``rows`` so that a probability table of ``len(part) * width`` floats stays small (32 MiB)."""
    chunk = max(1, (1 << 22) // width)
    for start in range(0, rows.size, chunk):
        yield rows[start : start + chunk]


def _check_marginal_widths(factor_code, widths, context=None):
    if isinstance(factor_code, MarginalFactorCode) and widths.size and widths.max() > factor_code.max_width:
        raise ValueError(f"MarginalFactorCode supports widths up to {factor_code.max_width}, got {widths.max()}")
    if isinstance(factor_code, TabulatedFactorCode) and context is not None:
        factor_code._check_contexts(context.ravel(), widths.ravel())


def _factor_context(factor_context, factor_code, count, dims, event, batch_shape=None):
    """Contexts of the factors as a ``(count, dims)`` int64 array (``None`` unless tabulated).

    The default context of a factor is its event dimension ``j``.
    """
    if not isinstance(factor_code, TabulatedFactorCode):
        if factor_context is not None:
            raise ValueError("factor_context is used only with a TabulatedFactorCode")
        return None
    if factor_context is None:
        return np.ascontiguousarray(np.broadcast_to(np.arange(dims, dtype=np.int64), (count, dims)))
    arr = np.asarray(factor_context)
    if arr.dtype == bool or arr.dtype.kind not in "iu":
        raise TypeError(f"factor_context must be an array of integers, got dtype {arr.dtype}")
    return _to_factor_shape(arr.astype(np.int64), count, dims, event, batch_shape, "factor_context")


def _width_groups(width):
    """``(M, rows)`` for each width ``M > 1``, rows in increasing order."""
    if width.size and width[0] == width.min() == width.max():
        # One width for all (the usual batch): no sort.
        if width[0] > 1:
            yield int(width[0]), np.arange(width.size)
        return
    values = np.unique(width)
    for value in values:
        if value > 1:
            yield int(value), np.flatnonzero(width == value)


def _encode_factors_first(encoder, factor, width):
    """``K in {0..M}`` with ``P = 1/(2M)`` at both ends and ``1/M`` inside (no dither)."""
    cons = _constriction()
    end = (factor == 0) | (factor == width)
    several = width > 1
    if several.any():
        encoder.encode(end[several].astype(np.int32), cons.stream.model.Bernoulli(perfect=False),
                       1.0 / width[several].astype(np.float64))
    if end.any():
        encoder.encode((factor[end] == width[end]).astype(np.int32), cons.stream.model.Uniform(2))
    inner = ~end
    _encode_uniform(encoder, factor[inner] - 1, width[inner] - 1)


def _decode_factors_first(decoder, width):
    cons = _constriction()
    end = np.ones(width.size, dtype=bool)
    several = np.flatnonzero(width > 1)
    if several.size:
        end[several] = np.asarray(decoder.decode(cons.stream.model.Bernoulli(perfect=False),
                                                 1.0 / width[several].astype(np.float64)), dtype=bool)
    factor = np.zeros(width.size, dtype=np.int64)
    ends = np.flatnonzero(end)
    if ends.size:
        side = np.asarray(decoder.decode(cons.stream.model.Uniform(2), ends.size), dtype=np.int64)
        factor[ends] = side * width[ends]
    inner = np.flatnonzero(~end)
    factor[inner] = 1 + _decode_uniform(decoder, width[inner] - 1)
    return factor


def _factor_first_bits(factor, width):
    end = (factor == 0) | (factor == width)
    return np.log2(width.astype(np.float64)) + end
