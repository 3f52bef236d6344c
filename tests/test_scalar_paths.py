"""The scalar fast paths of encode_sample / decode_sample return and raise exactly what a batch of one does."""

import dataclasses

import numba
import numpy as np
import pytest

import rcc
import rcc.coding


def _as_batch_of_one(target):
    """The same target with every parameter an array of shape (1,)."""
    return type(target)(**{name: np.full(1, float(value)) for name, value in target._params().items()})


def _outcome(function, *args, **kwargs):
    """("ok", value) or ("raised", exception type, message)."""
    try:
        return ("ok", function(*args, **kwargs))
    except Exception as exc:  # noqa: BLE001 - the point is to compare whatever is raised
        return ("raised", type(exc), str(exc))


def _first(value):
    return np.asarray(value).reshape(-1)[0].item() if isinstance(value, np.ndarray) else value


NEAR = rcc.Normal(0.3, 0.01)
ENCODE_CASES = [
    # good inputs
    (NEAR, {}),
    (NEAR, {"width": "adaptive"}),
    (NEAR, {"width": 16}),
    (NEAR, {"width": np.int64(16)}),
    (NEAR, {"tail_mass": 0.0, "width": 1}),
    (NEAR, {"tail_mass": 1e-3}),
    (NEAR, {"seed": np.uint64(2**64 - 1)}),
    (NEAR, {"seed": np.int64(5)}),
    (NEAR, {"rng": 3}),
    (NEAR, {"prior": rcc.Normal(0.2, 2.0)}),
    (rcc.Normal(2.9, 0.05), {}),
    (rcc.Normal(-4.0, 0.3), {"method": "pfr"}),
    (rcc.Normal(0.7, 0.2), {"method": "pfr"}),
    (rcc.Normal(0.7, 0.2), {"method": "orc", "num_candidates": 64}),
    (rcc.Normal(0.7, 0.2), {"method": "mrc"}),
    (rcc.Uniform(-0.2, -0.1), {}),
    (rcc.Uniform(0.2, 0.3), {"prior": rcc.Uniform(0.0, 1.0)}),
    (rcc.TruncatedNormal(0.0, 1.0, 0.5, 0.9), {"method": "pfr"}),
    (rcc.TruncatedNormal(0.0, 1.0, 0.5, 0.9), {"width": "adaptive"}),
    # bad inputs
    (NEAR, {"seed": -1}),
    (NEAR, {"seed": 2**64}),
    (NEAR, {"seed": 1.5}),
    (NEAR, {"seed": True}),
    (NEAR, {"width": 0}),
    (NEAR, {"width": 2.5}),
    (NEAR, {"width": "wide"}),
    (NEAR, {"width": 1000}),
    (NEAR, {"method": "magic"}),
    (NEAR, {"tail_mass": 1.0}),
    (NEAR, {"tail_mass": "small"}),
    (NEAR, {"max_candidates": 0}),
    (NEAR, {"max_candidates": 2.0}),
    (NEAR, {"num_candidates": 0, "method": "orc"}),
    (NEAR, {"num_candidates": 10, "max_candidates": 5, "method": "orc"}),
    (NEAR, {"method": "pfr", "width": 8}),
    (NEAR, {"method": "pfr", "max_candidates": 10}),
    (NEAR, {"prior": "normal"}),
    (NEAR, {"num_threads": 0}),
    (rcc.Normal(0.0, 2.0), {"width": 1, "tail_mass": 0.0}),
    (rcc.Normal(0.0, 0.1), {"prior": rcc.Uniform(0.0, 1.0)}),
    (rcc.TruncatedNormal(0.0, 1.0, 40.0, 41.0), {}),
    (rcc.Normal(6.0, 1e-3), {"max_candidates": 50}),
    # every option at its default (the one-kernel-call path), including targets it cannot encode
    (rcc.Normal(-1.2, 0.4), {"seed": 2**64 - 1}),
    (rcc.Normal(0.1, 3.0), {"method": "pfr"}),
    (rcc.Normal(0.1, 1e-9), {"method": "pfr"}),
    (rcc.Normal(60.0, 0.1), {}),
    (rcc.Normal(0.0, 50.0), {}),
    # a scalar Normal prior and a float tail mass, explicit (the one-kernel-call path too)
    (NEAR, {"prior": rcc.Normal(0.0, 1.0)}),
    (NEAR, {"prior": None, "tail_mass": rcc.DEFAULT_TAIL_MASS}),
    (NEAR, {"prior": rcc.Normal(0.0, 1.0), "tail_mass": float(rcc.DEFAULT_TAIL_MASS), "method": "pfr"}),
    (NEAR, {"prior": rcc.Normal(-0.4, 0.7), "tail_mass": 1e-4}),
    (rcc.Normal(0.7, 0.2), {"prior": rcc.Normal(0.5, 3.0), "tail_mass": 0.25, "method": "pfr"}),
    (NEAR, {"tail_mass": -0.0}),
    (NEAR, {"tail_mass": 0.0}),
    (NEAR, {"tail_mass": np.float64(1e-3)}),
    (NEAR, {"prior": rcc.Normal(0.0, 1e308)}),
    (rcc.Normal(0.0, 1e-300), {"prior": rcc.Normal(0.0, 1e300), "method": "pfr"}),
    (NEAR, {"tail_mass": float("nan")}),
    (NEAR, {"tail_mass": -1e-3}),
]


def _without_scalar_path(monkeypatch, names, function, *args, **kwargs):
    """``function(*args, **kwargs)``'s outcome with the scalar paths ``rcc.coding.<names>`` switched off."""
    with monkeypatch.context() as patch:
        for name in names.split():
            patch.setattr(rcc.coding, name, lambda *a, **k: None)
        return _outcome(function, *args, **kwargs)


@pytest.mark.filterwarnings("ignore:overflow encountered in multiply:RuntimeWarning")  # prior std 1e308
@pytest.mark.parametrize("target, kwargs", ENCODE_CASES)
def test_scalar_encode_equals_a_batch_of_one(target, kwargs, monkeypatch):
    kwargs = {"seed": 11, **kwargs}
    single = _outcome(rcc.encode_sample, target, **kwargs)
    # The same arguments through the batch path: the same result or the same error, word for word.
    reference = _without_scalar_path(monkeypatch, "_encode_scalar _encode_plain_normal", rcc.encode_sample,
                                     target, **kwargs)
    assert single == reference
    batch = _outcome(rcc.encode_sample, _as_batch_of_one(target), **kwargs)
    assert single[0] == batch[0], (single, batch)
    if single[0] == "raised":
        # A batch names the failing element; a scalar target has none to name.
        assert single[1:] == (batch[1], batch[2].replace(" (first: flat index 0)", "").replace(" for flat index 0", ""))
        return
    single, batch = single[1], batch[1]
    for field in dataclasses.fields(rcc.EncodedSample):
        mine, theirs = getattr(single, field.name), getattr(batch, field.name)
        assert not isinstance(mine, np.ndarray), field.name  # scalars come back as Python numbers
        assert type(mine) is type(_first(theirs)), field.name
        assert mine == _first(theirs), field.name  # bit for bit, KL and tail mass included
    assert single == rcc.EncodedSample(**{f.name: getattr(single, f.name) for f in dataclasses.fields(single)})
    with pytest.raises(dataclasses.FrozenInstanceError):
        single.index = 2


@pytest.mark.parametrize("kwargs", [
    {"prior": rcc.Normal(0.0, 1.0)}, {"tail_mass": rcc.DEFAULT_TAIL_MASS}, {"tail_mass": 1e-4},
    {"prior": rcc.Normal(0.2, 2.0), "tail_mass": 1e-3, "method": "pfr"}, {"prior": None, "method": "hybrid"},
])
def test_an_explicit_scalar_normal_prior_or_float_tail_mass_takes_the_one_call_path(kwargs, monkeypatch):
    def checked_path(*args, **kw):
        raise AssertionError("took the checked scalar path")

    monkeypatch.setattr(rcc.coding, "_encode_scalar", checked_path)
    # Twice: the second call reuses the cached half-width of a non-default tail mass.
    for _ in range(2):
        assert rcc.encode_sample(NEAR, seed=4, **kwargs).index >= 1


DECODE_CASES = [
    # good inputs: (index, factor), keyword arguments
    ((3, 17), {"width": 32}),
    ((1, 0), {"width": 1}),
    ((np.int64(5), np.int32(2)), {"width": np.int64(4)}),
    ((2**40, 7), {"width": 16}),
    ((4, 9), {"width": 16, "prior": rcc.Normal(1.0, 3.0)}),
    ((4, 9), {"width": 16, "prior": rcc.Uniform(-1.0, 2.0)}),
    ((6, 0), {"method": "pfr"}),
    ((6, 0), {"method": "orc", "width": 1}),
    ((6, 0), {"method": "mrc", "prior": rcc.Uniform(0.0, 1.0)}),
    ((3, 17), {"width": 32, "seed": np.uint64(2**64 - 1)}),
    ((3, 17), {"width": 32, "num_threads": 1}),
    ((3.0, 17), {"width": 32}),
    ((3, 17), {"width": 32.0}),
    # bad inputs
    ((0, 3), {"width": 8}),
    ((-2, 3), {"width": 8}),
    ((2**63, 3), {"width": 8}),
    ((2**64, 3), {"width": 8}),
    ((1, 9), {"width": 8}),
    ((1, -1), {"width": 8}),
    ((1, 3), {}),
    ((1, 3), {"width": 0}),
    ((1, 3), {"width": "8"}),
    ((1.5, 3), {"width": 8}),
    ((True, 3), {"width": 8}),
    ((1, 3), {"width": True}),
    ((1, 1), {"method": "pfr"}),
    ((1, 0), {"method": "pfr", "width": 4}),
    ((1, 0), {"method": "nope"}),
    ((1, 0), {"width": 8, "seed": -1}),
    ((1, 0), {"width": 8, "seed": 2**64}),
    ((1, 0), {"width": 8, "seed": 2.0}),
    ((1, 0), {"width": 8, "prior": "normal"}),
    ((1, 0), {"width": 8, "num_threads": 0}),
    # K = 0 or K = M: one of the two is inconsistent with the dither U_1 of seed 1
    ((1, 0), {"width": 8, "seed": 1}),
    ((1, 8), {"width": 8, "seed": 1}),
]


@pytest.mark.parametrize("message, kwargs", DECODE_CASES)
def test_scalar_decode_equals_a_batch_of_one(message, kwargs, monkeypatch):
    kwargs = {"seed": 5, **kwargs}
    index, factor = message
    single = _outcome(rcc.decode_sample, index, factor, **kwargs)
    reference = _without_scalar_path(monkeypatch, "_decode_scalar", rcc.decode_sample, index, factor, **kwargs)
    assert single == reference  # bit for bit, or word for word
    batch = _outcome(rcc.decode_sample, np.array([index]) if type(index) is not bool else [index],
                     np.array([factor]), **kwargs)
    assert single[0] == batch[0], (single, batch)
    if single[0] == "raised":
        assert single[1] is batch[1]  # the batch's message shows the array it was given
    else:
        assert type(single[1]) is float and batch[1].shape == (1,)
        assert single[1] == batch[1][0]


def test_the_table_covers_both_outcomes_of_the_dither_check():
    outcomes = {_outcome(rcc.decode_sample, 1, k, seed=1, width=8)[0] for k in (0, 8)}
    assert outcomes == {"ok", "raised"}


def test_scalar_round_trips_through_the_fast_paths():
    prior = rcc.Normal(0.0, 1.0)
    for seed in range(200):
        target = rcc.Normal(np.sin(seed), 0.01 + 0.001 * seed)
        enc = rcc.encode_sample(target, seed=seed, prior=prior)
        assert rcc.decode_sample(enc.index, enc.factor, seed=seed, prior=prior, width=enc.width) == enc.sample


def test_scalar_paths_add_no_kernel_specialisations():
    # Python ints, numpy integers and numpy uint64 seeds all reach one compiled signature.
    from rcc import kernels

    for seed in (3, np.int64(3), np.uint64(3), 2**64 - 1):
        enc = rcc.encode_sample(NEAR, seed=seed)
        rcc.decode_sample(enc.index, enc.factor, seed=seed, width=enc.width)
        rcc.decode_sample(np.int64(enc.index), np.int64(enc.factor), seed=seed, width=np.int64(enc.width))
    rcc.encode_sample(NEAR, seed=3, method="pfr", rng=np.random.default_rng(1))
    rcc.decode_sample(2, 0, seed=3, method="pfr")
    assert len(kernels.encode_one.signatures) == 1
    assert len(kernels.decode_one.signatures) == 1


@pytest.mark.parametrize("method", ["hybrid", "pfr"])
def test_general_scalar_target_equals_a_batch_of_one_and_repeats_exactly(method):
    from rcc.general import Laplace

    scalar, batch_of_one = Laplace(0.3, 0.05), Laplace(np.full(1, 0.3), np.full(1, 0.05))
    for prior in (None, rcc.Normal(0.5, 2.0), rcc.Uniform(-1.0, 1.0)):
        for seed in range(3):
            # The second call reuses the inputs remembered for this prior and width.
            first, again = (rcc.encode_sample(scalar, seed=seed, prior=prior, method=method) for _ in range(2))
            batch = rcc.encode_sample(batch_of_one, seed=seed, prior=prior, method=method)
            assert first == again
            for field in dataclasses.fields(rcc.EncodedSample):
                assert getattr(first, field.name) == _first(getattr(batch, field.name)), field.name
            z = rcc.decode_sample(first.index, first.factor, seed=seed, prior=prior, width=first.width,
                                  method=method)
            assert z == first.sample
    with pytest.raises(ValueError, match="does not fit width"):
        rcc.encode_sample(scalar, seed=1, width=10**6)


@numba.njit
def _one_argument_logpdf(z):
    return -(z**4)


def _general_target(name, shape):
    """Target ``name`` with scalar parameters (``shape == ()``) or as a batch of ``shape``."""
    from rcc.general import GaussianMixture, GeneralTarget, Laplace, ScaledBeta

    def full(value):
        return np.full(shape, value) if shape else value

    return {
        "laplace": lambda: Laplace(full(0.3), 0.05),
        "far laplace": lambda: Laplace(full(3.1), 0.02),
        "mixture": lambda: GaussianMixture(0.3, -0.1, 0.02, full(0.1), 0.03),
        "beta": lambda: ScaledBeta(2.0, 5.0, full(-0.2), 0.3),
        "quartic": lambda: GeneralTarget(_one_argument_logpdf, full(-1.5), 1.5, mode=0.0, lipschitz=13.5),
        "uncertified": lambda: GeneralTarget(_one_argument_logpdf, full(-1.5), 1.5),
    }[name]()


GENERAL_CASES = [
    # good inputs
    ("laplace", {}),
    ("laplace", {"method": "pfr"}),
    ("laplace", {"width": "adaptive"}),
    ("laplace", {"width": 8}),
    ("laplace", {"width": np.int64(8)}),
    ("laplace", {"seed": np.uint64(2**64 - 1)}),
    ("laplace", {"seed": np.int64(5)}),
    ("laplace", {"rng": 3}),
    ("laplace", {"stream_offset": 7}),
    ("laplace", {"stream_offset": np.uint64(2**64 - 1)}),
    ("laplace", {"num_threads": 1}),
    ("laplace", {"prior": rcc.Normal(0.2, 2.0)}),
    ("laplace", {"prior": rcc.Uniform(-1.0, 2.0)}),
    ("laplace", {"prior": rcc.Uniform(-1.0, 2.0), "method": "pfr"}),
    ("laplace", {"transform": "prior"}),
    ("laplace", {"transform": rcc.Normal(0.0, 3.0)}),
    ("laplace", {"log_ratio_max": 6.0}),
    ("laplace", {"max_candidates": 16, "seed": 23}),
    ("far laplace", {}),
    ("mixture", {}),
    ("mixture", {"method": "pfr"}),
    ("beta", {"width": "adaptive"}),
    ("quartic", {}),
    ("quartic", {"method": "pfr"}),
    ("uncertified", {"log_ratio_max": 2.0}),
    # bad inputs, and races that fail
    ("laplace", {"seed": -1}),
    ("laplace", {"seed": 2**64}),
    ("laplace", {"seed": 1.5}),
    ("laplace", {"seed": True}),
    ("laplace", {"method": "orc"}),
    ("laplace", {"method": 3}),
    ("laplace", {"width": 0}),
    ("laplace", {"width": 2.5}),
    ("laplace", {"width": "wide"}),
    ("laplace", {"width": 10**6}),
    ("laplace", {"method": "pfr", "width": 3}),
    ("laplace", {"method": "pfr", "transform": rcc.Normal(0.0, 3.0)}),
    ("laplace", {"max_candidates": 0}),
    ("laplace", {"max_candidates": 2.0}),
    ("laplace", {"max_candidates": 4}),
    ("laplace", {"max_candidates": 10, "seed": 5}),  # the race itself runs past the cap
    ("laplace", {"log_ratio_max": -5.0}),  # a candidate's weight exceeds the bound
    ("laplace", {"num_threads": 0}),
    ("laplace", {"stream_offset": -1}),
    ("laplace", {"stream_offset": 2**64}),
    ("laplace", {"stream_offset": 1.5}),
    ("laplace", {"prior": "normal"}),
    ("laplace", {"prior": rcc.Uniform(0.5, 1.0)}),
    ("laplace", {"rng": "private"}),
    ("uncertified", {}),
]


@pytest.mark.parametrize("name, kwargs", GENERAL_CASES)
def test_scalar_general_encode_equals_the_batch_path_and_a_batch_of_one(name, kwargs, monkeypatch):
    import rcc.general

    kwargs = {"seed": 11, **kwargs}
    target = _general_target(name, ())
    encode = rcc.general.encode_general if "log_ratio_max" in kwargs else rcc.encode_sample
    single = _outcome(encode, target, **kwargs)
    again = _outcome(encode, target, **kwargs)  # the second call reuses the remembered race inputs
    with monkeypatch.context() as patch:
        patch.setattr(rcc.general, "_encode_scalar", lambda *a, **k: None)
        reference = _outcome(encode, _general_target(name, ()), **kwargs)
    assert single == again == reference  # bit for bit, or word for word
    batch = _outcome(encode, _general_target(name, (1,)), **kwargs)
    assert single[0] == batch[0], (single, batch)
    if single[0] == "raised":
        assert single[1:] == batch[1:]  # a batch of one names flat index 0, as a scalar target does
        return
    single = single[1]
    for field in dataclasses.fields(rcc.EncodedSample):
        mine, theirs = getattr(single, field.name), getattr(batch[1], field.name)
        assert not isinstance(mine, np.ndarray), field.name
        assert type(mine) is type(_first(theirs)), field.name
        assert mine == _first(theirs), field.name
    decoded = rcc.decode_sample(single.index, single.factor, seed=kwargs["seed"], prior=kwargs.get("prior"),
                                width=single.width, method=single.method, transform=kwargs.get("transform"),
                                stream_offset=kwargs.get("stream_offset", 0))
    assert decoded == single.sample


def test_the_general_table_reaches_every_failure_of_the_race():
    from rcc.general import encode_general

    target = _general_target("laplace", ())
    ran_past = _outcome(encode_general, target, 5, max_candidates=10)
    assert ran_past[1] is RuntimeError and ran_past[2].startswith("the race exceeded max_candidates=10")
    bound = _outcome(encode_general, target, 11, log_ratio_max=-5.0)
    assert bound[1] is RuntimeError and "exceeded w_max" in bound[2]
    too_long = _outcome(encode_general, target, 11, max_candidates=4)
    assert too_long[1] is ValueError and "would examine about" in too_long[2]


def test_scalar_general_encode_compiles_one_kernel_signature():
    from rcc import general

    for seed in (3, np.int64(3), np.uint64(3), 2**64 - 1):
        for method in ("hybrid", "pfr"):
            rcc.encode_sample(_general_target("laplace", ()), seed=seed, method=method, rng=1 if seed == 3 else None)
            rcc.encode_sample(_general_target("quartic", ()), seed=seed, method=method, stream_offset=2)
    assert len(general._encode_general_one.signatures) == 1


def test_a_frozen_scipy_laplace_takes_the_general_scalar_path():
    from scipy import stats

    ours = rcc.encode_sample(_general_target("laplace", ()), seed=4)
    assert rcc.encode_sample(stats.laplace(0.3, 0.05), seed=4) == ours


def test_a_small_general_batch_remembers_its_race_inputs_per_prior_and_width():
    from rcc.general import Laplace

    def make():
        return Laplace(np.linspace(-0.5, 0.5, 8), 0.05)

    remembered = make()
    calls = [{}, {"prior": rcc.Normal(0.3, 2.0)}, {"width": 4}, {"method": "pfr"}, {"width": "adaptive"}, {}]
    for kwargs in calls:
        mine = rcc.encode_sample(remembered, seed=6, **kwargs)
        fresh = rcc.encode_sample(make(), seed=6, **kwargs)
        for field in dataclasses.fields(rcc.EncodedSample):
            np.testing.assert_array_equal(getattr(mine, field.name), getattr(fresh, field.name), err_msg=field.name)
