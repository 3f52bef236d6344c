"""Which blocks of one item fall back, and their width classes, coded for a per-item stream.

A batch stream codes the fallback mask and the width classes adaptively
(:mod:`rcc.torch._width_classes`): a latent that drifts in many items is paid for in
the first few.  A per-item stream has no earlier items to learn from, so it codes them
with fixed models shaped for the common case, where one or a few dimensions of a block
drifted wider than at calibration:

* the mask: one equiprobable bit per block except the last, whose bit is sent only if
  an earlier one is set (an item with the fallback flag has at least one fallback
  block, so a one-block channel sends nothing);
* per fallback block, its mode (``P(width 1 per dimension) = 1/16``, as in a batch);
* per block with width classes and ``r`` dimensions of width > 1: the number ``k`` of
  them with a class above 0 (``P(0) = 1/16``, ``P(r) = 1/8`` for a block that drifted as
  a whole, ``P(k) ~ 2**-k`` for the others), which
  ``k`` they are (each of the ``C(r, k)`` subsets equally likely) and each one's class
  ``c >= 1`` (``P(c) ~ 4**-(c - 1)``: a posterior up to twice as wide takes class 1).

One drifted dimension in a block of 8 costs about 4.8 bits this way, 3 of them naming
the dimension, and all 8 drifting about 6.4 (0.8 each); the adaptive models of a batch
stream, starting from nothing, pay about 5.4 and 33 (and a bit for the mask).  Every model here is fixed, so both sides derive the same symbols from the
modes and classes alone.
"""

from __future__ import annotations

import functools

import numpy as np

from ._common import _constriction
from ._width_classes import _MODE_CLASSES, _WIDTH_ONE_PROBABILITY, max_class

__all__: list[str] = []

#: P(no dimension of a classed block has a class above 0): such a block fits its widths
#: but its race is too long for the calibrated cap (a narrower posterior), which is rare.
_NO_CLASS_PROBABILITY = 1.0 / 16.0
#: P(every dimension of width > 1 has a class above 0): the whole posterior wider than at
#: calibration, as when a model's test posteriors drift together.
_ALL_CLASS_PROBABILITY = 1.0 / 8.0


def _categorical(probabilities):
    return _constriction().stream.model.Categorical(np.asarray(probabilities, dtype=np.float64), perfect=False)


@functools.lru_cache(maxsize=64)
def _count_probabilities(coded_dims):
    """``P(k)`` for ``k = 0 .. coded_dims`` dimensions with a class above 0."""
    p = np.zeros(coded_dims + 1)
    p[0] = _NO_CLASS_PROBABILITY
    if coded_dims == 1:
        p[1] = 1.0 - _NO_CLASS_PROBABILITY
        return p
    p[-1] = _ALL_CLASS_PROBABILITY
    tail = 2.0 ** -np.arange(1, coded_dims)
    p[1:-1] = (1.0 - _NO_CLASS_PROBABILITY - _ALL_CLASS_PROBABILITY) * tail / tail.sum()
    return p


@functools.lru_cache(maxsize=64)
def _class_probabilities(top):
    """``P(c - 1)`` for classes ``c = 1 .. top``."""
    p = 4.0 ** -np.arange(top)
    return p / p.sum()


def _block_symbols(widths, mode, shifts):
    """The symbols of one fallback block, in stream order, as ``(symbol, probabilities)`` pairs."""
    symbols = [(int(mode), np.array([1.0 - _WIDTH_ONE_PROBABILITY, _WIDTH_ONE_PROBABILITY]))]
    if mode != _MODE_CLASSES:
        return symbols
    coded = [j for j, w in enumerate(widths.tolist()) if w > 1]
    if not coded:
        return symbols
    drifted = [j for j in coded if shifts[j] > 0]
    symbols.append((len(drifted), _count_probabilities(len(coded))))
    remaining, left = len(drifted), len(coded)
    for j in coded:
        if 0 < remaining < left:  # otherwise the subset decides this dimension
            inside = int(shifts[j] > 0)
            symbols.append((inside, np.array([1.0 - remaining / left, remaining / left])))
            remaining -= inside
        left -= 1
    for j in drifted:
        top = max_class(widths[j])
        if top > 1:
            symbols.append((int(shifts[j]) - 1, _class_probabilities(top)))
    return symbols


def encode_item_mask(encoder, is_joint):
    """Write which blocks of an item with fallback blocks fall back (``is_joint`` False)."""
    fallback = ~np.asarray(is_joint, dtype=bool)
    if not fallback.any():
        raise ValueError("an item with the fallback flag needs a fallback block")
    sent = fallback if fallback[:-1].any() else fallback[:-1]
    if sent.size:
        encoder.encode(sent.astype(np.int32), _constriction().stream.model.Uniform(2))


def decode_item_mask(decoder, num_blocks):
    """Read what :func:`encode_item_mask` wrote: ``is_joint`` of the item's blocks."""
    fallback = np.ones(num_blocks, dtype=bool)
    if num_blocks > 1:
        fallback[:-1] = np.asarray(decoder.decode(_constriction().stream.model.Uniform(2), num_blocks - 1)) == 1
        if fallback[:-1].any():
            fallback[-1] = int(decoder.decode(_constriction().stream.model.Uniform(2))) == 1
    return ~fallback


def encode_item_classes(encoder, block_widths, modes, shifts):
    """Write the modes and classes of an item's fallback blocks; returns their bits per block.

    ``block_widths`` (count, B): calibrated widths of each block (1 on padding);
    ``modes`` (count,); ``shifts`` (count, B).
    """
    bits = np.zeros(len(modes))
    for b, (widths, mode, block_shifts) in enumerate(zip(np.asarray(block_widths), modes, np.asarray(shifts))):
        for symbol, probabilities in _block_symbols(widths, mode, block_shifts):
            encoder.encode(symbol, _categorical(probabilities))
            bits[b] -= np.log2(probabilities[symbol])
    return bits


def decode_item_classes(decoder, block_widths):
    """Read what :func:`encode_item_classes` wrote: ``(modes, shifts)``."""
    block_widths = np.asarray(block_widths, dtype=np.int64)
    count, size = block_widths.shape
    modes = np.zeros(count, dtype=np.int64)
    shifts = np.zeros((count, size), dtype=np.int64)
    for b, widths in enumerate(block_widths):
        mode = int(decoder.decode(_categorical([1.0 - _WIDTH_ONE_PROBABILITY, _WIDTH_ONE_PROBABILITY])))
        modes[b] = mode
        coded = [j for j, w in enumerate(widths.tolist()) if w > 1]
        if mode != _MODE_CLASSES or not coded:
            continue
        remaining = int(decoder.decode(_categorical(_count_probabilities(len(coded)))))
        drifted, left = [], len(coded)
        for j in coded:
            if remaining == left:
                inside = 1
            elif remaining == 0:
                inside = 0
            else:
                inside = int(decoder.decode(_categorical([1.0 - remaining / left, remaining / left])))
            if inside:
                drifted.append(j)
            remaining -= inside
            left -= 1
        for j in drifted:
            top = max_class(widths[j])
            shifts[b, j] = 1 + (int(decoder.decode(_categorical(_class_probabilities(top)))) if top > 1 else 0)
    return modes, shifts
