"""The fallback path of :class:`~rcc.torch.RCCChannel`: item-blocks its calibrated race does not take.

At compress time a block of an item takes the calibrated race only if all its
dimensions fit their widths and the race is affordable (:meth:`_FallbackCoding._plan`).
Every other block is a *fallback block*: it takes one race with width classes
(:mod:`rcc.torch._width_classes`) or, as a last resort, a width-1 race per dimension.
This module plans that decision, runs those races and writes and reads the fallback
section of a stream: the modes and classes, then each classed block's message (its
index under the block index code shifted by its classes, then its factors), then the
width-1 messages.  The symbols of the classed messages alternate between index and
factor models block after block, so they are written in one loop over the blocks with
every model parameter computed for all blocks at once.
"""

from __future__ import annotations

import math

import numpy as np

from ..coding import _hybrid_bounds
from ..entropy.factor_codes import (_check_marginal_widths, _decode_factors_given_dither,
                                    _encode_factors_given_dither, _factor_bits, _lowest_factor)
from ..entropy.index_codes import _decode_indices, _encode_indices
from ..targets import Normal, Product
from ._calibration import _PRIOR
from ._item_classes import decode_item_classes, encode_item_classes
from ._width_classes import (_CLASS_EXTRA_LOG2_CANDIDATES, _MODE_CLASSES, _MODE_WIDTH_ONE, choose_width_classes,
                             class_widths, decode_classes, encode_classes, shifted_index_code)
from .streams import _STREAM_CLASSED, _STREAM_FALLBACK, _derive_seed, _message_bits, _message_record

__all__: list[str] = []

#: Fallback dimensions whose race would examine more candidates than this (log2) raise.
_FALLBACK_LOG2_CANDIDATES = 24


def _shifted_codes(block_code, shifts):
    """The index code of each classed block (by the sum of its classes) and those sums."""
    sums = np.asarray(shifts, dtype=np.int64).sum(axis=1)
    return {int(s): shifted_index_code(block_code, int(s)) for s in np.unique(sums)}, sums


def write_classed_messages(encoder, index, factor, widths, shifts, seed, block_code, factor_code):
    """Write the messages of the blocks with width classes; returns their bits (one per block).

    Block ``k`` (stream ``k`` of ``seed``) writes its index under ``block_code`` shifted by
    the sum of its classes, then its factors under ``factor_code`` given the dither of
    its index: the symbols :func:`rcc.entropy.encode_messages` writes for one message.
    """
    index = np.asarray(index, dtype=np.int64).reshape(-1)
    count, dims = widths.shape
    factor = np.asarray(factor, dtype=np.int64).reshape(count, dims)
    _check_marginal_widths(factor_code, widths)
    lowest, dither = _lowest_factor(seed, index, dims)
    offset = factor - lowest
    if ((offset < 0) | (offset >= widths)).any():
        raise ValueError("a decoding factor is inconsistent with the dither of its index (K + U_N must lie in "
                         "[0, M))")
    codes, sums = _shifted_codes(block_code, shifts)
    for k in range(count):
        _encode_indices(encoder, codes[int(sums[k])], index[k:k + 1])
        _encode_factors_given_dither(encoder, factor_code, factor[k], widths[k], lowest[k], dither[k])
    index_bits = np.zeros(count)
    for s, code in codes.items():
        rows = np.flatnonzero(sums == s)
        index_bits[rows] = code.bits(index[rows])
    factor_bits = _factor_bits(factor_code, factor.ravel(), widths.ravel(), lowest.ravel(), dither.ravel())
    return index_bits + factor_bits.reshape(count, dims).sum(axis=1)


def read_classed_messages(decoder, widths, shifts, seed, block_code, factor_code):
    """Read what :func:`write_classed_messages` wrote: ``(index, factor)``."""
    count, dims = widths.shape
    _check_marginal_widths(factor_code, widths)
    codes, sums = _shifted_codes(block_code, shifts)
    index = np.zeros(count, dtype=np.int64)
    factor = np.zeros((count, dims), dtype=np.int64)
    for k in range(count):
        index[k] = _decode_indices(decoder, codes[int(sums[k])], 1)[0]
        if index[k] < 1:
            raise ValueError("decoded an index < 1")
        lowest, dither = _lowest_factor(seed, index[k:k + 1], dims, np.uint64(k))
        factor[k] = _decode_factors_given_dither(decoder, factor_code, widths[k], lowest[0], dither[0])
    return index, factor


class _FallbackCoding:
    """The fallback path of :class:`~rcc.torch.RCCChannel` (its planning, races and stream section)."""

    def _plan(self, mean64, std64):
        """Per item-block targets, widths and the joint/fallback decision."""
        layout = self._layout()
        pad, safe = layout["pad"], layout["safe"]
        block_widths, block_scales = layout["block_widths"], layout["block_scales"]
        n = mean64.shape[0]
        mu = np.where(pad, 0.0, mean64[:, safe])  # (n, blocks, block_size)
        sd = np.where(pad, 1.0, std64[:, safe])
        if n:
            # The encoder's own arithmetic: a block goes to the joint race only if
            # rcc.encode_sample will find that it fits and that its race is affordable.
            fits, log2_candidates, _ = _hybrid_bounds(
                Product(Normal(mu, sd)), _PRIOR, np.broadcast_to(block_widths, mu.shape), self.tail_mass,
                Normal(0.0, block_scales))
            joint = fits & (log2_candidates <= self.max_log2_candidates)
        else:
            joint = np.zeros((0, self.num_blocks), dtype=bool)
        flat_joint = joint.reshape(-1)
        mu = mu.reshape(n * self.num_blocks, self.block_size)
        sd = sd.reshape(n * self.num_blocks, self.block_size)
        fallback = np.flatnonzero(~flat_joint)
        blocks = fallback % self.num_blocks
        modes, shifts = choose_width_classes(mu[fallback], sd[fallback], layout["block_widths"][blocks],
                                             layout["block_scales"][blocks], self.tail_mass,
                                             self.max_log2_candidates)
        all_modes = np.full(n * self.num_blocks, _MODE_WIDTH_ONE, dtype=np.int64)
        all_shifts = np.zeros((n * self.num_blocks, self.block_size), dtype=np.int64)
        all_modes[fallback], all_shifts[fallback] = modes, shifts
        return {
            **layout,
            "items": n,
            "mu": mu,
            "sd": sd,
            "joint": joint,
            "positions_joint": np.flatnonzero(flat_joint),
            "positions_fallback": fallback,
            "modes": all_modes,
            "shifts": all_shifts,
        }

    def _encode_classed(self, plan, positions, shifts, seed, progress=False):
        """Races of fallback blocks with width classes ``shifts`` (one joint race per block)."""
        from ..coding import encode_sample

        target = Product(Normal(plan["mu"][positions], plan["sd"][positions]))
        blocks = positions % self.num_blocks
        widths = class_widths(plan["block_widths"][blocks], shifts)
        cap = 2 ** (math.ceil(self.max_log2_candidates + _CLASS_EXTRA_LOG2_CANDIDATES) + 8)
        return encode_sample(target, seed, prior=_PRIOR, width=widths, tail_mass=self.tail_mass, max_candidates=cap,
                             progress=progress, transform=Normal(0.0, plan["block_scales"][blocks]))

    def _class_factor_code(self):
        """Factor code of blocks with width classes: the N(0, 1) marginal on the coding transform's axis."""
        from ..entropy import UniformFactorCode, default_factor_code

        wide = float(self.wide_prior_scale)
        if wide == 1.0:
            return UniformFactorCode()
        return default_factor_code(_PRIOR, Normal(0.0, wide))

    def _fallback_targets(self, plan, positions):
        """Flat (item-block, dimension) selection of the fallback blocks' real dimensions."""
        keep = ~plan["pad"][positions % self.num_blocks]
        return keep

    def _encode_fallback(self, plan, positions, seed, progress=False):
        from ..coding import encode_sample

        keep = self._fallback_targets(plan, positions)
        mu = plan["mu"][positions][keep]
        sd = plan["sd"][positions][keep]
        scales = plan["block_scales"][positions % self.num_blocks][keep]
        message = ("a posterior is too far from the coding prior to be coded exactly even dimension by "
                   f"dimension (mean up to {float(np.max(np.abs(mu), initial=0.0)):.3g}, "
                   f"std up to {float(np.max(sd, initial=0.0)):.3g})")
        log2_candidates = (_hybrid_bounds(Normal(mu, sd), _PRIOR, 1, self.tail_mass, Normal(0.0, scales))[1]
                           if mu.size else np.zeros(0))
        if log2_candidates.size and float(np.max(log2_candidates)) > _FALLBACK_LOG2_CANDIDATES:
            raise ValueError(f"{message}: its race would examine about 2**{float(np.max(log2_candidates)):.1f} "
                             f"candidates, more than 2**{_FALLBACK_LOG2_CANDIDATES}")
        try:
            # The cap sits far above the bound just checked: a race's count has a light
            # tail, so it is never reached, where a cap at the bound would be now and then.
            return encode_sample(Normal(mu, sd), seed, prior=_PRIOR, width=1, tail_mass=self.tail_mass,
                                 max_candidates=2 ** (_FALLBACK_LOG2_CANDIDATES + 8), progress=progress,
                                 transform=Normal(0.0, scales))
        except ValueError as exc:
            raise ValueError(f"{message}: {exc}") from exc

    # -- the fallback section of a stream ------------------------------------------

    def _encode_section(self, plan, positions, seed, progress=False):
        """Races of the fallback blocks ``positions``: width classes where affordable, else width 1."""
        modes, shifts = plan["modes"][positions], plan["shifts"][positions]
        classed = modes == _MODE_CLASSES
        section = {"positions": positions, "modes": modes, "shifts": shifts,
                   "seed_classed": _derive_seed(seed, _STREAM_CLASSED),
                   "seed_width_one": _derive_seed(seed, _STREAM_FALLBACK), "classed": None, "width_one": None}
        if classed.any():
            section["classed"] = self._encode_classed(plan, positions[classed], shifts[classed],
                                                      section["seed_classed"], progress)
        if not classed.all():
            section["width_one"] = self._encode_fallback(plan, positions[~classed], section["seed_width_one"],
                                                         progress)
        return section

    def _write_section(self, encoder, plan, section, codes, per_item=False):
        """Write a fallback section (modes, classes, then the messages); returns its bits per block.

        The modes and classes are coded adaptively (:func:`encode_classes`), or with ``per_item``
        under the fixed models of one item (:func:`encode_item_classes`)."""
        from .. import entropy

        block_code, fallback_code, _ = codes
        positions = section["positions"]
        block_widths = plan["block_widths"][positions % self.num_blocks]
        if per_item:
            bits = encode_item_classes(encoder, block_widths, section["modes"], section["shifts"])
        else:
            bits = encode_classes(encoder, block_widths, plan["safe"][positions % self.num_blocks], section["modes"],
                                  section["shifts"])
        classed = np.flatnonzero(section["modes"] == _MODE_CLASSES)
        if section["classed"] is not None:
            enc = section["classed"]
            shifts = section["shifts"][classed]
            widths = class_widths(block_widths[classed], shifts)
            bits[classed] += write_classed_messages(encoder, enc.index, enc.factor, widths, shifts,
                                                    section["seed_classed"], block_code, self._class_factor_code())
        if section["width_one"] is not None:
            enc = section["width_one"]
            entropy._encode_symbols(encoder, enc, section["seed_width_one"], fallback_code, 1,
                                    entropy.UniformFactorCode(), None)
            rest = np.flatnonzero(section["modes"] != _MODE_CLASSES)
            keep = self._fallback_targets(plan, positions[rest])
            np.add.at(bits, np.repeat(rest, keep.sum(axis=1)),
                      _message_bits(enc, section["seed_width_one"], fallback_code, 1))
        return bits

    def _read_section(self, decoder, plan, positions, seed, codes, per_item=False):
        """Inverse of :meth:`_write_section` (messages only; :meth:`_section_samples` decodes them)."""
        from .. import entropy

        block_code, fallback_code, _ = codes
        block_widths = plan["block_widths"][positions % self.num_blocks]
        if per_item:
            modes, shifts = decode_item_classes(decoder, block_widths)
        else:
            modes, shifts = decode_classes(decoder, block_widths, plan["safe"][positions % self.num_blocks])
        section = {"positions": positions, "modes": modes, "shifts": shifts,
                   "seed_classed": _derive_seed(seed, _STREAM_CLASSED),
                   "seed_width_one": _derive_seed(seed, _STREAM_FALLBACK), "classed": None, "width_one": None}
        classed = np.flatnonzero(modes == _MODE_CLASSES)
        if classed.size:
            widths = class_widths(block_widths[classed], shifts[classed])
            index, factor = read_classed_messages(decoder, widths, shifts[classed], section["seed_classed"],
                                                  block_code, self._class_factor_code())
            section["classed"] = _message_record(index, factor, widths, section["seed_classed"])
        rest = np.flatnonzero(modes != _MODE_CLASSES)
        if rest.size:
            count = int(self._fallback_targets(plan, positions[rest]).sum())
            index, factor = entropy._decode_payload(decoder, count, np.ones((count, 1), dtype=np.int64),
                                                    section["seed_width_one"], "hybrid", fallback_code,
                                                    entropy.UniformFactorCode())
            section["width_one"] = _message_record(index, factor.reshape(count), np.ones(count, dtype=np.int64),
                                                   section["seed_width_one"])
        return section

    def _section_samples(self, plan, section, latents, decode=True):
        """Scatter a fallback section's samples into ``latents`` (decoded from its messages if ``decode``);
        returns the candidates per fallback block when encoding."""
        from ..coding import decode_sample

        positions = section["positions"]
        classed = np.flatnonzero(section["modes"] == _MODE_CLASSES)
        rest = np.flatnonzero(section["modes"] != _MODE_CLASSES)
        candidates = np.zeros(positions.size, dtype=np.int64)
        if section["classed"] is not None:
            enc = section["classed"]
            where = positions[classed]
            if decode:
                widths = class_widths(plan["block_widths"][where % self.num_blocks], section["shifts"][classed])
                sample = decode_sample(enc.index, np.reshape(enc.factor, widths.shape), enc.seed, prior=_PRIOR,
                                       width=widths, transform=Normal(0.0, plan["block_scales"][where % self.num_blocks]))
            else:
                sample = enc.sample
                candidates[classed] = np.asarray(enc.candidates, dtype=np.int64)
            self._scatter(latents, plan, where, np.asarray(sample))
        if section["width_one"] is not None:
            enc = section["width_one"]
            where = positions[rest]
            keep = self._fallback_targets(plan, where)
            if decode:
                transform = Normal(0.0, plan["block_scales"][where % self.num_blocks][keep])
                sample = decode_sample(enc.index, enc.factor, enc.seed, prior=_PRIOR, width=1, transform=transform)
            else:
                sample = enc.sample
                np.add.at(candidates, np.repeat(rest, keep.sum(axis=1)), np.asarray(enc.candidates, dtype=np.int64))
            self._scatter(latents, plan, where, np.asarray(sample), keep)
        return candidates
