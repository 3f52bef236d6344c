"""Message coding: index codes, decoding-factor codes and real bitstreams (:ref:`message-coding`).

:func:`rcc.encode_sample` produces integers ``(index N, factor K)``; this module
turns a batch of them into bytes and measures what they really cost.

Index codes (distributions over ``N >= 1``, each with ``bits(n) = -log2 P(n)``):

:class:`ZipfIndexCode`
    ``P(n) = n**-lam / zeta(lam)`` with ``lam = 1 + 1/(D + log2(e)/e + 1)``
    (Li & El Gamal 2018), ``D`` the KL in bits the index carries.
:class:`EmpiricalIndexCode`
    A histogram fitted to simulated indices, with a discrete power-law tail
    fitted by maximum likelihood so that every ``n >= 1`` stays codable;
    saved and loaded as versioned JSON.
:class:`UniformIndexCode`
    ``log2(num_candidates)`` bits, the textbook code of MRC.
:class:`BucketIndexCode`
    A fitted mass per ``log2`` bucket of the index, uniform inside each bucket:
    a few dozen parameters that follow a population of targets with different
    KLs (the index code ``rcc.torch.RCCChannel`` fits).
:class:`ConditionedIndexCode`
    Codes the decoding factor *first* (without the dither ``U_N``) and then the
    index with a code chosen by where ``K`` says the target sits.  Used only for
    messages whose widths make the factor's extra cost small.

Decoding-factor codes, all given the shared dither ``U_N``:

:class:`UniformFactorCode`
    Uniform over the ``M`` values that ``K + U_N in [0, M)`` allows: exactly
    ``log2 M`` bits (:ref:`transform-width-cost`).  The default where the coding transform is
    the prior (``transform="prior"``).
:class:`MarginalFactorCode`
    ``P(K = k | U = u)`` from the density of a known sample marginal at
    ``k + u`` on the transformed axis (:ref:`uq-factor-cost`), exact for small widths and
    by blocks of cells (``O(1)`` per factor) for widths up to ``2**52``.  With
    the prior as the marginal it is the default (:func:`default_factor_code`)
    under the default, wider coding transform: about
    ``log2 M - D_KL[prior || transform]`` bits on a Gaussian channel.
:class:`TabulatedFactorCode`
    The same with a fitted, tabulated density per *context* (e.g. per latent
    dimension): a learned marginal, like the factorised entropy models of
    learned compression.

Bitstreams: :func:`encode_messages` / :func:`decode_messages` write and read a
range-coded stream (``constriction``) with a small header (magic, version,
batch shape, a check of the seed/codes/widths and a CRC32 of the header and
payload), so that truncated, corrupted or mismatched streams raise
``ValueError`` instead of decoding to wrong integers.  :func:`message_bits` gives the ideal information
content of each message; :func:`measure_bits` and :func:`bits_report` compare
ideal and measured bits with the KL on the Gaussian channel.

Stream layout (version 2), all multi-byte header fields little-endian::

    b"RCC" | version (1 byte) | flags (1 byte) | batch rank r (1 byte)
    | r batch dimensions (LEB128 each) | event size (LEB128)
    | context CRC32 (4 bytes) | stream CRC32 (4 bytes) | payload

``flags`` holds the method (bits 0-1), whether the factor has an event axis
(bit 2) and whether a :class:`ConditionedIndexCode` was used (bit 3).  The
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

Index escape: a code with ``head_bits = h`` codes ``n < 2**h`` with one
categorical table plus an escape symbol; an escaped ``n`` is coded exactly
by its bucket ``b = floor(log2 n)`` (a table of the code's bucket masses),
the next 8 bits of ``n`` (a table of the code's sub-bucket masses), and the
remaining ``b - 8`` bits uniformly (the code's mass varies by less than
``lam * log2(1 + 1/256) < 0.02`` bits across such a sub-bucket), so even
``n`` near ``2**63`` costs close to its ideal information content.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import time
import zlib
from dataclasses import dataclass

import numpy as np
from scipy import special

from . import kernels
from .coding import (DEFAULT_TAIL_MASS, METHODS, EncodedSample, _as_int64, coding_transform, decode_sample,
                     encode_sample, gaussian_width)
from .random import check_seed, check_stream_offset, shared_uniform
from .targets import NORMAL_FAMILY, UNIFORM_FAMILY, Normal, Product, TruncatedNormal, Uniform

__all__ = [
    "STREAM_VERSION",
    "CODE_FORMAT_VERSION",
    "DEFAULT_MAX_FACTOR_OVERHEAD",
    "IndexCode",
    "ZipfIndexCode",
    "EmpiricalIndexCode",
    "UniformIndexCode",
    "BucketIndexCode",
    "ConditionedIndexCode",
    "FactorCode",
    "UniformFactorCode",
    "default_factor_code",
    "MarginalFactorCode",
    "TabulatedFactorCode",
    "load_index_code",
    "zipf_exponent",
    "encode_messages",
    "decode_messages",
    "MessageBits",
    "message_bits",
    "BitsReport",
    "measure_bits",
    "gaussian_channel_targets",
    "index_kl_bits_gaussian_channel",
    "bits_report",
]

#: Version of the bitstream layout written by :func:`encode_messages` (1 is still read).
STREAM_VERSION = 2
#: Version of the JSON format of saved index codes.
CODE_FORMAT_VERSION = 1

_MAGIC = b"RCC"
_LOG2E_OVER_E = math.log2(math.e) / math.e
_LN2 = math.log(2.0)
_MAX_BUCKET = 62  # indices are int64: n < 2**63, so floor(log2 n) <= 62
_SUB_BITS = 8  # bits of an escaped index coded with the code's own masses
_CHUNK_BITS = 16  # low bits of an escaped index go out in uniform chunks of this size
_MAX_UNIFORM = (1 << 24) - 1  # constriction's Uniform needs 2 <= size < 2**24
_SPLIT_BITS = 12
_METHOD_CODES = {name: i for i, name in enumerate(METHODS)}
_FLAG_EVENT = 4
_FLAG_CONDITIONED = 8
_KNOWN_FLAGS = 3 | _FLAG_EVENT | _FLAG_CONDITIONED
#: ZipfIndexCode's KL is at most this (its exponent stays measurably above 1).
_MAX_ZIPF_KL_BITS = float(1 << 20)
#: EmpiricalIndexCode's histogram holds at most this many counts, totalling under 2**62.
_MAX_HEAD_COUNTS = 1 << 20
_MAX_TOTAL_COUNT = 1 << 62
_MAX_RANK = 32  # numpy's limit on array dimensions is 64; batches of more are not plausible
_INT64_MAX = 2**63 - 1
#: Factors a reader accepts from a header it was not told the count of: a stream of
#: ``n`` bytes may claim ``_FREE_FACTORS + _FACTORS_PER_BYTE * n`` of them.
_FREE_FACTORS = 1 << 20
_FACTORS_PER_BYTE = 32
#: Default of :class:`ConditionedIndexCode`: condition messages with ``sum_j 1/M_j <= 0.15``
#: (``M >= 7`` in one dimension).  Measured on the Gaussian channel with 10^5 targets and
#: 8 bins: conditioning loses 0.03 bits at ``M = 5`` and gains 0.05 at ``M = 7``, 0.06 at
#: ``M = 10``, 0.10 at ``M = 14`` and 0.14 at ``M = 20``.
DEFAULT_MAX_FACTOR_OVERHEAD = 0.15


def _constriction():
    import constriction

    return constriction


# --------------------------------------------------------------------------- argument checks


def _check_int(value, name, minimum):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if value > _INT64_MAX:
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


def _check_head_bits(head_bits):
    head_bits = _check_int(head_bits, "head_bits", _SUB_BITS)
    if head_bits > 20:
        raise ValueError(f"head_bits must be in [{_SUB_BITS}, 20], got {head_bits}")
    return head_bits


def _bit_length(n):
    """Exact ``floor(log2 n)`` of positive int64 values."""
    n = np.asarray(n, dtype=np.int64)
    b = np.floor(np.log2(n.astype(np.float64))).astype(np.int64)
    u = n.astype(np.uint64)
    b = np.minimum(b, _MAX_BUCKET)
    too_big = np.right_shift(u, b.astype(np.uint64)) == 0
    b = np.where(too_big, b - 1, b)
    too_small = (b < _MAX_BUCKET) & (np.right_shift(u, (b + 1).astype(np.uint64)) != 0)
    return np.where(too_small, b + 1, b)


def _normalise(weights):
    weights = np.asarray(weights, dtype=np.float64)
    weights = np.where(np.isfinite(weights) & (weights > 0), weights, 0.0)
    total = weights.sum(axis=-1, keepdims=True)
    uniform = np.full_like(weights, 1.0 / weights.shape[-1])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, weights / np.where(total > 0, total, 1.0), uniform)


# --------------------------------------------------------------------------- index codes


class IndexCode:
    """A probability model of the candidate index ``N >= 1``.

    Subclasses define the survival function :meth:`sf` (``P(N > n)``) and the
    mass function :meth:`pmf`; the bitstream writer builds its tables from
    them.  ``head_bits`` sets the size of the directly coded head
    (``n < 2**head_bits``); larger indices are escaped and coded exactly.
    """

    head_bits = 10

    # -- the model ---------------------------------------------------------------
    def sf(self, n):
        """``P(N > n)`` for (float or integer) ``n >= 0``, vectorised."""
        raise TypeError(f"{type(self).__name__} does not define sf")

    def pmf(self, n):
        """``P(N = n)``, vectorised over integer ``n >= 1``."""
        n = np.asarray(n, dtype=np.float64)
        return np.maximum(self.sf(n - 1.0) - self.sf(n), 0.0)

    def bits(self, n):
        """Ideal information content ``-log2 P(N = n)`` in bits.

        Parameters
        ----------
        n : int or array_like of int
            Indices, ``>= 1``.

        Returns
        -------
        float or ndarray
            ``inf`` where the code gives ``n`` no probability.
        """
        arr = _int_array(n, "n", minimum=1)
        with np.errstate(divide="ignore"):
            out = -np.log2(self.pmf(arr))
        return float(out) if out.ndim == 0 else out

    def interval_probability(self, low, high):
        """``P(low <= N < high)``, vectorised."""
        low = np.asarray(low, dtype=np.float64)
        high = np.asarray(high, dtype=np.float64)
        return np.maximum(self.sf(low - 1.0) - self.sf(high - 1.0), 0.0)

    # -- persistence -------------------------------------------------------------
    def to_dict(self):
        """The code's parameters as a JSON-ready dict (see :meth:`save`)."""
        raise TypeError(f"{type(self).__name__} does not define to_dict")

    @classmethod
    def from_dict(cls, data):
        """Rebuild a code from :meth:`to_dict` output."""
        return _code_from_dict(data, expected=cls)

    def save(self, path):
        """Write the code as human-readable, versioned JSON to ``path``."""
        with open(os.fspath(path), "w", encoding="utf-8") as handle:
            json.dump(self.to_dict(), handle, indent=1)
            handle.write("\n")

    @classmethod
    def load(cls, path):
        """Read a code written by :meth:`save`; raises ``ValueError`` on a wrong or damaged file."""
        return _load_code(path, cls.from_dict)

    @property
    def fingerprint(self):
        """CRC32 of the canonical JSON form: equal codes have equal fingerprints."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return zlib.crc32(text.encode("utf-8"))

    def __eq__(self, other):
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    def __hash__(self):
        return hash((type(self).__name__, self.fingerprint))

    # -- coder tables (cached) ---------------------------------------------------
    def __getstate__(self):
        # The cached tables hold constriction models, which do not pickle; they
        # are rebuilt on first use, so a code can be sent to other processes.
        state = dict(self.__dict__)
        state.pop("_tables", None)
        return state

    def _coder(self):
        tables = self.__dict__.get("_tables")
        if tables is None:
            tables = _IndexTables(self)
            self.__dict__["_tables"] = tables
        return tables


def zipf_exponent(kl_bits):
    """Li & El Gamal's Zipf exponent ``1 + 1 / (D + log2(e)/e + 1)`` for ``D = kl_bits``."""
    kl_bits = _check_real(kl_bits, "kl_bits", low=0.0)
    return 1.0 + 1.0 / (kl_bits + _LOG2E_OVER_E + 1.0)


class ZipfIndexCode(IndexCode):
    """Zipf code ``P(n) = n**-lam / zeta(lam)`` for ``n >= 1`` (Li & El Gamal 2018; :ref:`message-zipf`).

    Parameters
    ----------
    kl_bits : float, optional
        ``D``, the expected KL in bits carried by the index (for hybrid coding
        ``I - log2 M``); sets ``lam = 1 + 1/(D + log2(e)/e + 1)`` (Li & El
        Gamal 2018, who bound the total cost by ``I + log2(I + 1) + 4``).
        A negative estimate is taken as ``D = 0``.
    exponent : float, optional
        ``lam > 1`` directly (give exactly one of ``kl_bits`` and
        ``exponent``); :meth:`fit` chooses it by maximum likelihood.
    head_bits : int
        Indices below ``2**head_bits`` are coded from one table.

    Examples
    --------
    >>> import rcc
    >>> code = rcc.ZipfIndexCode(kl_bits=2.0)
    >>> round(code.exponent, 4)
    1.2832
    >>> round(float(code.bits(1)), 3)
    2.046
    """

    def __init__(self, kl_bits=None, *, exponent=None, head_bits=10):
        if (kl_bits is None) == (exponent is None):
            raise TypeError("give exactly one of kl_bits and exponent")
        if kl_bits is not None:
            # An estimate below 0 (``KL - log2 M`` under a transform wider than the prior, whose
            # factors carry less than log2 M) means the index carries nothing: D = 0.
            self.kl_bits = max(0.0, _check_real(kl_bits, "kl_bits", low=-_MAX_ZIPF_KL_BITS, high=_MAX_ZIPF_KL_BITS))
            self.exponent = zipf_exponent(self.kl_bits)
        else:
            self.kl_bits = None
            self.exponent = _check_real(exponent, "exponent", low=1.0, low_open=True, high=64.0)
            if self.exponent <= 1.0 + 1e-9:
                raise ValueError(f"exponent must be > 1 (a normalisable Zipf law), got {self.exponent}")
        self.head_bits = _check_head_bits(head_bits)
        self._log2_zeta = math.log2(special.zeta(self.exponent, 1.0))
        if not math.isfinite(self._log2_zeta):
            raise ValueError(f"exponent {self.exponent!r} is too close to 1 for a normalisable Zipf law")

    @classmethod
    def fit(cls, indices, *, head_bits=10):
        """Maximum-likelihood Zipf exponent for observed indices.

        Parameters
        ----------
        indices : array_like of int
            Simulated indices (``>= 1``), e.g. ``enc.index`` of representative targets.
        head_bits : int

        Returns
        -------
        ZipfIndexCode
        """
        n = _int_array(indices, "indices", minimum=1).ravel()
        if n.size == 0:
            raise ValueError("indices must not be empty")
        mean_log = float(np.mean(np.log(n)))
        if mean_log == 0.0:
            return cls(exponent=64.0, head_bits=head_bits)

        def negative_log_likelihood(lam):
            return lam * mean_log + math.log(special.zeta(lam, 1.0))

        from scipy import optimize  # imported on use (~0.3 s at import)

        best = optimize.minimize_scalar(negative_log_likelihood, bounds=(1.0 + 1e-6, 64.0), method="bounded",
                                        options={"xatol": 1e-10})
        return cls(exponent=float(best.x), head_bits=head_bits)

    def sf(self, n):
        n = np.asarray(n, dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            tail = special.zeta(self.exponent, np.maximum(n, 0.0) + 1.0) * 2.0 ** (-self._log2_zeta)
        return np.where(n < 1.0, 1.0, np.minimum(tail, 1.0))

    def pmf(self, n):
        n = np.asarray(n, dtype=np.float64)
        with np.errstate(divide="ignore"):
            return np.where(n >= 1.0, np.exp2(-self.exponent * np.log2(np.maximum(n, 1.0)) - self._log2_zeta), 0.0)

    def bits(self, n):
        arr = _int_array(n, "n", minimum=1)
        out = self.exponent * np.log2(arr.astype(np.float64)) + self._log2_zeta
        return float(out) if out.ndim == 0 else out

    def to_dict(self):
        return {
            "format": "rcc.IndexCode",
            "version": CODE_FORMAT_VERSION,
            "type": "ZipfIndexCode",
            "kl_bits": self.kl_bits,
            "exponent": self.exponent,
            "head_bits": self.head_bits,
        }

    @classmethod
    def _from_fields(cls, data):
        head_bits = data.get("head_bits", 10)
        if data.get("kl_bits") is not None:
            code = cls(data["kl_bits"], head_bits=head_bits)
            if not math.isclose(code.exponent, data["exponent"], rel_tol=1e-12):
                raise ValueError("ZipfIndexCode file: exponent does not match kl_bits")
            return code
        return cls(exponent=data["exponent"], head_bits=head_bits)

    def __repr__(self):
        if self.kl_bits is not None:
            return f"ZipfIndexCode(kl_bits={self.kl_bits!r})  # exponent {self.exponent:.6g}"
        return f"ZipfIndexCode(exponent={self.exponent!r})"


class EmpiricalIndexCode(IndexCode):
    """Histogram of simulated indices with a fitted power-law tail.

    ``P(n) = (c_n + a) / T`` for ``n <= n0`` (``c_n`` the observed counts,
    ``a`` a pseudo-count) and ``P(n) = (c_tail + a) / T * n**-alpha /
    zeta(alpha, n0 + 1)`` for ``n > n0``, where ``c_tail`` counts the
    observations above ``n0`` and ``alpha`` is their discrete power-law
    maximum-likelihood exponent (Clauset, Shalizi & Newman 2009).  Every
    ``n >= 1`` has positive probability.

    Build it with :meth:`fit`; save and load it with :meth:`save` / :meth:`load`
    (JSON holding the integer counts, so a loaded code is identical).

    Parameters
    ----------
    head_counts : array_like of int
        ``c_1 .. c_n0``.
    tail_count : int
        Observations above ``n0``.
    tail_exponent : float
        ``alpha > 1``.
    pseudo_count : float
        ``a >= 0`` added to every head count and to the tail count.
    head_bits : int, optional
        Table size of the bitstream writer; by default enough for ``n0``
        (at least 10, at most 16).
    """

    def __init__(self, head_counts, tail_count, tail_exponent, *, pseudo_count=0.5, head_bits=None):
        counts = _int_array(head_counts, "head_counts", minimum=0).ravel()
        if counts.size == 0:
            raise ValueError("head_counts must hold at least one count (n0 >= 1)")
        if counts.size > _MAX_HEAD_COUNTS:
            raise ValueError(f"head_counts holds {counts.size} counts; at most {_MAX_HEAD_COUNTS} are supported")
        self.head_counts = counts
        self.tail_count = _check_int(tail_count, "tail_count", 0)
        self.tail_exponent = _check_real(tail_exponent, "tail_exponent", low=1.0, low_open=True, high=64.0)
        self.pseudo_count = _check_real(pseudo_count, "pseudo_count", low=0.0, high=float(_MAX_TOTAL_COUNT))
        # The exact (Python integer) sum: an int64 sum of large counts would wrap.
        observed = sum(int(c) for c in counts.tolist()) + self.tail_count
        if observed >= _MAX_TOTAL_COUNT:
            raise ValueError(f"head_counts and tail_count sum to {observed}, more than 2**62 observations")
        total = float(observed) + self.pseudo_count * (counts.size + 1)
        if total <= 0:
            raise ValueError("the code has no mass: give counts or a positive pseudo_count")
        if self.tail_count + self.pseudo_count <= 0:
            raise ValueError("the tail needs mass (tail_count > 0 or pseudo_count > 0) so that every n is codable")
        if head_bits is None:
            head_bits = min(16, max(10, int(counts.size).bit_length()))
        self.head_bits = _check_head_bits(head_bits)
        self._total = float(total)
        head_mass = (counts + self.pseudo_count) / self._total
        self._head_pmf = head_mass
        self._tail_mass = (self.tail_count + self.pseudo_count) / self._total
        # sf at n = 0 .. n0, summed from the right for accuracy.
        self._head_sf = np.concatenate([np.cumsum(head_mass[::-1])[::-1], [0.0]]) + self._tail_mass
        self._zeta_n0 = float(special.zeta(self.tail_exponent, counts.size + 1.0))

    @property
    def n0(self):
        """Largest index of the histogram part."""
        return int(self.head_counts.size)

    @classmethod
    def fit(cls, indices, *, tail_fraction=0.02, pseudo_count=0.5, min_tail_samples=10, head_bits=None):
        """Fit the code to simulated indices of representative targets.

        Parameters
        ----------
        indices : array_like of int
            Indices ``>= 1`` (e.g. ``enc.index`` over many targets and seeds).
        tail_fraction : float
            ``n0`` is the smallest index with at most this fraction of the
            observations above it; those observations fit the tail exponent.
        pseudo_count : float
            Added to each histogram count and to the tail count.
        min_tail_samples : int
            With fewer tail observations the exponent is not fitted but set to 2.
        head_bits : int, optional

        Returns
        -------
        EmpiricalIndexCode
        """
        n = _int_array(indices, "indices", minimum=1).ravel()
        if n.size == 0:
            raise ValueError("indices must not be empty")
        tail_fraction = _check_real(tail_fraction, "tail_fraction", low=0.0, high=1.0)
        min_tail_samples = _check_int(min_tail_samples, "min_tail_samples", 1)
        sorted_n = np.sort(n)
        allowed_above = int(math.floor(tail_fraction * n.size))
        n0 = int(sorted_n[n.size - 1 - allowed_above])
        n0 = max(1, min(n0, 1 << 16))
        head = np.bincount(np.minimum(n, n0 + 1), minlength=n0 + 2)[1 : n0 + 1]
        tail = n[n > n0]
        if tail.size >= min_tail_samples:
            sum_log = float(np.sum(np.log(tail.astype(np.float64))))
            start = n0 + 1.0

            def negative_log_likelihood(alpha):
                return alpha * sum_log + tail.size * math.log(special.zeta(alpha, start))

            from scipy import optimize  # imported on use (~0.3 s at import)

            best = optimize.minimize_scalar(negative_log_likelihood, bounds=(1.0 + 1e-6, 64.0), method="bounded",
                                            options={"xatol": 1e-10})
            exponent = float(best.x)
        else:
            exponent = 2.0
        return cls(head, int(tail.size), exponent, pseudo_count=pseudo_count, head_bits=head_bits)

    def sf(self, n):
        n = np.asarray(n, dtype=np.float64)
        n0 = self.n0
        clipped = np.clip(n, 0.0, float(n0))
        head_part = self._head_sf[clipped.astype(np.int64)]
        with np.errstate(over="ignore", invalid="ignore"):
            tail_part = self._tail_mass * special.zeta(self.tail_exponent, np.maximum(n, float(n0)) + 1.0) / self._zeta_n0
        return np.where(n < 0, 1.0, np.where(n < n0, head_part, np.minimum(tail_part, self._tail_mass)))

    def pmf(self, n):
        n = np.asarray(n, dtype=np.float64)
        n0 = self.n0
        index = np.clip(n, 1.0, float(n0)).astype(np.int64) - 1
        with np.errstate(divide="ignore"):
            tail = self._tail_mass * np.exp(-self.tail_exponent * np.log(np.maximum(n, 1.0))) / self._zeta_n0
        return np.where(n < 1.0, 0.0, np.where(n <= n0, self._head_pmf[index], tail))

    def bits(self, n):
        arr = _int_array(n, "n", minimum=1)
        x = arr.astype(np.float64)
        head = self._head_pmf[np.clip(arr, 1, self.n0) - 1]
        with np.errstate(divide="ignore"):
            out = np.where(
                arr <= self.n0,
                -np.log2(head),
                -math.log2(self._tail_mass) + self.tail_exponent * np.log2(x) + math.log2(self._zeta_n0),
            )
        return float(out) if out.ndim == 0 else out

    def to_dict(self):
        return {
            "format": "rcc.IndexCode",
            "version": CODE_FORMAT_VERSION,
            "type": "EmpiricalIndexCode",
            "description": (
                "P(n) = (head_counts[n-1] + pseudo_count) / T for n <= len(head_counts); "
                "P(n) = (tail_count + pseudo_count) / T * n**-tail_exponent / zeta(tail_exponent, n0 + 1) "
                "above, T = sum(head_counts) + tail_count + pseudo_count * (len(head_counts) + 1)"
            ),
            "head_counts": [int(c) for c in self.head_counts],
            "tail_count": self.tail_count,
            "tail_exponent": self.tail_exponent,
            "pseudo_count": self.pseudo_count,
            "head_bits": self.head_bits,
        }

    @classmethod
    def _from_fields(cls, data):
        return cls(data["head_counts"], data["tail_count"], data["tail_exponent"],
                   pseudo_count=data["pseudo_count"], head_bits=data["head_bits"])

    def __repr__(self):
        return (f"EmpiricalIndexCode(n0={self.n0}, samples={int(self.head_counts.sum()) + self.tail_count}, "
                f"tail_exponent={self.tail_exponent:.4g})")


class UniformIndexCode(IndexCode):
    """``P(n) = 1 / num_candidates`` for ``1 <= n <= num_candidates``.

    The ``log2 num_candidates`` bits of MRC.  Indices above ``num_candidates``
    cannot be coded (``ValueError``).  For ORC, whose indices are skewed towards
    small values, :class:`ZipfIndexCode` or :class:`EmpiricalIndexCode` are cheaper.
    """

    def __init__(self, num_candidates, *, head_bits=None):
        self.num_candidates = _check_int(num_candidates, "num_candidates", 1)
        if head_bits is None:
            head_bits = min(16, max(10, (self.num_candidates + 1).bit_length()))
        self.head_bits = _check_head_bits(head_bits)

    def sf(self, n):
        n = np.asarray(n, dtype=np.float64)
        return np.clip(1.0 - np.maximum(n, 0.0) / self.num_candidates, 0.0, 1.0)

    def pmf(self, n):
        n = np.asarray(n, dtype=np.float64)
        return np.where((n >= 1) & (n <= self.num_candidates), 1.0 / self.num_candidates, 0.0)

    def to_dict(self):
        return {
            "format": "rcc.IndexCode",
            "version": CODE_FORMAT_VERSION,
            "type": "UniformIndexCode",
            "num_candidates": self.num_candidates,
            "head_bits": self.head_bits,
        }

    @classmethod
    def _from_fields(cls, data):
        return cls(data["num_candidates"], head_bits=data["head_bits"])

    def __repr__(self):
        return f"UniformIndexCode(num_candidates={self.num_candidates})"


class _IndexTables:
    """Probability tables of the escape coder for one index code."""

    def __init__(self, code):
        cons = _constriction()
        h = code.head_bits
        self.head_bits = h
        self.escape = (1 << h) - 1
        head = np.empty(1 << h, dtype=np.float64)
        head[:-1] = code.pmf(np.arange(1, 1 << h, dtype=np.float64))
        head[-1] = float(code.sf(float(self.escape)))
        self.head_probs = _normalise(head)
        self.head_model = cons.stream.model.Categorical(self.head_probs, perfect=False)
        buckets = np.arange(h, _MAX_BUCKET + 1)
        low = np.exp2(buckets.astype(np.float64))
        self.bucket_probs = _normalise(code.interval_probability(low, 2.0 * low))
        self.bucket_model = cons.stream.model.Categorical(self.bucket_probs, perfect=False)
        sub = np.arange(1 << _SUB_BITS, dtype=np.float64)
        step = np.exp2((buckets - _SUB_BITS).astype(np.float64))[:, None]
        starts = low[:, None] + sub[None, :] * step
        self.sub_probs = _normalise(code.interval_probability(starts, starts + step))


# --------------------------------------------------------------------------- bucket index code


def _index_bucket(n):
    """``floor(log2 n)`` of positive integer indices (exact for int64)."""
    n = np.asarray(n, dtype=np.int64)
    bucket = np.floor(np.log2(n.astype(np.float64))).astype(np.int64)
    bucket = np.where(np.left_shift(np.int64(1), np.minimum(bucket, 62)) > n, bucket - 1, bucket)
    too_small = (bucket < 62) & (np.left_shift(np.int64(1), np.minimum(bucket + 1, 62)) <= n)
    return np.where(too_small, bucket + 1, bucket)


class BucketIndexCode(IndexCode):
    r"""Index code with a fitted mass per ``log2`` bucket, uniform inside each bucket.

    ``P(N = n) = p_b / 2**b`` for ``b = floor(log2 n)``, ``b = 0 .. 62``.  The race's
    index is close to log-uniform over a range set by the target's KL
    (``P(N = n) ~ 1/n`` below ``2**D``), so within a bucket its mass is nearly flat
    (the flat approximation costs < 0.03 bits) while the bucket masses follow the
    spread of KLs across the population of targets.  Fitted to the indices of
    representative targets with a few dozen parameters, it generalises from a few
    thousand samples, where a per-index histogram would not.

    Parameters
    ----------
    bucket_weights : array_like of float, shape (63,)
        Positive weights of the buckets ``0 .. 62``; ``p_b`` is their normalisation
        (kept as given in :meth:`to_dict`, so a saved code reloads identically).
    head_bits : int, optional
        Indices below ``2**head_bits`` are coded from one table (default 10).
    """

    def __init__(self, bucket_weights, *, head_bits=10):
        weights = np.asarray(bucket_weights, dtype=np.float64).reshape(-1)
        if weights.size != 63:
            raise ValueError(f"bucket_weights must have 63 entries, got {weights.size}")
        if not (np.all(np.isfinite(weights)) and np.all(weights > 0)):
            raise ValueError("bucket_weights must be positive and finite")
        with np.errstate(over="ignore"):
            weights_total = weights.sum()
        if not np.isfinite(weights_total) or not np.all(weights / weights_total > 0):
            raise ValueError("bucket_weights must sum to a finite total in which every bucket keeps a positive share")
        self.bucket_weights = weights
        self.bucket_probabilities = weights / weights.sum()
        if isinstance(head_bits, (bool, np.bool_)) or not isinstance(head_bits, numbers.Integral):
            raise TypeError(f"head_bits must be an integer, got {head_bits!r}")
        if not 8 <= head_bits <= 20:
            raise ValueError(f"head_bits must be in [8, 20], got {head_bits}")
        self.head_bits = int(head_bits)
        # mass of the buckets above b, for b = 0 .. 62
        self._above = np.concatenate([np.cumsum(self.bucket_probabilities[::-1])[::-1][1:], [0.0]])

    @classmethod
    def fit(cls, indices, *, pseudo_count=0.5, tail_ratio=0.5, head_bits=10):
        """Bucket masses from observed indices.

        ``p_b`` is proportional to ``count_b + pseudo_count`` up to the largest
        observed bucket ``B`` and to ``pseudo_count * tail_ratio**(b - B)`` above
        it, so that every index stays codable.

        Parameters
        ----------
        indices : array_like of int
            Indices ``>= 1`` of representative targets.
        pseudo_count : float, optional
        tail_ratio : float, optional
            Geometric decay of the masses above the observed range, in ``(0, 1)``.
        head_bits : int, optional

        Returns
        -------
        BucketIndexCode
        """
        n = np.asarray(indices).reshape(-1)
        if n.size == 0:
            raise ValueError("indices must not be empty")
        if n.dtype.kind not in "iu" or n.min() < 1:
            raise ValueError("indices must be integers >= 1")
        pseudo_count = _check_real(pseudo_count, "pseudo_count", low=0.0, low_open=True)
        tail_ratio = _check_real(tail_ratio, "tail_ratio", low=0.0, low_open=True)
        if tail_ratio >= 1.0:
            raise ValueError(f"tail_ratio must be in (0, 1), got {tail_ratio}")
        buckets = _index_bucket(n)
        counts = np.bincount(buckets, minlength=63).astype(np.float64)[:63]
        top = int(buckets.max())
        weights = counts + pseudo_count
        above = np.arange(63) > top
        weights[above] = pseudo_count * tail_ratio ** (np.arange(63)[above] - top)
        return cls(weights, head_bits=head_bits)

    def sf(self, n):
        n = np.floor(np.asarray(n, dtype=np.float64))
        safe = np.clip(n, 1.0, 2.0**63 - 1.0)
        bucket = np.clip(np.floor(np.log2(safe)), 0, 62).astype(np.int64)
        start = np.exp2(bucket.astype(np.float64))
        bucket = np.where(start > safe, bucket - 1, bucket)
        start = np.exp2(bucket.astype(np.float64))
        # indices of bucket b above n: 2**(b+1) - 1 - n of the 2**b
        inside = self.bucket_probabilities[bucket] * (2.0 * start - 1.0 - safe) / start
        return np.where(n < 1.0, 1.0, self._above[bucket] + inside)

    def pmf(self, n):
        n = np.asarray(n, dtype=np.float64)
        safe = np.clip(n, 1.0, 2.0**63 - 1.0)
        bucket = np.clip(np.floor(np.log2(safe)), 0, 62).astype(np.int64)
        bucket = np.where(np.exp2(bucket.astype(np.float64)) > safe, bucket - 1, bucket)
        mass = self.bucket_probabilities[bucket] * np.exp2(-bucket.astype(np.float64))
        return np.where(n >= 1.0, mass, 0.0)

    def to_dict(self):
        return {
            "format": "rcc.IndexCode",
            "version": CODE_FORMAT_VERSION,
            "type": "BucketIndexCode",
            "description": "P(n) = bucket_weights[b] / sum(bucket_weights) / 2**b with b = floor(log2 n)",
            "bucket_weights": [float(w) for w in self.bucket_weights],
            "head_bits": self.head_bits,
        }

    @classmethod
    def _from_fields(cls, data):
        return cls(data["bucket_weights"], head_bits=data["head_bits"])

    def __repr__(self):
        top = int(np.flatnonzero(self.bucket_probabilities > 1e-6).max())
        return f"BucketIndexCode(buckets up to 2**{top})"


_CODE_TYPES = {
    "ZipfIndexCode": ZipfIndexCode,
    "BucketIndexCode": BucketIndexCode,
    "EmpiricalIndexCode": EmpiricalIndexCode,
    "UniformIndexCode": UniformIndexCode,
}


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


def _code_from_dict(data, expected=None):
    if not isinstance(data, dict):
        raise ValueError(f"an index code is stored as a JSON object, got {type(data).__name__}")
    if data.get("format") != "rcc.IndexCode":
        raise ValueError(f"not an rcc index code (format field {data.get('format')!r})")
    version = data.get("version")
    if version != CODE_FORMAT_VERSION:
        raise ValueError(f"unsupported index-code format version {version!r} (this rcc reads {CODE_FORMAT_VERSION})")
    name = data.get("type")
    if name == "ConditionedIndexCode":
        cls = ConditionedIndexCode
    elif name in _CODE_TYPES:
        cls = _CODE_TYPES[name]
    else:
        raise ValueError(f"unknown index code type {name!r}")
    if expected is not None and expected not in (IndexCode,) and not issubclass(cls, expected):
        raise ValueError(f"the data holds a {name}, not a {expected.__name__}")
    try:
        return cls._from_fields(data)
    except KeyError as exc:
        raise ValueError(f"{name} data lacks the field {exc.args[0]!r}") from None
    except (TypeError, OverflowError) as exc:
        raise ValueError(f"{name} data has a field of the wrong type: {exc}") from None


def load_index_code(path):
    """Load any index code saved with ``save`` (Zipf, empirical, uniform, bucket or conditioned).

    Sizes and numeric ranges are validated: a damaged or hostile file raises
    ``ValueError`` naming the file and the field, and a code that loads is usable.
    """
    return _load_code(path, _code_from_dict)


# --------------------------------------------------------------------------- conditioned index code


def _position_surprisal(factor, width):
    """``sum_j x_j**2 / (2 ln 2)`` with ``x_j = Phi^-1(clip(K_j, 1/2, M_j - 1/2) / M_j)``.

    For a Gaussian prior this is ``log2 p(mode) - log2 p(z)`` at the position
    the decoding factors point to: the KL carried by the index of a Gaussian
    target grows by exactly this amount as the target moves away from the mode.
    """
    factor = np.asarray(factor, dtype=np.float64)
    width = np.asarray(width, dtype=np.float64)
    t = np.clip(factor, 0.5, width - 0.5) / width
    x = special.ndtri(t)
    s = x * x / (2.0 * _LN2)
    return s.reshape(s.shape[0], -1).sum(axis=1)


def _factor_first_overhead(width):
    """Extra bits of coding each ``K`` without ``U_N``: ``sum_j 1/M_j`` per message."""
    width = np.asarray(width, dtype=np.float64)
    return (1.0 / width).reshape(width.shape[0], -1).sum(axis=1)


class ConditionedIndexCode:
    """Index code conditioned on the decoding factor (:ref:`message-conditioned`).

    For a message whose widths satisfy ``sum_j 1/M_j <= max_factor_overhead``
    the factor is coded first, without the dither ``U_N`` (``K`` in
    ``{0..M}`` with probabilities ``1/(2M), 1/M, ..., 1/M, 1/(2M)``: the
    exact law of ``K`` when the transformed sample is uniform on ``[0, M)``,
    ``log2 M + 1/M`` bits on average), and the index is then coded with
    ``codes[bin]``, where the bin comes from the prior surprisal of the
    position ``K`` points to (:func:`_position_surprisal`): targets far from
    the prior's mode have narrow transformed supports and large indices.
    Other messages (small widths, where ``1/M`` would eat the gain, and the
    prior-proposal methods) use ``fallback`` with the usual order (index, then
    ``K`` given ``U_N``).  The feature assumes a Gaussian prior.

    On the Gaussian channel (empirical codes, 8 bins) this saves about 0.05
    bits per sample at ``M = 7-10`` and 0.15-0.2 bits for ``M >= 20``, and it
    loses for ``M <= 5``; hence the default ``max_factor_overhead = 0.15``.

    Parameters
    ----------
    edges : array_like of float
        Increasing bin edges on the surprisal (``len(codes) - 1`` of them).
    codes : sequence of IndexCode
        One code per bin.
    fallback : IndexCode
        Code for the messages not conditioned.
    max_factor_overhead : float
        Largest ``sum_j 1/M_j`` (bits) for which a message is conditioned.
    """

    def __init__(self, edges, codes, fallback, *, max_factor_overhead=DEFAULT_MAX_FACTOR_OVERHEAD):
        edges = np.asarray(edges, dtype=np.float64).ravel()
        codes = list(codes)
        if not codes or not all(isinstance(c, IndexCode) for c in codes):
            raise TypeError("codes must be a non-empty sequence of IndexCode")
        if not isinstance(fallback, IndexCode):
            raise TypeError(f"fallback must be an IndexCode, got {type(fallback).__name__}")
        if edges.size != len(codes) - 1:
            raise ValueError(f"need len(codes) - 1 = {len(codes) - 1} edges, got {edges.size}")
        if not np.isfinite(edges).all() or (np.diff(edges) <= 0).any():
            raise ValueError("edges must be finite and strictly increasing")
        self.edges = edges
        self.codes = codes
        self.fallback = fallback
        self.max_factor_overhead = _check_real(max_factor_overhead, "max_factor_overhead", low=0.0)

    @classmethod
    def fit(cls, indices, factors, widths, *, kl_bits=None, kind="empirical", num_bins=8,
            max_factor_overhead=DEFAULT_MAX_FACTOR_OVERHEAD, **code_options):
        """Fit per-bin codes to simulated messages.

        Parameters
        ----------
        indices : array_like of int, shape (B,)
        factors : array_like of int, shape (B,) or (B, d)
        widths : array_like of int, broadcastable to ``factors``
        kl_bits : array_like of float, shape (B,), optional
            KL of each target; required for ``kind="zipf"``, whose bin codes are
            ``ZipfIndexCode(mean(kl_bits - sum log2 M))`` over the bin.
        kind : {"empirical", "zipf"}
        num_bins : int
            Bins at quantiles of the surprisal of the conditioned messages
            (8 is a good choice for 10^4-10^5 training messages).
        max_factor_overhead : float
        **code_options
            Passed to :meth:`EmpiricalIndexCode.fit` (``kind="empirical"``).

        Returns
        -------
        ConditionedIndexCode
        """
        indices = _int_array(indices, "indices", minimum=1).ravel()
        factors = _int_array(factors, "factors", minimum=0)
        if factors.shape[:1] != indices.shape:
            raise ValueError(f"factors shape {factors.shape} must start with the number of indices {indices.size}")
        widths = np.broadcast_to(_int_array(widths, "widths", minimum=1), factors.shape)
        num_bins = _check_int(num_bins, "num_bins", 1)
        if kind not in ("empirical", "zipf"):
            raise ValueError(f"kind must be 'empirical' or 'zipf', got {kind!r}")
        if kind == "zipf":
            if kl_bits is None:
                raise ValueError("kind='zipf' needs kl_bits")
            kl = np.asarray(kl_bits, dtype=np.float64).ravel()
            if kl.shape != indices.shape:
                raise ValueError("kl_bits must have one value per index")
            index_kl = np.maximum(kl - np.log2(widths.astype(np.float64)).reshape(indices.size, -1).sum(axis=1), 0.0)

            def make(mask):
                return ZipfIndexCode(float(index_kl[mask].mean()) if mask.any() else float(index_kl.mean()))
        else:

            def make(mask):
                return EmpiricalIndexCode.fit(indices[mask] if mask.any() else indices, **code_options)

        overhead = _factor_first_overhead(widths)
        eligible = overhead <= max_factor_overhead
        surprisal = _position_surprisal(factors, widths)
        if eligible.any() and num_bins > 1:
            quantiles = np.quantile(surprisal[eligible], np.linspace(0.0, 1.0, num_bins + 1)[1:-1])
            edges = np.unique(quantiles)
        else:
            edges = np.zeros(0)
        bins = np.searchsorted(edges, surprisal, side="right")
        codes = [make(eligible & (bins == b)) for b in range(edges.size + 1)]
        fallback = make(np.ones(indices.size, dtype=bool))
        return cls(edges, codes, fallback, max_factor_overhead=max_factor_overhead)

    def conditioned(self, width):
        """Which messages (rows of ``width``) are coded factor-first."""
        return _factor_first_overhead(width) <= self.max_factor_overhead

    def bins(self, factor, width):
        """The bin (index into ``codes``) of each message."""
        return np.searchsorted(self.edges, _position_surprisal(factor, width), side="right")

    def to_dict(self):
        return {
            "format": "rcc.IndexCode",
            "version": CODE_FORMAT_VERSION,
            "type": "ConditionedIndexCode",
            "feature": "sum_j Phi^-1(clip(K_j, 1/2, M_j - 1/2) / M_j)**2 / (2 ln 2)",
            "edges": [float(e) for e in self.edges],
            "codes": [c.to_dict() for c in self.codes],
            "fallback": self.fallback.to_dict(),
            "max_factor_overhead": self.max_factor_overhead,
        }

    @classmethod
    def _from_fields(cls, data):
        codes = [_code_from_dict(c, expected=IndexCode) for c in data["codes"]]
        fallback = _code_from_dict(data["fallback"], expected=IndexCode)
        if any(isinstance(c, ConditionedIndexCode) for c in codes + [fallback]):
            raise ValueError("a ConditionedIndexCode cannot nest another")
        return cls(data["edges"], codes, fallback, max_factor_overhead=data["max_factor_overhead"])

    @classmethod
    def from_dict(cls, data):
        """Rebuild from :meth:`to_dict` output."""
        return _code_from_dict(data, expected=cls)

    save = IndexCode.save
    fingerprint = IndexCode.fingerprint

    @classmethod
    def load(cls, path):
        """Read a code written by :meth:`save`; raises ``ValueError`` on a wrong or damaged file."""
        return _load_code(path, cls.from_dict)

    def __eq__(self, other):
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    def __hash__(self):
        return hash(("ConditionedIndexCode", self.fingerprint))

    def __repr__(self):
        return (f"ConditionedIndexCode({len(self.codes)} bins, fallback={self.fallback!r}, "
                f"max_factor_overhead={self.max_factor_overhead:.4g})")


# --------------------------------------------------------------------------- factor codes


class FactorCode:
    """Base class of the decoding-factor codes (coded given ``U_N``)."""

    def to_dict(self):
        raise TypeError(f"{type(self).__name__} does not define to_dict")

    @property
    def fingerprint(self):
        """CRC32 of the code's canonical description."""
        return zlib.crc32(json.dumps(self.to_dict(), sort_keys=True).encode("utf-8"))


class UniformFactorCode(FactorCode):
    """``K`` uniform over the ``M`` values that ``K + U_N in [0, M)`` allows: ``log2 M`` bits.

    Under the Gaussian (or any) channel whose aggregate of samples is the prior,
    the transformed sample is uniform on ``[0, M)``, so this is the exact law of
    ``K`` given ``U_N`` (:ref:`transform-width-cost`); with ``M = 1`` the factor costs nothing.
    """

    def to_dict(self):
        return {"type": "UniformFactorCode"}

    def __repr__(self):
        return "UniformFactorCode()"


class MarginalFactorCode(FactorCode):
    """``P(K = k | U_N = u)`` from a known marginal of the samples (:ref:`uq-factor-cost`).

    The receiver's transformed sample ``z' = K + u`` lies on the lattice
    ``u + Z`` within ``[0, M)`` of the axis ``z' = M F_c(z)`` of the coding
    transform ``c``; if the decoded samples follow ``marginal``, ``z'`` has
    density ``marginal.pdf(z) / (M c(z))``.  On a Gaussian channel the
    marginal is the prior, and this is the code :func:`encode_messages` uses
    by default whenever the transform differs from the prior: it costs about
    ``log2 M - D_KL[prior || transform]`` bits instead of ``log2 M``.  With
    ``marginal`` equal to the transform it is the uniform code.

    Two exact codes (both sides compute the same tables, with no
    dependence on scipy):

    * ``M <= exact_max_width``: the exact conditional, ``P(K = k | u)``
      proportional to the density at ``k + u``, ``O(M)`` per factor;
    * larger ``M``: the axis is cut into ``B = 4096`` blocks of
      ``L = ceil(M / B)`` lattice cells (cells ``[t, t + 1)`` of the offset
      ``t = K - lowest``, ``lowest`` the smallest factor ``u`` allows); the
      block is coded with the marginal's mass of its cells (one table per
      width, shared by all factors) and the cell within it uniformly.  That
      is ``O(1)`` per factor for any width up to ``2**52``; it ignores only
      the information ``u`` carries about the cell, which vanishes as ``M``
      grows (below 0.01 bits per factor at ``M > exact_max_width``).

    Parameters
    ----------
    marginal : rcc.Normal, rcc.TruncatedNormal or rcc.Uniform
        Scalar parameters; the distribution of the decoded samples.
    prior : rcc.Normal or rcc.Uniform, optional
        The coder's prior, ``Normal(0, 1)`` by default.
    transform : None, "prior", rcc.Normal or rcc.Uniform
        The coding transform the samples were encoded with
        (:func:`rcc.coding_transform` of ``prior``; scalar parameters).
    """

    max_width = 1 << 52
    #: Widths up to this use the exact ``O(M)`` conditional table.
    exact_max_width = 64
    _BLOCKS = 4096

    def __init__(self, marginal, prior=None, *, transform=None):
        if not isinstance(marginal, (Normal, TruncatedNormal, Uniform)):
            raise TypeError(f"marginal must be an rcc.Normal, TruncatedNormal or Uniform, got {type(marginal).__name__}")
        if marginal.shape != ():
            raise ValueError(f"marginal must have scalar parameters, got shape {marginal.shape}")
        prior = Normal(0.0, 1.0) if prior is None else prior
        if not isinstance(prior, (Normal, Uniform)) or prior.shape != ():
            raise TypeError("prior must be a scalar rcc.Normal or rcc.Uniform")
        transform = coding_transform(prior, transform)
        if transform.shape != ():
            raise ValueError(f"transform must have scalar parameters, got shape {transform.shape}")
        self.marginal = marginal
        self.prior = prior
        self.transform = transform
        if isinstance(marginal, Uniform):
            low, high = float(marginal.low), float(marginal.high)
            self._marginal_args = (UNIFORM_FAMILY, low, high - low, low, high)
        else:
            spec = marginal._spec(0.0)
            self._marginal_args = (NORMAL_FAMILY, float(spec["loc"]), float(spec["scale"]),
                                   float(spec["low"]), float(spec["high"]))
        if isinstance(transform, Normal):
            self._transform_args = (NORMAL_FAMILY, float(transform.mean), float(transform.std))
        else:
            self._transform_args = (UNIFORM_FAMILY, float(transform.low), float(transform.high - transform.low))
        self._blocks = {}

    def to_dict(self):
        def describe(dist):
            return {"type": type(dist).__name__, **{k: float(v) for k, v in dist._params().items()}}

        return {"type": "MarginalFactorCode", "marginal": describe(self.marginal), "prior": describe(self.prior),
                "transform": describe(self.transform)}

    def __repr__(self):
        return f"MarginalFactorCode(marginal={self.marginal!r}, prior={self.prior!r}, transform={self.transform!r})"

    def _log2_probs(self, lowest, dither, width):
        """``log2 P(K = lowest + t | u)`` for ``t = 0 .. M-1``, rows of one width ``M <= exact_max_width``."""
        out = np.empty((lowest.size, width), dtype=np.float64)
        family, loc, scale, low, high = self._marginal_args
        kernels.factor_table_exact(np.ascontiguousarray(lowest, dtype=np.int64),
                                   np.ascontiguousarray(dither, dtype=np.float64), width, family, loc, scale,
                                   low, high, *self._transform_args, out)
        return np.log2(out)

    def block_table(self, width):
        """``(block length L, block probabilities)`` of the code for widths above ``exact_max_width``.

        Block ``i`` holds the offsets ``t in [i L, min((i + 1) L, M))``; its
        probability is the marginal's mass of ``z' in [i L, min((i + 1) L, M))``
        (floored at ``2**-40`` and renormalised, so every block stays codable).
        A pure function of the width and the code: sender and receiver compute
        the same table.
        """
        width = int(width)
        cached = self._blocks.get(width)
        if cached is not None:
            return cached
        length = -(-width // self._BLOCKS)
        count = -(-width // length)
        edges = np.minimum(np.arange(count + 1, dtype=np.float64) * length, float(width))
        lower = np.empty(edges.size)
        upper = np.empty(edges.size)
        family, loc, scale, low, high = self._marginal_args
        kernels.factor_block_cdf(edges, float(width), family, loc, scale, *self._transform_args, lower, upper)
        if isinstance(self.marginal, TruncatedNormal):
            # F_T = (F - F(low)) / (F(high) - F(low)), clipped to [0, 1].
            f_low, fc_low = kernels.prior_cdf_pair(low, family, loc, scale)
            f_high, fc_high = kernels.prior_cdf_pair(high, family, loc, scale)
            mass = f_high - f_low
            lower, upper = (np.clip((lower - f_low) / mass, 0.0, 1.0),
                            np.clip((upper - fc_high) / mass, 0.0, 1.0))
        # Block masses from the CDF in the lower half, from its complement in the upper half.
        from_lower = lower[1:] - lower[:-1]
        from_upper = upper[:-1] - upper[1:]
        probs = np.where(upper[:-1] < 0.5, from_upper, from_lower)
        probs = np.maximum(probs, 0.0)
        probs = probs / probs.sum()
        probs = np.maximum(probs, 2.0**-40)
        probs = probs / probs.sum()
        if len(self._blocks) > 64:
            self._blocks.clear()
        self._blocks[width] = (length, probs)
        return length, probs


class TabulatedFactorCode(FactorCode):
    r"""``P(K | U_N)`` from a fitted density of the transformed sample, one table per context.

    A learned marginal for the decoding factor, in the spirit of the factorised
    entropy models of learned compression (Balle et al. 2018): the density of the
    transformed sample ``z' = K + U_N`` on ``[0, M)`` is modelled by the masses
    ``h_0 .. h_{L-1}`` of ``L`` equal cells (``L`` a multiple of ``M``; cell ``i`` is
    ``[i M / L, (i + 1) M / L)``), interpolated linearly between the cell centres
    and held constant beyond the outer ones,

    .. math:: P(K = k \mid U_N = u) \propto f(k + u),

    normalised over the ``M`` values of ``k`` that ``k + u in [0, M)`` allows
    (:ref:`uq-factor-cost`, :ref:`transform-width-cost`).  Every factor belongs to a *context* ``c`` (by default its event
    dimension; see ``factor_context`` of :func:`encode_messages`) and is coded with
    table ``c``, whose width must equal the factor's.  Where the samples'
    aggregate differs from the prior (a VAE's aggregate posterior against its
    ``N(0, 1)`` prior), a table fitted to it makes the factors cheaper than
    :class:`MarginalFactorCode` with the prior, by up to ``KL[aggregate || prior]``.

    Parameters
    ----------
    tables : sequence of array_like
        ``tables[c]``: positive, finite cell masses of context ``c`` (any scale; each
        table is normalised).
    widths : sequence of int, optional
        The width ``M_c`` of each context; ``tables[c]`` must have a multiple of
        ``M_c`` cells.  By default the table lengths (one cell per value of ``K``).
        Tables finer than the width model a density that changes within a unit
        cell (small widths) without bias.  A width of 1 costs nothing.

    Examples
    --------
    >>> import numpy as np, rcc
    >>> enc = rcc.encode_sample(rcc.Normal(np.array([0.3, -0.2]), 0.05), seed=3, width=6)
    >>> code = rcc.TabulatedFactorCode([[1.0, 2.0, 4.0, 4.0, 2.0, 1.0]])
    >>> data = rcc.encode_messages(enc, seed=3, index_code=rcc.ZipfIndexCode(2.0), factor_code=code)
    >>> _, factor = rcc.decode_messages(data, 2, seed=3, index_code=rcc.ZipfIndexCode(2.0), width=6,
    ...                                 factor_code=code)
    >>> bool((factor == enc.factor).all())
    True
    """

    max_width = 1 << 16

    def __init__(self, tables, widths=None):
        if isinstance(tables, np.ndarray) and tables.ndim == 1 and tables.dtype != object:
            raise TypeError("tables must be a sequence of 1-D arrays (one per context), not one 1-D array")
        try:
            rows = [np.asarray(t, dtype=np.float64) for t in tables]
        except (TypeError, ValueError) as exc:
            raise TypeError(f"tables must be a sequence of 1-D arrays of floats: {exc}") from exc
        if not rows:
            raise ValueError("tables must hold at least one table")
        for c, row in enumerate(rows):
            if row.ndim != 1 or row.size == 0:
                raise ValueError(f"tables[{c}] must be a non-empty 1-D array, got shape {row.shape}")
            if row.size > 16 * self.max_width:
                raise ValueError(f"tables[{c}] has {row.size} cells; at most {16 * self.max_width} are supported")
            if not (np.all(np.isfinite(row)) and np.all(row > 0)):
                raise ValueError(f"tables[{c}] must be positive and finite")
            with np.errstate(over="ignore"):
                row_total = row.sum()
            if not np.isfinite(row_total) or not np.all(row / row_total > 0):
                raise ValueError(f"tables[{c}] must sum to a finite total in which every cell keeps a positive share")
        if widths is None:
            widths = [row.size for row in rows]
        widths = np.asarray(widths)
        if widths.dtype == bool or widths.dtype.kind not in "iu" or widths.shape != (len(rows),):
            raise ValueError(f"widths must be {len(rows)} integers (one per table), got {widths!r}")
        for c, (row, width) in enumerate(zip(rows, widths.tolist())):
            if not 1 <= width <= self.max_width or row.size % width:
                raise ValueError(
                    f"widths[{c}] = {width} must be in [1, {self.max_width}] and divide the "
                    f"{row.size} cells of tables[{c}]"
                )
        self.tables = [row / row.sum() for row in rows]
        self._raw = rows
        self.widths = widths.astype(np.int64)

    @property
    def num_contexts(self):
        """Number of tables."""
        return len(self.tables)

    def to_dict(self):
        return {"type": "TabulatedFactorCode", "tables": [row.tolist() for row in self._raw],
                "widths": self.widths.tolist()}

    @classmethod
    def from_dict(cls, data):
        """Inverse of :meth:`to_dict`."""
        if not isinstance(data, dict) or data.get("type") != "TabulatedFactorCode":
            raise ValueError("data is not a TabulatedFactorCode description")
        tables, widths = data.get("tables"), data.get("widths")
        if not isinstance(tables, list) or not all(isinstance(t, list) for t in tables):
            raise ValueError("TabulatedFactorCode data: the field 'tables' must be a list of lists of numbers")
        if widths is not None and not (isinstance(widths, list) and all(
                isinstance(w, int) and not isinstance(w, bool) for w in widths)):
            raise ValueError("TabulatedFactorCode data: the field 'widths' must be a list of integers")
        try:
            return cls(tables, widths)
        except TypeError as exc:
            raise ValueError(f"TabulatedFactorCode data: {exc}") from None

    def save(self, path):
        """Write the code as JSON to ``path`` (:meth:`load` reads it)."""
        with open(os.fspath(path), "w", encoding="utf-8") as handle:
            json.dump(self.to_dict(), handle)
            handle.write("\n")

    @classmethod
    def load(cls, path):
        """Read a code written by :meth:`save`; raises ``ValueError`` naming the file on a damaged one."""
        return _load_code(path, cls.from_dict)

    def __repr__(self):
        return f"TabulatedFactorCode(contexts={self.num_contexts}, widths={self.widths.tolist()})"

    def _log2_probs_table(self, context, lowest, dither):
        """``log2 P(K = lowest + t | u)``, ``t = 0 .. M-1``, for rows of one context."""
        table = self.tables[context]
        width = int(self.widths[context])
        cell = width / table.size
        centres = (np.arange(table.size, dtype=np.float64) + 0.5) * cell
        position = lowest[:, None] + np.arange(width, dtype=np.float64)[None, :] + dither[:, None]
        density = np.interp(position, centres, table)
        return np.log2(density / density.sum(axis=1, keepdims=True))

    def _check_contexts(self, context, width):
        """Every coded factor's context exists and its table has the factor's width."""
        coded = width > 1
        if not coded.any():
            return
        used = context[coded]
        if used.min() < 0 or used.max() >= self.num_contexts:
            raise ValueError(
                f"factor_context must lie in [0, {self.num_contexts}) (the code's tables), "
                f"got values in [{used.min()}, {used.max()}]"
            )
        mismatch = self.widths[used] != width[coded]
        if mismatch.any():
            first = int(np.flatnonzero(mismatch)[0])
            raise ValueError(
                f"TabulatedFactorCode table {int(used[first])} has {int(self.widths[used[first]])} cells, "
                f"but a factor of that context has width {int(width[coded][first])}"
            )


def default_factor_code(prior=None, transform=None):
    """The factor code :func:`encode_messages` uses when none is given.

    The samples' marginal is taken to be the prior (as on a Gaussian
    channel): :class:`MarginalFactorCode` of the prior on the transform's
    axis where the coding transform differs from the prior, else the uniform
    code (exactly the law of ``K`` given ``U_N`` then).  A prior with array
    parameters gets the uniform code (valid, but about
    ``D_KL[prior || transform]`` bits dearer per factor); pass a factor code
    to do better.

    Parameters
    ----------
    prior : rcc.Normal or rcc.Uniform, optional
    transform : None, "prior", rcc.Normal or rcc.Uniform
        As for :func:`rcc.encode_sample`.

    Returns
    -------
    FactorCode
    """
    prior = Normal(0.0, 1.0) if prior is None else prior
    transform = coding_transform(prior, transform)
    if transform is prior or prior.batch_shape or transform.batch_shape:
        return UniformFactorCode()
    return MarginalFactorCode(prior, prior, transform=transform)


def _check_factor_code(factor_code, prior=None, transform=None):
    if factor_code is None:
        return default_factor_code(prior, transform)
    if not isinstance(factor_code, FactorCode):
        raise TypeError(f"factor_code must be an rcc FactorCode, got {type(factor_code).__name__}")
    return factor_code


def _check_index_code(index_code):
    if not isinstance(index_code, (IndexCode, ConditionedIndexCode)):
        raise TypeError(
            "index_code must be an rcc index code (ZipfIndexCode, EmpiricalIndexCode, UniformIndexCode "
            f"or ConditionedIndexCode), got {type(index_code).__name__}"
        )
    return index_code


# --------------------------------------------------------------------------- symbol coding


def _encode_indices(encoder, code, n):
    """Head symbols, then escapes (bucket, sub-bucket, low bits), all vectorised."""
    if n.size == 0:
        return
    cons = _constriction()
    tables = code._coder()
    escaped = n > tables.escape
    encoder.encode(np.where(escaped, tables.escape, n - 1).astype(np.int32), tables.head_model)
    tail = n[escaped]
    if tail.size == 0:
        return
    h = tables.head_bits
    bucket = _bit_length(tail)
    encoder.encode((bucket - h).astype(np.int32), tables.bucket_model)
    shift = bucket - _SUB_BITS
    sub = np.right_shift(tail, shift) & ((1 << _SUB_BITS) - 1)
    encoder.encode(sub.astype(np.int32), cons.stream.model.Categorical(perfect=False),
                   np.ascontiguousarray(tables.sub_probs[bucket - h]))
    low = tail & (np.left_shift(np.int64(1), shift) - 1)
    _encode_bits(encoder, low, shift)


def _decode_indices(decoder, code, count):
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    cons = _constriction()
    tables = code._coder()
    symbols = np.asarray(decoder.decode(tables.head_model, count), dtype=np.int64)
    n = symbols + 1
    escaped = np.flatnonzero(symbols == tables.escape)
    if escaped.size == 0:
        return n
    h = tables.head_bits
    bucket = np.asarray(decoder.decode(tables.bucket_model, escaped.size), dtype=np.int64) + h
    if (bucket > _MAX_BUCKET).any():
        raise ValueError("corrupt bitstream: an escaped index lies outside int64")
    sub = np.asarray(decoder.decode(cons.stream.model.Categorical(perfect=False),
                                    np.ascontiguousarray(tables.sub_probs[bucket - h])), dtype=np.int64)
    shift = bucket - _SUB_BITS
    low = _decode_bits(decoder, shift)
    n[escaped] = np.left_shift(np.int64(1), bucket) + np.left_shift(sub, shift) + low
    return n


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


def _lowest_factor(seed, index, dims, stream_offset=np.uint64(0)):
    """Smallest ``K`` with ``K + U_N >= 0``: 0 where ``U_N >= 0`` else 1; shape (count, dims).

    Message ``i`` uses stream ``stream_offset + i``.
    """
    count = index.size
    stream = np.repeat(np.arange(count, dtype=np.uint64) + np.uint64(stream_offset), dims)
    dim = np.tile(np.arange(dims, dtype=np.int64), count)
    dither = shared_uniform(seed, stream, np.repeat(index, dims), dim)
    dither = np.asarray(dither, dtype=np.float64).reshape(count, dims)
    return np.where(dither >= 0.0, 0, 1).astype(np.int64), dither


def _context_groups(context, width):
    """``(context, rows)`` for each context of the factors with width ``M > 1``."""
    coded = width > 1
    for value in np.unique(context[coded]):
        yield int(value), np.flatnonzero(coded & (context == value))


def _factor_log2_probs(factor_code, width, lowest, dither, context=None):
    """``(rows, log2 P(K = lowest + t | u))`` for the factors coded with a per-row table: those
    of a :class:`MarginalFactorCode` of width ``1 < M <= exact_max_width`` (grouped by width) or
    of a :class:`TabulatedFactorCode` (grouped by context), in parts small enough for one
    probability table each."""
    if isinstance(factor_code, TabulatedFactorCode):
        for c, rows in _context_groups(context, width):
            for part in _row_chunks(rows, int(factor_code.widths[c])):
                yield part, factor_code._log2_probs_table(c, lowest[part], dither[part])
        return
    for value, rows in _width_groups(width):
        if value > factor_code.exact_max_width:
            break
        for part in _row_chunks(rows, value):
            yield part, factor_code._log2_probs(lowest[part], dither[part], value)


def _factor_blocks(factor_code, width):
    """``(rows, L, probabilities)`` per width of the block-coded factors of a :class:`MarginalFactorCode`."""
    if not isinstance(factor_code, MarginalFactorCode):
        return
    for value, rows in _width_groups(width):
        if value > factor_code.exact_max_width:
            length, probs = factor_code.block_table(value)
            yield rows, value, length, probs


def _block_sizes(block, width, length):
    """Cells in each block: ``L``, or what is left of the axis in the last one."""
    return np.minimum(length, width - block * length)


def _encode_factors_given_dither(encoder, factor_code, factor, width, lowest, dither, context=None):
    """Flat arrays (one entry per coded factor)."""
    offset = factor - lowest
    if isinstance(factor_code, UniformFactorCode):
        _encode_uniform(encoder, offset, width)
        return
    cons = _constriction()
    for part, log2p in _factor_log2_probs(factor_code, width, lowest, dither, context):
        encoder.encode(offset[part].astype(np.int32), cons.stream.model.Categorical(perfect=False), np.exp2(log2p))
    for rows, value, length, probs in _factor_blocks(factor_code, width):
        block = offset[rows] // length
        encoder.encode(block.astype(np.int32), cons.stream.model.Categorical(probs, perfect=False))
        _encode_uniform(encoder, offset[rows] - block * length, _block_sizes(block, value, length))


def _decode_factors_given_dither(decoder, factor_code, width, lowest, dither, context=None):
    if isinstance(factor_code, UniformFactorCode):
        return lowest + _decode_uniform(decoder, width)
    cons = _constriction()
    offset = np.zeros(width.size, dtype=np.int64)
    for part, log2p in _factor_log2_probs(factor_code, width, lowest, dither, context):
        offset[part] = np.asarray(decoder.decode(cons.stream.model.Categorical(perfect=False), np.exp2(log2p)),
                                  dtype=np.int64)
    for rows, value, length, probs in _factor_blocks(factor_code, width):
        block = np.asarray(decoder.decode(cons.stream.model.Categorical(probs, perfect=False), rows.size),
                           dtype=np.int64)
        offset[rows] = block * length + _decode_uniform(decoder, _block_sizes(block, value, length))
    return lowest + offset


def _factor_bits(factor_code, factor, width, lowest, dither, context=None):
    """``-log2 P(K | U_N)`` of each factor (flat arrays), as the coders above code it."""
    if isinstance(factor_code, UniformFactorCode):
        return np.log2(width.astype(np.float64))
    bits = np.zeros(factor.size)
    offset = factor - lowest
    for part, log2p in _factor_log2_probs(factor_code, width, lowest, dither, context):
        bits[part] = -log2p[np.arange(part.size), offset[part]]
    for rows, value, length, probs in _factor_blocks(factor_code, width):
        block = offset[rows] // length
        bits[rows] = -np.log2(probs[block]) + np.log2(_block_sizes(block, value, length).astype(np.float64))
    return bits


def _row_chunks(rows, width):
    """Split ``rows`` so that a probability table of ``len(part) * width`` floats stays small (32 MiB)."""
    chunk = max(1, (1 << 22) // width)
    for start in range(0, rows.size, chunk):
        yield rows[start : start + chunk]


def _check_marginal_widths(factor_code, widths, context=None):
    if isinstance(factor_code, MarginalFactorCode) and widths.size and widths.max() > factor_code.max_width:
        raise ValueError(f"MarginalFactorCode supports widths up to {factor_code.max_width}, got {widths.max()}")
    if isinstance(factor_code, TabulatedFactorCode) and context is not None:
        factor_code._check_contexts(context.ravel(), widths.ravel())


def _factor_context(factor_context, factor_code, count, dims, event, batch_shape=None):
    """Contexts of the factors as a ``(count, dims)`` int64 array (``None`` unless tabulated).

    The default context of a factor is its event dimension ``j``.
    """
    if not isinstance(factor_code, TabulatedFactorCode):
        if factor_context is not None:
            raise ValueError("factor_context is used only with a TabulatedFactorCode")
        return None
    if factor_context is None:
        return np.ascontiguousarray(np.broadcast_to(np.arange(dims, dtype=np.int64), (count, dims)))
    arr = np.asarray(factor_context)
    if arr.dtype == bool or arr.dtype.kind not in "iu":
        raise TypeError(f"factor_context must be an array of integers, got dtype {arr.dtype}")
    return _to_factor_shape(arr.astype(np.int64), count, dims, event, batch_shape, "factor_context")


def _width_groups(width):
    """``(M, rows)`` for each width ``M > 1``, rows in increasing order."""
    if width.size and width[0] == width.min() == width.max():
        # One width for all (the usual batch): no sort.
        if width[0] > 1:
            yield int(width[0]), np.arange(width.size)
        return
    values = np.unique(width)
    for value in values:
        if value > 1:
            yield int(value), np.flatnonzero(width == value)


def _encode_factors_first(encoder, factor, width):
    """``K in {0..M}`` with ``P = 1/(2M)`` at both ends and ``1/M`` inside (no dither)."""
    cons = _constriction()
    end = (factor == 0) | (factor == width)
    several = width > 1
    if several.any():
        encoder.encode(end[several].astype(np.int32), cons.stream.model.Bernoulli(perfect=False),
                       1.0 / width[several].astype(np.float64))
    if end.any():
        encoder.encode((factor[end] == width[end]).astype(np.int32), cons.stream.model.Uniform(2))
    inner = ~end
    _encode_uniform(encoder, factor[inner] - 1, width[inner] - 1)


def _decode_factors_first(decoder, width):
    cons = _constriction()
    end = np.ones(width.size, dtype=bool)
    several = np.flatnonzero(width > 1)
    if several.size:
        end[several] = np.asarray(decoder.decode(cons.stream.model.Bernoulli(perfect=False),
                                                 1.0 / width[several].astype(np.float64)), dtype=bool)
    factor = np.zeros(width.size, dtype=np.int64)
    ends = np.flatnonzero(end)
    if ends.size:
        side = np.asarray(decoder.decode(cons.stream.model.Uniform(2), ends.size), dtype=np.int64)
        factor[ends] = side * width[ends]
    inner = np.flatnonzero(~end)
    factor[inner] = 1 + _decode_uniform(decoder, width[inner] - 1)
    return factor


def _factor_first_bits(factor, width):
    end = (factor == 0) | (factor == width)
    return np.log2(width.astype(np.float64)) + end


# --------------------------------------------------------------------------- messages


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


def encode_messages(enc, seed=None, *, index_code, width=None, factor_code=None, factor_context=None,
                    prior=None, transform=None, stream_offset=0):
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
    batch_shape = tuple(int(n) for n in np.shape(enc.index))
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
    context = _factor_context(factor_context, factor_code, count, dims, event, np.shape(enc.index))
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
        batch_shape = (count,)
    else:
        if len(data) < 6:
            raise ValueError("bitstream truncated inside its header")
        rank, pos = data[5], 6
        if rank > _MAX_RANK:
            raise ValueError(f"corrupt bitstream header (batch rank {rank} > {_MAX_RANK})")
        batch_shape = []
        for _ in range(rank):
            n, pos = _read_varint(data, pos)
            batch_shape.append(n)
        batch_shape = tuple(batch_shape)
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


def decode_messages(data, count=None, seed=None, *, index_code, width=None, factor_code=None, factor_context=None,
                    method=None, flat=True, prior=None, transform=None, stream_offset=0):
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


# --------------------------------------------------------------------------- ideal information content


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
    def total(self):
        """``index + factor``."""
        return self.index + self.factor


def message_bits(enc, seed=None, *, index_code, width=None, factor_code=None, factor_context=None, prior=None,
                 transform=None, stream_offset=0):
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
    context = _factor_context(factor_context, factor_code, count, dims, event, np.shape(enc.index))
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


# --------------------------------------------------------------------------- measurement


@dataclass(frozen=True)
class BitsReport:
    """Ideal and measured bits of a batch of messages (means per message).

    Attributes
    ----------
    info_bits : float or None
        Mutual information ``I`` per dimension of the channel (``None`` if unknown).
    block_size : int
        Dimensions per message ``d``.
    count : int
        Messages.
    mean_kl_bits : float
        Mean ``D_KL[target || prior]`` per message (bits, summed over the block).
    mean_index_bits, mean_factor_bits : float
        Mean ideal information content of index and factor.
    mean_measured_bits : float
        ``8 * len(data) / count``: the real cost, header included.
    header_bits : int
        ``8 *`` the header length.
    encode_seconds, decode_seconds : float
        Wall time of :func:`encode_messages` and :func:`decode_messages`.
    index_code, factor_code : str
        ``repr`` of the codes.
    """

    info_bits: object
    block_size: int
    count: int
    mean_kl_bits: float
    mean_index_bits: float
    mean_factor_bits: float
    mean_measured_bits: float
    header_bits: int
    encode_seconds: float
    decode_seconds: float
    index_code: str
    factor_code: str

    @property
    def mean_ideal_bits(self):
        """Mean ideal bits of index plus factor."""
        return self.mean_index_bits + self.mean_factor_bits

    @property
    def mean_payload_bits(self):
        """Measured bits per message without the header."""
        return self.mean_measured_bits - self.header_bits / self.count

    @property
    def overhead_bits(self):
        """Measured bits minus ``d * I`` per message (``nan`` without ``info_bits``)."""
        if self.info_bits is None:
            return math.nan
        return self.mean_measured_bits - self.block_size * self.info_bits

    @property
    def measured_bits_per_dim(self):
        """Measured bits per dimension."""
        return self.mean_measured_bits / self.block_size

    @property
    def overhead_bits_per_dim(self):
        """Measured bits per dimension minus ``I`` per dimension."""
        return self.overhead_bits / self.block_size

    @property
    def messages_per_second(self):
        """Throughput of encoding plus decoding the bitstream."""
        return self.count / max(self.encode_seconds + self.decode_seconds, 1e-12)

    def as_dict(self):
        """Fields and derived quantities as a flat dict (for CSV rows)."""
        out = {f: getattr(self, f) for f in self.__dataclass_fields__}
        for name in ("mean_ideal_bits", "mean_payload_bits", "overhead_bits", "measured_bits_per_dim",
                     "overhead_bits_per_dim", "messages_per_second"):
            out[name] = getattr(self, name)
        return out


def measure_bits(enc, seed=None, *, index_code, width=None, factor_code=None, info_bits=None, block_size=None,
                 verify=True, prior=None, transform=None):
    """Code ``enc`` into bytes, decode them back, and report ideal against measured bits.

    Parameters
    ----------
    enc : rcc.EncodedSample
    seed : int
    index_code, width, factor_code, prior, transform
        As for :func:`encode_messages`.
    info_bits : float, optional
        ``I`` per dimension, for the overhead fields of the report.
    block_size : int, optional
        Dimensions per message (default: the factor's event size, else 1).
    verify : bool
        Check that the decoded messages equal ``enc`` (``RuntimeError`` if not).

    Returns
    -------
    BitsReport
    """
    seed = _message_seed(enc, seed)
    index_code = _check_index_code(index_code)
    factor_code = _conditioned_factor_code(index_code, factor_code, prior, transform)
    bits = message_bits(enc, seed, index_code=index_code, width=width, factor_code=factor_code)
    index, factor, widths, event, method = _message_arrays(enc, width)
    count, dims = widths.shape
    start = time.perf_counter()
    data = encode_messages(enc, seed, index_code=index_code, width=width, factor_code=factor_code)
    encode_seconds = time.perf_counter() - start
    start = time.perf_counter()
    decoded_index, decoded_factor = decode_messages(data, count, seed, index_code=index_code,
                                                    width=widths if event else widths.reshape(count),
                                                    factor_code=factor_code)
    decode_seconds = time.perf_counter() - start
    if verify and not (np.array_equal(decoded_index, index)
                       and np.array_equal(decoded_factor.reshape(count, dims), factor)):
        raise RuntimeError("decoded messages differ from the encoded ones")
    header_bytes = _parse_header(data)["header_bytes"]
    if block_size is None:
        block_size = dims if event else 1
    return BitsReport(
        info_bits=None if info_bits is None else float(info_bits),
        block_size=int(block_size),
        count=int(count),
        mean_kl_bits=float(np.mean(enc.kl_bits)),
        mean_index_bits=float(bits.index.mean()) if count else 0.0,
        mean_factor_bits=float(bits.factor.mean()) if count else 0.0,
        mean_measured_bits=8.0 * len(data) / max(count, 1),
        header_bits=8 * header_bytes,
        encode_seconds=encode_seconds,
        decode_seconds=decode_seconds,
        index_code=repr(index_code),
        factor_code=repr(factor_code),
    )


def gaussian_channel_targets(info_bits, count, *, rng, block_size=1):
    """Targets of the Gaussian channel with ``I = info_bits`` bits per dimension.

    Prior ``N(0, 1)``, target ``N(mu, s**2)`` with ``s = 2**-I`` and
    ``mu ~ N(0, 1 - s**2)``, so that the marginal of the samples is the prior
    and ``I(X; Z) = -log2 s`` bits per dimension.

    Parameters
    ----------
    info_bits : float
        ``I > 0`` per dimension.
    count : int
        Targets (messages).
    rng : numpy.random.Generator or int
        Source of the means (``numpy.random.default_rng(rng)``).
    block_size : int
        Dimensions per target; ``> 1`` gives an ``rcc.Product`` of shape ``(count, d)``.

    Returns
    -------
    rcc.Normal or rcc.Product
    """
    info_bits = _check_real(info_bits, "info_bits", low=0.0, low_open=True, high=40.0)
    count = _check_int(count, "count", 1)
    block_size = _check_int(block_size, "block_size", 1)
    generator = np.random.default_rng(rng)
    std = 2.0**-info_bits
    shape = (count, block_size) if block_size > 1 else (count,)
    mean = generator.normal(0.0, math.sqrt(1.0 - std * std), size=shape)
    target = Normal(mean, std)
    return Product(target) if block_size > 1 else target


def index_kl_bits_gaussian_channel(info_bits, *, prior=None, transform=None, tail_mass=DEFAULT_TAIL_MASS):
    """Mean KL in bits that the index carries per dimension on the Gaussian channel.

    With factors coded under the prior's marginal, the factor carries about
    ``log2 M - D_KL[prior || transform]`` bits of the ``I`` the message
    carries, so the index carries ``D = I - log2 M + D_KL[prior || transform]``
    (``I - log2 M`` with the transform through the prior).  Everything here
    is known to the receiver, so ``ZipfIndexCode(d * D)`` needs no side
    information.

    Parameters
    ----------
    info_bits : float
        ``I`` per dimension.
    prior : rcc.Normal, optional
        ``Normal(0, 1)`` by default (scalar).
    transform : None, "prior", rcc.Normal or rcc.Uniform
    tail_mass : float

    Returns
    -------
    float
    """
    prior = Normal(0.0, 1.0) if prior is None else prior
    transform = coding_transform(prior, transform)
    width = int(gaussian_width(2.0**-info_bits, prior=prior, tail_mass=tail_mass, transform=transform))
    divergence = 0.0
    if transform is not prior and isinstance(prior, Normal) and isinstance(transform, Normal):
        ratio = float(prior.std) / float(transform.std)
        shift = (float(prior.mean) - float(transform.mean)) / float(transform.std)
        divergence = (-math.log(ratio) + 0.5 * (ratio * ratio + shift * shift) - 0.5) / math.log(2.0)
    return max(0.0, info_bits - math.log2(width) + divergence)


def _zipf_for_gaussian_channel(info_bits, block_size, tail_mass, transform=None):
    """``ZipfIndexCode`` with ``D = d * index_kl_bits_gaussian_channel(I)``, all known to the receiver."""
    return ZipfIndexCode(block_size * index_kl_bits_gaussian_channel(info_bits, transform=transform,
                                                                     tail_mass=tail_mass))


def bits_report(info_bits, count, *, seed, rng, index_code="zipf", block_size=1, factor_code=None,
                tail_mass=DEFAULT_TAIL_MASS, method="hybrid", max_candidates=2**30, transform=None):
    """Measure the bits of hybrid-coded samples of the Gaussian channel.

    Draws ``count`` targets (:func:`gaussian_channel_targets`), encodes them with
    :func:`rcc.encode_sample` (``width = gaussian_width(s)``, std-based so the
    receiver knows it; the default coding transform), writes the bitstream
    with the default factor code (the prior's marginal), decodes it and
    checks it, and reports mean ``I``, KL, ideal index/factor bits and
    measured bits.

    Parameters
    ----------
    info_bits : float
        ``I`` per dimension.
    count : int
    seed : int
        Shared seed of the encodings.
    rng : numpy.random.Generator or int
        Draws the targets' means.
    index_code : IndexCode, ConditionedIndexCode or "zipf"
        ``"zipf"`` uses ``ZipfIndexCode(d * D)``, ``D`` the index's KL
        (:func:`index_kl_bits_gaussian_channel`).
    block_size : int
        Dimensions per message (:ref:`blocks-product`).
    factor_code : FactorCode, optional
    tail_mass : float
    method : str
        ``"hybrid"`` (default) or a prior-proposal method.
    max_candidates : int
        Passed to :func:`rcc.encode_sample`; blocks of small per-dimension
        widths occasionally need many candidates for targets far in the tails.
    transform : None, "prior", rcc.Normal or rcc.Uniform
        The coding transform (:func:`rcc.coding_transform`).

    Returns
    -------
    BitsReport

    Examples
    --------
    >>> import rcc
    >>> report = rcc.bits_report(6.0, 2000, seed=3, rng=1)
    >>> report.overhead_bits < 2.5
    True
    """
    targets = gaussian_channel_targets(info_bits, count, rng=rng, block_size=block_size)
    hybrid = method == "hybrid"
    enc = encode_sample(targets, seed, method=method, tail_mass=tail_mass, max_candidates=max_candidates,
                        transform=transform if hybrid else None)
    if isinstance(index_code, str):
        if index_code != "zipf":
            raise ValueError(f"index_code must be an index code or 'zipf', got {index_code!r}")
        if hybrid:
            index_code = _zipf_for_gaussian_channel(float(info_bits), block_size, tail_mass, transform)
        else:
            index_code = ZipfIndexCode(float(info_bits) * block_size)
    report = measure_bits(enc, seed, index_code=index_code, factor_code=factor_code, info_bits=info_bits,
                          block_size=block_size, transform=transform if hybrid else None)
    # Sanity: the decoded messages reproduce the encoder's samples.
    sample = decode_sample(enc.index, enc.factor, seed, width=enc.width, method=method,
                           transform=transform if hybrid else None)
    if not np.array_equal(np.asarray(sample), np.asarray(enc.sample)):
        raise RuntimeError("decode_sample did not reproduce the encoded samples")
    return report
