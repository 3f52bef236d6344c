"""rcc.targets: scipy-style parameters, conversion of frozen scipy.stats
distributions, and cdf / logpdf / pdf / rvs on every target.

The cases are tables, as in scipy.stats' own tests (``_distr_params``): each row
names a frozen scipy distribution and the rcc distribution it must equal.
"""

import numpy as np
import pytest
from scipy import stats

import rcc

# (id, frozen scipy.stats distribution, the rcc distribution it converts to)
SCIPY_CASES = [
    ("norm", stats.norm(0.3, 0.01), rcc.Normal(0.3, 0.01)),
    ("norm-kw", stats.norm(loc=-1.5, scale=2.0), rcc.Normal(-1.5, 2.0)),
    ("norm-default", stats.norm(), rcc.Normal(0.0, 1.0)),
    ("norm-batch", stats.norm([0.0, 1.0, 2.0], [0.5, 1.0, 1.5]), rcc.Normal([0.0, 1.0, 2.0], [0.5, 1.0, 1.5])),
    ("truncnorm", stats.truncnorm(-1.0, 2.0, loc=3.0, scale=0.5), rcc.TruncatedNormal(3.0, 0.5, 2.5, 4.0)),
    ("truncnorm-half", stats.truncnorm(0.0, np.inf), rcc.TruncatedNormal(0.0, 1.0, 0.0, np.inf)),
    ("uniform", stats.uniform(-1.0, 2.0), rcc.Uniform(-1.0, 1.0)),
    ("uniform-kw", stats.uniform(loc=0.25, scale=0.5), rcc.Uniform(0.25, 0.75)),
]

# Every target family, for the methods all of them have: (id, distribution, scipy reference or None).
TARGETS = [
    ("normal", rcc.Normal(0.3, 0.2), stats.norm(0.3, 0.2)),
    ("normal-batch", rcc.Normal([0.0, 1.0], [1.0, 0.1]), stats.norm([0.0, 1.0], [1.0, 0.1])),
    ("truncated", rcc.TruncatedNormal(0.0, 1.0, -0.5, 2.0), stats.truncnorm(-0.5, 2.0)),
    ("truncated-far", rcc.TruncatedNormal(0.0, 1.0, 3.0, np.inf), stats.truncnorm(3.0, np.inf)),
    ("uniform", rcc.Uniform(-2.0, 3.0), stats.uniform(-2.0, 5.0)),
]


def _grid(reference):
    lo, hi = reference.ppf(1e-6), reference.ppf(1 - 1e-6)
    lo, hi = np.broadcast_arrays(lo, hi)
    return np.linspace(lo, hi, 101)[1:-1]  # inside the support (scipy's uniform includes the upper end)


# --------------------------------------------------------------------------- conversion


@pytest.mark.parametrize("frozen, expected", [c[1:] for c in SCIPY_CASES], ids=[c[0] for c in SCIPY_CASES])
def test_from_scipy_gives_the_same_distribution(frozen, expected):
    got = rcc.from_scipy(frozen)
    assert type(got) is type(expected)
    for name, value in expected._params().items():
        np.testing.assert_allclose(got._params()[name], value, rtol=1e-15, atol=0, err_msg=name)
    x = _grid(frozen)
    np.testing.assert_allclose(got.cdf(x), frozen.cdf(x), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(got.logpdf(x), frozen.logpdf(x), rtol=1e-12)


@pytest.mark.skipif(not hasattr(stats, "Normal"), reason="scipy's newer distribution interface (scipy >= 1.15)")
def test_from_scipy_converts_the_newer_interface():
    normal = rcc.from_scipy(stats.Normal(mu=[0.0, 1.0], sigma=0.5))
    assert isinstance(normal, rcc.Normal)
    np.testing.assert_array_equal(normal.mean, [0.0, 1.0])
    np.testing.assert_array_equal(normal.std, [0.5, 0.5])
    standard = rcc.from_scipy(stats.Normal())
    assert (standard.mean, standard.std) == (0.0, 1.0)
    uniform = rcc.from_scipy(stats.Uniform(a=-1.0, b=2.0))
    assert isinstance(uniform, rcc.Uniform) and (uniform.low, uniform.high) == (-1.0, 2.0)
    enc = rcc.encode_sample(stats.Normal(mu=0.3, sigma=0.01), seed=2, prior=stats.Normal())
    ref = rcc.encode_sample(rcc.Normal(0.3, 0.01), seed=2)
    assert (enc.index, enc.sample) == (ref.index, ref.sample)
    with pytest.raises(TypeError, match="frozen scipy.stats distribution"):
        rcc.from_scipy(2.0 * stats.Normal() + 1.0)  # transformed distributions are not converted


def test_from_scipy_laplace_is_the_truncated_laplace_target():
    got = rcc.from_scipy(stats.laplace(0.4, 0.05))
    assert isinstance(got, rcc.Laplace)
    reference = rcc.Laplace(0.4, 0.05)
    np.testing.assert_array_equal(got.low, reference.low)
    np.testing.assert_array_equal(got.high, reference.high)
    assert float(got.tail_mass) == rcc.DEFAULT_TAIL_MASS
    wider = rcc.from_scipy(stats.laplace(0.4, 0.05), tail_mass=1e-6)
    assert float(wider.tail_mass) == 1e-6 and float(wider.high) > float(got.high)
    # Inside the truncation the CDF is scipy's, renormalised by the kept mass.
    x = np.linspace(0.3, 0.5, 7)
    full = stats.laplace(0.4, 0.05).cdf(x)
    np.testing.assert_allclose(got.cdf(x), (full - 0.5e-4) / (1 - 1e-4), rtol=1e-12)


@pytest.mark.parametrize("bad, error, match", [
    (stats.poisson(3.0), TypeError, "poisson has no rcc equivalent"),
    (stats.gamma(2.0), TypeError, "gamma has no rcc equivalent"),
    (stats.norm(0.0, -1.0), ValueError, "scale must be > 0"),
    (stats.norm(np.nan, 1.0), ValueError, "loc contains NaN"),
    (stats.uniform(0.0, 0.0), ValueError, "scale must be > 0"),
    (stats.truncnorm(1.0, -1.0), ValueError, "low must be < high"),
    (stats.truncnorm([-1.0, 0.0, 1.0], 2.0, loc=[0.0, 1.0]), ValueError, "parameter shapes do not broadcast"),
    (stats.norm([0.0, 1.0], [1.0, 2.0, 3.0]), ValueError, "parameter shapes do not broadcast"),
    (stats.norm("a"), TypeError, "loc must be real numbers"),
    (np.float64(1.0), TypeError, "frozen scipy.stats distribution"),
    ("norm", TypeError, "frozen scipy.stats distribution"),
])
def test_from_scipy_rejects_what_it_cannot_convert(bad, error, match):
    with pytest.raises(error, match=match):
        rcc.from_scipy(bad)


def test_from_scipy_tail_mass_is_for_laplace_only():
    with pytest.raises(TypeError, match="laplace only"):
        rcc.from_scipy(stats.norm(), tail_mass=1e-3)


# --------------------------------------------------------------------------- the coders accept scipy


# Targets the coders can encode under the default prior N(0, 1): (id, frozen, rcc equivalent).
ENCODE_CASES = [
    ("norm", stats.norm(0.3, 0.01), rcc.Normal(0.3, 0.01)),
    ("norm-batch", stats.norm([0.0, -1.0, 2.0], [0.1, 0.02, 0.5]), rcc.Normal([0.0, -1.0, 2.0], [0.1, 0.02, 0.5])),
    ("truncnorm", stats.truncnorm(-1.0, 2.0, loc=0.5, scale=0.1), rcc.TruncatedNormal(0.5, 0.1, 0.4, 0.7)),
    ("uniform", stats.uniform(0.25, 0.5), rcc.Uniform(0.25, 0.75)),
]


@pytest.mark.parametrize("frozen, expected", [c[1:] for c in ENCODE_CASES], ids=[c[0] for c in ENCODE_CASES])
def test_encode_sample_accepts_frozen_scipy_targets(frozen, expected):
    got = rcc.encode_sample(frozen, seed=3, width="adaptive")
    ref = rcc.encode_sample(expected, seed=3, width="adaptive")
    np.testing.assert_array_equal(got.index, ref.index)
    np.testing.assert_array_equal(got.factor, ref.factor)
    np.testing.assert_array_equal(got.sample, ref.sample)


def test_frozen_scipy_priors_encode_and_decode_like_rcc_priors():
    target = rcc.Normal(0.2, 0.05)
    for frozen, prior in [(stats.norm(0.0, 2.0), rcc.Normal(0.0, 2.0)), (stats.uniform(-1.0, 2.0), rcc.Uniform(-1, 1))]:
        got = rcc.encode_sample(target, seed=5, prior=frozen)
        ref = rcc.encode_sample(target, seed=5, prior=prior)
        assert (got.index, got.sample) == (ref.index, ref.sample)
        z = rcc.decode_sample(got.index, got.factor, seed=5, prior=frozen, width=got.width)
        assert z == ref.sample
    with pytest.raises(TypeError, match="prior must be rcc.Normal or rcc.Uniform"):
        rcc.encode_sample(target, seed=5, prior=stats.truncnorm(-1.0, 1.0))


def test_a_frozen_scipy_laplace_encodes_as_the_general_target():
    got = rcc.encode_sample(stats.laplace(0.4, 0.05), seed=3, prior=stats.norm())
    ref = rcc.encode_sample(rcc.Laplace(0.4, 0.05), seed=3)
    assert (got.index, got.sample) == (ref.index, ref.sample)
    assert rcc.decode_sample(got.index, got.factor, seed=3, width=got.width) == got.sample


# --------------------------------------------------------------------------- scipy's parameter names


def test_normal_takes_loc_and_scale():
    a, b = rcc.Normal(loc=[0.0, 1.0], scale=0.5), rcc.Normal([0.0, 1.0], 0.5)
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.std, b.std)
    np.testing.assert_array_equal(a.loc, a.mean)
    np.testing.assert_array_equal(a.scale, a.std)
    assert rcc.Normal(0.3, scale=0.1).std == 0.1


def test_truncated_normal_and_uniform_take_loc_and_scale():
    t = rcc.TruncatedNormal(loc=1.0, scale=2.0, low=0.0, high=np.inf)
    assert (t.mean, t.std, t.loc, t.scale) == (1.0, 2.0, 1.0, 2.0)
    u = rcc.Uniform(loc=-1.0, scale=4.0)
    assert (u.low, u.high, u.loc, u.scale) == (-1.0, 3.0, -1.0, 4.0)


@pytest.mark.parametrize("make, match", [
    (lambda: rcc.Normal(0.0, 1.0, loc=0.0), "mean or loc, not both"),
    (lambda: rcc.Normal(0.0, 1.0, scale=1.0), "std or scale, not both"),
    (lambda: rcc.Normal(0.0), "missing parameter std"),
    (lambda: rcc.Normal(scale=1.0), "missing parameter mean"),
    (lambda: rcc.Uniform(0.0, 1.0, loc=0.0, scale=1.0), "not both"),
    (lambda: rcc.Uniform(loc=0.0), "loc and scale go together"),
    (lambda: rcc.Uniform(0.0), "missing parameter low or high"),
    (lambda: rcc.TruncatedNormal(0.0, 1.0, low=0.0), "missing parameter low or high"),
])
def test_parameter_aliases_say_what_is_wrong(make, match):
    with pytest.raises(TypeError, match=match):
        make()


def test_errors_name_the_parameter_the_user_wrote():
    with pytest.raises(ValueError, match="scale must be > 0"):
        rcc.Normal(loc=0.0, scale=-1.0)
    with pytest.raises(ValueError, match="std must be > 0"):
        rcc.Normal(0.0, -1.0)
    with pytest.raises(ValueError, match="scale must be > 0"):
        rcc.Uniform(loc=0.0, scale=0.0)


# --------------------------------------------------------------------------- cdf, logpdf, pdf, rvs


@pytest.mark.parametrize("dist, reference", [c[1:] for c in TARGETS], ids=[c[0] for c in TARGETS])
def test_cdf_logpdf_pdf_match_scipy(dist, reference):
    x = _grid(reference)
    np.testing.assert_allclose(dist.cdf(x), reference.cdf(x), rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(dist.logpdf(x), reference.logpdf(x), rtol=1e-10)
    np.testing.assert_allclose(dist.pdf(x), reference.pdf(x), rtol=1e-10)


@pytest.mark.parametrize("dist, reference", [c[1:] for c in TARGETS], ids=[c[0] for c in TARGETS])
def test_rvs_follow_the_distribution(dist, reference):
    n = 20_000
    draws = dist.rvs(size=(n,) + dist.batch_shape, rng=12345)
    assert draws.shape == (n,) + dist.batch_shape and draws.dtype == np.float64
    # Through scipy's CDF, every batch element's draws must be uniform on [0, 1].
    uniforms = reference.cdf(draws).reshape(n, -1)
    for column in uniforms.T:
        assert stats.kstest(column, "uniform").pvalue > 1e-3


def test_rvs_test_has_power():
    # The same test rejects samples from a Normal shifted by 5% of its std.
    draws = rcc.Normal(0.05, 1.0).rvs(20_000, rng=12345)
    assert stats.kstest(draws, stats.norm(0.0, 1.0).cdf).pvalue < 1e-3


@pytest.mark.parametrize("dist", [c[1] for c in TARGETS], ids=[c[0] for c in TARGETS])
def test_rvs_sizes_and_reproducibility(dist):
    assert dist.rvs(rng=0).shape == dist.batch_shape
    assert dist.rvs((4, 3) + dist.batch_shape, rng=0).shape == (4, 3) + dist.batch_shape
    np.testing.assert_array_equal(dist.rvs(7, rng=1) if not dist.batch_shape else dist.rvs(rng=1),
                                  dist.rvs(7, rng=np.random.default_rng(1)) if not dist.batch_shape
                                  else dist.rvs(rng=np.random.default_rng(1)))
    assert np.isfinite(dist.rvs((1000,) + dist.batch_shape, rng=2)).all()


def test_rvs_rejects_bad_sizes():
    batch = rcc.Normal([0.0, 1.0], 1.0)
    with pytest.raises(ValueError, match="does not hold the parameters' shape"):
        batch.rvs(3, rng=0)
    with pytest.raises(ValueError, match="does not hold the parameters' shape"):
        batch.rvs((2, 1), rng=0)
    with pytest.raises(TypeError, match="size must be None, an int or a tuple"):
        batch.rvs(2.5, rng=0)
    with pytest.raises(ValueError, match="must not be negative"):
        rcc.Normal(0.0, 1.0).rvs(-1, rng=0)
    with pytest.raises(TypeError, match="size must be None"):
        rcc.Normal(0.0, 1.0).rvs(True, rng=0)


def test_product_targets():
    means, stds = np.array([[0.0, 1.0, -1.0], [0.5, 0.0, 2.0]]), np.array([[1.0, 0.5, 0.1], [1.0, 2.0, 0.3]])
    product = rcc.Product(rcc.Normal(means, stds))
    x = np.array([[0.1, 0.9, -1.05], [0.0, 0.0, 2.1]])
    np.testing.assert_allclose(product.logpdf(x), stats.norm(means, stds).logpdf(x).sum(axis=-1), rtol=1e-12)
    np.testing.assert_allclose(product.cdf(x), stats.norm(means, stds).cdf(x), rtol=1e-12)
    assert product.rvs(rng=0).shape == (2, 3)
    draws = product.rvs((5000, 2), rng=0)
    assert draws.shape == (5000, 2, 3)
    standardised = (draws - means) / stds
    for column in standardised.reshape(5000, -1).T:
        assert stats.kstest(column, stats.norm().cdf).pvalue > 1e-3
