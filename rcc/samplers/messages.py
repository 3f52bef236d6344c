"""Tree-sampler messages to bytes: heap indices under a :class:`TreeIndexCode`, or index-only streams.

A message is the heap index ``h >= 1`` of the selected node (the candidate
index ``N`` for ``"gprs"``): its depth is ``floor(log2 h)``, its path the
binary digits below the leading one.  :class:`TreeIndexCode` codes the depth
with fitted probabilities and each step of the path with the left child's
share of the prior mass (known to both sides from the seed), so a message
costs about ``-log2 P(node)`` bits; :func:`encode_index_messages` writes the
index alone with any :class:`rcc.IndexCode`, like the race's streams.
"""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np

from ..encoded import EncodedSample
from ..entropy import BucketIndexCode, _constriction, _read_varint, _varint, decode_messages, encode_messages
from ..random import check_seed
from .kernels import MAX_DEPTH, SAMPLER_METHODS, _RULES, left_fractions
from .core import _check_method

__all__ = [
    "heap_index_code",
    "TreeIndexCode",
    "encode_tree_messages",
    "decode_tree_messages",
    "encode_index_messages",
    "decode_index_messages",
]

# --------------------------------------------------------------------------- messages to bytes


def heap_index_code(indices, **fit_options):
    """A :class:`rcc.BucketIndexCode` fitted to heap indices of representative targets.

    ``P(h) = p_d / 2**d`` for depth ``d = floor(log2 h)``: a fitted mass per
    depth and ``d`` uniform path bits.  The path of a target placed by the
    prior is close to uniform, so this costs about ``d + H(depth)`` bits.
    """
    return BucketIndexCode.fit(indices, **fit_options)


def _as_index_message(enc):
    if not isinstance(enc, EncodedSample) or enc.method not in SAMPLER_METHODS:
        raise TypeError(f"enc must be an EncodedSample of one of {SAMPLER_METHODS}")
    # An index-only message: the stream layout of the prior-proposal methods (factor 0, not sent).
    return dataclasses.replace(enc, method="pfr")


def encode_index_messages(enc, seed, *, index_code):
    """Entropy code the indices of a tree-sampler batch to bytes (:func:`rcc.encode_messages`)."""
    return encode_messages(_as_index_message(enc), seed, index_code=index_code)


def decode_index_messages(data, count, seed, *, index_code):
    """The indices written by :func:`encode_index_messages` (flat, int64)."""
    index, _ = decode_messages(data, count, seed, index_code=index_code, method="pfr")
    return index


# --------------------------------------------------------------------------- path code

_TREE_MAGIC = b"RCT"
_TREE_VERSION = 1


class TreeIndexCode:
    """Code of heap indices that spends ``-log2`` of the node's prior mass on the path (:ref:`samplers-message`).

    The depth ``d = floor(log2 h)`` is coded with fitted probabilities; then the
    path, level by level, each step ``left`` with the probability of the left
    child's share of the prior mass (the shared point ``V`` of the node for
    sample splits above :data:`rcc.samplers.SAMPLE_SPLIT_DEPTH`, 1/2 for dyadic
    ones and deeper nodes).  Sender and receiver both know these
    shares from the seed, so the path costs ``-log2 P(node)`` bits instead of
    ``d``: for sample splits, whose paths are about 1.4 times deeper than the
    information, this saves most of the difference.

    Parameters
    ----------
    depth_weights : array_like of float, shape (MAX_DEPTH + 1,)
        Positive weights of the depths ``0 .. MAX_DEPTH``.
    """

    def __init__(self, depth_weights):
        weights = np.asarray(depth_weights, dtype=np.float64).reshape(-1)
        if weights.size != MAX_DEPTH + 1 or not (np.all(np.isfinite(weights)) and np.all(weights > 0)):
            raise ValueError(f"depth_weights must be {MAX_DEPTH + 1} positive finite numbers")
        self.depth_weights = weights
        self.depth_probabilities = weights / weights.sum()

    @classmethod
    def fit(cls, indices, *, pseudo_count=0.5, tail_ratio=0.5):
        """Depth probabilities from heap indices of representative targets (as :class:`rcc.BucketIndexCode`)."""
        weights = BucketIndexCode.fit(indices, pseudo_count=pseudo_count, tail_ratio=tail_ratio).bucket_weights
        return cls(weights[: MAX_DEPTH + 1])

    def to_dict(self):
        return {"format": "rcc.TreeIndexCode", "version": 1, "depth_weights": [float(w) for w in self.depth_weights]}

    @classmethod
    def from_dict(cls, data):
        if not isinstance(data, dict) or data.get("format") != "rcc.TreeIndexCode" or data.get("version") != 1:
            raise ValueError("not a version-1 rcc.TreeIndexCode description")
        return cls(data["depth_weights"])

    def bits(self, index, seed, *, method, stream_offset=0):
        """Ideal information content ``-log2 P(depth) - log2 P(path)`` of each message, in bits."""
        index = _flat_heap_indices(index)
        depth = _depths(index)
        total = -np.log2(self.depth_probabilities[depth])
        seed_u64, offset, split = check_seed(seed), check_seed(stream_offset, "stream_offset"), _split_of(method)
        share = np.empty(index.size, dtype=np.float64)
        for level in range(int(depth.max(initial=0))):
            active = depth > level
            nodes = np.where(active, index >> np.maximum(depth - level, 0), 1)
            left_fractions(seed_u64, offset, nodes, split, share)
            go_right = ((index >> np.maximum(depth - level - 1, 0)) & 1).astype(bool)
            with np.errstate(divide="ignore"):
                cost = -np.log2(np.where(go_right, 1.0 - share, share))
            total += np.where(active, cost, 0.0)
        return total


def _split_of(method):
    method = _check_method(method)
    if method == "gprs":
        raise ValueError("method='gprs' sends a candidate index, not a heap index: use encode_index_messages")
    return _RULES[method][1]


def _flat_heap_indices(index):
    index = np.asarray(index)
    if index.dtype.kind not in "iu" or (index.size and index.min() < 1):
        raise ValueError("heap indices must be integers >= 1")
    if index.dtype.kind == "u" and index.size and index.max() > np.iinfo(np.int64).max:
        raise ValueError(f"heap indices must be below 2**{MAX_DEPTH + 1}")
    return index.astype(np.int64).reshape(-1)


def _depths(index):
    depth = np.zeros(index.shape, dtype=np.int64)
    rest = index >> 1
    while rest.any():
        depth += rest > 0
        rest = rest >> 1
    return depth


def _bernoulli(share):
    return np.ascontiguousarray(np.stack([share, 1.0 - share], axis=1).clip(0.0, 1.0))


def encode_tree_messages(enc, seed, *, index_code, stream_offset=0):
    """Bytes of a batch's heap indices under a :class:`TreeIndexCode` (range coded).

    Layout: ``b"RCT"``, a version byte, the method, the count (varint), a
    CRC32 of the seed, method, code and count, a CRC32 of the payload, and the
    payload (depths, then the paths level by level).
    """

    if not isinstance(enc, EncodedSample) or enc.method not in SAMPLER_METHODS:
        raise TypeError(f"enc must be an EncodedSample of one of {SAMPLER_METHODS}")
    if not isinstance(index_code, TreeIndexCode):
        raise TypeError(f"index_code must be a TreeIndexCode, got {type(index_code).__name__}")
    split = _split_of(enc.method)
    seed_u64, offset = check_seed(seed), check_seed(stream_offset, "stream_offset")
    index = _flat_heap_indices(enc.index)
    depth = _depths(index)
    cons = _constriction()
    family = cons.stream.model.Categorical(perfect=False)
    encoder = cons.stream.queue.RangeEncoder()
    if index.size:
        encoder.encode(depth.astype(np.int32), cons.stream.model.Categorical(index_code.depth_probabilities,
                                                                             perfect=False))
    share = np.empty(index.size, dtype=np.float64)
    for level in range(int(depth.max(initial=0))):
        active = np.flatnonzero(depth > level)
        nodes = np.ones(index.size, dtype=np.int64)
        nodes[active] = index[active] >> (depth[active] - level)
        left_fractions(seed_u64, offset, nodes, split, share)
        bits = (index[active] >> (depth[active] - level - 1)) & 1
        encoder.encode(bits.astype(np.int32), family, _bernoulli(share[active]))
    payload = np.asarray(encoder.get_compressed(), dtype=np.uint32).astype(">u4").tobytes()
    prefix = _TREE_MAGIC + bytes([_TREE_VERSION, SAMPLER_METHODS.index(enc.method)]) + _varint(index.size)
    context = zlib.crc32(repr((int(seed_u64), int(offset), index_code.to_dict())).encode(), zlib.crc32(prefix))
    return prefix + context.to_bytes(4, "little") + zlib.crc32(payload).to_bytes(4, "little") + payload


def decode_tree_messages(data, count, seed, *, index_code, method, stream_offset=0):
    """Heap indices (flat, int64) from bytes written by :func:`encode_tree_messages`.

    Raises ``ValueError`` for truncated or corrupted bytes and for a stream
    written with another count, method, seed, stream offset or code.
    """

    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    if not isinstance(index_code, TreeIndexCode):
        raise TypeError(f"index_code must be a TreeIndexCode, got {type(index_code).__name__}")
    data = bytes(data)
    split = _split_of(method)
    seed_u64, offset = check_seed(seed), check_seed(stream_offset, "stream_offset")
    if len(data) < 5 or data[:3] != _TREE_MAGIC:
        raise ValueError("not an rcc tree message stream (bad magic bytes or too short)")
    if data[3] != _TREE_VERSION:
        raise ValueError(f"unsupported tree message stream version {data[3]}")
    if data[4] >= len(SAMPLER_METHODS) or SAMPLER_METHODS[data[4]] != method:
        raise ValueError(f"the stream was not written with method={method!r}")
    stored, pos = _read_varint(data, 5)
    if stored != count:
        raise ValueError(f"the stream holds {stored} messages, expected count={count}")
    if len(data) < pos + 8:
        raise ValueError("tree message stream truncated inside its header")
    context = zlib.crc32(repr((int(seed_u64), int(offset), index_code.to_dict())).encode(), zlib.crc32(data[:pos]))
    if int.from_bytes(data[pos:pos + 4], "little") != context:
        raise ValueError("the stream was written with another seed, stream offset or index code")
    payload = data[pos + 8:]
    if zlib.crc32(payload) != int.from_bytes(data[pos + 4:pos + 8], "little"):
        raise ValueError("tree message stream corrupted or truncated (payload checksum mismatch)")
    if len(payload) % 4:
        raise ValueError("tree message stream truncated (payload is not whole 32-bit words)")
    cons = _constriction()
    decoder = cons.stream.queue.RangeDecoder(np.frombuffer(payload, dtype=">u4").astype(np.uint32))
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    depth = np.asarray(decoder.decode(cons.stream.model.Categorical(index_code.depth_probabilities,
                                                                     perfect=False), count), dtype=np.int64)
    index = np.ones(count, dtype=np.int64)
    family = cons.stream.model.Categorical(perfect=False)
    share = np.empty(count, dtype=np.float64)
    for level in range(int(depth.max(initial=0))):
        active = np.flatnonzero(depth > level)
        left_fractions(seed_u64, offset, index, split, share)
        bits = np.asarray(decoder.decode(family, _bernoulli(share[active])), dtype=np.int64)
        index[active] = 2 * index[active] + bits
    return index
