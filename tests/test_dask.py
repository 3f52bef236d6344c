"""rcc.dask: chunked coding on any scheduler, bit-identical to one in-process call."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

import rcc  # noqa: E402
import rcc.dask  # noqa: E402

SETTINGS = settings(max_examples=20, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
FIELDS = ("index", "factor", "sample", "candidates", "width", "kl_bits", "tail_mass")
SHAPE = (9, 13)
SEED = 21


def _params(shape=SHAPE, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape) * 0.6, np.exp(0.5 * rng.normal(size=shape) - 2.5)


def _chunking(size):
    """Chunk sizes along one axis: a composition of ``size``."""
    return st.sets(st.integers(1, size - 1), max_size=4).map(
        lambda cuts: tuple(np.diff([0, *sorted(cuts), size]).tolist()))


MEAN, STD = _params()
ONE = rcc.encode_sample(rcc.Normal(MEAN, STD), SEED)
CODE = rcc.ZipfIndexCode(kl_bits=float(np.mean(ONE.kl_bits)))
ONE_BYTES_INDEX, ONE_BYTES_FACTOR = rcc.decode_messages(
    rcc.encode_messages(ONE, SEED, index_code=CODE), ONE.index.size, SEED, index_code=CODE, width=ONE.width.ravel())


def _assert_equals_one_call(enc, one=ONE):
    computed = dask.compute(*(getattr(enc, f) for f in FIELDS), scheduler="sync")
    for field, value in zip(FIELDS, computed):
        np.testing.assert_array_equal(value, np.broadcast_to(getattr(one, field), value.shape), err_msg=field)


@SETTINGS
@given(rows=_chunking(SHAPE[0]), cols=_chunking(SHAPE[1]), std_cols=_chunking(SHAPE[1]))
def test_any_chunk_layout_gives_the_one_call_result(rows, cols, std_cols):
    mean = da.from_array(MEAN, chunks=(rows, cols))
    std = da.from_array(STD, chunks=(rows, std_cols))  # a different layout: chunks are unified
    enc = rcc.dask.encode_sample(rcc.Normal, mean, std, seed=SEED)
    _assert_equals_one_call(enc)
    z = rcc.dask.decode_sample(enc.index, enc.factor, SEED, width=enc.width)
    np.testing.assert_array_equal(z.compute(scheduler="sync"), ONE.sample)
    messages = rcc.dask.encode_messages(enc, SEED, index_code=CODE)
    index, factor = rcc.dask.decode_messages(messages.to_bytes(), SEED, index_code=CODE, width=enc.width)
    index, factor = dask.compute(index, factor, scheduler="sync")
    np.testing.assert_array_equal(index, ONE_BYTES_INDEX.reshape(SHAPE))
    np.testing.assert_array_equal(factor, ONE_BYTES_FACTOR.reshape(SHAPE))


def test_threads_scheduler_and_constants():
    mean = da.from_array(MEAN, chunks=(4, 5))
    one = rcc.encode_sample(rcc.Normal(MEAN, 0.05), SEED, method="pfr")
    enc = rcc.dask.encode_sample(rcc.Normal, mean, 0.05, seed=SEED, method="pfr")
    with dask.config.set(scheduler="threads"):
        _assert_equals_one_call(enc, one)
        z = rcc.dask.decode_sample(enc.index, enc.factor, SEED, method="pfr").compute()
    np.testing.assert_array_equal(z, one.sample)


def test_one_dimensional_general_targets_and_uniform_prior():
    loc = np.linspace(0.2, 0.8, 30)
    prior = rcc.Uniform(0.0, 1.0)
    one = rcc.encode_sample(rcc.Laplace(loc, 0.01), SEED, prior=prior)
    enc = rcc.dask.encode_sample(rcc.Laplace, da.from_array(loc, chunks=7), 0.01, seed=SEED, prior=prior)
    _assert_equals_one_call(enc, one)
    z = rcc.dask.decode_sample(enc.index, enc.factor, SEED, width=enc.width, prior=prior)
    np.testing.assert_array_equal(z.compute(scheduler="sync"), one.sample)


def test_width_arrays_are_chunked_with_the_targets():
    # Widths the targets fit, varying across the array.
    width = np.maximum(1, rcc.gaussian_width(STD * 0.2) // (1 + np.arange(SHAPE[1]) % 3))
    one = rcc.encode_sample(rcc.Normal(MEAN, STD * 0.2), SEED, width=width)
    enc = rcc.dask.encode_sample(rcc.Normal, da.from_array(MEAN, chunks=(2, 6)), STD * 0.2, seed=SEED,
                                 width=da.from_array(width, chunks=(5, 5)))
    _assert_equals_one_call(enc, one)


def test_rng_gives_every_chunk_one_key():
    mean = da.from_array(MEAN, chunks=(3, 13))
    one = rcc.encode_sample(rcc.Normal(MEAN, STD), SEED, rng=99)
    _assert_equals_one_call(rcc.dask.encode_sample(rcc.Normal, mean, STD, seed=SEED, rng=99), one)
    # A Generator is drawn from once, at graph construction: one call with the drawn integer.
    word = int(np.random.default_rng(5).integers(0, 2**64, dtype=np.uint64))
    enc = rcc.dask.encode_sample(rcc.Normal, mean, STD, seed=SEED, rng=np.random.default_rng(5))
    _assert_equals_one_call(enc, rcc.encode_sample(rcc.Normal(MEAN, STD), SEED, rng=word))


def test_graphs_are_lazy_and_one_task_per_chunk():
    calls = []

    def parameters(block):
        calls.append(block.shape)
        return block

    mean = da.from_array(MEAN, chunks=(3, 13)).map_blocks(parameters, dtype=float, meta=np.empty((0, 0)))
    enc = rcc.dask.encode_sample(rcc.Normal, mean, STD, seed=SEED)
    z = rcc.dask.decode_sample(enc.index, enc.factor, SEED, width=enc.width)
    rcc.dask.encode_messages(enc, SEED, index_code=CODE)
    assert calls == []  # nothing ran while building the graphs
    dask.compute(enc.index, enc.sample, z, scheduler="sync")
    assert len(calls) == 3  # the three chunks were computed once for all outputs


def test_a_billion_targets_make_a_graph_of_independent_chunks():
    # Memory by construction: each encode task depends on its own parameter chunks only.
    size, chunk = 10**9, 10**7
    mean = da.zeros(size, chunks=chunk)
    enc = rcc.dask.encode_sample(rcc.Normal, mean, da.full(size, 0.1, chunks=chunk), seed=SEED)
    graph = enc.sample.__dask_graph__()
    dependencies = graph.get_all_dependencies()
    sample_keys = list(enc.sample.__dask_keys__())
    assert len(sample_keys) == size // chunk
    (encode_key,) = dependencies[sample_keys[57]]  # the chunk's encode task
    parameter_keys = dependencies[encode_key]
    assert len(parameter_keys) == 2 and all(key[-1] == 57 for key in parameter_keys)


def _peak_chunks_held(array, chunks_of):
    """Most chunk-sized values the threaded scheduler held at once while computing ``array``."""
    from dask.callbacks import Callback

    peak = 0

    class Watch(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            nonlocal peak
            held = sum(1 for value in state["cache"].values()
                       if isinstance(value, dict) or np.size(value) >= chunks_of)
            peak = max(peak, held)

    with Watch():
        array.compute(scheduler="threads", num_workers=2)
    return peak


def test_a_reduced_job_holds_a_few_chunks_at_a_time():
    # Memory: what a worker holds grows with the chunks in flight, not with the array, so 400 small
    # chunks reduced to numbers show the bound a 10^9-element job keeps (parameters made per chunk).
    size, chunk = 400 * 64, 64
    mean = da.random.default_rng(3).normal(0.0, 0.5, size=size, chunks=chunk)
    enc = rcc.dask.encode_sample(rcc.Normal, mean, 0.1, seed=SEED)
    reduced = _peak_chunks_held(enc.index.sum() + enc.kl_bits.sum(), chunk)
    assert reduced <= 8  # parameters, results and picked fields of the few chunks two threads run (2 seen)
    # The measure has power: gathering the samples holds every chunk before concatenating them.
    assert _peak_chunks_held(enc.sample, chunk) >= size // chunk


def test_bad_arguments_raise_at_construction():
    mean = da.from_array(MEAN, chunks=5)
    with pytest.raises(TypeError, match="dask array"):
        rcc.dask.encode_sample(rcc.Normal, MEAN, STD, seed=1)
    with pytest.raises(ValueError, match="seed"):
        rcc.dask.encode_sample(rcc.Normal, mean, STD, seed=-1)
    with pytest.raises(ValueError, match="method"):
        rcc.dask.encode_sample(rcc.Normal, mean, STD, seed=1, method="nope")
    with pytest.raises(TypeError, match="tail_mas"):
        rcc.dask.encode_sample(rcc.Normal, mean, STD, seed=1, tail_mas=0.1)
    with pytest.raises(ValueError, match="std"):
        rcc.dask.encode_sample(rcc.Normal, mean, -1.0, seed=1)
    with pytest.raises(TypeError, match="stream_offset"):
        rcc.dask.encode_sample(rcc.Normal, mean, STD, seed=1, stream_offset=3)
    with pytest.raises(ValueError, match="scalar parameters"):
        rcc.dask.encode_sample(rcc.Normal, mean, STD, seed=1, prior=rcc.Normal(np.zeros(3), 1.0))
    with pytest.raises(TypeError, match="Product"):
        rcc.dask.encode_sample(lambda m, s: rcc.Product(rcc.Normal(m, s)), mean, STD, seed=1)
    with pytest.raises(ValueError, match="broadcast"):
        rcc.dask.encode_sample(rcc.Normal, mean, np.ones(4), seed=1)
    with pytest.raises(TypeError, match="distribution"):
        rcc.dask.encode_sample("normal", mean, STD, seed=1)
    enc = rcc.dask.encode_sample(rcc.Normal, mean, STD, seed=1)
    with pytest.raises(ValueError, match="width is required"):
        rcc.dask.decode_sample(enc.index, enc.factor, 1)
    with pytest.raises(ValueError, match="shape"):
        rcc.dask.decode_sample(enc.index, enc.factor[:3], 1, width=enc.width)
    with pytest.raises(TypeError, match="DaskEncodedSample"):
        rcc.dask.encode_messages(ONE, 1, index_code=CODE)
    with pytest.raises(TypeError, match="index_code"):
        rcc.dask.encode_messages(enc, 1, index_code="zipf")


def test_bad_chunk_values_raise_at_compute_naming_the_chunk():
    std = STD.copy()
    std[7, 2] = -0.5
    enc = rcc.dask.encode_sample(rcc.Normal, da.from_array(MEAN, chunks=(3, 13)), std, seed=1)
    with pytest.raises(ValueError, match=r"chunk \[6:9, 0:13\].*std"):
        enc.index.compute(scheduler="sync")


def test_container_bytes_are_checked():
    enc = rcc.dask.encode_sample(rcc.Normal, da.from_array(MEAN, chunks=(4, 13)), STD, seed=SEED)
    data = rcc.dask.encode_messages(enc, SEED, index_code=CODE).to_bytes()
    with pytest.raises(ValueError, match="magic"):
        rcc.dask.decode_messages(b"XXXX" + data[4:], SEED, index_code=CODE, width=enc.width)
    with pytest.raises(ValueError):
        rcc.dask.decode_messages(data[:-3], SEED, index_code=CODE, width=enc.width)
    corrupt = bytearray(data)
    corrupt[12] ^= 0xFF
    with pytest.raises(ValueError):
        rcc.dask.decode_messages(bytes(corrupt), SEED, index_code=CODE, width=enc.width)
    flipped = bytearray(data)
    flipped[-2] ^= 0x10  # inside the last chunk's stream: caught by its own checksum, at compute
    index, _ = rcc.dask.decode_messages(bytes(flipped), SEED, index_code=CODE, width=enc.width)
    with pytest.raises(ValueError, match="chunk"):
        index.compute(scheduler="sync")
    with pytest.raises(TypeError, match="bytes"):
        rcc.dask.decode_messages("text", SEED, index_code=CODE, width=enc.width)
    with pytest.raises(ValueError, match="seed"):
        rcc.dask.decode_messages(data, SEED + 1, index_code=CODE, width=enc.width)[0].compute(scheduler="sync")


def test_importing_rcc_does_not_import_dask():
    import subprocess
    import sys

    code = "import sys, rcc; print('dask' in sys.modules or 'distributed' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_local_cluster_of_two_worker_processes_gives_the_one_call_result():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  worker_dashboard_address=None, silence_logs=50) as cluster, \
            distributed.Client(cluster) as client:
        mean = da.from_array(MEAN, chunks=(2, 7))
        enc = rcc.dask.encode_sample(rcc.Normal, mean, STD, seed=SEED)
        messages = rcc.dask.encode_messages(enc, SEED, index_code=CODE)
        index, factor = rcc.dask.decode_messages(messages.to_bytes(), SEED, index_code=CODE, width=enc.width)
        z = rcc.dask.decode_sample(index, factor, SEED, width=enc.width)
        futures = client.compute([*(getattr(enc, f) for f in FIELDS), z, index, factor])
        *fields, z, index, factor = client.gather(futures)
        workers = {w for w in client.run(lambda: 0)}
    assert len(workers) == 2
    for field, value in zip(FIELDS, fields):
        np.testing.assert_array_equal(value, getattr(ONE, field), err_msg=field)
    np.testing.assert_array_equal(z, ONE.sample)
    np.testing.assert_array_equal(index, ONE.index)
    np.testing.assert_array_equal(factor, ONE.factor)


def test_index_codes_pickle_after_use():
    # Workers receive the codes by pickle; the cached coder tables are rebuilt there.
    import pickle

    for code in (rcc.ZipfIndexCode(kl_bits=2.0), rcc.UniformIndexCode(num_candidates=64)):
        enc = rcc.encode_sample(rcc.Normal(np.zeros(6), 0.2), 3, method="hybrid")
        data = rcc.encode_messages(enc, 3, index_code=code)  # builds and caches the tables
        copy = pickle.loads(pickle.dumps(code))
        assert copy == code
        index, _ = rcc.decode_messages(data, 6, 3, index_code=copy, width=enc.width)
        np.testing.assert_array_equal(index, enc.index)
