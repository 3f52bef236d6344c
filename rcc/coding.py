"""Encode and decode exact samples: hybrid coding, PFR, ORC and MRC.

The public entry points are :func:`encode_sample` and :func:`decode_sample`.
The sender turns a target into a message ``(index, factor)``; the receiver,
who shares only the seed, the prior and the width, turns it back into the
sample, bit for bit.

Methods (DESIGN 2.2-2.6):

``"hybrid"`` (default)
    Uniform candidates on a unit window of the width-M transformed axis
    ``z' = M F_p(z)``, built by universal quantisation ``K = round(c - U)``,
    selected by the exponential race with the ``w_max`` stopping rule.  Exact.
    Expected candidates ``~ exp(D_inf[q' || window])``, independent of the KL.
``"pfr"``
    The same race with the prior as the proposal (Li & El Gamal 2018).  Exact,
    but expected candidates ``~ exp(D_inf[q || p])``.
``"orc"``
    Ordered random coding (Theis & Yosri 2022): ``num_candidates`` prior
    candidates with sorted exponential arrival times and the PFR stopping
    rule.  Approximate; the bias vanishes as ``num_candidates`` grows.
``"mrc"``
    Minimal random coding (Havasi et al. 2019): importance sampling among
    ``num_candidates`` prior candidates.  Approximate.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numba
import numpy as np

from . import kernels
from .random import MAX_SEED, check_seed, private_key
from .targets import (
    NORMAL_FAMILY,
    normal_half_width,
    UNIFORM_FAMILY,
    Distribution,
    Normal,
    Product,
    Uniform,
)

__all__ = [
    "METHODS",
    "DEFAULT_TAIL_MASS",
    "DEFAULT_MAX_CANDIDATES",
    "EncodedSample",
    "encode_sample",
    "decode_sample",
    "gaussian_width",
    "kl_divergence_bits",
]

METHODS = ("hybrid", "pfr", "orc", "mrc")
# A* coding and GPRS (rcc.samplers); kept out of METHODS, whose order the bitstream header encodes.
_TREE_METHODS = ("astar", "astar-dyadic", "gprs", "gprs-sac", "gprs-dyadic", "grc-sample", "grc-dyadic")
DEFAULT_TAIL_MASS = 1e-4
DEFAULT_MAX_CANDIDATES = 2**24
_MODES = {"hybrid": kernels.RACE, "pfr": kernels.RACE, "orc": kernels.ORC, "mrc": kernels.MRC}
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_CHUNK = 1 << 16
_LOG2 = math.log(2.0)
_SERIAL_BELOW = 2048


@dataclass(frozen=True)
class EncodedSample:
    """What :func:`encode_sample` returns.

    Attributes
    ----------
    index : int or ndarray of int64
        The selected candidate ``N >= 1`` (batch shape).
    factor : int or ndarray of int64
        Decoding factors ``K_N`` (batch shape + event shape); zeros for the
        prior-proposal methods.
    sample : float or ndarray of float64
        Exactly what :func:`decode_sample` returns for this message.
    candidates : int or ndarray of int64
        How many candidates the selection examined (weights evaluated).
    width : int or ndarray of int64
        The width ``M`` of the CDF transform (1 for prior-proposal methods).
    tail_mass : float or ndarray
        Total-variation distance between the target and the distribution
        actually sampled (the truncation of DESIGN 2.7).
    kl_bits : float or ndarray
        ``D_KL[truncated target || prior]`` in bits: what an ideal coder pays.
    method : str
    num_candidates : int or ndarray or None
        The fixed candidate count of ORC/MRC, else ``None``.
    """

    index: object
    factor: object
    sample: object
    candidates: object
    width: object
    tail_mass: object
    kl_bits: object
    method: str
    num_candidates: object = None


def _scalar_or_array(arr):
    arr = np.asarray(arr)
    if arr.ndim:
        return arr
    return arr.item()


def _check_method(method):
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return method


_STANDARD_NORMAL = Normal(0.0, 1.0)


def _check_prior(prior):
    if prior is None:
        return _STANDARD_NORMAL
    if not isinstance(prior, (Normal, Uniform)):
        raise TypeError(f"prior must be rcc.Normal or rcc.Uniform, got {type(prior).__name__}")
    return prior


def _prior_arrays(prior, shape):
    """Family, location and scale of the prior broadcast to ``shape``."""
    try:
        if isinstance(prior, Normal):
            loc, scale = np.broadcast_to(prior.mean, shape), np.broadcast_to(prior.std, shape)
            family = NORMAL_FAMILY
        else:
            loc = np.broadcast_to(prior.low, shape)
            scale = np.broadcast_to(prior.high - prior.low, shape)
            family = UNIFORM_FAMILY
    except ValueError as exc:
        raise ValueError(f"prior parameters of shape {prior.batch_shape} do not broadcast to {shape}") from exc
    return np.broadcast_to(np.int64(family), shape), loc, scale


def gaussian_width(std, prior=None, tail_mass=DEFAULT_TAIL_MASS):
    """Largest width ``M`` such that every ``Normal(mean, std)`` target fits.

    A truncated Gaussian of fixed std has its widest transformed support when
    it sits at the prior's mode (DESIGN 2.6), so this width depends on the std
    alone and can be known to the receiver.

    Parameters
    ----------
    std : array_like
        Target standard deviations (> 0).
    prior : rcc.Normal or rcc.Uniform, optional
        The shared prior, ``Normal(0, 1)`` by default.
    tail_mass : float
        Total tail mass removed from each target (DESIGN 2.7).

    Returns
    -------
    int or ndarray of int64
    """
    prior = _check_prior(prior)
    half_width = _half_width(_check_tail_mass(tail_mass))
    std = Normal(0.0, std).std
    family, _, scale = _prior_arrays(prior, std.shape)
    widths = np.empty(std.size, dtype=np.int64)
    kernels.gaussian_width_array(
        np.ascontiguousarray(std, dtype=np.float64).reshape(-1), half_width,
        np.ascontiguousarray(family, dtype=np.int64).reshape(-1),
        np.ascontiguousarray(scale, dtype=np.float64).reshape(-1), widths,
    )
    return _scalar_or_array(widths.reshape(std.shape))


def _half_width(tail_mass):
    """Half-width in stds of the central interval of a Normal with this tail mass."""
    return normal_half_width(tail_mass)


def _check_tail_mass(tail_mass):
    if type(tail_mass) is not float and (
            isinstance(tail_mass, (bool, np.bool_)) or not isinstance(tail_mass, numbers.Real)):
        raise TypeError(f"tail_mass must be a float in [0, 1), got {tail_mass!r}")
    tail_mass = float(tail_mass)
    if not 0.0 <= tail_mass < 1.0:
        raise ValueError(f"tail_mass must be in [0, 1), got {tail_mass}")
    return tail_mass


def _check_positive_int(value, name, allow_none=False):
    if value is None and allow_none:
        return None
    if type(value) is not int and (isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral)):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def _check_width_array(width, shape):
    """Validate an explicit integer width (scalar or array) and broadcast it."""
    arr = np.asarray(width)
    if arr.dtype == bool or arr.dtype.kind not in "iuf":
        raise TypeError(f"width must be a positive integer or array of them, got {width!r}")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or (arr != np.round(arr)).any():
            raise TypeError(f"width must be integer-valued, got {width!r}")
    if (arr < 1).any():
        raise ValueError(f"width must be >= 1, got {arr[arr < 1].ravel()[:3]}")
    try:
        return np.broadcast_to(arr.astype(np.int64), shape)
    except ValueError as exc:
        raise ValueError(f"width of shape {arr.shape} does not broadcast to {shape}") from exc


def kl_divergence_bits(target, prior=None, tail_mass=DEFAULT_TAIL_MASS):
    """``D_KL[target.truncate(tail_mass) || prior]`` in bits (summed over the event)."""
    inputs = _BatchInputs(_check_target(target), _check_prior(prior), _check_tail_mass(tail_mass),
                          hybrid=False, width=None)
    kl_bits = inputs.prepare(0, inputs.count, _Threads(None))[2]
    return _scalar_or_array(kl_bits.reshape(target.batch_shape))


def _is_unit_width(width):
    """Prior-proposal methods accept ``width=None`` or widths that are all 1."""
    if width is None:
        return True
    if isinstance(width, str):
        return False
    arr = np.asarray(width)
    return arr.dtype.kind in "iuf" and bool((arr == 1).all())


def _check_target(target):
    if not isinstance(target, Distribution):
        raise TypeError(
            "target must be an rcc distribution (rcc.Normal, rcc.TruncatedNormal, rcc.Uniform "
            f"or rcc.Product), got {type(target).__name__}"
        )
    return target


def _run_chunks(function, count, progress, description, chunk=_CHUNK):
    """Call ``function(start, stop)`` over chunks of the batch, with an optional progress bar."""
    bar = None
    if progress and count > chunk:
        from tqdm.auto import tqdm

        bar = tqdm(total=count, desc=description, unit="sample")
    try:
        for start in range(0, max(count, 1), chunk):
            stop = min(count, start + chunk)
            function(start, stop)
            if bar is not None:
                bar.update(stop - start)
    finally:
        if bar is not None:
            bar.close()


class _Threads:
    """Temporarily set numba's thread count (results do not depend on it)."""

    def __init__(self, num_threads):
        self.num_threads = _check_positive_int(num_threads, "num_threads", allow_none=True)

    def __enter__(self):
        if self.num_threads is not None:
            self.previous = numba.get_num_threads()
            numba.set_num_threads(min(self.num_threads, numba.config.NUMBA_NUM_THREADS))
        return self

    def __exit__(self, *exc):
        if self.num_threads is not None:
            numba.set_num_threads(self.previous)

    def kernel(self, name, count):
        """The threaded kernel ``name``, or its serial twin for small batches.

        With one thread the threaded kernel still wins on large batches: numba
        optimises the parallel loop body better (measured ~20% faster).
        """
        return getattr(kernels, name + "_serial" if count < _SERIAL_BELOW else name)


def _flat(value, shape, count, dims, dtype=np.float64):
    """``value`` broadcast to ``shape`` as a C-contiguous (count, dims) array."""
    arr = np.asarray(value)
    if arr.shape == shape:
        return np.ascontiguousarray(arr, dtype=dtype).reshape(count, dims)
    if arr.ndim == 0:
        return np.full((count, dims), arr, dtype=dtype)
    return np.ascontiguousarray(np.broadcast_to(arr, shape), dtype=dtype).reshape(count, dims)


def _check_prior_support(prior, spec, prior_loc, prior_scale):
    if isinstance(prior, Uniform):
        outside = (spec["low"] < prior_loc) | (spec["high"] > prior_loc + prior_scale)
        if np.any(outside):
            raise ValueError(
                "the target's support must lie inside the Uniform prior's support [low, high]; "
                f"{int(np.sum(outside))} element(s) do not"
            )


def _width_mode(target, width, hybrid, shape):
    """How the kernels choose the width, and the given widths (DESIGN 2.6)."""
    normal_base = target.base if isinstance(target, Product) else target
    if not hybrid or width is None and isinstance(normal_base, Normal):
        return kernels.WIDTH_GAUSSIAN, 1
    if width is None or isinstance(width, str) and width == "adaptive":
        return kernels.WIDTH_SUPPORT, 1
    if isinstance(width, str):
        raise ValueError(f"width must be an integer, an array of integers, 'adaptive' or None, got {width!r}")
    return kernels.WIDTH_GIVEN, _check_width_array(width, shape)


def _raise_prepare_error(problem, where, width=None, length=None):
    if problem == kernels.PREP_NO_MASS:
        raise ValueError(
            f"the target's support carries no mass under the prior in double precision{where}: "
            "it lies too far in the prior's tail; use a wider prior"
        )
    if problem == kernels.PREP_TOO_WIDE:
        raise ValueError(
            f"target does not fit width {width}{where}: its transformed support has length {length:.4g} > 1. "
            "Use a smaller width (width=None derives one), or a larger tail_mass for Gaussian targets"
        )
    raise ValueError(
        f"the target's density ratio to the proposal is unbounded{where} (a target wider than the "
        "prior over an infinite support); use tail_mass > 0"
    )


def _raise_too_many_candidates(log_w_max, max_candidates):
    raise ValueError(
        f"the race would examine about 2**{log_w_max / math.log(2.0):.1f} candidates for some element, more "
        f"than max_candidates={max_candidates}; increase max_candidates, or use method='hybrid' with a "
        "larger width (fewer candidates per sample)"
    )


def _column(value, shape, count, dims):
    """``value`` broadcast to ``shape`` as a kernel column ``(data, row_step, column_step)``.

    Element (i, j) of the flattened (count, dims) batch is
    ``data[i * row_step + j * column_step]`` (:mod:`rcc.kernels`).  Scalars
    and zero-stride broadcasts stay one value, full arrays stay views, and
    per-dimension values stay ``dims`` long, so a batch costs no O(count)
    copies beyond what its parameters already hold.
    """
    arr = np.asarray(value)
    if arr.ndim == 0 or arr.size and not any(arr.strides):
        return np.full(1, arr.flat[0] if arr.size else arr.item(), dtype=np.float64), 0, 0
    if arr.shape == shape:
        return np.ascontiguousarray(arr, dtype=np.float64).reshape(-1), dims, 1
    if dims > 1 and arr.size == dims and arr.shape[-1:] == (dims,):
        return np.ascontiguousarray(arr, dtype=np.float64).reshape(-1), 0, 1
    return np.ascontiguousarray(np.broadcast_to(arr, shape), dtype=np.float64).reshape(-1), dims, 1


class _BatchInputs:
    """A batch's target, prior and width parameters as the kernels' columns.

    Scalars (and zero-stride broadcasts) stay scalars and full-shape arrays
    stay views (:func:`_column`), so encoding a batch takes O(1) memory
    beyond the caller's arrays and the outputs.
    """

    def __init__(self, target, prior, tail_mass, hybrid, width):
        shape = target.shape
        spec = target._spec(tail_mass)
        prior_family, prior_loc, prior_scale = _prior_arrays(prior, shape)
        _check_prior_support(prior, spec, prior_loc, prior_scale)
        self.width_mode, width_given = _width_mode(target, width, hybrid, shape)
        self.hybrid = hybrid
        self.half_width = _half_width(tail_mass)
        self.has_batch = bool(target.batch_shape)
        self.count = int(np.prod(target.batch_shape, dtype=np.int64))
        self.dims = int(shape[-1]) if target.event_shape else 1
        # Order as kernels.C_*.
        values = (spec["family"], spec["loc"], spec["scale"], spec["low"], spec["high"], spec["log_normalizer"],
                  prior_family, prior_loc, prior_scale, width_given)
        columns = [_column(value, shape, self.count, self.dims) for value in values]
        self.columns = tuple(data for data, _, _ in columns)
        self.steps = np.array([[rows, cols] for _, rows, cols in columns], dtype=np.int64)

    def prepare(self, begin, end, threads):
        """Race parameters of elements ``begin:end``; raises on the first bad element.

        Returns the packed parameters (end - begin, dims, NUM_FIELDS), the
        bound ``log w_max`` and the KL in bits of each element.
        """
        rows = end - begin
        params = np.empty((rows, self.dims, kernels.NUM_FIELDS), dtype=np.float64)
        log_w_max = np.empty(rows, dtype=np.float64)
        kl_nats = np.empty(rows, dtype=np.float64)
        status = np.empty(rows, dtype=np.int64)
        threads.kernel("prepare_batch", rows)(
            begin, end, self.columns, self.steps, self.width_mode, self.half_width, self.hybrid,
            params, log_w_max, kl_nats, status,
        )
        failed = np.flatnonzero(status)
        if failed.size:
            first = int(failed[0])
            row = params[first]
            lengths = row[:, kernels.F_WINDOW_HIGH] - row[:, kernels.F_WINDOW_LOW]
            j = int(np.argmax(lengths))
            where = f" (first: flat index {begin + first})" if self.has_batch else ""
            _raise_prepare_error(int(status[first]), where, int(row[j, kernels.F_WIDTH]), lengths[j])
        return params, log_w_max, kl_nats / math.log(2.0)


def _hybrid_bounds(target, prior, width, tail_mass):
    """Per element of a hybrid batch, without raising: ``(fits, log2 w_max, support lengths)``.

    ``fits`` (batch shape) is True where every dimension's transformed support fits
    its window; ``log2 w_max`` (batch shape) is the race's bound, the log2 of its
    expected number of candidates; the lengths (batch + event shape) are the
    transformed supports' lengths at width 1, ``F_p(high) - F_p(low)``.  Exactly the
    encoder's arithmetic (``kernels.prepare_batch``), for callers that choose widths
    or decide between coding paths (``rcc.torch.RCCChannel``).
    """
    inputs = _BatchInputs(_check_target(target), _check_prior(prior), _check_tail_mass(tail_mass),
                          hybrid=True, width=width)
    count, dims = inputs.count, inputs.dims
    status = np.empty(count, dtype=np.int64)
    log_w_max = np.empty(count, dtype=np.float64)
    lengths = np.empty((count, dims), dtype=np.float64)
    threads = _Threads(None)

    def run(begin, end):
        rows = end - begin
        params = np.empty((rows, dims, kernels.NUM_FIELDS), dtype=np.float64)
        kl_nats = np.empty(rows, dtype=np.float64)
        threads.kernel("prepare_batch", rows)(
            begin, end, inputs.columns, inputs.steps, inputs.width_mode, inputs.half_width, True,
            params, log_w_max[begin:end], kl_nats, status[begin:end],
        )
        window = params[:, :, kernels.F_WINDOW_HIGH] - params[:, :, kernels.F_WINDOW_LOW]
        lengths[begin:end] = window / params[:, :, kernels.F_WIDTH]

    if count:
        _run_chunks(run, count, False, "")
    batch_shape = tuple(target.batch_shape)
    event_shape = tuple(target.event_shape)
    return ((status == kernels.PREP_OK).reshape(batch_shape), (log_w_max / math.log(2.0)).reshape(batch_shape),
            lengths.reshape(batch_shape + event_shape))


def _raise_encode_error(status, inputs, threads, max_candidates):
    """Raise the error the first failed element calls for (``status`` from ``encode_fused``).

    A target that cannot be prepared, or whose race bound exceeds
    ``max_candidates``, is reported for the first chunk of ``_CHUNK`` elements
    that holds one (bad parameters first, then the largest bound of that
    chunk); races that ran out of candidates are reported last.
    """
    setup = np.flatnonzero(status >= kernels.STATUS_BOUND)
    if setup.size:
        begin = int(setup[0]) // _CHUNK * _CHUNK
        end = min(inputs.count, begin + _CHUNK)
        _, log_w_max, _ = inputs.prepare(begin, end, threads)  # raises on bad parameters
        _raise_too_many_candidates(float(np.max(log_w_max)), max_candidates)
    failed = np.flatnonzero(status != kernels.STATUS_OK)
    raise RuntimeError(
        f"the race exceeded max_candidates={max_candidates} for {failed.size} element(s) "
        f"(first: flat index {failed[0]}); increase max_candidates or use a larger width"
    )


_NO_KEY = np.uint64(0)


def _encode_scalar(target, seed, prior, method, tail_mass, max_candidates, num_candidates, width, rng):
    """The low-latency path of :func:`encode_sample` for one scalar target (same result as a batch of one).

    One kernel call does the preparation, the key derivation and the race;
    the arguments were validated by :func:`encode_sample`.
    """
    hybrid = method == "hybrid"
    spec = target._spec(tail_mass)
    if isinstance(prior, Normal):
        prior_family, prior_loc, prior_scale = NORMAL_FAMILY, float(prior.mean), float(prior.std)
    else:
        prior_family, prior_loc, prior_scale = UNIFORM_FAMILY, float(prior.low), float(prior.high - prior.low)
        _check_prior_support(prior, spec, prior_loc, prior_scale)
    width_mode, width_given = _width_mode(target, width, hybrid, ())
    mode = _MODES[method]
    log_max_candidates = math.log(max_candidates)
    # rng=None: the kernel derives the key from the seed, as private_key does.
    key = _NO_KEY if rng is None else private_key(seed, rng)
    low, high = float(spec["low"]), float(spec["high"])
    (prep_status, race_status, index, factor, sample, examined, width_used, log_w_max, kl) = kernels.encode_one(
        seed, key, rng is None, int(spec["family"]), float(spec["loc"]), float(spec["scale"]), low, high,
        float(spec["log_normalizer"]), prior_family, prior_loc, prior_scale, width_mode, int(width_given),
        _half_width(tail_mass), hybrid, mode, 0 if num_candidates is None else num_candidates, max_candidates,
        log_max_candidates,
    )
    if prep_status != kernels.PREP_OK:
        start, stop, _ = kernels.transformed_support(low, high, float(width_used), prior_family, prior_loc,
                                                      prior_scale)
        _raise_prepare_error(prep_status, "", width_used, stop - start)
    if mode == kernels.RACE and log_w_max > log_max_candidates:
        _raise_too_many_candidates(log_w_max, max_candidates)
    if race_status != kernels.STATUS_OK:
        raise RuntimeError(f"the race exceeded max_candidates={max_candidates}; increase it or use a larger width")
    kl_bits = kl / _LOG2
    if mode != kernels.RACE and num_candidates is None:
        num_candidates = int(min(2.0 ** math.ceil(kl_bits + 4.0), max_candidates))
    return EncodedSample(
        index=index, factor=factor, sample=sample, candidates=examined, width=width_used,
        tail_mass=float(target.tail_mass_of(tail_mass)), kl_bits=kl_bits, method=method,
        num_candidates=None if mode == kernels.RACE else num_candidates,
    )


def encode_sample(
    target,
    seed,
    *,
    prior=None,
    width=None,
    method="hybrid",
    tail_mass=DEFAULT_TAIL_MASS,
    max_candidates=DEFAULT_MAX_CANDIDATES,
    num_candidates=None,
    rng=None,
    num_threads=None,
    progress=False,
):
    """Encode an exact sample of ``target`` as a message ``(index, factor)``.

    Parameters
    ----------
    target : rcc.Normal, rcc.TruncatedNormal, rcc.Uniform, rcc.Product or rcc.GeneralTarget
        The distribution to sample; array parameters form a batch whose
        element ``i`` uses the independent stream ``(seed, i)`` (flat C order).
        A :class:`rcc.general.GeneralTarget` is handed to
        :func:`rcc.general.encode_general` (methods "hybrid" and "pfr").
    seed : int
        Shared seed in ``[0, 2**64)``.
    prior : rcc.Normal or rcc.Uniform, optional
        Shared prior / marginal; ``Normal(0, 1)`` by default.
    width : int, array_like of int, "adaptive" or None
        Width ``M`` of the CDF transform for ``method="hybrid"`` (DESIGN 2.6),
        per dimension.  ``None`` derives it: for Normal targets from the std
        and ``tail_mass`` alone (:func:`gaussian_width`, which the receiver can
        recompute), for other targets as the largest width their support fits.
        ``"adaptive"`` uses the largest width each target fits (fewest
        candidates, but the receiver must be told ``enc.width``).  The
        prior-proposal methods use ``M = 1``.
    method : {"hybrid", "pfr", "orc", "mrc", "astar", "astar-dyadic", "gprs", "gprs-sac", "gprs-dyadic", \
            "grc-sample", "grc-dyadic"}
        The last seven are A* coding, greedy Poisson rejection sampling and
        greedy rejection coding (:mod:`rcc.samplers`): exact for untruncated targets (``tail_mass=0``),
        1-D Normal, TruncatedNormal and Uniform targets; ``index`` is a heap index.
    tail_mass : float
        Gaussian targets are truncated to their central interval of this total
        tail mass (DESIGN 2.7); ``0`` keeps them whole where that fits.
    max_candidates : int
        Bound on the race's candidates per element; exceeding it raises.
    num_candidates : int, optional
        Fixed candidate count for ORC/MRC; by default ``2**ceil(KL + 4)``
        per element (KL in bits), capped at ``max_candidates``.
    rng : None, int or numpy.random.Generator
        Sender's private randomness for the race's arrival times; ``None``
        derives it from the seed so that runs reproduce.
    num_threads : int, optional
        Threads for the batch loop; results do not depend on it.
    progress : bool
        Show a progress bar for large batches.

    Returns
    -------
    EncodedSample

    Examples
    --------
    >>> import rcc
    >>> prior = rcc.Normal(0.0, 1.0)
    >>> enc = rcc.encode_sample(rcc.Normal(0.3, 0.01), seed=7, prior=prior)
    >>> z = rcc.decode_sample(enc.index, enc.factor, seed=7, prior=prior, width=enc.width)
    >>> z == enc.sample
    True
    """
    if isinstance(method, str) and method in _TREE_METHODS:
        from .samplers import encode_tree_sample  # the tree samplers build on this module

        if not _is_unit_width(width):
            raise ValueError(f"width applies to method='hybrid' only; {method!r} searches the prior's CDF axis")
        return encode_tree_sample(target, seed, prior=prior, method=method, tail_mass=tail_mass,
                                  max_candidates=max_candidates, rng=rng, num_threads=num_threads)
    if not isinstance(target, Distribution):
        from .general import GeneralTarget, encode_general  # general builds on this module

        if isinstance(target, GeneralTarget):
            # A general target carries its own truncation (GeneralTarget(tail_mass=...)).
            return encode_general(target, seed, prior=prior, width=width, method=method,
                                  max_candidates=max_candidates, rng=rng, num_threads=num_threads)
        _check_target(target)
    # Fast path for the common plain int; check_seed handles (and rejects) the rest.
    seed_u64 = np.uint64(seed) if type(seed) is int and 0 <= seed <= MAX_SEED else check_seed(seed)
    prior = _check_prior(prior)
    method = _check_method(method)
    tail_mass = _check_tail_mass(tail_mass)
    max_candidates = _check_positive_int(max_candidates, "max_candidates")
    num_candidates = _check_positive_int(num_candidates, "num_candidates", allow_none=True)
    _check_positive_int(num_threads, "num_threads", allow_none=True)
    hybrid = method == "hybrid"
    if not hybrid and not _is_unit_width(width):
        raise ValueError(f"width applies to method='hybrid' only; {method!r} uses the prior (width 1)")

    if num_candidates is not None and num_candidates > max_candidates:
        raise ValueError(f"num_candidates={num_candidates} exceeds max_candidates={max_candidates}")
    if not target.shape and not prior.batch_shape and not isinstance(width, np.ndarray):
        return _encode_scalar(target, seed_u64, prior, method, tail_mass, max_candidates, num_candidates,
                              width, rng)
    inputs = _BatchInputs(target, prior, tail_mass, hybrid, width)
    count, dims = inputs.count, inputs.dims
    mode = _MODES[method]
    key = private_key(seed_u64, rng)
    # The kernel writes every output of every element that encodes (and the
    # status of all), so the outputs need no zeroing.
    index = np.empty(count, dtype=np.int64)
    factor = np.empty((count, dims), dtype=np.int64)
    sample = np.empty((count, dims), dtype=np.float64)
    examined = np.empty(count, dtype=np.int64)
    widths = np.empty((count, dims), dtype=np.int64)
    kl_bits = np.empty(count, dtype=np.float64)
    counts = np.empty(count if mode != kernels.RACE else 0, dtype=np.int64)  # ORC/MRC only
    status = np.empty(count, dtype=np.int8)
    threads = _Threads(num_threads)
    log_max_candidates = math.log(max_candidates)

    def run(begin, end):
        # One pass per element: parameters, bound, KL and the race (kernels.encode_fused).
        threads.kernel("encode_fused", end - begin)(
            begin, end, seed_u64, key, inputs.columns, inputs.steps, inputs.width_mode, inputs.half_width,
            hybrid, mode, 0 if num_candidates is None else num_candidates, max_candidates, log_max_candidates,
            index, factor, sample, examined, widths, kl_bits, counts, status,
        )

    with threads:
        # Chunks only pace the progress bar: results do not depend on them.
        _run_chunks(run, count, progress, f"encode ({method})", _CHUNK if progress else max(count, 1))
        if status.any():
            _raise_encode_error(status, inputs, threads, max_candidates)

    batch_shape, shape = target.batch_shape, target.shape
    return EncodedSample(
        index=_scalar_or_array(index.reshape(batch_shape)),
        factor=_scalar_or_array(factor.reshape(shape)),
        sample=_scalar_or_array(sample.reshape(shape)),
        candidates=_scalar_or_array(examined.reshape(batch_shape)),
        width=_scalar_or_array(widths.reshape(shape)),
        tail_mass=_scalar_or_array(np.broadcast_to(target.tail_mass_of(tail_mass), batch_shape)),
        kl_bits=_scalar_or_array(kl_bits.reshape(batch_shape)),
        method=method,
        num_candidates=None if mode == kernels.RACE else _scalar_or_array(counts.reshape(batch_shape)),
    )


def _integer_array(value, name):
    arr = np.asarray(value)
    if arr.dtype == bool or arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.isfinite(arr).all() and (arr == np.round(arr)).all():
            return arr.astype(np.int64)
        raise TypeError(f"{name} must be an integer or an array of integers, got {value!r}")
    return arr.astype(np.int64)


def decode_sample(index, factor, seed, *, prior=None, width=None, method="hybrid", num_threads=None):
    """Reproduce the sample of a message ``(index, factor)``, bit for bit.

    Decoding costs O(1) per sample whatever the index: the receiver jumps
    straight to the dither ``U_N`` (DESIGN 2.1) and computes
    ``z = F_p^{-1}((K + U_N) / M)``.

    Parameters
    ----------
    index : int or array_like of int
        Candidate indices (>= 1), batch shape.
    factor : int or array_like of int
        Decoding factors, batch shape (+ event shape for product targets).
    seed : int
        The shared seed used by the encoder.
    prior : rcc.Normal or rcc.Uniform, optional
        The shared prior, ``Normal(0, 1)`` by default.
    width : int or array_like of int
        Width ``M`` per dimension (``enc.width``); required for hybrid.
    method : {"hybrid", "pfr", "orc", "mrc", "astar", "astar-dyadic", "gprs", "gprs-sac", "gprs-dyadic", \
            "grc-sample", "grc-dyadic"}
    num_threads : int, optional

    Returns
    -------
    float or ndarray of float64
        Same shape as ``factor``.
    """
    if isinstance(method, str) and method in _TREE_METHODS:
        from .samplers import decode_tree_sample  # heap indices (factor unused, must be 0)

        if (_integer_array(factor, "factor") != 0).any():
            raise ValueError(f"factor must be 0 for method={method!r}")
        return decode_tree_sample(index, seed, prior=prior, method=method, num_threads=num_threads)
    seed_u64 = check_seed(seed)
    prior = _check_prior(prior)
    method = _check_method(method)
    hybrid = method == "hybrid"
    index = _integer_array(index, "index")
    factor = _integer_array(factor, "factor")
    if (index < 1).any():
        raise ValueError(f"index must be >= 1 (indices count from 1), got {index[index < 1].ravel()[:3]}")
    if factor.ndim not in (index.ndim, index.ndim + 1) or factor.shape[: index.ndim] != index.shape:
        raise ValueError(
            f"factor shape {factor.shape} must equal index shape {index.shape}, "
            "optionally followed by one event axis"
        )
    shape = factor.shape
    if hybrid:
        if width is None:
            raise ValueError("width is required to decode method='hybrid' (pass enc.width)")
        widths = _check_width_array(width, shape)
        bad = (factor < 0) | (factor > widths)
        if bad.any():
            raise ValueError(f"factor must lie in 0..width, got {factor[bad].ravel()[:3]} for width {widths[bad].ravel()[:3]}")
    else:
        if not _is_unit_width(width):
            raise ValueError(f"width applies to method='hybrid' only; {method!r} uses the prior (width 1)")
        widths = np.ones(shape, dtype=np.int64)
        if (factor != 0).any():
            raise ValueError(f"factor must be 0 for method={method!r}")

    prior_family, prior_loc, prior_scale = _prior_arrays(prior, shape)
    count = int(index.size)
    dims = int(shape[-1]) if factor.ndim > index.ndim else 1

    def flat(arr, dtype):
        return _flat(arr, shape, count, dims, dtype)

    sample = np.empty((count, dims), dtype=np.float64)
    status = np.zeros(count, dtype=np.int64)
    with _Threads(num_threads) as threads:
        threads.kernel("decode_batch", count)(
            seed_u64, np.uint64(0), index.reshape(count), flat(factor, np.int64), flat(widths, np.int64),
            flat(prior_family, np.int64), flat(prior_loc, np.float64), flat(prior_scale, np.float64),
            hybrid, sample, status,
        )
    bad = np.flatnonzero(status != kernels.STATUS_OK)
    if bad.size:
        raise ValueError(
            f"factor is inconsistent with the shared dither for {bad.size} element(s) (first: flat index "
            f"{bad[0]}): K + U_N must lie in [0, width). Check the seed, width and message"
        )
    return _scalar_or_array(sample.reshape(shape))
