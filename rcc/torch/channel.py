"""Reverse channel coding of diagonal-Gaussian VAE latents (Theis & Yosri 2022; :ref:`blocks-product`).
"""

from __future__ import annotations

from typing import Any, Sequence, cast

import math
import numbers

import numpy as np
import torch
from torch import nn

from ..entropy import BucketIndexCode
from ..entropy._checks import _libm
from ..targets import Normal, Product
from ._common import _DTYPE_CODES, _LN2, _check_positive_real, _check_seed, _check_shape, _check_tensor, _keeps_torch_threads
from ._calibration import _PRIOR, _widths_and_coding_priors, _balanced_blocks, _blocks_within_candidates
from ._calibration import _dimension_log2_candidates, _code_from_buffer, _code_to_buffer, _factor_table_lengths, _fit_factor_tables, _gaussian_kl_bits_np, _gaussian_kl_bits_torch, _gaussian_kl_to_prior_bits_np
from ._fallback import _FallbackCoding
from .streams import _STREAM_JOINT, _StreamCoding, _derive_seed

__all__ = ["RCCChannel"]


class RCCChannel(_StreamCoding, _FallbackCoding, nn.Module):
    r"""Reverse-channel-coded diagonal-Gaussian latents for VAEs (Theis & Yosri 2022; :ref:`blocks-product`).

    The layer sits where a VAE samples its latent ``z ~ N(mean, exp(log_scale)**2)``
    under the prior ``N(0, 1)``:

    * **training mode** -- ``z, rate_bits = channel(mean, log_scale)`` returns the
      reparameterised sample ``mean + exp(log_scale) * eps`` and the analytic
      ``D_KL[q || N(0, 1)]`` in bits per item (summed over the latent dimensions);
      gradients flow to ``mean`` and ``log_scale``.
    * **evaluation mode** -- ``z, rate_bits = channel(mean, log_scale, seed)`` runs the
      real coder: :meth:`compress` turns the posteriors into bytes, :meth:`decompress`
      decodes the bytes, and ``z`` is the decoded latent, an *exact* sample of the
      (truncated) posterior, the same distribution the decoder saw in training;
      ``rate_bits`` are the per-item bits of the messages (see :meth:`compress`).
      No gradients.

    Coding.  The latent dimensions are grouped into ``num_blocks`` blocks of
    ``block_size`` dimensions.  For every item, each block is coded as one
    ``rcc.Product`` target by hybrid coding (:ref:`hybrid-window`, :ref:`blocks-product`): one race over
    ``block_size``-dimensional candidates, one index ``N`` and one decoding factor
    ``K_j`` per dimension, with the width-``M_j`` CDF transform of dimension ``j``
    (:ref:`transform-width-m`).  Each Gaussian is truncated to its central ``1 - tail_mass``
    (:ref:`truncation-central`, :ref:`truncation-tv`: the decoded latent is an exact sample of the truncated posterior,
    at total-variation distance ``tail_mass`` per dimension from the untruncated one).
    All messages of all items go through :func:`rcc.entropy.encode_messages` into
    one bitstream, or (``compress(..., per_item=True)``) into one short stream per item.

    The CDF transform is the library's *coding transform* (:func:`rcc.coding_transform`)
    ``N(0, sigma_j**2)`` per dimension: ``sigma_j = coding_prior_scale`` (by default
    the library's ``rcc.DEFAULT_TRANSFORM_SCALE``) for the dimensions that carry
    information, ``1`` (the prior itself) for those whose posteriors stay at the prior;
    the prior of the KL stays ``N(0, 1)``.  Under the
    wider coding prior the transform is nearly linear where the posteriors live,
    so one width fits a posterior wherever its mean lies; the index then carries
    about 1 bit per dimension less and the race does not slow down for means far
    from 0.  The decoding factors, whose marginal is no longer uniform, are coded
    with a learned marginal (``factor_code="fitted"``, the default): one
    :class:`rcc.entropy.TabulatedFactorCode` table per dimension, the calibration
    posteriors' aggregate seen through the coding prior.  The total then stays at or
    below the KL to ``N(0, 1)`` (below by up to ``KL[aggregate || N(0, 1)]``, the part
    of the ELBO's rate that is not information); ``factor_code="prior"`` codes them
    with the ``N(0, 1)`` marginal itself (:class:`rcc.entropy.MarginalFactorCode`).
    The samples are exact whatever the coding prior and factor code: they only
    shape the proposal and the bits.

    The receiver does not know the posteriors, so widths, coding priors and block
    layout are fixed by :meth:`calibrate` on representative posteriors (like
    CompressAI's ``update()``) and stored in the module's buffers (``state_dict``):

    * ``M_j`` is the largest width such that a fraction ``coverage`` of the
      calibration posteriors of dimension ``j`` fit (transformed support length
      ``<= 1 / M_j``);
    * dimensions are grouped by the KL their *index* carries,
      ``D_j = E[KL(q_j || N(0, sigma_j**2))] - log2 M_j`` (the race examines about
      ``2**(1.5 D)`` candidates): the number of blocks is
      ``ceil(sum_j D_j / block_budget_bits)`` and a greedy largest-first assignment
      balances ``sum D_j`` over blocks of equal size (shorter blocks are padded with
      a dummy ``N(0, 1)`` dimension of width 1, which costs nothing and is
      discarded).  Dimensions whose posterior equals the prior carry ``D_j ~ 0`` and
      ride along almost for free;
    * with ``blocks="auto"`` the count then grows until at most a fraction
      ``1 - coverage`` of the calibration item-blocks would examine more than
      ``2**max_log2_candidates`` candidates: a race examines about ``prod_j max w_j``
      candidates, and dimensions a little narrower than the prior carry a fraction of
      a bit of ``D_j`` each but a factor ``max w_j`` of often twice ``2**KL``, so
      blocks of many of them would leave the calibrated race (several bits and a far
      longer race each) where one more block costs about 2.5 bits;
    * every block costs about 2.5 bits above its KL (the entropy of the index
      beyond ``D``), so fewer, larger blocks are cheaper but slower;
    * the index code of the blocks (one for all blocks: the layout balances them)
      is fitted on the calibration messages: a histogram over ``log2`` buckets of
      the index (:class:`BucketIndexCode`, default), ``rcc.entropy``'s
      :class:`~rcc.entropy.EmpiricalIndexCode`, or a Zipf code for the mean block
      (``"zipf"``, no calibration encodings needed).

    Drift and the exact fallback.  At compress time a block of an item takes the
    calibrated race only if all its dimensions fit their widths and the race's expected
    number of candidates ``prod_j max w_j`` is at most ``2**max_log2_candidates``.
    Test-time posteriors drift from the calibration ones; a block that does not qualify
    takes one race with *width classes*: dimension ``j`` gets the narrower window
    ``max(1, M_j >> c_j)`` for the smallest class ``c_j`` it fits, the classes are sent
    in the stream (adaptively: in a batch stream a latent that drifts in every item
    costs next to nothing after the first items) and the block's index is coded with the
    block index code shifted by ``sum_j c_j`` buckets.  Halving a window moves a bit from
    the factor to the index, so a posterior up to twice as wide as at calibration costs
    about its KL plus the class symbols, at about twice the candidates.  Only if that
    race would examine more than four times ``2**max_log2_candidates`` candidates is the
    block coded *dimension by dimension with width 1* (a plain race against the coding
    prior, which every truncated posterior fits) with a Zipf index code.  Every path
    samples the posterior exactly and the choice depends on the posterior only (not on
    the shared randomness), so the output is unbiased; leaving the calibrated race only
    costs bits and candidates.  Posteriors so far from the coding prior (e.g.
    ``exp(log_scale)`` well above ``sigma_j`` or ``|mean| >~ 5 sigma_j``) that even one
    dimension would need more than ``2**24`` candidates raise ``ValueError``.

    Parameters
    ----------
    latent_shape : int or tuple of int
        Shape of one item's latent (the trailing axes of ``mean``); its
        ``num_latents = prod(latent_shape)`` entries are the coded dimensions.
    block_budget_bits : float, optional
        Target KL carried by the index of one block, ``sum_{j in block} D_j``
        (default 12).
    blocks : "auto" or int, optional
        ``"auto"`` (default) derives the number of blocks from ``block_budget_bits``
        and the calibration races' candidates (above);
        an integer fixes it (``1``: one joint block, ``num_latents``: one block per
        dimension, i.e. per-dimension coding).
    coverage : float, optional
        Fraction of the calibration posteriors of each dimension that must fit its
        width (default 0.999).
    tail_mass : float, optional
        Total tail mass removed from each Gaussian (default 1e-4, the library's).
    max_log2_candidates : float, optional
        Blocks whose race would examine more than ``2**max_log2_candidates``
        candidates take the fallback path (default 20, at most 23).
    index_code : {"bucket", "empirical", "zipf"}, optional
        Code of the block indices (default ``"bucket"``).
    factor_code : {"fitted", "prior"}, optional
        Code of the decoding factors.  ``"fitted"`` (default): a learned marginal,
        :class:`rcc.entropy.TabulatedFactorCode` with one table per dimension, fitted
        at calibration to the aggregate of the calibration posteriors seen through the
        coding prior (mixed with weight ``0.01`` with the ``N(0, 1)`` prior's masses, so
        that a posterior unlike the calibration data costs at most
        ``log2(100)`` bits more per factor).  It saves up to
        ``KL[aggregate posterior || N(0, 1)]`` per dimension, the gap between the
        ELBO's KL term and the information the latents carry.  ``"prior"``: the
        ``N(0, 1)`` marginal (:class:`rcc.entropy.MarginalFactorCode`).
    coding_prior_scale : float, optional
        ``sigma`` of the coding transform ``N(0, sigma**2)`` (default
        ``rcc.DEFAULT_TRANSFORM_SCALE``, the transform ``rcc.encode_sample`` uses by
        default; ``1`` codes everything through the prior ``N(0, 1)`` with uniform
        factors, ``transform="prior"``).
    generator : torch.Generator, optional
        Generator of the training-mode noise ``eps``.

    Notes
    -----
    The encoder's latents are computed in float64 by :mod:`rcc`; the channel returns
    them cast to the input's dtype (a deterministic rounding), so :meth:`decompress`
    in any process reproduces them bit for bit from the bytes, the seed, the shape
    and the ``state_dict``.  Coding runs on the CPU; tensors on other devices are
    moved there and back.

    Examples
    --------
    Posteriors of 8 latents (here synthetic; in a VAE, the encoder's outputs):

    >>> import torch
    >>> from rcc.torch import RCCChannel
    >>> g = torch.Generator().manual_seed(0)
    >>> mean = 0.9 * torch.randn(64, 8, generator=g)
    >>> log_scale = torch.full((64, 8), -2.0, requires_grad=True)
    >>> channel = RCCChannel(8)
    >>> z, rate_bits = channel(mean, log_scale)      # training: sample + KL in bits
    >>> rate_bits.mean().backward()                  # gradients reach the posterior
    >>> log_scale.grad.shape
    torch.Size([64, 8])

    After training, calibrate on representative posteriors, then code real bytes:

    >>> summary = channel.calibrate(0.9 * torch.randn(500, 8, generator=g), torch.full((500, 8), -2.0))
    >>> _ = channel.eval()
    >>> data, item_bits = channel.compress(mean, log_scale.detach(), seed=7)
    >>> z = channel.decompress(data, seed=7, shape=mean.shape)
    >>> z.shape, channel.num_blocks
    (torch.Size([64, 8]), 1)
    >>> kl = float(channel.kl_bits(mean, log_scale.detach()).mean())   # about 22 bits per item
    >>> bool(kl < 8 * len(data) / 64 < kl + 6)  # a block's index overhead, and ~5 bytes per stream
    True
    """

    blocks: str | int
    # The calibrated state (buffers, see ``__init__``).
    latent_shape_buffer: torch.Tensor
    widths: torch.Tensor
    prior_scales: torch.Tensor
    wide_prior_scale: torch.Tensor
    block_dims: torch.Tensor
    index_code_json: torch.Tensor
    fallback_index_kl_bits: torch.Tensor
    calibration_kl_bits: torch.Tensor
    factor_tables: torch.Tensor

    def __init__(
        self,
        latent_shape: int | Sequence[int],
        *,
        block_budget_bits: float = 12.0,
        blocks: str | int = "auto",
        coverage: float = 0.999,
        tail_mass: float = 1e-4,
        max_log2_candidates: float = 20.0,
        index_code: str = "bucket",
        coding_prior_scale: float | None = None,
        factor_code: str = "fitted",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        latent_shape = _check_shape(latent_shape, "latent_shape")
        if len(latent_shape) == 0 or math.prod(latent_shape) == 0:
            raise ValueError(f"latent_shape must be non-empty with positive entries, got {tuple(latent_shape)}")
        self.latent_shape = latent_shape
        self.block_budget_bits = _check_positive_real(block_budget_bits, "block_budget_bits")
        if isinstance(blocks, str):
            if blocks != "auto":
                raise ValueError(f"blocks must be 'auto' or a positive integer, got {blocks!r}")
        elif isinstance(blocks, (bool, np.bool_)) or not isinstance(blocks, numbers.Integral):
            raise TypeError(f"blocks must be 'auto' or a positive integer, got {blocks!r}")
        elif not 1 <= blocks <= self.num_latents:
            raise ValueError(f"blocks must be in [1, num_latents={self.num_latents}], got {blocks}")
        self.blocks = blocks if isinstance(blocks, str) else int(blocks)
        coverage = _check_positive_real(coverage, "coverage")
        if coverage > 1.0:
            raise ValueError(f"coverage must be in (0, 1], got {coverage}")
        self.coverage = coverage
        tail_mass = _check_positive_real(tail_mass, "tail_mass")
        if tail_mass >= 1.0:
            raise ValueError(f"tail_mass must be in (0, 1), got {tail_mass}")
        self.tail_mass = tail_mass
        max_log2_candidates = _check_positive_real(max_log2_candidates, "max_log2_candidates")
        if max_log2_candidates > 23.0:
            raise ValueError(f"max_log2_candidates must be at most 23, got {max_log2_candidates}")
        self.max_log2_candidates = max_log2_candidates
        if index_code not in ("bucket", "empirical", "zipf"):
            raise ValueError(f"index_code must be 'bucket', 'empirical' or 'zipf', got {index_code!r}")
        self.index_code = index_code
        if factor_code not in ("fitted", "prior"):
            raise ValueError(f"factor_code must be 'fitted' or 'prior', got {factor_code!r}")
        self.factor_code = factor_code
        if coding_prior_scale is None:
            from ..coding import DEFAULT_TRANSFORM_SCALE

            coding_prior_scale = DEFAULT_TRANSFORM_SCALE
        self.coding_prior_scale = _check_positive_real(coding_prior_scale, "coding_prior_scale")
        if self.coding_prior_scale < 1.0:
            raise ValueError(f"coding_prior_scale must be >= 1, got {coding_prior_scale}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.generator = generator

        d = self.num_latents
        # Calibration state (buffers, so that it travels in the state_dict).
        self.register_buffer("latent_shape_buffer", torch.tensor(list(latent_shape), dtype=torch.int64))
        self.register_buffer("widths", torch.zeros(d, dtype=torch.int64))
        self.register_buffer("prior_scales", torch.ones(d, dtype=torch.float64))
        self.register_buffer("wide_prior_scale", torch.ones((), dtype=torch.float64))
        self.register_buffer("block_dims", torch.zeros((0, 0), dtype=torch.int64))
        self.register_buffer("index_code_json", torch.zeros(0, dtype=torch.uint8))
        self.register_buffer("fallback_index_kl_bits", torch.zeros((), dtype=torch.float64))
        self.register_buffer("calibration_kl_bits", torch.zeros(d, dtype=torch.float64))
        # Cell masses of the fitted factor code, dimension after dimension (empty: the prior's).
        self.register_buffer("factor_tables", torch.zeros(0, dtype=torch.float64))
        self._codes = None  # cached (block code, fallback code) built from the buffers

    # -- configuration -------------------------------------------------------------

    @property
    def num_latents(self) -> int:
        """Number of coded dimensions per item, ``prod(latent_shape)``."""
        return int(math.prod(self.latent_shape))

    @property
    def is_calibrated(self) -> bool:
        """Whether :meth:`calibrate` has run (or a calibrated state was loaded)."""
        return bool(self.block_dims.numel()) and bool((self.widths > 0).all())

    @property
    def num_blocks(self) -> int:
        """Number of blocks per item (0 before calibration)."""
        return int(self.block_dims.shape[0])

    @property
    def block_size(self) -> int:
        """Dimensions per block, padding included (0 before calibration)."""
        return int(self.block_dims.shape[1])

    def extra_repr(self) -> str:
        state = (
            f"num_blocks={self.num_blocks}, block_size={self.block_size}"
            if self.is_calibrated
            else "uncalibrated"
        )
        return f"latent_shape={tuple(self.latent_shape)}, {state}, tail_mass={self.tail_mass}"

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, Any], **kwargs: Any) -> RCCChannel:
        """A channel rebuilt from a :meth:`state_dict` alone (what a receiver holds).

        Parameters
        ----------
        state_dict : dict
            The output of ``channel.state_dict()`` (keys may carry a module prefix,
            e.g. ``"channel."``, if exactly one ``latent_shape_buffer`` is present).
        **kwargs
            Constructor options (irrelevant for decoding).

        Returns
        -------
        RCCChannel
        """
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        keys = [k for k in state_dict if k.endswith("latent_shape_buffer")]
        if len(keys) != 1:
            raise ValueError("state_dict must contain exactly one RCCChannel (one 'latent_shape_buffer' key)")
        prefix = keys[0][: -len("latent_shape_buffer")]
        own = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        shape = tuple(int(v) for v in own["latent_shape_buffer"].tolist())
        channel = cls(shape, **kwargs)
        channel.load_state_dict(own)
        return channel

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The calibration buffers change shape at calibration: adopt the incoming
        # shapes before the standard copy (as CompressAI does for its CDF tables).
        for name in ("widths", "block_dims", "index_code_json", "calibration_kl_bits", "factor_tables"):
            key = prefix + name
            if key in state_dict and isinstance(state_dict[key], torch.Tensor):
                current = getattr(self, name)
                if current.shape != state_dict[key].shape:
                    setattr(self, name, torch.zeros_like(state_dict[key], dtype=current.dtype, device=current.device))
        key = prefix + "latent_shape_buffer"
        if key in state_dict and isinstance(state_dict[key], torch.Tensor):
            incoming = tuple(int(v) for v in state_dict[key].reshape(-1).tolist())
            if incoming != tuple(self.latent_shape):
                raise ValueError(
                    f"state_dict is for latent_shape {incoming}, this channel has {tuple(self.latent_shape)}"
                )
        self._codes = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- argument checking -------------------------------------------------------------

    def _check_posterior(self, mean, log_scale):
        """Validate ``(mean, log_scale)`` and return the batch shape."""
        mean = _check_tensor(mean, "mean")
        log_scale = _check_tensor(log_scale, "log_scale")
        if mean.shape != log_scale.shape:
            raise ValueError(
                f"mean and log_scale must have the same shape, got {tuple(mean.shape)} and "
                f"{tuple(log_scale.shape)}"
            )
        k = len(self.latent_shape)
        if mean.ndim < k or tuple(mean.shape[mean.ndim - k:]) != tuple(self.latent_shape):
            raise ValueError(
                f"mean of shape {tuple(mean.shape)} must end with latent_shape {tuple(self.latent_shape)}"
            )
        return mean.shape[: mean.ndim - k]

    def _require_calibration(self):
        if not self.is_calibrated:
            raise RuntimeError(
                "RCCChannel is not calibrated: call channel.calibrate(mean, log_scale) on representative "
                "posteriors (or load a calibrated state_dict) before compress/decompress/eval-mode forward"
            )

    def _posterior_arrays(self, mean, log_scale):
        """float64 numpy ``(mean, std)`` of shape ``(items, num_latents)``."""
        d = self.num_latents
        mean64 = mean.detach().to(device="cpu", dtype=torch.float64).reshape(-1, d).numpy()
        log_scale64 = log_scale.detach().to(device="cpu", dtype=torch.float64).reshape(-1, d).numpy()
        message = "log_scale must lie in about [-700, 700] (exp(log_scale) under/overflows float64)"
        try:
            # The C library's exp per element: both coder sides derive the standard deviations,
            # and numpy's vectorised exp rounds differently on different CPUs.
            std64 = _libm(math.exp, log_scale64)
        except OverflowError:
            raise ValueError(message) from None
        if std64.size and not (np.all(std64 > 0) and np.all(np.isfinite(std64))):
            raise ValueError(message)
        return np.ascontiguousarray(mean64), np.ascontiguousarray(std64), log_scale64

    # -- training-time rate ----------------------------------------------------------

    def kl_bits(self, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
        """Analytic ``D_KL[N(mean, exp(log_scale)**2) || N(0, 1)]`` in bits per item.

        Differentiable; summed over the latent dimensions.

        Parameters
        ----------
        mean, log_scale : torch.Tensor
            Posterior parameters of shape ``batch_shape + latent_shape``.

        Returns
        -------
        torch.Tensor
            Shape ``batch_shape``.
        """
        batch_shape = self._check_posterior(mean, log_scale)
        kl = _gaussian_kl_bits_torch(mean, log_scale)
        return kl.reshape(*batch_shape, self.num_latents).sum(-1)

    # -- forward -------------------------------------------------------------------------

    def forward(self, mean: torch.Tensor, log_scale: torch.Tensor, seed: int | None = None, *,
                return_data: bool = False) -> Any:
        """Sample the latent and its rate.

        Parameters
        ----------
        mean, log_scale : torch.Tensor
            Posterior parameters, shape ``batch_shape + latent_shape``.
        seed : int, optional
            Shared seed of the real coder; required in eval mode (ignored in
            training mode).
        return_data : bool, optional
            In eval mode, also return the bitstream.

        Returns
        -------
        z : torch.Tensor
            Training: ``mean + exp(log_scale) * eps``.  Eval: the latent decoded from
            the real bitstream (no gradient).
        rate_bits : torch.Tensor
            Shape ``batch_shape``.  Training: the analytic KL in bits.  Eval: the bits
            of each item's messages (float64, see :meth:`compress`).
        data : bytes
            Eval mode with ``return_data=True`` only.
        """
        batch_shape = self._check_posterior(mean, log_scale)
        if self.training:
            eps = torch.randn(mean.shape, generator=self.generator, dtype=mean.dtype, device=mean.device)
            z = mean + torch.exp(log_scale) * eps
            return z, self.kl_bits(mean, log_scale)
        if seed is None:
            raise ValueError("seed is required in eval mode (the real coder shares randomness through it)")
        data, item_bits, stats = self.compress(mean, log_scale, seed, return_stats=True)
        z = self.decompress(data, seed, mean.shape, device=mean.device)
        if not torch.equal(z.cpu(), stats["latents"]):
            raise RuntimeError("decoded latents differ from the encoder's latents (please report this bug)")
        rate = item_bits.reshape(batch_shape).to(mean.device)
        if return_data:
            return z, rate, data
        return z, rate

    # -- calibration ---------------------------------------------------------------------

    @_keeps_torch_threads
    def calibrate(self, mean: torch.Tensor, log_scale: torch.Tensor, *, seed: int = 0,
                  progress: bool = False) -> dict[str, Any]:
        """Fix the widths, the block layout and the index code from representative posteriors.

        The analogue of CompressAI's ``update()``: run it once after training on the
        posteriors of (a subset of) the training data; the result lives in the
        module's buffers, so it is saved and loaded with the ``state_dict``.  The
        result is a deterministic function of the inputs and ``seed``.

        Steps (see the class docstring): per dimension, the coding prior
        (``N(0, coding_prior_scale**2)``, or ``N(0, 1)`` for dimensions that stay at
        the prior), the width ``M_j`` from the ``coverage`` quantile of the
        transformed support lengths, and the index KL
        ``D_j = mean KL(q_j || coding prior) - log2 M_j``; then a balanced block
        layout (with ``blocks="auto"``, enough blocks that all but ``1 - coverage``
        of the calibration item-blocks stay within ``2**max_log2_candidates``
        candidates); finally (unless ``index_code="zipf"``) the calibration posteriors are
        coded with seed ``seed`` and the index code is fitted to the indices of the
        jointly coded blocks.

        Parameters
        ----------
        mean, log_scale : torch.Tensor
            Calibration posteriors, shape ``batch_shape + latent_shape`` (at least one
            item).
        seed : int, optional
            Seed of the calibration encodings (for the fitted index codes).
        progress : bool, optional
            Progress bar for the calibration encodings.

        Returns
        -------
        dict
            ``"widths"`` and ``"prior_scales"`` (per dimension), ``"block_dims"`` (``num_blocks x block_size``,
            ``-1`` = padding), ``"dimension_kl_bits"`` (mean KL per dimension),
            ``"dimension_index_kl_bits"`` (``D_j``), ``"block_kl_bits"`` and
            ``"block_index_kl_bits"`` (their sums per block), ``"fallback_fraction"``
            (share of calibration item-blocks that take the fallback path) and, for the
            fitted codes, ``"mean_index_bits"`` (mean information content of the
            calibration indices).
        """
        self._check_posterior(mean, log_scale)
        seed = _check_seed(seed)
        mean64, std64, log_scale64 = self._posterior_arrays(mean, log_scale)
        n, d = mean64.shape
        if n == 0:
            raise ValueError("calibration needs at least one item (mean has no items)")
        kl = _gaussian_kl_bits_np(mean64, log_scale64).mean(axis=0)

        widths, index_kl, prior_scales, fallback_kl = _widths_and_coding_priors(
            mean64, std64, log_scale64, self.tail_mass, self.coverage, self.coding_prior_scale)
        wide = self.coding_prior_scale
        if self.blocks == "auto":
            num_blocks = int(min(d, max(1, math.ceil(float(index_kl.sum()) / self.block_budget_bits - 1e-9))))
            # More blocks where the budget's blocks would leave the calibrated race for their length.
            num_blocks, block_dims = _blocks_within_candidates(
                index_kl, num_blocks, _dimension_log2_candidates(mean64, std64, widths, prior_scales, self.tail_mass),
                self.max_log2_candidates, 1.0 - self.coverage)
        else:
            num_blocks = int(self.blocks)
            block_dims = _balanced_blocks(index_kl, num_blocks)

        device = self.widths.device
        self.widths = torch.as_tensor(widths, dtype=torch.int64, device=device)
        self.prior_scales = torch.as_tensor(prior_scales, dtype=torch.float64, device=device)
        self.wide_prior_scale = torch.tensor(wide, dtype=torch.float64, device=device)
        self.block_dims = torch.as_tensor(block_dims, dtype=torch.int64, device=device)
        self.calibration_kl_bits = torch.as_tensor(kl, dtype=torch.float64, device=device)
        self.fallback_index_kl_bits = torch.tensor(float(max(fallback_kl, 0.0)), dtype=torch.float64, device=device)
        if self.factor_code == "fitted":
            tables = _fit_factor_tables(mean64, std64, widths, prior_scales)
            self.factor_tables = torch.as_tensor(tables, dtype=torch.float64, device=device)
        else:
            self.factor_tables = torch.zeros(0, dtype=torch.float64, device=device)
        valid = block_dims >= 0
        block_index_kl = np.where(valid, index_kl[np.where(valid, block_dims, 0)], 0.0).sum(axis=1)
        block_kl = np.where(valid, kl[np.where(valid, block_dims, 0)], 0.0).sum(axis=1)
        from ..entropy import EmpiricalIndexCode, ZipfIndexCode

        # Zipf code for the mean block (replaced below by a fitted code unless "zipf").
        self.index_code_json = _code_to_buffer(ZipfIndexCode(float(block_index_kl.mean())), device)
        summary = {
            "widths": widths,
            "prior_scales": prior_scales,
            "block_dims": block_dims,
            "dimension_kl_bits": kl,
            "dimension_index_kl_bits": index_kl,
            "block_kl_bits": block_kl,
            "block_index_kl_bits": block_index_kl,
        }
        plan = self._plan(mean64, std64)
        summary["fallback_fraction"] = float(1.0 - plan["joint"].mean())
        if self.index_code != "zipf":
            joint = plan["positions_joint"]
            if joint.size == 0:
                raise ValueError(
                    "no calibration item-block can be coded jointly (all exceed max_log2_candidates); "
                    "use a smaller block_budget_bits or index_code='zipf'"
                )
            encoded = self._encode_joint(plan, joint, _derive_seed(seed, _STREAM_JOINT), progress)
            indices = np.asarray(encoded.index).reshape(-1)
            code: BucketIndexCode | EmpiricalIndexCode
            if self.index_code == "bucket":
                code = BucketIndexCode.fit(indices)
            else:
                code = EmpiricalIndexCode.fit(indices)
            self.index_code_json = _code_to_buffer(code, device)
            summary["mean_index_bits"] = float(np.mean(code.bits(indices)))
        return summary

    # -- the coder -----------------------------------------------------------------------

    def _index_codes(self):
        """``(block index code, fallback index code)`` built from the buffers."""
        from ..entropy import ZipfIndexCode

        key = (self.index_code_json.detach().cpu().numpy().tobytes(), float(self.fallback_index_kl_bits))
        if self._codes is None or self._codes[0] != key:
            block_code = _code_from_buffer(self.index_code_json)
            fallback_code = ZipfIndexCode(max(0.0, key[1]))
            self._codes = (key, (block_code, fallback_code))
        return self._codes[1]

    def _factor_code(self):
        """Code of the decoding factors: fitted tables, or the library's default code of the N(0, 1)
        marginal on the coding transform's axis."""
        from ..entropy import TabulatedFactorCode, default_factor_code
        from ..targets import Normal

        if self.factor_tables.numel():
            widths = self.widths.detach().cpu().numpy()
            tables = self.factor_tables.detach().cpu().numpy()
            lengths = _factor_table_lengths(widths)
            if int(lengths.sum()) != tables.size:
                raise ValueError("factor_tables buffer does not match the widths (corrupt state_dict)")
            return TabulatedFactorCode(np.split(tables, np.cumsum(lengths)[:-1]), widths)
        wide = float(self.wide_prior_scale)
        if wide == 1.0:
            return None  # uniform over the M values: exact under the N(0, 1) marginal
        return default_factor_code(_PRIOR, Normal(0.0, wide))

    def _factor_context(self, plan, positions):
        """Table of each joint factor under a fitted factor code: its latent dimension."""
        if not self.factor_tables.numel():
            return None
        return plan["safe"][positions % self.num_blocks]

    def _layout(self):
        """Block layout as numpy: padding mask, dimension indices, widths and prior scales."""
        dims = self.block_dims.detach().cpu().numpy()
        pad = dims < 0
        safe = np.where(pad, 0, dims)
        widths = self.widths.detach().cpu().numpy()
        scales = self.prior_scales.detach().cpu().numpy()
        block_widths = np.where(pad, 1, widths[safe]).astype(np.int64)
        block_scales = np.where(pad, 1.0, scales[safe])
        return {"pad": pad, "safe": safe, "block_widths": block_widths, "block_scales": block_scales}

    def _encode_joint(self, plan, positions, seed, progress=False):
        from ..coding import encode_sample
        from ..targets import Normal, Product

        target = Product(Normal(plan["mu"][positions], plan["sd"][positions]))
        blocks = positions % self.num_blocks
        transform = Normal(0.0, plan["block_scales"][blocks])
        # The race examines about w_max <= 2**max_log2_candidates candidates on average with a
        # light (exponential) tail: a cap 256 times higher is never reached in practice, where
        # the library's default 2**24 would be, now and then, for max_log2_candidates near 23.
        cap = 2 ** (math.ceil(self.max_log2_candidates) + 8)
        return encode_sample(target, seed, prior=_PRIOR, width=plan["block_widths"][blocks],
                             tail_mass=self.tail_mass, max_candidates=cap, progress=progress, transform=transform)

    def _scatter(self, out, plan, positions, values, keep=None):
        """Write block-layout ``values`` of item-blocks ``positions`` into ``out`` (items x latents)."""
        blocks = positions % self.num_blocks
        rows = np.repeat((positions // self.num_blocks)[:, None], self.block_size, axis=1)
        cols = plan["safe"][blocks]
        mask = ~plan["pad"][blocks]
        if keep is None:
            out[rows[mask], cols[mask]] = values[mask]
        else:
            out[rows[mask], cols[mask]] = values

    def _truncated_kl_bits(self, mean64, std64):
        """Per item ``sum_j D_KL[truncated q_j || N(0, 1)]`` in bits: what an ideal coder pays."""
        from ..coding import kl_divergence_bits
        from ..targets import Normal, Product

        if mean64.shape[0] == 0:
            return np.zeros(0)
        kl = kl_divergence_bits(Product(Normal(mean64, std64)), tail_mass=self.tail_mass)
        return np.asarray(kl, dtype=np.float64).reshape(-1)

    @_keeps_torch_threads
    def compress(self, mean: torch.Tensor, log_scale: torch.Tensor, seed: int, *, return_stats: bool = False,
                 progress: bool = False, per_item: bool = False) -> Any:
        """Code exact samples of the posteriors into bytes: one stream for the batch, or one per item.

        Every item-block is coded by hybrid coding (``rcc.encode_sample``) with the
        calibrated widths, or by the exact per-dimension fallback (class docstring);
        all messages are coded by :mod:`rcc.entropy`.

        Batch stream (``per_item=False``, the default; format 4): one header byte (format
        version, fallback flag, dtype); a CRC32 of the header, the seed, the batch shape,
        the channel's state and the payload; then one range-coded payload: which
        item-blocks left the calibrated race (adaptively, only if the header says some
        did), the joint messages (as :mod:`rcc.entropy` codes them, seed derived from
        ``seed``), and the fallback blocks' modes, width classes and messages (other
        derived seeds), ended at the shortest byte string that decodes.  A stream costs
        about 5 bytes above its messages' ideal bits, whatever the batch size.  The
        receiver re-encodes what it decoded and requires the same bytes.  Batch streams of
        the earlier formats 2 and 3 (a complete :func:`rcc.entropy.encode_messages`
        stream inside, about 20 bytes more) are still read.

        Per-item streams (``per_item=True``): a list of ``bytes``, one per item (flat C
        order of ``batch_shape``), each decodable on its own.  Item ``i`` draws its
        shared randomness from a seed derived from ``(seed, i)`` and its bytes are a
        2-byte header (format version, dtype, fallback flag and an 11-bit check of
        the item's bytes, seed, position and the channel's state) followed by one
        range-coded payload (which blocks fall back, if any; the joint messages; the
        fallback blocks' modes, width classes and messages), ended at the shortest byte
        string that decodes (about 3 bits of termination per item where whole 32-bit
        words cost up to 32).  An item's fallback mask and width classes are coded under
        fixed models made for one item (format 0: one latent in eight drifting costs about
        4.8 bits of classes, 3 of them naming it, and all eight about 6.4); items without fallback blocks are format 3.  Everything shared lives in the ``state_dict``.  The
        receiver also re-encodes what it decoded and requires the same bytes, so bytes
        appended to a payload are rejected even where the short check would pass them;
        the payload itself has no redundancy, so damage inside it that the 11-bit check
        misses (about 1 in 2048) decodes to other latents.  Per-item streams of the
        earlier formats (whole words; format 3 with the batch stream's adaptive classes)
        are still read.

        Parameters
        ----------
        mean, log_scale : torch.Tensor
            Posterior parameters, shape ``batch_shape + latent_shape``; float16, bfloat16,
            float32 or float64.
        seed : int
            Shared seed in ``[0, 2**64)``; the receiver needs the same one.
        return_stats : bool, optional
            Also return a dict of statistics (below).
        progress : bool, optional
            Progress bar for large batches (batch stream only).
        per_item : bool, optional
            Return one ``bytes`` per item instead of one stream.

        Returns
        -------
        data : bytes, or list of bytes with ``per_item=True``
            The bitstream(s).
        item_bits : torch.Tensor
            float64, shape ``batch_shape``: the information content of each item's
            messages under the coder's models (``-log2 P(N)`` of every index plus
            ``-log2 P(K | U_N)`` of every decoding factor,
            :func:`rcc.entropy.message_bits`).  The range coder packs them into the
            bytes, which exceed ``item_bits`` only by the headers and the coder's
            termination (see ``"item_measured_bits"``).
        stats : dict
            With ``return_stats=True``: ``"latents"`` (the encoder's latents, the
            input's dtype, on the CPU), ``"measured_bits"`` (``8 *`` all bytes),
            ``"item_measured_bits"`` (per item, float64, summing to
            ``"measured_bits"``: ``8 * len(data[i])`` per item, or for a batch stream
            each item's ``item_bits`` plus an equal share of the rest: headers and
            termination), ``"kl_bits"`` (per item, ``D_KL`` of the truncated
            posteriors to ``N(0, 1)``, what an ideal coder of these samples pays),
            ``"candidates"`` (per item, candidates the races examined),
            ``"fallback_blocks"`` (number of item-blocks that left the calibrated
            race: width classes, or width 1 per dimension), ``"fallback_items"``
            (bool, shape ``batch_shape``: True for the items with at least one such
            block) and ``"fallback_item_blocks"`` (bool, shape
            ``batch_shape + (num_blocks,)``: True for each block that left the
            calibrated race).  Whether a block leaves it depends on its posterior and
            the calibrated state only, so the same items are flagged in a batch
            stream, in per-item streams and in any sub-batch.
        """
        batch_shape = self._check_posterior(mean, log_scale)
        seed = _check_seed(seed)
        self._require_calibration()
        if mean.dtype not in _DTYPE_CODES:
            raise TypeError(f"mean must be float16, bfloat16, float32 or float64, got {mean.dtype}")
        if not isinstance(per_item, (bool, np.bool_)):
            raise TypeError(f"per_item must be a bool, got {per_item!r}")
        mean64, std64, _ = self._posterior_arrays(mean, log_scale)
        n, d = mean64.shape
        plan = self._plan(mean64, std64)
        latents = np.zeros((n, d), dtype=np.float64)
        item_bits = np.zeros(n, dtype=np.float64)
        candidates = np.zeros(n, dtype=np.int64)
        if per_item:
            data = self._compress_items(plan, _DTYPE_CODES[mean.dtype], seed, latents, item_bits, candidates)
            item_measured = np.array([8.0 * len(blob) for blob in data])
            measured = int(item_measured.sum())
        else:
            data = self._compress_batch(plan, _DTYPE_CODES[mean.dtype], seed, batch_shape, latents, item_bits,
                                        candidates, progress)
            measured = 8 * len(data)
            item_measured = item_bits + (measured - item_bits.sum()) / max(n, 1)
        item_bits_t = torch.from_numpy(item_bits).reshape(batch_shape)
        if not return_stats:
            return data, item_bits_t
        stats = {
            "latents": torch.from_numpy(latents).to(mean.dtype).reshape(mean.shape),
            "measured_bits": measured,
            "item_measured_bits": torch.from_numpy(item_measured).reshape(batch_shape),
            "kl_bits": torch.from_numpy(self._truncated_kl_bits(mean64, std64)).reshape(batch_shape),
            "candidates": torch.from_numpy(candidates).reshape(batch_shape),
            "fallback_blocks": int(plan["positions_fallback"].size),
            "fallback_items": torch.from_numpy(~plan["joint"].all(axis=1)).reshape(batch_shape),
            "fallback_item_blocks": torch.from_numpy(~plan["joint"]).reshape(*batch_shape, self.num_blocks),
        }
        return data, item_bits_t, stats

    @_keeps_torch_threads
    def decompress(self, data: bytes | Sequence[bytes], seed: int, shape: Sequence[int] | int, *,
                   device: torch.device | str | None = None) -> torch.Tensor:
        """Decode :meth:`compress`'s bytes into the encoder's latents, bit for bit.

        Needs only the bytes, the seed, the shape and the calibrated state (widths,
        block layout, index codes).  Every header field is checked before use; a
        corrupted stream, or one decoded with another seed, shape or state, raises
        ``ValueError``.

        Parameters
        ----------
        data : bytes, or sequence of bytes
            The bitstream, or the per-item streams of ``compress(..., per_item=True)``
            (one per item, in order).
        seed : int
            The sender's seed.
        shape : tuple of int
            Shape of the latents, ``batch_shape + latent_shape``.
        device : torch.device, optional
            Output device (default CPU).

        Returns
        -------
        torch.Tensor
            The latents, in the dtype the sender's ``mean`` had.
        """
        per_item = isinstance(data, (list, tuple))
        if not per_item and not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes or a list of bytes (one per item), got {type(data).__name__}")
        seed = _check_seed(seed)
        size = _check_shape(shape)
        k = len(self.latent_shape)
        if len(size) < k or tuple(size[len(size) - k:]) != tuple(self.latent_shape):
            raise ValueError(f"shape {tuple(size)} must end with latent_shape {tuple(self.latent_shape)}")
        self._require_calibration()
        batch_shape = tuple(size[: len(size) - k])
        n = math.prod(batch_shape)
        latents = np.zeros((n, self.num_latents), dtype=np.float64)
        if per_item:
            dtype = self._decompress_items(data, seed, n, latents)
        else:
            dtype = self._decompress_batch(bytes(cast(bytes, data)), seed, batch_shape, n, latents)
        out = torch.from_numpy(latents).to(dtype).reshape(size)
        device = torch.device("cpu") if device is None else device
        return out.to(device)


