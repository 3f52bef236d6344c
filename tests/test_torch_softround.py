"""Tests of rcc.torch: soft rounding and the universally quantised noise channel."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("constriction")
stats = pytest.importorskip("scipy.stats")

from rcc.torch import (  # noqa: E402
    UniformNoiseChannel,
    soft_round,
    soft_round_conditional_mean,
    soft_round_inverse,
)
from rcc.torch.uniform_noise import _shared_dither  # noqa: E402

ALPHAS = [0.0, 1e-6, 1e-2, 5.0, 1e6]
DTYPES = [torch.float32, torch.float64]
FUNCTIONS = [soft_round, soft_round_inverse, soft_round_conditional_mean]


def grid(dtype, lo=-3.0, hi=3.0, step=0.05):
    """Grid with integers, half-integers and their floating-point neighbours."""
    n = int(round((hi - lo) / step)) + 1
    base = torch.linspace(lo, hi, n, dtype=torch.float64).to(dtype)
    specials = torch.arange(2 * lo, 2 * hi + 1, dtype=torch.float64).to(dtype) / 2  # k/2
    up = torch.nextafter(specials, specials + 1)
    down = torch.nextafter(specials, specials - 1)
    tiny = torch.tensor([-1e-30, 1e-30, -0.0, 0.0], dtype=dtype)
    return torch.cat([base, specials, up, down, tiny])


def np_soft_round(y, a):
    m = np.floor(y) + 0.5
    r = y - m
    return m + np.tanh(a * r) / (2 * np.tanh(a / 2))


def np_soft_round_inverse(y, a):
    m = np.floor(y) + 0.5
    r = y - m
    return m + np.arctanh(2 * r * np.tanh(a / 2)) / a


# ---------------------------------------------------------------------------
# soft rounding
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [1e-2, 0.5, 1.0, 5.0, 20.0])
def test_soft_round_matches_numpy_reference(alpha):
    y = np.linspace(-3.3, 3.3, 661)
    got = soft_round(torch.from_numpy(y), alpha).numpy()
    np.testing.assert_allclose(got, np_soft_round(y, alpha), rtol=0, atol=1e-12)
    # inverse against the reference away from the steep ends
    x = y[np.abs(y - np.round(y)) > 0.05]
    got_inv = soft_round_inverse(torch.from_numpy(x), alpha).numpy()
    np.testing.assert_allclose(got_inv, np_soft_round_inverse(x, alpha), rtol=0, atol=1e-9)


def test_soft_round_properties():
    y = grid(torch.float64)
    for a in [0.3, 5.0, 50.0]:
        s = soft_round(y, a)
        ints = torch.arange(-3.0, 4.0, dtype=torch.float64)
        assert torch.equal(soft_round(ints, a), ints)  # integers are fixed points
        assert torch.allclose(soft_round(y + 1, a), s + 1, atol=1e-12)  # periodic offset
        ys, _ = torch.sort(y)
        assert (torch.diff(soft_round(ys, a)) >= 0).all()  # monotone


@pytest.mark.parametrize("alpha", [0.0, 1e-6, 1e-4, 1e-3 * (1 - 1e-9)])
def test_small_alpha_is_identity(alpha):
    for dtype in DTYPES:
        y = grid(dtype)
        for f in FUNCTIONS:
            assert (f(y, alpha) - y).abs().max().item() <= 1e-6, f.__name__
    y = grid(torch.float64)
    assert torch.equal(soft_round(y, 0.0), y)
    assert torch.equal(soft_round_inverse(y, 0.0), y)


def test_small_alpha_switch_is_continuous():
    y = grid(torch.float64)
    for f in [soft_round, soft_round_inverse]:
        below = f(y, 1e-3 * (1 - 1e-9))
        above = f(y, 1e-3 * (1 + 1e-9))
        assert (below - above).abs().max().item() < 1e-12


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_alpha_is_rounding(dtype):
    y = grid(dtype)
    frac = torch.remainder(y.double(), 1.0)
    away_from_half = (frac - 0.5).abs() > 1e-5
    s = soft_round(y, 1e6)
    assert (s - torch.round(y))[away_from_half].abs().max().item() <= 1e-6
    # the conditional mean tends to round as well (the hard-rounding posterior mean)
    z = grid(dtype)
    cm = soft_round_conditional_mean(z, 1e6)
    away = ((torch.remainder(z.double(), 1.0) - 0.5).abs() > 1e-3)
    assert (cm - torch.round(z))[away].abs().max().item() <= 1e-4


@pytest.mark.parametrize("alpha", [0.0, 1e-6, 1e-2, 1.0, 5.0, 10.0])
def test_inverse_round_trip(alpha):
    y = grid(torch.float64)
    assert (soft_round_inverse(soft_round(y, alpha), alpha) - y).abs().max().item() < 1e-9
    assert (soft_round(soft_round_inverse(y, alpha), alpha) - y).abs().max().item() < 1e-12
    yf = grid(torch.float32)
    assert (soft_round(soft_round_inverse(yf, alpha), alpha) - yf).abs().max().item() < 1e-5


def test_inverse_round_trip_large_alpha_where_sensible():
    # s is numerically flat at alpha = 1e6, but s(s^{-1}(x)) = x away from integers.
    x = torch.linspace(-2.9, 2.9, 581, dtype=torch.float64)
    x = x[(x - torch.round(x)).abs() > 1e-3]
    assert (soft_round(soft_round_inverse(x, 1e6), 1e6) - x).abs().max().item() < 1e-6
    ints = torch.arange(-3.0, 4.0, dtype=torch.float64)
    for dtype in DTYPES:
        assert torch.equal(soft_round_inverse(ints.to(dtype), 1e6), ints.to(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda f: f.__name__)
def test_finite_values_and_gradients(fn, alpha, dtype):
    y = grid(dtype).requires_grad_()
    a = torch.tensor(alpha, dtype=dtype, requires_grad=True)
    out = fn(y, a)
    gy, ga = torch.autograd.grad(out.sum(), [y, a])
    assert torch.isfinite(out).all()
    assert torch.isfinite(gy).all()
    assert torch.isfinite(ga).all()
    # also with a float alpha and a broadcast tensor alpha
    y2 = grid(dtype).requires_grad_()
    out2 = fn(y2, alpha)
    (g2,) = torch.autograd.grad(out2.sum(), [y2])
    assert torch.isfinite(g2).all()
    assert torch.equal(out2.detach(), out.detach())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype):
    for alpha in [0.0, 1e-6, 1e-2, 5.0, 1e3]:
        for f in FUNCTIONS:
            y = grid(dtype).requires_grad_()
            out = f(y, alpha)
            (g,) = torch.autograd.grad(out.float().sum(), [y])
            assert out.dtype == dtype
            assert torch.isfinite(out).all() and torch.isfinite(g).all()
            ref = f(y.detach().float(), alpha).to(dtype)
            assert torch.equal(out, ref)


def test_gradients_are_correct_moderate_alpha():
    y = torch.tensor([-1.0, -0.5, 0.0, 0.2, 0.5, 1.3], dtype=torch.float64, requires_grad=True)
    for alpha in [1e-2, 0.5, 5.0]:
        a = torch.tensor(alpha, dtype=torch.float64, requires_grad=True)
        for f in FUNCTIONS:
            assert torch.autograd.gradcheck(f, (y, a), eps=1e-7, atol=1e-5, rtol=1e-4)


def test_per_element_alpha():
    y = torch.linspace(-2, 2, 41, dtype=torch.float64).reshape(41, 1).repeat(1, 3)
    alpha = torch.tensor([0.0, 2.0, 8.0], dtype=torch.float64)
    out = soft_round(y, alpha)
    for j in range(3):
        assert torch.equal(out[:, j], soft_round(y[:, j], float(alpha[j])))


@pytest.mark.parametrize("alpha", ALPHAS)
def test_conditional_mean_finite_and_monotone(alpha):
    for dtype in DTYPES:
        z = torch.linspace(-3, 3, 6001, dtype=torch.float64).to(dtype)
        cm = soft_round_conditional_mean(z, alpha)
        assert torch.isfinite(cm).all()
        assert (torch.diff(cm) >= 0).all()


def test_conditional_mean_is_posterior_mean():
    # Y uniform on a long interval, Z = s(Y) + U: E[Y | Z near z] by Monte Carlo.
    g = torch.Generator().manual_seed(3)
    alpha = 4.0
    y = torch.rand(400_000, generator=g, dtype=torch.float64) * 6 - 3
    z = soft_round(y, alpha) + torch.rand(y.shape, generator=g, dtype=torch.float64) - 0.5
    for z0 in [-1.2, -0.5, 0.1, 0.45, 0.8]:
        sel = (z - z0).abs() < 0.01
        assert abs(y[sel].mean().item() - soft_round_conditional_mean(
            torch.tensor(z0, dtype=torch.float64), alpha).item()) < 0.02


def test_soft_round_bad_inputs():
    y = torch.zeros(3)
    with pytest.raises(ValueError, match="y"):
        soft_round(torch.tensor([0.0, float("nan")]), 1.0)
    with pytest.raises(ValueError, match="y"):
        soft_round_inverse(torch.tensor([float("inf")]), 1.0)
    with pytest.raises(ValueError, match="z"):
        soft_round_conditional_mean(torch.tensor([float("-inf")]), 1.0)
    with pytest.raises(ValueError, match="alpha"):
        soft_round(y, -1.0)
    with pytest.raises(ValueError, match="alpha"):
        soft_round(y, float("nan"))
    with pytest.raises(ValueError, match="alpha"):
        soft_round(y, float("inf"))
    with pytest.raises(ValueError, match="alpha"):
        soft_round(y, torch.tensor([1.0, -2.0, 1.0]))
    with pytest.raises(ValueError, match="alpha"):
        soft_round(y, torch.ones(4))  # wrong shape
    with pytest.raises(ValueError, match="alpha"):
        soft_round(y, torch.ones(2, 3))  # would enlarge the output
    with pytest.raises(TypeError, match="y"):
        soft_round(torch.zeros(3, dtype=torch.int64), 1.0)
    with pytest.raises(TypeError, match="y"):
        soft_round([0.1, 0.2], 1.0)
    with pytest.raises(TypeError, match="alpha"):
        soft_round(y, "sharp")
    with pytest.raises(TypeError, match="alpha"):
        soft_round(y, True)
    with pytest.raises(ValueError, match="eps"):
        soft_round(y, 1.0, eps=0.0)


# ---------------------------------------------------------------------------
# the channel
# ---------------------------------------------------------------------------


def test_shared_dither_range_and_reproducible():
    u = _shared_dither(5, (1000, 3))
    assert u.dtype == np.float64 and u.shape == (1000, 3)
    assert u.min() >= -0.5 and u.max() < 0.5
    assert np.array_equal(u, _shared_dither(5, (1000, 3)))
    assert not np.array_equal(u, _shared_dither(6, (1000, 3)))


def test_training_gradients_flow():
    ch = UniformNoiseChannel(generator=torch.Generator().manual_seed(0))
    ch.train()
    y = torch.randn(50, generator=torch.Generator().manual_seed(1), requires_grad=True)
    out = ch(y)
    assert ((out - y).abs() <= 0.5).all()
    out.sum().backward()
    assert torch.equal(y.grad, torch.ones_like(y))  # straight identity

    # soft-rounding mode with the conditional-mean reconstruction, and the rate term
    ch = UniformNoiseChannel(3, alpha=2.0, generator=torch.Generator().manual_seed(1))
    y = torch.randn(8, 3, 5, generator=torch.Generator().manual_seed(2), requires_grad=True)
    out, bits = ch(y, return_bits=True)
    assert out.shape == y.shape and bits.shape == y.shape
    (out.sum() + bits.sum()).backward()
    assert torch.isfinite(y.grad).all() and (y.grad.abs() > 0).any()
    assert torch.isfinite(ch.loc.grad).all() and (ch.loc.grad != 0).all()
    assert torch.isfinite(ch.log_scale.grad).all() and (ch.log_scale.grad != 0).all()


def test_training_noise_reproducible_with_generator_or_seed():
    y = torch.zeros(100)
    a = UniformNoiseChannel(generator=torch.Generator().manual_seed(4))(y)
    b = UniformNoiseChannel(generator=torch.Generator().manual_seed(4))(y)
    assert torch.equal(a, b)
    ch = UniformNoiseChannel()
    assert torch.equal(ch(y, seed=9), ch(y, seed=9))


def test_eval_forward_is_dequantize_of_quantize():
    ch = UniformNoiseChannel(2, channel_dim=-1)
    ch.eval()
    y = torch.randn(30, 2, generator=torch.Generator().manual_seed(3))
    k = ch.quantize(y, 11)
    assert k.dtype == torch.int64
    u = torch.from_numpy(_shared_dither(11, y.shape))
    assert torch.equal(k, torch.round(y.double() - u).long())
    out = ch(y, 11)
    assert torch.equal(out, ch.dequantize(k, 11, dtype=y.dtype))
    assert torch.equal(out, (k.double() + u).float())
    assert ((out.double() - y.double()).abs() <= 0.5 + 1e-6).all()


def test_bits_equal_conditional_pmf():
    ch = UniformNoiseChannel(loc=0.3, scale=1.7, learnable=False)
    z = torch.linspace(-40, 40, 801, dtype=torch.float64)
    # the module stores float32 parameters: compare with exactly those
    sf = stats.logistic(loc=ch.loc.double().item(), scale=ch.scale.double().item())
    zn = z.numpy()
    # reference from scipy, using the survival function in the upper tail
    mass = np.where(zn < sf.mean(), sf.cdf(zn + 0.5) - sf.cdf(zn - 0.5), sf.sf(zn - 0.5) - sf.sf(zn + 0.5))
    ref = -np.log2(mass)
    finite = np.isfinite(ref) & (ref < 40)
    np.testing.assert_allclose(ch.bits(z).numpy()[finite], ref[finite], rtol=1e-9)
    assert torch.isfinite(ch.bits(z)).all()  # also deep in the tails
    # P(K = k | U = u) sums to one over k
    u = 0.237
    k = torch.arange(-200, 201, dtype=torch.float64)
    assert abs((2.0 ** -ch.bits(k + u)).sum().item() - 1.0) < 1e-12


@pytest.mark.parametrize(
    "kwargs, shape, dtype",
    [
        (dict(), (10_000,), torch.float32),
        (dict(num_channels=4, loc=[0.0, 1.0, -2.0, 0.5], scale=[1.0, 2.0, 0.5, 3.0]), (25, 4, 10, 10),
         torch.float32),
        (dict(alpha=3.0), (100, 100), torch.float64),
        (dict(alpha=1e6, conditional_mean=False, scale=2.0), (10_000,), torch.float32),
    ],
)
def test_compress_round_trip_and_rate(kwargs, shape, dtype):
    ch = UniformNoiseChannel(**kwargs)
    ch.eval()
    g = torch.Generator().manual_seed(0)
    scale = ch.scale.detach().double()
    loc = ch.loc.detach().double()
    if ch.num_channels > 1:
        view = [1] * len(shape)
        view[ch.channel_dim] = ch.num_channels
        scale, loc = scale.reshape(view), loc.reshape(view)
    # samples from the model's own logistic marginal
    p = torch.rand(shape, generator=g, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
    y = (loc + scale * torch.log(p / (1 - p))).to(dtype)
    data, st = ch.compress(y, 2024, return_stats=True)
    assert isinstance(data, bytes)
    out = ch.decompress(data, 2024, shape)
    ref = ch(y, 2024)
    assert out.dtype == dtype and torch.equal(out, ref)  # bit-exact
    assert st["measured_bits"] == 8 * len(data)
    assert st["num_symbols"] == math.prod(shape)
    ideal = st["ideal_bits"]
    assert ideal == pytest.approx(ch.ideal_bits(y, 2024))
    assert 0.99 * ideal - 32 <= st["measured_bits"] <= 1.01 * ideal + 32
    # the ideal cost is the training-time rate evaluated at K + U
    z = ch.dequantize(ch.quantize(y, 2024), 2024, dtype=torch.float64) if ch.alpha is None else None
    if z is not None:
        assert ch.bits(z).sum().item() == pytest.approx(ideal, rel=1e-5)


def test_compress_escapes_and_edge_cases():
    ch = UniformNoiseChannel()
    ch.eval()
    y = torch.randn(500, generator=torch.Generator().manual_seed(5))
    y[3], y[100], y[499] = 1e6, -2.5e4, 40.0
    data, st = ch.compress(y, 77, return_stats=True)
    assert st["num_escapes"] == 3
    assert torch.equal(ch.decompress(data, 77, y.shape), ch(y, 77))
    assert st["measured_bits"] < st["ideal_bits"]  # escapes are cheaper than the logistic tail
    # a different seed is rejected: the stream's checksum covers it
    for other_seed in (78, 79, 80):
        with pytest.raises(ValueError, match="checksum"):
            ch.decompress(data, other_seed, y.shape)
    empty = torch.empty(0, 5)
    assert ch.decompress(ch.compress(empty, 1), 1, (0, 5)).shape == (0, 5)
    scalar = torch.tensor(0.3)
    assert torch.equal(ch.decompress(ch.compress(scalar, 1), 1, ()), ch(scalar, 1))


# ---------------------------------------------------------------------------
# distribution: test-time universal quantisation == training-time noise
# ---------------------------------------------------------------------------

N_DIST = 20_000
Y0 = 0.37


@pytest.fixture(scope="module")
def noise_samples():
    y = torch.tensor([Y0], dtype=torch.float64)
    ch = UniformNoiseChannel(generator=torch.Generator().manual_seed(12345))
    ch.eval()
    seeds = range(N_DIST)
    eval_out = torch.cat([ch(y, s) for s in seeds]).numpy()
    dither = np.concatenate([_shared_dither(s, (1,)) for s in seeds])
    ch.train()
    train_out = ch(y.expand(N_DIST).contiguous()).numpy()
    return {
        "eval": eval_out - Y0,
        "train": train_out - Y0,
        # non-subtractive dither: round(y) + U
        "broken_round": np.round(Y0) + dither - Y0,
        # wrong sign of the dither at the decoder: round(y - U) - U
        "broken_sign": np.round(Y0 - dither) - dither - Y0,
    }


def _ks_uniform(x):
    return stats.kstest(x, stats.uniform(loc=-0.5, scale=1.0).cdf).pvalue


def test_eval_and_train_noise_have_same_distribution(noise_samples):
    e, t = noise_samples["eval"], noise_samples["train"]
    assert e.size == t.size == N_DIST
    assert e.min() >= -0.5 - 1e-12 and e.max() <= 0.5 + 1e-12
    assert _ks_uniform(e) > 1e-3
    assert _ks_uniform(t) > 1e-3
    assert stats.ks_2samp(e, t).pvalue > 1e-3


@pytest.mark.parametrize("broken", ["broken_round", "broken_sign"])
def test_distribution_test_has_power(noise_samples, broken):
    b = noise_samples[broken]
    assert _ks_uniform(b) < 1e-10
    assert stats.ks_2samp(b, noise_samples["train"]).pvalue < 1e-10


def test_soft_round_mode_same_distribution():
    n = 5000
    y = torch.tensor([Y0], dtype=torch.float64)
    ch = UniformNoiseChannel(alpha=2.5, generator=torch.Generator().manual_seed(7))
    ch.eval()
    eval_out = torch.cat([ch(y, s) for s in range(n)]).numpy()
    ch.train()
    train_out = ch(y.expand(n).contiguous()).numpy()
    assert stats.ks_2samp(eval_out, train_out).pvalue > 1e-3
    # without the universal dither (plain rounding of the soft-rounded value) it differs
    hard = soft_round_conditional_mean(torch.round(soft_round(y, 2.5)).expand(n) + (
        torch.from_numpy(np.concatenate([_shared_dither(s, (1,)) for s in range(n)]))), 2.5)
    assert stats.ks_2samp(hard.numpy(), train_out).pvalue < 1e-10


# ---------------------------------------------------------------------------
# bad inputs of the channel
# ---------------------------------------------------------------------------


def test_channel_bad_inputs():
    ch = UniformNoiseChannel(3)
    y = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="y"):
        ch(torch.zeros(2, 4))  # wrong number of channels
    with pytest.raises(ValueError, match="y"):
        ch(torch.tensor([[0.0, float("nan"), 0.0]]))
    with pytest.raises(TypeError, match="y"):
        ch(torch.zeros(2, 3, dtype=torch.int32))
    ch.eval()
    with pytest.raises(ValueError, match="seed"):
        ch(y)
    with pytest.raises(ValueError, match="seed"):
        ch.quantize(y, -1)
    with pytest.raises(ValueError, match="seed"):
        ch.quantize(y, 2**64)
    with pytest.raises(TypeError, match="seed"):
        ch.quantize(y, 1.5)
    with pytest.raises(TypeError, match="seed"):
        ch.quantize(y, True)
    with pytest.raises(ValueError, match="y"):
        ch.quantize(torch.full((1, 3), 1e17, dtype=torch.float64), 0)
    with pytest.raises(TypeError, match="k"):
        ch.dequantize(torch.zeros(2, 3), 0)
    with pytest.raises(TypeError, match="data"):
        ch.decompress("abc", 0, (2, 3))
    with pytest.raises(ValueError, match="data"):
        ch.decompress(b"\x00\x01", 0, (2, 3))
    data = ch.compress(y, 0)
    with pytest.raises(ValueError, match="shape"):
        ch.decompress(data, 0, (2, 4))
    with pytest.raises(ValueError, match="shape"):
        ch.decompress(data, 0, (2, -3))
    with pytest.raises(TypeError, match="shape"):
        ch.decompress(data, 0, (2, 3.0))
    with pytest.raises(ValueError, match="scale"):
        UniformNoiseChannel(scale=-1.0)
    with pytest.raises(ValueError, match="scale"):
        UniformNoiseChannel(2, scale=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="loc"):
        UniformNoiseChannel(loc=float("nan"))
    with pytest.raises(ValueError, match="alpha"):
        UniformNoiseChannel(alpha=-0.5)
    with pytest.raises(ValueError, match="alpha"):
        ch.alpha = float("inf")
    with pytest.raises(TypeError, match="num_channels"):
        UniformNoiseChannel(2.0)
    with pytest.raises(ValueError, match="num_channels"):
        UniformNoiseChannel(0)
