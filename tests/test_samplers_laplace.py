"""Tree samplers on Laplace targets: exactness under Normal and Uniform priors, a wrong split, sigma, errors.

A Laplace target is always truncated (``rcc.Laplace(tail_mass=...)``): under a
Normal prior its heavier tails make the density ratio unbounded, and under a
Uniform prior its support must fit inside the prior's.  The samplers sample the
truncated Laplace exactly, so the battery's reference is its exact CDF.
"""

import numba
import numpy as np
import pytest

import rcc
from rcc import samplers, testing
from rcc.random import private_key

METHODS = samplers.SAMPLER_METHODS
N = 20_000
NORMAL_PRIOR = rcc.Normal(0.0, 1.0)


def _laplace(loc, scale, tail_mass, n=N):
    return rcc.Laplace(np.full(n, float(loc)), np.full(n, float(scale)), tail_mass=tail_mass)


# (name, (loc, scale, tail_mass), prior)
BATTERY = [
    ("scale 0.1 near the mean", (0.3, 0.1, 1e-3), NORMAL_PRIOR),
    ("scale 1, ratio highest at the ends (convex pieces)", (0.0, 1.0, 0.05), NORMAL_PRIOR),
    ("scale 0.01 in the tail", (2.0, 0.01, 1e-6), NORMAL_PRIOR),
    ("under a uniform prior", (1.0, 0.3, 1e-3), rcc.Uniform(-2.0, 4.0)),
    ("narrow, under a uniform prior", (0.2, 1e-3, 1e-4), rcc.Uniform(0.0, 1.0)),
]


@pytest.mark.parametrize("method", METHODS)
def test_laplace_exactness_battery(method):
    cases = []
    for k, (name, (loc, scale, tail), prior) in enumerate(BATTERY):
        if method == "gprs" and ("tail" in name or "narrow" in name):
            continue  # global GPRS examines ~ r_max candidates (2**6 .. 2**9 here): covered by the wider cases
        target = _laplace(loc, scale, tail)
        enc = rcc.encode_sample(target, 700 + k, prior=prior, method=method)
        decoded = rcc.decode_sample(enc.index, enc.factor, 700 + k, prior=prior, method=method)
        assert np.array_equal(decoded, enc.sample)
        assert np.allclose(enc.tail_mass, tail)
        cases.append(testing.BatteryCase(f"{method}: {name}", enc.sample, rcc.Laplace(loc, scale, tail_mass=tail).cdf))
    testing.assert_battery_passes(testing.run_battery(cases))


@pytest.mark.parametrize("method", ["astar", "gprs-dyadic", "grc-sample"])
def test_test_of_the_test_wrong_split_fails(method):
    """Splitting the ratio's two pieces a quarter scale away from the mode (wrong bounds, stretch
    function or residual masses; the density itself unchanged) is detected by the battery."""
    target = _laplace(0.3, 0.05, 1e-4)
    params, _, _, _ = samplers.core._params(target, NORMAL_PRIOR, 0.0)
    params[:, samplers.kernels.P_VERTEX] += 0.25 * 0.05
    _, sample, _, status = samplers.core._run_search(params, 5, private_key(5), 0, method, 2**20)
    assert not status.any()
    reference = rcc.Laplace(0.3, 0.05, tail_mass=1e-4)
    result = testing.run_battery([testing.BatteryCase("wrong split", sample, reference.cdf)])
    assert not result.passed


def test_laplace_log_ratio_max_is_the_supremum():
    from scipy import stats

    for (loc, scale, tail), prior in [((0.3, 0.1, 1e-3), NORMAL_PRIOR), ((0.0, 1.0, 0.05), NORMAL_PRIOR),
                                      ((1.0, 0.3, 1e-3), rcc.Uniform(-2.0, 4.0))]:
        target = rcc.Laplace(loc, scale, tail_mass=tail)
        z = np.linspace(target.low, target.high, 400001)
        prior_logpdf = (stats.norm.logpdf(z, prior.mean, prior.std) if isinstance(prior, rcc.Normal)
                        else -np.log(prior.high - prior.low))
        brute = np.max(target.logpdf(z) - prior_logpdf) / np.log(2.0)
        got = samplers.log_ratio_max(target, prior=prior)
        assert brute - 1e-9 <= got <= brute + 1e-6


@pytest.mark.parametrize("loc, scale, tail", [(0.3, 0.2, 1e-3), (0.0, 1.0, 0.05)])
def test_laplace_stretch_function_matches_quadrature(loc, scale, tail):
    """sigma(h) = int_0^h d eta / E_P[(r - eta)_+] against a brute-force excess on a fine grid."""
    from scipy import integrate, stats

    target = rcc.Laplace(loc, scale, tail_mass=tail)
    z = np.linspace(target.low, target.high, 400001)
    ratio = np.exp(target.logpdf(z) - stats.norm.logpdf(z))
    weight = stats.norm.pdf(z) * (z[1] - z[0])
    r_max = ratio.max()

    def excess(eta):
        return np.sum(np.maximum(ratio - eta, 0.0) * weight)

    for fraction in (0.3, 0.8):
        h = fraction * r_max
        reference = integrate.quad(lambda e: 1.0 / excess(e), 0.0, h, limit=200)[0]
        np.testing.assert_allclose(samplers.stretch_function(target, h), reference, rtol=2e-4)


def test_laplace_messages_through_bytes():
    rng = np.random.default_rng(6)
    locs = rng.normal(0.0, 0.8, 3000)
    fit = rcc.encode_sample(rcc.Laplace(locs, 0.01), 1, method="grc-dyadic")
    code = samplers.TreeIndexCode.fit(fit.index)
    enc = rcc.encode_sample(rcc.Laplace(locs[:2000] + 0.01, 0.01), 9, method="grc-dyadic")
    data = samplers.encode_tree_messages(enc, 9, index_code=code)
    index = samplers.decode_tree_messages(data, 2000, 9, index_code=code, method="grc-dyadic")
    assert np.array_equal(index, enc.index)
    assert np.array_equal(rcc.decode_sample(index, 0, 9, method="grc-dyadic"), enc.sample)
    assert 8 * len(data) / 2000 < np.mean(enc.kl_bits) + 4


def test_laplace_bad_inputs():
    with pytest.raises(ValueError, match="inside the Uniform prior"):
        rcc.encode_sample(rcc.Laplace(0.9, 0.1), 1, prior=rcc.Uniform(0.0, 1.0), method="grc-dyadic")
    quartic = rcc.GeneralTarget(_quartic, -1.0, 1.0, mode=0.0)
    # a mode alone does not make the ratio to a Normal prior unimodal (-z**4 is only 0-strongly concave)
    with pytest.raises(ValueError, match="log_concavity >= 1 / prior.std"):
        rcc.encode_sample(quartic, 1, method="gprs-dyadic")


@numba.njit(cache=True)
def _quartic(z):
    return -z**4


@pytest.mark.parametrize("prior", [NORMAL_PRIOR, rcc.Normal(0.5, 2.0), rcc.Uniform(-3.0, 4.0)])
def test_laplace_closed_form_kl_matches_quadrature(prior):
    target = rcc.Laplace(np.array([0.3, -1.0, 2.0]), np.array([0.1, 0.5, 1e-3]), tail_mass=1e-4)
    np.testing.assert_allclose(samplers.core._laplace_kl_bits(target, prior), target.kl_divergence_bits(prior),
                               rtol=1e-9, atol=1e-9)
