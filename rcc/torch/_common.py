"""Argument checks and constants shared by the torch channels.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch


__all__ = []

_LN2 = math.log(2.0)


_MAX_SEED = 2**64 - 1


_HALF_DTYPES = (torch.float16, torch.bfloat16)


# dtype codes of the one-byte bitstream header
_DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}


_CODE_DTYPES = {v: k for k, v in _DTYPE_CODES.items()}


def _check_tensor(x, name):
    """``x`` must be a floating torch tensor with finite values."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
    if x.numel() and not bool(torch.isfinite(x.detach()).all()):
        raise ValueError(f"{name} must be finite (it contains NaN or inf)")
    return x


def _compute_dtype(dtype):
    """Half precisions are computed in float32."""
    return torch.float32 if dtype in _HALF_DTYPES else dtype


def _check_alpha(alpha, like, name="alpha") -> torch.Tensor:
    """Return ``alpha`` as a tensor broadcastable to ``like``.

    The tensor has ``like``'s device and computation dtype (float32 for half
    precisions, else ``like.dtype``) and is checked after the conversion.
    """
    dtype = _compute_dtype(like.dtype)
    if isinstance(alpha, (bool, np.bool_)):
        raise TypeError(f"{name} must be a real number or a tensor, got bool")
    if isinstance(alpha, numbers.Real):
        value = float(alpha)
        if value < 0:
            raise ValueError(f"{name} must be non-negative, got {value}")
        out = torch.tensor(value, dtype=dtype, device=like.device)
        if not bool(torch.isfinite(out)):
            raise ValueError(f"{name} must be finite in {dtype}, got {value}")
        return out
    if isinstance(alpha, torch.Tensor):
        if alpha.dtype == torch.bool or alpha.is_complex():
            raise TypeError(f"{name} must have a real dtype, got {alpha.dtype}")
        out = alpha.to(dtype=dtype, device=like.device)
        detached = out.detach()
        if detached.numel():
            if not bool(torch.isfinite(detached).all()):
                raise ValueError(f"{name} must be finite (it contains NaN or inf)")
            if bool((detached < 0).any()):
                raise ValueError(f"{name} must be non-negative")
        try:
            shape = torch.broadcast_shapes(alpha.shape, like.shape)
        except RuntimeError:
            shape = None
        if shape != like.shape:
            raise ValueError(
                f"{name} of shape {tuple(alpha.shape)} does not broadcast to the input "
                f"shape {tuple(like.shape)}"
            )
        return out
    raise TypeError(f"{name} must be a real number or a torch.Tensor, got {type(alpha).__name__}")


def _check_eps(eps):
    if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, numbers.Real):
        raise TypeError(f"eps must be a real number, got {type(eps).__name__}")
    eps = float(eps)
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a positive finite number, got {eps}")
    return eps


def _check_seed(seed, name="seed"):
    """Seeds are Python/numpy integers in ``[0, 2**64)`` (as in :mod:`rcc.random`)."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name} must be a non-negative integer, got {type(seed).__name__} {seed!r}")
    seed = int(seed)
    if seed < 0 or seed > _MAX_SEED:
        raise ValueError(f"{name} must be in [0, 2**64), got {seed}")
    return seed


def _check_shape(shape, name="shape") -> torch.Size:
    if isinstance(shape, numbers.Integral) and not isinstance(shape, (bool, np.bool_)):
        shape = (shape,)
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"{name} must be a tuple of non-negative integers, got {shape!r}") from None
    for d in dims:
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, numbers.Integral):
            raise TypeError(f"{name} must be a tuple of non-negative integers, got {shape!r}")
        if d < 0:
            raise ValueError(f"{name} must contain non-negative integers, got {shape!r}")
    return torch.Size(int(d) for d in dims)


def _check_positive_real(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive real number, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return value


def _constriction():
    import constriction

    return constriction


def _keeps_torch_threads(method):
    """Run ``method`` and then restore torch's intra-op thread count.

    rcc's parallel numba kernels run on the OpenMP runtime torch loaded, and launching them
    sets that runtime's thread count, which is also torch's: after one coding call a model
    that trains with ``torch.set_num_threads(1)`` would run its ops on every core.
    """
    import functools

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        threads = torch.get_num_threads()
        try:
            return method(*args, **kwargs)
        finally:
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)

    return wrapper
