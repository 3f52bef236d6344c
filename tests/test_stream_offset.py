"""``stream_offset``: a batch coded in parts equals one call, bit for bit.

Element ``i`` of a call with ``stream_offset=a`` uses stream ``a + i``, so
coding ``x[a:b]`` with ``stream_offset=a`` for any partition of ``x`` must
give exactly the messages, samples and bytes of one call on ``x``.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rcc

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
FIELDS = ("index", "factor", "sample", "candidates", "width", "kl_bits")
SIZE = 40


def _batch(seed=0, size=SIZE):
    rng = np.random.default_rng(seed)
    return rng.normal(size=size) * 0.7, np.exp(rng.normal(size=size) - 2.0)


def _cuts(size):
    """Strictly increasing cut points 0 = c0 < c1 < ... < ck = size."""
    return st.sets(st.integers(1, size - 1), max_size=8).map(lambda inner: [0, *sorted(inner), size])


def _assert_same(part, whole, a, b):
    for field in FIELDS:
        np.testing.assert_array_equal(np.asarray(getattr(part, field)), np.asarray(getattr(whole, field))[a:b],
                                      err_msg=field)


@SETTINGS
@given(cuts=_cuts(SIZE), method=st.sampled_from(["hybrid", "pfr", "orc", "mrc"]), rng=st.sampled_from([None, 11]))
def test_any_partition_encodes_and_decodes_like_one_call(cuts, method, rng):
    mean, std = _batch()
    if method != "hybrid":
        std = std + 0.3  # keep the prior-proposal races short
    whole = rcc.encode_sample(rcc.Normal(mean, std), 5, method=method, rng=rng)
    for a, b in zip(cuts, cuts[1:]):
        part = rcc.encode_sample(rcc.Normal(mean[a:b], std[a:b]), 5, method=method, rng=rng, stream_offset=a)
        _assert_same(part, whole, a, b)
        width = part.width if method == "hybrid" else None
        z = rcc.decode_sample(part.index, part.factor, 5, method=method, width=width, stream_offset=a)
        np.testing.assert_array_equal(z, whole.sample[a:b])


def test_scalar_path_uses_the_offset():
    mean, std = _batch(1, 12)
    whole = rcc.encode_sample(rcc.Normal(mean, std), 9)
    for i in range(12):
        one = rcc.encode_sample(rcc.Normal(float(mean[i]), float(std[i])), 9, stream_offset=i)
        assert (one.index, one.factor, one.sample) == (whole.index[i], whole.factor[i], whole.sample[i])


def test_product_targets_offset_by_batch_element():
    rng = np.random.default_rng(2)
    mean, std = rng.normal(size=(10, 3)) * 0.5, np.full((10, 3), 0.3)
    whole = rcc.encode_sample(rcc.Product(rcc.Normal(mean, std)), 4)
    part = rcc.encode_sample(rcc.Product(rcc.Normal(mean[6:], std[6:])), 4, stream_offset=6)
    _assert_same(part, whole, 6, 10)
    z = rcc.decode_sample(part.index, part.factor, 4, width=part.width, stream_offset=6)
    np.testing.assert_array_equal(z, whole.sample[6:])


def test_general_targets_partition_like_one_call():
    rng = np.random.default_rng(3)
    loc, scale = rng.normal(size=16) * 0.5, np.exp(rng.normal(size=16) - 3.5)
    whole = rcc.encode_sample(rcc.Laplace(loc, scale), 8)
    for a, b in ((0, 5), (5, 6), (6, 16)):
        part = rcc.encode_sample(rcc.Laplace(loc[a:b], scale[a:b]), 8, stream_offset=a)
        _assert_same(part, whole, a, b)


def test_message_bytes_of_parts_decode_to_the_whole_batch():
    mean, std = _batch(4, 60)
    whole = rcc.encode_sample(rcc.Normal(mean, std), 6)
    code = rcc.ZipfIndexCode(kl_bits=float(np.mean(whole.kl_bits)))
    for factor_code in (None, rcc.MarginalFactorCode(rcc.Normal(0.0, 0.8))):
        part = rcc.encode_sample(rcc.Normal(mean[25:], std[25:]), 6, stream_offset=25)
        data = rcc.encode_messages(part, 6, index_code=code, factor_code=factor_code, stream_offset=25)
        index, factor = rcc.decode_messages(data, 35, 6, index_code=code, width=part.width,
                                            factor_code=factor_code, stream_offset=25)
        np.testing.assert_array_equal(index, whole.index[25:])
        np.testing.assert_array_equal(factor, whole.factor[25:])
        bits = rcc.message_bits(part, 6, index_code=code, factor_code=factor_code, stream_offset=25)
        assert np.isfinite(bits.total).all()
        # A receiver with another offset is told, not handed wrong integers.
        with pytest.raises(ValueError, match="stream_offset"):
            rcc.decode_messages(data, 35, 6, index_code=code, width=part.width, factor_code=factor_code)


def test_offset_zero_keeps_the_bytes():
    mean, std = _batch(5, 20)
    enc = rcc.encode_sample(rcc.Normal(mean, std), 2)
    code = rcc.ZipfIndexCode(kl_bits=3.0)
    assert rcc.encode_messages(enc, 2, index_code=code) == rcc.encode_messages(enc, 2, index_code=code,
                                                                               stream_offset=0)


def test_a_generator_rng_gives_each_part_its_own_key():
    # Documented: only rng=None or one integer make parts agree with one call.
    mean, std = _batch(6, 30)
    whole = rcc.encode_sample(rcc.Normal(mean, std), 3, rng=np.random.default_rng(1))
    generator = np.random.default_rng(1)
    first = rcc.encode_sample(rcc.Normal(mean[:15], std[:15]), 3, rng=generator)
    second = rcc.encode_sample(rcc.Normal(mean[15:], std[15:]), 3, rng=generator, stream_offset=15)
    np.testing.assert_array_equal(first.index, whole.index[:15])
    assert not np.array_equal(second.index, whole.index[15:])


@pytest.mark.parametrize("offset, error, match", [
    (-1, ValueError, ">= 0"),
    (2**64 - 3, ValueError, "below 2\\*\\*64"),
    (1.0, TypeError, "non-negative integer"),
    (True, TypeError, "non-negative integer"),
    ("3", TypeError, "non-negative integer"),
])
def test_bad_offsets_are_rejected(offset, error, match):
    target = rcc.Normal(np.zeros(4), 0.1)
    with pytest.raises(error, match=match):
        rcc.encode_sample(target, 1, stream_offset=offset)
    with pytest.raises(error, match=match):
        rcc.decode_sample(np.ones(4, np.int64), np.zeros(4, np.int64), 1, width=1, stream_offset=offset)
    with pytest.raises(error, match=match):
        rcc.encode_sample(rcc.Laplace(np.zeros(4), 0.1), 1, stream_offset=offset)
    if offset != 2**64 - 3:  # one scalar target still fits below 2**64
        with pytest.raises(error, match=match):
            rcc.encode_sample(rcc.Normal(0.0, 0.1), 1, stream_offset=offset)


def test_the_last_streams_are_usable():
    enc = rcc.encode_sample(rcc.Normal(np.zeros(3), 0.1), 1, stream_offset=2**64 - 3)
    z = rcc.decode_sample(enc.index, enc.factor, 1, width=enc.width, stream_offset=np.uint64(2**64 - 3))
    np.testing.assert_array_equal(z, enc.sample)
    one = rcc.encode_sample(rcc.Normal(0.0, 0.1), 1, stream_offset=2**64 - 1)
    assert one.sample == enc.sample[2]


def test_compress_in_parts_decompresses_like_one_call():
    mean, std = _batch(3)
    whole = rcc.encode_sample(rcc.Normal(mean, std), seed=21)
    parts = []
    for a, b in [(0, 13), (13, 14), (14, SIZE)]:
        data = rcc.compress(rcc.Normal(mean[a:b], std[a:b]), seed=21, stream_offset=a)
        parts.append(rcc.decompress(data, seed=21, stream_offset=a))
        with pytest.raises(ValueError):
            rcc.decompress(data, seed=21, stream_offset=a + 1)
    np.testing.assert_array_equal(np.concatenate(parts), whole.sample)
