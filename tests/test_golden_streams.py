"""Golden streams: the exact bytes every message code and the one-call container write.

Each case pins the SHA-256 and length of a stream made from fixed targets and
seeds, so any change to the stream layout, to an index or factor code, to the
range coder's use or to the race that picks the messages shows up here as a
changed digest (the last cases pin decoded sample arrays for the same reason).
A deliberate format change must bump the stream or container version and then
refresh the table: ``python tests/test_golden_streams.py`` prints it.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

import rcc
from rcc import entropy as E

SEED = 20261201


def _digest(data: bytes) -> tuple[str, int]:
    return hashlib.sha256(data).hexdigest(), len(data)


def _normal_batch(stream_offset=0):
    rng = np.random.default_rng(1)
    target = rcc.Normal(rng.normal(0.0, 0.8, 12), rng.uniform(0.05, 0.4, 12))
    return rcc.encode_sample(target, SEED, rng=np.random.default_rng(2), stream_offset=stream_offset)


def _uniform_prior_batch(stream_offset=0):
    rng = np.random.default_rng(3)
    prior = rcc.Uniform(-2.0, 2.0)
    low = rng.uniform(-1.8, 1.0, 10)
    target = rcc.Uniform(low, low + rng.uniform(0.05, 0.6, 10))
    enc = rcc.encode_sample(target, SEED, prior=prior, rng=np.random.default_rng(4), stream_offset=stream_offset)
    return enc, prior


def _product_batch():
    rng = np.random.default_rng(5)
    target = rcc.Product(rcc.Normal(rng.normal(0.0, 0.8, (5, 3)), np.array([0.05, 0.1, 0.3])))
    return rcc.encode_sample(target, SEED, rng=np.random.default_rng(6))


def _message_streams():
    """``(name, bytes)`` for every index code and factor code, with and without ``stream_offset``."""
    plain = _normal_batch()
    offset = _normal_batch(stream_offset=7)
    uniform, uniform_prior = _uniform_prior_batch()
    uniform_offset, _ = _uniform_prior_batch(stream_offset=5)
    product = _product_batch()
    training = rcc.encode_sample(rcc.Normal(np.random.default_rng(7).normal(0.0, 0.8, 200), 0.1), SEED + 1,
                                 rng=np.random.default_rng(8))
    index_codes = {
        "zipf": E.ZipfIndexCode(2.0),
        "empirical": E.EmpiricalIndexCode.fit(training.index),
        "uniform": E.UniformIndexCode(int(np.max(plain.index)) + 5),
        "bucket": E.BucketIndexCode.fit(training.index),
        "conditioned": E.ConditionedIndexCode.fit(training.index, training.factor, training.width,
                                                  max_factor_overhead=1.0),
    }
    streams = []
    for name, code in index_codes.items():
        streams.append((f"normal/{name}", E.encode_messages(plain, index_code=code)))
        streams.append((f"normal/{name}/offset", E.encode_messages(offset, index_code=code, stream_offset=7)))
    zipf = index_codes["zipf"]
    factor_codes = {
        "default": None,
        "uniform": E.UniformFactorCode(),
        "marginal": E.MarginalFactorCode(rcc.Normal(0.0, 1.0)),
    }
    for name, code in factor_codes.items():
        streams.append((f"normal/factor-{name}", E.encode_messages(plain, index_code=zipf, factor_code=code)))
        streams.append((f"normal/factor-{name}/offset",
                        E.encode_messages(offset, index_code=zipf, factor_code=code, stream_offset=7)))
    for name, code in {"default": None, "uniform": E.UniformFactorCode()}.items():
        streams.append((f"uniform-prior/factor-{name}",
                        E.encode_messages(uniform, index_code=zipf, factor_code=code, prior=uniform_prior)))
        streams.append((f"uniform-prior/factor-{name}/offset",
                        E.encode_messages(uniform_offset, index_code=zipf, factor_code=code, prior=uniform_prior,
                                          stream_offset=5)))
    tabulated = E.TabulatedFactorCode([np.linspace(1.0, 2.0, int(m)) for m in np.asarray(product.width)[0]])
    streams.append(("product/factor-default", E.encode_messages(product, index_code=zipf)))
    streams.append(("product/factor-tabulated", E.encode_messages(product, index_code=zipf, factor_code=tabulated)))
    pfr = rcc.encode_sample(rcc.Normal(np.linspace(-1.0, 1.0, 8), 0.4), SEED, method="pfr",
                            rng=np.random.default_rng(9))
    streams.append(("pfr/zipf", E.encode_messages(pfr, index_code=E.ZipfIndexCode(1.0))))
    return streams


def _container_streams():
    """``(name, bytes)`` of :func:`rcc.compress` (checked containers) for a few representative inputs."""
    rng = np.random.default_rng(10)
    uniform_prior = rcc.Uniform(-2.0, 2.0)
    return [
        ("compress/normal", rcc.compress(rcc.Normal(rng.normal(0.0, 0.8, 6), 0.2), SEED, rng=rng)),
        ("compress/normal/offset",
         rcc.compress(rcc.Normal(np.linspace(-0.5, 0.5, 4), 0.1), SEED, rng=rng, stream_offset=3)),
        ("compress/uniform-prior",
         rcc.compress(rcc.Uniform(np.array([-1.0, 0.2]), np.array([-0.6, 0.5])), SEED, prior=uniform_prior, rng=rng)),
        ("compress/product",
         rcc.compress(rcc.Product(rcc.Normal(rng.normal(0.0, 0.5, (3, 2)), 0.3)), SEED, rng=rng)),
        ("compress/pfr", rcc.compress(rcc.Normal(0.3, 0.5), SEED, method="pfr", rng=rng)),
    ]


def _decoded_samples():
    """``(name, bytes)`` of decoded sample arrays: a change in the race shows even where a code hides it."""
    plain = _normal_batch()
    uniform, prior = _uniform_prior_batch()
    return [
        ("sample/normal", np.ascontiguousarray(rcc.decode_sample(plain.index, plain.factor, SEED, width=plain.width),
                                               dtype="<f8").tobytes()),
        ("sample/uniform-prior", np.ascontiguousarray(
            rcc.decode_sample(uniform.index, uniform.factor, SEED, prior=prior, width=uniform.width),
            dtype="<f8").tobytes()),
    ]


def _all_streams():
    return _message_streams() + _container_streams() + _decoded_samples()


GOLDEN: dict[str, tuple[str, int]] = {
    "normal/zipf": ("2e43d9767e7a4562d8be5fb43a40bf94f6c95c7d77a16eee0210c026ac5fcec1", 24),
    "normal/zipf/offset": ("36342f0d9b0ddd01621fda300cf64c2a40f7ce513490837aac4d11955d23b882", 24),
    "normal/empirical": ("52ae0d3ed91fd9fcb6745c045de3cf4359af78b1bd88ee75274a5bec316405e8", 24),
    "normal/empirical/offset": ("5d07c8716afbec8c322a2e87732085fdfa2e93e999574b3541256bc58c7c1b63", 24),
    "normal/uniform": ("57086d92e2f4056ca2e76303afab9227a515aa9b70f08b4918dc647f9392dc5e", 24),
    "normal/uniform/offset": ("cc244fc5662dd6266d71f419eb241ba1aeb978d0a019313e200252f05345d584", 24),
    "normal/bucket": ("f1b8ae5fc618b3c4b167d82d220daf09e3b8939430e5f7df99727ccf8ac183f2", 24),
    "normal/bucket/offset": ("853a804378a81a9115cbf558be27993b7cdea932fbc20e218848de64e3c59246", 24),
    "normal/conditioned": ("61969af29704aba8bd4a2b322762607d07a4d6d685a9a9bbf4eb2ae88daf7f7d", 28),
    "normal/conditioned/offset": ("5d37323c120ad6d2fbf6115e7ad7e9029e871210758dd4f449a3e9bdfe02a95e", 28),
    "normal/factor-default": ("2e43d9767e7a4562d8be5fb43a40bf94f6c95c7d77a16eee0210c026ac5fcec1", 24),
    "normal/factor-default/offset": ("36342f0d9b0ddd01621fda300cf64c2a40f7ce513490837aac4d11955d23b882", 24),
    "normal/factor-uniform": ("09e2fd110944a0381c3e126a71e8beb5ba3d1cda1f22dda1812ffd05d22b9990", 28),
    "normal/factor-uniform/offset": ("bf71643a8d2e4960c74a714cbb06f5523c25527ef18cb03d66e435567e761a51", 28),
    "normal/factor-marginal": ("2e43d9767e7a4562d8be5fb43a40bf94f6c95c7d77a16eee0210c026ac5fcec1", 24),
    "normal/factor-marginal/offset": ("36342f0d9b0ddd01621fda300cf64c2a40f7ce513490837aac4d11955d23b882", 24),
    "uniform-prior/factor-default": ("cb33958e1cbdf543e992c39bbdefe187f2bc7c59c74c6282dfb872ecb1234274", 24),
    "uniform-prior/factor-default/offset": ("a2a76a46b065c03f439cd2dba8093ff59db3a5ac335fe2deebb1e005431ec365", 24),
    "uniform-prior/factor-uniform": ("cb33958e1cbdf543e992c39bbdefe187f2bc7c59c74c6282dfb872ecb1234274", 24),
    "uniform-prior/factor-uniform/offset": ("a2a76a46b065c03f439cd2dba8093ff59db3a5ac335fe2deebb1e005431ec365", 24),
    "product/factor-default": ("2cdd6330c08c15f7fff7c4cea0a7a203ab0f98b205766ada2e9480f7773478df", 24),
    "product/factor-tabulated": ("f74199223fb544ad50d6a64a7e4f9ba441da0aa209dd1315fc75bfd7534b9c20", 28),
    "pfr/zipf": ("a2d6d1512d531c9a2bb8b631c9b698d09a6e759aa8eaa372b31b972d305dcf3b", 20),
    "compress/normal": ("e9bf416a74dd2f9905e98bd9d6cf82aa80e4a46857e9b3fdab451640987f06f9", 32),
    "compress/normal/offset": ("89626ba603d578ccceddf2cc6bbc85339d73f38ae7e215b8b7a006fedc1510b8", 32),
    "compress/uniform-prior": ("91445b40a2eefbd2968ad98c6b258b3014ff451c664ead0b668c14be43147704", 37),
    "compress/product": ("80b07d35cfe7765e02b78523e26f22b912a1ae372a6b02e3a6a3f8bc108e8d14", 33),
    "compress/pfr": ("dc5389a891f17d66b3a5b5c4a95bed9c3553fbf6bcc04c0cbb0e5fe8124a64d8", 27),
    "sample/normal": ("67587d9d578f1b540f41910de2d734f0c611a5bacc8b7ffbea8feffb9fb72855", 96),
    "sample/uniform-prior": ("6d4bee9464d82ec8151fc51e52578364d501554f4b9dc1fffdc159d632dd003a", 80),
}


@pytest.fixture(scope="module")
def streams():
    return dict(_all_streams())


def test_table_covers_every_case(streams):
    assert sorted(streams) == sorted(GOLDEN)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_stream(streams, name):
    assert _digest(streams[name]) == GOLDEN[name], f"{name}: the bytes changed"


def test_golden_streams_decode(streams):
    """The pinned message streams are also valid: they decode back to the pinned messages."""
    plain = _normal_batch()
    index, factor = E.decode_messages(streams["normal/zipf"], seed=SEED, index_code=E.ZipfIndexCode(2.0),
                                      width=plain.width)
    assert np.array_equal(index, plain.index) and np.array_equal(factor, plain.factor)
    sample = rcc.decompress(streams["compress/normal/offset"], SEED, stream_offset=3)
    assert sample.shape == (4,)


if __name__ == "__main__":
    print("GOLDEN: dict[str, tuple[str, int]] = {")
    for key, data in _all_streams():
        digest, length = _digest(data)
        print(f'    "{key}": ("{digest}", {length}),')
    print("}")
