"""Tree samplers for general targets (rcc.GeneralTarget): A* coding with bounds from the certificate, GPRS and
greedy rejection coding with masses from the target's table; exactness, a wrong mode, refusals."""

import numba
import numpy as np
import pytest
from scipy import stats

import rcc
from rcc import testing

N = 20_000


@numba.njit(cache=True)
def _bump(z, params):
    """A Normal bump of mean params[0] and std params[1], as a general log density."""
    t = (z - params[0]) / params[1]
    return -0.5 * t * t


def _bump_target(n=N, **certificate):
    params = np.tile([0.3, 0.05], (n, 1))
    return rcc.GeneralTarget(_bump, 0.0, 1.0, params, **certificate)


def _bump_cdf(x):
    reference = stats.truncnorm((0.0 - 0.3) / 0.05, (1.0 - 0.3) / 0.05, loc=0.3, scale=0.05)
    return reference.cdf(x)


# (name, target, reference CDF, prior)
CASES = [
    ("beta(2, 5) under a normal prior (mode)", rcc.ScaledBeta(np.full(N, 2.0), 5.0, 0.1, 0.6), rcc.Normal(0.0, 1.0),
     stats.beta(2, 5, loc=0.1, scale=0.5).cdf),
    ("beta(3, 3) under a uniform prior (mode)", rcc.ScaledBeta(np.full(N, 3.0), 3.0, -1.0, 1.0),
     rcc.Uniform(-2.0, 2.0), stats.beta(3, 3, loc=-1.0, scale=2.0).cdf),
    ("bimodal mixture (Lipschitz and concavity)", rcc.GaussianMixture(np.full(N, 0.3), -0.5, 0.1, 0.4, 0.2),
     rcc.Normal(0.0, 1.0), rcc.GaussianMixture(0.3, -0.5, 0.1, 0.4, 0.2).cdf),
    ("user log density, Lipschitz bound only", _bump_target(lipschitz=280.0), rcc.Uniform(0.0, 1.0), _bump_cdf),
]


@pytest.mark.parametrize("method", ["astar", "astar-dyadic"])
def test_general_targets_exactness_battery(method):
    cases = []
    for k, (name, target, prior, cdf) in enumerate(CASES):
        enc = rcc.encode_sample(target, 900 + k, prior=prior, method=method)
        decoded = rcc.decode_sample(enc.index, enc.factor, 900 + k, prior=prior, method=method)
        assert np.array_equal(decoded, enc.sample)
        cases.append(testing.BatteryCase(f"{method}: {name}", enc.sample, cdf))
    testing.assert_battery_passes(testing.run_battery(cases))


def test_test_of_the_test_wrong_mode_fails():
    """A mode stated 0.2 away from the true one (so bounds that miss the peak) is detected by the battery."""
    enc = rcc.encode_sample(_bump_target(mode=0.5), 3, prior=rcc.Uniform(0.0, 1.0), method="astar")
    result = testing.run_battery([testing.BatteryCase("wrong mode", enc.sample, _bump_cdf)])
    assert not result.passed
    honest = rcc.encode_sample(_bump_target(mode=0.3), 3, prior=rcc.Uniform(0.0, 1.0), method="astar")
    assert testing.run_battery([testing.BatteryCase("true mode", honest.sample, _bump_cdf)]).passed


def test_general_targets_threads_and_offsets():
    target = rcc.ScaledBeta(np.linspace(1.5, 4.0, 600), 3.0, -0.5, 0.5)
    one = rcc.encode_sample(target, 4, method="astar", num_threads=1)
    two = rcc.encode_sample(target, 4, method="astar", num_threads=2)
    assert np.array_equal(one.index, two.index) and np.array_equal(one.sample, two.sample)
    tail = rcc.encode_sample(rcc.ScaledBeta(np.linspace(1.5, 4.0, 600)[400:], 3.0, -0.5, 0.5), 4, method="astar",
                             stream_offset=400)
    assert np.array_equal(tail.index, one.index[400:])


def test_general_targets_bad_inputs():
    with pytest.raises(ValueError, match="cannot certify"):
        rcc.encode_sample(rcc.GeneralTarget(_bump, 0.0, 1.0, np.array([0.3, 0.05])), 1, method="astar")
    with pytest.raises(ValueError, match="inside the Uniform prior"):
        rcc.encode_sample(rcc.ScaledBeta(2.0, 2.0, 0.5, 1.5), 1, prior=rcc.Uniform(0.0, 1.0), method="astar")


# --------------------------------------------------------------------------- GPRS and greedy rejection coding

MASS_METHODS = ["gprs", "gprs-sac", "gprs-dyadic", "grc-sample", "grc-dyadic"]
M = 10_000


def _mass_cases(n=M):
    """The Beta cases of CASES (a unimodal ratio under each prior), ``n`` samples each."""
    return [
        ("beta(2, 5) under a normal prior (log_concavity)", rcc.ScaledBeta(np.full(n, 2.0), 5.0, 0.1, 0.6),
         rcc.Normal(0.0, 1.0), stats.beta(2, 5, loc=0.1, scale=0.5).cdf),
        ("beta(3, 3) under a uniform prior (mode)", rcc.ScaledBeta(np.full(n, 3.0), 3.0, -1.0, 1.0),
         rcc.Uniform(-2.0, 2.0), stats.beta(3, 3, loc=-1.0, scale=2.0).cdf),
    ]


@pytest.mark.parametrize("method", MASS_METHODS)
def test_gprs_and_grc_of_general_targets_exactness_battery(method):
    cases = []
    for k, (name, target, prior, cdf) in enumerate(_mass_cases()):
        enc = rcc.encode_sample(target, 950 + k, prior=prior, method=method)
        decoded = rcc.decode_sample(enc.index, enc.factor, 950 + k, prior=prior, method=method)
        assert np.array_equal(decoded, enc.sample)  # the unchanged decoder: same tree, same heap indices
        cases.append(testing.BatteryCase(f"{method}: {name}", enc.sample, cdf))
    testing.assert_battery_passes(testing.run_battery(cases))


@pytest.mark.parametrize("method", ["gprs-sac", "grc-dyadic"])
def test_test_of_the_test_wrong_mode_and_false_log_concavity_fail(method):
    """The stated facts are what the masses rest on.  A mode 0.1 away from the true one (wrong superlevel sets
    and a maximum ratio too low) biases GPRS, which the battery detects, and starves greedy rejection coding of
    residual mass, which raises; a log_concavity claimed for a bimodal mixture (one of its modes taken for the
    ratio's) biases both."""
    prior = rcc.Uniform(0.0, 1.0)
    if method.startswith("gprs"):
        wrong = rcc.encode_sample(_bump_target(M, mode=0.4), 5, prior=prior, method=method)
        assert not testing.run_battery([testing.BatteryCase("wrong mode", wrong.sample, _bump_cdf)]).passed
    else:
        with pytest.raises(ValueError, match="stated mode or log_concavity is wrong"):
            rcc.encode_sample(_bump_target(M, mode=0.4), 5, prior=prior, method=method)
    honest = rcc.encode_sample(_bump_target(M, mode=0.3), 5, prior=prior, method=method)
    assert testing.run_battery([testing.BatteryCase("true mode", honest.sample, _bump_cdf)]).passed
    mixture = rcc.GaussianMixture(0.3, -0.5, 0.1, 0.4, 0.2)
    false = rcc.GeneralTarget(mixture.logpdf_function, mixture.low, mixture.high,
                              np.tile(mixture.params, (M, 1)), log_concavity=100.0)
    lied = rcc.encode_sample(false, 6, prior=rcc.Normal(0.0, 1.0), method=method)
    assert not testing.run_battery([testing.BatteryCase("false log_concavity", lied.sample, mixture.cdf)]).passed


def test_general_stretch_function_matches_the_closed_form():
    """sigma of a Normal bump given as a log density equals the closed form of the TruncatedNormal."""
    for prior, (m, s, lo, hi) in [(rcc.Uniform(0.0, 1.0), (0.3, 0.05, 0.0, 1.0)),
                                  (rcc.Normal(0.0, 1.0), (0.3, 0.2, -0.5, 1.0)),
                                  (rcc.Normal(0.2, 1.5), (0.3, 0.05, 0.1, 0.35))]:
        general = rcc.GeneralTarget(_bump, lo, hi, np.array([m, s]), mode=m, log_concavity=1.0 / s**2)
        closed = rcc.TruncatedNormal(m, s, lo, hi)
        r_max = 2.0 ** float(rcc.samplers.log_ratio_max(closed, prior))
        levels = r_max * np.array([0.0, 1e-6, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 0.999])
        got = rcc.samplers.stretch_function(general, levels, prior=prior)
        want = rcc.samplers.stretch_function(closed, levels, prior=prior)
        assert got[0] == 0.0
        np.testing.assert_allclose(got[1:], want[1:], rtol=1e-11)
        assert rcc.samplers.stretch_function(general, [1.01 * r_max], prior=prior)[0] == np.inf


@pytest.mark.parametrize("method", ["gprs", "grc-sample"])
def test_gprs_and_grc_of_general_targets_threads_offsets_and_batches(method):
    """Results do not depend on the threads; a batch is its streams; distinct targets in one batch."""
    target = rcc.ScaledBeta(np.linspace(1.5, 4.0, 200), 3.0, -0.5, 0.5)
    one = rcc.encode_sample(target, 4, method=method, num_threads=1)
    two = rcc.encode_sample(target, 4, method=method, num_threads=2)
    assert np.array_equal(one.index, two.index) and np.array_equal(one.sample, two.sample)
    tail = rcc.encode_sample(rcc.ScaledBeta(np.linspace(1.5, 4.0, 200)[150:], 3.0, -0.5, 0.5), 4, method=method,
                             stream_offset=150)
    assert np.array_equal(tail.index, one.index[150:])
    assert np.array_equal(rcc.decode_sample(one.index, one.factor, 4, method=method), one.sample)
    scalar = rcc.encode_sample(rcc.ScaledBeta(2.5, 3.0, -0.5, 0.5), 4, method=method)
    assert np.ndim(scalar.sample) == 0 and -0.5 <= scalar.sample <= 0.5
    assert rcc.decode_sample(scalar.index, scalar.factor, 4, method=method) == scalar.sample


def test_gprs_and_grc_refuse_general_targets_without_a_unimodal_ratio():
    mixture = rcc.GaussianMixture(0.3, -0.5, 0.1, 0.4, 0.2)  # bimodal, states Lipschitz and concavity bounds only
    for method in MASS_METHODS:
        with pytest.raises(ValueError, match="log_concavity >= 1 / prior.std"):
            rcc.encode_sample(mixture, 1, method=method)
        with pytest.raises(ValueError, match="give the target a mode"):
            rcc.encode_sample(_bump_target(1, lipschitz=280.0), 1, prior=rcc.Uniform(0.0, 1.0), method=method)
    # a Beta on [-5, 5] is log-concave, but not enough to make its ratio to a standard Normal unimodal
    with pytest.raises(ValueError, match=r"log_concavity must be >= 1 .*got 0\.08"):
        rcc.encode_sample(rcc.ScaledBeta(2.0, 2.0, -5.0, 5.0), 1, method="grc-dyadic")
    with pytest.raises(ValueError, match="inside the Uniform prior"):
        rcc.encode_sample(rcc.ScaledBeta(2.0, 2.0, 0.5, 1.5), 1, prior=rcc.Uniform(0.0, 1.0), method="gprs")
    with pytest.raises(ValueError, match="log_concavity must be < inf"):
        rcc.GeneralTarget(_bump, 0.0, 1.0, np.array([0.3, 0.05]), log_concavity=np.inf)
    with pytest.raises(ValueError, match="scalar target"):
        rcc.samplers.stretch_function(rcc.ScaledBeta([2.0, 3.0], 2.0), [0.5])


@pytest.mark.parametrize("method", ["gprs-sac", "grc-sample"])
def test_deep_sample_split_messages_of_general_targets_decode(method):
    """A Beta on an interval 2**-38 wide under a Uniform prior: most searches pass
    SAMPLE_SPLIT_DEPTH, where the tree turns to midpoint splits, and decode_tree_sample must
    rebuild that tree from the heap index alone."""
    width = 2.0 ** -38
    target = rcc.ScaledBeta(np.full(400, 3.0), 3.0, 0.3, 0.3 + width)
    prior = rcc.Uniform(0.0, 1.0)
    enc = rcc.encode_sample(target, 17, prior=prior, method=method)
    depth = np.floor(np.log2(enc.index.astype(np.float64)))
    assert np.mean(depth > rcc.samplers.SAMPLE_SPLIT_DEPTH) > 0.5
    decoded = rcc.decode_sample(enc.index, enc.factor, 17, prior=prior, method=method)
    assert np.array_equal(decoded, enc.sample)
    assert np.all((enc.sample >= 0.3) & (enc.sample <= 0.3 + width))
