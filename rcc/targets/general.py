"""General 1-D targets: any numba log density on a bounded interval, with a certified weight bound.

:class:`GeneralTarget` describes a batch of one-dimensional targets by a
numba-compiled log density on ``[low, high]`` and the facts that bound it;
it normalises the density by quadrature and certifies
``sup_z [log q(z) - log p(z)]`` against a prior, which is what the race's
stopping rule needs.  :func:`rcc.general.encode_general` codes them.

Certified bound
---------------
The race is exact only if ``w_max >= sup w``; an underestimate silently biases
the output (:ref:`race-bound`, :ref:`general-certificate`).  :class:`GeneralTarget` certifies
``sup_z [log q(z) - log p(z)]`` over ``[low, high]`` on a grid of cells
``[a, b]``, bounding each cell from facts the caller states about ``log q``:

* ``mode`` (``log q`` non-decreasing up to ``mode`` and non-increasing after
  it, e.g. any log-concave density): ``sup_[a,b] log q`` is ``log q(mode)`` if
  the cell holds the mode, else ``max(log q(a), log q(b))``;
* ``lipschitz`` (``|d log q / dz| <= L`` on ``[low, high]``):
  ``sup_[a,b] log q <= (log q(a) + log q(b)) / 2 + L (b - a) / 2``;

and ``sup_[a,b] (-log p)`` is attained at an endpoint because ``-log p`` is
convex for the Normal prior and constant for the Uniform one.  A third fact
bounds the whole ratio ``f = log q - log p`` at once:

* ``concavity`` (``-d^2 log q / dz^2 <= C`` on ``[low, high]``): then
  ``-f'' <= C - 1/sigma_p^2 =: K`` (``K = C`` for the Uniform prior), and
  ``sup_[a,b] f <= max(f(a), f(b)) + max(K, 0) (b - a)^2 / 8`` (the gap
  between a function and its chord is at most ``K h^2 / 8``).  This bound
  converges quadratically, which makes mixtures cheap to certify.  The cell bounds
are exact upper bounds, not estimates.  Branch and bound makes them tight:
starting from 1024 equal cells, every cell whose bound exceeds the largest
value seen by more than ``1e-4`` nats is bisected (up to 40 times, at most
200,000 evaluations per target), so the certified bound is typically within
``1e-4`` nats of the true supremum (0.01 % more candidates) and never below
it; a relative margin of ``1e-9`` covers floating-point rounding.  As a second line of defence the encoder stops with
an error if any candidate's weight exceeds the bound it was given.

Ready-made targets with stated certificates (:mod:`rcc.targets.general_families`):
:class:`rcc.Laplace` (truncated), :class:`rcc.GaussianMixture` (two components,
truncated) and :class:`rcc.ScaledBeta`.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import numba
import numpy as np
from numba import types
from numpy.typing import ArrayLike
from scipy import special

from .distributions import NORMAL_FAMILY, Normal, Uniform, _prior_arrays

__all__ = ["LOGPDF_SIGNATURE", "GeneralTarget"]


#: Numba signature every log density is called with: ``logpdf(z, params)``.
LOGPDF_SIGNATURE = types.float64(types.float64, types.Array(types.float64, 1, "A"))
_LOGPDF_TYPE = types.FunctionType(LOGPDF_SIGNATURE)

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_CERTIFY_CELLS = 1024
_CERTIFY_DEPTH = 40
_CERTIFY_TOLERANCE = 1e-4
_CERTIFY_MAX_EVALUATIONS = 200_000
_QUADRATURE_CELLS = 128
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(10)
_GL_NODES = 0.5 * (_GL_NODES + 1.0)  # on [0, 1]
_GL_WEIGHTS = 0.5 * _GL_WEIGHTS
_MARGIN = 1e-9

_f8, _i8, _u8, _b1 = types.float64, types.int64, types.uint64, types.boolean
_F1 = types.Array(_f8, 1, "A")
_F2 = types.Array(_f8, 2, "A")
_I1 = types.Array(_i8, 1, "A")


def _typed_kernel(signature, **options):
    """``numba.njit(signature, **options)``, compiled (or loaded from the cache) on the first call.

    An explicit signature compiles at decoration time, i.e. at ``import rcc``;
    this decorator defers that to the first call.  The signature is still
    fixed: the kernels take the log density as a first-class function
    (:data:`LOGPDF_SIGNATURE`), so one machine-code version serves every target.
    """

    def decorate(function):
        dispatcher = numba.njit(**options)(function)
        ready = []  # a flag: Dispatcher.signatures costs tens of microseconds per call

        def call(*args):
            if not ready:
                dispatcher.compile(signature)
                dispatcher.disable_compile()
                ready.append(True)
            return dispatcher(*args)

        call.__name__, call.__qualname__, call.__doc__ = function.__name__, function.__qualname__, function.__doc__
        call.dispatcher = dispatcher
        return call

    return decorate


# --------------------------------------------------------------------------- kernels


@numba.njit(cache=True, inline="always")
def _minus_log_prior_variable(z, prior_family, prior_loc, prior_scale):
    """The z-dependent part of ``-log p(z)``: ``s**2 / 2`` (Normal) or 0 (Uniform)."""
    if prior_family == NORMAL_FAMILY:
        s = (z - prior_loc) / prior_scale
        return 0.5 * s * s
    return 0.0



@numba.njit(cache=True, inline="always")
def _cell_bound(a, b, lq_a, lq_b, mode, mode_value, use_mode, lipschitz, concavity, prior_curvature, lp_a, lp_b):
    """Upper bound of ``log q - (z-dependent part of log p)`` on ``[a, b]`` (module notes)."""
    cell = np.inf
    if use_mode:
        if a <= mode and mode <= b:
            cell = mode_value
        else:
            cell = max(lq_a, lq_b)
    if math.isfinite(lipschitz):
        cell = min(cell, 0.5 * (lq_a + lq_b) + 0.5 * lipschitz * (b - a))
    bound = cell + max(lp_a, lp_b)
    if math.isfinite(concavity):
        gap = max(concavity - prior_curvature, 0.0) * (b - a) * (b - a) / 8.0
        bound = min(bound, max(lq_a + lp_a, lq_b + lp_b) + gap)
    return bound


@_typed_kernel(
    types.void(_LOGPDF_TYPE, _F2, _F1, _F1, _F1, _b1, _F1, _F1, _I1, _F1, _F1, _i8, _i8, _f8, _i8, _F1),
    cache=True, parallel=True,
)
def _certify_batch(logpdf, params, low, high, mode, use_mode, lipschitz, concavity, prior_family, prior_loc,
                   prior_scale, cells, max_depth, tolerance, max_evaluations, out):
    """``out[r] >= sup_{[low, high]} log q - (z-dependent part of log p)``, per row.

    Branch and bound: start from ``cells`` equal cells, and bisect every cell
    whose certified bound exceeds the best value seen so far by more than
    ``tolerance`` (down to ``max_depth`` bisections, and only while fewer
    than ``max_evaluations`` log densities have been evaluated).  Every
    cell's bound is a true upper bound, so the result is certified whatever the refinement; the
    refinement only makes it tight.  NaN (or -inf under a finite Lipschitz
    constant, a contradiction) gives NaN.
    """
    capacity = cells + 2 * max_depth + 4
    for r in numba.prange(low.shape[0]):
        row = params[r]
        pf, ploc, pscale, lip, conc = prior_family[r], prior_loc[r], prior_scale[r], lipschitz[r], concavity[r]
        prior_curvature = 1.0 / (pscale * pscale) if pf == NORMAL_FAMILY else 0.0
        mode_value = logpdf(mode[r], row) if use_mode else 0.0
        lower = mode_value + _minus_log_prior_variable(mode[r], pf, ploc, pscale) if use_mode else -np.inf
        upper = -np.inf
        failed = math.isnan(mode_value)
        # Stack of cells (a, b, log q(a), log q(b), depth), pushed in reverse so cells pop left to right.
        stack_a = np.empty(capacity)
        stack_b = np.empty(capacity)
        stack_qa = np.empty(capacity)
        stack_qb = np.empty(capacity)
        stack_depth = np.empty(capacity, dtype=np.int64)
        step = (high[r] - low[r]) / cells
        top = 0
        evaluations = cells + 1
        q_right = logpdf(high[r], row)
        for c in range(cells - 1, -1, -1):
            a = low[r] + c * step
            q_left = logpdf(a, row)
            stack_a[top], stack_b[top] = a, (high[r] if c == cells - 1 else low[r] + (c + 1) * step)
            stack_qa[top], stack_qb[top], stack_depth[top] = q_left, q_right, 0
            top += 1
            q_right = q_left
        while top > 0 and not failed:
            top -= 1
            a, b, qa, qb, depth = stack_a[top], stack_b[top], stack_qa[top], stack_qb[top], stack_depth[top]
            finite_claimed = math.isfinite(lip) or math.isfinite(conc)
            if math.isnan(qa) or math.isnan(qb) or (finite_claimed and (qa == -np.inf or qb == -np.inf)):
                failed = True
                break
            pa = _minus_log_prior_variable(a, pf, ploc, pscale)
            pb = _minus_log_prior_variable(b, pf, ploc, pscale)
            lower = max(lower, qa + pa, qb + pb)
            bound = _cell_bound(a, b, qa, qb, mode[r], mode_value, use_mode, lip, conc, prior_curvature, pa, pb)
            if bound <= lower + tolerance or depth >= max_depth or evaluations >= max_evaluations:
                upper = max(upper, bound)
                continue
            mid = a + 0.5 * (b - a)
            qm = logpdf(mid, row)
            evaluations += 1
            stack_a[top], stack_b[top], stack_qa[top], stack_qb[top], stack_depth[top] = mid, b, qm, qb, depth + 1
            top += 1
            stack_a[top], stack_b[top], stack_qa[top], stack_qb[top], stack_depth[top] = a, mid, qa, qm, depth + 1
            top += 1
        out[r] = np.nan if failed else upper


@_typed_kernel(
    types.void(_LOGPDF_TYPE, _F2, _F1, _F1, _F2, _I1, _F1, _F1, _i8, _F1, _F1, _F1),
    cache=True, parallel=True,
)
def _quadrature_batch(logpdf, params, low, high, breakpoints, prior_family, prior_loc, prior_scale, cells,
                      nodes, weights, out):
    """Per row: ``out[r, 0] = log Z`` and ``out[r, 1] = D_KL[q || p]`` (nats), composite Gauss-Legendre.

    Cells: ``cells`` equal cells on ``[low, high]`` split at the breakpoints.
    ``out`` is a flat view of shape ``(2 R,)``; NaN (or +inf) from logpdf
    gives NaN.
    """
    for r in numba.prange(low.shape[0]):
        row = params[r]
        inner = 0
        for j in range(breakpoints.shape[1]):
            if breakpoints[r, j] > low[r] and breakpoints[r, j] < high[r]:
                inner += 1
        edges = np.empty(cells + 1 + inner)
        for c in range(cells + 1):
            edges[c] = low[r] + (high[r] - low[r]) * (c / cells)
        edges[cells] = high[r]
        k = cells + 1
        for j in range(breakpoints.shape[1]):
            if breakpoints[r, j] > low[r] and breakpoints[r, j] < high[r]:
                edges[k] = breakpoints[r, j]
                k += 1
        edges = np.sort(edges)
        # One pass with a running shift (online log-sum-exp): total = sum w e^(v - shift).
        shift = -np.inf
        total = 0.0
        moment = 0.0
        bad = False
        for c in range(edges.shape[0] - 1):
            width = edges[c + 1] - edges[c]
            for m in range(nodes.shape[0]):
                z = edges[c] + width * nodes[m]
                v = logpdf(z, row)
                if math.isnan(v) or v == np.inf:
                    bad = True
                    break
                if v == -np.inf:
                    continue
                if v > shift:
                    rescale = math.exp(shift - v)
                    total *= rescale
                    moment *= rescale
                    shift = v
                mass = weights[m] * width * math.exp(v - shift)
                total += mass
                moment += mass * (v + _minus_log_prior_variable(z, prior_family[r], prior_loc[r], prior_scale[r]))
            if bad:
                break
        if bad:
            out[2 * r], out[2 * r + 1] = np.nan, np.nan
        elif total == 0.0:
            out[2 * r], out[2 * r + 1] = -np.inf, np.nan
        else:
            log_z = shift + math.log(total)
            out[2 * r] = log_z
            out[2 * r + 1] = moment / total - log_z  # plus the prior's constant, added by the caller


@_typed_kernel(types.void(_LOGPDF_TYPE, _F2, _I1, _F1, _F1), cache=True)
def _evaluate_logpdf(logpdf, params, row, z, out):
    """``out[i] = logpdf(z[i], params[row[i]])``."""
    for i in range(z.shape[0]):
        out[i] = logpdf(z[i], params[row[i]])


# --------------------------------------------------------------------------- validation


def _owned(value, dtype=np.float64) -> np.ndarray:
    """A fresh, writable, C-contiguous copy (numba's typed signatures reject read-only views)."""
    return np.array(value, dtype=dtype, order="C", copy=True)


def _real_array(value, name) -> np.ndarray:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be real numbers, got {value!r}")
    arr = np.asarray(value)
    if arr.dtype == bool or arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN")
    return arr


def _finite_array(value, name) -> np.ndarray:
    arr = _real_array(value, name)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite, got {arr[~np.isfinite(arr)].ravel()[:3]}")
    return arr


_TWO_ARGUMENT_ADAPTERS: dict = {}  # one-argument log density -> its compiled (z, params) adapter


def _check_logpdf(logpdf):
    """Return a dispatcher callable as ``logpdf(z, params)`` with LOGPDF_SIGNATURE."""
    if not isinstance(logpdf, numba.core.registry.CPUDispatcher):
        raise TypeError(
            "logpdf must be a numba.njit-compiled function logpdf(z) or logpdf(z, params), got "
            f"{type(logpdf).__name__}"
        )
    try:
        arity = len(inspect.signature(logpdf.py_func).parameters)
    except (TypeError, ValueError) as exc:  # pragma: no cover - builtins have no signature
        raise TypeError("logpdf: cannot read its signature") from exc
    if arity == 2:
        return logpdf
    if arity == 1:
        # One adapter per function and process: it cannot be cached on disk
        # (a closure), and compiling it costs a fraction of a second.
        if logpdf not in _TWO_ARGUMENT_ADAPTERS:
            one_argument = logpdf

            def two_arguments(z, params):
                return one_argument(z)

            _TWO_ARGUMENT_ADAPTERS[logpdf] = numba.njit(LOGPDF_SIGNATURE)(two_arguments)
        return _TWO_ARGUMENT_ADAPTERS[logpdf]
    raise TypeError(f"logpdf must take (z) or (z, params), got {arity} parameters")


_STANDARD_NORMAL = Normal(0.0, 1.0)


def _check_prior(prior):
    if prior is None:
        return _STANDARD_NORMAL
    if not isinstance(prior, (Normal, Uniform)):
        raise TypeError(f"prior must be rcc.Normal or rcc.Uniform, got {type(prior).__name__}")
    return prior


def _scalar_prior_key(prior):
    """A hashable key of a prior with scalar parameters, or None for a batch of priors."""
    if isinstance(prior, Normal) and not prior.batch_shape:
        return "normal", float(prior.mean), float(prior.std)
    if isinstance(prior, Uniform) and not prior.batch_shape:
        return "uniform", float(prior.low), float(prior.high)
    return None


def _prior_cdf_pair(x, family, loc, scale):
    """``(F(x), 1 - F(x))`` without cancellation in either tail."""
    t = (np.asarray(x, dtype=np.float64) - loc) / scale
    normal = family == NORMAL_FAMILY
    lower = np.where(normal, special.ndtr(t), np.clip(t, 0.0, 1.0))
    upper = np.where(normal, special.ndtr(-t), np.clip(1.0 - t, 0.0, 1.0))
    return lower, upper


def _transformed_support(low, high, width, family, loc, scale):
    """``[M F(low), M F(high)]`` and ``F(high) - F(low)``, accurate in both tails."""
    f_low, fc_low = _prior_cdf_pair(low, family, loc, scale)
    f_high, fc_high = _prior_cdf_pair(high, family, loc, scale)
    upper_half = f_low > 0.5
    length = np.where(upper_half, fc_low - fc_high, f_high - f_low)
    start = np.where(upper_half, width - width * fc_low, width * f_low)
    stop = np.where(f_high > 0.5, width - width * fc_high, width * f_high)
    return start, stop, length


def _minus_log_prior_constant(family, scale):
    """The z-independent part of ``-log p(z)``."""
    return np.where(family == NORMAL_FAMILY, np.log(scale) + _HALF_LOG_2PI, np.log(scale))


# --------------------------------------------------------------------------- targets


class GeneralTarget:
    """A batch of 1-D targets given by a numba log density on ``[low, high]``.

    Parameters
    ----------
    logpdf : numba.njit function
        ``logpdf(z, params) -> float`` (or ``logpdf(z)``) returning the log
        density at ``z`` in ``[low, high]``, up to an additive constant (the
        normaliser is computed by quadrature).  ``params`` is one row of
        ``params`` (a float64 array), so one compiled function serves a whole
        family.  The encoder calls it through the first-class function type
        :data:`LOGPDF_SIGNATURE`, so the kernels compile once for all targets.
    low, high : array_like
        Finite bounds of the support, ``low < high``; broadcast to the batch.
    params : array_like, optional
        Parameters, shape ``batch_shape + (P,)``; default no parameters.
    mode : array_like, optional
        A point such that ``logpdf`` is non-decreasing on ``[low, mode]`` and
        non-increasing on ``[mode, high]`` (true of every log-concave density).
        Certifies ``w_max`` exactly cell by cell (see module notes).
    lipschitz : array_like, optional
        A bound ``L >= |d logpdf / dz|`` on ``[low, high]``.  Certifies
        ``w_max`` cell by cell (see module notes).
    concavity : array_like, optional
        A bound ``C >= -d^2 logpdf / dz^2`` on ``[low, high]`` (any real;
        ``logpdf`` twice differentiable).  Certifies ``w_max`` cell by cell with
        quadratic convergence.  When several of ``mode``, ``lipschitz`` and
        ``concavity`` are given, each cell uses the smallest of their bounds.
    log_concavity : array_like, optional
        A bound ``kappa <= -d^2 logpdf / dz^2`` on ``[low, high]`` (``logpdf``
        is ``kappa``-strongly concave; ``-inf`` for "unknown").  Not used by the
        certificate: it proves that the density ratio to a Normal prior of std
        ``s`` is unimodal when ``kappa >= 1 / s**2`` (to a Uniform prior when
        ``kappa >= 0``), which GPRS and greedy rejection coding need
        (:ref:`samplers`).
    breakpoints : array_like, optional
        Points where ``logpdf`` is not smooth (kinks, jumps), shape
        ``batch_shape + (nb,)``; quadrature cells are split there.  ``mode`` is
        always a breakpoint.
    tail_mass : array_like, optional
        Total-variation distance between this (possibly truncated) target and
        the distribution the user had in mind; reported, not used.  Default 0.
    name : str, optional
        Shown in ``repr`` and figure legends.

    Notes
    -----
    Without ``mode``, ``lipschitz`` or ``concavity`` the target can still be encoded when the
    caller supplies ``log_ratio_max`` to :func:`encode_general`.
    """

    event_shape = ()

    def __init__(self, logpdf: Any, low: ArrayLike, high: ArrayLike, params: ArrayLike | None = None, *,
                 mode: ArrayLike | None = None, lipschitz: ArrayLike | None = None,
                 concavity: ArrayLike | None = None, breakpoints: ArrayLike | None = None,
                 tail_mass: ArrayLike = 0.0, name: str | None = None,
                 log_concavity: ArrayLike | None = None) -> None:
        self.logpdf_function = _check_logpdf(logpdf)
        low = _finite_array(low, "low")
        high = _finite_array(high, "high")
        params = np.zeros((0,)) if params is None else _finite_array(params, "params")
        if params.ndim == 0:
            raise ValueError("params must have a trailing parameter axis, e.g. shape (P,) or batch + (P,)")
        mode_arr = None if mode is None else _finite_array(mode, "mode")
        lipschitz_arr = None if lipschitz is None else _real_array(lipschitz, "lipschitz")
        if lipschitz_arr is not None and (lipschitz_arr < 0).any():
            raise ValueError("lipschitz must be >= 0 (or inf for 'unknown')")
        concavity_arr = None if concavity is None else _real_array(concavity, "concavity")
        if concavity_arr is not None and np.isneginf(concavity_arr).any():
            raise ValueError("concavity must be > -inf (or +inf for 'unknown')")
        log_concavity_arr = None if log_concavity is None else _real_array(log_concavity, "log_concavity")
        if log_concavity_arr is not None and np.isposinf(log_concavity_arr).any():
            raise ValueError("log_concavity must be < inf (or -inf for 'unknown')")
        tail = _real_array(tail_mass, "tail_mass")
        if ((tail < 0) | (tail >= 1)).any():
            raise ValueError("tail_mass must lie in [0, 1)")
        shapes = [low.shape, high.shape, params.shape[:-1], tail.shape]
        shapes += [] if mode_arr is None else [mode_arr.shape]
        shapes += [] if lipschitz_arr is None else [lipschitz_arr.shape]
        shapes += [] if concavity_arr is None else [concavity_arr.shape]
        shapes += [] if log_concavity_arr is None else [log_concavity_arr.shape]
        try:
            batch_shape = np.broadcast_shapes(*shapes)
        except ValueError as exc:
            raise ValueError(
                f"low, high, params[..., :], mode, lipschitz, concavity, log_concavity shapes do not broadcast: "
                f"{shapes}"
            ) from exc
        self.batch_shape = tuple(batch_shape)
        self.low = np.broadcast_to(low, batch_shape)
        self.high = np.broadcast_to(high, batch_shape)
        if (self.low >= self.high).any():
            raise ValueError("low must be < high for every element")
        self.params = np.broadcast_to(params, batch_shape + params.shape[-1:])
        self.mode = None if mode_arr is None else np.clip(np.broadcast_to(mode_arr, batch_shape), self.low, self.high)
        self.lipschitz = None if lipschitz_arr is None else np.broadcast_to(lipschitz_arr, batch_shape)
        self.concavity = None if concavity_arr is None else np.broadcast_to(concavity_arr, batch_shape)
        self.log_concavity = (None if log_concavity_arr is None
                              else np.broadcast_to(log_concavity_arr, batch_shape))
        self.tail_mass = np.broadcast_to(tail, batch_shape)
        if breakpoints is None:
            breaks = np.zeros(batch_shape + (0,))
        else:
            breaks = _finite_array(breakpoints, "breakpoints")
            breaks = breaks.reshape(breaks.shape + (1,)) if breaks.ndim == 0 else breaks
            try:
                breaks = np.broadcast_to(breaks, batch_shape + breaks.shape[-1:])
            except ValueError as exc:
                raise ValueError("breakpoints must have shape batch_shape + (nb,)") from exc
        if self.mode is not None:
            breaks = np.concatenate([breaks, self.mode[..., None]], axis=-1)
        self.breakpoints = breaks
        self.name = type(self).__name__ if name is None else str(name)
        self._rows = None
        self._params_flat = None
        self._tables: dict[int, tuple] = {}  # per element: its quadrature table (the target is immutable)
        self._per_prior_values: dict[tuple, Any] = {}
        known = self._closed_form_log_normalizer()
        if known is None:
            # Normalise now: this also checks that logpdf is finite somewhere on the support.
            self.log_normalizer, _ = self._quadrature(Normal(0.0, 1.0))
        else:
            self.log_normalizer = known

    def _closed_form_log_normalizer(self):
        """``log Z`` per element where a subclass knows it exactly (its logpdf is finite on the support), else None."""
        return None

    # ----------------------------------------------------------------- structure

    @property
    def shape(self):
        """Batch shape (the event is 1-D scalar)."""
        return self.batch_shape

    def __repr__(self):
        return f"{self.name}(batch_shape={self.batch_shape}, low={_short(self.low)}, high={_short(self.high)})"

    @property
    def _count(self):
        return int(np.prod(self.batch_shape, dtype=np.int64))

    def _unique_rows(self):
        """First flat index of each distinct element and, per element, its distinct row."""
        if self._rows is None:
            count = self._count
            columns = [self.params, self.low[..., None], self.high[..., None], self.breakpoints]
            columns += [] if self.mode is None else [self.mode[..., None]]
            columns += [] if self.lipschitz is None else [self.lipschitz[..., None]]
            columns += [] if self.concavity is None else [self.concavity[..., None]]
            columns += [] if self.log_concavity is None else [self.log_concavity[..., None]]
            table = np.concatenate([np.reshape(c, (count, c.shape[-1])) for c in columns], axis=1)
            _, first, inverse = np.unique(table, axis=0, return_index=True, return_inverse=True)
            self._rows = (first, inverse.reshape(-1))
        return self._rows

    def _flat(self, arr):
        return _owned(np.broadcast_to(arr, self.batch_shape)).reshape(-1)

    def _flat_params(self):
        """Parameters as a C-contiguous ``(count, P)`` array (built once; the target is immutable)."""
        if self._params_flat is None:
            self._params_flat = _owned(np.reshape(self.params, (self._count, self.params.shape[-1])))
        return self._params_flat

    def raw_logpdf_flat(self, flat_index: ArrayLike, z: ArrayLike) -> np.ndarray:
        """``logpdf(z[i], params[flat_index[i]])`` (unnormalised), vectorised."""
        z = _owned(z, dtype=np.float64).reshape(-1)
        rows = _owned(np.broadcast_to(flat_index, z.shape), dtype=np.int64)
        out = np.empty(z.shape, dtype=np.float64)
        _evaluate_logpdf(self.logpdf_function, self._flat_params(), rows, z, out)
        return out

    # ----------------------------------------------------------------- quadrature

    def _cells(self, flat_index):
        """Cell edges of the quadrature grid for one element (uniform grid plus breakpoints)."""
        low, high = float(self._flat(self.low)[flat_index]), float(self._flat(self.high)[flat_index])
        breaks = np.reshape(self.breakpoints, (self._count, self.breakpoints.shape[-1]))[flat_index]
        breaks = breaks[(breaks > low) & (breaks < high)]
        return np.unique(np.concatenate([np.linspace(low, high, _QUADRATURE_CELLS + 1), breaks]))

    def _table(self, flat_index):
        """Edges, log cell masses (normalised) and the CDF at the edges of one element."""
        flat_index = int(flat_index)
        if flat_index not in self._tables:
            edges = self._cells(flat_index)
            a, step = edges[:-1], np.diff(edges)
            nodes = a[:, None] + step[:, None] * _GL_NODES[None, :]
            lq = self.raw_logpdf_flat(flat_index, nodes).reshape(nodes.shape)
            if np.isnan(lq).any():
                raise ValueError(f"logpdf returned NaN on the support of element {flat_index}")
            if np.isposinf(lq).any():
                raise ValueError(f"logpdf returned +inf on the support of element {flat_index}")
            with np.errstate(divide="ignore"):
                log_terms = lq + np.log(step)[:, None] + np.log(_GL_WEIGHTS)[None, :]
            log_cell = special.logsumexp(log_terms, axis=1)
            log_norm = special.logsumexp(log_cell)
            if not np.isfinite(log_norm):
                raise ValueError(f"logpdf is -inf (zero density) everywhere on [low, high] of element {flat_index}")
            cell_mass = np.exp(log_cell - log_norm)
            cdf_edges = np.concatenate([[0.0], np.cumsum(cell_mass)])
            cdf_edges /= cdf_edges[-1]
            self._tables[flat_index] = (edges, log_norm, cdf_edges, nodes, lq, step)
        return self._tables[flat_index]

    def _quadrature(self, prior):
        """``(log Z, D_KL[q || prior] in nats)`` per element, by composite Gauss-Legendre (numba)."""
        family, loc, scale = _prior_arrays(prior, self.batch_shape)
        first, inverse = self._unique_rows()

        def take(arr, dtype=np.float64):
            return _owned(np.reshape(np.broadcast_to(arr, self.batch_shape), -1)[first], dtype)

        breaks = _owned(np.reshape(self.breakpoints, (self._count, self.breakpoints.shape[-1]))[first])
        out = np.empty((first.size, 2))
        _quadrature_batch(self.logpdf_function, _owned(self._flat_params()[first]), take(self.low),
                          take(self.high), breaks, take(family, np.int64), take(loc), take(scale),
                          _QUADRATURE_CELLS, _owned(_GL_NODES), _owned(_GL_WEIGHTS), out.reshape(-1))
        if np.isnan(out[:, 0]).any():
            raise ValueError("logpdf returned NaN or +inf on the support")
        if np.isneginf(out[:, 0]).any():
            raise ValueError("logpdf is -inf (zero density) everywhere on [low, high]")
        log_z = out[inverse, 0].reshape(self.batch_shape)
        kl = out[inverse, 1].reshape(self.batch_shape) + _minus_log_prior_constant(family, scale)
        return log_z, kl

    def logpdf(self, x: ArrayLike) -> Any:
        """Normalised log density; ``-inf`` outside ``[low, high]``.  ``x`` broadcasts with the batch."""
        x = _real_array(x, "x")
        x, low, high, norm = np.broadcast_arrays(x, self.low, self.high, self.log_normalizer)
        index = np.broadcast_to(np.arange(self._count).reshape(self.batch_shape), x.shape)
        inside = (x >= low) & (x <= high)
        out = np.full(x.shape, -np.inf)
        if inside.any():
            out[inside] = self.raw_logpdf_flat(index[inside], x[inside]) - norm[inside]
        return out if out.ndim else float(out)

    def pdf(self, x: ArrayLike) -> Any:
        """Normalised density."""
        return np.exp(self.logpdf(x))

    def cdf(self, x: ArrayLike) -> Any:
        """Numerical CDF (Gauss-Legendre quadrature, about 1e-12 accurate for smooth densities).

        ``x`` broadcasts with the batch shape.
        """
        x = _real_array(x, "x")
        x_b = np.broadcast_to(x, np.broadcast_shapes(x.shape, self.batch_shape))
        index = np.broadcast_to(np.arange(self._count).reshape(self.batch_shape),
                                x_b.shape)
        out = np.empty(x_b.shape)
        flat_x, flat_index, flat_out = x_b.reshape(-1), index.reshape(-1), out.reshape(-1)
        for element in np.unique(flat_index):
            which = flat_index == element
            edges, log_norm, cdf_edges, _, _, _ = self._table(element)
            xs = np.clip(flat_x[which], edges[0], edges[-1])
            cell = np.clip(np.searchsorted(edges, xs, side="right") - 1, 0, edges.size - 2)
            left = edges[cell]
            partial_step = xs - left
            nodes = left[:, None] + partial_step[:, None] * _GL_NODES[None, :]
            lq = self.raw_logpdf_flat(element, nodes).reshape(nodes.shape)
            partial = np.sum(np.exp(lq - log_norm) * _GL_WEIGHTS[None, :], axis=1) * partial_step
            flat_out[which] = np.clip(cdf_edges[cell] + partial, 0.0, 1.0)
        return out if out.ndim else float(out)

    def kl_divergence_bits(self, prior: Normal | Uniform | None = None) -> Any:
        """``D_KL[target || prior]`` in bits, by quadrature, per element."""
        return self._per_prior("kl_bits", prior, lambda p: self._quadrature(p)[1] / math.log(2.0))

    def _per_prior(self, name, prior, compute):
        """``compute(prior)``, remembered per scalar prior (a target is immutable, and the
        quadrature and the certificate cost milliseconds, far more than coding one sample)."""
        prior = _check_prior(prior)
        key = _scalar_prior_key(prior)
        if key is None:
            return compute(prior)
        if (name, key) not in self._per_prior_values:
            self._per_prior_values[name, key] = compute(prior)
        value = self._per_prior_values[name, key]
        return value.copy() if isinstance(value, np.ndarray) else value  # callers may modify theirs

    # ----------------------------------------------------------------- certified bound

    def log_ratio_max(self, prior: Normal | Uniform | None = None) -> Any:
        """Certified ``sup_z [log q(z) - log p(z)]`` over ``[low, high]``, in nats, per element.

        This is ``log w_max`` of PFR; hybrid coding with width ``M`` uses
        ``log w_max - log M``.

        Raises
        ------
        ValueError
            If none of ``mode``, ``lipschitz``, ``concavity`` was given, or ``logpdf`` returns
            NaN (or -inf under a finite Lipschitz constant) on the grid.
        """
        if self.mode is None and self.lipschitz is None and self.concavity is None:
            raise ValueError(
                "cannot certify w_max: give the target a mode (unimodal log density), a lipschitz or a "
                "concavity bound, "
                "or pass log_ratio_max to encode_general"
            )
        return self._per_prior("log_ratio_max", prior, self._certify)

    def _certify(self, prior):
        """:meth:`log_ratio_max` computed afresh (branch and bound on the grid)."""
        family, loc, scale = _prior_arrays(prior, self.batch_shape)
        first, inverse = self._unique_rows()
        params = self._flat_params()[first]

        def take(arr):
            return _owned(self._flat(arr)[first])

        mode = take(self.mode) if self.mode is not None else np.zeros(first.size)
        lipschitz = take(self.lipschitz) if self.lipschitz is not None else np.full(first.size, np.inf)
        concavity = take(self.concavity) if self.concavity is not None else np.full(first.size, np.inf)
        out = np.empty(first.size)
        _certify_batch(self.logpdf_function, _owned(params), take(self.low), take(self.high),
                       mode, self.mode is not None, _owned(lipschitz), _owned(concavity),
                       _owned(take(family), dtype=np.int64), take(loc), take(scale),
                       _CERTIFY_CELLS, _CERTIFY_DEPTH, _CERTIFY_TOLERANCE,
                       _CERTIFY_MAX_EVALUATIONS, out)
        if np.isnan(out).any():
            raise ValueError("logpdf returned NaN (or -inf despite a finite lipschitz or concavity bound) on the "
                             "support grid")
        if np.isposinf(out).any():
            raise ValueError("logpdf returned +inf on the support: the density must be bounded")
        bound = out[inverse].reshape(self.batch_shape) + _minus_log_prior_constant(family, scale) - self.log_normalizer
        return bound + _MARGIN * (1.0 + np.abs(bound))


def _short(value):
    value = np.asarray(value)
    return repr(float(value)) if value.ndim == 0 else f"array{value.shape}"
