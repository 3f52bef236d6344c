"""Tests of rcc.general: general 1-D targets coded exactly, decoded by rcc.decode_sample."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from scipy import integrate, stats

import rcc
from rcc import testing as rt
from rcc.general import (
    GaussianMixture,
    GeneralTarget,
    Laplace,
    ScaledBeta,
    encode_general,
    general_width,
)

ALPHA = 1e-3
N = 20_000


@numba.njit
def quartic_unnormalised(z):
    """exp(-z^4) on [-1.5, 1.5]: unimodal at 0, |d/dz| <= 4 * 1.5^3 = 13.5; not normalised."""
    return -(z**4)


@numba.njit
def nan_logpdf(z, params):
    return math.nan if z > params[0] else 0.0


def scalar_targets():
    """Ready-made targets (scalar versions) and a user target, with independent CDFs."""
    quartic = GeneralTarget(quartic_unnormalised, -1.5, 1.5, mode=0.0, lipschitz=13.5, name="quartic")
    z_norm = integrate.quad(lambda z: math.exp(-(z**4)), -1.5, 1.5, epsabs=1e-13)[0]

    def quartic_cdf(x):
        x = np.clip(np.asarray(x, float), -1.5, 1.5)
        flat = [integrate.quad(lambda z: math.exp(-(z**4)), -1.5, v, epsabs=1e-13)[0] / z_norm
                for v in x.ravel()]
        return np.reshape(flat, x.shape)

    return {
        "laplace": (lambda n: Laplace(np.full(n, 0.4), 0.05), Laplace(0.4, 0.05).cdf),
        "mixture": (lambda n: GaussianMixture(0.3, -0.1, 0.02, np.full(n, 0.1), 0.03),
                    GaussianMixture(0.3, -0.1, 0.02, 0.1, 0.03).cdf),
        "beta": (lambda n: ScaledBeta(2.0, 5.0, np.full(n, -0.2), 0.3), stats.beta(2.0, 5.0, -0.2, 0.5).cdf),
        "quartic": (lambda n: GeneralTarget(quartic_unnormalised, np.full(n, -1.5), 1.5, mode=0.0,
                                            lipschitz=13.5, name="quartic"), quartic_cdf),
    }, quartic


TARGETS, QUARTIC = scalar_targets()


def encode_batch_for(name, method, **kwargs):
    make, _ = TARGETS[name]

    def encode(n, seed):
        return encode_general(make(n), seed, method=method, **kwargs)

    def decode(enc, seed):
        return rcc.decode_sample(enc.index, enc.factor, seed, width=enc.width, method=method)

    return encode, decode


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("method", ["hybrid", "pfr"])
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_round_trip_is_bit_exact(name, method):
    encode, decode = encode_batch_for(name, method)
    samples = rt.draw_samples_batched(encode, decode, 500, seed=123)
    assert samples.shape == (500,)
    enc = encode(1, 7)
    assert enc.method == method and enc.index.shape == (1,) and (enc.index >= 1).all()
    if method == "pfr":
        assert (enc.factor == 0).all() and (enc.width == 1).all()


def test_scalar_target_returns_python_scalars_and_explicit_width():
    target = Laplace(-1.2, 0.01)
    width = general_width(target)
    assert isinstance(width, int) and width > 1
    for w in (None, "adaptive", width, width // 3):
        enc = encode_general(target, 5, width=w)
        assert isinstance(enc.index, int) and isinstance(enc.sample, float)
        assert rcc.decode_sample(enc.index, enc.factor, 5, width=enc.width) == enc.sample
        assert target.low <= enc.sample <= target.high
    assert encode_general(target, 5, width=width // 3).width == width // 3


def test_private_randomness_and_threads():
    target = Laplace(np.linspace(-2, 2, 300), 0.02)
    a = encode_general(target, 9, num_threads=1)
    b = encode_general(target, 9, num_threads=2)
    np.testing.assert_array_equal(a.index, b.index)
    np.testing.assert_array_equal(a.sample, b.sample)
    c = encode_general(target, 9, rng=np.random.default_rng(4))
    assert (c.index != a.index).any()
    np.testing.assert_array_equal(rcc.decode_sample(c.index, c.factor, 9, width=c.width), c.sample)


def test_uniform_prior_round_trip_and_exactness():
    prior = rcc.Uniform(0.0, 1.0)
    target = ScaledBeta(3.0, 2.0, np.full(N, 0.2), 0.3)
    enc = encode_general(target, 21, prior=prior)
    assert (enc.width == 10).all()
    z = rcc.decode_sample(enc.index, enc.factor, 21, prior=prior, width=enc.width)
    np.testing.assert_array_equal(z, enc.sample)
    assert rt.ks_check(z, stats.beta(3.0, 2.0, 0.2, 0.1).cdf, alpha=ALPHA).passed


# --------------------------------------------------------------------------- exactness


def test_battery_of_targets_and_methods_passes():
    cases = []
    for name, (make, cdf) in TARGETS.items():
        n = N if name != "quartic" else 4000  # the quartic's reference CDF is slow scipy quadrature
        for method in ("hybrid", "pfr"):
            encode, decode = encode_batch_for(name, method)
            samples = rt.draw_samples_batched(encode, decode, n, seed=31 if method == "hybrid" else 32)
            cases.append(rt.BatteryCase(f"{name}/{method}", samples, cdf))
    result = rt.run_battery(cases, alpha=ALPHA)
    rt.assert_battery_passes(result)


def test_batch_of_different_targets_is_exact():
    # Probability integral transform: z_i ~ q_i for all i  =>  F_i(z_i) ~ Uniform(0, 1).
    rng = np.random.default_rng(0)
    locs, scales = rng.normal(0.0, 1.0, N), np.exp(rng.uniform(-6, -1, N))
    target = Laplace(locs, scales)
    enc = encode_general(target, 77)
    pit = target.cdf(rcc.decode_sample(enc.index, enc.factor, 77, width=enc.width))
    assert rt.ks_check(pit, stats.uniform.cdf, alpha=ALPHA).passed


def test_far_general_targets_are_exact_and_cheap_with_the_default_transform():
    # A Laplace target 7 prior stds out, coded on the default transform's axis: exact and cheap.
    target = Laplace(np.full(N, 7.0), 0.01)
    enc = encode_general(target, 41)
    assert enc.candidates.mean() < 40
    z = rcc.decode_sample(enc.index, enc.factor, 41, width=enc.width)
    np.testing.assert_array_equal(z, enc.sample)
    assert rt.ks_check(z, Laplace(7.0, 0.01).cdf, alpha=ALPHA).passed
    # rcc.encode_sample hands the transform over.
    same = rcc.encode_sample(Laplace(7.0, 0.01), 41, transform=rcc.Normal(0.0, 3.0))
    assert rcc.decode_sample(same.index, same.factor, 41, width=same.width,
                             transform=rcc.Normal(0.0, 3.0)) == same.sample


def test_halved_w_max_is_detected_by_the_statistical_test():
    """Power: an underestimated bound (w_max / 2) must fail both checks; the runtime guard catches it too."""
    for name in ("laplace", "mixture", "beta"):
        make, cdf = TARGETS[name]
        target = make(N)
        halved = target.log_ratio_max() - math.log(2.0)
        enc = encode_general(target, 41, log_ratio_max=halved, check_bound=False)
        assert not rt.ks_check(enc.sample, cdf, alpha=ALPHA).passed, name
        assert not rt.chi2_check(enc.sample, cdf, alpha=ALPHA).passed, name
        with pytest.raises(RuntimeError, match="exceeded w_max"):
            encode_general(target, 41, log_ratio_max=halved)


# --------------------------------------------------------------------------- numerics


def test_numerical_cdf_normaliser_and_kl_match_closed_forms():
    for name in ("laplace", "mixture", "beta"):
        target = TARGETS[name][0](1)
        x = np.linspace(target.low[0], target.high[0], 101)
        np.testing.assert_allclose(GeneralTarget.cdf(target, x), target.cdf(x), atol=1e-10)
        np.testing.assert_allclose(target.log_normalizer, 0.0, atol=1e-10)  # ready-made logpdfs are normalised
    # KL of the Beta against N(0, 1) by independent quadrature.
    beta = ScaledBeta(2.0, 5.0, -0.2, 0.3)
    ref = stats.beta(2.0, 5.0, -0.2, 0.5)
    kl = integrate.quad(lambda z: ref.pdf(z) * (ref.logpdf(z) - stats.norm.logpdf(z)), -0.2, 0.3)[0]
    assert beta.kl_divergence_bits() == pytest.approx(kl / math.log(2.0), rel=1e-6)
    assert QUARTIC.log_normalizer == pytest.approx(
        math.log(integrate.quad(lambda z: math.exp(-(z**4)), -1.5, 1.5)[0]), abs=1e-10)
    assert QUARTIC.logpdf(0.0) == pytest.approx(-QUARTIC.log_normalizer)
    assert QUARTIC.logpdf(2.0) == -np.inf


def test_truncation_tail_masses():
    assert float(Laplace(0.0, 1.0, tail_mass=1e-3).tail_mass) == 1e-3
    mix = GaussianMixture(0.5, -1.0, 0.1, 1.0, 0.2, tail_mass=1e-4)
    assert 0 < float(mix.tail_mass) <= 1e-4
    assert float(ScaledBeta(2.0, 2.0).tail_mass) == 0.0


@pytest.mark.parametrize("certificate", [dict(mode=0.0), dict(lipschitz=13.5), dict(concavity=27.0),
                                         dict(mode=0.0, lipschitz=13.5, concavity=27.0)])
def test_each_certificate_alone_bounds_the_ratio(certificate):
    # exp(-z^4) on [-1.5, 1.5]: mode 0, |(log q)'| <= 4 * 1.5^3, -(log q)'' = 12 z^2 <= 27.
    target = GeneralTarget(quartic_unnormalised, -1.5, 1.5, **certificate)
    z = np.linspace(-1.5, 1.5, 400_001)
    for prior in (rcc.Normal(0.0, 1.0), rcc.Normal(-2.0, 0.5), rcc.Uniform(-2.0, 2.0)):
        log_prior = (stats.norm(float(prior.mean), float(prior.std)).logpdf(z) if isinstance(prior, rcc.Normal)
                     else np.full(z.shape, -math.log(4.0)))
        ratio = (target.logpdf(z) - log_prior).max()
        bound = float(target.log_ratio_max(prior))
        assert ratio <= bound <= ratio + 1e-3


@pytest.mark.parametrize("name", ["laplace", "mixture", "beta", "quartic"])
def test_certified_bound_is_an_upper_bound_and_tight(name):
    target = TARGETS[name][0](1)
    for prior in (rcc.Normal(0.0, 1.0), rcc.Normal(1.0, 0.3)):
        bound = float(target.log_ratio_max(prior)[0])
        z = np.linspace(target.low[0], target.high[0], 400_001)
        ratio = target.logpdf(z[:, None])[:, 0] - stats.norm(float(prior.mean), float(prior.std)).logpdf(z)
        assert bound >= ratio.max()
        assert bound <= ratio.max() + 0.01
    # Expected candidates of the race ~ w_max (docs/race.rst, 'What it costs'), on the coding transform's axis.
    for transform in (None, "prior"):
        enc = encode_general(TARGETS[name][0](4000), 3, transform=transform)
        expected = np.exp(float(target.log_ratio_max(rcc.coding_transform(None, transform))[0])) / enc.width[0]
        assert enc.candidates.mean() == pytest.approx(expected, rel=0.1)


# --------------------------------------------------------------------------- bad input


def test_bad_input_raises_clear_errors():
    with pytest.raises(TypeError, match="logpdf"):
        GeneralTarget(lambda z: -z * z, -1.0, 1.0, mode=0.0)
    with pytest.raises(ValueError, match="low must be < high"):
        GeneralTarget(quartic_unnormalised, 1.0, 1.0, mode=0.0)
    with pytest.raises(ValueError, match="high must be finite"):
        GeneralTarget(quartic_unnormalised, 0.0, np.inf, mode=0.0)
    with pytest.raises(ValueError, match="lipschitz"):
        GeneralTarget(quartic_unnormalised, -1.0, 1.0, lipschitz=-1.0)
    with pytest.raises(ValueError, match="concavity"):
        GeneralTarget(quartic_unnormalised, -1.0, 1.0, concavity=-np.inf)
    with pytest.raises(ValueError, match="scale"):
        Laplace(0.0, 0.0)
    with pytest.raises(ValueError, match="tail_mass"):
        Laplace(0.0, 1.0, tail_mass=0.0)
    with pytest.raises(TypeError, match="tail_mass"):
        Laplace(0.0, 1.0, tail_mass="small")
    with pytest.raises(ValueError, match="a and b"):
        ScaledBeta(0.5, 2.0)
    with pytest.raises(ValueError, match="weight"):
        GaussianMixture(1.0, 0.0, 1.0, 1.0, 1.0)
    uncertified = GeneralTarget(quartic_unnormalised, -1.0, 1.0)
    with pytest.raises(ValueError, match="cannot certify"):
        encode_general(uncertified, 1)
    target = Laplace(0.0, 0.01)
    with pytest.raises(TypeError, match="GeneralTarget"):
        encode_general(rcc.Normal(0.0, 1.0), 1)
    with pytest.raises(ValueError, match="method"):
        encode_general(target, 1, method="orc")
    with pytest.raises(ValueError, match="does not fit width"):
        encode_general(target, 1, width=general_width(target) + 1)
    with pytest.raises(ValueError, match="width applies"):
        encode_general(target, 1, method="pfr", width=3)
    with pytest.raises(TypeError, match="width"):
        encode_general(target, 1, width=2.5)
    with pytest.raises(ValueError, match="max_candidates"):
        encode_general(target, 1, method="pfr", max_candidates=4)
    with pytest.raises(TypeError, match="seed"):
        encode_general(target, -0.5)
    with pytest.raises(ValueError, match="Uniform prior"):
        encode_general(Laplace(0.9, 0.1), 1, prior=rcc.Uniform(0.0, 1.0))
    with pytest.raises(ValueError, match="NaN"):
        GeneralTarget(nan_logpdf, -1.0, 1.0, params=[0.5], mode=0.0)


@pytest.mark.parametrize("target", [
    Laplace(np.array([0.3, -1.0, 2.0]), np.array([0.05, 0.4, 1.5]), tail_mass=1e-3),
    Laplace(0.0, 1.0, tail_mass=0.5),
    GaussianMixture(np.array([0.3, 0.8]), np.array([-0.5, 0.1]), np.array([0.2, 0.05]), np.array([0.5, 0.2]),
                    np.array([0.3, 0.4])),
    ScaledBeta(np.array([2.0, 3.5, 1.0]), np.array([3.0, 2.0, 1.0]), -1.0, np.array([1.0, 0.5, 4.0])),
])
def test_ready_made_families_are_normalised_in_closed_form(target):
    # Their log density carries its exact normaliser, so log Z = 0 without quadrature; the
    # quadrature of the same density (smooth here) agrees.  A wrong normaliser in the
    # parameters (say log(2 scale) for the truncated Laplace's log(2 scale (1 - tail_mass))) fails.
    assert np.array_equal(target.log_normalizer, np.zeros(target.batch_shape))
    quadrature_log_z, _ = target._quadrature(rcc.Normal(0.0, 1.0))
    np.testing.assert_allclose(quadrature_log_z, 0.0, atol=1e-9)
