"""Encode and decode exact samples: hybrid coding, PFR, ORC and MRC.

The public entry points are :func:`encode_sample` and :func:`decode_sample`.
The sender turns a target into a message ``(index, factor)``; the receiver,
who shares only the seed, the prior and the width, turns it back into the
sample, bit for bit.

Methods (:ref:`race-rule`, :ref:`race-baselines`, :ref:`hybrid-window`,
:ref:`transform-width-m`; Theis & Yosri 2022):

``"hybrid"`` (default)
    Uniform candidates on a unit window of the width-M transformed axis
    ``z' = M F_c(z)``, built by universal quantisation ``K = round(c - U)``,
    selected by the exponential race with the ``w_max`` stopping rule.  Exact.
    Expected candidates ``~ exp(D_inf[q' || window])``, independent of the KL.
    ``c`` is the *coding transform* (:func:`coding_transform`): by default a
    copy of a Normal prior ``DEFAULT_TRANSFORM_SCALE`` times wider, so that a
    target far in the prior's tail still fills most of its window.
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
from typing import Any, cast

import numpy as np
from numpy.typing import ArrayLike

from . import kernels
# The coder layer's shared pieces, importable from here as before (rcc.coding re-exports them).
from .checks import (  # noqa: F401 - re-exported
    _CHUNK, _INT64_MAX, _SERIAL_BELOW, _STANDARD_NORMAL, _Threads, _as_int64, _check_method, _check_positive_int,
    _check_prior, _check_prior_support, _check_tail_mass, _check_target, _check_width_array, _flat,
    _integer_array, _is_unit_width, _prior_arrays, _read_only, _run_chunks, _scalar_or_array,
)
from .encoded import (  # noqa: F401 - re-exported
    _TREE_METHODS, DEFAULT_MAX_CANDIDATES, DEFAULT_TAIL_MASS, DEFAULT_TRANSFORM_SCALE, METHODS, EncodedSample,
    _scalar_encoded_sample,
)
from .general import encode_general
from .race_inputs import (  # noqa: F401 - re-exported
    _BatchInputs, _column, _hybrid_bounds, _raise_prepare_error, _width_mode, kl_divergence_bits,
)
from .random import MAX_SEED, check_seed, check_stream_offset, private_key
from .targets import NORMAL_FAMILY, UNIFORM_FAMILY, Distribution, Normal, Uniform, _convert_scipy, normal_half_width
from .targets.general import GeneralTarget
from .transform import (  # noqa: F401 - re-exported
    _LAST_DEFAULT_TRANSFORM, _STANDARD_TRANSFORM, _check_transform, _half_width, coding_transform, gaussian_width,
)

__all__ = [
    "METHODS",
    "DEFAULT_TAIL_MASS",
    "DEFAULT_MAX_CANDIDATES",
    "DEFAULT_TRANSFORM_SCALE",
    "EncodedSample",
    "coding_transform",
    "encode_sample",
    "decode_sample",
    "gaussian_width",
    "kl_divergence_bits",
]

_MODES = {"hybrid": kernels.RACE, "pfr": kernels.RACE, "orc": kernels.ORC, "mrc": kernels.MRC}
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG2 = math.log(2.0)


def _raise_too_many_candidates(log_w_max, max_candidates, hybrid, through_prior, where="", describe=""):
    """Say which element's race is too long and the change that lets it run."""
    log2_candidates = log_w_max / math.log(2.0)
    if not hybrid:
        fix = "use method='hybrid' (candidates flat in the KL)"
    elif through_prior:
        fix = ("drop transform='prior': the default, wider coding transform keeps targets in the prior's "
               "tail cheap")
    else:
        fix = "use width='adaptive' (the receiver must then be told enc.width)"
    needed = int(2 ** min(math.ceil(log2_candidates + 2.0), 62))
    raise ValueError(
        f"the race would examine about 2**{log2_candidates:.1f} candidates{where}{describe}, more than "
        f"max_candidates={max_candidates}; pass max_candidates={needed} (slow), or {fix}"
    )


def _describe_element(inputs, i):
    """``" (target Normal(mean=..., std=...))"`` for element ``i`` of a batch, from the kernels' columns."""
    parts = []
    for j in range(min(inputs.dims, 3)):
        def value(c):
            data, (row_step, col_step) = inputs.columns[c], inputs.steps[c]
            return float(data[i * row_step + j * col_step])

        if int(value(kernels.C_FAMILY)) == kernels.NORMAL:
            parts.append(f"Normal(mean={value(kernels.C_LOC):.6g}, std={value(kernels.C_SCALE):.6g}) "
                         f"on [{value(kernels.C_LOW):.6g}, {value(kernels.C_HIGH):.6g}]")
        else:
            parts.append(f"Uniform({value(kernels.C_LOW):.6g}, {value(kernels.C_HIGH):.6g})")
    more = f", ... ({inputs.dims} dimensions)" if inputs.dims > 3 else ""
    return f" (target {', '.join(parts)}{more})" if parts else ""


def _raise_encode_error(status, inputs, threads, max_candidates):
    """Raise the error the first failed element calls for (``status`` from the batch kernel).

    A target that cannot be prepared is reported first (bad parameters), then
    the first element whose race bound exceeds ``max_candidates`` (by flat
    index, with its parameters); races that ran out of candidates are
    reported last.
    """
    prep = np.flatnonzero(status >= kernels.STATUS_PREP)
    if prep.size:
        first = int(prep[0])
        inputs.prepare(first, first + 1, threads)  # raises, naming the element
    bound = np.flatnonzero(status == kernels.STATUS_BOUND)
    if bound.size:
        first = int(bound[0])
        _, log_w_max, _ = inputs.prepare(first, first + 1, threads)
        where = f" for flat index {first}" if inputs.has_batch else ""
        _raise_too_many_candidates(float(log_w_max[0]), max_candidates, inputs.hybrid, inputs.through_prior,
                                   where, _describe_element(inputs, first))
    failed = np.flatnonzero(status != kernels.STATUS_OK)
    raise RuntimeError(
        f"the race exceeded max_candidates={max_candidates} for {failed.size} element(s) "
        f"(first: flat index {failed[0]}{_describe_element(inputs, int(failed[0]))}); pass a larger "
        "max_candidates"
    )


_NO_KEY = np.uint64(0)


def _batch_encoder(mode, dims):
    """The name of the batch kernel for ``mode`` and ``dims`` dimensions (each compiles only its own search)."""
    if mode != kernels.RACE:
        return "encode_fused_fixed_count"
    return "encode_fused" if dims == 1 else "encode_fused_product"


def _scalar_spec(target, tail_mass):
    """``target._spec(tail_mass)`` of a scalar target as Python numbers, and the tail mass it removes.

    For a Normal target the arithmetic is that of :meth:`rcc.Normal._spec`
    on Python floats (the same IEEE operations, so the same bits) without
    numpy's per-operation overhead; other targets use their own ``_spec``.
    """
    if type(target) is Normal:
        mean, std = float(target.mean), float(target.std)
        if tail_mass == 0:
            low, high, log_normalizer = -math.inf, math.inf, 0.0
        else:
            half_width = normal_half_width(tail_mass)
            low, high = mean - half_width * std, mean + half_width * std
            log_normalizer = math.log1p(-tail_mass)
        spec = {"family": NORMAL_FAMILY, "loc": mean, "scale": std, "low": low, "high": high,
                "log_normalizer": log_normalizer}
        return spec, tail_mass
    spec = {name: float(value) for name, value in target._spec(tail_mass).items()}
    spec["family"] = int(spec["family"])
    return spec, float(target.tail_mass_of(tail_mass))


def _encode_scalar(target, seed, prior, transform, method, tail_mass, max_candidates, num_candidates, width,
                   rng, stream_offset):
    """The low-latency path of :func:`encode_sample` for one scalar target (same result as a batch of one).

    One kernel call does the preparation, the key derivation and the race;
    the arguments were validated by :func:`encode_sample`.  Returns None
    where the target cannot be encoded, so that the batch path raises its
    error.
    """
    hybrid = method == "hybrid"
    spec, target_tail_mass = _scalar_spec(target, tail_mass)
    prior_family, prior_loc, prior_scale = _scalar_prior(prior)
    if prior_family == UNIFORM_FAMILY:
        _check_prior_support(prior, spec, prior_loc, prior_scale, has_batch=False)
    transform_family, transform_loc, transform_scale = _scalar_prior(transform)
    if transform is not prior and transform_family == UNIFORM_FAMILY:
        _check_prior_support(transform, spec, transform_loc, transform_scale, "transform", False)
    width_mode, width_given = _width_mode(target, width, hybrid, ())
    mode = _MODES[method]
    log_max_candidates = math.log(max_candidates)
    # rng=None: the kernel derives the key from the seed, as private_key does.
    key = _NO_KEY if rng is None else private_key(seed, rng)
    low, high = spec["low"], spec["high"]
    preparation = (seed, key, rng is None, stream_offset, spec["family"], spec["loc"], spec["scale"], low, high,
                   spec["log_normalizer"], prior_family, prior_loc, prior_scale, transform_family, transform_loc,
                   transform_scale, width_mode, int(width_given), _half_width(tail_mass), hybrid)
    if mode == kernels.RACE:
        outputs = kernels.encode_one(*preparation, max_candidates, log_max_candidates)
    else:
        outputs = kernels.encode_one_fixed_count(*preparation, mode, 0 if num_candidates is None else num_candidates,
                                                 max_candidates)
    (prep_status, race_status, index, factor, sample, examined, width_used, log_w_max, kl) = outputs
    if (prep_status != kernels.PREP_OK or race_status != kernels.STATUS_OK
            or mode == kernels.RACE and log_w_max > log_max_candidates):
        return None  # the batch path raises the error, worded exactly as for any batch
    kl_bits = kl / _LOG2
    if mode != kernels.RACE and num_candidates is None:
        num_candidates = int(min(2.0 ** math.ceil(kl_bits + 4.0), max_candidates))
    return _scalar_encoded_sample(
        index=index, factor=factor, sample=sample, candidates=examined, width=width_used,
        tail_mass=target_tail_mass, kl_bits=kl_bits, method=method,
        num_candidates=None if mode == kernels.RACE else num_candidates, seed=int(seed),
    )


_DEFAULT_HALF_WIDTH = normal_half_width(DEFAULT_TAIL_MASS)
_DEFAULT_LOG_NORMALIZER = math.log1p(-DEFAULT_TAIL_MASS)
_LOG_DEFAULT_MAX_CANDIDATES = math.log(DEFAULT_MAX_CANDIDATES)
_STREAM_ZERO = np.uint64(0)
# The last non-default tail mass of the plain path: (tail mass, half-width, log normaliser).
_LAST_TAIL = [(DEFAULT_TAIL_MASS, _DEFAULT_HALF_WIDTH, _DEFAULT_LOG_NORMALIZER)]


def _encode_plain_normal(target, seed, hybrid, prior, tail_mass):
    """:func:`_encode_scalar` specialised to a scalar Normal target and prior and a plain int seed.

    The caller checked that ``width``, ``transform``, ``max_candidates``,
    ``num_candidates``, ``rng`` and the stream have their defaults; ``prior``
    (None or a scalar :class:`rcc.Normal`) and ``tail_mass`` (a float in
    ``[0, 1)``) are checked here, and anything else returns None for the
    checked path.  The kernel gets the values the checked path computes, by
    the same IEEE operations (so the same bits), without its per-call
    checks.  Returns None where the target cannot be encoded, so that the
    checked path raises its error.
    """
    if prior is None or prior is _STANDARD_NORMAL:
        prior_loc, prior_scale = 0.0, 1.0
    elif type(prior) is Normal and not prior.mean.shape:
        prior_loc, prior_scale = float(prior.mean), float(prior.std)
    else:
        return None
    if tail_mass is DEFAULT_TAIL_MASS:
        half_width, log_normalizer = _DEFAULT_HALF_WIDTH, _DEFAULT_LOG_NORMALIZER
    elif type(tail_mass) is float and 0.0 <= tail_mass < 1.0:
        last = _LAST_TAIL[0]
        if last[0] == tail_mass:
            half_width, log_normalizer = last[1], last[2]
        else:
            half_width = normal_half_width(tail_mass)
            log_normalizer = 0.0 if tail_mass == 0 else math.log1p(-tail_mass)
            _LAST_TAIL[0] = (tail_mass, half_width, log_normalizer)
    else:
        return None
    # The transform coding_transform builds: the prior widened (hybrid), or the prior itself.
    transform_scale = DEFAULT_TRANSFORM_SCALE * prior_scale if hybrid else prior_scale
    if not math.isfinite(transform_scale):
        return None  # the checked path says why
    mean, std = float(target.mean), float(target.std)
    if tail_mass == 0:
        low, high = -math.inf, math.inf
    else:
        low, high = mean - half_width * std, mean + half_width * std
    (prep_status, race_status, index, factor, sample, examined, width_used, log_w_max, kl) = kernels.encode_one(
        np.uint64(seed), _NO_KEY, True, _STREAM_ZERO, NORMAL_FAMILY, mean, std, low, high, log_normalizer,
        NORMAL_FAMILY, prior_loc, prior_scale, NORMAL_FAMILY, prior_loc, transform_scale, kernels.WIDTH_GAUSSIAN, 1,
        half_width, hybrid, DEFAULT_MAX_CANDIDATES, _LOG_DEFAULT_MAX_CANDIDATES,
    )
    if prep_status != kernels.PREP_OK or race_status != kernels.STATUS_OK or log_w_max > _LOG_DEFAULT_MAX_CANDIDATES:
        return None
    encoded = object.__new__(EncodedSample)
    encoded.__dict__.update(index=index, factor=factor, sample=sample, candidates=examined, width=width_used,
                            tail_mass=tail_mass, kl_bits=kl / _LOG2,
                            method="hybrid" if hybrid else "pfr", num_candidates=None, seed=seed)
    return encoded


def _output_views(out, target, mode, inputs):
    """The kernel's flat output arrays as views of ``out``'s arrays, after checking each (``encode_sample(out=)``).

    Returns (index, factor, sample, examined, widths, kl_bits, counts), shaped
    as the kernel writes them: ``(count,)`` and ``(count, dims)``.
    """
    if not isinstance(out, EncodedSample):
        raise TypeError(f"out must be an EncodedSample (an earlier batch's result), got {type(out).__name__}")
    count, dims = inputs.count, inputs.dims
    batch_shape, shape = target.batch_shape, target.shape
    fields = [("index", batch_shape, np.int64, (count,)), ("factor", shape, np.int64, (count, dims)),
              ("sample", shape, np.float64, (count, dims)), ("candidates", batch_shape, np.int64, (count,)),
              ("width", shape, np.int64, (count, dims)), ("kl_bits", batch_shape, np.float64, (count,))]
    if mode != kernels.RACE:
        fields.append(("num_candidates", batch_shape, np.int64, (count,)))
    views = []
    for name, expected_shape, dtype, flat_shape in fields:
        arr = getattr(out, name)
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"out.{name} must be a numpy array, got {type(arr).__name__}")
        if arr.shape != tuple(expected_shape):
            raise ValueError(f"out.{name} has shape {arr.shape}, this call writes shape {tuple(expected_shape)}")
        if arr.dtype != dtype:
            raise ValueError(f"out.{name} has dtype {arr.dtype}, this call writes {np.dtype(dtype)}")
        if not arr.flags.c_contiguous:
            raise ValueError(f"out.{name} must be C-contiguous (np.ascontiguousarray makes a copy that is)")
        if not arr.flags.writeable:
            raise ValueError(f"out.{name} is read-only; pass writable arrays")
        views.append((name, arr, arr.reshape(flat_shape)))
    for position, (name, arr, _) in enumerate(views):
        for other_name, other, _ in views[position + 1:]:
            if np.may_share_memory(arr, other):
                raise ValueError(f"out.{name} and out.{other_name} share memory; each output needs its own array")
        for column in inputs.columns:
            if np.may_share_memory(arr, column):
                raise ValueError(f"out.{name} shares memory with the target's or prior's parameters")
    flat = [view for _, _, view in views]
    if mode == kernels.RACE:
        flat.append(np.empty(0, dtype=np.int64))  # the race writes no candidate counts
    return tuple(flat)


def encode_sample(
    target: Distribution | GeneralTarget | Any,
    seed: int | np.integer,
    *,
    prior: Normal | Uniform | Any | None = None,
    width: ArrayLike | None = None,
    method: str = "hybrid",
    tail_mass: float = DEFAULT_TAIL_MASS,
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
    num_candidates: int | None = None,
    rng: int | np.random.Generator | None = None,
    num_threads: int | None = None,
    progress: bool = False,
    transform: Normal | Uniform | str | None = None,
    stream_offset: int = 0,
    out: EncodedSample | None = None,
) -> EncodedSample:
    """Encode an exact sample of ``target`` as a message ``(index, factor)``.

    Parameters
    ----------
    target : rcc.Normal, rcc.TruncatedNormal, rcc.Uniform, rcc.Product or rcc.GeneralTarget
        The distribution to sample; array parameters form a batch whose
        element ``i`` uses the independent stream ``(seed, stream_offset + i)``
        (flat C order).
        A :class:`rcc.general.GeneralTarget` is handed to
        :func:`rcc.general.encode_general` (methods "hybrid" and "pfr").
        Frozen ``scipy.stats`` ``norm``, ``truncnorm``, ``uniform`` and
        ``laplace`` distributions are converted by :func:`rcc.from_scipy`.
    seed : int
        Shared seed in ``[0, 2**64)``.
    prior : rcc.Normal or rcc.Uniform, optional
        Shared prior / marginal; ``Normal(0, 1)`` by default (frozen
        ``scipy.stats.norm`` / ``uniform`` are accepted).  ``kl_bits`` is
        measured against it.
    width : int, array_like of int, "adaptive" or None
        Width ``M`` of the CDF transform for ``method="hybrid"`` (:ref:`transform-width-m`),
        per dimension.  ``None`` derives it: for Normal targets from the std,
        the transform and ``tail_mass`` alone (:func:`gaussian_width`, which the
        receiver can recompute), for other targets as the largest width their
        support fits.
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
        tail mass (:ref:`truncation-central`); ``0`` keeps them whole where that fits.
    max_candidates : int
        Bound on the race's candidates per element; exceeding it raises.
    num_candidates : int, optional
        Fixed candidate count for ORC/MRC; by default ``2**ceil(KL + 4)``
        per element (KL in bits), capped at ``max_candidates``.
    rng : None, int or numpy.random.Generator
        Sender's private randomness for the race's arrival times; ``None``
        derives it from the seed so that runs reproduce.  A batch encoded in
        parts equals one call only when every part gets the same private key:
        ``None`` or one integer (see :func:`rcc.random.private_key`).
    num_threads : int, optional
        Threads for the batch loop; results do not depend on it.
    progress : bool
        Show a progress bar for large batches.
    transform : None, "prior", rcc.Normal or rcc.Uniform
        The coding transform of ``method="hybrid"`` (:func:`coding_transform`):
        by default a Normal prior's copy ``DEFAULT_TRANSFORM_SCALE`` times
        wider; ``"prior"`` builds the axis through the prior itself.  The
        receiver passes the same to :func:`decode_sample`.
    stream_offset : int
        First stream of the batch (default 0).  Encoding the parts
        ``x[a:b]`` of a flat batch with ``stream_offset=a`` gives exactly the
        messages and samples of one call on ``x``;
        ``stream_offset + batch size`` must not exceed ``2**64``.
    out : EncodedSample, optional
        A batch's earlier result whose arrays this call overwrites instead of
        allocating new ones (for a loop over equal-sized chunks: fresh output
        memory costs more than the race at 10^6 targets and up).  Its
        ``index``, ``factor``, ``sample``, ``candidates``, ``width`` and
        ``kl_bits`` (and ``num_candidates`` for ORC/MRC) must be writable,
        C-contiguous arrays of this call's shapes and dtypes (int64, float64
        for ``sample`` and ``kl_bits``) sharing no memory with each other or
        the target.  The returned sample holds those same arrays.  Methods
        "hybrid", "pfr", "orc" and "mrc" on rcc distributions with a batch;
        if the call raises, the contents of those arrays are unspecified.

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
    if (type(target) is Normal and type(seed) is int and width is None and transform is None
            and rng is None and num_threads is None and num_candidates is None and out is None
            and max_candidates is DEFAULT_MAX_CANDIDATES and type(stream_offset) is int and stream_offset == 0
            and type(method) is str and (method == "hybrid" or method == "pfr") and not target.mean.shape
            and 0 <= seed <= MAX_SEED):
        # The most common call (a scalar Normal target, a scalar Normal prior, the other options at their
        # defaults): one kernel call.
        encoded = _encode_plain_normal(target, seed, method == "hybrid", prior, tail_mass)
        if encoded is not None:
            return encoded
    if out is not None and (isinstance(target, GeneralTarget) or isinstance(method, str) and method in _TREE_METHODS):
        raise ValueError("out applies to methods 'hybrid', 'pfr', 'orc' and 'mrc' on rcc distributions; "
                         "drop out= for general targets and the tree samplers")
    if isinstance(method, str) and method in _TREE_METHODS:
        from .samplers.core import encode_tree_sample  # imported on use: the tree samplers load their own kernels

        if not _is_unit_width(width):
            raise ValueError(f"width applies to method='hybrid' only; {method!r} searches the prior's CDF axis")
        if transform is not None:
            raise ValueError(f"transform applies to method='hybrid' only; {method!r} searches the prior's CDF axis")
        if not isinstance(target, Distribution):
            target = _convert_scipy(target)  # a frozen scipy.stats distribution: its rcc equivalent
        return encode_tree_sample(target, seed, prior=_check_prior(prior), method=method, tail_mass=tail_mass,
                                  max_candidates=max_candidates, rng=rng, num_threads=num_threads,
                                  stream_offset=stream_offset)
    plain = type(target) is Normal  # the common scalar case skips the ABC checks below
    if not plain and not isinstance(target, (GeneralTarget, Distribution)):
        target = _convert_scipy(target)  # a frozen scipy.stats distribution: its rcc equivalent
    if not plain and isinstance(target, GeneralTarget):
        # A general target carries its own truncation (GeneralTarget(tail_mass=...)).
        return encode_general(target, seed, prior=_check_prior(prior), width=width, method=method,
                              max_candidates=max_candidates, rng=rng, num_threads=num_threads,
                              transform=transform, stream_offset=stream_offset)
    if not plain and not isinstance(target, Distribution):
        target = _check_target(target)  # raises: neither an rcc distribution nor a general target
    # Fast path for the common plain int; check_seed handles (and rejects) the rest.
    seed_u64 = np.uint64(seed) if type(seed) is int and 0 <= seed <= MAX_SEED else check_seed(seed)
    prior = _check_prior(prior)
    method = _check_method(method)
    # The defaults are valid: skipping their checks is a tenth of a scalar call.
    if tail_mass is not DEFAULT_TAIL_MASS:
        tail_mass = _check_tail_mass(tail_mass)
    if max_candidates is not DEFAULT_MAX_CANDIDATES:
        max_candidates = _check_positive_int(max_candidates, "max_candidates")
    if num_candidates is not None:
        num_candidates = _check_positive_int(num_candidates, "num_candidates")
    if num_threads is not None:
        _check_positive_int(num_threads, "num_threads")
    hybrid = method == "hybrid"
    if not hybrid and not _is_unit_width(width):
        raise ValueError(f"width applies to method='hybrid' only; {method!r} uses the prior (width 1)")

    if num_candidates is not None and num_candidates > max_candidates:
        raise ValueError(f"num_candidates={num_candidates} exceeds max_candidates={max_candidates}")
    transform = _check_transform(transform, prior, hybrid)
    if out is not None and not target.batch_shape:
        raise ValueError("out applies to a batch of targets; a scalar target's outputs are Python numbers")
    if (not target.shape and not prior.batch_shape and not transform.batch_shape
            and not isinstance(width, np.ndarray)):
        # The common offset 0 skips the check (the scalar path is latency-bound).
        stream = (np.uint64(0) if type(stream_offset) is int and stream_offset == 0
                  else check_stream_offset(stream_offset, 1))
        encoded = _encode_scalar(target, seed_u64, prior, transform, method, tail_mass, max_candidates,
                                 num_candidates, width, rng, stream)
        if encoded is not None:
            return encoded
    inputs = _BatchInputs(target, prior, tail_mass, hybrid, width, transform)
    count, dims = inputs.count, inputs.dims
    stream_offset = check_stream_offset(stream_offset, count)
    mode = _MODES[method]
    key = private_key(seed_u64, rng)
    # The kernel writes every output of every element that encodes (and the
    # status of all), so the outputs need no zeroing.
    if out is None:
        index = np.empty(count, dtype=np.int64)
        factor = np.empty((count, dims), dtype=np.int64)
        sample = np.empty((count, dims), dtype=np.float64)
        examined = np.empty(count, dtype=np.int64)
        widths = np.empty((count, dims), dtype=np.int64)
        kl_bits = np.empty(count, dtype=np.float64)
        counts = np.empty(count if mode != kernels.RACE else 0, dtype=np.int64)  # ORC/MRC only
    else:
        index, factor, sample, examined, widths, kl_bits, counts = _output_views(out, target, mode, inputs)
    status = np.empty(count, dtype=np.int8)
    threads = _Threads(num_threads)
    log_max_candidates = math.log(max_candidates)

    encoder = _batch_encoder(mode, dims)

    def run(begin, end):
        # One pass per element: parameters, bound, KL and the selection (kernels.encode_fused and its siblings).
        threads.kernel(encoder, end - begin)(
            begin, end, seed_u64, key, stream_offset, inputs.columns, inputs.steps, inputs.width_mode,
            inputs.half_width, hybrid, mode, 0 if num_candidates is None else num_candidates, max_candidates,
            log_max_candidates, index, factor, sample, examined, widths, kl_bits, counts, status,
        )

    with threads:
        # Chunks only pace the progress bar: results do not depend on them.
        _run_chunks(run, count, progress, f"encode ({method})", _CHUNK if progress else max(count, 1))
        if status.any():
            _raise_encode_error(status, inputs, threads, max_candidates)

    batch_shape, shape = target.batch_shape, target.shape
    if out is not None:
        # The caller's arrays, now holding this call's outputs.
        return EncodedSample(
            index=out.index, factor=out.factor, sample=out.sample, candidates=out.candidates, width=out.width,
            tail_mass=_scalar_or_array(np.broadcast_to(cast(Distribution, target).tail_mass_of(tail_mass),
                                                       batch_shape)),
            kl_bits=out.kl_bits, method=method, num_candidates=None if mode == kernels.RACE else out.num_candidates,
            seed=int(seed_u64),
        )
    return EncodedSample(
        index=_scalar_or_array(index.reshape(batch_shape)),
        factor=_scalar_or_array(factor.reshape(shape)),
        sample=_scalar_or_array(sample.reshape(shape)),
        candidates=_scalar_or_array(examined.reshape(batch_shape)),
        width=_scalar_or_array(widths.reshape(shape)),
        tail_mass=_scalar_or_array(np.broadcast_to(cast(Distribution, target).tail_mass_of(tail_mass),
                                                   batch_shape)),
        kl_bits=_scalar_or_array(kl_bits.reshape(batch_shape)),
        method=method,
        num_candidates=None if mode == kernels.RACE else _scalar_or_array(counts.reshape(batch_shape)),
        seed=int(seed_u64),
    )


_MAX_INT64 = 2**63 - 1
_SCALAR_INTEGERS = (int, np.int64, np.int32, np.uint64, np.uint32, np.int16, np.uint16, np.int8, np.uint8)


def _scalar_prior(prior):
    """(family, loc, scale) of a scalar prior as Python numbers, or None for a batch of priors."""
    if prior is None or prior is _STANDARD_NORMAL:
        return NORMAL_FAMILY, 0.0, 1.0
    if prior is _STANDARD_TRANSFORM:
        return NORMAL_FAMILY, 0.0, DEFAULT_TRANSFORM_SCALE
    if type(prior) is Normal and not prior.mean.shape:
        return NORMAL_FAMILY, float(prior.mean), float(prior.std)
    if type(prior) is Uniform and not prior.low.shape:
        return UNIFORM_FAMILY, float(prior.low), float(prior.high - prior.low)
    return None


def _decode_scalar(index, factor, seed, prior, width, method, num_threads, transform, stream_offset):
    """The low-latency path of :func:`decode_sample` for one 1-D message, or None to take the batch path.

    Validates with plain Python and makes one kernel call.  Anything it does
    not accept as plainly valid (arrays, other types, out-of-range values, a
    factor that the dither rejects) returns None, and the batch path then
    returns or raises exactly what it always does, so both paths agree.
    """
    if (type(index) not in _SCALAR_INTEGERS or type(factor) not in _SCALAR_INTEGERS or type(seed) is not int
            or num_threads is not None or not 0 <= seed <= MAX_SEED):
        return None
    index, factor = int(index), int(factor)
    if not 1 <= index <= _MAX_INT64:
        return None
    hybrid = method == "hybrid"
    if hybrid:
        if type(width) not in _SCALAR_INTEGERS:
            return None
        width = int(width)
        if not 1 <= width <= _MAX_INT64 or not 0 <= factor <= width:
            return None
    elif method in METHODS and (width is None or type(width) in _SCALAR_INTEGERS and width == 1) and factor == 0:
        width = 1
    else:
        return None
    if type(stream_offset) is not int or not 0 <= stream_offset <= MAX_SEED:
        return None
    try:
        # The axis of the decode: the coding transform for hybrid, the prior otherwise.
        axis = _scalar_prior(_check_transform(transform, _check_prior(prior), hybrid))
    except (TypeError, ValueError):
        return None  # the batch path raises the same error
    if axis is None:
        return None
    sample, status = kernels.decode_one(np.uint64(seed), np.uint64(stream_offset), index, factor, width, *axis,
                                        hybrid)
    return sample if status == kernels.STATUS_OK else None


def decode_sample(index: ArrayLike, factor: ArrayLike, seed: int | np.integer, *,
                  prior: Normal | Uniform | Any | None = None, width: ArrayLike | None = None, method: str = "hybrid",
                  num_threads: int | None = None, transform: Normal | Uniform | str | None = None,
                  stream_offset: int = 0) -> Any:
    """Reproduce the sample of a message ``(index, factor)``, bit for bit.

    Decoding costs O(1) per sample whatever the index: the receiver jumps
    straight to the dither ``U_N`` (:ref:`randomness-counter`) and computes
    ``z = F_c^{-1}((K + U_N) / M)``, ``c`` the coding transform.

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
    transform : None, "prior", rcc.Normal or rcc.Uniform
        The sender's coding transform (:func:`coding_transform`; the default
        is derived from the prior, as in :func:`encode_sample`).
    stream_offset : int
        The encoder's ``stream_offset``: message ``i`` (flat C order) uses
        stream ``stream_offset + i``.

    Returns
    -------
    float or ndarray of float64
        Same shape as ``factor``.
    """
    if isinstance(method, str) and method in _TREE_METHODS:
        from .samplers.core import decode_tree_sample  # heap indices (factor unused, must be 0)

        if (_integer_array(factor, "factor") != 0).any():
            raise ValueError(f"factor must be 0 for method={method!r}")
        if transform is not None:
            raise ValueError(f"transform applies to method='hybrid' only; {method!r} searches the prior's CDF axis")
        return decode_tree_sample(index, seed, prior=_check_prior(prior), method=method, num_threads=num_threads,
                                  stream_offset=stream_offset)
    sample = _decode_scalar(index, factor, seed, prior, width, method, num_threads, transform, stream_offset)
    if sample is not None:
        return sample
    seed_u64 = check_seed(seed)
    prior = _check_prior(prior)
    method = _check_method(method)
    hybrid = method == "hybrid"
    transform = _check_transform(transform, prior, hybrid)
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

    prior_family, prior_loc, prior_scale = _prior_arrays(transform, shape)
    count = int(index.size)
    dims = int(shape[-1]) if factor.ndim > index.ndim else 1
    stream_offset = check_stream_offset(stream_offset, count)

    def flat(arr, dtype):
        return _flat(arr, shape, count, dims, dtype)

    sample = np.empty((count, dims), dtype=np.float64)
    status = np.zeros(count, dtype=np.int64)
    with _Threads(num_threads) as threads:
        threads.kernel("decode_batch", count)(
            seed_u64, stream_offset, _read_only(index.reshape(count)), flat(factor, np.int64), flat(widths, np.int64),
            flat(prior_family, np.int64), flat(prior_loc, np.float64), flat(prior_scale, np.float64),
            hybrid, sample, status,
        )
    failed = np.flatnonzero(status != kernels.STATUS_OK)
    if failed.size:
        raise ValueError(
            f"factor is inconsistent with the shared dither for {failed.size} element(s) (first: flat index "
            f"{failed[0]}): K + U_N must lie in [0, width). Check the seed, width and message"
        )
    return _scalar_or_array(sample.reshape(shape))
