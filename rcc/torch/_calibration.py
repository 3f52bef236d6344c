"""Calibration of :class:`~rcc.torch.RCCChannel`: widths, block layout and fitted factor tables.

Pure numpy helpers that turn representative posteriors into the state a receiver
holds (:ref:`transform-width-m`, :ref:`blocks-product`).
"""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from ..coding import _hybrid_bounds
from ..entropy import IndexCode
from ..entropy._checks import _libm
from ..targets import Normal
from ._common import _LN2

__all__ = []

#: Calibration picks the widths ``M <= (1 - _FIT_MARGIN) / L`` (``L`` = length of a
#: truncated support under the coding prior's CDF), a hair below the largest, so that
#: the posteriors that set them fit under the encoder's own floating-point check too.
_FIT_MARGIN = 1e-9


#: Widths are capped at the largest width rcc.entropy.TabulatedFactorCode codes.
_MAX_WIDTH = 2**16


#: The prior of the latents (the KL's); the coding transform is N(0, prior_scales[j]**2).
_PRIOR = Normal(0.0, 1.0)


#: Weight of the N(0, 1) prior's cell masses in a fitted factor table (a floor on every cell).
_FACTOR_PRIOR_WEIGHT = 1e-3


#: A fitted factor table has at least this many cells (a multiple of the width), so that
#: the density it interpolates follows the marginal within a unit cell at small widths.
_FACTOR_TABLE_CELLS = 256


#: Candidate kernel bandwidths of the fitted factor tables, in units of each
#: dimension's aggregate standard deviation (chosen by two-fold cross-validation).
_FACTOR_BANDWIDTHS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8)


def _cell_mass_sum(mu, sd, edges):
    """``sum_i P(cell | N(mu_i, sd_i**2))`` over items for the cells between ``edges``."""
    from scipy import special

    cells = edges.size - 1
    total = np.zeros(cells)
    chunk = max(1, (1 << 20) // (cells + 1))
    for start in range(0, mu.size, chunk):
        m = mu[start:start + chunk, None]
        s = sd[start:start + chunk, None]
        total += np.diff(special.ndtr((edges[None, :] - m) / s), axis=1).sum(axis=0)
    return total


def _factor_table_lengths(widths):
    """Cells of each dimension's factor table: 1 for width 1, else the smallest multiple
    of the width that is at least ``_FACTOR_TABLE_CELLS``."""
    widths = np.asarray(widths, dtype=np.int64)
    return np.where(widths == 1, 1, widths * -(-_FACTOR_TABLE_CELLS // widths))


def _fit_factor_tables(mean64, std64, widths, prior_scales):
    """Cell masses of the (smoothed) aggregate posterior on each dimension's transformed axis.

    Unit cell ``i`` of dimension ``j`` is ``[i, i + 1)`` of ``z' = M_j * F_j(z)``, ``F_j``
    the CDF of ``N(0, prior_scales[j]**2)``; it is split into ``ceil(_FACTOR_TABLE_CELLS /
    M_j)`` equal sub-cells.  A sub-cell's mass is the mean over items of the mass of the
    posterior widened by a kernel ``N(0, h**2)`` (a kernel density estimate of the
    aggregate: the raw mixture of narrow posteriors over-fits the calibration items), mixed
    with weight ``_FACTOR_PRIOR_WEIGHT`` with the ``N(0, 1)`` prior's.  ``h`` is chosen per
    dimension from ``_FACTOR_BANDWIDTHS`` by two-fold cross-validation of the code length
    (even items against odd items and back).  Returns the tables concatenated (lengths
    :func:`_factor_table_lengths`).
    """
    from scipy import special

    tables = []
    n = mean64.shape[0]
    for j, (width, cells) in enumerate(zip(np.asarray(widths).tolist(), _factor_table_lengths(widths).tolist())):
        if width == 1:
            tables.append(np.ones(1))
            continue
        edges = prior_scales[j] * special.ndtri(np.arange(cells + 1) / cells)  # -inf .. +inf
        prior_mass = np.diff(special.ndtr(edges))
        mu, sd = mean64[:, j], std64[:, j]
        spread = float(np.sqrt(np.mean(mu**2 + sd**2) - np.mean(mu) ** 2))
        halves = (slice(0, None, 2), slice(1, None, 2))

        def table(mass, count):
            return (1.0 - _FACTOR_PRIOR_WEIGHT) * mass / max(count, 1) + _FACTOR_PRIOR_WEIGHT * prior_mass

        best, best_h = np.inf, 0.0
        exact = [_cell_mass_sum(mu[h], sd[h], edges) for h in halves]
        for bandwidth in _FACTOR_BANDWIDTHS if n >= 2 else (0.0,):
            wide = np.sqrt(sd**2 + (bandwidth * spread) ** 2)
            fitted = [np.maximum(table(_cell_mass_sum(mu[h], wide[h], edges), mu[h].size), 1e-300)
                      for h in halves]
            # Code length of each half's exact cell masses under the other half's table.
            # numpy's summation (not BLAS's dot, whose order follows the CPU's kernels) of the
            # C library's log2 (not numpy's vectorised one, whose rounding follows the CPU).
            cost = -(np.sum(exact[0] * _libm(math.log2, fitted[1])) + np.sum(exact[1] * _libm(math.log2, fitted[0])))
            if cost < best - 1e-9:
                best, best_h = cost, bandwidth
        wide = np.sqrt(sd**2 + (best_h * spread) ** 2)
        tables.append(np.maximum(table(_cell_mass_sum(mu, wide, edges), n), 1e-300))
    return np.concatenate(tables)


def _gaussian_kl_bits_torch(mean, log_scale):
    """``D_KL[N(mean, exp(log_scale)**2) || N(0, 1)]`` in bits, elementwise, differentiable."""
    return (0.5 * (torch.expm1(2.0 * log_scale) + mean * mean) - log_scale) / _LN2


def _gaussian_kl_bits_np(mean, log_scale):
    """float64 numpy version of :func:`_gaussian_kl_bits_torch` (the C library's expm1 per element:
    calibration must not depend on the rounding of numpy's vectorised transcendentals)."""
    return (0.5 * (_libm(math.expm1, 2.0 * log_scale) + mean * mean) - log_scale) / _LN2


def _gaussian_kl_to_prior_bits_np(mean, log_scale, prior_scale):
    """``D_KL[N(mean, exp(log_scale)**2) || N(0, prior_scale**2)]`` in bits (float64)."""
    variance_ratio = _libm(math.exp, 2.0 * log_scale) / prior_scale**2
    kl = _libm(math.log, prior_scale) - log_scale + 0.5 * (variance_ratio + mean * mean / prior_scale**2 - 1.0)
    return kl / _LN2


def _balanced_blocks(weights, num_blocks):
    """Partition dimensions into ``num_blocks`` blocks of ``ceil(d / num_blocks)`` slots.

    Greedy largest-first (LPT) balancing of the summed ``weights`` under the size
    limit; ties go to the lowest block, so the result is deterministic.  Returns an
    int64 array ``(num_blocks, block_size)`` of sorted dimension indices, padded
    with ``-1``.
    """
    d = weights.size
    block_size = -(-d // num_blocks)
    sums = np.zeros(num_blocks)
    members = [[] for _ in range(num_blocks)]
    for j in np.argsort(-weights, kind="stable"):
        open_blocks = [b for b in range(num_blocks) if len(members[b]) < block_size]
        b = min(open_blocks, key=lambda b: (sums[b], b))
        members[b].append(int(j))
        sums[b] += weights[j]
    out = np.full((num_blocks, block_size), -1, dtype=np.int64)
    for b, dims in enumerate(members):
        out[b, : len(dims)] = sorted(dims)
    return out


def _code_to_buffer(code, device):
    """An index code as a uint8 tensor holding its versioned JSON (``code.to_dict()``)."""
    text = json.dumps(code.to_dict(), sort_keys=True, separators=(",", ":"))
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.uint8, device=device)


def _code_from_buffer(buffer):
    """Inverse of :func:`_code_to_buffer`."""
    text = bytes(buffer.detach().cpu().numpy().tobytes()).decode("utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"index_code_json buffer does not hold a valid index code: {exc}") from None
    return IndexCode.from_dict(data)


def _widths_and_coding_priors(mean64, std64, log_scale64, tail_mass, coverage, wide):
    """Per dimension: the width, the index KL ``D_j``, the coding prior's scale (1 or ``wide``),
    and the mean KL a width-1 race carries (the fallback's index code); see ``RCCChannel.calibrate``."""
    d = mean64.shape[1]

    def widths_and_index_kl(prior_scale):
        length = _hybrid_bounds(Normal(mean64, std64), _PRIOR, 1, tail_mass, Normal(0.0, prior_scale))[2]
        reference = np.quantile(length, coverage, axis=0, method="higher")
        widths = np.clip(np.floor((1.0 - _FIT_MARGIN) / reference), 1, _MAX_WIDTH).astype(np.int64)
        kl_to_prior = _gaussian_kl_to_prior_bits_np(mean64, log_scale64, prior_scale).mean(axis=0)
        return widths, np.maximum(kl_to_prior - _libm(math.log2, widths), 0.0)

    widths, index_kl = widths_and_index_kl(1.0)
    prior_scales = np.ones(d)
    if wide != 1.0:
        wide_widths, wide_index_kl = widths_and_index_kl(wide)
        # N(0, 1) only where it carries no factor and its index costs no more than the wide
        # transform's index and factor (the factor about log2 M - D[N(0, 1) || N(0, wide^2)]).
        divergence = (math.log(wide) + 0.5 / wide**2 - 0.5) / _LN2
        wide_factor_bits = np.maximum(_libm(math.log2, wide_widths) - divergence, 0.0)
        unit = (widths == 1) & (index_kl <= wide_index_kl + wide_factor_bits)
        widths = np.where(unit, widths, wide_widths)
        index_kl = np.where(unit, index_kl, wide_index_kl)
        prior_scales = np.where(unit, 1.0, wide)
    # KL a width-1 race carries per dimension (the fallback's index code).
    fallback_kl = np.mean([
        _gaussian_kl_to_prior_bits_np(mean64[:, j], log_scale64[:, j], prior_scales[j]).mean() for j in range(d)
    ])
    return widths, index_kl, prior_scales, fallback_kl


def _dimension_log2_candidates(mean64, std64, widths, prior_scales, tail_mass):
    """``log2 max w_j`` of each calibration posterior and dimension (items x latents): a block's
    race examines about ``2**`` the sum of its dimensions' values candidates."""
    shape = mean64.shape
    return _hybrid_bounds(Normal(mean64, std64), _PRIOR, np.broadcast_to(widths, shape), tail_mass,
                          Normal(0.0, np.broadcast_to(prior_scales, shape)))[1]


def _block_log2_candidates(log2_candidates, block_dims):
    """Per calibration item and block, the summed ``log2`` candidates of its dimensions (padding: 0)."""
    valid = block_dims >= 0
    per_slot = log2_candidates[:, np.where(valid, block_dims, 0)]  # (items, blocks, block_size)
    return np.where(valid, per_slot, 0.0).sum(axis=2)


def _blocks_within_candidates(weights, num_blocks, log2_candidates, max_log2_candidates, allowed_fraction):
    """The smallest block count from ``num_blocks`` up whose balanced layout leaves at most
    ``allowed_fraction`` of the calibration item-blocks above ``2**max_log2_candidates`` candidates.

    The index KL ``D_j`` that sets the first count measures bits, not the race's length: a
    dimension whose posterior is a little narrower than the prior carries a fraction of a bit
    but multiplies the candidates by ``max w_j``, its density ratio's maximum, often twice
    ``2**KL``.  Blocks of many such dimensions exceed the candidate limit far more often than
    their index KL suggests and would leave the calibrated race, each costing far more bits and
    time than one more block (about 2.5 bits).  Returns ``(num_blocks, layout)``.
    """
    d = weights.size
    while True:
        layout = _balanced_blocks(weights, num_blocks)
        over = _block_log2_candidates(log2_candidates, layout) > max_log2_candidates
        if num_blocks >= d or over.mean() <= allowed_fraction:
            return num_blocks, layout
        num_blocks += 1
