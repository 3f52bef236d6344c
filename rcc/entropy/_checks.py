"""Argument and file checks shared by the message codes (private).

Integers and reals from users, and JSON files of saved codes, are validated here
once, so every code reports bad input with the same ``ValueError``/``TypeError``.
"""

from __future__ import annotations

import json
import math
import numbers
import os

import numpy as np

from ..coding import _as_int64

__all__: list[str] = []


_LN2 = math.log(2.0)
_INT64_MAX = 2**63 - 1


def _libm(function, x):
    """``function`` (a scalar ``math`` function) applied to each element of ``x``, as float64.

    Quantities that an encoder and a decoder both compute must not depend on the CPU:
    numpy's (and torch's) vectorised ``exp``/``log``/``log2``/``expm1``/``power`` take
    SIMD paths chosen at run time (AVX2, AVX-512) that round differently in the last
    bit, whereas the C library's double functions that :mod:`math` calls give the same
    result on every CPU.
    """
    arr = np.asarray(x, dtype=np.float64)
    flat = [function(v) for v in arr.reshape(-1).tolist()]
    return np.array(flat, dtype=np.float64).reshape(arr.shape)


def _log2(value):
    """``math.log2`` with ``log2(0) = -inf`` (as numpy has it), for :func:`_libm`."""
    return math.log2(value) if value > 0.0 else -math.inf


def _check_int(value, name, minimum):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if int(value) > _INT64_MAX:
        raise ValueError(f"{name} must be < 2**63 (an int64), got {int(value)}")
    return int(value)


def _check_real(value, name, low=-math.inf, high=math.inf, low_open=False):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < low or value > high or (low_open and value == low):
        bound = f"> {low}" if low_open else f">= {low}"
        raise ValueError(f"{name} must be finite and {bound} (and <= {high}), got {value}")
    return value


def _int_array(values, name, minimum=None):
    arr = _as_int64(values, name, "integers")
    if minimum is not None and arr.size and arr.min() < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {arr[arr < minimum].ravel()[:3]}")
    return arr


def _normalise(weights):
    weights = np.asarray(weights, dtype=np.float64)
    weights = np.where(np.isfinite(weights) & (weights > 0), weights, 0.0)
    total = weights.sum(axis=-1, keepdims=True)
    uniform = np.full_like(weights, 1.0 / weights.shape[-1])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, weights / np.where(total > 0, total, 1.0), uniform)


#: Saved codes are small (a head table of at most 2**16 counts): larger files are not read.
_MAX_CODE_FILE_BYTES = 64 << 20
#: Nesting deeper than this is not a saved code (a conditioned code nests codes two levels down).
_MAX_JSON_DEPTH = 16


def _json_depth(value, limit):
    """Nesting depth of parsed JSON, without recursion (stops counting at ``limit + 1``)."""
    stack = [(value, 1)]
    deepest = 0
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, (dict, list)))
    return deepest


def _read_json(path):
    """Parse a saved code's JSON; malformed, oversized or deeply nested files raise ``ValueError``."""
    name = os.fspath(path)
    if os.path.getsize(name) > _MAX_CODE_FILE_BYTES:
        raise ValueError(f"{name!r} is larger than {_MAX_CODE_FILE_BYTES} bytes: not a saved rcc code")
    try:
        with open(name, encoding="utf-8") as handle:
            data = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ValueError(f"{name!r} is not a valid rcc code JSON file: {reason}") from None
    if _json_depth(data, _MAX_JSON_DEPTH) > _MAX_JSON_DEPTH:
        raise ValueError(f"{name!r} is not a saved rcc code: JSON nested more than {_MAX_JSON_DEPTH} levels")
    return data


def _load_code(path, build):
    """``build(parsed JSON)``, with every problem of the content reported as ``ValueError`` naming the file."""
    data = _read_json(path)
    try:
        return build(data)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValueError(f"{os.fspath(path)!r}: {exc}") from None


def _to_factor_shape(arr, count, dims, event, batch_shape, name):
    """``arr`` broadcast to the factors as a C-contiguous ``(count, dims)`` array.

    It may broadcast against the batch (+ event) shape or the flat ``(count[, dims])`` one.
    """
    shapes = [(count, dims) if event else (count,)]
    if batch_shape is not None:
        shapes.insert(0, tuple(batch_shape) + ((dims,) if event else ()))
    for shape in shapes:
        if arr.ndim <= len(shape):
            try:
                return np.ascontiguousarray(np.broadcast_to(arr, shape).reshape(count, dims))
            except ValueError:
                continue
    raise ValueError(f"{name} of shape {arr.shape} does not broadcast to the messages' factor shape {shapes[0]}")
