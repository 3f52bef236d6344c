"""Bitstreams of messages: :func:`encode_messages`, :func:`decode_messages`, :func:`message_bits`.

:func:`encode_messages` / :func:`decode_messages` write and read a
range-coded stream (``constriction``) with a small header (magic, version,
batch shape, a check of the seed/codes/widths and a CRC32 of the header and
payload), so that truncated, corrupted or mismatched streams raise
``ValueError`` instead of decoding to wrong integers.  :func:`message_bits` gives
the ideal information content of each message.

Stream layout (version 2), all multi-byte header fields little-endian::

    b"RCC" | version (1 byte) | flags (1 byte) | batch rank r (1 byte)
    | r batch dimensions (LEB128 each) | event size (LEB128)
    | context CRC32 (4 bytes) | stream CRC32 (4 bytes) | payload

``flags`` holds the method (bits 0-1), whether the factor has an event axis
(bit 2) and whether a :class:`~rcc.entropy.ConditionedIndexCode` was used (bit 3).  The
batch shape's product is the message count.  The context CRC covers the seed,
the method, both codes, the count, the event size, the widths and a non-zero
stream offset; the stream CRC32 covers every header byte before it and the
payload, so no header field is used before it is checked.  A reader that is
not told the count accepts at most ``2**20 + 32 * len(data)`` factors from a
header (a larger claim is rejected before anything is allocated).  The header
takes 14-17 bytes for a flat batch of up to 2**21 messages.  Version 1 streams
(a count instead of the batch shape) are still read.  The payload is the range coder's 32-bit words, written
big-endian, with up to three trailing zero bytes dropped (restored on
reading).  Symbols are grouped so that every group is coded with one
vectorised call: all head symbols of the indices, then the escapes' buckets,
sub-buckets and low bits, then the factors (each group in message order).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from ..coding import EncodedSample, METHODS
from ..random import check_seed, check_stream_offset
from ..targets import Normal, Uniform
from ._checks import _check_int, _INT64_MAX, _int_array, _to_factor_shape
from .conditioned import ConditionedIndexCode
from .factor_codes import (_check_factor_code, _check_marginal_widths, _decode_factors_first, _decode_factors_given_dither,
                           _encode_factors_first, _encode_factors_given_dither, _factor_bits, _factor_context,
                           _factor_first_bits, _lowest_factor, FactorCode, UniformFactorCode)
from .index_codes import _decode_indices, _encode_indices, IndexCode
from .streams import _bytes_to_words, _constriction, _read_varint, _varint, _words_to_bytes

__all__ = [
    "STREAM_VERSION",
    "encode_messages",
    "decode_messages",
    "MessageBits",
    "message_bits",
]


#: Version of the bitstream layout written by :func:`encode_messages` (1 is still read).
STREAM_VERSION = 2
_MAGIC = b"RCC"
_METHOD_CODES = {name: i for i, name in enumerate(METHODS)}
_FLAG_EVENT = 4
_FLAG_CONDITIONED = 8
_KNOWN_FLAGS = 3 | _FLAG_EVENT | _FLAG_CONDITIONED
_MAX_RANK = 32  # numpy's limit on array dimensions is 64; batches of more are not plausible
#: Factors a reader accepts from a header it was not told the count of: a stream of
#: ``n`` bytes may claim ``_FREE_FACTORS + _FACTORS_PER_BYTE * n`` of them.
_FREE_FACTORS = 1 << 20
_FACTORS_PER_BYTE = 32


def _check_index_code(index_code):
    if not isinstance(index_code, (IndexCode, ConditionedIndexCode)):
        raise TypeError(
            "index_code must be an rcc index code (ZipfIndexCode, EmpiricalIndexCode, UniformIndexCode "
            f"or ConditionedIndexCode), got {type(index_code).__name__}"
        )
    return index_code


def _message_arrays(enc, width):
    """Validated ``(index (B,), factor (B, d), width (B, d), event, method)`` from an EncodedSample."""
    if not isinstance(enc, EncodedSample):
        raise TypeError(f"enc must be the EncodedSample returned by rcc.encode_sample, got {type(enc).__name__}")
    method = enc.method
    if method not in METHODS:
        raise ValueError(f"enc.method must be one of {METHODS}, got {method!r}")
    index = _int_array(enc.index, "enc.index", minimum=1)
    factor = _int_array(enc.factor, "enc.factor")
    if factor.ndim not in (index.ndim, index.ndim + 1) or factor.shape[: index.ndim] != index.shape:
        raise ValueError(f"enc.factor shape {factor.shape} does not fit enc.index shape {index.shape}")
    event = factor.ndim == index.ndim + 1
    count = index.size
    dims = factor.shape[-1] if event else 1
    factor = factor.reshape(count, dims)
    if method == "hybrid":
        if width is None:
            width = enc.width
        widths = _broadcast_width(width, count, dims, event, index.shape)
        enc_width = _broadcast_width(enc.width, count, dims, event, index.shape)
        if not np.array_equal(widths, enc_width):
            raise ValueError("width differs from the width the samples were encoded with (enc.width)")
    else:
        if width is not None and not (np.asarray(width) == 1).all():
            raise ValueError(f"width applies to method='hybrid' only; {method!r} uses width 1")
        if (factor != 0).any():
            raise ValueError(f"enc.factor must be 0 for method={method!r}")
        widths = np.ones((count, dims), dtype=np.int64)
    return index.reshape(count), factor, widths, event, method


def _broadcast_width(width, count, dims, event, batch_shape=None):
    """Widths as a ``(count, dims)`` array; ``width`` broadcasts to the batch (+ event) shape."""
    arr = np.asarray(width)
    if arr.dtype == bool or arr.dtype.kind not in "iuf":
        raise TypeError(f"width must be a positive integer or an array of them, got {width!r}")
    if arr.dtype.kind == "f" and not ((arr == np.round(arr)) & np.isfinite(arr)).all():
        raise TypeError(f"width must be integer-valued, got {width!r}")
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 1:
        raise ValueError(f"width must be >= 1, got {arr[arr < 1].ravel()[:3]}")
    return _to_factor_shape(arr, count, dims, event, batch_shape, "width")


def _context_crc(seed, method, index_code, factor_code, count, dims, event, widths, factor_context=None,
                 stream_offset=0):
    crc = zlib.crc32(b"rcc-messages")
    crc = zlib.crc32(int(seed).to_bytes(8, "little"), crc)
    crc = zlib.crc32(f"{method}|{count}|{dims}|{int(event)}".encode(), crc)
    crc = zlib.crc32(index_code.fingerprint.to_bytes(4, "little"), crc)
    crc = zlib.crc32(factor_code.fingerprint.to_bytes(4, "little"), crc)
    crc = zlib.crc32(np.ascontiguousarray(widths, dtype="<i8").tobytes(), crc)
    if factor_context is not None:
        crc = zlib.crc32(np.ascontiguousarray(factor_context, dtype="<i8").tobytes(), crc)
    if stream_offset:
        # Only a non-zero offset enters the check, so offset-0 streams keep their bytes.
        crc = zlib.crc32(b"offset" + int(stream_offset).to_bytes(8, "little"), crc)
    return crc


def _split_groups(index_code, widths, method):
    """Boolean mask of the messages coded factor-first."""
    if isinstance(index_code, ConditionedIndexCode) and method == "hybrid":
        return index_code.conditioned(widths)
    return np.zeros(widths.shape[0], dtype=bool)


def _encode_payload(encoder, index, factor, widths, seed, method, index_code, factor_code, first, context=None,
                    stream_offset=np.uint64(0)):
    """Write the symbols of all messages (see the module docstring for the order)."""
    dims = widths.shape[1]
    if isinstance(index_code, ConditionedIndexCode):
        fallback = index_code.fallback
        rows = np.flatnonzero(first)
        if rows.size:
            _encode_factors_first(encoder, factor[rows].ravel(), widths[rows].ravel())
            bins = index_code.bins(factor[rows], widths[rows])
            for b, code in enumerate(index_code.codes):
                _encode_indices(encoder, code, index[rows[bins == b]])
    else:
        fallback = index_code
    rest = np.flatnonzero(~first)
    _encode_indices(encoder, fallback, index[rest])
    if method == "hybrid" and rest.size:
        lowest, dither = _lowest_factor(seed, index, dims, stream_offset)
        lowest, dither = lowest[rest].ravel(), dither[rest].ravel()
        k, m = factor[rest].ravel(), widths[rest].ravel()
        offset = k - lowest
        bad = (offset < 0) | (offset >= m)
        if bad.any():
            raise ValueError(
                f"{int(bad.sum())} decoding factor(s) are inconsistent with the dither U_N of the seed "
                "(K + U_N must lie in [0, M)); pass the seed the samples were encoded with"
            )
        ctx = None if context is None else context[rest].ravel()
        _encode_factors_given_dither(encoder, factor_code, k, m, lowest, dither, ctx)


def _message_seed(enc, seed):
    """The seed to code ``enc`` against: ``enc.seed``, which a given ``seed`` must equal."""
    recorded = getattr(enc, "seed", None)
    if seed is None:
        if recorded is None:
            raise TypeError("seed is required: this EncodedSample does not record the seed it was encoded with")
        return int(check_seed(recorded, "enc.seed"))
    seed_value = int(check_seed(seed))
    if recorded is not None and int(recorded) != seed_value:
        raise ValueError(
            f"seed={seed_value} contradicts the seed the samples were encoded with (enc.seed={int(recorded)}); "
            "omit seed to use enc.seed"
        )
    return seed_value


def encode_messages(enc: EncodedSample, seed: int | None = None, *, index_code: IndexCode | ConditionedIndexCode,
                    width: ArrayLike | None = None, factor_code: FactorCode | None = None,
                    factor_context: ArrayLike | None = None, prior: Normal | Uniform | None = None,
                    transform: str | Normal | Uniform | None = None, stream_offset: int = 0) -> bytes:
    """Entropy code a batch of messages ``(index, factor)`` into bytes.

    Parameters
    ----------
    enc : rcc.EncodedSample
        From :func:`rcc.encode_sample` (any batch shape; a Product target has
        factors of shape ``(B, d)``).  Message ``i`` (flat C order) must use
        stream ``stream_offset + i`` of the seed, as :func:`rcc.encode_sample`
        with the same ``stream_offset`` does.
    seed : int, optional
        The seed the samples were encoded with (``enc.seed`` by default; a
        different value raises ``ValueError``): the factor of message ``i`` is
        coded given ``U_N = shared_uniform(seed, i, N_i, j)``.
    index_code : IndexCode or ConditionedIndexCode
        How to code the indices (the receiver needs the same code).
    width : int or array_like of int, optional
        The width ``M`` (broadcastable to the factor shape); ``enc.width`` by
        default.  Must equal ``enc.width``: the receiver has to know it.
    factor_code : FactorCode, optional
        By default :func:`default_factor_code` of ``prior`` and ``transform``:
        the prior's marginal on the transform's axis
        (:class:`MarginalFactorCode`), or the uniform code where the transform
        is the prior.  Not used for prior-proposal methods (their factor is 0
        and is not transmitted).
    factor_context : array_like of int, optional
        With a :class:`TabulatedFactorCode` only: the table that codes each
        factor (broadcastable to the factor shape); the event dimension ``j`` by
        default.  The receiver needs the same contexts.
    prior, transform : optional
        The prior and coding transform the samples were encoded with (as for
        :func:`rcc.encode_sample`; ``Normal(0, 1)`` and its default transform
        by default).  They choose the default factor code, so the receiver
        passes the same; ignored when ``factor_code`` is given.
    stream_offset : int
        The ``stream_offset`` the samples were encoded with (default 0); the
        receiver needs it too (a non-zero offset enters the context check).

    Returns
    -------
    bytes
        Header and range-coded payload; see the module docstring.

    Examples
    --------
    >>> import numpy as np, rcc
    >>> enc = rcc.encode_sample(rcc.Normal(np.array([0.1, -0.4]), 0.05), seed=7)
    >>> code = rcc.ZipfIndexCode(kl_bits=1.5)
    >>> data = rcc.encode_messages(enc, index_code=code)   # the seed is enc.seed
    >>> index, factor = rcc.decode_messages(data, seed=7, index_code=code, width=enc.width)
    >>> bool((index == enc.index).all() and (factor == enc.factor).all())
    True
    """
    seed_value = _message_seed(enc, seed)
    index_code = _check_index_code(index_code)
    factor_code = _conditioned_factor_code(index_code, factor_code, prior, transform)
    encoder = _constriction().stream.queue.RangeEncoder()
    widths, event, method, context = _encode_symbols(encoder, enc, seed_value, index_code, width, factor_code,
                                                     factor_context, stream_offset)
    count, dims = widths.shape
    payload = _words_to_bytes(encoder.get_compressed())
    flags = _METHOD_CODES[method] | (_FLAG_EVENT if event else 0)
    flags |= _FLAG_CONDITIONED if isinstance(index_code, ConditionedIndexCode) else 0
    context = _context_crc(seed_value, method, index_code, factor_code, count, dims, event, widths, context,
                           stream_offset)
    batch_shape = tuple(int(n) for n in np.asarray(enc.index).shape)
    if len(batch_shape) > _MAX_RANK:
        raise ValueError(f"batches of more than {_MAX_RANK} dimensions cannot be written, got {len(batch_shape)}")
    prefix = (_MAGIC + bytes([STREAM_VERSION, flags, len(batch_shape)]) + b"".join(_varint(n) for n in batch_shape)
              + _varint(dims if event else 0) + context.to_bytes(4, "little"))
    checksum = zlib.crc32(payload, zlib.crc32(prefix))
    return prefix + checksum.to_bytes(4, "little") + payload


def _encode_symbols(encoder, enc, seed, index_code, width, factor_code, factor_context, stream_offset=0):
    """Validate ``enc`` and write its symbols to ``encoder`` (no header); returns
    ``(widths (B, d), event, method, factor contexts)``.  The codes are checked already."""
    if isinstance(index_code, ConditionedIndexCode) and not isinstance(factor_code, UniformFactorCode):
        raise TypeError("a ConditionedIndexCode codes the factor itself; use factor_code=None (uniform)")
    index, factor, widths, event, method = _message_arrays(enc, width)
    count, dims = widths.shape
    stream_offset = check_stream_offset(stream_offset, count)
    context = _factor_context(factor_context, factor_code, count, dims, event, np.asarray(enc.index).shape)
    if method == "hybrid":
        _check_marginal_widths(factor_code, widths, context)
    first = _split_groups(index_code, widths, method)
    # Every index must have positive probability under the code that codes it.
    _check_codable(index_code, index, factor, widths, first)
    _encode_payload(encoder, index, factor, widths, seed, method, index_code, factor_code, first, context,
                    stream_offset)
    return widths, event, method, context


def _conditioned_factor_code(index_code, factor_code, prior, transform):
    """The factor code, checked against the index code: a ConditionedIndexCode codes factors itself."""
    if isinstance(index_code, ConditionedIndexCode):
        if factor_code is not None and not isinstance(factor_code, UniformFactorCode):
            raise TypeError("a ConditionedIndexCode codes the factor itself; use factor_code=None")
        return UniformFactorCode()
    return _check_factor_code(factor_code, prior, transform)


def _check_codable(index_code, index, factor, widths, first):
    if isinstance(index_code, ConditionedIndexCode):
        pairs = [(index_code.fallback, np.flatnonzero(~first))]
        rows = np.flatnonzero(first)
        if rows.size:
            bins = index_code.bins(factor[rows], widths[rows])
            pairs += [(code, rows[bins == b]) for b, code in enumerate(index_code.codes)]
    else:
        pairs = [(index_code, np.arange(index.size))]
    for code, rows in pairs:
        if rows.size:
            codable = np.isfinite(code.bits(index[rows]))
            if not codable.all():
                bad = index[rows][~codable]
                raise ValueError(f"index {int(bad[0])} has zero probability under {code!r} and cannot be coded")


def _parse_header(data):
    """The header fields of a message stream, read without trusting them (see the module docstring).

    Only a bounded number of bytes is read; ``intact`` says whether the stream
    CRC32 matches, and no field is used by :func:`decode_messages` before that.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < len(_MAGIC) + 2:
        raise ValueError(f"bitstream too short ({len(data)} bytes) to hold a header: truncated?")
    if data[: len(_MAGIC)] != _MAGIC:
        raise ValueError("not an rcc message bitstream (bad magic bytes)")
    version, flags = data[3], data[4]
    if version not in (1, STREAM_VERSION):
        raise ValueError(f"unsupported bitstream version {version} (this rcc reads versions 1 and {STREAM_VERSION})")
    if flags & ~_KNOWN_FLAGS:
        raise ValueError(f"corrupt bitstream header (unknown flags {flags:#x})")
    if version == 1:
        count, pos = _read_varint(data, 5)
        batch_shape: tuple[int, ...] = (count,)
    else:
        if len(data) < 6:
            raise ValueError("bitstream truncated inside its header")
        rank, pos = data[5], 6
        if rank > _MAX_RANK:
            raise ValueError(f"corrupt bitstream header (batch rank {rank} > {_MAX_RANK})")
        sizes: list[int] = []
        for _ in range(rank):
            n, pos = _read_varint(data, pos)
            sizes.append(n)
        batch_shape = tuple(sizes)
        count = math.prod(batch_shape)
    dims, pos = _read_varint(data, pos)
    if len(data) < pos + 8:
        raise ValueError("bitstream truncated inside its header")
    context = int.from_bytes(data[pos : pos + 4], "little")
    payload_crc = int.from_bytes(data[pos + 4 : pos + 8], "little")
    return {
        "version": version,
        "method": METHODS[flags & 3],
        "event": bool(flags & _FLAG_EVENT),
        "conditioned": bool(flags & _FLAG_CONDITIONED),
        "count": count,
        "batch_shape": batch_shape,
        "dims": dims,
        "context": context,
        "payload_crc": payload_crc,
        "payload": data[pos + 8 :],
        "header_bytes": pos + 8,
        "intact": zlib.crc32(data[pos + 8 :], zlib.crc32(data[: pos + 4])) == payload_crc,
    }


def decode_messages(data: bytes, count: int | None = None, seed: int | None = None, *,
                    index_code: IndexCode | ConditionedIndexCode, width: ArrayLike | None = None,
                    factor_code: FactorCode | None = None, factor_context: ArrayLike | None = None,
                    method: str | None = None, flat: bool = True, prior: Normal | Uniform | None = None,
                    transform: str | Normal | Uniform | None = None,
                    stream_offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Decode bytes written by :func:`encode_messages`.

    Parameters
    ----------
    data : bytes
    count : int, optional
        Number of messages expected (checked against the header, which stores
        it).  Passing it also vouches for the memory of a stream whose
        messages cost almost nothing: without it a header may claim at most
        ``2**20 + 32 * len(data)`` decoding factors.
    seed : int
        The seed the samples were encoded with (required).
    index_code : IndexCode or ConditionedIndexCode
        The code the sender used.
    width : int or array_like of int
        Required for hybrid streams: the widths the sender used, broadcastable
        to the batch (+ event) shape or to the flat ``(count[, d])`` shape
        (``enc.width`` itself works).
    factor_code : FactorCode, optional
        The sender's factor code (by default :func:`default_factor_code` of
        ``prior`` and ``transform``, as for :func:`encode_messages`).
    factor_context : array_like of int, optional
        The sender's factor contexts (with a :class:`TabulatedFactorCode`).
    method : str, optional
        Expected coding method; by default the one in the header.
    flat : bool, optional
        ``True`` (default): messages in flat C order.  ``False``: in the
        sender's batch shape (``enc.index.shape``; version 1 streams only know
        the count).
    stream_offset : int
        The sender's ``stream_offset`` (default 0).
    prior, transform : optional
        The sender's prior and coding transform (for the default factor code).

    Returns
    -------
    index : ndarray of int64, shape (count,) or the batch shape
    factor : ndarray of int64, shape (count,) or (count, d), or the batch (+ event) shape
        ``factor`` has the event axis when the sender's samples did.

    Raises
    ------
    ValueError
        If the stream is truncated, corrupted, or was written with another
        seed, count, method, width or code; every failure of parsing or of the
        range decoder is reported as ``ValueError``.
    """
    if seed is None:
        raise TypeError("decode_messages needs the sender's seed (seed=...)")
    seed_value = int(check_seed(seed))
    if count is not None:
        count = _check_int(count, "count", 0)
    index_code = _check_index_code(index_code)
    factor_code = _conditioned_factor_code(index_code, factor_code, prior, transform)
    if method is not None and method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    header = _parse_header(data)
    if not header["intact"]:
        raise ValueError("bitstream checksum mismatch: the data is truncated or corrupted")
    if count is not None and header["count"] != count:
        raise ValueError(f"the bitstream holds {header['count']} messages, but count={count}")
    if method is not None and header["method"] != method:
        raise ValueError(f"the bitstream was written for method={header['method']!r}, not {method!r}")
    method = header["method"]
    given_count = count is not None
    count = header["count"]
    stream_offset = check_stream_offset(stream_offset, count)
    if header["conditioned"] != isinstance(index_code, ConditionedIndexCode):
        raise ValueError("the bitstream was written with a different kind of index code (conditioned or not)")
    event = header["event"]
    dims = header["dims"] if event else 1
    if (event and dims < 1) or (not event and header["dims"] != 0):
        raise ValueError("corrupt bitstream header (event size)")
    # Nothing sized by the header is allocated before this bound (a re-checksummed hostile
    # header could claim any size); a caller who passed count vouches for count messages.
    limit = _FREE_FACTORS + _FACTORS_PER_BYTE * len(data) + (8 * count if given_count else 0)
    if count * dims > min(limit, _INT64_MAX):
        raise ValueError(
            f"the bitstream header claims {count} x {dims} decoding factors, more than {len(data)} bytes can "
            "plausibly hold; pass count= if this stream is genuine"
        )
    batch_shape = header["batch_shape"]
    context = _factor_context(factor_context, factor_code, count, dims, event, batch_shape)
    if method == "hybrid":
        if width is None:
            raise ValueError("width is required to decode method='hybrid' messages (the sender's widths)")
        widths = _broadcast_width(width, count, dims, event, batch_shape)
        _check_marginal_widths(factor_code, widths, context)
    else:
        if width is not None and not (np.asarray(width) == 1).all():
            raise ValueError(f"width applies to method='hybrid' only; the stream used {method!r}")
        widths = np.ones((count, dims), dtype=np.int64)
    if _context_crc(seed_value, method, index_code, factor_code, count, dims, event, widths,
                    context, stream_offset) != header["context"]:
        raise ValueError(
            "the bitstream does not match the seed, index_code, factor_code, width or stream_offset given "
            "(its context checksum differs); decode with the sender's parameters"
        )
    index, factor = _decode_checked(header["payload"], count, widths, seed_value, method, index_code,
                                    factor_code, context, stream_offset)
    if not flat:
        return index.reshape(batch_shape), factor.reshape(batch_shape + ((dims,) if event else ()))
    return index, (factor if event else factor.reshape(count))


#: What the range decoder and the table lookups raise on a payload the models cannot
#: have produced (constriction reports such data with AssertionError).
_DECODE_ERRORS = (AssertionError, ArithmeticError, LookupError, RuntimeError, ValueError, TypeError)


def _decode_checked(payload, count, widths, seed, method, index_code, factor_code, context=None, stream_offset=0):
    """Decode a payload; every failure surfaces as ``ValueError``."""
    try:
        decoder = _constriction().stream.queue.RangeDecoder(_bytes_to_words(payload))
        index, factor = _decode_payload(decoder, count, widths, seed, method, index_code, factor_code, context,
                                        stream_offset)
    except _DECODE_ERRORS as exc:
        raise ValueError(f"corrupt bitstream: the payload does not decode under the given codes ({exc})") from None
    if (index < 1).any():
        raise ValueError("corrupt bitstream: decoded an index < 1")
    return index, factor


def _decode_payload(decoder, count, widths, seed, method, index_code, factor_code, context=None,
                    stream_offset=np.uint64(0)):
    dims = widths.shape[1]
    index = np.zeros(count, dtype=np.int64)
    factor = np.zeros((count, dims), dtype=np.int64)
    first = _split_groups(index_code, widths, method)
    if isinstance(index_code, ConditionedIndexCode):
        fallback = index_code.fallback
        rows = np.flatnonzero(first)
        if rows.size:
            factor[rows] = _decode_factors_first(decoder, widths[rows].ravel()).reshape(rows.size, dims)
            bins = index_code.bins(factor[rows], widths[rows])
            for b, code in enumerate(index_code.codes):
                selected = rows[bins == b]
                index[selected] = _decode_indices(decoder, code, selected.size)
    else:
        fallback = index_code
    rest = np.flatnonzero(~first)
    index[rest] = _decode_indices(decoder, fallback, rest.size)
    if method == "hybrid" and rest.size:
        if (index[rest] < 1).any():
            raise ValueError("decoded an index < 1")
        lowest, dither = _lowest_factor(seed, np.maximum(index, 1), dims, stream_offset)
        ctx = None if context is None else context[rest].ravel()
        k = _decode_factors_given_dither(decoder, factor_code, widths[rest].ravel(), lowest[rest].ravel(),
                                         dither[rest].ravel(), ctx)
        factor[rest] = k.reshape(rest.size, dims)
    return index, factor


@dataclass(frozen=True)
class MessageBits:
    """Ideal information content of each message (bits), as :func:`encode_messages` codes it.

    Attributes
    ----------
    index : ndarray, shape (B,)
        ``-log2 P(N)`` under the index code (the bin's code when conditioned).
    factor : ndarray, shape (B,)
        ``-log2 P(K | U_N)`` summed over dimensions (or ``-log2 P(K)`` when
        the factor is coded first).
    """

    index: np.ndarray
    factor: np.ndarray

    @property
    def total(self) -> np.ndarray:
        """``index + factor``."""
        return self.index + self.factor


def message_bits(enc: EncodedSample, seed: int | None = None, *, index_code: IndexCode | ConditionedIndexCode,
                 width: ArrayLike | None = None, factor_code: FactorCode | None = None,
                 factor_context: ArrayLike | None = None, prior: Normal | Uniform | None = None,
                 transform: str | Normal | Uniform | None = None, stream_offset: int = 0) -> MessageBits:
    """Ideal information content of each message under the given codes.

    Parameters are those of :func:`encode_messages`.

    Returns
    -------
    MessageBits
    """
    seed_value = _message_seed(enc, seed)
    index_code = _check_index_code(index_code)
    factor_code = _conditioned_factor_code(index_code, factor_code, prior, transform)
    index, factor, widths, event, method = _message_arrays(enc, width)
    count, dims = widths.shape
    stream_offset = check_stream_offset(stream_offset, count)
    context = _factor_context(factor_context, factor_code, count, dims, event, np.asarray(enc.index).shape)
    first = _split_groups(index_code, widths, method)
    index_bits = np.zeros(count)
    factor_bits = np.zeros(count)
    if isinstance(index_code, ConditionedIndexCode):
        rows = np.flatnonzero(first)
        if rows.size:
            bins = index_code.bins(factor[rows], widths[rows])
            for b, code in enumerate(index_code.codes):
                selected = rows[bins == b]
                if selected.size:
                    index_bits[selected] = code.bits(index[selected])
            factor_bits[rows] = _factor_first_bits(factor[rows], widths[rows]).sum(axis=1)
        fallback = index_code.fallback
    else:
        fallback = index_code
    rest = np.flatnonzero(~first)
    if rest.size:
        index_bits[rest] = fallback.bits(index[rest])
        if method == "hybrid":
            if isinstance(factor_code, UniformFactorCode):
                factor_bits[rest] = np.log2(widths[rest].astype(np.float64)).sum(axis=1)
            else:
                _check_marginal_widths(factor_code, widths, context)
                lowest, dither = _lowest_factor(seed_value, index, dims, stream_offset)
                ctx = None if context is None else context[rest].ravel()
                bits = _factor_bits(factor_code, factor[rest].ravel(), widths[rest].ravel(), lowest[rest].ravel(),
                                    dither[rest].ravel(), ctx)
                factor_bits[rest] = bits.reshape(rest.size, dims).sum(axis=1)
    return MessageBits(index=index_bits, factor=factor_bits)
