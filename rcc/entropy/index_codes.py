"""Index codes: distributions over ``N >= 1``, each with ``bits(n) = -log2 P(n)``.

:class:`ZipfIndexCode`
    ``P(n) = n**-lam / zeta(lam)`` with ``lam = 1 + 1/(D + log2(e)/e + 1)``
    (Li & El Gamal 2018), ``D`` the KL in bits the index carries.
:class:`EmpiricalIndexCode`
    A histogram fitted to simulated indices, with a discrete power-law tail
    fitted by maximum likelihood so that every ``n >= 1`` stays codable;
    saved and loaded as versioned JSON.
:class:`UniformIndexCode`
    ``log2(num_candidates)`` bits, the textbook code of MRC.

:class:`IndexCode` is the base of these codes and of those built on them
(:class:`~rcc.entropy.BucketIndexCode` in :mod:`rcc.entropy.bucket_codes`,
:class:`~rcc.entropy.ConditionedIndexCode` in :mod:`rcc.entropy.conditioned`);
:func:`load_index_code` reads any of them back.

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
import os
import zlib
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

from ._checks import _check_int, _check_real, _int_array, _libm, _load_code, _normalise
from .streams import _constriction, _decode_bits, _encode_bits

if TYPE_CHECKING:  # these codes are built on this module's, so they are imported for type checkers only:
    from .bucket_codes import BucketIndexCode  # the old import path (served by __getattr__ at run time)
    from .conditioned import ConditionedIndexCode  # a return type of load_index_code

__all__ = [
    "CODE_FORMAT_VERSION",
    "IndexCode",
    "ZipfIndexCode",
    "EmpiricalIndexCode",
    "UniformIndexCode",
    "load_index_code",
    "zipf_exponent",
]


#: Version of the JSON format of saved index codes.
CODE_FORMAT_VERSION = 1
_LOG2E_OVER_E = math.log2(math.e) / math.e
_MAX_BUCKET = 62  # indices are int64: n < 2**63, so floor(log2 n) <= 62
_SUB_BITS = 8  # bits of an escaped index coded with the code's own masses
#: ZipfIndexCode's KL is at most this (its exponent stays measurably above 1).
_MAX_ZIPF_KL_BITS = float(1 << 20)
#: EmpiricalIndexCode's histogram holds at most this many counts, totalling under 2**62.
_MAX_HEAD_COUNTS = 1 << 20
_MAX_TOTAL_COUNT = 1 << 62


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


class IndexCode:
    """A probability model of the candidate index ``N >= 1``.

    Subclasses define the survival function :meth:`sf` (``P(N > n)``) and the
    mass function :meth:`pmf`; the bitstream writer builds its tables from
    them.  ``head_bits`` sets the size of the directly coded head
    (``n < 2**head_bits``); larger indices are escaped and coded exactly.
    """

    head_bits = 10

    # -- the model ---------------------------------------------------------------
    def sf(self, n: ArrayLike) -> np.ndarray:
        """``P(N > n)`` for (float or integer) ``n >= 0``, vectorised."""
        raise TypeError(f"{type(self).__name__} does not define sf")

    def pmf(self, n: ArrayLike) -> np.ndarray:
        """``P(N = n)``, vectorised over integer ``n >= 1``."""
        n = np.asarray(n, dtype=np.float64)
        return np.maximum(self.sf(n - 1.0) - self.sf(n), 0.0)

    def bits(self, n: ArrayLike) -> np.ndarray | float:
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

    def interval_probability(self, low: ArrayLike, high: ArrayLike) -> np.ndarray:
        """``P(low <= N < high)``, vectorised."""
        low = np.asarray(low, dtype=np.float64)
        high = np.asarray(high, dtype=np.float64)
        return np.maximum(self.sf(low - 1.0) - self.sf(high - 1.0), 0.0)

    # -- persistence -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The code's parameters as a JSON-ready dict (see :meth:`save`)."""
        raise TypeError(f"{type(self).__name__} does not define to_dict")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexCode:
        """Rebuild a code from :meth:`to_dict` output."""
        return _code_from_dict(data, expected=cls)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the code as human-readable, versioned JSON to ``path``."""
        with open(os.fspath(path), "w", encoding="utf-8") as handle:
            json.dump(self.to_dict(), handle, indent=1)
            handle.write("\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> IndexCode:
        """Read a code written by :meth:`save`; raises ``ValueError`` on a wrong or damaged file."""
        return _load_code(path, cls.from_dict)

    @property
    def fingerprint(self) -> int:
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


def zipf_exponent(kl_bits: float) -> float:
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

    def __init__(self, kl_bits: float | None = None, *, exponent: float | None = None, head_bits: int = 10) -> None:
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
    def fit(cls, indices: ArrayLike, *, head_bits: int = 10) -> ZipfIndexCode:
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

    def sf(self, n: ArrayLike) -> np.ndarray:
        n = np.asarray(n, dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            tail = special.zeta(self.exponent, np.maximum(n, 0.0) + 1.0) * 2.0 ** (-self._log2_zeta)
        return np.where(n < 1.0, 1.0, np.minimum(tail, 1.0))

    def pmf(self, n: ArrayLike) -> np.ndarray:
        n = np.asarray(n, dtype=np.float64)
        with np.errstate(divide="ignore"):
            # The C library's pow and log2 per element: both coder sides build their tables
            # from this, and numpy's vectorised ones round differently on different CPUs.
            pmf = _libm(lambda v: 2.0 ** (-self.exponent * math.log2(v) - self._log2_zeta), np.maximum(n, 1.0))
            return np.where(n >= 1.0, pmf, 0.0)

    def bits(self, n: ArrayLike) -> np.ndarray | float:
        arr = _int_array(n, "n", minimum=1)
        out = self.exponent * np.log2(arr.astype(np.float64)) + self._log2_zeta
        return float(out) if out.ndim == 0 else out

    def to_dict(self) -> dict[str, Any]:
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

    def __init__(self, head_counts: ArrayLike, tail_count: int, tail_exponent: float, *, pseudo_count: float = 0.5,
                 head_bits: int | None = None) -> None:
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
    def n0(self) -> int:
        """Largest index of the histogram part."""
        return int(self.head_counts.size)

    @classmethod
    def fit(cls, indices: ArrayLike, *, tail_fraction: float = 0.02, pseudo_count: float = 0.5,
            min_tail_samples: int = 10, head_bits: int | None = None) -> EmpiricalIndexCode:
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

    def sf(self, n: ArrayLike) -> np.ndarray:
        n = np.asarray(n, dtype=np.float64)
        n0 = self.n0
        clipped = np.clip(n, 0.0, float(n0))
        head_part = self._head_sf[clipped.astype(np.int64)]
        with np.errstate(over="ignore", invalid="ignore"):
            tail_part = self._tail_mass * special.zeta(self.tail_exponent, np.maximum(n, float(n0)) + 1.0) / self._zeta_n0
        return np.where(n < 0, 1.0, np.where(n < n0, head_part, np.minimum(tail_part, self._tail_mass)))

    def pmf(self, n: ArrayLike) -> np.ndarray:
        n = np.asarray(n, dtype=np.float64)
        n0 = self.n0
        index = np.clip(n, 1.0, float(n0)).astype(np.int64) - 1
        with np.errstate(divide="ignore"):
            power = _libm(lambda v: math.exp(-self.tail_exponent * math.log(v)), np.maximum(n, 1.0))
            tail = self._tail_mass * power / self._zeta_n0
        return np.where(n < 1.0, 0.0, np.where(n <= n0, self._head_pmf[index], tail))

    def bits(self, n: ArrayLike) -> np.ndarray | float:
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

    def to_dict(self) -> dict[str, Any]:
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

    def __init__(self, num_candidates: int, *, head_bits: int | None = None) -> None:
        self.num_candidates = _check_int(num_candidates, "num_candidates", 1)
        if head_bits is None:
            head_bits = min(16, max(10, (self.num_candidates + 1).bit_length()))
        self.head_bits = _check_head_bits(head_bits)

    def sf(self, n: ArrayLike) -> np.ndarray:
        n = np.asarray(n, dtype=np.float64)
        return np.clip(1.0 - np.maximum(n, 0.0) / self.num_candidates, 0.0, 1.0)

    def pmf(self, n: ArrayLike) -> np.ndarray:
        n = np.asarray(n, dtype=np.float64)
        return np.where((n >= 1) & (n <= self.num_candidates), 1.0 / self.num_candidates, 0.0)

    def to_dict(self) -> dict[str, Any]:
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
        low = np.ldexp(1.0, buckets)  # exact powers of two
        self.bucket_probs = _normalise(code.interval_probability(low, 2.0 * low))
        self.bucket_model = cons.stream.model.Categorical(self.bucket_probs, perfect=False)
        sub = np.arange(1 << _SUB_BITS, dtype=np.float64)
        step = np.ldexp(1.0, buckets - _SUB_BITS)[:, None]
        starts = low[:, None] + sub[None, :] * step
        self.sub_probs = _normalise(code.interval_probability(starts, starts + step))


#: Saved index codes by type name.  ``rcc.entropy.bucket_codes`` adds BucketIndexCode and
#: ``rcc.entropy.conditioned`` adds ConditionedIndexCode: they are built on this module, so
#: it cannot import them (importing ``rcc.entropy`` imports both).
_CODE_TYPES: dict[str, Any] = {
    "ZipfIndexCode": ZipfIndexCode,
    "EmpiricalIndexCode": EmpiricalIndexCode,
    "UniformIndexCode": UniformIndexCode,
}


def __getattr__(name: str) -> Any:
    # BucketIndexCode lived here before it got its own module; the old import path
    # ``rcc.entropy.index_codes.BucketIndexCode`` still works, served from the registry
    # (an import of rcc.entropy.bucket_codes here would be an import cycle).
    if name == "BucketIndexCode" and name in _CODE_TYPES:
        return _CODE_TYPES[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _code_from_dict(data, expected=None):
    if not isinstance(data, dict):
        raise ValueError(f"an index code is stored as a JSON object, got {type(data).__name__}")
    if data.get("format") != "rcc.IndexCode":
        raise ValueError(f"not an rcc index code (format field {data.get('format')!r})")
    version = data.get("version")
    if version != CODE_FORMAT_VERSION:
        raise ValueError(f"unsupported index-code format version {version!r} (this rcc reads {CODE_FORMAT_VERSION})")
    name = data.get("type")
    if name in _CODE_TYPES:
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


def load_index_code(path: str | os.PathLike[str]) -> IndexCode | ConditionedIndexCode:
    """Load any index code saved with ``save`` (Zipf, empirical, uniform, bucket or conditioned).

    Sizes and numeric ranges are validated: a damaged or hostile file raises
    ``ValueError`` naming the file and the field, and a code that loads is usable.
    """
    return _load_code(path, _code_from_dict)


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
