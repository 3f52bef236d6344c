"""Counter-based shared randomness (docs/randomness.rst, 'A counter-based generator')."""

import numpy as np
import pytest
from scipy import stats

from rcc import random as rr


def test_values_are_reproducible_and_in_range():
    u = rr.shared_uniform(7, np.arange(1000), 3, 0)
    assert np.array_equal(u, rr.shared_uniform(7, np.arange(1000), 3, 0))
    assert u.min() >= -0.5 and u.max() < 0.5
    # On the 2**-53 grid: U + 1/2 scaled by 2**53 is an integer.
    scaled = (u + 0.5) * 2.0**53
    assert np.array_equal(scaled, np.round(scaled))


def test_random_access_matches_sequential_generation():
    # Index N is computed directly, without generating 1..N-1.
    n = np.arange(1, 2001)
    sequential = rr.shared_uniform(11, 5, n, 2)
    assert rr.shared_uniform(11, 5, 1234, 2) == sequential[1233]
    assert rr.shared_uniform(11, 5, 2**40, 2) == rr.shared_uniform(11, 5, [2**40], 2)[0]


@pytest.mark.parametrize("axis", ["seed", "stream", "index", "dim"])
def test_uniform_along_each_counter_axis(axis):
    k = np.arange(50_000)
    args = {"seed": 3, "stream": 4, "index": 5, "dim": 1}
    if axis == "seed":
        u = np.array([rr.shared_uniform(int(s), 4, 5, 1) for s in k[:5000]])
    else:
        args[axis] = k
        u = rr.shared_uniform(**args)
    assert stats.kstest(u + 0.5, "uniform").pvalue > 1e-3
    # Neighbouring counters are uncorrelated.
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 5 / np.sqrt(u.size)


def test_private_exponentials_are_exp1_and_independent_of_dither():
    key = rr.private_key(9)
    e = rr.private_exponential(key, np.arange(50_000), 1)
    assert stats.kstest(e, "expon").pvalue > 1e-3
    u = rr.shared_uniform(9, np.arange(50_000), 1)
    assert abs(stats.spearmanr(e, u).statistic) < 5 / np.sqrt(e.size)
    assert np.isfinite(e).all() and e.min() >= 0


def test_private_key_from_rng_is_explicit():
    assert rr.private_key(5) == rr.private_key(5)
    assert rr.private_key(5, rng=1) == rr.private_key(5, rng=np.random.default_rng(1))
    assert rr.private_key(5, rng=1) != rr.private_key(5, rng=2)


@pytest.mark.parametrize("seed, error", [(-1, ValueError), (2**64, ValueError), (1.5, TypeError),
                                         (True, TypeError), ("3", TypeError)])
def test_bad_seeds(seed, error):
    with pytest.raises(error, match="seed"):
        rr.check_seed(seed)


def test_bad_counters():
    with pytest.raises(ValueError, match="stream"):
        rr.shared_uniform(1, -1, 1)
    with pytest.raises(TypeError, match="index"):
        rr.shared_uniform(1, 0, 1.5)
