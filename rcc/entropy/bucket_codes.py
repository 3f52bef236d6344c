"""The bucket index code: a fitted mass per ``log2`` bucket of the index, uniform inside each bucket.

:class:`BucketIndexCode` has a few dozen parameters that follow a population of
targets with different KLs: the index code :class:`rcc.torch.RCCChannel` fits, and
the depth code of the tree samplers' heap indices.  It is an :class:`IndexCode`,
so it writes the same escape-coded bitstreams and saves as the same versioned JSON
(:func:`rcc.entropy.load_index_code` reads it back).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._checks import _check_real, _int_array, _libm
from .index_codes import _CODE_TYPES, CODE_FORMAT_VERSION, IndexCode, _bit_length, _check_head_bits

__all__ = [
    "BucketIndexCode",
]


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

    def __init__(self, bucket_weights: ArrayLike, *, head_bits: int = 10) -> None:
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
        self.head_bits = _check_head_bits(head_bits)
        # mass of the buckets above b, for b = 0 .. 62
        self._above: np.ndarray = np.concatenate([np.cumsum(self.bucket_probabilities[::-1])[::-1][1:], [0.0]])

    @classmethod
    def fit(cls, indices: ArrayLike, *, pseudo_count: float = 0.5, tail_ratio: float = 0.5,
            head_bits: int = 10) -> BucketIndexCode:
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
        n = _int_array(indices, "indices", minimum=1).reshape(-1)
        if n.size == 0:
            raise ValueError("indices must not be empty")
        pseudo_count = _check_real(pseudo_count, "pseudo_count", low=0.0, low_open=True)
        tail_ratio = _check_real(tail_ratio, "tail_ratio", low=0.0, low_open=True)
        if tail_ratio >= 1.0:
            raise ValueError(f"tail_ratio must be in (0, 1), got {tail_ratio}")
        buckets = _bit_length(n)
        counts = np.bincount(buckets, minlength=63).astype(np.float64)[:63]
        top = int(buckets.max())
        weights = counts + pseudo_count
        above = np.arange(63) > top
        # The C library's pow per bucket (numpy's vectorised power rounds differently on different CPUs).
        weights[above] = pseudo_count * _libm(lambda e: tail_ratio ** e, np.arange(63)[above] - top)
        return cls(weights, head_bits=head_bits)

    def sf(self, n: ArrayLike) -> np.ndarray:
        n = np.floor(np.asarray(n, dtype=np.float64))
        safe = np.clip(n, 1.0, 2.0**63 - 1.0)
        bucket = np.clip(np.frexp(safe)[1] - 1, 0, 62).astype(np.int64)  # floor(log2), exactly
        start = np.exp2(bucket.astype(np.float64))
        bucket = np.where(start > safe, bucket - 1, bucket)
        start = np.exp2(bucket.astype(np.float64))
        # indices of bucket b above n: 2**(b+1) - 1 - n of the 2**b
        inside = self.bucket_probabilities[bucket] * (2.0 * start - 1.0 - safe) / start
        return np.where(n < 1.0, 1.0, self._above[bucket] + inside)

    def pmf(self, n: ArrayLike) -> np.ndarray:
        n = np.asarray(n, dtype=np.float64)
        safe = np.clip(n, 1.0, 2.0**63 - 1.0)
        bucket = np.clip(np.frexp(safe)[1] - 1, 0, 62).astype(np.int64)  # floor(log2), exactly
        bucket = np.where(np.exp2(bucket.astype(np.float64)) > safe, bucket - 1, bucket)
        mass = self.bucket_probabilities[bucket] * np.exp2(-bucket.astype(np.float64))
        return np.where(n >= 1.0, mass, 0.0)

    def to_dict(self) -> dict[str, Any]:
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


# Saved bucket codes load through the base registry (see rcc.entropy.index_codes).
_CODE_TYPES["BucketIndexCode"] = BucketIndexCode
