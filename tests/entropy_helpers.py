"""Shared builders of the rcc.entropy tests: messages from the Gaussian channel or with chosen indices."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, settings

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
