"""Inputs at the edges a user meets first: priors of the wrong shape, priors too wide for doubles.

Each case must give a correct result or a ValueError that names the argument and a fix; no
numpy warning escapes (the module runs its calls under ``warnings.simplefilter("error")``).
"""

import warnings

import numpy as np
import pytest

import rcc

SCALAR_TARGET = rcc.Normal(0.3, 0.1)
WIDE_STD = 1e308  # the default coding transform is 8x wider: 8e308 is not a finite double

#: (label, call, expected message fragment)
REJECTED = [
    ("encode_sample, prior of shape (1,) for a scalar target",
     lambda: rcc.encode_sample(SCALAR_TARGET, 0, prior=rcc.Normal(np.zeros(1), np.ones(1))),
     "pass the target with shape (1,) or the prior with scalar parameters"),
    ("compress, prior of shape (1,) for a scalar target",
     lambda: rcc.compress(SCALAR_TARGET, 0, prior=rcc.Normal(np.zeros(1), np.ones(1))),
     "pass the target with shape (1,) or the prior with scalar parameters"),
    ("encode_sample, prior of shape (3,) for a target of shape (2,)",
     lambda: rcc.encode_sample(rcc.Normal(np.zeros(2), 0.1), 0, prior=rcc.Normal(np.zeros(3), 1.0)),
     "do not broadcast to the target's shape (2,)"),
    ("encode_sample, prior std 1e308",
     lambda: rcc.encode_sample(SCALAR_TARGET, 0, prior=rcc.Normal(0.0, WIDE_STD)),
     "prior.std must be at most"),
    ("compress, prior std 1e308 in one element",
     lambda: rcc.compress(rcc.Normal(np.array([0.3, 0.2]), 0.1), 0,
                          prior=rcc.Normal(0.0, np.array([1.0, WIDE_STD]))),
     "prior.std must be at most"),
    ("encode_sample, target far narrower than the prior",
     lambda: rcc.encode_sample(SCALAR_TARGET, 0, prior=rcc.Normal(0.0, 1e300)),
     "too narrow beside the prior"),
]


@pytest.mark.parametrize("label, call, fragment", REJECTED, ids=[case[0] for case in REJECTED])
def test_rejected_with_a_clear_error(label, call, fragment):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
            call()


def test_largest_prior_std_still_codes_exactly():
    """Just below the limit the default transform is finite and the round trip is exact."""
    limit = float(np.finfo(np.float64).max) / 8.0
    prior = rcc.Normal(0.0, limit)
    target = rcc.Normal(0.0, limit / 4.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enc = rcc.encode_sample(target, 3, prior=prior)
        decoded = rcc.decode_sample(enc.index, enc.factor, 3, prior=prior, width=enc.width)
    assert np.isfinite(enc.sample)
    assert np.array_equal(decoded, enc.sample)
    assert abs(float(enc.sample)) <= 40.0 * limit / 4.0


def test_shape_one_prior_with_shape_one_target_works():
    """The fix the error names: the same problem with the target of shape (1,)."""
    prior = rcc.Normal(np.zeros(1), np.ones(1))
    enc = rcc.encode_sample(rcc.Normal(np.array([0.3]), 0.1), 5, prior=prior)
    assert enc.sample.shape == (1,)
    decoded = rcc.decode_sample(enc.index, enc.factor, 5, prior=prior, width=enc.width)
    assert np.array_equal(decoded, enc.sample)
