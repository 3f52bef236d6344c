"""Argument validation and array plumbing shared by every coder.

Plain-Python checks that raise ``TypeError``/``ValueError`` naming the
argument and the fix, and the helpers that hand arrays to the numba kernels
(read-only, contiguous, one signature per kernel).  Validation lives here
once so that :mod:`rcc.coding`, :mod:`rcc.general` and :mod:`rcc.samplers`
reject bad input with the same words.
"""

from __future__ import annotations

import numbers

import numba
import numpy as np

from . import kernels
from .encoded import METHODS
from .targets import Distribution, Normal, Uniform, _convert_scipy
from .targets.distributions import _prior_arrays  # noqa: F401 (the coders import it from here)

__all__: list[str] = []  # internal helpers only; the public API is rcc.coding's

_INT64_MAX = 2**63 - 1


_CHUNK = 1 << 16


_SERIAL_BELOW = 2048


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
    if type(prior) is Normal or type(prior) is Uniform:  # the common case, without the ABC checks
        return prior
    prior = _convert_scipy(prior)  # frozen scipy.stats norm / uniform
    if not isinstance(prior, (Normal, Uniform)):
        raise TypeError(f"prior must be rcc.Normal or rcc.Uniform (or scipy.stats.norm / uniform), "
                        f"got {type(prior).__name__}")
    return prior


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
    if value > _INT64_MAX:
        raise ValueError(f"{name} must be < 2**63 (an int64), got {int(value)}")
    return int(value)


def _check_width_array(width, shape) -> np.ndarray:
    """Validate an explicit integer width (scalar or array) and broadcast it."""
    arr = _as_int64(width, "width", "a positive integer or array of them")
    if (arr < 1).any():
        raise ValueError(f"width must be >= 1, got {arr[arr < 1].ravel()[:3]}")
    try:
        return np.broadcast_to(arr.astype(np.int64), shape)
    except ValueError as exc:
        raise ValueError(f"width of shape {arr.shape} does not broadcast to {shape}") from exc


def _as_int64(value, name, what) -> np.ndarray:
    """``value`` as an int64 array; values beyond int64 raise ``ValueError`` showing them as given.

    Python integers too large for int64 would become an object array (or wrap
    when cast); unsigned values above ``2**63 - 1`` would wrap; floats must be
    integer-valued and inside the int64 range.
    """
    try:
        arr = np.asarray(value)
    except OverflowError:
        arr = np.asarray(value, dtype=object)
    if arr.dtype == object:
        flat = arr.ravel().tolist()
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) for v in flat):
            raise TypeError(f"{name} must be {what}, got {value!r}")
        big = [int(v) for v in flat if not -_INT64_MAX - 1 <= int(v) <= _INT64_MAX]
        if big:
            raise ValueError(f"{name} must fit in int64 (|value| < 2**63), got {big[0]}")
        return np.array(flat, dtype=np.int64).reshape(arr.shape)
    if arr.dtype == bool or arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be {what}, got {value!r}")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or (arr != np.round(arr)).any():
            raise TypeError(f"{name} must be {what} (integer-valued), got {value!r}")
        if arr.size and (np.abs(arr) >= 2.0**63).any():
            raise ValueError(f"{name} must fit in int64 (|value| < 2**63), got {arr[np.abs(arr) >= 2.0**63].ravel()[0]!r}")
    if arr.dtype.kind == "u" and arr.size and arr.max() > _INT64_MAX:
        raise ValueError(f"{name} must fit in int64 (< 2**63), got {int(arr.max())}")
    return arr.astype(np.int64)


def _integer_array(value, name) -> np.ndarray:
    return _as_int64(value, name, "an integer or an array of integers")


def _is_unit_width(width):
    """Prior-proposal methods accept ``width=None`` or widths that are all 1."""
    if width is None:
        return True
    if isinstance(width, str):
        return False
    arr = np.asarray(width)
    return arr.dtype.kind in "iuf" and bool((arr == 1).all())


def _check_target(target) -> Distribution:
    target = _convert_scipy(target)  # frozen scipy.stats norm / truncnorm / uniform
    if not isinstance(target, Distribution):
        raise TypeError(
            "target must be an rcc distribution (rcc.Normal, rcc.TruncatedNormal, rcc.Uniform "
            f"or rcc.Product), got {type(target).__name__}"
        )
    return target


def _read_only(arr):
    """A read-only view of ``arr`` (O(1)), as every kernel input is passed.

    numba compiles a separate version of a kernel for read-only and writable
    arrays (tens of seconds each for the batch kernels); inputs may arrive
    either way (``np.broadcast_to`` views are read-only), so they are all
    passed read-only and each kernel keeps one signature.
    """
    view = arr.view()
    view.flags.writeable = False
    return view


def _flat(value, shape, count, dims, dtype=np.float64):
    """``value`` broadcast to ``shape`` as a read-only, C-contiguous (count, dims) array."""
    arr = np.asarray(value)
    if arr.shape == shape:
        return _read_only(np.ascontiguousarray(arr, dtype=dtype).reshape(count, dims))
    if arr.ndim == 0:
        return _read_only(np.full((count, dims), arr, dtype=dtype))
    return _read_only(np.ascontiguousarray(np.broadcast_to(arr, shape), dtype=dtype).reshape(count, dims))


def _check_prior_support(prior, spec, prior_loc, prior_scale, what="prior", has_batch=True):
    if isinstance(prior, Uniform):
        outside = (spec["low"] < prior_loc) | (spec["high"] > prior_loc + prior_scale)
        if np.any(outside):
            first = int(np.flatnonzero(np.ravel(outside))[0])
            where = f" (first: flat index {first})" if has_batch else ""
            raise ValueError(
                f"the target's support must lie inside the Uniform {what}'s support [low, high]; "
                f"{int(np.sum(outside))} element(s) do not{where}"
            )


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

        Both twins run the same per-block function; the serial one only saves
        waking the thread pool, which costs more than a small batch.
        """
        return getattr(kernels, name + "_serial" if count < _SERIAL_BELOW else name)


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
