"""PyTorch adapter: reverse-channel-coded VAE latents, soft rounding and universal quantisation.

This module implements, for PyTorch models, the training/test pair of Agustsson &
Theis (2020), "Universally quantized neural compression" (NeurIPS 2020,
arXiv:2006.09952), described in :ref:`soft-rounding` and :ref:`uq-channel`:

* **Soft rounding** (Agustsson & Theis 2020, Sec. 4.1): a differentiable approximation
  :func:`soft_round` of ``round`` whose sharpness ``alpha`` interpolates between the
  identity (``alpha -> 0``) and hard rounding (``alpha -> inf``), its inverse
  :func:`soft_round_inverse` and the reconstruction
  :func:`soft_round_conditional_mean` ``E[Y | s_alpha(Y) + U = z]`` (:ref:`soft-rounding-mean`).
* **Universal quantisation** (Ziv 1985; Zamir & Feder 1992; :ref:`uq-channel`):
  :class:`UniformNoiseChannel` adds ``U ~ U[-1/2, 1/2)`` during training and, at
  test time, transmits ``K = round(y - U)`` with a dither ``U`` shared through a
  seed, so that the receiver's ``K + U`` has *exactly* the distribution of the
  training-time ``y + U``.  ``K`` is entropy coded given ``U`` with
  ``P(K = k | U = u) = F(k + u + 1/2) - F(k + u - 1/2)`` for a per-channel
  logistic marginal ``F`` (learnable), using a ``constriction`` range coder.
* **Reverse channel coding of VAE latents** (Theis & Yosri 2022; :ref:`hybrid-window`,
  :ref:`transform-width-m`, :ref:`blocks-product`): :class:`RCCChannel`
  trains with the reparameterised sample and the analytic KL, and at test time
  transmits *exact* samples of the diagonal-Gaussian posteriors with hybrid coding,
  blocks of latent dimensions calibrated on data, and the message coding of
  :mod:`rcc.entropy`, whose :class:`~rcc.entropy.BucketIndexCode` (re-exported here) is
  the index code it fits.

The module is called ``rcc.torch``; inside it ``import torch`` is the real PyTorch
(absolute imports).
"""

from ..entropy import BucketIndexCode
from .channel import RCCChannel
from .soft_round import DEFAULT_EPS, soft_round, soft_round_conditional_mean, soft_round_inverse
from .uniform_noise import UniformNoiseChannel

__all__ = [
    "soft_round",
    "soft_round_inverse",
    "soft_round_conditional_mean",
    "UniformNoiseChannel",
    "RCCChannel",
    "BucketIndexCode",
]
