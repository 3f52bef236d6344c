"""A* coding and greedy Poisson rejection sampling (rcc.samplers): round trips, exactness, runtime shape."""

import numpy as np
import pytest

import rcc
from rcc import samplers, testing
from rcc.random import private_key

METHODS = samplers.SAMPLER_METHODS
BRANCH_AND_BOUND = ("astar", "astar-dyadic", "gprs-sac", "gprs-dyadic", "grc-sample", "grc-dyadic")
PRIOR = rcc.Normal(0.0, 1.0)
N = 20_000


def _copies(target, n):
    return type(target)(**{k: np.full(n, float(v)) for k, v in target._params().items()})


def _round_trip(target, method, seed, prior=PRIOR, n=N, **kwargs):
    enc = rcc.encode_sample(_copies(target, n), seed, prior=prior, method=method, tail_mass=0.0, **kwargs)
    decoded = rcc.decode_sample(enc.index, enc.factor, seed, prior=prior, method=method)
    assert np.array_equal(decoded, enc.sample)
    return decoded, enc


# (name, target, prior): untruncated Normal targets, truncated, uniform, both priors,
# a U-shaped ratio (a Uniform target around a Normal prior's mean).
BATTERY = [
    ("std 0.3 near the mean", rcc.Normal(0.2, 0.3), PRIOR),
    ("std 0.01 in the tail", rcc.Normal(2.2, 0.01), PRIOR),
    ("std 1e-5 far in the upper tail (KL 31 bits)", rcc.Normal(4.5, 1e-5), PRIOR),
    ("truncated normal", rcc.TruncatedNormal(0.2, 0.3, -0.1, 0.4), PRIOR),
    ("wide truncated normal (convex ratio)", rcc.TruncatedNormal(0.0, 1.5, -1.0, 2.0), PRIOR),
    ("uniform target, U-shaped ratio", rcc.Uniform(-0.5, 0.7), PRIOR),
    ("uniform target and prior", rcc.Uniform(0.1, 0.15), rcc.Uniform(0.0, 1.0)),
    ("normal under a uniform prior", rcc.TruncatedNormal(1.0, 0.5, -1.0, 3.0), rcc.Uniform(-1.0, 3.0)),
]


def _reference(target):
    return target.truncate(0.0) if isinstance(target, rcc.Normal) else target


@pytest.mark.parametrize("method", METHODS)
def test_exactness_battery(method):
    cases = []
    for k, (name, target, prior) in enumerate(BATTERY):
        if method == "gprs" and "tail" in name:
            continue  # global GPRS examines ~ r_max = 2**11 candidates there; covered below at std 0.3
        samples, _ = _round_trip(target, method, seed=500 + k, prior=prior)
        ref = _reference(target)
        cases.append(testing.BatteryCase(f"{method}: {name}", samples, ref.cdf, ref.ppf))
    testing.assert_battery_passes(testing.run_battery(cases))


@pytest.mark.parametrize("method", ["astar", "gprs-dyadic", "grc-sample"])
def test_test_of_the_test_wrong_bound_fails(method):
    """A displaced mode (wrong bounds, stretch function or residual masses) is detected by the battery."""
    target = rcc.Normal(0.4, 0.01)
    params, _, _, _ = samplers.core._params(_copies(target, N), PRIOR, 0.0)
    params[:, samplers.kernels.P_VERTEX] += 0.01  # the bound's mode one std away from the truth
    key = private_key(5)
    _, sample, _, status = samplers.core._run_search(params, 5, key, 0, method, 2**20)
    assert not status.any()
    result = testing.run_battery([testing.BatteryCase("wrong bound", sample, target.cdf, target.ppf)])
    assert not result.passed


@pytest.mark.parametrize("method", METHODS)
def test_round_trip_scalar_threads_and_rng(method):
    target = rcc.Normal(np.linspace(-1.5, 1.5, 300), 0.05)
    one = rcc.encode_sample(target, 11, method=method, tail_mass=0.0, num_threads=1)
    two = rcc.encode_sample(target, 11, method=method, tail_mass=0.0, num_threads=2)
    assert np.array_equal(one.index, two.index) and np.array_equal(one.sample, two.sample)
    decoded = rcc.decode_sample(one.index, one.factor, 11, method=method, num_threads=2)
    assert np.array_equal(decoded, one.sample)
    scalar = rcc.encode_sample(rcc.Normal(0.3, 0.05), 11, method=method, tail_mass=0.0, rng=3)
    assert rcc.decode_sample(scalar.index, 0, 11, method=method) == scalar.sample
    assert scalar.method == method and scalar.width == 1 and scalar.factor == 0


@pytest.mark.parametrize("method", ["gprs-dyadic", "gprs", "grc-sample"])
def test_stream_offset_is_the_stream_of_the_element(method):
    means = np.linspace(-1.0, 1.0, 8)
    whole = samplers.encode_tree_sample(rcc.Normal(means, 0.2), 4, method=method)
    tail = samplers.encode_tree_sample(rcc.Normal(means[5:], 0.2), 4, method=method, stream_offset=5)
    assert np.array_equal(whole.index[5:], tail.index)
    assert np.array_equal(samplers.decode_tree_sample(tail.index, 4, method=method, stream_offset=5),
                          whole.sample[5:])


def test_sac_search_follows_one_path_and_matches_published_steps():
    """Sample-split searches take one path (heap depth = steps - 1); steps at I = 12 as published."""
    s = 2.0**-12
    mu = np.random.default_rng(1).normal(0.0, np.sqrt(1 - s * s), 4000)
    for method in ("astar", "gprs-sac"):
        enc = rcc.encode_sample(rcc.Normal(mu, s), 2, method=method, tail_mass=0.0)
        depth = np.floor(np.log2(enc.index)).astype(int)
        if method == "gprs-sac":
            assert np.array_equal(depth, enc.candidates - 1)
            assert abs(enc.candidates.mean() - 16.13) < 0.1 * 16.13  # Flamich (2023), Figure 2
        else:
            assert np.all(depth <= enc.candidates - 1)


def test_global_gprs_mean_steps_is_the_ratio_bound():
    """Global GPRS examines exp(D_inf) = r_max candidates on average per target (Flamich 2023, Section 3).

    Averaged over the Gaussian channel's targets (mu ~ N(0, 1 - s^2)) that mean diverges, since
    E[r_max] = E[exp(mu^2 / (2 (1 - s^2)))] / s is infinite: the sample mean there is heavy tailed.
    """
    target = rcc.Normal(np.full(6000, 0.8), 2.0**-4)
    r_max = float(2.0 ** samplers.log_ratio_max(rcc.Normal(0.8, 2.0**-4)))
    steps = rcc.encode_sample(target, 8, method="gprs", tail_mass=0.0, rng=9).candidates.astype(float)
    standard_error = steps.std() / np.sqrt(steps.size)
    assert abs(steps.mean() - r_max) < 4 * standard_error, (steps.mean(), r_max, standard_error)
    assert 4 * standard_error < 0.1 * r_max  # the test has power against a 10% error in the mean


def test_steps_grow_linearly_in_the_information():
    """Mean steps of the branch-and-bound variants, I = 2 .. 24 bits: increments stay bounded."""
    rng = np.random.default_rng(2)
    grid = (2, 8, 16, 24)
    for method in BRANCH_AND_BOUND:
        means = []
        for info in grid:
            s = 2.0**-info
            mu = rng.normal(0.0, np.sqrt(1 - s * s), 2000)
            means.append(rcc.encode_sample(rcc.Normal(mu, s), 3, method=method, tail_mass=0.0).candidates.mean())
        slopes = np.diff(means) / np.diff(grid)
        assert np.all(slopes > 0.5) and np.all(slopes < 2.0), (method, means)
        assert slopes[-1] < 1.3 * slopes[0] + 0.1, (method, means)


def test_messages_through_bytes():
    s = 2.0**-8
    rng = np.random.default_rng(3)
    fit = rcc.encode_sample(rcc.Normal(rng.normal(0, np.sqrt(1 - s * s), 5000), s), 1, method="gprs-dyadic",
                            tail_mass=0.0)
    code = samplers.heap_index_code(fit.index)
    enc = rcc.encode_sample(rcc.Normal(rng.normal(0, np.sqrt(1 - s * s), 2000), s), 9, method="gprs-dyadic",
                            tail_mass=0.0)
    data = samplers.encode_index_messages(enc, 9, index_code=code)
    index = samplers.decode_index_messages(data, 2000, 9, index_code=code)
    assert np.array_equal(index, enc.index)
    assert np.array_equal(rcc.decode_sample(index, 0, 9, method="gprs-dyadic"), enc.sample)
    bits = 8 * len(data) / 2000
    assert bits < 8 + 6  # bits above I = 8 (cf. 5.95 at I = 12 in Flamich 2023)


@pytest.mark.parametrize("method", ["astar", "gprs-sac", "grc-dyadic"])
def test_tree_messages_through_bytes(method):
    s = 2.0**-12
    rng = np.random.default_rng(4)
    fit = rcc.encode_sample(rcc.Normal(rng.normal(0, np.sqrt(1 - s * s), 3000), s), 1, method=method,
                            tail_mass=0.0)
    code = samplers.TreeIndexCode.fit(fit.index)
    assert samplers.TreeIndexCode.from_dict(code.to_dict()).to_dict() == code.to_dict()
    enc = rcc.encode_sample(rcc.Normal(rng.normal(0, np.sqrt(1 - s * s), 2000), s), 9, method=method,
                            tail_mass=0.0)
    data = samplers.encode_tree_messages(enc, 9, index_code=code)
    index = samplers.decode_tree_messages(data, 2000, 9, index_code=code, method=method)
    assert np.array_equal(index, enc.index)
    bits = 8 * len(data) / 2000
    # within 0.1 bits of the ideal information content, and under 3 bits above I = 12
    assert bits - code.bits(enc.index, 9, method=method).mean() < 0.1  # the header: 0.07 bits here
    assert bits < 12 + 3
    for bad, why in [(data[:-3], "corrupted or truncated"), (data[:8], "truncated"),
                     (data[:20] + bytes([data[20] ^ 1]) + data[21:], "corrupted")]:
        with pytest.raises(ValueError, match=why):
            samplers.decode_tree_messages(bad, 2000, 9, index_code=code, method=method)
    with pytest.raises(ValueError, match="another seed"):
        samplers.decode_tree_messages(data, 2000, 10, index_code=code, method=method)
    with pytest.raises(ValueError, match="count"):
        samplers.decode_tree_messages(data, 1999, 9, index_code=code, method=method)
    with pytest.raises(ValueError, match="method"):
        samplers.decode_tree_messages(data, 2000, 9, index_code=code, method="astar-dyadic")


def test_stretch_function_uniform_closed_form():
    # r = 20 on a support of prior mass 1/20: sigma(h) = -20 log(1 - h / 20)
    target, prior = rcc.Uniform(0.1, 0.15), rcc.Uniform(0.0, 1.0)
    levels = np.array([0.5, 5.0, 15.0, 19.9])
    got = samplers.stretch_function(target, levels, prior=prior)
    np.testing.assert_allclose(got, -20.0 * np.log1p(-levels / 20.0), rtol=1e-12)


def test_stretch_function_matches_adaptive_quadrature():
    from scipy import integrate, stats

    m, s = 0.3, 0.05
    vertex, curvature = m / (1 - s * s), -0.5 / s**2 + 0.5
    log_r = lambda z: stats.norm.logpdf(z, m, s) - stats.norm.logpdf(z)  # noqa: E731
    r_max = np.exp(log_r(vertex))

    def excess(eta):  # E_P[(r - eta)_+] over the superlevel interval
        half = np.sqrt((np.log(r_max) - np.log(eta)) / -curvature)
        return integrate.quad(lambda z: (np.exp(log_r(z)) - eta) * stats.norm.pdf(z), vertex - half,
                              vertex + half, epsabs=0, epsrel=1e-13, limit=200)[0]

    for fraction in (0.3, 0.99):
        h = fraction * r_max
        reference = integrate.quad(lambda e: 1.0 / excess(e), 0.0, h, epsabs=0, epsrel=1e-11, limit=400)[0]
        np.testing.assert_allclose(samplers.stretch_function(rcc.Normal(m, s), h), reference, rtol=1e-9)


def test_stretch_function_truncated_matches_quadrature():
    from scipy import integrate, stats

    target = rcc.TruncatedNormal(0.3, 0.2, 0.1, 1.5)
    z = np.linspace(0.1, 1.5, 200001)
    log_r = target.logpdf(z) - stats.norm.logpdf(z)
    r_max = np.exp(log_r.max())

    def excess(eta):
        mask = log_r >= np.log(eta)
        dz = z[1] - z[0]
        return np.sum((np.exp(log_r) - eta)[mask] * stats.norm.pdf(z[mask])) * dz

    h = 0.6 * r_max
    reference = integrate.quad(lambda e: 1.0 / excess(e), 0.0, h, limit=200)[0]
    np.testing.assert_allclose(samplers.stretch_function(target, h), reference, rtol=2e-3)


def test_bad_inputs():
    with pytest.raises(ValueError, match="unbounded"):
        rcc.encode_sample(rcc.Normal(0.0, 1.5), 1, method="astar", tail_mass=0.0)
    with pytest.raises(TypeError, match="one dimension"):
        rcc.encode_sample(rcc.Product(rcc.Normal(np.zeros((2, 2)), 0.1)), 1, method="gprs-sac")
    with pytest.raises(ValueError, match="width"):
        rcc.encode_sample(rcc.Normal(0.0, 0.1), 1, method="gprs-sac", width=4)
    with pytest.raises(ValueError, match="index must be >= 1"):
        rcc.decode_sample(0, 0, 1, method="astar")
    with pytest.raises(ValueError, match="factor must be 0"):
        rcc.decode_sample(3, 1, 1, method="astar")
    with pytest.raises(ValueError, match="max_candidates"):
        rcc.encode_sample(rcc.Normal(0.0, 1e-3), 1, method="gprs", tail_mass=0.0, max_candidates=4)
    with pytest.raises(ValueError, match="equal stds"):
        rcc.encode_sample(rcc.TruncatedNormal(0.0, 1.0, -1.0, 1.0), 1, method="gprs-dyadic")
    with pytest.raises(TypeError, match="EncodedSample"):
        samplers.encode_index_messages(rcc.encode_sample(rcc.Normal(0.0, 0.1), 1), 1,
                                       index_code=rcc.ZipfIndexCode(kl_bits=2.0))
