"""rcc: exact reverse channel coding.

A sender holding a target distribution ``q`` sends a short message; a
receiver sharing only a seed and a prior reproduces an exact sample of ``q``.
See :func:`encode_sample` and :func:`decode_sample`.
"""

from .coding import (
    DEFAULT_MAX_CANDIDATES,
    DEFAULT_TAIL_MASS,
    METHODS,
    EncodedSample,
    decode_sample,
    encode_sample,
    gaussian_width,
    kl_divergence_bits,
)
from .entropy import (
    BitsReport,
    ConditionedIndexCode,
    EmpiricalIndexCode,
    FactorCode,
    IndexCode,
    MarginalFactorCode,
    TabulatedFactorCode,
    BucketIndexCode,
    MessageBits,
    UniformFactorCode,
    UniformIndexCode,
    ZipfIndexCode,
    bits_report,
    decode_messages,
    encode_messages,
    gaussian_channel_targets,
    load_index_code,
    measure_bits,
    message_bits,
    zipf_exponent,
)
from .general import GaussianMixture, GeneralTarget, Laplace, ScaledBeta, encode_general, general_width
from .targets import Normal, Product, TruncatedNormal, Uniform
from . import samplers, testing

__version__ = "0.1.0"

__all__ = [
    "GaussianMixture",
    "GeneralTarget",
    "Laplace",
    "ScaledBeta",
    "encode_general",
    "general_width",
    "samplers",
    "testing",
    "BitsReport",
    "ConditionedIndexCode",
    "EmpiricalIndexCode",
    "FactorCode",
    "IndexCode",
    "MarginalFactorCode",
    "TabulatedFactorCode",
    "BucketIndexCode",
    "MessageBits",
    "UniformFactorCode",
    "UniformIndexCode",
    "ZipfIndexCode",
    "bits_report",
    "decode_messages",
    "encode_messages",
    "gaussian_channel_targets",
    "load_index_code",
    "measure_bits",
    "message_bits",
    "zipf_exponent",
    "DEFAULT_MAX_CANDIDATES",
    "DEFAULT_TAIL_MASS",
    "METHODS",
    "EncodedSample",
    "Normal",
    "Product",
    "TruncatedNormal",
    "Uniform",
    "decode_sample",
    "encode_sample",
    "gaussian_width",
    "kl_divergence_bits",
]
