"""A batch's targets, priors and widths as the race kernels' columns; bounds and KL without coding.

:class:`_BatchInputs` turns a target batch into the column layout of
:mod:`rcc.kernels` (O(1) memory beyond the caller's arrays);
:func:`kl_divergence_bits` and :func:`_hybrid_bounds` run the kernels'
preparation step alone, with exactly the encoder's arithmetic.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import kernels
from .checks import (_Threads, _check_prior, _check_prior_support, _check_target, _check_tail_mass,
                     _check_width_array, _prior_arrays, _read_only, _run_chunks, _scalar_or_array)
from .encoded import DEFAULT_TAIL_MASS
from .targets import Distribution, Normal, Product, Uniform
from .transform import _check_transform, _half_width

__all__ = ["kl_divergence_bits"]

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
        data, rows, columns = np.full(1, arr.flat[0] if arr.size else arr.item(), dtype=np.float64), 0, 0
    elif arr.shape == shape:
        data, rows, columns = np.ascontiguousarray(arr, dtype=np.float64).reshape(-1), dims, 1
    elif dims > 1 and arr.size == dims and arr.shape[-1:] == (dims,):
        data, rows, columns = np.ascontiguousarray(arr, dtype=np.float64).reshape(-1), 0, 1
    else:
        data, rows, columns = np.ascontiguousarray(np.broadcast_to(arr, shape), dtype=np.float64).reshape(-1), dims, 1
    return _read_only(data), rows, columns


def _width_mode(target, width, hybrid, shape):
    """How the kernels choose the width, and the given widths (docs/transform.rst, 'Choosing the width')."""
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
            "it lies too far in the prior's tail (use a wider prior), or it is too narrow beside the "
            "prior for double precision to resolve (about 2**-50 of the prior's std or less: use a "
            "narrower prior)"
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


class _BatchInputs:
    """A batch's target, prior and width parameters as the kernels' columns.

    Scalars (and zero-stride broadcasts) stay scalars and full-shape arrays
    stay views (:func:`_column`), so encoding a batch takes O(1) memory
    beyond the caller's arrays and the outputs.
    """

    def __init__(self, target, prior, tail_mass, hybrid, width, transform=None):
        shape = target.shape
        spec = target._spec(tail_mass)
        transform = _check_transform(transform, prior, hybrid)
        prior_family, prior_loc, prior_scale = _prior_arrays(prior, shape)
        has_batch = bool(target.batch_shape)
        _check_prior_support(prior, spec, prior_loc, prior_scale, has_batch=has_batch)
        transform_family, transform_loc, transform_scale = _prior_arrays(transform, shape)
        if transform is not prior:
            _check_prior_support(transform, spec, transform_loc, transform_scale, "transform", has_batch)
        self.width_mode, width_given = _width_mode(target, width, hybrid, shape)
        self.hybrid = hybrid
        # Through the prior although a wider default exists (a Normal prior): the error hint says so.
        self.through_prior = transform is prior and isinstance(prior, Normal)
        self.half_width = _half_width(tail_mass)
        self.has_batch = bool(target.batch_shape)
        self.count = int(np.prod(target.batch_shape, dtype=np.int64))
        self.dims = int(shape[-1]) if target.event_shape else 1
        # Order as kernels.C_*.
        values = (spec["family"], spec["loc"], spec["scale"], spec["low"], spec["high"], spec["log_normalizer"],
                  prior_family, prior_loc, prior_scale, transform_family, transform_loc, transform_scale,
                  width_given)
        columns = [_column(value, shape, self.count, self.dims) for value in values]
        self.columns = tuple(data for data, _, _ in columns)
        self.steps = _read_only(np.array([[rows, cols] for _, rows, cols in columns], dtype=np.int64))

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


def _hybrid_bounds(target, prior, width, tail_mass, transform=None):
    """Per element of a hybrid batch, without raising: ``(fits, log2 w_max, support lengths)``.

    ``fits`` (batch shape) is True where every dimension's transformed support fits
    its window; ``log2 w_max`` (batch shape) is the race's bound, the log2 of its
    expected number of candidates; the lengths (batch + event shape) are the
    transformed supports' lengths at width 1, ``F_c(high) - F_c(low)``.  Exactly the
    encoder's arithmetic (``kernels.prepare_batch``), for callers that choose widths
    or decide between coding paths (``rcc.torch.RCCChannel``).
    """
    inputs = _BatchInputs(_check_target(target), _check_prior(prior), _check_tail_mass(tail_mass),
                          hybrid=True, width=width, transform=transform)
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


def kl_divergence_bits(target: Distribution | Any, prior: Normal | Uniform | Any | None = None,
                       tail_mass: float = DEFAULT_TAIL_MASS) -> Any:
    """``D_KL[target.truncate(tail_mass) || prior]`` in bits (summed over the event)."""
    prior = _check_prior(prior)
    inputs = _BatchInputs(_check_target(target), prior, _check_tail_mass(tail_mass),
                          hybrid=False, width=None, transform=prior)
    kl_bits = inputs.prepare(0, inputs.count, _Threads(None))[2]
    return _scalar_or_array(kl_bits.reshape(target.batch_shape))
