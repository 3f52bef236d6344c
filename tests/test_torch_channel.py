"""Tests of rcc.torch.RCCChannel: reverse-channel-coded VAE latents."""

import io
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("constriction")

import rcc  # noqa: E402
from rcc.testing import ks_check  # noqa: E402
from rcc.torch import RCCChannel  # noqa: E402

LATENTS = 6
# Posterior stds per dimension: four informative dimensions, two at the prior.
STDS = np.array([0.05, 0.1, 0.2, 0.08, 1.0, 0.97])


def posteriors(count, seed, *, dtype=torch.float64, jitter=0.05):
    """Synthetic VAE posteriors whose aggregate is close to the N(0, 1) prior."""
    rng = np.random.default_rng(seed)
    log_scale = np.log(STDS) + jitter * rng.standard_normal((count, LATENTS))
    std = np.minimum(np.exp(log_scale), 1.0)
    mean = rng.standard_normal((count, LATENTS)) * np.sqrt(1.0 - std**2)
    return torch.tensor(mean, dtype=dtype), torch.tensor(log_scale, dtype=dtype)


@pytest.fixture(scope="module")
def calibrated():
    """A channel calibrated on 400 synthetic posteriors (small budget: fast races)."""
    channel = RCCChannel(LATENTS, block_budget_bits=6.0)
    mean, log_scale = posteriors(400, seed=1)
    summary = channel.calibrate(mean, log_scale)
    channel.eval()
    return channel, summary


# ---------------------------------------------------------------------------
# training mode
# ---------------------------------------------------------------------------


def test_training_mode_gradients_flow_to_mean_and_scale():
    with torch.random.fork_rng(devices=[]):  # seeded layers; the global generator is restored afterwards
        torch.manual_seed(0)
        encoder = torch.nn.Linear(5, 2 * LATENTS)
        decoder = torch.nn.Linear(LATENTS, 5)
    channel = RCCChannel(LATENTS, generator=torch.Generator().manual_seed(0))
    x = torch.randn(8, 5, generator=torch.Generator().manual_seed(1))
    mean, log_scale = encoder(x).chunk(2, dim=-1)
    z, rate_bits = channel(mean, log_scale)
    assert z.shape == (8, LATENTS) and rate_bits.shape == (8,)
    loss = ((decoder(z) - x) ** 2).sum() + rate_bits.sum()
    loss.backward()
    for parameter in list(encoder.parameters()) + list(decoder.parameters()):
        assert parameter.grad is not None
        assert torch.isfinite(parameter.grad).all() and parameter.grad.abs().sum() > 0


def test_training_mode_is_the_reparameterised_sample_and_analytic_kl():
    mean, log_scale = posteriors(5, seed=2)
    channel = RCCChannel(LATENTS, generator=torch.Generator().manual_seed(3))
    z, rate_bits = channel(mean, log_scale)
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(3), dtype=mean.dtype)
    assert torch.equal(z, mean + torch.exp(log_scale) * eps)
    m, ls = mean.numpy(), log_scale.numpy()
    expected = ((np.exp(2 * ls) + m**2 - 1) / 2 - ls).sum(axis=1) / math.log(2)
    np.testing.assert_allclose(rate_bits.detach().numpy(), expected, rtol=1e-12, atol=1e-12)
    # The rate gradient is the analytic one: d KL / d mean = mean / ln 2.
    mean = mean.clone().requires_grad_(True)
    channel.kl_bits(mean, log_scale).sum().backward()
    np.testing.assert_allclose(mean.grad.numpy(), m / math.log(2), rtol=1e-12)


def test_training_mode_handles_extra_batch_axes_and_latent_shapes():
    channel = RCCChannel((2, 3))
    mean = torch.zeros(4, 5, 2, 3)
    z, rate_bits = channel(mean, torch.zeros_like(mean))
    assert z.shape == mean.shape and rate_bits.shape == (4, 5)
    assert torch.equal(rate_bits, torch.zeros(4, 5))


# ---------------------------------------------------------------------------
# calibration
# ---------------------------------------------------------------------------


def test_calibration_layout(calibrated):
    channel, summary = calibrated
    assert channel.is_calibrated
    widths = channel.widths.numpy()
    scales = channel.prior_scales.numpy()
    # Informative dimensions get the wide coding prior and widths > 1; the
    # dimensions at the prior keep N(0, 1) and width 1.
    assert (widths[:4] > 1).all() and (scales[:4] == rcc.DEFAULT_TRANSFORM_SCALE).all()
    assert (widths[4:] == 1).all() and (scales[4:] == 1.0).all()
    # Every dimension sits in exactly one block; padding is -1.
    dims = channel.block_dims.numpy()
    assert sorted(dims[dims >= 0].tolist()) == list(range(LATENTS))
    assert channel.num_blocks == math.ceil(summary["dimension_index_kl_bits"].sum() / 6.0 - 1e-9)
    # Balanced: no block carries more than the budget plus one dimension's share.
    assert summary["block_index_kl_bits"].max() <= 6.0 + summary["dimension_index_kl_bits"].max()
    # Nearly all calibration posteriors fit (coverage 0.999).
    assert summary["fallback_fraction"] < 0.02


def test_calibration_is_deterministic():
    mean, log_scale = posteriors(300, seed=4)
    states = []
    for _ in range(2):
        channel = RCCChannel(LATENTS, block_budget_bits=6.0)
        channel.calibrate(mean, log_scale, seed=11)
        states.append(channel.state_dict())
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key


def test_fitted_factor_code_learns_the_aggregate_posterior():
    # Posterior means ~ N(0, 0.5^2): the aggregate is much narrower than the N(0, 1)
    # prior, so a learned marginal of the factors saves bits (up to KL[aggregate || prior]
    # per dimension) while the latents stay exact samples.
    rng = np.random.default_rng(21)
    count = 600
    std = np.array([0.05, 0.1, 0.05, 0.08, 0.2, 0.1])
    mean = torch.tensor(0.5 * rng.standard_normal((count, LATENTS)))
    log_scale = torch.tensor(np.broadcast_to(np.log(std), (count, LATENTS)).copy())
    train, test = slice(0, 400), slice(400, None)
    bits = {}
    for factor_code in ("fitted", "prior"):
        channel = RCCChannel(LATENTS, block_budget_bits=6.0, factor_code=factor_code).eval()
        channel.calibrate(mean[train], log_scale[train])
        assert (channel.factor_tables.numel() > 0) == (factor_code == "fitted")
        data, item_bits, stats = channel.compress(mean[test], log_scale[test], seed=3, return_stats=True)
        assert torch.equal(channel.decompress(data, 3, mean[test].shape), stats["latents"])
        bits[factor_code] = 8 * len(data) / 200
    # KL[N(0, 0.25 + s^2) || N(0, 1)] is about 0.6 bits per dimension.
    assert bits["fitted"] < bits["prior"] - 0.3 * LATENTS


@pytest.mark.parametrize("blocks, block_size", [(1, LATENTS), (LATENTS, 1), (4, 2)])
def test_fixed_number_of_blocks(blocks, block_size):
    mean, log_scale = posteriors(200, seed=5)
    channel = RCCChannel(LATENTS, blocks=blocks, index_code="zipf").eval()
    channel.calibrate(mean, log_scale)
    assert (channel.num_blocks, channel.block_size) == (blocks, block_size)
    data, _, stats = channel.compress(mean[:50], log_scale[:50], seed=1, return_stats=True)
    assert torch.equal(channel.decompress(data, 1, (50, LATENTS)), stats["latents"])


# ---------------------------------------------------------------------------
# the coder: exact round trips and real bits
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_decompress_returns_the_encoders_latents_bit_for_bit(calibrated, dtype):
    channel, _ = calibrated
    mean, log_scale = posteriors(120, seed=6, dtype=dtype)
    data, item_bits, stats = channel.compress(mean, log_scale, seed=123, return_stats=True)
    z = channel.decompress(data, 123, mean.shape)
    assert z.dtype == dtype and z.shape == mean.shape
    assert torch.equal(z, stats["latents"])
    assert stats["measured_bits"] == 8 * len(data)
    # The per-item bits are the information content the range coder packs: the
    # bytes exceed their sum only by the headers and the coder's termination.
    assert item_bits.shape == (120,)
    assert 0 <= stats["measured_bits"] - float(item_bits.sum()) < 8 * 48
    # Another seed gives other latents (the shared randomness matters).
    other, _ = channel.compress(mean, log_scale, seed=124)
    assert not torch.equal(channel.decompress(other, 124, mean.shape), z)


def test_latents_lie_in_the_truncated_posteriors(calibrated):
    channel, _ = calibrated
    mean, log_scale = posteriors(200, seed=7)
    data, _ = channel.compress(mean, log_scale, seed=5)
    z = channel.decompress(data, 5, mean.shape)
    half = rcc.targets.normal_half_width(channel.tail_mass)
    distance = ((z - mean) / torch.exp(log_scale)).abs()
    assert (distance <= half * (1 + 1e-9)).all()


def test_bits_are_close_to_the_kl(calibrated):
    channel, _ = calibrated
    mean, log_scale = posteriors(300, seed=8)
    data, item_bits, stats = channel.compress(mean, log_scale, seed=9, return_stats=True)
    kl = float(channel.kl_bits(mean, log_scale).mean())
    measured = 8 * len(data) / 300
    # The truncated KL is what an ideal coder pays; it sits just below the analytic KL.
    assert abs(float(stats["kl_bits"].mean()) - kl) < 0.01 * kl
    # Each block costs about 2.5 bits above its KL (index entropy beyond D).
    assert kl < measured < kl + 3.5 * channel.num_blocks + 1.0


def test_eval_forward_uses_the_real_coder(calibrated):
    channel, _ = calibrated
    mean, log_scale = posteriors(40, seed=10, dtype=torch.float32)
    z, rate_bits, data = channel(mean, log_scale, seed=77, return_data=True)
    assert torch.equal(z, channel.decompress(data, 77, mean.shape))
    _, item_bits = channel.compress(mean, log_scale, seed=77)
    assert torch.equal(rate_bits, item_bits)
    assert rate_bits.dtype == torch.float64 and rate_bits.shape == (40,)
    assert not z.requires_grad
    # Deterministic given the seed.
    z2, _ = channel(mean, log_scale, seed=77)
    assert torch.equal(z, z2)


def test_extra_batch_axes_and_half_precision(calibrated):
    channel, _ = calibrated
    mean, log_scale = posteriors(24, seed=11, dtype=torch.float16)
    mean, log_scale = mean.reshape(2, 3, 4, LATENTS), log_scale.reshape(2, 3, 4, LATENTS)
    data, item_bits = channel.compress(mean, log_scale, seed=2)
    assert item_bits.shape == (2, 3, 4)
    z = channel.decompress(data, 2, mean.shape)
    assert z.dtype == torch.float16 and z.shape == mean.shape


def test_empty_batch(calibrated):
    channel, _ = calibrated
    mean = torch.zeros(0, LATENTS)
    data, item_bits = channel.compress(mean, mean, seed=3)
    assert item_bits.shape == (0,)
    assert channel.decompress(data, 3, (0, LATENTS)).shape == (0, LATENTS)


# ---------------------------------------------------------------------------
# exactness: the decoded latents follow the (truncated) posterior
# ---------------------------------------------------------------------------


def _ks_per_dimension(z, mean, std, tail_mass):
    for j in range(z.shape[1]):
        target = rcc.Normal(float(mean[j]), float(std[j])).truncate(tail_mass)
        result = ks_check(z[:, j], target.cdf, alpha=1e-3)
        assert result.passed, (j, result)


def test_joint_blocks_sample_the_posterior_exactly(calibrated):
    channel, _ = calibrated
    mean = np.array([1.3, -0.4, 0.2, -1.9, 0.1, -0.05])
    std = np.array([0.05, 0.1, 0.2, 0.08, 1.0, 0.97])
    n = 3000
    mean_t = torch.tensor(np.tile(mean, (n, 1)))
    log_scale_t = torch.tensor(np.tile(np.log(std), (n, 1)))
    data, _, stats = channel.compress(mean_t, log_scale_t, seed=2024, return_stats=True)
    assert stats["fallback_blocks"] == 0
    z = channel.decompress(data, 2024, mean_t.shape).numpy()
    _ks_per_dimension(z, mean, std, channel.tail_mass)


def test_fallback_is_exact_and_reported(calibrated):
    channel, _ = calibrated
    # Posteriors 3x wider than calibrated in the informative dimensions do not fit
    # their widths: those blocks are coded dimension by dimension with width 1.
    mean = np.array([0.7, -0.4, 0.2, -1.1, 0.1, -0.05])
    std = np.array([0.15, 0.3, 0.6, 0.24, 1.0, 0.97])
    n = 1500
    mean_t = torch.tensor(np.tile(mean, (n, 1)))
    log_scale_t = torch.tensor(np.tile(np.log(std), (n, 1)))
    data, item_bits, stats = channel.compress(mean_t, log_scale_t, seed=99, return_stats=True)
    assert stats["fallback_blocks"] > 0
    z = channel.decompress(data, 99, mean_t.shape)
    assert torch.equal(z, stats["latents"])
    _ks_per_dimension(z.numpy(), mean, std, channel.tail_mass)


def test_race_budget_fallback_round_trips():
    mean, log_scale = posteriors(200, seed=12)
    channel = RCCChannel(LATENTS, blocks=1, max_log2_candidates=4.0, index_code="zipf").eval()
    summary = channel.calibrate(mean, log_scale)
    assert summary["fallback_fraction"] > 0.5
    data, _, stats = channel.compress(mean[:60], log_scale[:60], seed=8, return_stats=True)
    assert stats["fallback_blocks"] > 0
    assert torch.equal(channel.decompress(data, 8, (60, LATENTS)), stats["latents"])


# ---------------------------------------------------------------------------
# state_dict and a fresh process
# ---------------------------------------------------------------------------


def test_state_dict_round_trip(calibrated):
    channel, _ = calibrated
    mean, log_scale = posteriors(50, seed=13)
    data, _, stats = channel.compress(mean, log_scale, seed=31, return_stats=True)
    buffer = io.BytesIO()
    torch.save(channel.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer)
    fresh = RCCChannel(LATENTS)  # uncalibrated: buffers of other shapes
    assert not fresh.is_calibrated
    fresh.load_state_dict(state)
    assert fresh.is_calibrated and fresh.num_blocks == channel.num_blocks
    assert torch.equal(fresh.decompress(data, 31, mean.shape), stats["latents"])
    rebuilt = RCCChannel.from_state_dict({"channel." + k: v for k, v in state.items()})
    assert torch.equal(rebuilt.decompress(data, 31, mean.shape), stats["latents"])
    with pytest.raises(ValueError, match="latent_shape"):
        RCCChannel(LATENTS + 1).load_state_dict(state)


def test_decompress_in_a_fresh_process(calibrated, tmp_path):
    channel, _ = calibrated
    mean, log_scale = posteriors(30, seed=14, dtype=torch.float32)
    data, _, stats = channel.compress(mean, log_scale, seed=2**63 + 5, return_stats=True)
    torch.save(channel.state_dict(), tmp_path / "state.pt")
    (tmp_path / "latents.bin").write_bytes(data)
    script = textwrap.dedent(
        """
        import sys, torch
        from rcc.torch import RCCChannel
        folder = sys.argv[1]
        channel = RCCChannel.from_state_dict(torch.load(folder + "/state.pt"))
        data = open(folder + "/latents.bin", "rb").read()
        torch.save(channel.decompress(data, 2**63 + 5, (30, %d)), folder + "/decoded.pt")
        """
        % LATENTS
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, timeout=120,
                   env={**os.environ, "PYTHONHASHSEED": "1"})
    decoded = torch.load(tmp_path / "decoded.pt")
    assert decoded.dtype == torch.float32
    assert torch.equal(decoded, stats["latents"])


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------


def test_missing_calibration_raises():
    channel = RCCChannel(LATENTS).eval()
    mean = torch.zeros(2, LATENTS)
    with pytest.raises(RuntimeError, match="calibrate"):
        channel.compress(mean, mean, seed=0)
    with pytest.raises(RuntimeError, match="calibrate"):
        channel(mean, mean, seed=0)
    with pytest.raises(RuntimeError, match="calibrate"):
        channel.decompress(b"\x10", 0, (2, LATENTS))


def test_posterior_far_from_the_coding_prior_raises(calibrated):
    # A mean 40 prior-stds out: even one dimension's width-1 race would need far more
    # than 2**24 candidates, so the channel says so instead of running for hours.
    channel, _ = calibrated
    mean, log_scale = posteriors(3, seed=16)
    mean[1, 4] = 40.0
    with pytest.raises(ValueError, match="too far from the coding prior"):
        channel.compress(mean, log_scale, seed=0)


def test_bad_inputs_raise(calibrated):
    channel, _ = calibrated
    mean, log_scale = posteriors(4, seed=15)
    with pytest.raises(ValueError, match="finite"):
        channel.compress(torch.full_like(mean, float("nan")), log_scale, seed=0)
    with pytest.raises(ValueError, match="finite"):
        channel.kl_bits(mean, torch.full_like(log_scale, float("inf")))
    with pytest.raises(ValueError, match="same shape"):
        channel.compress(mean, log_scale[:3], seed=0)
    with pytest.raises(ValueError, match="latent_shape"):
        channel.compress(mean[:, :5], log_scale[:, :5], seed=0)
    with pytest.raises(TypeError, match="floating"):
        channel.compress(mean.long(), log_scale, seed=0)
    with pytest.raises(TypeError, match="torch.Tensor"):
        channel.compress(mean.numpy(), log_scale, seed=0)
    with pytest.raises(TypeError, match="seed"):
        channel.compress(mean, log_scale, seed=1.5)
    with pytest.raises(ValueError, match="seed"):
        channel.compress(mean, log_scale, seed=-1)
    with pytest.raises(ValueError, match="seed is required"):
        channel(mean, log_scale)
    with pytest.raises(ValueError, match="log_scale"):
        channel.compress(mean, torch.full_like(log_scale, -800.0), seed=0)
    with pytest.raises(ValueError, match="at least one item"):
        RCCChannel(LATENTS).calibrate(mean[:0], log_scale[:0])


def test_bad_bitstreams_raise(calibrated):
    channel, _ = calibrated
    mean, log_scale = posteriors(20, seed=16)
    data, _ = channel.compress(mean, log_scale, seed=4)
    with pytest.raises(ValueError, match="latent_shape"):
        channel.decompress(data, 4, (20, LATENTS + 1))
    with pytest.raises(ValueError):
        channel.decompress(data, 4, (19, LATENTS))  # wrong count
    with pytest.raises(ValueError):
        channel.decompress(data, 5, (20, LATENTS))  # wrong seed
    with pytest.raises(ValueError):
        channel.decompress(data[:-3], 4, (20, LATENTS))  # truncated
    with pytest.raises(ValueError, match="bad header"):
        channel.decompress(b"\xff" + data[1:], 4, (20, LATENTS))
    with pytest.raises(ValueError, match="empty"):
        channel.decompress(b"", 4, (20, LATENTS))
    with pytest.raises(TypeError, match="bytes"):
        channel.decompress("data", 4, (20, LATENTS))


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"latent_shape": 0}, ValueError),
        ({"latent_shape": 2.5}, TypeError),
        ({"block_budget_bits": 0.0}, ValueError),
        ({"blocks": 0}, ValueError),
        ({"blocks": "many"}, ValueError),
        ({"blocks": 1.5}, TypeError),
        ({"coverage": 1.5}, ValueError),
        ({"tail_mass": 1.0}, ValueError),
        ({"max_log2_candidates": 30.0}, ValueError),
        ({"index_code": "huffman"}, ValueError),
        ({"coding_prior_scale": 0.5}, ValueError),
        ({"factor_code": "learned"}, ValueError),
        ({"generator": 3}, TypeError),
    ],
)
def test_bad_constructor_arguments(kwargs, error):
    kwargs = {"latent_shape": LATENTS, **kwargs}
    with pytest.raises(error):
        RCCChannel(**kwargs)


def test_coding_calls_keep_torch_thread_count():
    """rcc's parallel kernels share torch's OpenMP runtime; a coding call must not leave torch on
    more threads than the caller set (without the restore, one compress switched a 1-thread torch
    to every core of the machine)."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        g = torch.Generator().manual_seed(3)
        channel = RCCChannel(4)
        channel.calibrate(torch.randn(300, 4, generator=g), torch.full((300, 4), -2.0))
        assert torch.get_num_threads() == 1
        mean, log_scale = torch.randn(50_000, 4, generator=g), torch.full((50_000, 4), -2.0)
        data, _ = channel.compress(mean, log_scale, seed=5)
        assert torch.get_num_threads() == 1
        channel.decompress(data, seed=5, shape=mean.shape)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
