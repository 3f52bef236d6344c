"""A* coding of general targets (rcc.GeneralTarget) with bounds from their certificate: exactness, a wrong mode."""

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
    with pytest.raises(TypeError, match="astar"):
        rcc.encode_sample(rcc.ScaledBeta(2.0, 2.0), 1, method="grc-dyadic")
    with pytest.raises(ValueError, match="cannot certify"):
        rcc.encode_sample(rcc.GeneralTarget(_bump, 0.0, 1.0, np.array([0.3, 0.05])), 1, method="astar")
    with pytest.raises(ValueError, match="inside the Uniform prior"):
        rcc.encode_sample(rcc.ScaledBeta(2.0, 2.0, 0.5, 1.5), 1, prior=rcc.Uniform(0.0, 1.0), method="astar")
