"""Tests of rcc.compression: one-call compress/decompress round trips and fuzzed containers.

The containers are untrusted bytes too: every mutation must raise ``ValueError``/``TypeError``
or decode to exactly what was sent (the fuzzing helpers are shared with tests/test_streams.py).
"""

from __future__ import annotations

import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rcc
from rcc import compression as C
from rcc import entropy as E

from test_streams import MEMORY_LIMIT, SEED, assert_rejected_or_exact, mutations


@st.composite
def _targets_and_methods(draw):
    """A target of every class, with parameters a method affords (prior proposals need wide targets)."""
    method = draw(st.sampled_from(["hybrid", "pfr", "orc", "mrc"]))
    hybrid = method == "hybrid"
    mean = draw(st.floats(-2.0, 2.0) if hybrid else st.floats(-1.0, 1.0))
    std = draw(st.floats(0.003, 0.8) if hybrid else st.floats(0.3, 0.8))
    size = draw(st.integers(1, 6))
    kind = draw(st.sampled_from(["normal", "scalar", "truncated", "uniform", "product"]))
    shift = np.linspace(0.0, 0.3, size)
    if kind == "normal":
        target = rcc.Normal(mean + shift, std)
    elif kind == "scalar":
        target = rcc.Normal(mean, std)
    elif kind == "truncated":
        target = rcc.TruncatedNormal(mean + shift, std, mean - 2 * std, mean + 3 * std + 0.3)
    elif kind == "uniform":
        target = rcc.Uniform(mean, mean + std)
    else:
        target = rcc.Product(rcc.Normal(np.stack([mean + shift, mean - shift], axis=-1), std))
    width = draw(st.sampled_from([None, "adaptive"])) if hybrid else None
    return target, method, width


@settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(_targets_and_methods(), st.integers(0, 2**64 - 1))
def test_compress_round_trips_bit_exact(case, seed):
    target, method, width = case
    data, enc = rcc.compress(target, seed, method=method, width=width, max_candidates=2**30, return_encoded=True)
    samples = rcc.decompress(data, seed)
    assert np.shape(samples) == np.shape(enc.sample)
    assert np.array_equal(np.asarray(samples), np.asarray(enc.sample))


def test_compress_general_targets_and_priors():
    general = (rcc.Laplace(np.array([0.1, -0.3]), 0.2), rcc.GaussianMixture(0.5, -0.5, 0.2, 0.5, 0.2),
               rcc.ScaledBeta(2.0, 3.0, -0.5, 0.5))
    for target in general:
        for method in ("hybrid", "pfr"):
            data, enc = rcc.compress(target, SEED, method=method, return_encoded=True)
            assert np.array_equal(rcc.decompress(data, SEED), enc.sample)
    prior = rcc.Normal(0.5, 2.0)
    target = rcc.Normal(np.linspace(-3, 3, 50), 0.05)
    data, enc = rcc.compress(target, SEED, prior=prior, return_encoded=True)
    assert np.array_equal(rcc.decompress(data, SEED, prior=prior), enc.sample)
    with pytest.raises(ValueError, match="prior"):
        rcc.decompress(data, SEED)
    with pytest.raises(ValueError, match="seed"):
        rcc.decompress(data, SEED + 1, prior=prior)
    code = E.ZipfIndexCode(3.0)
    data, enc = rcc.compress(target, SEED, prior=prior, index_code=code, return_encoded=True)
    assert np.array_equal(rcc.decompress(data, SEED, prior=prior, index_code=code), enc.sample)
    with pytest.raises(ValueError, match="custom index code"):
        rcc.decompress(data, SEED, prior=prior)
    with pytest.raises(ValueError, match="index_code"):
        rcc.decompress(data, SEED, prior=prior, index_code=E.ZipfIndexCode(2.0))


def test_compress_costs_close_to_the_messages():
    target = rcc.gaussian_channel_targets(8.0, 2000, rng=1)
    data, enc = rcc.compress(target, SEED, return_encoded=True)
    code = E.ZipfIndexCode(float(np.mean(np.maximum(np.asarray(enc.kl_bits) - np.log2(enc.width), 0))))
    stream = E.encode_messages(enc, index_code=code)
    # The container adds its header (magic, version, flags, Zipf parameter, widths, CRC) only.
    assert len(data) - len(stream) <= 20
    assert 8 * len(data) / 2000 < 8.0 + 3.0


@pytest.mark.parametrize("width", [None, "adaptive", "product"])
def test_fuzz_compress(width):
    rng = np.random.default_rng(5)
    if width == "product":
        target, width = rcc.Product(rcc.Normal(rng.normal(0, 0.9, (15, 2)), 0.05)), None
    else:
        target = rcc.Normal(rng.normal(0, 0.9, 40), 0.02)
    data, enc = rcc.compress(target, SEED, width=width, return_encoded=True)
    expected = (np.asarray(enc.sample),)
    assert_rejected_or_exact(lambda blob: (rcc.decompress(blob, SEED),), data, expected, rng, 1200)
    # A hostile sender who recomputes the container's CRC (over every split a parser could find).
    prior = rcc.Normal(0.0, 1.0)
    prior_bytes = C._prior_description(prior, rcc.coding_transform(prior))
    tracemalloc.start()
    try:
        for damaged in mutations(data[:24], rng, 150):
            for cut in range(5, min(len(damaged), 20)):
                check = zlib.crc32(prior_bytes, zlib.crc32(damaged[:cut])).to_bytes(4, "little")
                try:
                    rcc.decompress(damaged[:cut] + check + data[24:], SEED)
                except (ValueError, TypeError):
                    pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_LIMIT
    # Mismatched arguments.
    for kwargs in (dict(prior=rcc.Normal(0.0, 1.5)), dict(index_code=E.ZipfIndexCode(2.0))):
        with pytest.raises((ValueError, TypeError)):
            rcc.decompress(data, SEED, **kwargs)
    with pytest.raises(ValueError):
        rcc.decompress(data, SEED + 1)
    with pytest.raises(TypeError):
        rcc.decompress("text", SEED)


def test_compress_with_a_transform_needs_the_same_transform_to_decompress():
    target = rcc.Normal(np.array([0.4, -2.0, 5.0]), 0.02)
    for transform in ("prior", rcc.Normal(0.0, 3.0)):
        data = rcc.compress(target, seed=4, transform=transform)
        samples = rcc.decompress(data, seed=4, transform=transform)
        np.testing.assert_array_equal(samples, rcc.encode_sample(target, 4, transform=transform).sample)
        with pytest.raises(ValueError, match="transform"):
            rcc.decompress(data, seed=4)
