"""Tests of rcc.entropy.conditioned: the factor-first, conditioned index code."""

from __future__ import annotations

import math

import numpy as np
import pytest

import rcc
from rcc import entropy as E

from entropy_helpers import SEED, TRAIN_SEED, gaussian_enc, round_trip


def test_factor_first_code_is_exact():
    # K in {0..M}: P = 1/(2M) at the ends and 1/M inside sums to one, and its bits are what is written
    for width in (1, 2, 5, 100):
        k = np.arange(width + 1)
        p = 2.0 ** -E._factor_first_bits(k, np.full(k.size, width))
        assert p.sum() == pytest.approx(1.0)
    train = gaussian_enc(10.0, 3000, seed=TRAIN_SEED, rng=3)
    code = E.ConditionedIndexCode.fit(train.index, train.factor, train.width)
    enc = gaussian_enc(10.0, 10_000)
    assert code.conditioned(np.asarray(enc.width).reshape(-1, 1)).all()
    bits = E.message_bits(enc, SEED, index_code=code)
    data = round_trip(enc, code)
    header = 8 * E._parse_header(data)["header_bytes"]
    assert abs(8 * len(data) - header - bits.total.sum()) <= 0.01 * bits.total.sum() + 32
    # the factor costs log2 M + 1/M on average
    assert bits.factor.mean() == pytest.approx(math.log2(enc.width[0]) + 1 / enc.width[0], abs=0.01)


def test_conditioned_code_without_eligible_messages_is_the_fallback():
    enc = gaussian_enc(3.0, 2000, transform="prior")  # M = 2: 1/M is too expensive, every message falls back
    fallback = E.ZipfIndexCode(2.0)
    conditioned = E.ConditionedIndexCode([1.0], [E.ZipfIndexCode(1.0), E.ZipfIndexCode(3.0)], fallback)
    assert not conditioned.conditioned(np.asarray(enc.width).reshape(-1, 1)).any()
    plain = E.encode_messages(enc, SEED, index_code=fallback, transform="prior")
    data = round_trip(enc, conditioned)
    header_plain = E._parse_header(plain)["header_bytes"]
    header = E._parse_header(data)["header_bytes"]
    assert data[header:] == plain[header_plain:]


def test_factor_first_with_small_widths_round_trips():
    # forcing the factor-first layout where M = 1 (K in {0, 1}) and M = 2 (no inner values) stays exact
    for info_bits in (1.0, 3.0, 4.0):
        train = gaussian_enc(info_bits, 500, seed=TRAIN_SEED, rng=3, transform="prior")
        code = E.ConditionedIndexCode.fit(train.index, train.factor, train.width, max_factor_overhead=1.0)
        enc = gaussian_enc(info_bits, 500, transform="prior")
        assert code.conditioned(np.asarray(enc.width).reshape(-1, 1)).all()
        round_trip(enc, code)
        bits = E.message_bits(enc, SEED, index_code=code)
        assert bits.factor.mean() == pytest.approx(math.log2(enc.width[0]) + 1 / enc.width[0], abs=0.1)
    with pytest.raises(TypeError, match="ConditionedIndexCode"):
        E.encode_messages(enc, SEED, index_code=code, factor_code=E.MarginalFactorCode(rcc.Normal(0.0, 1.0)))
