"""Range-coder plumbing shared by every message stream: words, varints, raw bits.

The coders are ``constriction``'s range coders (Bamler 2022); this module holds
what every stream needs around them: the conversion of the coder's 32-bit words
to bytes (big-endian, with up to three trailing zero bytes dropped and restored
on reading), LEB128 varints for header fields, and uniformly coded bits and
bounded integers, split into chunks the coder's ``Uniform`` model accepts.
"""

from __future__ import annotations

import numpy as np

__all__: list[str] = []


_CHUNK_BITS = 16  # low bits of an escaped index go out in uniform chunks of this size
_MAX_UNIFORM = (1 << 24) - 1  # constriction's Uniform needs 2 <= size < 2**24
_SPLIT_BITS = 12


def _constriction():
    import constriction

    return constriction


def _encode_bits(encoder, values, nbits):
    """``values`` (``< 2**nbits``) as uniform chunks of <= 16 bits, most significant first."""
    cons = _constriction()
    rounds = int(np.max(-(-nbits // _CHUNK_BITS))) if nbits.size else 0
    for r in range(rounds):
        active = nbits > r * _CHUNK_BITS
        width = np.minimum(_CHUNK_BITS, nbits[active] - r * _CHUNK_BITS)
        rest = nbits[active] - r * _CHUNK_BITS - width
        chunk = np.right_shift(values[active], rest) & (np.left_shift(1, width) - 1)
        encoder.encode(chunk.astype(np.int32), cons.stream.model.Uniform(),
                       np.left_shift(1, width).astype(np.int32))


def _decode_bits(decoder, nbits):
    cons = _constriction()
    values = np.zeros(nbits.size, dtype=np.int64)
    rounds = int(np.max(-(-nbits // _CHUNK_BITS))) if nbits.size else 0
    for r in range(rounds):
        active = np.flatnonzero(nbits > r * _CHUNK_BITS)
        width = np.minimum(_CHUNK_BITS, nbits[active] - r * _CHUNK_BITS)
        chunk = np.asarray(decoder.decode(cons.stream.model.Uniform(), np.left_shift(1, width).astype(np.int32)),
                           dtype=np.int64)
        values[active] = np.left_shift(values[active], width) | chunk
    return values


def _encode_uniform(encoder, values, sizes):
    """``values[i]`` uniform in ``[0, sizes[i])``; sizes of 1 cost nothing, huge sizes are split."""
    cons = _constriction()
    coded = sizes > 1
    values, sizes = values[coded], sizes[coded]
    small = sizes <= _MAX_UNIFORM
    if small.any():
        encoder.encode(values[small].astype(np.int32), cons.stream.model.Uniform(), sizes[small].astype(np.int32))
    if not small.all():
        big_values, big_sizes = values[~small], sizes[~small]
        block = 1 << _SPLIT_BITS
        high = big_values >> _SPLIT_BITS
        _encode_uniform(encoder, high, -(-big_sizes // block))
        _encode_uniform(encoder, big_values & (block - 1), np.minimum(block, big_sizes - high * block))


def _decode_uniform(decoder, sizes):
    cons = _constriction()
    out = np.zeros(sizes.size, dtype=np.int64)
    coded = np.flatnonzero(sizes > 1)
    sub_sizes = sizes[coded]
    values = np.zeros(coded.size, dtype=np.int64)
    small = sub_sizes <= _MAX_UNIFORM
    if small.any():
        values[small] = np.asarray(decoder.decode(cons.stream.model.Uniform(), sub_sizes[small].astype(np.int32)),
                                   dtype=np.int64)
    if not small.all():
        big_sizes = sub_sizes[~small]
        block = 1 << _SPLIT_BITS
        high = _decode_uniform(decoder, -(-big_sizes // block))
        low = _decode_uniform(decoder, np.minimum(block, big_sizes - high * block))
        values[~small] = high * block + low
    out[coded] = values
    return out


def _varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data, pos):
    value, shift = 0, 0
    while True:
        if pos >= len(data):
            raise ValueError("bitstream truncated inside its header")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("corrupt bitstream header (overlong integer)")


def _words_to_bytes(words, byteorder=">"):
    """The range coder's 32-bit words as bytes (big-endian by default), trailing zero bytes dropped."""
    data = np.asarray(words, dtype=np.uint32).astype(byteorder + "u4").tobytes()
    strip = 0
    while strip < 3 and len(data) > strip and data[len(data) - 1 - strip] == 0:
        strip += 1
    return data[: len(data) - strip]


def _bytes_to_words(payload, byteorder=">"):
    """Inverse of :func:`_words_to_bytes`: the dropped trailing zero bytes are restored."""
    padded = payload + b"\x00" * (-len(payload) % 4)
    return np.frombuffer(padded, dtype=byteorder + "u4").astype(np.uint32)
