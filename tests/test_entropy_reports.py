"""Tests of rcc.entropy.reports: measured bits on the Gaussian channel."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

import rcc
from rcc import entropy as E

from entropy_helpers import SEED, TRAIN_SEED, gaussian_enc, synthetic_enc


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
