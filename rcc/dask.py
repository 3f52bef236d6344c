"""Chunked and distributed coding of dask arrays, bit-identical to one call.

Reach for this module when the targets do not fit one process comfortably:
the weights of a large model with a variational posterior, or the latents of
a whole dataset.  The parameters are :mod:`dask.array` arrays; every function
here builds a lazy graph with one task per chunk, which runs on whatever
scheduler is active (a :mod:`distributed` cluster, threads, processes).

Element ``i`` of the whole array (flat C order) uses stream ``(seed, i)``,
whatever the chunking, so the results equal one in-process
:func:`rcc.encode_sample` call bit for bit: each chunk is encoded with the
``stream_offset`` of its first element (a chunk that is not contiguous in C
order is encoded as one call per contiguous run of elements).

>>> import dask.array as da, numpy as np, rcc, rcc.dask
>>> mean = da.from_array(np.linspace(-1.0, 1.0, 12), chunks=5)
>>> enc = rcc.dask.encode_sample(rcc.Normal, mean, 0.1, seed=7)
>>> one = rcc.encode_sample(rcc.Normal(np.linspace(-1.0, 1.0, 12), 0.1), seed=7)
>>> bool((enc.index.compute() == one.index).all() and (enc.sample.compute() == one.sample).all())
True

Bytes are one message stream per chunk (:func:`rcc.encode_messages` with the
chunk's stream offset) plus a small index of the chunk layout
(:class:`ChunkedMessages`), so chunks decode independently and in parallel.

Memory: a chunk's task holds that chunk's parameters and outputs only, and
tasks of different chunks share nothing (each output chunk depends on its own
parameter chunks alone), so a worker holds the chunks of the tasks it runs
plus the few the scheduler queues next, however large the array, as long as
the results are reduced, stored chunk by chunk (``dask.array.to_zarr``) or
turned into bytes.  :meth:`ChunkedMessages.to_bytes` gathers every chunk's
stream on the client: about ``bits per element / 8`` bytes per element.

Requires the optional extra ``rcc[dask]`` (``dask[distributed]``); importing
:mod:`rcc` does not import dask.
"""

from __future__ import annotations

import inspect
import math
import numbers
import zlib
from dataclasses import dataclass, field

import dask.array as da
import numpy as np
from dask.highlevelgraph import HighLevelGraph

from .coding import EncodedSample, decode_sample as _decode_sample, encode_sample as _encode_sample
from .general import GeneralTarget, encode_general
from .entropy import _read_varint, _varint, decode_messages as _decode_messages
from .entropy import encode_messages as _encode_messages
from .random import check_seed
from .targets import Distribution

__all__ = [
    "DaskEncodedSample",
    "ChunkedMessages",
    "encode_sample",
    "decode_sample",
    "encode_messages",
    "decode_messages",
]

# The outputs of a chunk's task (a dict of arrays): each field's dask array picks its own.
_FIELDS = {"index": np.int64, "factor": np.int64, "sample": np.float64, "candidates": np.int64, "width": np.int64,
           "kl_bits": np.float64, "tail_mass": np.float64}
_MESSAGE_FIELDS = {"index": np.int64, "factor": np.int64}
_MAGIC = b"RCCD"
_VERSION = 1
_MAX_NDIM = 32


@dataclass(frozen=True)
class DaskEncodedSample:
    """What :func:`encode_sample` returns: the fields of :class:`rcc.EncodedSample` as dask arrays.

    All arrays have the targets' shape and chunks.  One task encodes a chunk
    and each array picks its field from that task's result, so computing
    several together (``dask.compute(enc.index, enc.factor)``) encodes each
    chunk once.

    Attributes
    ----------
    index, factor, sample, candidates, width, kl_bits, tail_mass : dask.array.Array
        As in :class:`rcc.EncodedSample`.
    method : str
    seed : int
    """

    index: da.Array
    factor: da.Array
    sample: da.Array
    candidates: da.Array
    width: da.Array
    kl_bits: da.Array
    tail_mass: da.Array
    method: str
    seed: int
    # The per-chunk results all fields pick from (a dict of arrays per chunk).
    _results: da.Array | None = field(repr=False, compare=False, default=None)

    @property
    def shape(self):
        return self.index.shape

    @property
    def chunks(self):
        return self.index.chunks

    def persist(self, **kwargs):
        """Encode every chunk now and keep the results in memory (on the workers, with distributed).

        Returns a :class:`DaskEncodedSample` whose arrays, and
        :func:`encode_messages` of it, reuse those results instead of
        encoding again; ``kwargs`` go to :meth:`dask.array.Array.persist`.
        """
        results = self._results.persist(**kwargs)
        return DaskEncodedSample(method=self.method, seed=self.seed, _results=results,
                                 **_field_arrays(results, _FIELDS))


def _pick(result, name):
    return result[name]


def _field_arrays(results, fields):
    """One dask array per field, each block picked from the chunk task's dict (no copy)."""
    return {name: da.map_blocks(_pick, results, name, dtype=dtype, meta=np.empty((0,) * results.ndim, dtype),
                                name=f"{name}-{results.name}")
            for name, dtype in fields.items()}


def _assemble(parts, fields, run_length, count, extent):
    """A chunk's field arrays from the per-run results (no copy for a single run)."""
    if len(parts) == 1:
        return {name: np.ravel(parts[0][name]).reshape(extent) for name in fields}
    out = {name: np.empty(count, dtype) for name, dtype in fields.items()}
    for r, part in enumerate(parts):
        for name in fields:
            out[name][r * run_length:(r + 1) * run_length] = np.ravel(part[name])
    return {name: arr.reshape(extent) for name, arr in out.items()}


def _check_distribution(distribution):
    if not callable(distribution):
        raise TypeError(
            "distribution must be an rcc target class such as rcc.Normal (called with each chunk's parameters), "
            f"got {type(distribution).__name__}"
        )


def _run_layout(location, shape):
    """Contiguous runs of a chunk: ``(run_length, first_streams)``.

    ``location`` holds the chunk's ``(start, stop)`` per axis in an array of
    ``shape``.  A run is a stretch of the chunk that is contiguous in the
    whole array's C order: the trailing axes the chunk spans fully, plus one
    more.  Element ``r * run_length + t`` of the chunk (its own C order) is
    element ``first_streams[r] + t`` of the whole array.
    """
    ndim = len(shape)
    full = ndim
    while full > 0 and location[full - 1][0] == 0 and location[full - 1][1] == shape[full - 1]:
        full -= 1
    split = max(full - 1, 0)
    extent = [stop - start for start, stop in location]
    strides = [math.prod(shape[a + 1:]) for a in range(ndim)]
    base = sum(location[a][0] * strides[a] for a in range(ndim))
    run_length = math.prod(extent[split:])
    if split == 0:
        return run_length, [base] if run_length else []
    grid = np.indices(extent[:split]).reshape(split, -1)
    firsts = [base + sum(int(grid[a, r]) * strides[a] for a in range(split)) for r in range(grid.shape[1])]
    return run_length, firsts


def _location(block_info, which):
    info = block_info[which]
    return [tuple(bounds) for bounds in info["array-location"]], tuple(info["shape"])


def _raise_in_chunk(exc, location):
    """Re-raise a chunk's error with the chunk named (same exception type)."""
    where = ", ".join(f"{start}:{stop}" for start, stop in location) or "()"
    try:
        named = type(exc)(f"in the chunk [{where}]: {exc}")
    except Exception:  # an exception type that takes other arguments: keep it as it is
        raise exc from None
    raise named from exc


def _as_params(values, names):
    """Dask arrays (chunked), and size-1 values kept as 0-d constants."""
    arrays = {}
    constants = {}
    for name, value in zip(names, values):
        if isinstance(value, da.Array):
            arrays[name] = value
            continue
        arr = np.asarray(value)
        if arr.dtype == object:
            raise TypeError(f"{name} must be a number, a numpy array or a dask array, got {type(value).__name__}")
        if arr.size == 1:
            constants[name] = arr.reshape(())
        else:
            arrays[name] = da.from_array(arr, chunks=-1)
    return arrays, constants


def _unify(arrays):
    """Broadcast dask arrays to one shape with common chunks."""
    if not arrays:
        return (), {}
    try:
        shape = np.broadcast_shapes(*(a.shape for a in arrays.values()))
    except ValueError as exc:
        shapes = ", ".join(f"{name}{a.shape}" for name, a in arrays.items())
        raise ValueError(f"parameter shapes do not broadcast: {shapes}") from exc
    broadcast = {name: a if a.shape == shape else da.broadcast_to(a, shape) for name, a in arrays.items()}
    indices = tuple(range(len(shape)))
    pairs = []
    for a in broadcast.values():
        pairs += [a, indices]
    _, unified = da.core.unify_chunks(*pairs)
    return shape, dict(zip(broadcast, unified))


def _rng_word(rng):
    """One private key word for every chunk: chunks then agree with one call (see encode_sample)."""
    if rng is None or type(rng) is int:
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, (bool, np.bool_)):
        return int(rng)
    generator = np.random.default_rng(rng)
    return int(generator.integers(0, 2**64, dtype=np.uint64))


def _encode_block(*blocks, distribution, array_names, param_names, keyword_names, constants, seed, options,
                  block_info=None):
    location, shape = _location(block_info, None)
    extent = tuple(stop - start for start, stop in location)
    count = math.prod(extent)
    run_length, firsts = _run_layout(location, shape)
    flat = {name: _flat_block(block, extent, count) for name, block in zip(array_names, blocks)}
    parts = []
    try:
        for r, first in enumerate(firsts):
            rows = slice(r * run_length, (r + 1) * run_length)
            values = {name: arr[rows] for name, arr in flat.items()}
            values.update(constants)
            target = distribution(*[values[name] for name in param_names])
            keywords = {name: values["=" + name] for name in keyword_names}
            enc = _encode_sample(target, seed, stream_offset=first, **options, **keywords)
            parts.append({name: getattr(enc, name) for name in _FIELDS})
    except (ValueError, TypeError, RuntimeError) as exc:
        _raise_in_chunk(exc, location)
    if not parts:
        return {name: np.empty(extent, dtype) for name, dtype in _FIELDS.items()}
    return _assemble(parts, _FIELDS, run_length, count, extent)


def _flat_block(block, extent, count):
    """A parameter block as a flat, writeable array (read-only views would make numba compile anew)."""
    block = np.asarray(block)
    if block.shape != extent:
        block = np.broadcast_to(block, extent)
    if not block.flags.writeable:
        block = block.copy()
    return block.reshape(count)


def _dry_run_encode(distribution, param_names, keyword_names, arrays, constants, seed, options):
    """Encode an empty batch now, so bad arguments raise at graph construction."""
    empty = {name: np.zeros(0, dtype=arrays[name].dtype) for name in arrays}
    empty.update(constants)
    target = distribution(*[empty[name] for name in param_names])
    if isinstance(target, Distribution) and target.event_shape:
        raise TypeError("rcc.dask codes batches of scalar targets; Product targets (an event axis) are not supported")
    keywords = {name: empty["=" + name] for name in keyword_names}
    if isinstance(target, GeneralTarget):
        # encode_general needs a non-empty batch: check the arguments' names only.
        inspect.signature(encode_general).bind(target, seed, stream_offset=0, **options, **keywords)
        return
    _encode_sample(target, seed, stream_offset=0, **options, **keywords)


def encode_sample(distribution, *params, seed, method="hybrid", rng=None, num_threads=1, **options):
    """Encode exact samples of targets whose parameters are dask arrays, chunk by chunk.

    Parameters
    ----------
    distribution : callable
        An rcc target class, such as :class:`rcc.Normal`, :class:`rcc.Uniform`,
        :class:`rcc.TruncatedNormal` or a :class:`rcc.general.GeneralTarget`
        family; called with each chunk's parameters.  Targets with an event
        axis (:class:`rcc.Product`) are not supported.
    *params : dask.array.Array, numpy array or number
        The parameters, broadcast against each other; at least one is a dask
        array.  Chunks are unified as :func:`dask.array.blockwise` does.
    seed : int
        Shared seed in ``[0, 2**64)``.
    method : str
        As in :func:`rcc.encode_sample`.
    rng : None, int or numpy.random.Generator
        Private randomness.  ``None`` (from the seed) and an integer give every
        chunk the same private key, as one call does.  Anything else is drawn
        from once, now, and the integer drawn is used for every chunk: the
        result equals ``rcc.encode_sample(..., rng=that_integer)``.
    num_threads : int or None
        Numba threads per task (default 1: the scheduler provides the
        parallelism); results do not depend on it.
    **options
        Further keyword arguments of :func:`rcc.encode_sample` (``prior``,
        ``width``, ``tail_mass``, ``max_candidates``, ...).  A ``width``
        array (numpy or dask) is chunked with the targets; the prior's
        parameters must be scalars.

    Returns
    -------
    DaskEncodedSample
        Lazy; nothing is encoded until it is computed.

    Raises
    ------
    TypeError, ValueError
        Bad arguments, at once.  Bad parameter values inside a chunk (say a
        negative std) raise when that chunk is computed, naming the chunk.
    """
    _check_distribution(distribution)
    seed = int(check_seed(seed))
    prior = options.get("prior")
    if prior is not None and getattr(prior, "batch_shape", ()) != ():
        raise ValueError("rcc.dask needs a prior with scalar parameters; chunked prior parameters are not supported")
    if "stream_offset" in options:
        raise TypeError("rcc.dask derives each chunk's stream_offset from the chunk layout; do not pass it")
    param_names = [f"parameter {k}" for k in range(len(params))]
    values = list(params)
    names = list(param_names)
    if "width" in options and not isinstance(options["width"], str) and options["width"] is not None:
        values.append(options.pop("width"))
        names.append("=width")
    arrays, constants = _as_params(values, names)
    if not any(isinstance(value, da.Array) for value in params):
        raise TypeError("encode_sample needs at least one dask array parameter; for numpy arrays use rcc.encode_sample")
    options = dict(options, method=method, rng=_rng_word(rng), num_threads=num_threads)
    keyword_names = [name[1:] for name in names if name.startswith("=")]
    _dry_run_encode(distribution, param_names, keyword_names, arrays, constants, seed, options)
    shape, unified = _unify(arrays)
    order = [name for name in names if name in unified]
    results = da.map_blocks(
        _encode_block, *[unified[name] for name in order], distribution=distribution, array_names=order,
        param_names=param_names, keyword_names=keyword_names, constants=constants, seed=seed, options=options,
        dtype=object, meta=np.empty((0,) * len(shape), object),
        name=f"rcc-encode-{_token(distribution, seed, options, constants, *[unified[n] for n in order])}",
    )
    return DaskEncodedSample(method=method, seed=seed, _results=results, **_field_arrays(results, _FIELDS))


def _token(*args):
    from dask.base import tokenize

    return tokenize(*args)


def _decode_block(index, factor, *width, seed, options, block_info=None):
    location, shape = _location(block_info, None)
    extent = tuple(stop - start for start, stop in location)
    count = math.prod(extent)
    run_length, firsts = _run_layout(location, shape)
    index, factor = index.reshape(count), factor.reshape(count)
    width = np.broadcast_to(width[0], extent).reshape(count) if width else None
    out = np.empty(count, dtype=np.float64)
    try:
        for r, first in enumerate(firsts):
            rows = slice(r * run_length, (r + 1) * run_length)
            keywords = dict(options) if width is None else dict(options, width=width[rows])
            out[rows] = _decode_sample(index[rows], factor[rows], seed, stream_offset=first, **keywords)
    except (ValueError, TypeError) as exc:
        _raise_in_chunk(exc, location)
    return out.reshape(extent)


def decode_sample(index, factor, seed, *, width=None, method="hybrid", num_threads=1, **options):
    """Decode messages held in dask arrays, chunk by chunk; the samples as a dask array.

    Parameters
    ----------
    index, factor : dask.array.Array (or numpy arrays)
        The messages (``enc.index``, ``enc.factor``), same shape; chunks are
        unified.  Element ``i`` (flat C order) uses stream ``(seed, i)``.
    seed : int
    width : int, numpy array or dask array
        ``enc.width``; required for ``method="hybrid"``.
    method : str
    num_threads : int or None
        Numba threads per task (default 1).
    **options
        Further keyword arguments of :func:`rcc.decode_sample` (``prior``).

    Returns
    -------
    dask.array.Array of float64
        Exactly :func:`rcc.decode_sample` of the whole arrays, lazily.
    """
    seed = int(check_seed(seed))
    if "stream_offset" in options:
        raise TypeError("rcc.dask derives each chunk's stream_offset from the chunk layout; do not pass it")
    arrays = {"index": da.asarray(index), "factor": da.asarray(factor)}
    if arrays["index"].shape != arrays["factor"].shape:
        raise ValueError(f"factor shape {arrays['factor'].shape} must equal index shape {arrays['index'].shape} "
                         "(rcc.dask codes scalar targets)")
    options = dict(options, method=method, num_threads=num_threads)
    if isinstance(width, da.Array) or width is not None and not isinstance(width, str) and np.ndim(width):
        arrays["width"] = da.asarray(width)
        empty_width = np.ones(0, np.int64)
    else:
        options["width"] = empty_width = width
    # Decode an empty batch now, so bad arguments raise at graph construction.
    _decode_sample(np.ones(0, np.int64), np.zeros(0, np.int64), seed, **dict(options, width=empty_width))
    shape, unified = _unify(arrays)
    order = [name for name in ("index", "factor", "width") if name in unified]
    return da.map_blocks(
        _decode_block, *[unified[name] for name in order], seed=seed, options=options, dtype=np.float64,
        meta=np.empty((0,) * len(shape), np.float64),
        name=f"rcc-decode-{_token(seed, options, *[unified[n] for n in order])}",
    )


# --------------------------------------------------------------------------- bytes


@dataclass(frozen=True)
class ChunkedMessages:
    """Message bytes as one stream per chunk, with the chunk layout.

    Attributes
    ----------
    streams : dask.array.Array of object
        Shape ``numblocks`` of the messages, one ``bytes`` per chunk (a chunk
        stream is the :func:`rcc.encode_messages` stream of each of its
        contiguous runs, each preceded by its length as LEB128).
    chunks : tuple of tuple of int
        The messages' chunks (dask's ``chunks``).

    :meth:`to_bytes` packs everything into one ``bytes`` (a small index of
    the layout and the stream lengths, then the streams) and
    :meth:`from_bytes` reads it back, each chunk's stream a task of its own.
    """

    streams: da.Array
    chunks: tuple

    @property
    def shape(self):
        return tuple(sum(c) for c in self.chunks)

    def to_bytes(self):
        """Compute the streams (on the current scheduler) and pack them with their index.

        Layout: ``b"RCCD" | version | ndim | per axis: chunk count, chunk
        sizes | per chunk (C order): stream length | CRC32 of all before |
        streams``, integers as LEB128.
        """
        streams = np.asarray(self.streams.compute(), dtype=object).reshape(-1)
        header = bytearray(_MAGIC) + bytes([_VERSION]) + _varint(len(self.chunks))
        for axis in self.chunks:
            header += _varint(len(axis)) + b"".join(_varint(int(c)) for c in axis)
        header += b"".join(_varint(len(s)) for s in streams)
        header += zlib.crc32(bytes(header)).to_bytes(4, "little")
        return bytes(header) + b"".join(streams)

    @classmethod
    def from_bytes(cls, data):
        """Read :meth:`to_bytes` output; bytes from outside are checked before use."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, got {type(data).__name__}")
        data = bytes(data)
        if data[:4] != _MAGIC:
            raise ValueError("not an rcc.dask chunked message container (bad magic bytes)")
        if len(data) < 6 or data[4] != _VERSION:
            raise ValueError(f"unsupported or truncated rcc.dask container (version byte {data[4:5]!r})")
        ndim, pos = _read_varint(data, 5)
        if ndim > _MAX_NDIM:
            raise ValueError(f"corrupt container header (ndim {ndim})")
        chunks = []
        blocks = 1
        for _ in range(ndim):
            n, pos = _read_varint(data, pos)
            blocks *= n
            if blocks > len(data):  # each chunk needs at least one byte of the index
                raise ValueError("corrupt container header (more chunks than bytes)")
            axis = []
            for _ in range(n):
                size, pos = _read_varint(data, pos)
                axis.append(size)
            chunks.append(tuple(axis))
        lengths = []
        for _ in range(blocks):
            length, pos = _read_varint(data, pos)
            lengths.append(length)
        if len(data) < pos + 4 or zlib.crc32(data[:pos]) != int.from_bytes(data[pos:pos + 4], "little"):
            raise ValueError("rcc.dask container index checksum mismatch: truncated or corrupted")
        pos += 4
        if pos + sum(lengths) != len(data):
            raise ValueError(f"rcc.dask container holds {len(data) - pos} stream bytes, its index says {sum(lengths)}")
        numblocks = tuple(len(axis) for axis in chunks)
        name = f"rcc-streams-{_token(data)}"
        # Each chunk's stream becomes a graph entry of its own: a task ships only its chunk's bytes.
        graph = {}
        start = pos
        for length, block in zip(lengths, np.ndindex(numblocks)):
            cell = np.empty((1,) * ndim, dtype=object)
            cell.reshape(-1)[0] = data[start:start + length]
            graph[(name,) + block] = cell
            start += length
        streams = da.Array(HighLevelGraph.from_collections(name, graph, dependencies=()), name,
                           tuple((1,) * n for n in numblocks), dtype=object)
        return cls(streams=streams, chunks=tuple(chunks))


def _encode_messages_block(result, *, seed, method, options, block_info=None):
    location, shape = _location(block_info, 0)
    extent = tuple(stop - start for start, stop in location)
    count = math.prod(extent)
    flat = {name: np.reshape(result[name], count) for name in _FIELDS}
    run_length, firsts = _run_layout(location, shape)
    parts = []
    try:
        for r, first in enumerate(firsts):
            rows = slice(r * run_length, (r + 1) * run_length)
            enc = EncodedSample(method=method, **{name: arr[rows] for name, arr in flat.items()})
            stream = _encode_messages(enc, seed, stream_offset=first, **options)
            parts.append(_varint(len(stream)) + stream)
    except (ValueError, TypeError) as exc:
        _raise_in_chunk(exc, location)
    cell = np.empty((1,) * len(extent), dtype=object)
    cell.reshape(-1)[0] = b"".join(parts)
    return cell


def encode_messages(enc, seed, *, index_code, **options):
    """Entropy code chunked messages: one stream per chunk, lazily.

    Parameters
    ----------
    enc : DaskEncodedSample
        From :func:`encode_sample`.
    seed : int
        The seed the samples were encoded with.
    index_code : rcc.IndexCode or rcc.ConditionedIndexCode
    **options
        Further keyword arguments of :func:`rcc.encode_messages`
        (``factor_code``, ...); the widths are ``enc.width``.

    Returns
    -------
    ChunkedMessages
        ``.to_bytes()`` computes and packs it.
    """
    if not isinstance(enc, DaskEncodedSample):
        raise TypeError(f"enc must be the DaskEncodedSample of rcc.dask.encode_sample, got {type(enc).__name__}")
    seed = int(check_seed(seed))
    if "stream_offset" in options or "width" in options:
        raise TypeError("rcc.dask takes the stream offsets from the chunk layout and the widths from enc.width")
    options = dict(options, index_code=index_code)
    # Code an empty batch now, so bad arguments raise at graph construction.
    _encode_messages(EncodedSample(method=enc.method, **{name: np.zeros(0, dtype) for name, dtype in _FIELDS.items()}),
                     seed, **options)
    results = enc._results
    streams = da.map_blocks(
        _encode_messages_block, results, seed=seed, method=enc.method, options=options, dtype=object,
        chunks=tuple((1,) * n for n in results.numblocks), meta=np.empty((0,) * results.ndim, object),
        name=f"rcc-messages-{_token(results, seed, enc.method, options)}",
    )
    return ChunkedMessages(streams=streams, chunks=results.chunks)


def _decode_messages_block(cell, *width, seed, options, block_info=None):
    location, shape = _location(block_info, None)
    extent = tuple(stop - start for start, stop in location)
    count = math.prod(extent)
    run_length, firsts = _run_layout(location, shape)
    data = cell.reshape(-1)[0]
    widths = np.broadcast_to(width[0], extent).reshape(count) if width else None
    parts = []
    pos = 0
    try:
        for r, first in enumerate(firsts):
            if not isinstance(data, bytes):
                raise TypeError(f"a chunk stream must be bytes, got {type(data).__name__}")
            length, pos = _read_varint(data, pos)
            if pos + length > len(data):
                raise ValueError("chunk stream truncated")
            rows = slice(r * run_length, (r + 1) * run_length)
            keywords = dict(options)
            if widths is not None:
                keywords["width"] = widths[rows]
            index, factor = _decode_messages(data[pos:pos + length], run_length, seed, stream_offset=first,
                                             **keywords)
            parts.append({"index": index, "factor": factor})
            pos += length
        if pos != len(data):
            raise ValueError(f"chunk stream has {len(data) - pos} bytes beyond its runs")
    except (ValueError, TypeError) as exc:
        _raise_in_chunk(exc, location)
    if not parts:
        return {name: np.empty(extent, dtype) for name, dtype in _MESSAGE_FIELDS.items()}
    return _assemble(parts, _MESSAGE_FIELDS, run_length, count, extent)


def decode_messages(messages, seed, *, index_code, width=None, **options):
    """Decode :func:`encode_messages` output chunk by chunk, in parallel.

    Parameters
    ----------
    messages : ChunkedMessages or bytes
        Bytes are read with :meth:`ChunkedMessages.from_bytes`.
    seed : int
    index_code : rcc.IndexCode or rcc.ConditionedIndexCode
        The sender's code.
    width : int, numpy array or dask array
        The sender's widths (required for hybrid streams); arrays are
        rechunked to the messages' chunks.
    **options
        Further keyword arguments of :func:`rcc.decode_messages`
        (``factor_code``, ``method``).

    Returns
    -------
    index, factor : dask.array.Array of int64
        With the messages' shape and chunks.
    """
    if not isinstance(messages, ChunkedMessages):
        messages = ChunkedMessages.from_bytes(messages)
    seed = int(check_seed(seed))
    if "stream_offset" in options:
        raise TypeError("rcc.dask takes the stream offsets from the chunk layout; do not pass stream_offset")
    shape, chunks = messages.shape, messages.chunks
    options = dict(options, index_code=index_code)
    arrays = [messages.streams]
    if width is not None:
        if isinstance(width, da.Array) or np.ndim(width):
            width = da.broadcast_to(da.asarray(width), shape).rechunk(chunks)
            arrays.append(width)
        else:
            options["width"] = width
    results = da.map_blocks(
        _decode_messages_block, *arrays, seed=seed, options=options, dtype=object, chunks=chunks,
        meta=np.empty((0,) * len(shape), object),
        name=f"rcc-decode-messages-{_token(seed, options, *arrays)}",
    )
    fields = _field_arrays(results, _MESSAGE_FIELDS)
    return fields["index"], fields["factor"]
