"""Message coding: index codes, decoding-factor codes and real bitstreams (:ref:`message-coding`).

:func:`rcc.encode_sample` produces integers ``(index N, factor K)``; this package
turns a batch of them into bytes and measures what they really cost.  One module
per concept, each importable on its own; every public name is also importable
from ``rcc.entropy``:

:mod:`rcc.entropy.index_codes`
    Distributions over the index ``N >= 1``: the base :class:`IndexCode`,
    :class:`ZipfIndexCode`, :class:`EmpiricalIndexCode`,
    :class:`UniformIndexCode`, and :func:`load_index_code` for saved codes.
:mod:`rcc.entropy.bucket_codes`
    :class:`BucketIndexCode`: a fitted mass per ``log2`` bucket of the index,
    uniform inside each bucket (the index code of ``rcc.torch`` and of the
    tree samplers' heap indices).
:mod:`rcc.entropy.conditioned`
    :class:`ConditionedIndexCode`: the decoding factor first, then the index
    with a code chosen by where ``K`` says the target sits.
:mod:`rcc.entropy.factor_codes`
    Codes of the decoding factor given the shared dither ``U_N``:
    :class:`UniformFactorCode`, :class:`MarginalFactorCode`,
    :class:`TabulatedFactorCode` and :func:`default_factor_code`.
:mod:`rcc.entropy.messages`
    :func:`encode_messages` / :func:`decode_messages`, the checked bitstream
    layout, and :func:`message_bits` (the ideal information content).
:mod:`rcc.entropy.reports`
    :func:`measure_bits` and :func:`bits_report`: ideal and measured bits
    against the KL on the Gaussian channel.
:mod:`rcc.entropy.streams`
    The range-coder plumbing every stream shares (words to bytes, varints,
    uniformly coded bits).
"""

from __future__ import annotations

from .bucket_codes import BucketIndexCode
from .conditioned import DEFAULT_MAX_FACTOR_OVERHEAD, ConditionedIndexCode
from .factor_codes import (FactorCode, MarginalFactorCode, TabulatedFactorCode, UniformFactorCode,
                           default_factor_code)
from .index_codes import (CODE_FORMAT_VERSION, EmpiricalIndexCode, IndexCode, UniformIndexCode, ZipfIndexCode,
                          load_index_code, zipf_exponent)
from .messages import STREAM_VERSION, MessageBits, decode_messages, encode_messages, message_bits
from .reports import (BitsReport, bits_report, gaussian_channel_targets, index_kl_bits_gaussian_channel,
                      measure_bits)

# Internals that rcc.compression, rcc.samplers, rcc.dask and rcc.torch build their own
# streams from; kept importable from rcc.entropy, where they lived before the split.
from .factor_codes import _check_factor_code, _check_marginal_widths, _factor_first_bits  # noqa: F401
from .messages import (_DECODE_ERRORS, _FACTORS_PER_BYTE, _FREE_FACTORS, _decode_payload,  # noqa: F401
                       _encode_symbols, _parse_header)
from .streams import _bytes_to_words, _constriction, _read_varint, _varint, _words_to_bytes  # noqa: F401

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
