"""The numba kernels directly: hoisted hashes, one-pass batches, memoised preparation.

``encode_sample`` prepares and encodes each element in one pass
(``kernels.encode_fused``).  These tests pin that pass to the two-step
reference built from the same public kernels (``prepare_row`` per element,
then ``select_one``), at block, chunk and thread boundaries.  No timings.
"""

import math

import numpy as np
import pytest

import rcc
from rcc import coding, kernels
from rcc.random import private_key, private_uniform, uniform_centered


def test_hoisted_hashes_equal_the_counter_hash():
    rng = np.random.default_rng(0)
    for seed, stream, n, j in zip(rng.integers(0, 2**63, 50), rng.integers(0, 2**40, 50),
                                  rng.integers(1, 2**40, 50), rng.integers(0, 8, 50)):
        seed, stream = np.uint64(seed), np.uint64(stream)
        # Called from Python the prefix comes back as an int: keep it uint64 as in the kernels.
        shared = np.uint64(kernels._stream_prefix(kernels.DOMAIN_SHARED, seed, stream))
        private = np.uint64(kernels._stream_prefix(kernels.DOMAIN_PRIVATE, seed, stream))
        assert kernels._shared_dither(shared, int(n), int(j)) == uniform_centered(seed, stream, np.uint64(n),
                                                                                   np.uint64(j))
        assert kernels._private_uniform(private, int(n)) == private_uniform(seed, stream, np.uint64(n))


@pytest.mark.parametrize("prior_family, prior_loc, prior_scale", [(0, 0.0, 1.0), (0, 0.3, 1.7), (1, -2.0, 5.0)])
def test_transformed_support_equals_both_sided_cdfs(prior_family, prior_loc, prior_scale):
    # The support needs only some of F and 1 - F at each end; what it
    # computes must equal the reference that takes both everywhere.
    tiny = [0.0, -0.0, 1e-300, 1e-17, 1e-12, 1e-9, 1e-8, 2e-8, 1e-6]
    offsets = sorted({s * t for t in tiny for s in (1.0, -1.0)} | {-40.0, -3.0, -0.2, 0.2, 3.0, 40.0})
    ends = [prior_loc + prior_scale * t for t in offsets] + [-np.inf, np.inf]
    for low in ends:
        for high in ends:
            if not low < high:
                continue
            for width in (1.0, 7.0, 2.0**40):
                f_low, fc_low = kernels.prior_cdf_pair(low, prior_family, prior_loc, prior_scale)
                f_high, fc_high = kernels.prior_cdf_pair(high, prior_family, prior_loc, prior_scale)
                expected = (
                    width - width * fc_low if f_low > 0.5 else width * f_low,
                    width - width * fc_high if f_high > 0.5 else width * f_high,
                    fc_low - fc_high if f_low > 0.5 else f_high - f_low,
                )
                got = kernels.transformed_support(low, high, width, prior_family, prior_loc, prior_scale)
                assert np.array_equal(np.array(got), np.array(expected)), (low, high, width)


def _reference_encode(target, seed, prior=None, width=None, tail_mass=rcc.DEFAULT_TAIL_MASS):
    """Hybrid encode in two steps: ``prepare_row`` per element, then ``select_one``."""
    prior = coding._check_prior(prior)
    inputs = coding._BatchInputs(target, prior, tail_mass, True, width)
    count, dims = inputs.count, inputs.dims
    key = private_key(seed)
    index = np.zeros(count, dtype=np.int64)
    factor = np.zeros((count, dims), dtype=np.int64)
    sample = np.zeros((count, dims))
    widths = np.zeros((count, dims), dtype=np.int64)
    kl_bits = np.zeros(count)
    columns, steps = inputs.columns, inputs.steps
    for i in range(count):
        params = np.empty((dims, kernels.NUM_FIELDS))
        bound = kl = 0.0
        for j in range(dims):
            value = [columns[c][i * steps[c, 0] + j * steps[c, 1]] for c in range(kernels.NUM_COLUMNS)]
            row_bound, row_kl, status = kernels.prepare_row(
                *value[:kernels.C_WIDTH], inputs.width_mode, int(value[kernels.C_WIDTH]), inputs.half_width, True, params[j])
            assert status == kernels.PREP_OK
            bound += row_bound
            kl += row_kl
        widths[i] = params[:, kernels.F_WIDTH]
        kl_bits[i] = kl / math.log(2.0)
        n, _, status = kernels.select_one(np.uint64(seed), key, np.uint64(i), params, True, bound, kernels.RACE, 0,
                                          rcc.DEFAULT_MAX_CANDIDATES, factor[i], sample[i])
        assert status == kernels.STATUS_OK
        index[i] = n
    shape = target.shape
    return index.reshape(target.batch_shape), factor.reshape(shape), sample.reshape(shape), widths.reshape(shape), \
        kl_bits.reshape(target.batch_shape)


def _assert_same(enc, reference):
    index, factor, sample, widths, kl_bits = reference
    assert np.array_equal(enc.index, index)
    assert np.array_equal(enc.factor, factor)
    assert np.array_equal(np.asarray(enc.sample).view(np.uint64), np.asarray(sample).view(np.uint64))
    assert np.array_equal(enc.width, widths)
    assert np.array_equal(np.asarray(enc.kl_bits).view(np.uint64), np.asarray(kl_bits).view(np.uint64))


@pytest.mark.parametrize("width", [None, "adaptive", 4])
def test_fused_pass_equals_two_step_reference_on_edge_cases(width):
    # Tiny and mixed stds (the memo of repeated parameters hits and misses),
    # means far out in the prior's tails and at the prior's median.
    rng = np.random.default_rng(3)
    count = 1300
    std = np.where(rng.random(count) < 0.5, 1e-4, rng.choice([0.01, 0.02, 0.2], count))
    if width == 4:
        std = np.minimum(std, 0.05)
    means = rng.normal(0.0, 1.0, count)
    means[:6] = [0.0, -0.0, 2.9, -3.1, 1e-9, -1e-9]
    target = rcc.Normal(means, std)
    for threads in (1, 2):
        _assert_same(rcc.encode_sample(target, seed=21, width=width, num_threads=threads),
                     _reference_encode(target, 21, width=width))


@pytest.mark.parametrize("count", [2047, 2048, 2049])
def test_fused_pass_at_the_serial_threshold(count):
    target = rcc.Normal(np.random.default_rng(count).normal(0.0, 1.0, count), 0.01)
    reference = _reference_encode(target, 5)
    for threads in (1, 2):
        _assert_same(rcc.encode_sample(target, seed=5, num_threads=threads), reference)


@pytest.mark.parametrize("count", [65535, 65536, 65537])
def test_fused_pass_across_progress_chunks(count):
    # With a progress bar the batch runs in chunks of 65536; without, in one call.
    target = rcc.Normal(np.random.default_rng(count).normal(0.0, 1.0, count), 0.01)
    whole = rcc.encode_sample(target, seed=8, width="adaptive")
    chunked = rcc.encode_sample(target, seed=8, width="adaptive", progress=True, num_threads=1)
    for name in ("index", "factor", "sample", "candidates", "width", "kl_bits"):
        assert np.array_equal(getattr(whole, name), getattr(chunked, name)), name
    reference = _reference_encode(rcc.Normal(target.mean[:50], 0.01), 8, width="adaptive")
    _assert_same(rcc.encode_sample(rcc.Normal(target.mean[:50], 0.01), seed=8, width="adaptive"), reference)


def test_broadcast_parameters_are_not_copied_and_give_the_same_result():
    rng = np.random.default_rng(4)
    means = rng.normal(0.0, 0.9, (300, 3))
    stds = np.array([0.01, 0.05, 0.2])
    per_dimension = rcc.Product(rcc.Normal(means, stds))
    full = rcc.Product(rcc.Normal(means, np.broadcast_to(stds, means.shape).copy()))
    inputs = coding._BatchInputs(per_dimension, rcc.Normal(0.0, 1.0), 1e-4, True, "adaptive")
    assert all(column.size <= means.size for column in inputs.columns)
    assert inputs.columns[kernels.C_PRIOR_LOC].size == 1  # a scalar prior stays one value
    a = rcc.encode_sample(per_dimension, seed=3, width="adaptive")
    b = rcc.encode_sample(full, seed=3, width="adaptive")
    assert np.array_equal(a.index, b.index) and np.array_equal(a.sample, b.sample)
    _assert_same(a, _reference_encode(per_dimension, 3, width="adaptive"))


def test_memoised_preparation_equals_fresh_rows():
    # A batch prepared block by block (memo carried along) equals prepare_row per element.
    rng = np.random.default_rng(6)
    count = 1500
    target = rcc.TruncatedNormal(rng.normal(0, 1, count), rng.choice([0.1, 0.3], count), -2.0,
                                 rng.uniform(2.1, 3.0, count))
    for prior in (rcc.Normal(0.2, 1.5), rcc.Uniform(-3.0, 4.0)):
        for width in (None, "adaptive"):
            inputs = coding._BatchInputs(target, prior, 1e-4, True, width)
            params, log_w_max, kl_bits = inputs.prepare(0, count, coding._Threads(2))
            for i in range(0, count, 7):
                row = np.empty(kernels.NUM_FIELDS)
                values = [inputs.columns[c][i * inputs.steps[c, 0]] for c in range(kernels.NUM_COLUMNS)]
                bound, kl, status = kernels.prepare_row(*values[:kernels.C_WIDTH], inputs.width_mode, int(values[-1]),
                                                        inputs.half_width, True, row)
                assert status == kernels.PREP_OK
                assert np.array_equal(row, params[i, 0], equal_nan=True)
                assert bound == log_w_max[i] and kl / math.log(2.0) == kl_bits[i]


def test_gaussian_width_is_vectorised_and_matches_the_scalar_kernel():
    stds = np.array([[0.5, 0.01, 1e-4], [1e-7, 0.2, 3.0]])
    for prior in (None, rcc.Normal(0.5, 2.0), rcc.Uniform(-1.0, 1.0)):
        widths = rcc.gaussian_width(stds, prior=prior)
        assert widths.shape == stds.shape and widths.dtype == np.int64
        for position in np.ndindex(stds.shape):
            assert widths[position] == rcc.gaussian_width(float(stds[position]), prior=prior)
    assert isinstance(rcc.gaussian_width(0.01), int)
    assert rcc.gaussian_width(0.01, tail_mass=0.0) == 1


def test_setup_errors_name_the_first_bad_element_in_order():
    # Bad parameters are reported with their flat index, even past the first
    # chunk; a too-large race bound in an earlier chunk is reported first.
    count = 70_000
    means = np.zeros(count)
    means[69_001] = 41.0  # [40, 42]: no mass under N(0, 1) in double precision
    target = rcc.TruncatedNormal(means, 1.0, means - 1.0, means + 1.0)
    with pytest.raises(ValueError, match="no mass.*flat index 69001"):
        rcc.encode_sample(target, seed=1, transform="prior")
    far = np.zeros(count)
    far[5] = 8.0  # exp(32) candidates with the std width through the prior
    with pytest.raises(ValueError, match="flat index 5 \\(target Normal\\(mean=8, std=0.01\\).*drop transform='prior'"):
        rcc.encode_sample(rcc.Normal(far, 0.01), seed=1, transform="prior")
    assert rcc.encode_sample(rcc.Normal(far, 0.01), seed=1).candidates[5] < 100  # the default transform
    with pytest.raises(ValueError, match="does not fit width 1000 \\(first: flat index 3\\)"):
        rcc.encode_sample(rcc.Normal(np.zeros(10), np.r_[0.5, 0.5, 0.5, 0.01, np.full(6, 0.5)]), seed=1,
                          width=np.r_[1, 1, 1, 1000, np.ones(6, int)])


def test_scalar_fast_path_still_rejects_bad_arguments_clearly():
    target = rcc.Normal(0.3, 0.01)
    with pytest.raises(TypeError, match="seed"):
        rcc.encode_sample(target, seed=True)
    with pytest.raises(ValueError, match="seed"):
        rcc.encode_sample(target, seed=2**64)
    with pytest.raises(TypeError, match="tail_mass"):
        rcc.encode_sample(target, seed=1, tail_mass="0.1")
    with pytest.raises(ValueError, match="tail_mass"):
        rcc.encode_sample(target, seed=1, tail_mass=float("nan"))
    with pytest.raises(TypeError, match="max_candidates"):
        rcc.encode_sample(target, seed=1, max_candidates=2.0**20)
    with pytest.raises(TypeError, match="num_candidates"):
        rcc.encode_sample(target, seed=1, method="orc", num_candidates=True)
    # Integer types other than int still work and give the same result.
    a = rcc.encode_sample(target, seed=np.uint64(9), max_candidates=np.int64(2**20), tail_mass=np.float64(1e-4))
    b = rcc.encode_sample(target, seed=9, max_candidates=2**20)
    assert (a.index, a.factor, a.sample) == (b.index, b.factor, b.sample)
    assert rcc.encode_sample(target, seed=9, rng=5).index >= 1
