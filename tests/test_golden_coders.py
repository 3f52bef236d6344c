"""Golden outputs of the coders, pinned before the coder modules were restructured.

Each case encodes a small batch with fixed seeds and compares the sha256 (first
16 hex digits) of the index, factor, sample, width and candidate-count arrays
with values computed from the code before the move, so that moving code
between modules is shown to be byte-neutral.  Every case also round-trips
through :func:`rcc.decode_sample`, bit for bit.
"""

import hashlib

import numba
import numpy as np
import pytest

import rcc
from rcc.general import GeneralTarget, Laplace, encode_general


@numba.njit(cache=True)
def _quartic_logpdf(z, params):
    return -(z - params[0]) ** 4


_DTYPES = (np.int64, np.int64, np.float64, np.int64, np.int64)  # index, factor, sample, width, candidates


def _digests(enc):
    fields = (enc.index, enc.factor, enc.sample, enc.width, enc.candidates)
    return tuple(hashlib.sha256(np.ascontiguousarray(np.asarray(value, dtype=dtype)).tobytes()).hexdigest()[:16]
                 for value, dtype in zip(fields, _DTYPES))


_N, _U = rcc.Normal, rcc.Uniform
_MEANS = np.linspace(-1.5, 1.5, 6)

# name: (encode keywords, extra decode keywords)
_CORE_CASES = {
    "normal_scalar": (dict(target=_N(0.3, 0.1), seed=7), {}),
    "normal_batch": (dict(target=_N(_MEANS, 0.2), seed=11), {}),
    "normal_batch_prior_transform": (dict(target=_N(_MEANS, 0.2), seed=11, transform="prior"),
                                     dict(transform="prior")),
    "normal_batch_offset": (dict(target=_N(_MEANS, 0.2), seed=11, stream_offset=1000), dict(stream_offset=1000)),
    "normal_batch_normal_prior": (dict(target=_N(_MEANS, 0.2), seed=5, prior=_N(0.5, 2.0)),
                                  dict(prior=_N(0.5, 2.0))),
    "normal_pfr": (dict(target=_N(_MEANS, 0.5), seed=3, method="pfr"), dict(method="pfr")),
    "normal_orc": (dict(target=_N(_MEANS, 0.5), seed=3, method="orc"), dict(method="orc")),
    "normal_mrc": (dict(target=_N(_MEANS, 0.5), seed=3, method="mrc"), dict(method="mrc")),
    "truncnorm": (dict(target=rcc.TruncatedNormal(0.2, 0.3, -0.1, 0.6), seed=4), {}),
    "uniform_prior_uniform": (dict(target=_U(np.linspace(0.1, 0.5, 4), 0.7), seed=9, prior=_U(0.0, 1.0)),
                              dict(prior=_U(0.0, 1.0))),
    "uniform_prior_uniform_pfr": (dict(target=_U(np.linspace(0.1, 0.5, 4), 0.7), seed=9, prior=_U(0.0, 1.0),
                                       method="pfr"), dict(prior=_U(0.0, 1.0), method="pfr")),
    "uniform_normal_prior": (dict(target=_U(-0.2, 0.3), seed=2), {}),
    "product": (dict(target=rcc.Product(_N(np.array([[0.1, -0.4, 0.9]]), 0.3)), seed=13), {}),
    "adaptive": (dict(target=_N(_MEANS, 0.2), seed=17, width="adaptive"), {}),
}

GOLDEN = {
    'normal_scalar': ('d86e8112f3c4c444', 'b0bd73e6922c0d24', 'ed217b96960c284f', 'bf5b0e89f1caed18', 'd86e8112f3c4c444'),
    'normal_batch': ('b760b77f43724a2f', '9c97bdf3e2ea0aa4', '696c42dc1f7a00d8', '47c8e0db997209fd', '84160554f0f82377'),
    'normal_batch_prior_transform': ('5c988aa16230df09', '0020bd656ca1c80c', '3a57d95fb2710e68', '334658f1779808c7', '9f41ccd473baa1b1'),
    'normal_batch_offset': ('5d151f516c3dfffc', 'e14702bf432716e8', 'ae31639aac76048a', '47c8e0db997209fd', '6123fe69f1d2c7ab'),
    'normal_batch_normal_prior': ('d381db54e92e1c88', '33b38605048a3a9f', '7e07d3fa033418ea', '909929456817c0eb', '4ef8bb479756e3f7'),
    'normal_pfr': ('d31adc08f1e4f3db', '17b0761f87b081d5', 'f1cd2ff8315fd0e5', '334658f1779808c7', 'def0facb4bbca26e'),
    'normal_orc': ('d31adc08f1e4f3db', '17b0761f87b081d5', 'f1cd2ff8315fd0e5', '334658f1779808c7', '62cf0410f8a4d1fc'),
    'normal_mrc': ('c2505f6bd61b5bc3', '17b0761f87b081d5', '8a59792a6cd400f2', '334658f1779808c7', '8147f2ebce08dd5a'),
    'truncnorm': ('7c9fa136d4413fa6', '18d8d609947c6b82', 'e48c3f2cff438df4', '3c88bf13b58cba9c', '7c9fa136d4413fa6'),
    'uniform_prior_uniform': ('1eb911ac9b524545', '9852c561e3910970', 'a609407f9cb99650', '68c727f811ffade3', '1eb911ac9b524545'),
    'uniform_prior_uniform_pfr': ('6d070fc69e738742', '66687aadf862bd77', '1925fa54ff1e9813', '5e4ffd7d196e1506', '6d070fc69e738742'),
    'uniform_normal_prior': ('7c9fa136d4413fa6', '0c27700c82d333aa', 'e38db00a41903f06', '552a4a6608d38432', '7c9fa136d4413fa6'),
    'product': ('35be322d094f9d15', '8674167245f4ad92', '493fcb2c1d788cc5', '49f92c4a88e0fb71', 'a111f275cc2e7588'),
    'adaptive': ('d896b4e312b5d5ec', 'ae6bb44baac45958', '5d5d4772243e95d7', '6c06b5b33125be24', 'd7e5f432a86fda26'),
    'laplace_hybrid': ('5e751c50f12cc89b', '6578b8e9689bfb45', 'f8811c6c0da36358', '6539fb543d0bfe21', '94050cc99bc2b316'),
    'laplace_pfr': ('198950af48e0c178', '9d908ecfb6b256de', '4cf7ddd639746349', '605390e5a369ee56', 'f8623a205de3e55f'),
    'laplace_offset': ('aafc438f7dfea9ab', '6578b8e9689bfb45', '9213099ef96f7b5d', '6539fb543d0bfe21', '6900d3346f31cf96'),
    'laplace_via_encode_sample': ('5e751c50f12cc89b', '6578b8e9689bfb45', 'f8811c6c0da36358', '6539fb543d0bfe21', '94050cc99bc2b316'),
    'quartic': ('7c9fa136d4413fa6', 'f0a0278e4372459c', '101a67d27fb60ea9', '6cc16abd70eefb90', '7c9fa136d4413fa6'),
    'astar': ('dc29665959b307dd', '374708fff7719dd5', '9b823b3f2cf63064', '814dd7b9784d57c1', 'b38c612d3a2f2d9b'),
    'gprs': ('36445cbbca24e0c3', '374708fff7719dd5', '4e187dcfd0ec0557', '814dd7b9784d57c1', '36445cbbca24e0c3'),
}


def _check(name, enc, seed, **decode_keywords):
    z = rcc.decode_sample(enc.index, enc.factor, seed, width=enc.width, **decode_keywords)
    assert np.array_equal(z, enc.sample), f"{name}: decode differs from the encoder's sample"
    assert _digests(enc) == GOLDEN[name], f"{name}: outputs changed"


@pytest.mark.parametrize("name", sorted(_CORE_CASES))
def test_core_coders_match_golden_outputs(name):
    encode_keywords, decode_keywords = _CORE_CASES[name]
    _check(name, rcc.encode_sample(**encode_keywords), encode_keywords["seed"], **decode_keywords)


def _laplace():
    return Laplace(np.array([0.4, -0.2, 1.0]), np.array([0.05, 0.3, 0.5]))


@pytest.mark.parametrize("name, keywords", [
    ("laplace_hybrid", {}),
    ("laplace_pfr", dict(method="pfr")),
    ("laplace_offset", dict(stream_offset=77)),
])
def test_general_targets_match_golden_outputs(name, keywords):
    _check(name, encode_general(_laplace(), 21, **keywords), 21, **keywords)


def test_general_target_through_encode_sample_matches_golden_outputs():
    _check("laplace_via_encode_sample", rcc.encode_sample(_laplace(), 21), 21)


def test_user_defined_general_target_matches_golden_outputs():
    target = GeneralTarget(_quartic_logpdf, -1.0, 1.5, np.array([0.2]), mode=0.2, lipschitz=20.0)
    _check("quartic", encode_general(target, 21), 21)


@pytest.mark.parametrize("method", ["astar", "gprs"])
def test_tree_methods_dispatched_by_encode_sample_match_golden_outputs(method):
    enc = rcc.encode_sample(rcc.Normal(np.array([0.3, -0.5]), 0.4), 23, method=method, tail_mass=0.0)
    z = rcc.decode_sample(enc.index, enc.factor, 23, method=method)
    assert np.array_equal(z, enc.sample)
    assert _digests(enc) == GOLDEN[method]
