"""Tests of rcc.entropy.bucket_codes: the bucket index code, its fit, its saved form and its old import path."""

from __future__ import annotations

import numpy as np
import pytest

import rcc
from rcc import entropy as E



def test_bucket_index_code_is_a_distribution():
    indices = np.random.default_rng(0).zipf(1.3, 5000)
    code = E.BucketIndexCode.fit(indices[indices < 2**40])
    n = np.arange(1, 2**16 + 1)
    pmf = code.pmf(n)
    assert np.all(pmf > 0)
    np.testing.assert_allclose(pmf.sum() + code.sf(2**16), 1.0, rtol=1e-12)
    np.testing.assert_allclose(code.sf(n - 1) - code.sf(n), pmf, rtol=1e-9, atol=1e-18)
    np.testing.assert_allclose(code.bits(n[:100]), -np.log2(pmf[:100]))
    # Flat inside each log2 bucket.
    assert code.pmf(8) == code.pmf(15) and code.pmf(16) == code.pmf(31)
    assert E.BucketIndexCode.from_dict(code.to_dict()) == code


def test_bucket_index_code_codes_huge_indices_exactly():
    code = E.BucketIndexCode.fit([1, 2, 3, 5, 8, 13, 200])
    index = np.array([1, 7, 1000, 2**20 + 3, 2**40 + 12345, 2**62 + 7], dtype=np.int64)
    encoded = rcc.EncodedSample(index=index, factor=np.zeros(6, dtype=np.int64), sample=np.zeros(6),
                                candidates=index, width=np.ones(6, dtype=np.int64), tail_mass=0.0,
                                kl_bits=np.zeros(6), method="pfr")
    data = E.encode_messages(encoded, 3, index_code=code)
    decoded, _ = E.decode_messages(data, 6, 3, index_code=code)
    assert np.array_equal(decoded, index)


def test_bucket_index_code_rejects_bad_input():
    with pytest.raises(ValueError):
        E.BucketIndexCode.fit([])
    with pytest.raises(ValueError):
        E.BucketIndexCode.fit([0, 1])
    with pytest.raises(ValueError):
        E.BucketIndexCode(np.ones(5))
    with pytest.raises(ValueError):
        E.BucketIndexCode.from_dict({"type": "ZipfIndexCode"})


def test_bucket_index_code_fit_counts_every_index_in_its_bucket():
    # floor(log2 n) exactly, up to the largest int64: 2**63 - 1 lies in bucket 62.
    indices = np.array([1, 2, 3, 4, 7, 8, 2**40 - 1, 2**40, 2**63 - 1], dtype=np.int64)
    code = E.BucketIndexCode.fit(indices, pseudo_count=1e-9)
    counted = np.round(code.bucket_weights[code.bucket_weights > 0.5]).astype(int)
    np.testing.assert_array_equal(np.flatnonzero(code.bucket_weights > 0.5), [0, 1, 2, 3, 39, 40, 62])
    np.testing.assert_array_equal(counted, [1, 2, 2, 1, 1, 1, 1])
    # integer-valued floats are indices too, as for the other codes' fits
    assert E.BucketIndexCode.fit([1.0, 5.0, 9.0]) == E.BucketIndexCode.fit([1, 5, 9])
    with pytest.raises(TypeError, match="indices"):
        E.BucketIndexCode.fit([1.5, 2.0])
    with pytest.raises(ValueError, match="indices must fit in int64"):
        E.BucketIndexCode.fit(np.array([2**63], dtype=np.uint64))
    with pytest.raises(ValueError, match="head_bits"):
        E.BucketIndexCode(np.ones(63), head_bits=21)
    with pytest.raises(ValueError, match="tail_ratio"):
        E.BucketIndexCode.fit([1, 2], tail_ratio=1.0)


def test_saved_bucket_codes_load_through_the_base_registry(tmp_path):
    code = E.BucketIndexCode.fit([1, 2, 3, 5, 8, 13, 200], head_bits=12)
    path = tmp_path / "bucket.json"
    code.save(path)
    for loaded in (E.load_index_code(path), E.IndexCode.load(path), E.BucketIndexCode.load(path)):
        assert loaded == code and loaded.fingerprint == code.fingerprint and loaded.head_bits == 12
    with pytest.raises(ValueError, match="holds a BucketIndexCode"):
        E.ZipfIndexCode.load(path)


def test_bucket_index_code_keeps_its_old_import_path():
    from rcc.entropy import bucket_codes, index_codes
    from rcc.entropy.index_codes import BucketIndexCode

    assert BucketIndexCode is bucket_codes.BucketIndexCode is E.BucketIndexCode is rcc.BucketIndexCode
    assert "BucketIndexCode" not in index_codes.__all__  # one home per public name
    with pytest.raises(AttributeError, match="no attribute 'NoSuchCode'"):
        index_codes.NoSuchCode
