"""Tests of rcc.entropy.index_codes: Zipf, empirical and uniform index codes, saved codes (bucket codes: test_entropy_bucket_codes)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

import rcc
from rcc import entropy as E

from entropy_helpers import SEED, TRAIN_SEED, gaussian_enc, synthetic_enc, round_trip


# ----------------------------------------------------------------------------- index codes


@pytest.mark.parametrize("exponent", [1.05, 1.3, 1.68, 2.5, 6.0])
def test_zipf_information_content_matches_scipy(exponent):
    code = E.ZipfIndexCode(exponent=exponent)
    n = np.unique(np.round(np.logspace(0, 15, 400)).astype(np.int64))
    expected = -stats.zipf(exponent).logpmf(n) / math.log(2.0)
    np.testing.assert_allclose(code.bits(n), expected, rtol=1e-11)
    np.testing.assert_allclose(code.pmf(n), stats.zipf(exponent).pmf(n), rtol=1e-10)
    small = n[n <= 2000]  # scipy sums the mass function explicitly for its sf
    np.testing.assert_allclose(code.sf(small), stats.zipf(exponent).sf(small), rtol=1e-8, atol=1e-14)
    assert code.sf(0) == 1.0
    # the mass function and the survival function agree
    np.testing.assert_allclose(code.pmf(n[:50]), code.sf(n[:50] - 1) - code.sf(n[:50]), rtol=1e-9, atol=1e-300)


def test_zipf_exponent_follows_li_el_gamal():
    for kl in [0.0, 0.5, 1.63, 8.0, 40.0]:
        code = E.ZipfIndexCode(kl)
        assert code.exponent == pytest.approx(1 + 1 / (kl + math.log2(math.e) / math.e + 1), rel=1e-15)
        assert code.kl_bits == kl
    assert E.zipf_exponent(2.0) == E.ZipfIndexCode(2.0).exponent


def test_zipf_fit_is_the_maximum_likelihood_exponent():
    rng = np.random.default_rng(3)
    sample = stats.zipf(1.7).rvs(size=40_000, random_state=rng)
    code = E.ZipfIndexCode.fit(sample)
    assert code.exponent == pytest.approx(1.7, abs=0.02)
    # the fitted exponent minimises the mean information content
    for other in (code.exponent - 0.01, code.exponent + 0.01):
        assert E.ZipfIndexCode(exponent=other).bits(sample).mean() > code.bits(sample).mean()


def test_empirical_code_is_a_normalised_distribution_with_power_law_tail():
    rng = np.random.default_rng(4)
    sample = stats.zipf(2.4).rvs(size=30_000, random_state=rng)
    code = E.EmpiricalIndexCode.fit(sample)
    assert code.tail_exponent == pytest.approx(2.4, abs=0.15)
    n = np.arange(1, 200_001)
    total = code.pmf(n).sum() + code.sf(200_000)
    assert total == pytest.approx(1.0, abs=1e-12)
    assert code.sf(0) == pytest.approx(1.0, abs=1e-15)
    assert (code.pmf(n) > 0).all()
    assert np.isfinite(code.bits([1, 10**6, 2**62])).all()
    # the histogram part reproduces the frequencies
    counts = np.bincount(sample, minlength=5)[1:5]
    np.testing.assert_allclose(code.pmf([1, 2, 3, 4]), (counts + 0.5) / code._total)
    # continuity between sf and pmf across the head/tail boundary
    m = np.arange(max(1, code.n0 - 3), code.n0 + 4)
    np.testing.assert_allclose(code.pmf(m), code.sf(m - 1) - code.sf(m), rtol=1e-9)


def test_codes_fitted_to_a_single_value_still_code_everything():
    code = E.EmpiricalIndexCode.fit(np.ones(100, dtype=int))
    assert code.n0 == 1 and code.tail_count == 0 and code.tail_exponent == 2.0
    assert code.bits(1) < 0.02 and np.isfinite(code.bits(10**9))
    round_trip(synthetic_enc([1, 1, 5, 10**9, 1]), code)
    zipf = E.ZipfIndexCode.fit(np.ones(100, dtype=int))  # the steepest law: P(1) ~ 1
    assert zipf.bits(1) < 1e-9 and zipf.pmf(2**62) == 0.0 and np.isfinite(zipf.bits(2**62))
    round_trip(synthetic_enc([1, 1, 2**62, 1]), zipf)
    steep = E.EmpiricalIndexCode([100, 1], 1, 60.0)
    np.testing.assert_allclose(steep.bits([1, 2, 3]), -np.log2(steep.pmf([1, 2, 3])), rtol=1e-12)
    assert np.isfinite(steep.bits(2**62))
    round_trip(synthetic_enc([1, 2, 3, 2**62]), steep)


def test_uniform_index_code():
    code = E.UniformIndexCode(64)
    np.testing.assert_allclose(code.bits([1, 17, 64]), 6.0)
    assert code.bits(65) == math.inf
    round_trip(synthetic_enc(np.arange(1, 65)), code)
    with pytest.raises(ValueError, match="zero probability"):
        E.encode_messages(synthetic_enc([3, 65]), SEED, index_code=code)


def test_save_load_round_trip(tmp_path):
    train = gaussian_enc(8, 4000, seed=TRAIN_SEED, rng=11)
    enc = gaussian_enc(8, 2000)
    empirical = E.EmpiricalIndexCode.fit(train.index)
    conditioned = E.ConditionedIndexCode.fit(train.index, train.factor, train.width)
    codes = [empirical, E.ZipfIndexCode(1.63), E.ZipfIndexCode(exponent=1.7), E.UniformIndexCode(1000), conditioned]
    for i, code in enumerate(codes):
        path = tmp_path / f"code{i}.json"
        code.save(path)
        text = path.read_text()
        data = json.loads(text)  # plain, human-readable JSON
        assert data["format"] == "rcc.IndexCode" and data["version"] == E.CODE_FORMAT_VERSION
        assert data["type"] == type(code).__name__
        loaded = type(code).load(path)
        again = E.load_index_code(path)
        assert loaded == code and again == code and loaded.fingerprint == code.fingerprint
        if isinstance(code, E.IndexCode):
            n = np.array([1, 2, 5, 37, 1000, 10**7])
            np.testing.assert_array_equal(loaded.bits(n[n <= 1000] if i == 3 else n),
                                          code.bits(n[n <= 1000] if i == 3 else n))
        if i != 3:  # the same code writes the same bytes, and reads the other's bytes
            data_a = E.encode_messages(enc, SEED, index_code=code)
            assert data_a == E.encode_messages(enc, SEED, index_code=loaded)
            index, _ = E.decode_messages(data_a, enc.index.size, SEED, index_code=loaded, width=enc.width)
            np.testing.assert_array_equal(index, enc.index)


def test_load_rejects_wrong_files(tmp_path):
    path = tmp_path / "code.json"
    E.ZipfIndexCode(2.0).save(path)
    with pytest.raises(ValueError, match="holds a ZipfIndexCode"):
        E.EmpiricalIndexCode.load(path)
    data = json.loads(path.read_text())
    for change, message in [({"version": 99}, "version"), ({"format": "x"}, "not an rcc index code"),
                            ({"type": "Nope"}, "unknown index code")]:
        path.write_text(json.dumps({**data, **change}))
        with pytest.raises(ValueError, match=message):
            E.load_index_code(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a valid"):
        E.load_index_code(path)
    empirical = E.EmpiricalIndexCode.fit([1, 2, 2, 3]).to_dict()
    del empirical["tail_count"]
    path.write_text(json.dumps(empirical))
    with pytest.raises(ValueError, match="tail_count"):
        E.load_index_code(path)


def test_code_argument_checks():
    with pytest.raises(TypeError, match="exactly one"):
        E.ZipfIndexCode()
    with pytest.raises(TypeError, match="exactly one"):
        E.ZipfIndexCode(1.0, exponent=2.0)
    with pytest.raises(ValueError, match="kl_bits"):
        E.ZipfIndexCode(float("nan"))
    # A negative estimate of the index's KL (KL - log2 M under the wide transform) means D = 0.
    assert E.ZipfIndexCode(-1.0) == E.ZipfIndexCode(0.0)
    with pytest.raises(ValueError, match="exponent"):
        E.ZipfIndexCode(exponent=1.0)
    with pytest.raises(TypeError, match="kl_bits"):
        E.ZipfIndexCode("2")
    with pytest.raises(ValueError, match="head_bits"):
        E.ZipfIndexCode(1.0, head_bits=4)
    with pytest.raises(ValueError, match="n must be >= 1"):
        E.ZipfIndexCode(1.0).bits(0)
    with pytest.raises(TypeError, match="n must be integers"):
        E.ZipfIndexCode(1.0).bits(1.5)
    with pytest.raises(ValueError, match="indices must be >= 1"):
        E.EmpiricalIndexCode.fit([0, 1])
    with pytest.raises(ValueError, match="empty"):
        E.EmpiricalIndexCode.fit([])
    with pytest.raises(ValueError, match="num_candidates"):
        E.UniformIndexCode(0)
