"""Counter-based shared randomness (:ref:`randomness-counter`).

Sender and receiver must agree on the uniform dither ``U(seed, stream, n, d)`` of
candidate ``n`` (dimension ``d``) of batch element ``stream``.  Instead of a
sequential generator we hash the tuple ``(domain, seed, stream, n, d)`` with a
chain of splitmix64 finalisers (Steele, Lea & Flood 2014).  This gives

* O(1) random access: the receiver computes ``U_N`` without generating
  ``U_1 .. U_{N-1}``;
* bit-identical values on every platform and thread count, because only 64-bit
  integer arithmetic and one exact scaling by ``2**-53`` are involved;
* functions small enough to be inlined in the numba race kernels.

The sender's *private* randomness (the exponential arrival times of the race)
uses the same hash under a different domain tag and a private key, so it is
independent of the shared dither.  Nothing here touches global random state
(Scientific Python SPEC 7).
"""

from __future__ import annotations

import numbers

import numba
import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "MAX_SEED",
    "check_seed",
    "check_stream_offset",
    "private_key",
    "shared_uniform",
    "private_exponential",
]

MAX_SEED = 2**64 - 1

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_TWO_M53 = 2.0**-53

# Domain tags keep the streams of different uses apart.
DOMAIN_SHARED = np.uint64(0x5348415245445F55)  # "SHARED_U"
DOMAIN_PRIVATE = np.uint64(0x505249565F455850)  # "PRIV_EXP"
DOMAIN_KEY = np.uint64(0x505249565F4B4559)  # "PRIV_KEY"


@numba.njit(cache=True, inline="always")
def _mix64(z):
    z = (z ^ (z >> _S30)) * _MUL1
    z = (z ^ (z >> _S27)) * _MUL2
    return z ^ (z >> _S31)


@numba.njit(cache=True, inline="always")
def hash_counter(domain, key, stream, index, dim):
    """64-bit hash of a (domain, key, stream, index, dim) tuple of uint64."""
    h = _mix64(domain + _GAMMA)
    h = _mix64((h ^ key) + _GAMMA)
    h = _mix64((h ^ stream) + _GAMMA)
    h = _mix64((h ^ index) + _GAMMA)
    h = _mix64((h ^ dim) + _GAMMA)
    return h


@numba.njit(cache=True, inline="always")
def uniform_centered(seed, stream, index, dim):
    """Shared dither U in [-1/2, 1/2) on the grid 2**-53 (all arguments uint64)."""
    h = hash_counter(DOMAIN_SHARED, seed, stream, index, dim)
    return np.float64(h >> _S11) * _TWO_M53 - 0.5


@numba.njit(cache=True, inline="always")
def private_uniform(key, stream, index):
    """Private uniform in (0, 1] on the grid 2**-53 (never zero)."""
    h = hash_counter(DOMAIN_PRIVATE, key, stream, index, np.uint64(0))
    return (np.float64(h >> _S11) + 1.0) * _TWO_M53


@numba.njit(cache=True, inline="always")
def exponential(key, stream, index):
    """Private Exp(1) variate ``-log V`` with ``V = private_uniform(...)`` (never infinite)."""
    return -np.log(private_uniform(key, stream, index))


# --- counter hashes with the per-stream part hoisted (used by rcc.kernels) ---------------
# ``rcc.random.hash_counter`` mixes (domain, key, stream, index, dim) in five
# rounds; the first three are the same for every candidate of a race, so the
# race computes them once (``_stream_prefix``) and two rounds per candidate.
# The values are bit-identical to ``uniform_centered`` and ``private_uniform``.


@numba.njit(cache=True, error_model="numpy", inline="always")
def _stream_prefix(domain, key, stream):
    """The first three rounds of ``hash_counter(domain, key, stream, ., .)``."""
    h = _mix64(domain + _GAMMA)
    h = _mix64((h ^ key) + _GAMMA)
    return _mix64((h ^ stream) + _GAMMA)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _shared_dither(prefix, n, j):
    """``uniform_centered(seed, stream, n, j)`` from ``_stream_prefix(DOMAIN_SHARED, seed, stream)``."""
    h = _mix64((prefix ^ np.uint64(n)) + _GAMMA)
    h = _mix64((h ^ np.uint64(j)) + _GAMMA)
    return np.float64(h >> _S11) * _TWO_M53 - 0.5


@numba.njit(cache=True, error_model="numpy", inline="always")
def _private_uniform(prefix, n):
    """``private_uniform(key, stream, n)`` from ``_stream_prefix(DOMAIN_PRIVATE, key, stream)``."""
    h = _mix64((prefix ^ np.uint64(n)) + _GAMMA)
    h = _mix64(h + _GAMMA)  # dim 0
    return (np.float64(h >> _S11) + 1.0) * _TWO_M53


@numba.njit(cache=True)
def _uniform_array(seed, stream, index, dim, out):
    for i in range(out.size):
        out[i] = uniform_centered(seed, stream[i], index[i], dim[i])


@numba.njit(cache=True)
def _exponential_array(key, stream, index, out):
    for i in range(out.size):
        out[i] = exponential(key, stream[i], index[i])


@numba.njit(cache=True)
def _derive_key(seed):
    return hash_counter(DOMAIN_KEY, seed, np.uint64(0), np.uint64(0), np.uint64(0))


def check_seed(seed: int | np.integer, name: str = "seed") -> np.uint64:
    """Return ``seed`` as ``np.uint64`` or raise a clear error.

    Seeds are integers in ``[0, 2**64)``; bools, floats and negative numbers
    are rejected rather than silently converted.
    """
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name} must be a non-negative integer, got {type(seed).__name__} {seed!r}")
    seed = int(seed)
    if seed < 0 or seed > MAX_SEED:
        raise ValueError(f"{name} must be in [0, 2**64), got {seed}")
    return np.uint64(seed)


def check_stream_offset(stream_offset, count):
    """Return ``stream_offset`` as ``np.uint64`` for a batch of ``count`` streams, or raise.

    Element ``i`` of a batch uses stream ``stream_offset + i``; streams are
    64-bit, so the offset must be an integer with
    ``0 <= stream_offset`` and ``stream_offset + count <= 2**64``.
    """
    if isinstance(stream_offset, (bool, np.bool_)) or not isinstance(stream_offset, numbers.Integral):
        raise TypeError(f"stream_offset must be a non-negative integer, got {type(stream_offset).__name__} "
                        f"{stream_offset!r}")
    stream_offset = int(stream_offset)
    if stream_offset < 0:
        raise ValueError(f"stream_offset must be >= 0, got {stream_offset}")
    if stream_offset + int(count) > MAX_SEED + 1:
        raise ValueError(
            f"stream_offset={stream_offset} leaves no room for {count} streams: element i uses stream "
            "stream_offset + i, which must stay below 2**64"
        )
    return np.uint64(stream_offset)


def private_key(seed: int | np.integer, rng: int | np.random.Generator | np.random.SeedSequence | None = None) -> np.uint64:
    """The sender's private key for the race's exponential arrival times.

    With ``rng=None`` the key is a hash of the seed (runs reproduce exactly).
    Otherwise ``rng`` is anything ``numpy.random.default_rng`` accepts and one
    64-bit word is drawn from it; the decoder never needs this key.

    The key is one word per call; the arrival times of batch element ``i``
    are hashed from ``(key, stream_offset + i)``.  So a batch encoded in
    parts equals one call when every part gets the same key: ``rng=None``,
    or the same integer ``rng``.  A ``Generator`` passed to each part draws a
    new key each time, and the parts then differ from one call (they are
    still exact samples).
    """
    seed = check_seed(seed)
    if rng is None:
        return np.uint64(_derive_key(seed))
    generator = np.random.default_rng(rng)
    return np.uint64(generator.integers(0, 2**64, dtype=np.uint64))


def _as_uint64(values, name):
    arr = np.asarray(values)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, got dtype {arr.dtype}")
    if arr.dtype.kind == "i" and arr.size and arr.min() < 0:
        raise ValueError(f"{name} must be non-negative")
    return arr.astype(np.uint64)


def shared_uniform(seed: int | np.integer, stream: ArrayLike, index: ArrayLike, dim: ArrayLike = 0) -> float | np.ndarray:
    """Shared dither ``U(seed, stream, index, dim)`` in ``[-1/2, 1/2)``.

    Parameters
    ----------
    seed : int
        Shared seed in ``[0, 2**64)``.
    stream, index, dim : int or array_like of int
        Batch element, candidate index (from 1) and event dimension; broadcast
        against each other.

    Returns
    -------
    numpy.ndarray or float
        The dither values, ``float64`` on the grid ``2**-53``.
    """
    key = check_seed(seed)
    s, n, d = np.broadcast_arrays(
        _as_uint64(stream, "stream"), _as_uint64(index, "index"), _as_uint64(dim, "dim")
    )
    out = np.empty(s.shape, dtype=np.float64)
    _uniform_array(key, s.ravel(), n.ravel(), d.ravel(), out.reshape(-1))
    return float(out) if out.ndim == 0 else out


def private_exponential(key: int | np.integer, stream: ArrayLike, index: ArrayLike) -> float | np.ndarray:
    """Private Exp(1) variates for ``(key, stream, index)``; see :func:`private_key`."""
    key = check_seed(key, "key")
    s, n = np.broadcast_arrays(_as_uint64(stream, "stream"), _as_uint64(index, "index"))
    out = np.empty(s.shape, dtype=np.float64)
    _exponential_array(key, s.ravel(), n.ravel(), out.reshape(-1))
    return float(out) if out.ndim == 0 else out
