"""One call each way: :func:`compress` a target into bytes, :func:`decompress` them into its sample.

``data = rcc.compress(target, seed, prior=prior)`` runs :func:`rcc.encode_sample`
and :func:`rcc.encode_messages` and wraps the message stream in a small,
checked container that carries everything the receiver cannot know: the batch
shape and method (in the message stream's header), the widths ``M`` and, for
the default index code, its parameter.  ``rcc.decompress(data, seed,
prior=prior)`` returns the sender's samples, bit for bit, in the batch shape.
The receiver passes only what it shares with the sender: the seed, the prior
and any codes other than the defaults.

Container layout (version 1)::

    b"RCZ" | version (1 byte) | flags (1 byte)
    | Zipf parameter (LEB128, 1/256 bits; with the default index code only)
    | widths (see below) | CRC32 (4 bytes) | message stream (rcc.encode_messages)

``flags``: bit 0, the default index code (:class:`rcc.ZipfIndexCode` with
``D`` the mean KL the indices carry, rounded to 1/256 bit); bits 1-2, how
the widths are stored: 0, all 1 (always so for the prior-proposal methods); 1, one width
per event dimension shared by the batch (LEB128: their number, then each);
2, a table of the distinct widths and their counts (LEB128: the number
of distinct widths, then each width and its count) followed by the length
(LEB128) and the bytes of a range-coded symbol per factor.  The CRC32 covers
every container byte before it and a description of the receiver's prior (its
family and parameters), so a corrupted container and a prior other than the
sender's both raise ``ValueError``; the message stream checks itself
(:mod:`rcc.entropy`).
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .coding import (DEFAULT_MAX_CANDIDATES, DEFAULT_TAIL_MASS, EncodedSample, _check_prior, coding_transform,
                     decode_sample, encode_sample)
from .entropy import (_DECODE_ERRORS, _FACTORS_PER_BYTE, _FREE_FACTORS, ConditionedIndexCode, FactorCode, IndexCode,
                      ZipfIndexCode, _bytes_to_words, _constriction, _parse_header, _read_varint, _varint,
                      _words_to_bytes, decode_messages, encode_messages)
from .entropy._checks import _libm
from .targets import Normal, Uniform

__all__ = ["CONTAINER_VERSION", "compress", "decompress"]

#: Version of the container layout written by :func:`compress`.
CONTAINER_VERSION = 1

_MAGIC = b"RCZ"
_FLAG_DEFAULT_CODE = 1
_WIDTHS_UNIT = 0
_WIDTHS_PER_DIM = 1
_WIDTHS_TABLE = 2
_KNOWN_FLAGS = _FLAG_DEFAULT_CODE | (3 << 1)
#: The default Zipf code's ``D`` is stored in steps of 1/_KL_STEPS bit, up to _MAX_KL_BITS.
_KL_STEPS = 256
_MAX_KL_BITS = 1 << 20


def _default_index_kl(enc):
    """``D`` of the default Zipf index code: the mean KL minus the ``log2 M`` of the factors.

    Under the prior's marginal factor code the factors carry a little less
    than ``log2 M``, but on the Gaussian channel this smaller ``D`` still
    gives the shorter streams (measured: 0.3-0.6 bits per message fewer than
    adding ``D_KL[prior || transform]``).
    """
    kl = np.asarray(enc.kl_bits, dtype=np.float64).reshape(-1)
    if kl.size == 0:
        return 0.0
    if enc.method == "hybrid":
        width = np.asarray(enc.width, dtype=np.float64).reshape(kl.size, -1)
        kl = kl - _libm(math.log2, width).sum(axis=1)  # the C library's log2: the same D on every CPU
    value = float(np.mean(np.maximum(kl, 0.0)))
    return min(value, float(_MAX_KL_BITS)) if math.isfinite(value) else 0.0


def _prior_description(prior, transform):
    """Bytes that identify the prior and the coding transform: family, then each parameter's shape and values."""
    out = bytearray()
    for dist in (prior, transform):
        out += type(dist).__name__.encode()
        for name, value in dist._params().items():
            arr = np.ascontiguousarray(value, dtype="<f8")
            out += name.encode() + repr(arr.shape).encode() + arr.tobytes()
    return bytes(out)


def _widths_section(widths, count, dims):
    """``(mode, bytes)`` of the widths, a ``(count, dims)`` int64 array."""
    if (widths == 1).all():
        return _WIDTHS_UNIT, b""
    if count and (widths == widths[0]).all():
        return _WIDTHS_PER_DIM, _varint(dims) + b"".join(_varint(int(w)) for w in widths[0])
    values, symbols, counts = np.unique(widths.reshape(-1), return_inverse=True, return_counts=True)
    out = bytearray(_varint(values.size))
    for value, number in zip(values.tolist(), counts.tolist()):
        out += _varint(value) + _varint(number)
    cons = _constriction()
    encoder = cons.stream.queue.RangeEncoder()
    model = cons.stream.model.Categorical(counts / counts.sum(), perfect=False)
    encoder.encode(symbols.astype(np.int32), model)
    coded = _words_to_bytes(encoder.get_compressed())
    return _WIDTHS_TABLE, bytes(out) + _varint(len(coded)) + coded


def compress(target: Any, seed: int, *, prior: Normal | Uniform | None = None, width: ArrayLike | None = None,
             method: str = "hybrid", tail_mass: float = DEFAULT_TAIL_MASS,
             max_candidates: int = DEFAULT_MAX_CANDIDATES, num_candidates: int | None = None,
             index_code: IndexCode | ConditionedIndexCode | None = None, factor_code: FactorCode | None = None,
             factor_context: ArrayLike | None = None, rng: np.random.Generator | int | None = None,
             num_threads: int | None = None, transform: str | Normal | Uniform | None = None,
             stream_offset: int = 0, return_encoded: bool = False) -> bytes | tuple[bytes, EncodedSample]:
    """Encode an exact sample of ``target`` and write it as self-describing, checked bytes.

    Parameters
    ----------
    target : rcc.Normal, rcc.TruncatedNormal, rcc.Uniform, rcc.Product or rcc.GeneralTarget
        Any target :func:`rcc.encode_sample` takes; array parameters form a batch.
    seed : int
        Shared seed in ``[0, 2**64)``.
    prior : rcc.Normal or rcc.Uniform, optional
        Shared prior, ``Normal(0, 1)`` by default.
    width, method, tail_mass, max_candidates, num_candidates, rng, num_threads, transform, stream_offset
        As for :func:`rcc.encode_sample`.  The widths travel in the bytes, so
        ``width="adaptive"`` needs nothing more from the receiver.
    index_code : IndexCode or ConditionedIndexCode, optional
        By default a :class:`rcc.ZipfIndexCode` for the mean KL the indices
        carry, whose parameter travels in the bytes; another code must be
        given to :func:`decompress` too.
    factor_code, factor_context : optional
        As for :func:`rcc.encode_messages`; the receiver needs the same ones.
    return_encoded : bool, optional
        Also return the :class:`rcc.EncodedSample`.

    Returns
    -------
    bytes, or (bytes, EncodedSample)

    Examples
    --------
    >>> import numpy as np, rcc
    >>> target = rcc.Normal(np.array([[0.3, -1.2], [0.8, 0.0]]), 0.01)
    >>> data = rcc.compress(target, seed=5)
    >>> samples = rcc.decompress(data, seed=5)
    >>> samples.shape, bool((samples == rcc.encode_sample(target, 5).sample).all())
    ((2, 2), True)
    """
    prior = _check_prior(prior)
    resolved = coding_transform(prior, transform)  # what the checksum and the factor code describe
    enc = encode_sample(target, seed, prior=prior, width=width, method=method, tail_mass=tail_mass,
                        max_candidates=max_candidates, num_candidates=num_candidates, rng=rng,
                        num_threads=num_threads, transform=transform, stream_offset=stream_offset)
    flags = 0
    header = bytearray()
    if index_code is None:
        kl_steps = int(round(_default_index_kl(enc) * _KL_STEPS))
        index_code = ZipfIndexCode(kl_steps / _KL_STEPS)
        flags |= _FLAG_DEFAULT_CODE
        header += _varint(kl_steps)
    stream = encode_messages(enc, seed, index_code=index_code, factor_code=factor_code,
                             factor_context=factor_context, prior=prior, transform=resolved,
                             stream_offset=stream_offset)
    parsed = _parse_header(stream)
    count, dims = parsed["count"], parsed["dims"] if parsed["event"] else 1
    widths = np.ascontiguousarray(np.broadcast_to(np.asarray(enc.width, dtype=np.int64),
                                                  np.shape(enc.factor))).reshape(count, dims)
    mode, section = _widths_section(widths, count, dims)
    flags |= mode << 1
    prefix = _MAGIC + bytes([CONTAINER_VERSION, flags]) + bytes(header) + section
    check = zlib.crc32(_prior_description(prior, resolved), zlib.crc32(prefix))
    data = prefix + check.to_bytes(4, "little") + stream
    return (data, enc) if return_encoded else data


def _read_widths(data, pos, mode):
    """Parse the widths section; returns ``(description, pos)`` (decoded after the checks)."""
    if mode == _WIDTHS_UNIT:
        return None, pos
    if mode == _WIDTHS_PER_DIM:
        number, pos = _read_varint(data, pos)
        if number > len(data):
            raise ValueError("corrupt container (number of widths)")
        values = []
        for _ in range(number):
            value, pos = _read_varint(data, pos)
            values.append(value)
        return ("per_dim", values), pos
    if mode != _WIDTHS_TABLE:
        raise ValueError("corrupt container (unknown width layout)")
    distinct, pos = _read_varint(data, pos)
    if distinct < 2 or distinct > len(data):
        raise ValueError("corrupt container (width table size)")
    values, counts = [], []
    for _ in range(distinct):
        value, pos = _read_varint(data, pos)
        number, pos = _read_varint(data, pos)
        values.append(value)
        counts.append(number)
    length, pos = _read_varint(data, pos)
    if pos + length > len(data):
        raise ValueError("container truncated inside its width table")
    return ("table", values, counts, data[pos : pos + length]), pos + length


def decompress(data: bytes, seed: int, *, prior: Normal | Uniform | None = None,
               index_code: IndexCode | ConditionedIndexCode | None = None, factor_code: FactorCode | None = None,
               factor_context: ArrayLike | None = None, num_threads: int | None = None,
               transform: str | Normal | Uniform | None = None, stream_offset: int = 0) -> np.ndarray:
    """Decode :func:`compress` output into the sender's samples, bit for bit, in the batch shape.

    Parameters
    ----------
    data : bytes
    seed : int
        The sender's seed.
    prior : rcc.Normal or rcc.Uniform, optional
        The sender's prior, ``Normal(0, 1)`` by default.
    index_code, factor_code, factor_context : optional
        Only if the sender passed codes other than the defaults: the same ones.
    num_threads : int, optional
    transform : None, "prior", rcc.Normal or rcc.Uniform, optional
        The sender's coding transform (the default is derived from the prior).
    stream_offset : int, optional
        The sender's ``stream_offset`` (default 0).

    Returns
    -------
    float or ndarray of float64
        Shape ``batch_shape`` (+ event shape for product targets).

    Raises
    ------
    ValueError
        If the bytes are truncated, corrupted or were written with another
        seed, prior or code.
    """
    prior = _check_prior(prior)
    resolved = coding_transform(prior, transform)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < len(_MAGIC) + 2 or data[: len(_MAGIC)] != _MAGIC:
        raise ValueError("not an rcc.compress container (bad magic bytes or too short)")
    version, flags = data[3], data[4]
    if version != CONTAINER_VERSION:
        raise ValueError(f"unsupported container version {version} (this rcc reads version {CONTAINER_VERSION})")
    if flags & ~_KNOWN_FLAGS:
        raise ValueError(f"corrupt container (unknown flags {flags:#x})")
    pos = 5
    kl_steps = None
    if flags & _FLAG_DEFAULT_CODE:
        kl_steps, pos = _read_varint(data, pos)
        if kl_steps > _MAX_KL_BITS * _KL_STEPS:
            raise ValueError("corrupt container (Zipf parameter out of range)")
    mode = (flags >> 1) & 3
    layout, pos = _read_widths(data, pos, mode)
    _check_container(data, pos, prior, resolved)
    stream = data[pos + 4 :]
    header = _parse_header(stream)
    if not header["intact"]:
        raise ValueError("the message stream inside the container is truncated or corrupted")
    count, event = header["count"], header["event"]
    dims = header["dims"] if event else 1
    if kl_steps is not None:
        if index_code is not None:
            raise ValueError("these bytes use the default index code; do not pass index_code")
        index_code = ZipfIndexCode(kl_steps / _KL_STEPS)
    elif index_code is None:
        raise ValueError("these bytes were written with a custom index code: pass the sender's index_code")
    elif not isinstance(index_code, (IndexCode, ConditionedIndexCode)):
        raise TypeError(f"index_code must be an rcc index code, got {type(index_code).__name__}")
    if count * dims > _FREE_FACTORS + _FACTORS_PER_BYTE * len(data):
        raise ValueError(f"the container claims {count} x {dims} samples, more than {len(data)} bytes can hold")
    widths = _widths(layout, count, dims, header["method"])
    flat_shape = (count, dims) if event else (count,)
    index, factor = decode_messages(stream, seed=seed, index_code=index_code,
                                    width=None if widths is None else widths.reshape(flat_shape),
                                    factor_code=factor_code, factor_context=factor_context, flat=False,
                                    prior=prior, transform=resolved, stream_offset=stream_offset)
    shape = header["batch_shape"] + ((dims,) if event else ())
    return decode_sample(index, factor, seed, prior=prior, method=header["method"],
                         width=None if widths is None else widths.reshape(shape), num_threads=num_threads,
                         transform=transform if header["method"] == "hybrid" else None,
                         stream_offset=stream_offset)


def _check_container(data, pos, prior, transform):
    if len(data) < pos + 4:
        raise ValueError("container truncated inside its header")
    check = zlib.crc32(_prior_description(prior, transform), zlib.crc32(data[:pos]))
    if check != int.from_bytes(data[pos : pos + 4], "little"):
        raise ValueError(
            "container checksum mismatch: the bytes are corrupted, or the prior or transform differs from the sender's"
        )


def _widths(layout, count, dims, method):
    """The ``(count, dims)`` widths, validated against the stream's header (None: unit widths)."""
    if layout is None:
        return np.ones((count, dims), dtype=np.int64) if method == "hybrid" else None
    if method != "hybrid":
        raise ValueError("corrupt container (widths for a prior-proposal stream)")
    if layout[0] == "per_dim":
        per_dim = layout[1]
        if len(per_dim) != dims:
            raise ValueError(f"corrupt container ({len(per_dim)} widths for an event of size {dims})")
        widths = np.asarray(per_dim, dtype=object)
        if any(not 1 <= w < 2**63 for w in per_dim):
            raise ValueError("corrupt container (a width outside [1, 2**63))")
        return np.broadcast_to(widths.astype(np.int64), (count, dims))
    _, values, counts, coded = layout
    if any(not 1 <= v < 2**63 for v in values) or sum(counts) != count * dims or min(counts) < 1:
        raise ValueError("corrupt container (width table does not match the message stream)")
    if len(values) > count * dims:
        raise ValueError("corrupt container (width table larger than the batch)")
    cons = _constriction()
    try:
        probabilities = np.asarray(counts, dtype=np.float64)
        model = cons.stream.model.Categorical(probabilities / probabilities.sum(), perfect=False)
        decoder = cons.stream.queue.RangeDecoder(_bytes_to_words(coded))
        symbols = np.asarray(decoder.decode(model, count * dims), dtype=np.int64)
    except _DECODE_ERRORS as exc:
        raise ValueError(f"corrupt container (width symbols do not decode: {exc})") from None
    if np.bincount(symbols, minlength=len(values)).tolist() != list(counts):
        raise ValueError("corrupt container (decoded widths do not match their counts)")
    return np.asarray(values, dtype=np.int64)[symbols].reshape(count, dims)
