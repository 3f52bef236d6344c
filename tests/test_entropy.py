"""Tests of rcc.entropy: index and factor codes, bitstreams, and measured bits on the Gaussian channel."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

import rcc
from rcc import entropy as E
from rcc.coding import EncodedSample
from rcc.random import shared_uniform

SEED = 7
TRAIN_SEED = 1234
HYPOTHESIS = settings(max_examples=25, deadline=None, derandomize=True,
                      suppress_health_check=[HealthCheck.too_slow])


def gaussian_enc(info_bits, count, seed=SEED, rng=1, block_size=1, **kwargs):
    targets = E.gaussian_channel_targets(info_bits, count, rng=rng, block_size=block_size)
    return rcc.encode_sample(targets, seed, **kwargs)


def synthetic_enc(index, method="pfr", seed=SEED):
    """An EncodedSample with arbitrary (huge) indices: prior-proposal, or hybrid of width 1."""
    index = np.asarray(index, dtype=np.int64)
    if method == "hybrid":
        dither = shared_uniform(seed, np.arange(index.size), index)
        factor = np.where(np.asarray(dither) >= 0, 0, 1).astype(np.int64)
        width = np.ones(index.size, dtype=np.int64)
    else:
        factor = np.zeros(index.size, dtype=np.int64)
        width = np.ones(index.size, dtype=np.int64)
    zeros = np.zeros(index.size)
    return EncodedSample(index=index, factor=factor, sample=zeros, candidates=index, width=width,
                         tail_mass=zeros, kl_bits=zeros, method=method, num_candidates=None)


def round_trip(enc, code, seed=SEED, factor_code=None):
    data = E.encode_messages(enc, seed, index_code=code, factor_code=factor_code)
    count = np.size(enc.index)
    width = enc.width if enc.method == "hybrid" else None
    index, factor = E.decode_messages(data, count, seed, index_code=code, width=width, factor_code=factor_code)
    np.testing.assert_array_equal(index, np.asarray(enc.index).reshape(count))
    np.testing.assert_array_equal(factor, np.asarray(enc.factor).reshape(factor.shape))
    assert factor.shape == (count,) + np.shape(enc.factor)[np.ndim(enc.index):]
    return data


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


# ----------------------------------------------------------------------------- measured bits


def test_entropy_coder_overhead_is_tiny():
    """10^4 messages: measured bits within 1% + 32 bits of the summed ideal information content."""
    for info_bits, code in [(8.0, E.ZipfIndexCode(1.63)), (3.0, E.ZipfIndexCode(2.0))]:
        enc = gaussian_enc(info_bits, 10_000)
        bits = E.message_bits(enc, SEED, index_code=code)
        data = E.encode_messages(enc, SEED, index_code=code)
        ideal = bits.total.sum()
        header = 8 * E._parse_header(data)["header_bytes"]
        measured = 8 * len(data)
        assert measured <= ideal * 1.01 + 32, (measured, ideal)  # header included
        assert measured - header <= ideal * 1.002 + 64, (measured - header, ideal)  # the coder alone: tighter
        assert measured - header >= ideal - 32  # and no bits vanish


def test_escape_coding_costs_its_ideal_information_content():
    rng = np.random.default_rng(2)
    index = np.minimum(stats.zipf(1.15).rvs(size=10_000, random_state=rng), 2**62)
    code = E.ZipfIndexCode(exponent=1.15)
    enc = synthetic_enc(index)
    data = E.encode_messages(enc, SEED, index_code=code)
    ideal = code.bits(index).sum()
    payload = 8 * (len(data) - E._parse_header(data)["header_bytes"])
    assert (index > 1023).mean() > 0.2  # many escapes
    assert abs(payload - ideal) <= 0.01 * ideal + 32


@pytest.fixture(scope="module")
def channel_sweep():
    """Held-out evaluation at several I: 2 * 10^4 targets per point, empirical codes fitted on other seeds."""
    out = {}
    for info_bits in [1.0, 2.0, 3.0, 4.0, 5.0, 8.0, 12.0, 16.0]:
        # Defaults everywhere: the default transform and factor code.
        train = gaussian_enc(info_bits, 20_000, seed=TRAIN_SEED, rng=100 + int(info_bits))
        enc = gaussian_enc(info_bits, 20_000, seed=SEED, rng=int(info_bits))
        zipf = E.ZipfIndexCode(E.index_kl_bits_gaussian_channel(info_bits))
        empirical = E.EmpiricalIndexCode.fit(train.index)
        out[info_bits] = {
            name: E.measure_bits(enc, SEED, index_code=code, info_bits=info_bits)
            for name, code in [("zipf", zipf), ("empirical", empirical)]
        }
        # The transform through the prior, where the factor-conditioned index code applies.
        train = gaussian_enc(info_bits, 20_000, seed=TRAIN_SEED, rng=100 + int(info_bits), transform="prior")
        enc = gaussian_enc(info_bits, 20_000, seed=SEED, rng=int(info_bits), transform="prior")
        for name, code in [("empirical_prior", E.EmpiricalIndexCode.fit(train.index)),
                           ("conditioned", E.ConditionedIndexCode.fit(train.index, train.factor, train.width,
                                                                      num_bins=8))]:
            out[info_bits][name] = E.measure_bits(enc, SEED, index_code=code, info_bits=info_bits,
                                                  transform="prior")
    return out


def test_measured_bits_against_mutual_information(channel_sweep):
    for info_bits, reports in channel_sweep.items():
        zipf, empirical = reports["zipf"], reports["empirical"]
        assert zipf.mean_kl_bits == pytest.approx(info_bits, abs=0.05)
        # With defaults everywhere (measured: Zipf 1.94-1.98, empirical 1.40-1.45 for I >= 2).
        assert zipf.overhead_bits <= (2.0 if info_bits >= 2 else 2.15), (info_bits, zipf)
        assert empirical.overhead_bits <= (1.5 if info_bits >= 2 else 1.6), (info_bits, empirical)
        # The default transform beats the transform through the prior (ties at I = 1, where M = 1 there).
        assert empirical.overhead_bits < reports["empirical_prior"].overhead_bits + 0.01, info_bits
        if info_bits >= 2:
            assert empirical.overhead_bits < reports["empirical_prior"].overhead_bits - 0.05, info_bits
        assert zipf.mean_measured_bits <= info_bits + math.log2(info_bits + 1) + 4
        for report in reports.values():  # real bytes agree with the ideal content
            assert report.mean_payload_bits <= report.mean_ideal_bits * 1.01 + 32 / report.count
            assert report.mean_measured_bits >= report.mean_ideal_bits - 32 / report.count


def test_conditioning_on_the_factor_pays_only_for_large_widths(channel_sweep):
    for info_bits, reports in channel_sweep.items():
        width = int(rcc.gaussian_width(2.0**-info_bits, transform="prior"))
        empirical, conditioned = reports["empirical_prior"], reports["conditioned"]
        if width >= 16:  # conditioned: clearly cheaper
            assert conditioned.mean_measured_bits < empirical.mean_measured_bits - 0.1, info_bits
        elif width >= 7:  # conditioned: cheaper
            assert conditioned.mean_measured_bits < empirical.mean_measured_bits - 0.02, info_bits
        else:  # falls back to the unconditioned layout: same cost up to the code fitted on all data
            assert conditioned.mean_measured_bits == pytest.approx(empirical.mean_measured_bits, abs=0.01)


def test_blocks_amortise_the_index():
    overhead = []
    for block_size in (1, 2, 4):
        report = E.bits_report(4.0, 2000, seed=SEED, rng=5, block_size=block_size)
        assert report.block_size == block_size
        overhead.append(report.overhead_bits_per_dim)
    assert overhead[0] > overhead[1] + 0.3 > overhead[2] + 0.6, overhead


def test_bits_report_fields():
    report = E.bits_report(6.0, 3000, seed=SEED, rng=2)
    assert report.count == 3000 and report.info_bits == 6.0
    # The default factor code: the prior's marginal, log2 M - D[prior || transform] bits on average.
    width = int(rcc.gaussian_width(2.0**-6))
    divergence = (math.log(8.0) + 0.5 / 64 - 0.5) / math.log(2.0)
    assert report.mean_factor_bits == pytest.approx(math.log2(width) - divergence, abs=0.1)
    through_prior = E.bits_report(6.0, 3000, seed=SEED, rng=2, transform="prior")
    width = int(rcc.gaussian_width(2.0**-6, transform="prior"))
    assert through_prior.mean_factor_bits == pytest.approx(math.log2(width), rel=1e-12)
    assert report.overhead_bits < through_prior.overhead_bits
    assert report.mean_ideal_bits == pytest.approx(report.mean_index_bits + report.mean_factor_bits)
    assert report.overhead_bits == pytest.approx(report.mean_measured_bits - 6.0)
    assert report.header_bits >= 8 * 13
    row = report.as_dict()
    assert row["overhead_bits"] == report.overhead_bits and row["messages_per_second"] > 0
    with pytest.raises(ValueError, match="index_code"):
        E.bits_report(6.0, 10, seed=SEED, rng=2, index_code="huffman")


# ----------------------------------------------------------------------------- factor codes


def test_marginal_factor_code():
    prior = rcc.Normal(0.0, 1.0)
    enc = gaussian_enc(5.0, 3000, transform="prior")
    code = E.ZipfIndexCode(1.7)
    width = int(rcc.gaussian_width(2.0**-5, transform="prior"))
    # with the transform as the marginal the code is the uniform one
    same = E.MarginalFactorCode(prior, transform="prior")
    bits = E.message_bits(enc, SEED, index_code=code, factor_code=same)
    np.testing.assert_allclose(bits.factor, math.log2(width), atol=1e-9)
    round_trip(enc, code, factor_code=same)
    # an aggregate narrower than the prior: mu ~ N(0, 0.3^2), samples ~ N(0, 0.3^2 + s^2)
    s = 2.0**-5
    mu = np.random.default_rng(9).normal(0.0, 0.3, size=3000)
    enc = rcc.encode_sample(rcc.Normal(mu, s), SEED, transform="prior")
    marginal = E.MarginalFactorCode(rcc.Normal(0.0, math.sqrt(0.09 + s * s)), transform="prior")
    bits = E.message_bits(enc, SEED, index_code=code, factor_code=marginal)
    assert bits.factor.mean() < math.log2(width) - 0.5
    data = round_trip(enc, code, factor_code=marginal)
    uniform = E.encode_messages(enc, SEED, index_code=code, transform="prior")
    assert len(data) < len(uniform)
    assert 8 * len(data) <= bits.total.sum() * 1.01 + 32 + 8 * E._parse_header(data)["header_bytes"]
    with pytest.raises(TypeError, match="marginal"):
        E.MarginalFactorCode("normal")
    with pytest.raises(ValueError, match="scalar"):
        E.MarginalFactorCode(rcc.Normal(np.zeros(2), 1.0))


def _cell_masses(marginal, width, cells, prior=None):
    """Masses of ``marginal`` on ``cells`` equal cells of the width-``width`` transformed axis."""
    prior = rcc.Normal(0.0, 1.0) if prior is None else prior
    edges = prior.ppf(np.arange(cells + 1) / cells)
    return np.diff(marginal.cdf(edges))


def test_tabulated_factor_code_constant_table_is_uniform():
    enc = gaussian_enc(5.0, 2000)
    width = int(np.asarray(enc.width).max())
    code = E.ZipfIndexCode(1.7)
    flat = E.TabulatedFactorCode([np.ones(4 * width)], [width])
    bits = E.message_bits(enc, SEED, index_code=code, factor_code=flat)
    np.testing.assert_allclose(bits.factor, math.log2(width), atol=1e-9)
    round_trip(enc, code, factor_code=flat)


def test_tabulated_factor_code_learns_a_narrow_marginal():
    # Samples whose aggregate is N(0, 0.3^2 + s^2): a fine table of that aggregate's cell
    # masses costs what the exact MarginalFactorCode costs, far less than log2 M.
    s = 2.0**-5
    width = int(rcc.gaussian_width(s, transform="prior"))
    mu = np.random.default_rng(9).normal(0.0, 0.3, size=3000)
    enc = rcc.encode_sample(rcc.Normal(mu, s), SEED, transform="prior")
    aggregate = rcc.Normal(0.0, math.sqrt(0.09 + s * s))
    code = E.ZipfIndexCode(1.7)
    exact = E.message_bits(enc, SEED, index_code=code,
                           factor_code=E.MarginalFactorCode(aggregate, transform="prior"))
    cells = width * 16
    fine = E.TabulatedFactorCode([_cell_masses(aggregate, width, cells)], [width])
    bits = E.message_bits(enc, SEED, index_code=code, factor_code=fine)
    assert bits.factor.mean() < math.log2(width) - 0.5
    assert abs(bits.factor.mean() - exact.factor.mean()) < 0.01
    data = round_trip(enc, code, factor_code=fine)
    assert 8 * len(data) <= bits.total.sum() * 1.01 + 32 + 8 * E._parse_header(data)["header_bytes"]
    # probabilities of every dither's row sum to one
    dither = np.linspace(-0.5, 0.49, 50)
    lowest = (dither < 0).astype(np.int64)
    probs = np.exp2(fine._log2_probs_table(0, lowest, dither))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-12)


def test_tabulated_factor_code_contexts():
    rng = np.random.default_rng(4)
    mu = rng.normal(0.0, 0.7, size=(600, 3))
    target = rcc.Product(rcc.Normal(mu, np.array([0.05, 0.1, 0.5])))
    widths = np.array([6, 3, 1])
    enc = rcc.encode_sample(target, SEED, width=widths)
    code = E.ZipfIndexCode(3.0)
    tables = [np.linspace(1.0, 2.0, 6), np.array([1.0, 3.0, 1.0]), np.ones(1)]
    tab = E.TabulatedFactorCode(tables)
    assert tab.num_contexts == 3 and tab.widths.tolist() == [6, 3, 1]
    data = round_trip(enc, code, factor_code=tab)
    # explicit contexts: the same as the default (event dimension)
    context = np.broadcast_to(np.arange(3), (600, 3))
    assert E.encode_messages(enc, SEED, index_code=code, factor_code=tab, factor_context=context) == data
    # saved and reloaded, the code is the same (same context checksum)
    again = E.TabulatedFactorCode.from_dict(json.loads(json.dumps(tab.to_dict())))
    assert again.fingerprint == tab.fingerprint
    index, _ = E.decode_messages(data, 600, SEED, index_code=code, width=widths, factor_code=again)
    np.testing.assert_array_equal(index, enc.index)
    # contexts whose table does not have the factor's width, or outside the tables
    with pytest.raises(ValueError, match="width"):
        E.encode_messages(enc, SEED, index_code=code, factor_code=tab, factor_context=context[:, ::-1])
    with pytest.raises(ValueError, match="factor_context"):
        E.encode_messages(enc, SEED, index_code=code, factor_code=tab, factor_context=context + 5)
    with pytest.raises(ValueError, match="factor_context"):
        E.encode_messages(enc, SEED, index_code=code, factor_context=context)
    with pytest.raises(TypeError, match="factor_context"):
        E.encode_messages(enc, SEED, index_code=code, factor_code=tab, factor_context=context * 1.0)
    # a receiver with other tables is told, not handed wrong factors
    other = E.TabulatedFactorCode([np.ones(6), np.array([1.0, 3.0, 1.0]), np.ones(1)])
    with pytest.raises(ValueError, match="factor_code"):
        E.decode_messages(data, 600, SEED, index_code=code, width=widths, factor_code=other)


@pytest.mark.parametrize(
    "tables, widths, match",
    [
        ([[1.0, -1.0]], None, "positive"),
        ([[1.0, np.nan]], None, "positive"),
        ([[]], None, "non-empty"),
        ([], None, "at least one"),
        ([[1.0, 1.0, 1.0]], [2], "divide"),
        ([[1.0, 1.0]], [1, 2], "one per table"),
    ],
)
def test_tabulated_factor_code_rejects_bad_tables(tables, widths, match):
    with pytest.raises(ValueError, match=match):
        E.TabulatedFactorCode(tables, widths)


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


def test_widths_beyond_the_range_coders_uniform_limit():
    # M > 2**24: the uniform factor code splits the value; the factor-first code splits M - 1
    enc = rcc.encode_sample(rcc.Normal(np.linspace(-2, 2, 200), 2.0**-27), SEED)
    assert (np.asarray(enc.width) > 2**24).all()
    code = E.ZipfIndexCode(1.6)
    data = round_trip(enc, code)
    bits = E.message_bits(enc, SEED, index_code=code)
    payload = 8 * (len(data) - E._parse_header(data)["header_bytes"])
    assert abs(payload - bits.total.sum()) <= 0.01 * bits.total.sum() + 32
    conditioned = E.ConditionedIndexCode([0.5], [E.ZipfIndexCode(1.0), E.ZipfIndexCode(3.0)], code)
    round_trip(enc, conditioned)


# ----------------------------------------------------------------------------- bucket index code


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


# ----------------------------------------------------------------------------- the prior's marginal code


def _dithered_enc(width, count, seed=SEED, rng=0):
    """A hybrid EncodedSample of one width whose factors are spread over the whole axis."""
    generator = np.random.default_rng(rng)
    index = generator.integers(1, 2**40, size=count)
    dither = np.asarray(shared_uniform(seed, np.arange(count), index))
    lowest = np.where(dither >= 0, 0, 1)
    # Offsets from the prior's marginal on the default transform's axis (mostly), and the edges.
    transform = rcc.coding_transform()
    z = generator.normal(0.0, 1.0, size=count)
    position = width * transform.cdf(z)
    offset = np.clip(np.floor(position - dither) - lowest, 0, width - 1).astype(np.int64)
    offset[: min(count, 2)] = [0, width - 1][: min(count, 2)]
    factor = lowest + offset
    zeros = np.zeros(count)
    return EncodedSample(index=index, factor=factor, sample=zeros, candidates=index,
                         width=np.full(count, width, dtype=np.int64), tail_mass=zeros, kl_bits=zeros,
                         method="hybrid", num_candidates=None)


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(log2_width=st.floats(0.0, 40.0), count=st.integers(1, 40), seed=st.integers(0, 2**64 - 1))
def test_marginal_code_tables_agree_and_round_trip_for_widths_up_to_2_40(log2_width, count, seed):
    width = max(1, int(2.0**log2_width))
    enc = _dithered_enc(width, count, seed=seed, rng=count)
    # Sender and receiver build their codes independently: the tables are equal bit for bit.
    sender, receiver = E.default_factor_code(), E.default_factor_code()
    assert isinstance(sender, E.MarginalFactorCode) and sender.fingerprint == receiver.fingerprint
    if width > sender.exact_max_width:
        (length_a, probs_a), (length_b, probs_b) = sender.block_table(width), receiver.block_table(width)
        assert length_a == length_b and np.array_equal(probs_a, probs_b)
        assert probs_a.size == -(-width // length_a) and math.isclose(probs_a.sum(), 1.0, rel_tol=1e-12)
    else:
        dither = np.asarray(shared_uniform(seed, np.arange(count), enc.index))
        lowest = np.where(dither >= 0, 0, 1)
        a, b = sender._log2_probs(lowest, dither, width), receiver._log2_probs(lowest, dither, width)
        assert np.array_equal(a, b)
        np.testing.assert_allclose(np.exp2(a).sum(axis=1), 1.0, rtol=1e-12)
    code = E.ZipfIndexCode(3.0)
    data = E.encode_messages(enc, seed, index_code=code)  # the default factor code
    index, factor = E.decode_messages(data, count, seed, index_code=code, width=enc.width)
    np.testing.assert_array_equal(index, enc.index)
    np.testing.assert_array_equal(factor, enc.factor)
    bits = E.message_bits(enc, seed, index_code=code)
    payload = 8 * (len(data) - E._parse_header(data)["header_bytes"])
    assert payload <= bits.total.sum() * 1.01 + 40


def test_default_factor_code_follows_the_transform():
    assert isinstance(E.default_factor_code(transform="prior"), E.UniformFactorCode)
    assert isinstance(E.default_factor_code(rcc.Uniform(-1.0, 1.0)), E.UniformFactorCode)
    assert isinstance(E.default_factor_code(rcc.Normal(0.0, np.ones(3))), E.UniformFactorCode)
    code = E.default_factor_code(rcc.Normal(0.5, 2.0))
    assert isinstance(code, E.MarginalFactorCode)
    assert code.transform.std == 16.0 and code.marginal.std == 2.0
    # The stream records the factor code: a receiver with another transform is refused.
    enc = gaussian_enc(6.0, 200)
    data = E.encode_messages(enc, SEED, index_code=E.ZipfIndexCode(2.0))
    assert data == E.encode_messages(enc, SEED, index_code=E.ZipfIndexCode(2.0),
                                     factor_code=E.MarginalFactorCode(rcc.Normal(0.0, 1.0)))
    with pytest.raises(ValueError, match="factor_code"):
        E.decode_messages(data, 200, SEED, index_code=E.ZipfIndexCode(2.0), width=enc.width, transform="prior")


def test_marginal_code_is_close_to_the_ideal_factor_information():
    # Block/cell code (u ignored) within 0.01 bits of the exact conditional just above the switch;
    # both cost about log2 M - D[prior || transform] on the Gaussian channel.
    divergence = (math.log(8.0) + 0.5 / 64 - 0.5) / math.log(2.0)
    for info_bits in (5.0, 6.0, 14.0):
        enc = gaussian_enc(info_bits, 5000, rng=21)
        width = int(enc.width[0])
        exact, blocks = E.default_factor_code(), E.default_factor_code()
        exact.exact_max_width, blocks.exact_max_width = 1 << 20, 1
        code = E.ZipfIndexCode(1.0)
        default = E.message_bits(enc, SEED, index_code=code).factor.mean()
        cells = E.message_bits(enc, SEED, index_code=code, factor_code=blocks).factor.mean()
        assert default == pytest.approx(math.log2(width) - divergence, abs=0.1)
        if width <= 1 << 12:
            ideal = E.message_bits(enc, SEED, index_code=code, factor_code=exact).factor.mean()
            assert abs(cells - ideal) < (0.01 if width > 64 else 0.05)
