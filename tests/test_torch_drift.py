"""RCCChannel under calibration drift: blocks the calibrated widths do not fit take width classes.

A VAE's test posteriors drift from the calibration ones; a latent wider than at calibration
no longer fits its width.  These tests measure, from real bytes, what such items cost above
their KL, and check that the samples stay exact.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("constriction")

import rcc  # noqa: E402
from rcc.testing import ks_check  # noqa: E402
from rcc.torch import RCCChannel  # noqa: E402

LATENTS = 8


def posteriors(count, seed, *, std_factor=1.0, mean_shift=0.0):
    """Posteriors with std e^-2 (latent 0 scaled by ``std_factor`` and shifted by ``mean_shift``)."""
    rng = np.random.default_rng(seed)
    log_scale = np.full((count, LATENTS), -2.0)
    mean = rng.standard_normal((count, LATENTS)) * np.sqrt(1.0 - np.exp(-4.0))
    log_scale[:, 0] += np.log(std_factor)
    mean[:, 0] += mean_shift
    return torch.tensor(mean), torch.tensor(log_scale)


@pytest.fixture(scope="module")
def channel():
    ch = RCCChannel(LATENTS)
    ch.calibrate(*posteriors(600, seed=1), seed=0)
    return ch.eval()


def overhead(channel, mean, log_scale, per_item):
    """Mean (measured bits - KL) and mean candidates per item, from real bytes (round trip checked)."""
    data, _, stats = channel.compress(mean, log_scale, seed=9, return_stats=True, per_item=per_item)
    assert torch.equal(channel.decompress(data, 9, mean.shape), stats["latents"])
    excess = float((stats["item_measured_bits"] - stats["kl_bits"]).mean())
    return excess, float(stats["candidates"].double().mean()), stats["fallback_blocks"]


@pytest.fixture(scope="module")
def in_distribution(channel):
    return {per_item: overhead(channel, *posteriors(80, seed=2), per_item) for per_item in (False, True)}


@pytest.mark.parametrize("std_factor, mean_shift", [(1.6, 0.0), (2.0, 0.0), (0.5, 0.0), (1.0, 3.0)])
def test_drifted_batch_costs_at_most_two_bits_per_drifted_latent(channel, in_distribution, std_factor, mean_shift):
    excess, candidates, fallback = overhead(channel, *posteriors(80, 2, std_factor=std_factor, mean_shift=mean_shift),
                                            False)
    base_excess, base_candidates, _ = in_distribution[False]
    if std_factor > 1:
        assert fallback == 80  # every item's block falls back: the width-class path is measured
    assert excess <= base_excess + 2.0, (excess, base_excess)
    assert candidates <= 4.0 * base_candidates, (candidates, base_candidates)


def test_drifted_per_item_streams_degrade_gracefully(channel, in_distribution):
    excess, candidates, fallback = overhead(channel, *posteriors(40, 2, std_factor=1.6), True)
    base_excess, base_candidates, _ = in_distribution[True]
    assert fallback == 40
    # A per-item stream names the drifted latent on its own: about 4.8 bits of mode and classes
    # for one latent in eight, 3 of them to say which (measured: 3.7 bits above the
    # in-distribution items here, 5.6 over 500 items), far below the width-1 fallback's ~36 bits.
    assert excess <= base_excess + 6.0, (excess, base_excess)
    assert candidates <= 4.0 * base_candidates, (candidates, base_candidates)


@pytest.mark.parametrize("per_item", [False, True])
def test_every_latent_drifting_costs_under_two_bits_each(channel, in_distribution, per_item):
    mean, log_scale = posteriors(40, 2)
    log_scale += np.log(1.6)  # every latent 1.6 times wider than at calibration
    excess, _, fallback = overhead(channel, mean, log_scale, per_item)
    assert fallback == 40
    # Measured: 1.4 bits per latent in per-item streams, 0.9 in a batch stream.
    assert excess - in_distribution[per_item][0] <= 2.0 * LATENTS, (excess, in_distribution[per_item][0])


def test_width_one_fallback_remains_for_far_posteriors(channel):
    mean, log_scale = posteriors(6, seed=3)
    log_scale[2] = -3.5  # every latent 4.5x narrower: even four times the race is not enough
    log_scale[4, 5] = 0.2  # far wider than at calibration: the widest class (width 1) on one latent
    plan = channel._plan(mean.numpy(), np.exp(log_scale.numpy()))
    assert plan["modes"][plan["positions_fallback"]].tolist() == [1, 0]  # width 1, then width classes
    for per_item in (False, True):
        data, _, stats = channel.compress(mean, log_scale, seed=4, return_stats=True, per_item=per_item)
        assert stats["fallback_blocks"] == 2
        assert torch.equal(channel.decompress(data, 4, mean.shape), stats["latents"])


def test_width_class_blocks_sample_the_posterior_exactly(channel):
    n = 2000
    mean = np.array([0.7, -0.3, 0.1, 1.2, -0.8, 0.0, 0.4, -1.1])
    std = np.full(LATENTS, np.exp(-2.0))
    std[0] *= 1.8
    mean_t = torch.tensor(np.tile(mean, (n, 1)))
    log_scale_t = torch.tensor(np.tile(np.log(std), (n, 1)))
    data, _, stats = channel.compress(mean_t, log_scale_t, seed=2025, return_stats=True)
    assert stats["fallback_blocks"] == n
    z = channel.decompress(data, 2025, mean_t.shape).numpy()
    for j in (0, 3):
        target = rcc.Normal(float(mean[j]), float(std[j])).truncate(channel.tail_mass)
        assert ks_check(z[:, j], target.cdf, alpha=1e-3).passed, j
    # The test has power: a 25% error in the scale of the drifted latent is detected.
    wrong = rcc.Normal(float(mean[0]), 1.25 * float(std[0])).truncate(channel.tail_mass)
    assert not ks_check(z[:, 0], wrong.cdf, alpha=1e-3).passed


@pytest.mark.parametrize("per_item", [False, True])
def test_fallback_items_flag_exactly_the_drifted_items(channel, per_item):
    mean, log_scale = posteriors(12, seed=5)
    drifted = [1, 4, 5, 10]
    log_scale[drifted, 0] += float(np.log(1.8))  # latent 0 of these items wider than at calibration
    log_scale[10] = -3.5  # item 10 narrower in every latent: it takes the width-1 race as well
    _, _, stats = channel.compress(mean, log_scale, seed=6, return_stats=True, per_item=per_item)
    flags = stats["fallback_items"]
    assert flags.dtype == torch.bool and flags.shape == (12,)
    assert torch.nonzero(flags).reshape(-1).tolist() == drifted
    blocks = stats["fallback_item_blocks"]
    assert blocks.dtype == torch.bool and blocks.shape == (12, channel.num_blocks)
    assert torch.equal(blocks.any(dim=-1), flags) and int(blocks.sum()) == stats["fallback_blocks"]
    # The flags depend on each item's posterior alone: a sub-batch flags the same items.
    _, _, part = channel.compress(mean[3:8], log_scale[3:8], seed=1, return_stats=True, per_item=per_item)
    assert torch.equal(part["fallback_items"], flags[3:8])


def test_fallback_flags_keep_the_batch_shape(channel):
    mean, log_scale = posteriors(6, seed=7)
    log_scale[4, 0] += float(np.log(1.8))
    _, _, stats = channel.compress(mean.reshape(2, 3, LATENTS), log_scale.reshape(2, 3, LATENTS), seed=2,
                                   return_stats=True)
    assert stats["fallback_items"].shape == (2, 3)
    assert stats["fallback_item_blocks"].shape == (2, 3, channel.num_blocks)
    assert torch.nonzero(stats["fallback_items"].reshape(-1)).reshape(-1).tolist() == [4]
    _, _, empty = channel.compress(mean[:0], log_scale[:0], seed=2, return_stats=True)
    assert empty["fallback_items"].shape == (0,) and empty["fallback_item_blocks"].shape == (0, channel.num_blocks)
