"""RCCChannel's automatic block count also bounds the race's length, not only the index KL.

Latents whose posteriors are a little narrower than the prior carry a fraction of a bit
each but multiply the race's candidates by their density ratio's maximum (often twice
``2**KL``).  A layout sized by the index KL alone puts many of them in one block, whose
race then exceeds ``max_log2_candidates`` for a large share of items, each of which leaves
the calibrated race at a cost of several bits and a far longer race.  These tests check
that the automatic count adds blocks until the calibration posteriors stay within the limit,
and measure the effect on real bytes.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("constriction")

from rcc.torch import RCCChannel  # noqa: E402
from rcc.torch._calibration import _balanced_blocks, _block_log2_candidates, _dimension_log2_candidates  # noqa: E402

LATENTS = 16
MAX_LOG2_CANDIDATES = 10.0


def near_prior_posteriors(count, seed):
    """Posteriors of the high-rate end of a VAE: every latent close to the prior (std 0.5 to 0.95)."""
    rng = np.random.default_rng(seed)
    std = rng.uniform(0.5, 0.95, size=(count, LATENTS))
    mean = rng.standard_normal((count, LATENTS)) * np.sqrt(1.0 - std**2)
    return torch.tensor(mean), torch.tensor(np.log(std))


@pytest.fixture(scope="module")
def calibrated():
    mean, log_scale = near_prior_posteriors(400, seed=3)
    channel = RCCChannel(LATENTS, max_log2_candidates=MAX_LOG2_CANDIDATES, index_code="zipf")
    summary = channel.calibrate(mean, log_scale)
    return channel.eval(), summary, mean, log_scale


def budget_block_count(summary, block_budget_bits=12.0):
    return int(np.ceil(summary["dimension_index_kl_bits"].sum() / block_budget_bits - 1e-9))


def share_over_limit(summary, mean, log_scale, num_blocks):
    """Share of calibration item-blocks above the candidate limit under a balanced layout of ``num_blocks``."""
    mean64, std64 = mean.numpy(), np.exp(log_scale.numpy())
    per_dim = _dimension_log2_candidates(mean64, std64, summary["widths"], summary["prior_scales"], 1e-4)
    layout = _balanced_blocks(summary["dimension_index_kl_bits"], num_blocks)
    return float((_block_log2_candidates(per_dim, layout) > MAX_LOG2_CANDIDATES).mean())


def test_block_count_grows_until_calibration_races_fit_the_candidate_limit(calibrated):
    channel, summary, mean, log_scale = calibrated
    budget = budget_block_count(summary)
    # The index KL alone asks for fewer blocks, and most of their races would be too long.
    assert budget < channel.num_blocks
    assert share_over_limit(summary, mean, log_scale, budget) > 0.3
    # The chosen count is the first one within the limit for all but 1 - coverage of them.
    assert share_over_limit(summary, mean, log_scale, channel.num_blocks) <= 1.0 - channel.coverage
    assert share_over_limit(summary, mean, log_scale, channel.num_blocks - 1) > 1.0 - channel.coverage
    assert summary["fallback_fraction"] <= 1.0 - channel.coverage


def test_fixed_block_count_is_kept(calibrated):
    _, _, mean, log_scale = calibrated
    channel = RCCChannel(LATENTS, max_log2_candidates=MAX_LOG2_CANDIDATES, index_code="zipf", blocks=1)
    channel.calibrate(mean, log_scale)
    assert channel.num_blocks == 1


def test_test_posteriors_stay_in_the_calibrated_race_and_cost_fewer_bits(calibrated):
    channel, summary, _, _ = calibrated
    mean, log_scale = near_prior_posteriors(60, seed=4)
    data, _, stats = channel.compress(mean, log_scale, seed=5, return_stats=True)
    assert torch.equal(channel.decompress(data, seed=5, shape=mean.shape), stats["latents"])
    assert stats["fallback_blocks"] <= 0.01 * 60 * channel.num_blocks
    # The layout the index KL alone gives: most blocks leave the calibrated race and cost more.
    fewer = RCCChannel(LATENTS, max_log2_candidates=MAX_LOG2_CANDIDATES, index_code="zipf",
                       blocks=budget_block_count(summary))
    fewer.calibrate(*near_prior_posteriors(400, seed=3))
    fewer.eval()
    data_fewer, _, stats_fewer = fewer.compress(mean, log_scale, seed=5, return_stats=True)
    assert stats_fewer["fallback_blocks"] > 0.5 * 60 * fewer.num_blocks
    assert len(data) < len(data_fewer)
