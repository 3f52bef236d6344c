"""Tests of rcc.entropy.messages: bitstream round trips, damaged and mismatched streams."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import rcc
from rcc import entropy as E

from entropy_helpers import SEED, HYPOTHESIS, gaussian_enc, synthetic_enc, round_trip


# ----------------------------------------------------------------------------- bitstream round trips


@HYPOTHESIS
@given(
    info_bits=st.floats(0.3, 14.0),
    count=st.integers(1, 60),
    block_size=st.integers(1, 3),
    seed=st.integers(0, 2**64 - 1),
    code_kind=st.sampled_from(["zipf", "empirical", "conditioned", "conditioned_zipf"]),
)
def test_round_trip_gaussian_channel(info_bits, count, block_size, seed, code_kind):
    enc = gaussian_enc(info_bits, count, seed=seed, rng=count, block_size=block_size)
    if code_kind == "zipf":
        code = E.ZipfIndexCode(block_size * 1.5)
    else:
        train = gaussian_enc(info_bits, 300, seed=seed ^ 1, rng=count + 1, block_size=block_size)
        if code_kind == "empirical":
            code = E.EmpiricalIndexCode.fit(train.index)
        else:
            kind = "zipf" if code_kind == "conditioned_zipf" else "empirical"
            code = E.ConditionedIndexCode.fit(train.index, train.factor, train.width, kl_bits=train.kl_bits,
                                              kind=kind, max_factor_overhead=0.3)
    round_trip(enc, code, seed=seed)


@HYPOTHESIS
@given(
    index=st.lists(st.integers(1, 2**63 - 1) | st.integers(1, 3000), min_size=1, max_size=40),
    method=st.sampled_from(["pfr", "hybrid"]),
    head_bits=st.sampled_from([8, 10, 16]),
    exponent=st.floats(1.01, 4.0),
)
def test_round_trip_arbitrary_indices(index, method, head_bits, exponent):
    enc = synthetic_enc(index, method=method)
    round_trip(enc, E.ZipfIndexCode(exponent=exponent, head_bits=head_bits))
    round_trip(enc, E.EmpiricalIndexCode.fit(index, head_bits=head_bits))


def test_round_trip_extreme_indices_and_bucket_edges():
    edges = [2**b + d for b in range(8, 63) for d in (-1, 0, 1)] + [2**63 - 1, 2**53 + 1, 1, 2, 1023, 1024]
    enc = synthetic_enc(edges, method="hybrid")
    for code in (E.ZipfIndexCode(1.0), E.ZipfIndexCode(exponent=3.0, head_bits=8), E.EmpiricalIndexCode.fit([1, 2, 3])):
        round_trip(enc, code)


def test_round_trip_batch_shapes_and_methods():
    # a 2-D batch is coded in flat C order (stream i = flat position)
    means = np.random.default_rng(0).normal(size=(3, 4)) * 0.5
    enc = rcc.encode_sample(rcc.Normal(means, 0.02), SEED)
    data = E.encode_messages(enc, SEED, index_code=E.ZipfIndexCode(2.0), width=enc.width)
    assert data == E.encode_messages(enc, SEED, index_code=E.ZipfIndexCode(2.0))
    index, factor = E.decode_messages(data, 12, SEED, index_code=E.ZipfIndexCode(2.0), width=enc.width.ravel())
    np.testing.assert_array_equal(index, enc.index.ravel())
    np.testing.assert_array_equal(factor, enc.factor.ravel())
    # a single (scalar) target
    enc = rcc.encode_sample(rcc.Normal(0.3, 0.01), SEED)
    round_trip(enc, E.ZipfIndexCode(2.0))
    # product target with per-dimension widths, width given as (d,)
    enc = rcc.encode_sample(rcc.Product(rcc.Normal(np.zeros((50, 3)), np.array([0.5, 0.01, 0.001]))), SEED)
    data = E.encode_messages(enc, SEED, index_code=E.ZipfIndexCode(3.0), width=enc.width[0])
    index, factor = E.decode_messages(data, 50, SEED, index_code=E.ZipfIndexCode(3.0), width=enc.width[0])
    assert factor.shape == (50, 3)
    np.testing.assert_array_equal(factor, enc.factor)
    # prior-proposal methods: the factor is not transmitted
    for method, code in [("pfr", E.ZipfIndexCode(4.0)), ("orc", E.ZipfIndexCode(4.0)),
                         ("mrc", E.UniformIndexCode(256))]:
        kwargs = {"num_candidates": 256} if method != "pfr" else {}
        enc = gaussian_enc(4.0, 500, method=method, **kwargs)
        data = round_trip(enc, code)
        ideal = E.message_bits(enc, SEED, index_code=code)
        assert (ideal.factor == 0).all()
        if method == "mrc":  # log2(256) bits per index
            payload = 8 * (len(data) - E._parse_header(data)["header_bytes"])
            assert 8.0 * 500 - 32 <= payload <= 8.0 * 500 * 1.01 + 32


def test_width_one_factor_costs_nothing():
    enc = gaussian_enc(1.0, 5000, transform="prior")  # s = 1/2: M = 1
    assert (np.asarray(enc.width) == 1).all()
    code = E.ZipfIndexCode(1.0)
    data = E.encode_messages(enc, SEED, index_code=code, transform="prior")
    bits = E.message_bits(enc, SEED, index_code=code, transform="prior")
    assert (bits.factor == 0).all()
    payload = 8 * len(data) - E._parse_header(data)["header_bytes"] * 8
    assert payload <= bits.index.sum() * 1.001 + 32


# ----------------------------------------------------------------------------- damaged streams


@pytest.fixture(scope="module")
def stream():
    enc = gaussian_enc(6.0, 300)
    code = E.ZipfIndexCode(1.7)
    return enc, code, E.encode_messages(enc, SEED, index_code=code)


def test_truncated_streams_are_rejected(stream):
    enc, code, data = stream
    for cut in range(len(data)):
        with pytest.raises(ValueError):
            E.decode_messages(data[:cut], 300, SEED, index_code=code, width=enc.width)


def test_corrupted_streams_are_rejected(stream):
    enc, code, data = stream
    rng = np.random.default_rng(0)
    positions = list(range(min(len(data), 24))) + list(rng.choice(len(data), 40, replace=False))
    for pos in positions:
        for flip in (1, 0x80):
            damaged = bytearray(data)
            damaged[pos] ^= flip
            with pytest.raises(ValueError):
                E.decode_messages(bytes(damaged), 300, SEED, index_code=code, width=enc.width)
    with pytest.raises(ValueError, match="checksum"):
        E.decode_messages(data + b"\x00", 300, SEED, index_code=code, width=enc.width)
    with pytest.raises(TypeError, match="bytes"):
        E.decode_messages("text", 300, SEED, index_code=code, width=enc.width)


def test_mismatched_parameters_are_rejected(stream):
    enc, code, data = stream
    ok = dict(index_code=code, width=enc.width)
    with pytest.raises(ValueError, match="holds 300 messages"):
        E.decode_messages(data, 299, SEED, **ok)
    with pytest.raises(ValueError, match="seed"):
        E.decode_messages(data, 300, SEED + 1, **ok)
    with pytest.raises(ValueError, match="seed, index_code"):
        E.decode_messages(data, 300, SEED, index_code=E.ZipfIndexCode(1.8), width=enc.width)
    with pytest.raises(ValueError, match="width"):
        E.decode_messages(data, 300, SEED, index_code=code, width=np.asarray(enc.width) + 1)
    with pytest.raises(ValueError, match="width is required"):
        E.decode_messages(data, 300, SEED, index_code=code)
    with pytest.raises(ValueError, match="method"):
        E.decode_messages(data, 300, SEED, method="pfr", **ok)
    with pytest.raises(ValueError, match="factor_code"):
        E.decode_messages(data, 300, SEED, factor_code=E.MarginalFactorCode(rcc.Normal(0.0, 0.5)), **ok)
    conditioned = E.ConditionedIndexCode([], [code], code)
    with pytest.raises(ValueError, match="kind of index code"):
        E.decode_messages(data, 300, SEED, index_code=conditioned, width=enc.width)
    with pytest.raises(ValueError, match="magic"):
        E.decode_messages(b"XYZ" + data[3:], 300, SEED, **ok)


def test_encode_argument_checks():
    enc = gaussian_enc(6.0, 20)
    code = E.ZipfIndexCode(1.7)
    with pytest.raises(TypeError, match="enc"):
        E.encode_messages((enc.index, enc.factor), SEED, index_code=code)
    with pytest.raises(TypeError, match="index_code"):
        E.encode_messages(enc, SEED, index_code="zipf")
    with pytest.raises(TypeError, match="factor_code"):
        E.encode_messages(enc, SEED, index_code=code, factor_code="uniform")
    with pytest.raises(ValueError, match="enc.width"):
        E.encode_messages(enc, SEED, index_code=code, width=np.asarray(enc.width) - 1)
    with pytest.raises(ValueError, match="contradicts the seed"):
        E.encode_messages(gaussian_enc(1.0, 20), SEED + 1, index_code=code)
    # A message that does not record its seed; M = 1 through the prior, so K is fixed by U_N.
    anonymous = dataclasses.replace(gaussian_enc(1.0, 20, transform="prior"), seed=None)
    with pytest.raises(ValueError, match="inconsistent with the dither"):
        E.encode_messages(anonymous, SEED + 1, index_code=code, transform="prior")
    with pytest.raises(TypeError, match="seed is required"):
        E.encode_messages(anonymous, index_code=code)
    with pytest.raises(TypeError, match="seed"):
        E.encode_messages(enc, 1.5, index_code=code)
    with pytest.raises(TypeError, match="count"):
        E.decode_messages(b"", 2.0, SEED, index_code=code)
