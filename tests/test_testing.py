"""Tests of rcc.testing: the statistical checks must accept exact samples and reject biased ones."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import stats

from rcc import testing as rt

ALPHA = 1e-3

NORMAL = stats.norm(0.3, 1.7)
TRUNC = stats.truncnorm(-1.0, 2.5, loc=0.5, scale=2.0)
UNIFORM = stats.uniform(-0.5, 1.0)
BETA = stats.beta(2.0, 5.0)
TARGETS = {"normal": NORMAL, "truncnorm": TRUNC, "uniform": UNIFORM, "beta": BETA}


def exact(dist, n, seed):
    return dist.rvs(size=n, random_state=np.random.default_rng(seed))


# ----------------------------------------------------------------------------- exact samples


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_exact_samples_pass_ks_and_chi2(name):
    dist = TARGETS[name]
    x = exact(dist, 20_000, seed=11)
    ks = rt.ks_check(x, dist.cdf, alpha=ALPHA)
    chi_inv = rt.chi2_check(x, dist.cdf, alpha=ALPHA)
    chi_ppf = rt.chi2_check(x, dist.cdf, ppf=dist.ppf, alpha=ALPHA)
    assert ks.passed and chi_inv.passed and chi_ppf.passed, (ks, chi_inv, chi_ppf)
    assert ks.name == "ks" and ks.n == 20_000 and ks.alpha == ALPHA
    assert ks.statistic == pytest.approx(stats.kstest(x, dist.cdf).statistic)
    assert ks.pvalue == pytest.approx(stats.kstest(x, dist.cdf).pvalue)
    # numerical inversion places equiprobable bins, as the ppf does
    q = np.arange(1, 50) / 50
    np.testing.assert_allclose(dist.cdf(chi_inv.details["edges"]), q, atol=0.01 / 50)
    np.testing.assert_allclose(dist.cdf(chi_ppf.details["edges"]), q, atol=1e-12)
    assert chi_inv.details["df"] == 49 and chi_inv.details["min_expected"] >= 5
    assert chi_inv.details["observed"].sum() == 20_000


def test_chi2_pvalues_are_calibrated():
    # Under the null the p-values of the check (bins from numerical inversion) look uniform.
    rng = np.random.default_rng(5)
    p = [rt.chi2_check(TRUNC.rvs(size=1000, random_state=rng), TRUNC.cdf).pvalue
         for _ in range(200)]
    assert rt.uniformity_check(p, alpha=ALPHA).passed


def test_chi2_explicit_bins_and_default_count():
    x = exact(UNIFORM, 200, seed=3)
    r = rt.chi2_check(x, UNIFORM.cdf, bins=[-0.25, 0.0, 0.25])
    assert r.details["df"] == 3
    np.testing.assert_allclose(r.details["expected"], [50, 50, 50, 50])
    assert rt.chi2_check(x, UNIFORM.cdf).details["df"] == 200 // 20 - 1


def test_chi2_mass_outside_support_is_rejected_outright():
    x = np.concatenate([exact(UNIFORM, 999, seed=4), [0.75]])  # one point where q = 0
    r = rt.chi2_check(x, UNIFORM.cdf, bins=[-0.5, 0.0, 0.5])
    assert not r.passed and r.pvalue == 0.0 and np.isinf(r.statistic)


def test_battery_of_exact_cases_passes():
    cases = [(name, exact(dist, 5000, seed=100 + i), dist.cdf)
             for i, (name, dist) in enumerate(sorted(TARGETS.items()))]
    cases.append(rt.BatteryCase("beta+ppf", exact(BETA, 5000, seed=99), BETA.cdf, BETA.ppf))
    result = rt.run_battery(cases, alpha=ALPHA)
    rt.assert_battery_passes(result)
    assert result.passed and len(result.cases) == 5 and result.pvalues.shape == (10,)
    assert set(result.checks) == {"fisher[ks]", "uniform[ks]", "fisher[chi2]",
                                  "uniform[chi2]", "bonferroni"}
    assert result.cases[0].ks.alpha == pytest.approx(ALPHA / 10)  # Bonferroni per case
    table = result.summary()
    assert "truncnorm" in table and "PASSED" in table and str(result) == table


# ----------------------------------------------------------------------------- power


def _fails(x, dist):
    """Both single checks, and a one-case battery, on one sample set."""
    ks = rt.ks_check(x, dist.cdf, alpha=ALPHA)
    chi = rt.chi2_check(x, dist.cdf, alpha=ALPHA)
    battery = rt.run_battery([("biased", x, dist.cdf)], alpha=ALPHA)
    return ks, chi, battery


def test_power_mean_shift():
    x = exact(stats.norm(0.05), 50_000, seed=21)  # mean off by 0.05 sd
    ks, chi, battery = _fails(x, stats.norm())
    assert not ks.passed and not chi.passed and not battery.passed


def test_power_scale():
    x = exact(stats.norm(scale=1.05), 50_000, seed=22)  # std 5% too large
    ks, chi, battery = _fails(x, stats.norm())
    assert not ks.passed and not chi.passed and not battery.passed


def test_power_missing_truncation():
    target = stats.truncnorm(-2.0, 2.0)
    x = exact(stats.norm(), 20_000, seed=23)  # sampled without truncation
    ks, chi, battery = _fails(x, target)
    assert not ks.passed and not chi.passed and not battery.passed


def test_power_off_by_one_on_a_fraction():
    # Like an off-by-one in the quantisation index K: 5% of samples land one unit too high.
    x = exact(stats.norm(), 50_000, seed=24)
    x[::20] += 1.0
    ks, chi, battery = _fails(x, stats.norm())
    assert not ks.passed and not chi.passed and not battery.passed


def test_battery_with_one_biased_case_fails():
    cases = [(name, exact(dist, 20_000, seed=200 + i), dist.cdf)
             for i, (name, dist) in enumerate(sorted(TARGETS.items()))]
    cases.append(("shifted", exact(stats.norm(0.05), 50_000, seed=299), stats.norm().cdf))
    result = rt.run_battery(cases, alpha=ALPHA)
    assert not result.passed and not result.checks["bonferroni"].passed
    assert [c.ks.passed for c in result.cases] == [True] * 4 + [False]
    with pytest.raises(AssertionError, match="shifted"):
        rt.assert_battery_passes(result)


def test_distances():
    x = exact(NORMAL, 20_000, seed=31)
    assert rt.ks_distance(x, NORMAL.cdf) == pytest.approx(rt.ks_check(x, NORMAL.cdf).statistic)
    tv_exact = rt.total_variation_binned(x, NORMAL.cdf, 20)
    tv_biased = rt.total_variation_binned(x + 0.5, NORMAL.cdf, 20, ppf=NORMAL.ppf)
    assert 0 <= tv_exact < 0.03 < tv_biased < 0.2
    # a point mass far off: TV is the mass there
    assert rt.total_variation_binned(np.full(10, 99.0), NORMAL.cdf, [0.0]) == pytest.approx(
        NORMAL.cdf(0.0))


# ----------------------------------------------------------------------------- p-values


def test_combine_pvalues_matches_scipy():
    p = np.random.default_rng(41).uniform(size=30)
    for method in ("fisher", "stouffer", "pearson", "tippett"):
        r = rt.combine_pvalues(p, method=method)
        ref = stats.combine_pvalues(p, method=method)
        assert r.statistic == pytest.approx(ref.statistic)
        assert r.pvalue == pytest.approx(ref.pvalue)
        assert r.n == 30 and r.passed
    assert not rt.combine_pvalues([1e-4, 1e-3, 0.01, 0.0]).passed


def test_uniformity_check():
    rng = np.random.default_rng(42)
    assert rt.uniformity_check(rng.uniform(size=100)).passed
    assert not rt.uniformity_check(0.5 + 0.01 * rng.uniform(-1, 1, size=50)).passed
    assert not rt.uniformity_check(1e-3 * rng.uniform(size=50)).passed


def test_bonferroni_check():
    assert rt.bonferroni_check([0.5, 2e-4, 0.9], alpha=1e-3).passed is False
    r = rt.bonferroni_check([0.5, 4e-4, 0.9], alpha=1e-3)
    assert r.passed and r.pvalue == pytest.approx(1.2e-3) and r.statistic == 4e-4


# ----------------------------------------------------------------------------- coders


@dataclasses.dataclass
class Message:
    index: int
    sample: object


def exact_encode(seed):
    return Message(index=seed, sample=np.random.default_rng(seed).normal())


def exact_decode(message, seed):
    return np.random.default_rng(seed).normal()


def test_draw_samples_with_exact_coder():
    x = rt.draw_samples(exact_encode, exact_decode, 2000, base_seed=7)
    assert x.shape == (2000,) and x.dtype == np.float64
    assert x[0] == np.random.default_rng(7).normal()
    assert rt.ks_check(x, stats.norm.cdf).passed
    y = rt.draw_samples(exact_encode, exact_decode, seeds=[3, 2**64 - 1])
    assert y.shape == (2,)
    # messages without .sample are not checked; array samples are stacked
    z = rt.draw_samples(lambda s: s, lambda m, s: np.full(3, float(m)), 4)
    np.testing.assert_array_equal(z, np.repeat(np.arange(4.0), 3).reshape(4, 3))


def test_draw_samples_detects_disagreeing_decoder():
    def bad_decode(message, seed):  # one ulp off at seed 13
        x = exact_decode(message, seed)
        return np.nextafter(x, np.inf) if seed == 13 else x

    with pytest.raises(AssertionError, match="seed 13"):
        rt.draw_samples(exact_encode, bad_decode, 20, base_seed=5)
    with pytest.raises(AssertionError, match="seed 0"):  # bit-for-bit: dtype matters too
        rt.draw_samples(exact_encode, lambda m, s: np.float32(exact_decode(m, s)), 3)


@dataclasses.dataclass
class BatchMessage:
    sample: np.ndarray


def batch_encode(n, seed):
    return BatchMessage(sample=np.random.default_rng(seed).normal(size=n))


def batch_decode(message, seed):
    return np.random.default_rng(seed).normal(size=message.sample.shape[0])


def test_draw_samples_batched():
    x = rt.draw_samples_batched(batch_encode, batch_decode, 5000, seed=8)
    assert x.shape == (5000,) and rt.ks_check(x, stats.norm.cdf).passed

    def off_decode(message, seed):
        y = batch_decode(message, seed)
        y[[17, 4000]] = np.nextafter(y[[17, 4000]], np.inf)  # one ulp off
        return y

    with pytest.raises(AssertionError, match=r"2 of 5000 elements differ.*\[17, 4000\]"):
        rt.draw_samples_batched(batch_encode, off_decode, 5000, seed=8)
    with pytest.raises(AssertionError, match="shape"):
        rt.draw_samples_batched(batch_encode, lambda m, s: batch_decode(m, s)[:-1], 10, 8)


# ----------------------------------------------------------------------------- bad input


GOOD = np.linspace(-1, 1, 50)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: rt.ks_check([0.1, np.nan, 0.3], stats.norm.cdf), ValueError, "samples"),
    (lambda: rt.ks_check([0.1], stats.norm.cdf), ValueError, "n >= 2"),
    (lambda: rt.ks_check(np.ones((3, 3)), stats.norm.cdf), ValueError, "1-D"),
    (lambda: rt.ks_check(["a", "b"], stats.norm.cdf), TypeError, "samples"),
    (lambda: rt.ks_check(GOOD, 0.5), TypeError, "cdf must be callable"),
    (lambda: rt.ks_check(GOOD, lambda x: 2 * x), ValueError, "cdf"),
    (lambda: rt.ks_check(GOOD, lambda x: 0.5), ValueError, "cdf must be vectorised"),
    (lambda: rt.ks_check(GOOD, stats.norm.cdf, alpha=1.5), ValueError, "alpha"),
    (lambda: rt.chi2_check(GOOD, stats.norm.cdf, bins=1), ValueError, "bins"),
    (lambda: rt.chi2_check(GOOD, stats.norm.cdf, bins=[1.0, 0.0]), ValueError, "bins"),
    (lambda: rt.chi2_check(GOOD, stats.norm.cdf, ppf="x"), TypeError, "ppf"),
    (lambda: rt.chi2_check(GOOD, lambda x: 1 - stats.norm.cdf(x), bins=[0.0, 1.0]),
     ValueError, "non-decreasing"),
    (lambda: rt.chi2_check(GOOD, lambda x: np.full_like(x, 0.5)), ValueError, "cdf"),
    (lambda: rt.total_variation_binned(GOOD, None, 5), TypeError, "cdf"),
    (lambda: rt.combine_pvalues([0.5, 1.2]), ValueError, "pvalues"),
    (lambda: rt.combine_pvalues([]), ValueError, "pvalues"),
    (lambda: rt.combine_pvalues([0.5], method="nope"), ValueError, "method"),
    (lambda: rt.uniformity_check([np.nan]), ValueError, "pvalues"),
    (lambda: rt.bonferroni_check([-0.1]), ValueError, "pvalues"),
    (lambda: rt.draw_samples(exact_encode, exact_decode, 0), ValueError, "n must"),
    (lambda: rt.draw_samples(exact_encode, exact_decode), TypeError, "n or seeds"),
    (lambda: rt.draw_samples(None, exact_decode, 3), TypeError, "encode"),
    (lambda: rt.draw_samples(exact_encode, 3, 3), TypeError, "decode"),
    (lambda: rt.draw_samples(exact_encode, exact_decode, 2, seeds=[1]), ValueError, "seeds"),
    (lambda: rt.draw_samples_batched(batch_encode, batch_decode, -1, 0), ValueError, "n must"),
    (lambda: rt.run_battery([]), ValueError, "cases"),
    (lambda: rt.run_battery([("a", GOOD)]), TypeError, "cases"),
    (lambda: rt.run_battery([("a", [np.nan, 1.0], stats.norm.cdf)]), ValueError, "case 'a'"),
    (lambda: rt.assert_battery_passes("x"), TypeError, "result"),
])
def test_bad_input_raises_clear_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_results_are_frozen():
    r = rt.ks_check(GOOD, stats.norm.cdf)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.pvalue = 1.0
    assert "ks: " in str(r) and "n=50" in str(r)
