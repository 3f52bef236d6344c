"""Statistical exactness of the coders (docs/exactness.rst, 'How exactness is tested'), with tests of the tests' power.

Every case encodes ``n`` copies of one target as a batch (each element has its
own stream of the seed, so the samples are independent), decodes the messages,
checks the round trip bit for bit and runs KS and chi-square tests against the
distribution the coder promises: the truncation of the target.
"""

import math

import numpy as np
import pytest

import rcc
from rcc import coding, kernels, testing
from rcc.random import private_key

from exactness_cases import EXACTNESS_CASES, SAMPLES_PER_CASE

N = 20_000
BATTERY_ALPHA = 1e-3
PRIOR = rcc.Normal(0.0, 1.0)


def _batch(target, n):
    """``n`` independent copies of a scalar (or 1 x d Product) target."""
    if isinstance(target, rcc.Product):
        base = target.base
        params = {k: np.repeat(np.asarray(v), n, axis=0) for k, v in base._params().items()}
        return rcc.Product(type(base)(**params))
    params = {k: np.full(n, float(v)) for k, v in target._params().items()}
    return type(target)(**params)


def coded_samples(target, seed, n=N, **kwargs):
    """Encode ``n`` copies, decode them, and check the round trip."""
    enc = rcc.encode_sample(_batch(target, n), seed=seed, **kwargs)
    decoded = rcc.decode_sample(
        enc.index, enc.factor, seed=seed, prior=kwargs.get("prior"), width=enc.width,
        method=kwargs.get("method", "hybrid"), transform=kwargs.get("transform"),
    )
    assert np.array_equal(decoded, enc.sample)
    return decoded, enc


def reference(target, tail_mass=rcc.DEFAULT_TAIL_MASS):
    return target.truncate(tail_mass)


_CASE_SAMPLES = {}


def case_samples(case):
    """The decoded samples of one table case, drawn once per session and shared by both readers."""
    if case.name not in _CASE_SAMPLES:
        _CASE_SAMPLES[case.name], _ = coded_samples(case.target, case.seed, n=SAMPLES_PER_CASE, **case.options)
    return _CASE_SAMPLES[case.name]


def test_table_cases_are_distinct():
    # Samples are cached by name and must be independent across cases: distinct names and seeds.
    assert len({case.name for case in EXACTNESS_CASES}) == len(EXACTNESS_CASES)
    assert len({case.seed for case in EXACTNESS_CASES}) == len(EXACTNESS_CASES)


def _battery_case(case):
    reference = case.reference()
    return testing.BatteryCase(case.name, case_samples(case), reference.cdf, reference.ppf)


@pytest.mark.parametrize("case", EXACTNESS_CASES, ids=[case.name for case in EXACTNESS_CASES])
def test_case_is_exact(case):
    # Each case alone, at the battery's Bonferroni level: a failure names its case.
    level = BATTERY_ALPHA / (2 * len(EXACTNESS_CASES))
    battery_case = _battery_case(case)
    assert testing.ks_check(battery_case.samples, battery_case.cdf, alpha=level).passed
    assert testing.chi2_check(battery_case.samples, battery_case.cdf, ppf=battery_case.ppf, alpha=level).passed


def test_battery_of_targets_is_exact():
    # The same samples judged together: Fisher combination and uniformity of the p-values.
    result = testing.run_battery([_battery_case(case) for case in EXACTNESS_CASES], alpha=BATTERY_ALPHA)
    testing.assert_battery_passes(result)


def test_two_dimensional_product_target_is_exact():
    target = rcc.Product(rcc.Normal([[0.1, -0.5]], [[0.05, 0.2]]))
    samples, enc = coded_samples(target, seed=21)
    assert samples.shape == (N, 2) and enc.factor.shape == (N, 2) and enc.index.shape == (N,)
    marginals = [reference(rcc.Normal(m, s)) for m, s in [(0.1, 0.05), (-0.5, 0.2)]]
    cases = [testing.BatteryCase(f"dim {j}", samples[:, j], m.cdf, m.ppf) for j, m in enumerate(marginals)]
    # Independence of the coordinates (one index selects both): no rank correlation.
    from scipy import stats

    assert stats.spearmanr(samples[:, 0], samples[:, 1]).pvalue > 1e-3
    testing.assert_battery_passes(testing.run_battery(cases))


def test_exact_over_distinct_seeds():
    # One scalar encode per seed: the seeds themselves, not streams, vary.
    target = rcc.Normal(0.8, 0.05)
    samples = testing.draw_samples(
        lambda seed: rcc.encode_sample(target, seed=seed),
        lambda enc, seed: rcc.decode_sample(enc.index, enc.factor, seed=seed, width=enc.width),
        seeds=range(3000),
    )
    assert testing.ks_check(samples, reference(target).cdf).passed


# --- the tests have power: deliberately broken coders fail them ----------------------


@pytest.mark.parametrize("mean, std", [(0.0, 0.5), (8.0, 0.5)])
def test_halved_w_max_is_detected(mean, std):
    # The tests have power: a race whose stopping bound is half the true
    # w_max stops too early and its samples fail the KS check (under the
    # default coding transform, near the prior's mode and far in its tail).
    target = rcc.Normal(mean, std)
    count = 20_000
    batch = rcc.Normal(np.full(count, mean), std)
    inputs = coding._BatchInputs(batch, rcc.Normal(0.0, 1.0), 1e-4, True, None)
    params, log_w_max, _ = inputs.prepare(0, count, coding._Threads(None))
    key = private_key(5)
    samples = {}
    for name, shift in (("true", 0.0), ("halved", -math.log(2.0))):
        out = np.empty(count)
        factor = np.empty(1, dtype=np.int64)
        for i in range(count):
            kernels.select_one(np.uint64(5), key, np.uint64(i), params[i], True, log_w_max[i] + shift,
                               kernels.RACE, 0, 2**24, factor, out[i:i + 1])
        samples[name] = out
    truncated = target.truncate(1e-4)
    assert np.array_equal(samples["true"], rcc.encode_sample(batch, seed=5).sample)
    assert testing.ks_check(samples["true"], truncated.cdf).passed
    assert not testing.ks_check(samples["halved"], truncated.cdf).passed


def test_off_by_one_factor_is_detected():
    target = rcc.Normal(0.3, 0.05)
    _, enc = coded_samples(target, seed=6)
    shifted = np.where(enc.factor > 0, enc.factor - 1, enc.factor + 1)
    wrong = rcc.decode_sample(enc.index, shifted, seed=6, width=enc.width)
    truncated = reference(target)
    assert not testing.ks_check(wrong, truncated.cdf).passed
    assert not testing.chi2_check(wrong, truncated.cdf, ppf=truncated.ppf).passed


def test_untruncated_reference_is_distinguished_from_large_tail_mass():
    # The truncation is real and reported: with tail mass 0.2 the samples
    # follow the truncated target and fail against the untruncated one.
    target = rcc.Normal(0.0, 0.3)
    samples, enc = coded_samples(target, seed=8, tail_mass=0.2)
    assert np.allclose(enc.tail_mass, 0.2)
    assert testing.ks_check(samples, target.truncate(0.2).cdf).passed
    assert not testing.ks_check(samples, target.cdf).passed


# --- approximate baselines converge -----------------------------------------------------


@pytest.mark.parametrize("method", ["orc", "mrc"])
def test_importance_baselines_converge_with_candidate_count(method):
    target = rcc.Normal(0.6, 0.15)
    truncated = reference(target)
    distances = []
    for count in (2, 16, 1024):
        samples, enc = coded_samples(target, seed=30 + count, n=10_000, method=method, num_candidates=count)
        assert (enc.index <= count).all()
        distances.append(testing.ks_distance(samples, truncated.cdf))
    assert distances[0] > distances[1] > distances[2]
    assert distances[0] > 0.2  # badly biased with two candidates
    assert distances[2] < 0.03


def test_orc_stopping_rule_examines_fewer_candidates_than_mrc():
    target = _batch(rcc.Normal(0.6, 0.15), 2000)
    orc = rcc.encode_sample(target, seed=2, method="orc", num_candidates=1024)
    mrc = rcc.encode_sample(target, seed=2, method="mrc", num_candidates=1024)
    assert (mrc.candidates == 1024).all()
    assert orc.candidates.mean() < 0.5 * 1024


# --- candidates examined (docs/hybrid.rst, 'The message'; docs/race.rst, 'What it costs'): hybrid flat, pfr ~ 1/std


def test_hybrid_candidates_flat_while_pfr_grows_like_inverse_std():
    stds = [0.1, 0.01, 1e-3, 1e-4]
    hybrid = [
        rcc.encode_sample(_batch(rcc.Normal(1.0, s), 2000), seed=3).candidates.mean() for s in stds
    ]
    assert all(1.0 < h < 20.0 for h in hybrid), hybrid
    assert max(hybrid) / min(hybrid) < 2.0, hybrid
    pfr = [
        rcc.encode_sample(_batch(rcc.Normal(1.0, s), 500), seed=3, method="pfr").candidates.mean()
        for s in stds[:3]
    ]
    for wide, narrow, ratio in zip(pfr, pfr[1:], [10, 10]):
        assert 0.5 * ratio < narrow / wide < 2.0 * ratio, pfr
