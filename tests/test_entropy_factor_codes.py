"""Tests of rcc.entropy.factor_codes: uniform, marginal and tabulated factor codes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rcc
from rcc import entropy as E
from rcc.coding import EncodedSample
from rcc.random import shared_uniform

from entropy_helpers import SEED, gaussian_enc, round_trip


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
    probs = fine._probs_table(0, lowest, dither)
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
        a, b = sender._probs(lowest, dither, width), receiver._probs(lowest, dither, width)
        assert np.array_equal(a, b)
        np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=1e-12)
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
