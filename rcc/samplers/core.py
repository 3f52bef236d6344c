"""Python side of the tree samplers: argument checks, parameter packing, encode and decode.

The argument checks and :class:`rcc.EncodedSample` are shared with the other
coders; they are imported in one place, the import block below.
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
from numba.core.errors import NumbaExperimentalFeatureWarning

# The argument checks and the result type shared with the other coders.
from ..checks import (_check_prior, _check_prior_support, _check_tail_mass, _integer_array, _prior_arrays,
                      _scalar_or_array, _Threads)
from ..encoded import EncodedSample
from ..race_inputs import kl_divergence_bits
from ..random import check_seed, private_key
from ..targets import Distribution, Normal, Product, TruncatedNormal, Uniform
from ..targets.general import GeneralTarget
from ..targets.general_families import Laplace
from .general_masses import general_masses_batch, general_sigma
from .general_search import STATUS_NAN, general_astar_batch
from .kernels import (LAPLACE, MAX_DEPTH, NORMAL, NUM_PARAMS, P_CURVATURE, P_FAMILY, P_LOG_RMAX, RULE_GPRS,
                      SAMPLER_METHODS, STATUS_DEPTH, STATUS_MAX_STEPS, STATUS_NO_MASS, STATUS_QUEUE, _QUEUE,
                      _RULES, _fill_params_batch, _sigma_batch, decode_batch, decode_candidates_batch, encode_batch)

__all__ = [
    "encode_tree_sample",
    "decode_tree_sample",
    "stretch_function",
    "log_ratio_max",
]

# --------------------------------------------------------------------------- Python side


def _kernel_column(value, dtype, shape):
    """``value`` broadcast to ``shape`` as a flat, C-contiguous, writable array of ``dtype``: a read-only
    view (a broadcast scalar) would make numba compile a second version of the kernel."""
    column = np.broadcast_to(np.asarray(value, dtype=dtype), shape)
    return np.require(column, requirements=("C", "W")).reshape(-1)


def _check_method(method):
    if method not in SAMPLER_METHODS:
        raise ValueError(f"method must be one of {SAMPLER_METHODS}, got {method!r}")
    return method


def _params(target, prior, tail_mass):
    """Validated ``(params (count, NUM_PARAMS), batch shape)`` of a 1-D target batch."""

    if isinstance(target, Product) or not isinstance(target, (Normal, TruncatedNormal, Uniform, Laplace)):
        kind = type(target).__name__
        hint = "; use method='hybrid' or 'pfr'"
        if isinstance(target, GeneralTarget):
            hint = ("; for other general targets use target.log_ratio_max(prior) (in nats), and encode them "
                    "with encode_tree_sample or rcc.encode_sample")
        elif isinstance(target, Distribution):
            hint = ""
        raise TypeError(f"the tree samplers take rcc.Normal, rcc.TruncatedNormal, rcc.Uniform or rcc.Laplace "
                        f"targets (one dimension per element), got {kind}{hint}")
    prior = _check_prior(prior)
    tail_mass = _check_tail_mass(tail_mass)
    shape = target.shape
    spec = _laplace_spec(target) if isinstance(target, Laplace) else target._spec(tail_mass)
    family, loc, scale = _prior_arrays(prior, shape)
    _check_prior_support(prior, spec, loc, scale)
    values = (spec["family"], spec["loc"], spec["scale"], spec["low"], spec["high"], spec["log_normalizer"],
              family, loc, scale)
    columns = tuple(_kernel_column(v, np.float64, shape) for v in values)
    count = columns[0].size
    params = np.empty((count, NUM_PARAMS), dtype=np.float64)
    log_rmax = np.empty(count, dtype=np.float64)
    if count:
        _fill_params_batch(columns, params, log_rmax)
    bad = np.flatnonzero(~np.isfinite(log_rmax))
    if bad.size:
        raise ValueError(
            f"the density ratio of the target to the prior is unbounded for {bad.size} element(s) (first: flat "
            f"index {bad[0]}): a target at least as wide as a Normal prior needs a bounded support; "
            "use tail_mass > 0 or a TruncatedNormal")
    return params, shape, prior, tail_mass


def _laplace_spec(target):
    """The packed description of a (truncated) :class:`rcc.Laplace`: it carries its own truncation."""
    return {"family": LAPLACE, "loc": target.loc, "scale": target.scale, "low": target.low, "high": target.high,
            "log_normalizer": np.log1p(-target.tail_mass)}


def _target_tail_mass(target, tail_mass):
    return target.tail_mass if isinstance(target, Laplace) else target.tail_mass_of(tail_mass)


def _target_kl_bits(target, prior, tail_mass):
    """``D_KL[target || prior]`` in bits: closed form for an untruncated Normal under a Normal prior (the
    common case, a tenth of the cost of the general preparation), else as the other coders compute it."""
    if isinstance(target, Laplace):
        return _laplace_kl_bits(target, prior)
    if type(target) is Normal and tail_mass == 0.0 and isinstance(prior, Normal):
        ratio = target.std / prior.std
        gap = (target.mean - prior.mean) / prior.std
        return (0.5 * (ratio * ratio + gap * gap - 1.0) - np.log(ratio)) / math.log(2.0)
    return kl_divergence_bits(target, prior, tail_mass)


def _laplace_kl_bits(target, prior):
    """``D_KL`` in bits of a Laplace truncated to ``loc -/+ c scale`` (``c = log(1 / tail_mass)``), closed form.

    ``x = |z - loc| / scale`` is Exp(1) truncated to ``[0, c]``: ``E x = 1 - c w`` and
    ``E x**2 = 2 - (c**2 + 2 c) w`` with ``w = e**-c / (1 - e**-c)``; by symmetry
    ``E (z - mu)**2 = scale**2 E x**2 + (loc - mu)**2``.
    """
    eps = np.asarray(target.tail_mass, dtype=np.float64)
    c = -np.log(eps)
    w = eps / -np.expm1(-c)
    mean_x = 1.0 - c * w
    mean_x2 = 2.0 - (c * c + 2.0 * c) * w
    neg_entropy = -mean_x - np.log(2.0 * target.scale) - np.log1p(-eps)  # E_q log q
    if isinstance(prior, Normal):
        second = target.scale**2 * mean_x2 + (target.loc - prior.mean) ** 2
        cross = np.log(prior.std) + 0.5 * math.log(2.0 * math.pi) + second / (2.0 * prior.std**2)  # -E_q log p
    else:
        cross = np.log(prior.high - prior.low)
    return (neg_entropy + cross) / math.log(2.0)


def log_ratio_max(target, prior=None, tail_mass=0.0):
    """``D_inf[target || prior] = log2 sup dq/dp`` in bits, per element (batch shape)."""
    params, shape, _, _ = _params(target, prior, tail_mass)
    return params[:, P_LOG_RMAX].reshape(shape) / math.log(2.0)


def stretch_function(target, levels, prior=None, tail_mass=0.0):
    """GPRS's stretch function ``sigma(h)`` of one scalar target at ratios ``levels`` (``0 <= h``).

    ``sigma(h) = int_0^h d eta / (w_Q(eta) - eta w_P(eta))`` (Flamich 2023,
    Section 3); ``inf`` from ``h >= r_max (1 - 1e-13)`` on.
    """
    if isinstance(target, GeneralTarget) and not isinstance(target, Laplace):
        if target.batch_shape != ():
            raise ValueError("stretch_function takes a scalar target")
        levels = _check_levels(levels)
        use_mode, mode, prior, _, _, _ = _general_ratio_inputs(target, prior, "gprs")
        out = np.empty(levels.size, dtype=np.float64)
        info = np.empty(2, dtype=np.float64)
        general_sigma(target.logpdf_function, np.array(np.reshape(target.params, -1), dtype=np.float64),
                      float(target.low), float(target.high), _flat_breaks(target)[0], float(mode[0]), use_mode,
                      *(np.reshape(v, -1)[0].item() for v in _prior_arrays(prior, ())),
                      np.ascontiguousarray(levels.reshape(-1)), out, info)
        _raise_on_failure(np.array([int(info[1])]), "gprs", 1)
        return out.reshape(levels.shape)
    params, shape, _, _ = _params(target, prior, tail_mass)
    if shape != ():
        raise ValueError("stretch_function takes a scalar target")
    levels = _check_levels(levels)
    with np.errstate(divide="ignore"):
        logs = np.log(levels).reshape(-1)
    out = np.empty(logs.size, dtype=np.float64)
    _sigma_batch(params[0], logs, out)
    return out.reshape(levels.shape)


def _check_levels(levels):
    levels = np.asarray(levels, dtype=np.float64)
    if (levels < 0).any() or np.isnan(levels).any():
        raise ValueError("levels must be >= 0")
    return levels


def _check_positive_int(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _run_search(params, seed, key, stream_offset, method, max_candidates):
    """The kernel call on packed parameters: ``(index, sample, steps, status)``."""
    rule, split = _RULES.get(method, (RULE_GPRS, -1))
    count = params.shape[0]
    index = np.empty(count, dtype=np.int64)
    sample = np.empty(count, dtype=np.float64)
    steps = np.empty(count, dtype=np.int64)
    status = np.empty(count, dtype=np.int64)
    if count:
        encode_batch(np.uint64(seed), np.uint64(key), np.uint64(stream_offset), params, rule, split,
                     max_candidates, index, sample, steps, status)
    return index, sample, steps, status


def encode_tree_sample(target, seed, *, prior=None, method="gprs-dyadic", tail_mass=0.0,
                       max_candidates=2**24, rng=None, num_threads=None, stream_offset=0):
    """Encode exact samples with A* coding, greedy Poisson rejection sampling or greedy rejection coding.

    Called by :func:`rcc.encode_sample` for the methods in
    :data:`SAMPLER_METHODS`; the algorithms are explained in :ref:`samplers`.

    Parameters
    ----------
    target : rcc.Normal, rcc.TruncatedNormal, rcc.Uniform, rcc.Laplace or rcc.GeneralTarget
        One-dimensional targets (a batch); element ``i`` uses stream
        ``(seed, stream_offset + i)``.  A Laplace is sampled truncated to its
        own ``tail_mass`` (its ratio to a Normal prior is unbounded).  Other
        general targets take ``"astar"`` and ``"astar-dyadic"`` with node bounds
        from the target's certificate (mode, Lipschitz or concavity), and the
        GPRS and greedy rejection methods when their density ratio to the prior
        is unimodal by what they state: a ``mode`` under a Uniform prior, or
        ``log_concavity >= 1 / prior.std**2`` under a Normal prior (``>= 0``
        under a Uniform one); masses from a per-target quadrature table.
    seed : int
    prior : rcc.Normal or rcc.Uniform, optional
    method : {"astar", "astar-dyadic", "gprs", "gprs-sac", "gprs-dyadic", "grc-sample", "grc-dyadic"}
    tail_mass : float
        Truncation of Normal targets, as for the other methods; ``0``
        (untruncated, exact) is the default here.  Not used for a Laplace.
    max_candidates : int
        Bound on the points examined per element; exceeding it raises.
    rng : None, int or numpy.random.Generator
        The sender's private randomness (the arrival times; greedy rejection coding's coins).
    num_threads : int, optional
        Threads over the batch; results do not depend on it.
    stream_offset : int
        First stream of the batch.

    Returns
    -------
    rcc.EncodedSample
        ``index`` holds heap indices (the candidate index for ``"gprs"``),
        ``candidates`` the points examined, ``factor`` zeros, ``width`` ones.
    """

    method = _check_method(method)
    seed_u64 = check_seed(seed)
    offset = check_seed(stream_offset, "stream_offset")
    max_candidates = _check_positive_int(max_candidates, "max_candidates")
    if isinstance(target, GeneralTarget) and not isinstance(target, Laplace):
        encode = _encode_general_astar if method in ("astar", "astar-dyadic") else _encode_general_masses
        return encode(target, seed_u64, offset, prior, method, max_candidates, rng, num_threads)
    params, shape, prior, tail_mass = _params(target, prior, tail_mass)
    if method.startswith(("gprs", "grc")):
        linear = (params[:, P_CURVATURE] == 0.0) & (params[:, P_FAMILY] == NORMAL)
        if linear.any():
            raise ValueError(
                f"GPRS needs a target std different from the Normal prior's std (flat index "
                f"{int(np.flatnonzero(linear)[0])} has equal stds: a linear log ratio); use method='astar'")
    key = private_key(seed_u64, rng)
    with _Threads(num_threads):
        index, sample, steps, status = _run_search(params, seed_u64, key, offset, method, max_candidates)
    _raise_on_failure(status, method, max_candidates)
    kl_bits = np.asarray(_target_kl_bits(target, prior, tail_mass), dtype=np.float64)
    return EncodedSample(
        index=_scalar_or_array(index.reshape(shape)), factor=_scalar_or_array(np.zeros(shape, dtype=np.int64)),
        sample=_scalar_or_array(sample.reshape(shape)), candidates=_scalar_or_array(steps.reshape(shape)),
        width=_scalar_or_array(np.ones(shape, dtype=np.int64)),
        tail_mass=_scalar_or_array(np.broadcast_to(_target_tail_mass(target, tail_mass), shape)),
        kl_bits=_scalar_or_array(kl_bits), method=method,
    )


def _raise_on_failure(status, method, max_candidates, stated=False):
    failed = np.flatnonzero(status)
    if failed.size:
        first = int(failed[0])
        why = {STATUS_MAX_STEPS: f"examined more than max_candidates={max_candidates} points; increase it",
               STATUS_DEPTH: f"went deeper than {MAX_DEPTH} levels (heap indices must stay below 2**63)",
               STATUS_QUEUE: f"needed more than {_QUEUE} open nodes",
               STATUS_NO_MASS: "lost the residual target mass to rounding (a target too narrow for double "
                               "precision" + ("; or the target's stated mode or log_concavity is wrong" if stated
                                              else "") + ")",
               STATUS_NAN: "met a log density of NaN (or no point of the support)"}[int(status[first])]
        raise ValueError(f"the {method} search {why} for {failed.size} element(s) (first: flat index {first})")


def _encode_general_astar(target, seed_u64, offset, prior, method, max_candidates, rng, num_threads):
    """A* coding of a :class:`rcc.GeneralTarget` with bounds from its certificate (:mod:`.general_search`)."""
    prior = _check_prior(prior)
    target.log_ratio_max(prior)  # raises unless the target states a mode, a Lipschitz or a concavity bound
    shape = target.batch_shape
    family, loc, scale = _prior_arrays(prior, shape)
    _check_prior_support(prior, {"low": target.low, "high": target.high}, loc, scale)
    count = int(np.prod(shape, dtype=np.int64))

    def flat(value, dtype=np.float64):
        return np.array(np.reshape(np.broadcast_to(value, shape), -1), dtype=dtype, order="C")

    use_mode = target.mode is not None
    columns = (np.array(np.reshape(target.params, (count, -1)), dtype=np.float64, order="C"),
               flat(target.low), flat(target.high), flat(target.mode if use_mode else 0.0), use_mode,
               flat(np.inf if target.lipschitz is None else target.lipschitz),
               flat(np.inf if target.concavity is None else target.concavity),
               flat(family, np.int64), flat(loc), flat(scale))
    key = private_key(seed_u64, rng)
    index = np.empty(count, dtype=np.int64)
    sample = np.empty(count, dtype=np.float64)
    steps = np.empty(count, dtype=np.int64)
    status = np.empty(count, dtype=np.int64)
    with _Threads(num_threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", NumbaExperimentalFeatureWarning)  # the log density, a first-class function
        if count:
            general_astar_batch(target.logpdf_function, *columns, np.uint64(seed_u64), np.uint64(key),
                                np.uint64(offset), _RULES[method][1], max_candidates, index, sample, steps, status)
    _raise_on_failure(status, method, max_candidates)
    return EncodedSample(
        index=_scalar_or_array(index.reshape(shape)), factor=_scalar_or_array(np.zeros(shape, dtype=np.int64)),
        sample=_scalar_or_array(sample.reshape(shape)), candidates=_scalar_or_array(steps.reshape(shape)),
        width=_scalar_or_array(np.ones(shape, dtype=np.int64)),
        tail_mass=_scalar_or_array(np.broadcast_to(target.tail_mass, shape)),
        kl_bits=_scalar_or_array(np.asarray(target.kl_divergence_bits(prior), dtype=np.float64)), method=method,
    )


def _flat_breaks(target):
    """The target's breakpoints as a C-contiguous ``(count, nb)`` array."""
    count = int(np.prod(target.batch_shape, dtype=np.int64))
    return np.array(np.reshape(target.breakpoints, (count, target.breakpoints.shape[-1])), dtype=np.float64,
                    order="C")


def _general_ratio_inputs(target, prior, method):
    """``(use_mode, flat mode, prior, family, loc, scale)`` for GPRS and greedy rejection coding of a
    :class:`rcc.GeneralTarget`, whose density ratio to the prior must be unimodal by what the target states."""
    prior = _check_prior(prior)
    shape = target.batch_shape
    family, loc, scale = _prior_arrays(prior, shape)
    _check_prior_support(prior, {"low": target.low, "high": target.high}, loc, scale)
    fix = ("; or use method='astar' or 'astar-dyadic' (they need only the certificate), 'hybrid' or 'pfr'")
    needed = np.zeros(shape) if isinstance(prior, Uniform) else 1.0 / np.broadcast_to(scale, shape) ** 2
    if isinstance(prior, Uniform) and target.mode is not None:
        return True, np.reshape(np.broadcast_to(target.mode, shape), -1).astype(np.float64), prior, family, loc, scale
    if target.log_concavity is None:
        what = ("a mode (a unimodal log density; or log_concavity >= 0)" if isinstance(prior, Uniform) else
                "log_concavity >= 1 / prior.std**2 (a lower bound of -d^2 logpdf / dz^2 that makes the log "
                "ratio concave; a mode alone does not make the ratio to a Normal prior unimodal)")
        raise ValueError(f"method={method!r} needs the target's density ratio to the prior to be unimodal: give "
                         f"the target {what}{fix}")
    short = np.flatnonzero(~(np.broadcast_to(target.log_concavity, shape) >= needed).reshape(-1))
    if short.size:
        first = int(short[0])
        raise ValueError(
            f"method={method!r} needs the target's density ratio to the prior to be unimodal: log_concavity "
            f"must be >= {float(needed.reshape(-1)[first]):.6g} (1 / prior.std**2 for a Normal prior, 0 for a "
            f"Uniform one), got {float(np.reshape(np.broadcast_to(target.log_concavity, shape), -1)[first]):.6g} "
            f"for {short.size} element(s) (first: flat index {first}){fix}")
    return False, np.zeros(max(int(np.prod(shape, dtype=np.int64)), 1)), prior, family, loc, scale


def _encode_general_masses(target, seed_u64, offset, prior, method, max_candidates, rng, num_threads):
    """GPRS or greedy rejection coding of a :class:`rcc.GeneralTarget` (:mod:`.general_masses`)."""
    use_mode, mode, prior, family, loc, scale = _general_ratio_inputs(target, prior, method)
    shape = target.batch_shape
    count = int(np.prod(shape, dtype=np.int64))

    def flat(value, dtype=np.float64):
        return np.array(np.reshape(np.broadcast_to(value, shape), -1), dtype=dtype, order="C")

    rule, split = _RULES.get(method, (RULE_GPRS, -1))
    key = private_key(seed_u64, rng)
    index = np.empty(count, dtype=np.int64)
    sample = np.empty(count, dtype=np.float64)
    steps = np.empty(count, dtype=np.int64)
    status = np.empty(count, dtype=np.int64)
    with _Threads(num_threads):
        if count:
            general_masses_batch(target.logpdf_function,
                                 np.array(np.reshape(target.params, (count, -1)), dtype=np.float64, order="C"),
                                 flat(target.low), flat(target.high), _flat_breaks(target),
                                 np.array(mode[:count] if use_mode else np.zeros(count), order="C"), use_mode,
                                 flat(family, np.int64), flat(loc), flat(scale), np.uint64(seed_u64), np.uint64(key),
                                 np.uint64(offset), rule, split, max_candidates, index, sample, steps, status)
    _raise_on_failure(status, method, max_candidates, stated=True)
    return EncodedSample(
        index=_scalar_or_array(index.reshape(shape)), factor=_scalar_or_array(np.zeros(shape, dtype=np.int64)),
        sample=_scalar_or_array(sample.reshape(shape)), candidates=_scalar_or_array(steps.reshape(shape)),
        width=_scalar_or_array(np.ones(shape, dtype=np.int64)),
        tail_mass=_scalar_or_array(np.broadcast_to(target.tail_mass, shape)),
        kl_bits=_scalar_or_array(np.asarray(target.kl_divergence_bits(prior), dtype=np.float64)), method=method,
    )


def decode_tree_sample(index, seed, *, prior=None, method="gprs-dyadic", num_threads=None, stream_offset=0):
    """The samples of heap indices written by :func:`encode_tree_sample`, bit for bit.

    Parameters
    ----------
    index : int or array_like of int
        Heap indices ``>= 1`` (candidate indices for ``"gprs"``).
    seed : int
    prior : rcc.Normal or rcc.Uniform, optional
    method : str
        The encoder's method (it fixes the split rule).
    num_threads : int, optional
    stream_offset : int

    Returns
    -------
    float or ndarray of float64
    """

    method = _check_method(method)
    seed_u64 = check_seed(seed)
    offset = check_seed(stream_offset, "stream_offset")
    index = _integer_array(index, "index")
    if (index < 1).any():
        raise ValueError(f"index must be >= 1 (heap indices count from 1), got {index[index < 1].ravel()[:3]}")
    prior = _check_prior(prior)
    family, loc, scale = _prior_arrays(prior, index.shape)
    out = np.empty(index.size, dtype=np.float64)
    with _Threads(num_threads):
        if index.size:
            columns = (_kernel_column(index, np.int64, index.shape), _kernel_column(family, np.int64, index.shape),
                       _kernel_column(loc, np.float64, index.shape), _kernel_column(scale, np.float64, index.shape))
            if method == "gprs":  # global GPRS: the n-th prior-proposal candidate of the unsplit process
                decode_candidates_batch(seed_u64, offset, *columns, out)
            else:
                decode_batch(seed_u64, offset, columns[0], _RULES[method][1], *columns[1:], out)
    return _scalar_or_array(out.reshape(index.shape))
