"""rcc: exact reverse channel coding.

A sender holding a target distribution ``q`` sends a short message; a
receiver sharing only a seed and a prior reproduces an exact sample of ``q``.
See :func:`compress` and :func:`decompress` (one call each way, through
bytes), or :func:`encode_sample` and :func:`decode_sample` (the messages).

Importing ``rcc`` compiles nothing and loads neither ``scipy.stats`` nor
``torch``: each numba kernel compiles on its first call and is cached on disk
(``python -m rcc.warmup`` compiles them all ahead of time), and
:mod:`rcc.testing` is imported on first use of ``rcc.testing``.
"""

import importlib

from .compilation import announce_compilation

announce_compilation()  # one stderr line whenever a kernel really compiles (not on cache hits)

from .coding import (
    DEFAULT_MAX_CANDIDATES,
    DEFAULT_TAIL_MASS,
    DEFAULT_TRANSFORM_SCALE,
    METHODS,
    EncodedSample,
    coding_transform,
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
from .compression import compress, decompress
from .general import GaussianMixture, GeneralTarget, Laplace, ScaledBeta, encode_general, general_width
from .targets import Normal, Product, TruncatedNormal, Uniform, from_scipy
from . import samplers

__version__ = "0.1.0"


def __getattr__(name):
    # rcc.testing needs scipy.stats (~0.5 s to import): load it on first use.
    if name == "testing":
        return importlib.import_module(".testing", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "compress",
    "decompress",
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
    "DEFAULT_TRANSFORM_SCALE",
    "METHODS",
    "EncodedSample",
    "Normal",
    "Product",
    "TruncatedNormal",
    "Uniform",
    "coding_transform",
    "from_scipy",
    "decode_sample",
    "encode_sample",
    "gaussian_width",
    "kl_divergence_bits",
]
