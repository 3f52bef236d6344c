"""Width classes: how :class:`~rcc.torch.RCCChannel` codes a block its calibrated widths do not fit.

Calibration fixes one width ``M_j`` per dimension (:ref:`transform-width-m`).  A test-time
posterior that is wider than the calibration ones (its transformed support longer than
``1 / M_j``), or a block whose race would examine more than ``2**max_log2_candidates``
candidates, cannot take the calibrated joint race.  Such a block is coded jointly with
*narrower windows*: dimension ``j`` gets the width class ``c_j >= 0``, the smallest for
which it fits ``max(1, M_j >> c_j)``, and the block takes one race with those widths.
Halving a width moves one bit from the decoding factor to the index and doubles the
race, so a posterior up to twice as wide as at calibration costs about the class symbols
above its KL and twice the candidates, where a width-1 race per dimension (the last
resort, kept for posteriors far from the coding prior) pays a whole index per dimension.

The classes are sent in the stream, before the messages: each fallback block's mode
(width classes, or width 1 per dimension), then for every dimension with ``M_j > 1`` its
class, starting from the model ``P(0) = r / (r + 1)`` (``r`` such dimensions in the block)
and ``P(c) ~ 2**-c`` above, adapted to the classes already sent in the same stream
(a batch stream pays for a systematically drifting latent only in its first items;
a per-item stream codes them under fixed models, :mod:`rcc.torch._item_classes`).  The index of a block with classes summing to ``s`` is coded
with the block index code shifted up by ``s`` log2 buckets (its index is about ``2**s``
times larger); its factors with the coding prior's ``N(0, 1)`` marginal
(:class:`rcc.entropy.MarginalFactorCode`), since the fitted tables are per calibrated width.
The choice of classes depends on the posterior only, not on the shared randomness, so
every block is still an exact sample of its (truncated) posterior.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ..coding import _hybrid_bounds
from ..entropy import BucketIndexCode
from ..entropy._checks import _libm
from ..targets import Normal, Product
from ._calibration import _PRIOR
from ._common import _constriction

__all__ = []

#: Mode of a fallback block: 0 = one race with width classes, 1 = width 1 per dimension.
_MODE_CLASSES = 0
_MODE_WIDTH_ONE = 1
#: P(mode = width 1 per dimension): rare (posteriors far from the coding prior).
_WIDTH_ONE_PROBABILITY = 1.0 / 16.0
#: A block with width classes may examine up to this factor more candidates than
#: max_log2_candidates allows the calibrated race (log2: 2 = four times).
_CLASS_EXTRA_LOG2_CANDIDATES = 2.0
#: Largest class (widths are at most 2**16: M >> 16 is 1).
_MAX_CLASS = 16
#: Weight of the fixed model in the adaptive one (in symbols).
_PRIOR_WEIGHT = 2.0
_BUCKETS = 63
#: The largest float64 below 2**63 (an int64): the top of the last bucket as a float.
_LARGEST_FLOAT_INDEX = float(np.nextafter(2.0**63, 0.0))


def class_widths(widths, shifts):
    """``max(1, M >> c)`` elementwise."""
    return np.maximum(np.right_shift(np.asarray(widths, dtype=np.int64), np.asarray(shifts, dtype=np.int64)), 1)


def max_class(width):
    """The largest useful class of a dimension of width ``width`` (``M >> c == 1``)."""
    return max(int(width).bit_length() - 1, 0)


@functools.lru_cache(maxsize=1)
def _mode_probabilities():
    return np.array([1.0 - _WIDTH_ONE_PROBABILITY, _WIDTH_ONE_PROBABILITY])


@functools.lru_cache(maxsize=4096)
def _class_probabilities(coded_dims, top):
    """``P(c)`` for ``c = 0 .. top`` in a block with ``coded_dims`` dimensions of width > 1."""
    p = np.zeros(top + 1)
    p[0] = coded_dims / (coded_dims + 1.0)
    tail = 2.0 ** -np.arange(1, top + 1)
    p[1:] = (1.0 - p[0]) * tail / tail.sum()
    return p


def _model(probabilities):
    return _constriction().stream.model.Categorical(probabilities, perfect=False)


class _AdaptiveClassModel:
    """The models of the modes and classes, adapted to the symbols already coded in a stream.

    ``P(s) = (n_s + a * p0(s)) / (n + a)`` with the fixed model ``p0`` above, the counts ``n_s`` of
    the symbols coded so far in the same stream (per latent dimension for the classes) and
    ``a = _PRIOR_WEIGHT``.  A per-item stream starts from the fixed model; in a batch stream a
    latent that drifts in many items costs little after the first few (drift is systematic).
    """

    def __init__(self):
        self.mode_counts = np.zeros(2)
        self.class_counts = {}

    def mode(self):
        counts = self.mode_counts
        return (counts + _PRIOR_WEIGHT * _mode_probabilities()) / (counts.sum() + _PRIOR_WEIGHT)

    def shift(self, dim, coded_dims, top):
        counts = self.class_counts.setdefault(int(dim), np.zeros(_MAX_CLASS + 1))[: top + 1]
        return (counts + _PRIOR_WEIGHT * _class_probabilities(coded_dims, top)) / (counts.sum() + _PRIOR_WEIGHT)

    def update_mode(self, mode):
        self.mode_counts[mode] += 1

    def update_shift(self, dim, shift):
        self.class_counts[int(dim)][shift] += 1


def _coded_dims(widths):
    return [j for j, w in enumerate(widths.tolist()) if w > 1]


def _counts_before(keys, values, classes):
    """Row ``i``: how often each value occurred among the rows before ``i`` with the same key."""
    onehot = np.zeros((keys.size, classes))
    onehot[np.arange(keys.size), values] = 1.0
    order = np.argsort(keys, kind="stable")
    running = np.cumsum(onehot[order], axis=0) - onehot[order]
    first = np.flatnonzero(np.diff(keys[order], prepend=-1))  # first row of each key
    group = np.cumsum(np.diff(keys[order], prepend=-1) != 0) - 1
    running -= running[first][group]
    before = np.empty_like(running)
    before[order] = running
    return before


def _class_symbols(block_widths, block_dims, modes, shifts):
    """The symbols :func:`encode_classes` writes, in stream order, with their models.

    Returns ``(block, symbol, sizes, probabilities)``: the fallback block of each symbol,
    the symbol, the number of values of its model and the model (row ``i``, its first
    ``sizes[i]`` entries): the model :class:`_AdaptiveClassModel` adapts to the symbols
    before it, with the same arithmetic, computed for all symbols at once.
    """
    count = len(modes)
    modes = np.asarray(modes, dtype=np.int64)
    block_widths = np.asarray(block_widths, dtype=np.int64)
    mode_before = _counts_before(np.zeros(count, dtype=np.int64), modes, 2)
    mode_p = (mode_before + _PRIOR_WEIGHT * _mode_probabilities()) / (mode_before.sum(axis=1, keepdims=True)
                                                                     + _PRIOR_WEIGHT)
    # Class symbols: the coded slots (width > 1) of the blocks with width classes, row by row.
    rows, slots = np.nonzero((block_widths > 1) & (modes == _MODE_CLASSES)[:, None])
    dims = np.asarray(block_dims, dtype=np.int64)[rows, slots]
    values = np.asarray(shifts, dtype=np.int64)[rows, slots]
    tops = np.maximum(_bit_lengths(block_widths[rows, slots]) - 1, 0)
    coded = (block_widths > 1).sum(axis=1)[rows]
    seen = _counts_before(dims, values, _MAX_CLASS + 1)
    class_p = np.zeros((rows.size, _MAX_CLASS + 1))
    for size, top in {(int(a), int(b)) for a, b in zip(coded.tolist(), tops.tolist())}:
        pick = np.flatnonzero((coded == size) & (tops == top))
        counts = seen[pick, : top + 1]
        class_p[pick, : top + 1] = ((counts + _PRIOR_WEIGHT * _class_probabilities(size, top))
                                    / (counts.sum(axis=1, keepdims=True) + _PRIOR_WEIGHT))
    # Stream order: each block's mode, then its classes.
    order = np.argsort(np.concatenate([2 * np.arange(count), 2 * rows + 1]), kind="stable")
    block = np.concatenate([np.arange(count), rows])[order]
    symbol = np.concatenate([modes, values])[order]
    sizes = np.concatenate([np.full(count, 2), tops + 1])[order]
    probabilities = np.zeros((order.size, _MAX_CLASS + 1))
    probabilities[:count, :2] = mode_p
    probabilities[count:] = class_p
    return block, symbol, sizes, probabilities[order]


def _bit_lengths(values):
    """``int.bit_length`` of positive int64 values, elementwise."""
    return np.frexp(np.asarray(values, dtype=np.float64))[1].astype(np.int64)


def encode_classes(encoder, block_widths, block_dims, modes, shifts):
    """Write the modes and classes of fallback blocks; returns their information content per block (bits).

    ``block_widths`` (count, B): calibrated widths of each block (1 on padding); ``block_dims``
    (count, B): the latent dimension of each slot; ``modes`` (count,); ``shifts`` (count, B).
    Consecutive symbols whose models have the same number of values go to constriction in
    one batch call (it quantises each row as a model built from that row alone).
    """
    bits = np.zeros(len(modes))
    if len(modes) == 0:
        return bits
    block, symbol, sizes, probabilities = _class_symbols(block_widths, block_dims, modes, shifts)
    family = _constriction().stream.model.Categorical(perfect=False)
    starts = np.flatnonzero(np.diff(sizes, prepend=-1))
    for start, stop in zip(starts.tolist(), np.append(starts[1:], sizes.size).tolist()):
        encoder.encode(symbol[start:stop].astype(np.int32), family,
                       np.ascontiguousarray(probabilities[start:stop, : sizes[start]]))
    np.add.at(bits, block, -np.log2(probabilities[np.arange(symbol.size), symbol]))
    return bits


def decode_classes(decoder, block_widths, block_dims):
    """Read what :func:`encode_classes` wrote: ``(modes, shifts)``; ``ValueError`` if impossible."""
    count, size = block_widths.shape
    modes = np.zeros(count, dtype=np.int64)
    shifts = np.zeros((count, size), dtype=np.int64)
    model = _AdaptiveClassModel()
    for b, (widths, dims) in enumerate(zip(block_widths, block_dims)):
        mode = int(decoder.decode(_model(model.mode())))
        if mode not in (_MODE_CLASSES, _MODE_WIDTH_ONE):
            raise ValueError(f"decoded fallback mode {mode}")
        modes[b] = mode
        model.update_mode(mode)
        if mode != _MODE_CLASSES:
            continue
        coded = _coded_dims(widths)
        for j in coded:
            top = max_class(widths[j])
            c = int(decoder.decode(_model(model.shift(dims[j], len(coded), top))))
            if not 0 <= c <= top:
                raise ValueError(f"decoded width class {c} outside [0, {top}]")
            shifts[b, j] = c
            model.update_shift(dims[j], c)
    return modes, shifts


def _geomspace(lo, hi, num):
    """``np.geomspace(lo, hi, num)`` with the C library's ``log10`` and ``pow``: both coder sides
    derive the bucket codes from these points, and numpy's vectorised ``power`` rounds
    differently on different CPUs."""
    lo, hi = float(lo), float(hi)
    points = _libm(lambda e: math.pow(10.0, e), np.linspace(math.log10(lo), math.log10(hi), num))
    points[0] = lo
    if num > 1:
        points[-1] = hi
    return points


def _bucket_masses(code):
    """Mass of each ``log2`` bucket of the index under ``code``."""
    if isinstance(code, BucketIndexCode):
        return np.asarray(code.bucket_probabilities, dtype=np.float64)
    masses = np.zeros(_BUCKETS)
    for b in range(_BUCKETS):
        lo, hi = 2**b, 2 ** (b + 1) - 1
        # The top bucket ends at 2**63 - 1, which float64 rounds up to 2**63 (outside int64).
        points = np.unique(np.minimum(_geomspace(lo, hi, min(64, hi - lo + 1)), _LARGEST_FLOAT_INDEX).astype(np.int64))
        density = np.mean(np.asarray(code.pmf(points.astype(np.float64)), dtype=np.float64))
        masses[b] = density * 2**b
    return masses


_SHIFTED_CODES: dict = {}


def _shifted_code(shift, code):
    masses = _bucket_masses(code)
    shifted = np.zeros(_BUCKETS)
    keep = _BUCKETS - shift
    shifted[shift:] = masses[:keep]
    shifted[-1] += masses[keep:].sum()
    total = shifted.sum()
    # A floor keeps every index codable (a block far from the calibration data still decodes).
    shifted = np.maximum(shifted / total if total > 0 else shifted, 1e-12)
    return BucketIndexCode(shifted)


def shifted_index_code(code, shift):
    """``code``'s bucket masses moved up by ``shift`` buckets (a :class:`~rcc.entropy.BucketIndexCode`)."""
    shift = int(min(max(shift, 0), _BUCKETS - 1))
    key = (repr(code.to_dict()), shift)
    if key not in _SHIFTED_CODES:
        if len(_SHIFTED_CODES) > 256:
            _SHIFTED_CODES.clear()
        _SHIFTED_CODES[key] = _shifted_code(shift, code)
    return _SHIFTED_CODES[key]


def _mask_probabilities(mask):
    """``[P(0), P(1)]`` of each symbol of ``mask`` given the symbols before it (rows)."""
    seen = np.arange(mask.size, dtype=np.float64)
    ones = (np.cumsum(mask) - mask).astype(np.float64)
    p_one = (ones + 0.5) / (seen + 1.0)
    return np.stack([1.0 - p_one, p_one], axis=1)


def encode_fallback_mask(encoder, mask):
    """Write which item-blocks of a batch fall back, adaptively (``P(1) = (n_1 + 1/2) / (n + 1)``,
    Krichevsky & Trofimov 1981); returns the bits of each symbol."""
    mask = np.asarray(mask, dtype=np.int64).reshape(-1)
    if mask.size == 0:
        return np.zeros(0)
    probabilities = _mask_probabilities(mask)
    # One batch call: constriction quantises each row as it would a model built from it alone.
    encoder.encode(mask.astype(np.int32), _constriction().stream.model.Categorical(perfect=False), probabilities)
    return -np.log2(probabilities[np.arange(mask.size), mask])


#: Symbols a speculative decoding step of the fallback mask reads at most, and the first try.
_MASK_RUN_LIMIT = 1 << 16
_MASK_FIRST_RUN = 64
#: After a run shorter than this, the mask decoder reads _MASK_SHORT_RUNS symbols one at a time.
_MASK_SHORT_RUN = 8
_MASK_SHORT_RUNS = 32


def decode_fallback_mask(decoder, total):
    """Read what :func:`encode_fallback_mask` wrote for ``total`` item-blocks.

    Symbol ``i``'s model depends on the symbols before it.  The decoder guesses that the
    run of the last symbol goes on, decodes a stretch under the models of that guess on a
    copy of the decoder, and keeps the symbols up to and including the first one that
    breaks the run (each was decoded under its true model); the real decoder then reads
    just those.  A batch stream's mask is mostly long runs (drift is systematic), which
    this reads in a few batch calls; where the runs are short it reads the next symbols
    one at a time, and a copy that a wrong guess runs into unreadable data is retried on
    a shorter stretch.
    """
    from ..entropy import _DECODE_ERRORS

    family = _constriction().stream.model.Categorical(perfect=False)
    mask = np.zeros(total, dtype=np.int64)
    pos, ones, stretch = 0, 0, _MASK_FIRST_RUN
    while pos < total:
        if stretch < _MASK_SHORT_RUN:
            for _ in range(min(_MASK_SHORT_RUNS, total - pos)):
                p_one = (ones + 0.5) / (pos + 1.0)
                mask[pos] = int(decoder.decode(_model(np.array([1.0 - p_one, p_one]))))
                ones += int(mask[pos])
                pos += 1
            stretch = _MASK_FIRST_RUN
            continue
        size = min(stretch, total - pos)
        guess = np.full(size, mask[pos - 1] if pos else 0, dtype=np.int64)
        seen = np.arange(pos, pos + size, dtype=np.float64)
        p_one = (ones + (np.cumsum(guess) - guess) + 0.5) / (seen + 1.0)
        probabilities = np.stack([1.0 - p_one, p_one], axis=1)
        try:
            trial = np.asarray(decoder.clone().decode(family, probabilities), dtype=np.int64)
        except _DECODE_ERRORS:
            stretch = size // 2
            continue
        broken = np.flatnonzero(trial != guess)
        keep = size if broken.size == 0 else int(broken[0]) + 1
        decoded = np.asarray(decoder.decode(family, np.ascontiguousarray(probabilities[:keep])), dtype=np.int64)
        mask[pos:pos + keep] = decoded
        ones += int(decoded.sum())
        pos += keep
        stretch = min(2 * stretch, _MASK_RUN_LIMIT) if broken.size == 0 else keep
    return mask


def choose_width_classes(mu, sd, widths, scales, tail_mass, max_log2_candidates):
    """Mode and width classes of fallback blocks ``(mu, sd)`` of shape (count, B), calibrated ``widths``
    and coding-prior ``scales`` of the same shape (see the module docstring).

    Dimension ``j`` gets the smallest class ``c`` whose width ``max(1, M_j >> c)`` it fits;
    the block takes one race with those widths if its candidates stay within
    ``2**(max_log2_candidates + 2)``, else the width-1 race per dimension.
    """
    count = mu.shape[0]
    modes = np.full(count, _MODE_WIDTH_ONE, dtype=np.int64)
    shifts = np.zeros(mu.shape, dtype=np.int64)
    if count == 0:
        return modes, shifts
    transform = Normal(0.0, scales)
    chosen = np.full(widths.shape, -1, dtype=np.int64)
    for c in range(_MAX_CLASS + 1):
        fits = _hybrid_bounds(Normal(mu, sd), _PRIOR, class_widths(widths, c), tail_mass, transform)[0]
        chosen[(chosen < 0) & fits] = c
        if (chosen >= 0).all():
            break
    found = (chosen >= 0).all(axis=1)
    chosen = np.maximum(chosen, 0)
    fits, log2_candidates, _ = _hybrid_bounds(Product(Normal(mu, sd)), _PRIOR, class_widths(widths, chosen),
                                              tail_mass, transform)
    classed = found & fits & (log2_candidates <= max_log2_candidates + _CLASS_EXTRA_LOG2_CANDIDATES)
    modes[classed] = _MODE_CLASSES
    shifts[classed] = chosen[classed]
    return modes, shifts
