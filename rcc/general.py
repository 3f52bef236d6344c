"""General 1-D targets: any log density on an interval, coded exactly.

The core coders (:func:`rcc.encode_sample`) know Normal, truncated Normal and
Uniform targets, whose weight bound ``w_max`` has a closed form.  This module
codes *any* one-dimensional target given by a numba-compiled log density on a
bounded interval ``[low, high]``, with the same machinery: hybrid coding with
the width-M CDF transform (:ref:`hybrid-window`, :ref:`transform-width-m`) or the plain exponential race with
the prior as proposal (PFR, :ref:`race-rule`; Li & El Gamal 2018).  Messages are decoded by the ordinary
:func:`rcc.decode_sample`, bit for bit::

    import rcc
    from rcc.general import Laplace, encode_general

    target = Laplace(0.4, 0.05)                  # truncated to tail mass 1e-4
    enc = encode_general(target, seed=3)
    z = rcc.decode_sample(enc.index, enc.factor, 3, width=enc.width)
    assert z == enc.sample

Candidates are built exactly as :mod:`rcc.kernels` builds them (the same
shared dither, decoding factor and inverse prior CDF); only the weight of a
candidate differs: ``log w(z) = log q(z) - log p(z) - log M``.

The race is exact only if ``w_max >= sup w``; :class:`GeneralTarget` certifies that bound
when the target is built, from the facts its caller states about ``log q`` (``mode``,
``lipschitz``, ``concavity``): :mod:`rcc.targets.general` explains how (:ref:`race-bound`,
:ref:`general-certificate`).  As a second line of defence the encoder stops with an error if
any candidate's weight exceeds the bound it was given.

Ready-made targets with stated certificates: :class:`Laplace` (truncated),
:class:`GaussianMixture` (two components, truncated) and :class:`ScaledBeta`.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import numba
import numpy as np
from numba import types
from numba.core import cgutils
from numba.core.errors import NumbaExperimentalFeatureWarning
from numba.extending import intrinsic
from numpy.typing import ArrayLike

from .encoded import DEFAULT_MAX_CANDIDATES, EncodedSample, _scalar_encoded_sample
from .kernels import _candidate_position, prior_ppf_scaled, race
from .random import (DOMAIN_KEY, DOMAIN_PRIVATE, DOMAIN_SHARED, _stream_prefix, check_seed, check_stream_offset,
                     hash_counter, private_key)
from .targets import NORMAL_FAMILY, Normal, Uniform
# The target definitions live in the targets layer; importable from here as before.
from .targets.general import (  # noqa: F401 - re-exported
    _F1, _F2, _I1, _LOGPDF_TYPE, LOGPDF_SIGNATURE, GeneralTarget, _b1,
    _check_prior, _f8, _i8, _minus_log_prior_constant, _minus_log_prior_variable, _owned, _prior_arrays,
    _real_array, _scalar_prior_key, _transformed_support, _typed_kernel, _u8,
)
from .targets.general_families import GaussianMixture, Laplace, ScaledBeta  # noqa: F401 - re-exported
from .transform import _check_transform, coding_transform

__all__ = [
    "LOGPDF_SIGNATURE",
    "GeneralTarget",
    "Laplace",
    "GaussianMixture",
    "ScaledBeta",
    "encode_general",
    "general_width",
]

STATUS_OK, STATUS_MAX_CANDIDATES, STATUS_BOUND_VIOLATED, STATUS_NAN = 0, 1, 2, 3
_NO_KEY = np.uint64(0)  # the scalar kernel derives the key itself
_STREAM_ZERO = np.uint64(0)
# Targets this small remember their race inputs per prior and width (computing them costs far more
# than their races; larger ones would hold as much memory again as the target itself).
_REMEMBERED_BELOW = 1024
_SERIAL_BELOW = 64  # smaller batches run on the calling thread (a race per element costs microseconds)




# --------------------------------------------------------------------------- kernels





@numba.njit(cache=True, inline="always")
def _general_log_weight(state, shared, n):
    """:func:`rcc.kernels.race`'s weight of a general target: its log-density callback.

    Candidates are built as in :mod:`rcc.kernels` (the same shared dither,
    decoding factor and inverse CDF of the coding transform);
    ``log w(z) = logpdf(z) + s**2 / 2 + log_const``.  A NaN log density, or a
    weight above the certified bound, stops the race with its status.
    """
    (logpdf, params, low, high, log_const, prior_family, prior_loc, prior_scale, width, centre, window_low,
     window_high, hybrid, check_bound, log_w_max) = state
    k, offset = _candidate_position(shared, n, 0, centre, hybrid)
    position = k + offset
    if not (position >= window_low and position <= window_high):
        return -np.inf, STATUS_OK
    z = prior_ppf_scaled(k, offset, width, prior_family, prior_loc, prior_scale)
    if not (z >= low and z <= high and math.isfinite(z)):
        return -np.inf, STATUS_OK
    value = logpdf(z, params)
    if math.isnan(value):
        return -np.inf, STATUS_NAN
    lw = value + _minus_log_prior_variable(z, prior_family, prior_loc, prior_scale) + log_const
    if check_bound and lw > log_w_max:
        return lw, STATUS_BOUND_VIOLATED
    return lw, STATUS_OK


@numba.njit(cache=True, inline="always")
def _encode_general_row(seed, key, stream, logpdf, params, low, high, log_const, prior_family, prior_loc,
                        prior_scale, width, centre, window_low, window_high, hybrid, log_w_max, max_candidates,
                        check_bound):
    """The race of one 1-D general target on stream ``stream``: (status, index, factor, sample, examined).

    The one implementation behind the batch kernels and the scalar kernel.
    ``factor`` and ``sample`` are meaningful only when ``status`` is ``STATUS_OK``.
    """
    # The one race loop of the built-in targets, with this target's log-density callback as its weight.
    state = (logpdf, params, low, high, log_const, prior_family, prior_loc, prior_scale, width, centre, window_low,
             window_high, hybrid, check_bound, log_w_max)
    shared = _stream_prefix(DOMAIN_SHARED, seed, stream)
    n, examined, status = race(_general_log_weight, state, shared, _stream_prefix(DOMAIN_PRIVATE, key, stream),
                               log_w_max, max_candidates)
    if status != STATUS_OK:
        return status, n, np.int64(0), np.nan, examined
    # The selected candidate, rebuilt exactly as rcc.kernels.decode_batch will rebuild it.
    k, offset = _candidate_position(shared, n, 0, centre, hybrid)
    return status, n, np.int64(k), prior_ppf_scaled(k, offset, width, prior_family, prior_loc, prior_scale), examined


@numba.njit(cache=True)
def _encode_general_element(i, seed, key, stream_offset, logpdf, params, low, high, log_const, prior_family,
                            prior_loc, prior_scale, width, centre, window_low, window_high, hybrid, log_w_max,
                            max_candidates, check_bound, index_out, factor_out, sample_out, examined_out,
                            status_out):
    """Encode element ``i`` of a batch of 1-D general targets (stream ``stream_offset + i``)."""
    status, n, k, z, examined = _encode_general_row(
        seed, key, stream_offset + np.uint64(i), logpdf, params[i], low[i], high[i], log_const[i], prior_family[i],
        prior_loc[i], prior_scale[i], width[i], centre[i], window_low[i], window_high[i], hybrid, log_w_max[i],
        max_candidates, check_bound)
    index_out[i] = n
    examined_out[i] = examined
    status_out[i] = status
    if status == STATUS_OK:
        factor_out[i] = k
        sample_out[i] = z


@intrinsic
def _logpdf_at(typingctx, c_address, jit_address):
    """The log density compiled at these two addresses, as a :data:`LOGPDF_SIGNATURE` first-class function.

    The value numba builds when a dispatcher is passed for a first-class
    function argument (its C wrapper's and its own entry point's addresses),
    built from two integers: unboxing a dispatcher argument costs tens of
    microseconds of Python on every call, two integers almost nothing.
    """
    if not (isinstance(c_address, types.Integer) and isinstance(jit_address, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        function = cgutils.create_struct_proxy(_LOGPDF_TYPE)(context, builder)
        function.c_addr = builder.inttoptr(args[0], cgutils.voidptr_t)
        function.py_addr = cgutils.get_null_value(cgutils.voidptr_t)
        function.jit_addr = builder.inttoptr(args[1], cgutils.voidptr_t)
        return function._getvalue()

    return _LOGPDF_TYPE(c_address, jit_address), codegen


@numba.njit(cache=True)
def _encode_general_one(seed, key, derive_key, stream, c_address, jit_address, params, low, high, log_const,
                        prior_family, prior_loc, prior_scale, width, centre, window_low, window_high, hybrid,
                        log_w_max, max_candidates, check_bound):
    """One scalar general target in one call: :func:`_encode_general_row` of its log density's addresses.

    With ``derive_key`` the private key is derived from the seed, as
    :func:`rcc.random.private_key` does for ``rng=None``.
    """
    if derive_key:
        key = hash_counter(DOMAIN_KEY, seed, np.uint64(0), np.uint64(0), np.uint64(0))
    return _encode_general_row(seed, key, stream, _logpdf_at(c_address, jit_address), params, low, high, log_const,
                               prior_family, prior_loc, prior_scale, width, centre, window_low, window_high, hybrid,
                               log_w_max, max_candidates, check_bound)


# The log density arrives as the two addresses _logpdf_at takes (see _logpdf_addresses).
_ENCODE_GENERAL_SIGNATURE = types.void(_u8, _u8, _u8, _i8, _i8, _F2, _F1, _F1, _F1, _I1, _F1, _F1, _F1, _F1,
                                       _F1, _F1, _b1, _F1, _i8, _b1, _I1, _I1, _F1, _I1, _I1)


# Threaded and serial twins (waking the thread pool costs more than a small
# batch); distinct functions because numba's disk cache is keyed by function.
@_typed_kernel(_ENCODE_GENERAL_SIGNATURE, cache=True, parallel=True)
def _encode_general_batch(seed, key, stream_offset, c_address, jit_address, params, low, high, log_const,
                          prior_family, prior_loc, prior_scale, width, centre, window_low, window_high, hybrid,
                          log_w_max, max_candidates, check_bound, index_out, factor_out, sample_out,
                          examined_out, status_out):
    """Encode a batch of 1-D general targets; element ``i`` uses stream ``stream_offset + i``."""
    logpdf = _logpdf_at(c_address, jit_address)
    for i in numba.prange(low.shape[0]):
        # np.int64: prange's index is unsigned, the serial loop's signed; one type, one compiled element.
        _encode_general_element(np.int64(i), seed, key, stream_offset, logpdf, params, low, high, log_const,
                                prior_family, prior_loc, prior_scale, width, centre, window_low, window_high, hybrid,
                                log_w_max,
                                max_candidates, check_bound, index_out, factor_out, sample_out, examined_out,
                                status_out)


@_typed_kernel(_ENCODE_GENERAL_SIGNATURE, cache=True)
def _encode_general_batch_serial(seed, key, stream_offset, c_address, jit_address, params, low, high, log_const,
                                 prior_family, prior_loc, prior_scale, width, centre, window_low, window_high, hybrid,
                                 log_w_max, max_candidates, check_bound, index_out, factor_out, sample_out,
                                 examined_out, status_out):
    """:func:`_encode_general_batch` on the calling thread."""
    logpdf = _logpdf_at(c_address, jit_address)
    for i in range(low.shape[0]):
        _encode_general_element(i, seed, key, stream_offset, logpdf, params, low, high, log_const, prior_family,
                                prior_loc, prior_scale, width, centre, window_low, window_high, hybrid, log_w_max,
                                max_candidates, check_bound, index_out, factor_out, sample_out, examined_out,
                                status_out)


# --------------------------------------------------------------------------- encoder


def general_width(target: GeneralTarget, prior: Normal | Uniform | None = None,
                  transform: Normal | Uniform | str | None = None) -> Any:
    """Largest width ``M`` whose transformed support ``[M F_c(low), M F_c(high)]`` fits a unit window.

    Parameters
    ----------
    target : GeneralTarget
    prior : rcc.Normal or rcc.Uniform, optional
    transform : None, "prior", rcc.Normal or rcc.Uniform
        The coding transform ``c`` (:func:`rcc.coding_transform` of the prior).

    Returns
    -------
    int or ndarray of int64
    """
    if not isinstance(target, GeneralTarget):
        raise TypeError(f"target must be a GeneralTarget, got {type(target).__name__}")
    transform = coding_transform(_check_prior(prior), transform)
    family, loc, scale = _prior_arrays(transform, target.batch_shape)
    _, _, length = _transformed_support(target.low, target.high, 1, family, loc, scale)
    with np.errstate(divide="ignore"):
        width = np.maximum(np.floor(np.minimum(1.0 / length, 2.0**52)), 1).astype(np.int64)
    start, stop, _ = _transformed_support(target.low, target.high, width, family, loc, scale)
    width = np.where(stop - start > 1.0, np.maximum(width - 1, 1), width)
    return width.item() if width.ndim == 0 else width


def _check_int(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    if value >= 2**63:
        raise ValueError(f"{name} must be < 2**63 (an int64), got {int(value)}")
    return int(value)


def _race_inputs(target, prior, transform, hybrid, width, log_ratio_max):
    """The race's per-element inputs of :func:`encode_general` as flat kernel columns.

    Returns the columns in the kernel's order (low, high, log_const,
    axis_family, axis_loc, axis_scale, width, centre, window_low,
    window_high; then log_w_max, which follows the ``hybrid`` flag) and the largest
    ``log w_max``; raises on a width the target does not fit.
    """
    shape = target.batch_shape
    family, loc, scale = _prior_arrays(prior, shape)
    if isinstance(prior, Uniform) and ((target.low < loc) | (target.high > loc + scale)).any():
        raise ValueError("the target's support [low, high] must lie inside the Uniform prior's support")
    # The axis is the coding transform's (the prior's for "pfr").
    family, loc, scale = _prior_arrays(transform, shape)
    if isinstance(transform, Uniform) and ((target.low < loc) | (target.high > loc + scale)).any():
        raise ValueError("the target's support [low, high] must lie inside the Uniform transform's support")

    if not hybrid:
        if width is not None and not (np.asarray(width).dtype.kind in "iu" and (np.asarray(width) == 1).all()):
            raise ValueError("width applies to method='hybrid' only; 'pfr' uses the prior (width 1)")
        widths = np.ones(shape, dtype=np.int64)
    elif width is None or (isinstance(width, str) and width == "adaptive"):
        widths = np.asarray(general_width(target, prior, transform), dtype=np.int64)
    elif isinstance(width, str):
        raise ValueError(f"width must be None, 'adaptive' or positive integers, got {width!r}")
    else:
        arr = np.asarray(width)
        if arr.dtype == bool or arr.dtype.kind not in "iu":
            raise TypeError(f"width must be a positive integer or an array of them, got {width!r}")
        if (arr < 1).any():
            raise ValueError(f"width must be >= 1, got {arr[arr < 1].ravel()[:3]}")
        try:
            widths = np.broadcast_to(arr.astype(np.int64), shape).copy()
        except ValueError as exc:
            raise ValueError(f"width of shape {arr.shape} does not broadcast to {shape}") from exc
    widths = np.broadcast_to(widths, shape)
    start, stop, _ = _transformed_support(target.low, target.high, widths, family, loc, scale)
    too_wide = stop - start > 1.0
    if too_wide.any():
        raise ValueError(
            f"target does not fit width {int(widths[too_wide].ravel()[0])}: its transformed support has "
            f"length {float((stop - start)[too_wide].ravel()[0]):.4g} > 1; use width=None"
        )
    centre = np.clip(0.5 * (start + stop), 0.5, widths - 0.5)

    if log_ratio_max is None:
        ratio_max = target.log_ratio_max(transform)
    else:
        ratio_max = np.broadcast_to(_real_array(log_ratio_max, "log_ratio_max"), shape)
    log_w_max = ratio_max - np.log(widths)
    # log w(z) = logpdf(z) - log Z + s^2/2 + (log-prior constant) - log M; kernels add s^2/2.
    log_const = _minus_log_prior_constant(family, scale) - target.log_normalizer - np.log(widths)
    count = max(1, int(np.prod(shape, dtype=np.int64)))

    def flat(arr, dtype=np.float64):
        return _owned(np.broadcast_to(arr, shape), dtype=dtype).reshape(count)

    columns = (flat(target.low), flat(target.high), flat(log_const), flat(family, np.int64), flat(loc), flat(scale),
               flat(widths), flat(centre), flat(start), flat(stop), flat(log_w_max))
    return columns, float(np.max(log_w_max))


_SCALAR_KERNEL_READY: list = []  # a flag: non-empty once _encode_general_one has been called
_LOGPDF_ADDRESSES: dict = {}  # log density dispatcher -> the addresses _logpdf_at takes


def _logpdf_addresses(logpdf):
    """``(C wrapper address, entry point address)`` of ``logpdf`` compiled for LOGPDF_SIGNATURE, or None.

    These are the two addresses numba reads from a dispatcher passed as a
    first-class function (``numba.experimental.function_type``).  The
    dispatcher keeps its compiled code alive, and this table keeps the
    dispatcher.  None where it does not compile for the signature: the batch
    path then raises numba's own error.
    """
    if logpdf not in _LOGPDF_ADDRESSES:
        try:
            result = logpdf.get_compile_result(LOGPDF_SIGNATURE)
            library, description = result.library, result.fndesc
            _LOGPDF_ADDRESSES[logpdf] = (library.get_pointer_to_function(description.llvm_cfunc_wrapper_name),
                                         library.get_pointer_to_function(description.llvm_func_name))
        except Exception:  # noqa: BLE001 - whatever it is, the batch path reports it
            return None
    return _LOGPDF_ADDRESSES[logpdf]


def _checked_logpdf_addresses(target):
    """:func:`_logpdf_addresses` of the target's log density, or the reason it has none."""
    addresses = _logpdf_addresses(target.logpdf_function)
    if addresses is not None:
        return addresses
    reason = "its compiled code has no address"
    try:
        target.logpdf_function.get_compile_result(LOGPDF_SIGNATURE)
    except Exception as exc:  # noqa: BLE001 - numba's many error types, reported as one
        reason = str(exc)
    raise TypeError(f"logpdf does not compile as logpdf(z: float64, params: float64[:]) -> float64: {reason}")


def _scalar_race_arguments(target, columns):
    """The race's arguments of a scalar target, as Python numbers, for :func:`_encode_general_one`.

    Returns ``(addresses, params row, low, ..., window_high, log_w_max)``, or
    None when the log density has no address (see :func:`_logpdf_addresses`).
    """
    addresses = _logpdf_addresses(target.logpdf_function)
    if addresses is None:
        return None
    low, high, log_const, family, loc, scale, width, centre, start, stop, log_w_max = (
        column[0].item() for column in columns)
    return (addresses, target._flat_params()[0], low, high, log_const, family, loc, scale, width, centre, start,
            stop, log_w_max)


def _encode_scalar(target, seed_u64, prior, method, columns, memo_key, max_candidates, check_bound, rng,
                   num_threads, stream):
    """The low-latency path of :func:`encode_general` for a scalar target: one kernel call.

    The arguments were validated by :func:`encode_general` as for any batch;
    what remains (``num_threads``, ``rng``) is checked here in the batch
    path's order.  Returns None where the race does not succeed, so that the
    batch path raises its error, worded exactly as for any batch.
    """
    if num_threads is not None:
        _check_int(num_threads, "num_threads")  # the scalar race runs on the calling thread
    scalar_key = None if memo_key is None else ("scalar race arguments",) + memo_key
    if scalar_key is not None and scalar_key in target._per_prior_values:
        arguments = target._per_prior_values[scalar_key]
    else:
        arguments = _scalar_race_arguments(target, columns)
        if arguments is None:
            return None
        if scalar_key is not None:
            target._per_prior_values[scalar_key] = arguments
    (c_address, jit_address), params, *race_columns, log_w_max = arguments
    # rng=None: the kernel derives the key from the seed, as private_key does.
    key = _NO_KEY if rng is None else private_key(seed_u64, rng)
    arguments = (seed_u64, key, rng is None, stream, c_address, jit_address, params, *race_columns,
                 method == "hybrid", log_w_max, max_candidates, bool(check_bound))
    if _SCALAR_KERNEL_READY:
        status, index, factor, sample, examined = _encode_general_one(*arguments)
    else:
        with warnings.catch_warnings():
            # The first call compiles (or loads) the kernel; numba flags its first-class function type
            # then, as for the batch kernels.  Later calls skip this context (microseconds a call).
            warnings.simplefilter("ignore", NumbaExperimentalFeatureWarning)
            status, index, factor, sample, examined = _encode_general_one(*arguments)
        _SCALAR_KERNEL_READY.append(True)
    if status != STATUS_OK:
        return None
    fixed_key = None if memo_key is None else ("scalar outputs",) + memo_key
    if fixed_key is not None and fixed_key in target._per_prior_values:
        kl_bits, tail_mass = target._per_prior_values[fixed_key]
    else:
        # As the batch path returns them: Python numbers from 0-d arrays.
        kl_bits = np.asarray(target.kl_divergence_bits(prior)).item()
        tail_mass = np.array(target.tail_mass, dtype=float).item()
        if fixed_key is not None:
            target._per_prior_values[fixed_key] = kl_bits, tail_mass
    return _scalar_encoded_sample(index=index, factor=factor, sample=sample, candidates=examined,
                                  width=int(race_columns[6]), tail_mass=tail_mass, kl_bits=kl_bits, method=method,
                                  num_candidates=None, seed=int(seed_u64))


def encode_general(target: GeneralTarget, seed: int | np.integer, *, prior: Normal | Uniform | None = None,
                   width: ArrayLike | None = None, method: str = "hybrid",
                   max_candidates: int = DEFAULT_MAX_CANDIDATES, log_ratio_max: ArrayLike | None = None,
                   check_bound: bool = True, rng: int | np.random.Generator | None = None,
                   num_threads: int | None = None, transform: Normal | Uniform | str | None = None,
                   stream_offset: int = 0) -> EncodedSample:
    """Encode an exact sample of a :class:`GeneralTarget`; decode with :func:`rcc.decode_sample`.

    Parameters
    ----------
    target : GeneralTarget
        Batch element ``i`` (flat C order) uses stream ``stream_offset + i`` of
        the seed, as in :func:`rcc.encode_sample`.
    seed : int
        Shared seed in ``[0, 2**64)``.
    prior : rcc.Normal or rcc.Uniform, optional
        Shared prior, ``Normal(0, 1)`` by default (parameters broadcast to the batch).
    width : None, "adaptive", int or array_like of int
        Width ``M`` of the CDF transform for hybrid coding; ``None`` and
        ``"adaptive"`` take the largest width each target fits
        (:func:`general_width`).  The receiver needs ``enc.width``.
    method : {"hybrid", "pfr"}
    max_candidates : int
        Bound on the race's candidates per element.
    log_ratio_max : array_like, optional
        Your own bound on ``sup [log q - log c]`` in nats (normalised ``q``,
        ``c`` the coding transform: the prior for ``"pfr"``), instead of the
        certified one.  An underestimate biases the sampler;
        this argument exists for targets without a certificate and for tests.
    check_bound : bool
        Stop with an error when a candidate's weight exceeds the bound.  Only
        tests of the statistical checks' power should turn this off.
    rng : None, int or numpy.random.Generator
        Sender's private randomness for the arrival times (None: from the seed).
    num_threads : int, optional
        Threads for the batch loop; results do not depend on it.
    transform : None, "prior", rcc.Normal or rcc.Uniform
        The coding transform of hybrid coding, as for :func:`rcc.encode_sample`
        (by default the prior's copy ``DEFAULT_TRANSFORM_SCALE`` times wider);
        the receiver passes the same to :func:`rcc.decode_sample`.
    stream_offset : int
        First stream of the batch (default 0): parts encoded with their flat
        offsets give exactly the messages and samples of one call.

    Returns
    -------
    rcc.EncodedSample
        ``kl_bits`` (against the prior) is computed by quadrature and
        ``tail_mass`` is the target's.

    Raises
    ------
    ValueError
        Bad arguments; a target that does not fit ``width``; an expected
        candidate count above ``max_candidates``.
    RuntimeError
        The race ran past ``max_candidates``, a candidate's weight exceeded
        the bound (the certificate is wrong), or ``logpdf`` returned NaN.
    """
    if not isinstance(target, GeneralTarget):
        raise TypeError(f"target must be a GeneralTarget, got {type(target).__name__}")
    seed_u64 = check_seed(seed)
    prior = _check_prior(prior)
    if method not in ("hybrid", "pfr"):
        raise ValueError(f"method must be 'hybrid' or 'pfr' for general targets, got {method!r}")
    max_candidates = _check_int(max_candidates, "max_candidates")
    if not isinstance(check_bound, (bool, np.bool_)):
        raise TypeError(f"check_bound must be a bool, got {check_bound!r}")
    hybrid = method == "hybrid"
    shape = target.batch_shape
    # The race runs on the coding transform's axis; the prior gives only the KL.
    transform = _check_transform(transform, prior, hybrid)
    memo_key = None
    if (math.prod(shape) <= _REMEMBERED_BELOW and log_ratio_max is None
            and (width is None or type(width) in (int, str))):
        prior_key, transform_key = _scalar_prior_key(prior), _scalar_prior_key(transform)
        memo_key = (None if prior_key is None or transform_key is None
                    else ("race inputs", prior_key, transform_key, hybrid, width))
    if memo_key is not None and memo_key in target._per_prior_values:
        # A small target coded again with the same prior and width: its inputs are those of last time.
        columns, log_w_max_max = target._per_prior_values[memo_key]
    else:
        columns, log_w_max_max = _race_inputs(target, prior, transform, hybrid, width, log_ratio_max)
        if memo_key is not None:
            target._per_prior_values[memo_key] = columns, log_w_max_max
    expected_log2 = log_w_max_max / math.log(2.0)
    if expected_log2 > math.log2(max_candidates):
        raise ValueError(
            f"the race would examine about 2**{expected_log2:.1f} candidates for flat index "
            f"{int(np.argmax(columns[10]))}, more than max_candidates={max_candidates}; pass max_candidates="
            f"{int(2 ** min(math.ceil(expected_log2 + 2.0), 62))} (slow)"
            + (", or use method='hybrid'" if not hybrid else
               ", or drop transform='prior'" if transform is prior and isinstance(prior, Normal) else "")
        )
    count = max(1, math.prod(shape))
    stream_offset = (_STREAM_ZERO if type(stream_offset) is int and stream_offset == 0
                     else check_stream_offset(stream_offset, count))
    if not shape:
        encoded = _encode_scalar(target, seed_u64, prior, method, columns, memo_key, max_candidates, check_bound,
                                 rng, num_threads, stream_offset)
        if encoded is not None:
            return encoded
    widths = columns[6].astype(np.int64).reshape(shape)

    index = np.zeros(count, dtype=np.int64)
    factor = np.zeros(count, dtype=np.int64)
    sample = np.zeros(count, dtype=np.float64)
    examined = np.zeros(count, dtype=np.int64)
    status = np.zeros(count, dtype=np.int64)
    previous = numba.get_num_threads()
    if num_threads is not None:
        numba.set_num_threads(min(_check_int(num_threads, "num_threads"),
                                  numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
    try:
        kernel = _encode_general_batch if count >= _SERIAL_BELOW else _encode_general_batch_serial
        with warnings.catch_warnings():
            # The log density reaches the race as a first-class function; numba flags that
            # feature on every first compile, which tells a user nothing they can act on.
            warnings.simplefilter("ignore", NumbaExperimentalFeatureWarning)
            kernel(
                seed_u64, private_key(seed, rng), stream_offset, *_checked_logpdf_addresses(target),
                target._flat_params(),
                *columns[:10], hybrid, columns[10], max_candidates, bool(check_bound), index, factor, sample,
                examined, status,
            )
    finally:
        numba.set_num_threads(previous)
    for code, message in (
        (STATUS_BOUND_VIOLATED, "a candidate's weight exceeded w_max: the bound on log q - log p is wrong"),
        (STATUS_NAN, "logpdf returned NaN on the support"),
        (STATUS_MAX_CANDIDATES, f"the race exceeded max_candidates={max_candidates}"),
    ):
        bad = np.flatnonzero(status == code)
        if bad.size:
            raise RuntimeError(f"{message} ({bad.size} element(s), first: flat index {bad[0]})")

    def out(arr):
        arr = np.asarray(arr).reshape(shape)
        return arr.item() if arr.ndim == 0 else arr

    kl_bits = target.kl_divergence_bits(prior)
    return EncodedSample(
        index=out(index), factor=out(factor), sample=out(sample), candidates=out(examined),
        width=out(np.array(widths)), tail_mass=out(np.array(target.tail_mass, dtype=float)),
        kl_bits=out(kl_bits), method=method, num_candidates=None, seed=int(seed_u64),
    )
