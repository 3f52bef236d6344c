"""encode_sample(out=...) writes into the caller's arrays and returns exactly what a fresh call returns."""

import dataclasses

import numpy as np
import pytest

import rcc

RNG = np.random.default_rng(5)
MEANS = RNG.normal(0.0, 0.9, (6, 50))
PRODUCT_MEANS = RNG.normal(0.0, 0.9, (40, 3))

CASES = [
    (rcc.Normal(MEANS, 0.01), {}),
    (rcc.Normal(MEANS, 0.01), {"width": "adaptive"}),
    (rcc.Normal(MEANS[0], 0.2), {"method": "pfr"}),
    (rcc.Normal(MEANS[0], 0.2), {"method": "orc", "num_candidates": 32}),
    (rcc.Normal(MEANS[0], 0.2), {"method": "mrc"}),
    (rcc.Product(rcc.Normal(PRODUCT_MEANS, 0.1)), {"width": "adaptive"}),
    (rcc.Uniform(MEANS[0], MEANS[0] + 0.05), {}),
]


def _equal(a, b):
    for field in dataclasses.fields(rcc.EncodedSample):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            np.testing.assert_array_equal(x, y, err_msg=field.name)
            assert np.asarray(x).dtype == np.asarray(y).dtype, field.name
        else:
            assert x == y, field.name


@pytest.mark.parametrize("target, kwargs", CASES)
def test_out_gives_the_fresh_result_in_the_callers_arrays(target, kwargs):
    fresh = rcc.encode_sample(target, seed=3, **kwargs)
    buffer = rcc.encode_sample(target, seed=99, **kwargs)  # other values, same shapes
    reused = rcc.encode_sample(target, seed=3, out=buffer, **kwargs)
    _equal(reused, fresh)
    for name in ("index", "factor", "sample", "candidates", "width", "kl_bits"):
        assert getattr(reused, name) is getattr(buffer, name), name  # no new memory
    z = rcc.decode_sample(reused.index, reused.factor, seed=3, width=reused.width, method=reused.method)
    np.testing.assert_array_equal(z, fresh.sample)


def test_a_chunk_loop_reusing_one_buffer_equals_one_call():
    means = RNG.normal(0.0, 0.9, 400)
    whole = rcc.encode_sample(rcc.Normal(means, 0.01), seed=8)
    buffer, parts = None, []
    for start in range(0, 400, 100):
        buffer = rcc.encode_sample(rcc.Normal(means[start:start + 100], 0.01), seed=8, stream_offset=start,
                                   out=buffer)
        parts.append(buffer.index.copy())
    np.testing.assert_array_equal(np.concatenate(parts), whole.index)


def _buffer(**changes):
    enc = rcc.encode_sample(rcc.Normal(MEANS[0], 0.01), seed=1)
    return dataclasses.replace(enc, **changes)


def _read_only(arr):
    arr.flags.writeable = False
    return arr


TARGET = rcc.Normal(MEANS[0], 0.01)
SHARED = np.zeros(50, dtype=np.int64)
BAD = [
    (lambda: {"out": "buffer"}, TypeError, "out must be an EncodedSample"),
    (lambda: {"out": _buffer(index=list(range(50)))}, TypeError, "out.index must be a numpy array"),
    (lambda: {"out": _buffer(index=np.zeros(49, dtype=np.int64))}, ValueError, r"out.index has shape \(49,\)"),
    (lambda: {"out": _buffer(sample=np.zeros(50, dtype=np.float32))}, ValueError, "out.sample has dtype float32"),
    (lambda: {"out": _buffer(width=np.zeros(100, dtype=np.int64)[::2])}, ValueError, "out.width must be C-contiguous"),
    (lambda: {"out": _buffer(kl_bits=_read_only(np.zeros(50)))}, ValueError, "out.kl_bits is read-only"),
    (lambda: {"out": _buffer(index=SHARED, candidates=SHARED)}, ValueError, "out.index and out.candidates share"),
    (lambda: {"out": _buffer(), "method": "orc"}, TypeError, "out.num_candidates must be a numpy array"),
]


@pytest.mark.parametrize("arguments, error, message", BAD)
def test_bad_out_is_rejected_with_the_field_and_the_fix(arguments, error, message):
    with pytest.raises(error, match=message):
        rcc.encode_sample(TARGET, seed=2, **arguments())


def test_out_sharing_memory_with_the_target_is_rejected():
    means = MEANS[0].copy()
    buffer = _buffer(sample=means)
    with pytest.raises(ValueError, match="out.sample shares memory with the target"):
        rcc.encode_sample(rcc.Normal(means, 0.01), seed=2, out=buffer)


def test_out_is_for_batches_of_rcc_distributions():
    with pytest.raises(ValueError, match="a batch of targets"):
        rcc.encode_sample(rcc.Normal(0.3, 0.01), seed=2, out=_buffer())
    with pytest.raises(ValueError, match="drop out="):
        rcc.encode_sample(rcc.Laplace(MEANS[0], 0.05), seed=2, out=_buffer())
    with pytest.raises(ValueError, match="drop out="):
        rcc.encode_sample(TARGET, seed=2, method="gprs", tail_mass=0.0, out=_buffer())
