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

from __future__ import annotations

import json
import math
import numbers
import zlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .entropy import BucketIndexCode, IndexCode, _bytes_to_words, _read_varint, _varint, _words_to_bytes
from .coding import _hybrid_bounds
from .targets import Normal, Product

__all__ = [
    "soft_round",
    "soft_round_inverse",
    "soft_round_conditional_mean",
    "UniformNoiseChannel",
    "RCCChannel",
    "BucketIndexCode",
]

#: Below this sharpness the soft-rounding functions use their second-order Taylor
#: expansion in ``alpha`` (exact to O(alpha**4), i.e. ~1e-12 at the threshold),
#: which is the identity at ``alpha = 0`` and avoids the 0/0 of the closed form.
DEFAULT_EPS = 1e-3

_LN2 = math.log(2.0)
_MAX_SEED = 2**64 - 1
# Values whose magnitude reaches this cannot be quantised exactly in float64.
_MAX_ABS_QUANT = 2.0**52
_HALF_DTYPES = (torch.float16, torch.bfloat16)


# ----------------------------------------------------------------------------------
# argument checking
# ----------------------------------------------------------------------------------


def _check_tensor(x, name):
    """``x`` must be a floating torch tensor with finite values."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
    if x.numel() and not bool(torch.isfinite(x.detach()).all()):
        raise ValueError(f"{name} must be finite (it contains NaN or inf)")
    return x


def _compute_dtype(dtype):
    """Half precisions are computed in float32."""
    return torch.float32 if dtype in _HALF_DTYPES else dtype


def _check_alpha(alpha, like, name="alpha"):
    """Return ``alpha`` as a tensor broadcastable to ``like``.

    The tensor has ``like``'s device and computation dtype (float32 for half
    precisions, else ``like.dtype``) and is checked after the conversion.
    """
    dtype = _compute_dtype(like.dtype)
    if isinstance(alpha, (bool, np.bool_)):
        raise TypeError(f"{name} must be a real number or a tensor, got bool")
    if isinstance(alpha, numbers.Real):
        value = float(alpha)
        if value < 0:
            raise ValueError(f"{name} must be non-negative, got {value}")
        out = torch.tensor(value, dtype=dtype, device=like.device)
        if not bool(torch.isfinite(out)):
            raise ValueError(f"{name} must be finite in {dtype}, got {value}")
        return out
    if isinstance(alpha, torch.Tensor):
        if alpha.dtype == torch.bool or alpha.is_complex():
            raise TypeError(f"{name} must have a real dtype, got {alpha.dtype}")
        out = alpha.to(dtype=dtype, device=like.device)
        detached = out.detach()
        if detached.numel():
            if not bool(torch.isfinite(detached).all()):
                raise ValueError(f"{name} must be finite (it contains NaN or inf)")
            if bool((detached < 0).any()):
                raise ValueError(f"{name} must be non-negative")
        try:
            shape = torch.broadcast_shapes(alpha.shape, like.shape)
        except RuntimeError:
            shape = None
        if shape != like.shape:
            raise ValueError(
                f"{name} of shape {tuple(alpha.shape)} does not broadcast to the input "
                f"shape {tuple(like.shape)}"
            )
        return out
    raise TypeError(f"{name} must be a real number or a torch.Tensor, got {type(alpha).__name__}")


def _check_eps(eps):
    if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, numbers.Real):
        raise TypeError(f"eps must be a real number, got {type(eps).__name__}")
    eps = float(eps)
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a positive finite number, got {eps}")
    return eps


def _check_seed(seed, name="seed"):
    """Seeds are Python/numpy integers in ``[0, 2**64)`` (as in :mod:`rcc.random`)."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name} must be a non-negative integer, got {type(seed).__name__} {seed!r}")
    seed = int(seed)
    if seed < 0 or seed > _MAX_SEED:
        raise ValueError(f"{name} must be in [0, 2**64), got {seed}")
    return seed


def _check_shape(shape, name="shape"):
    if isinstance(shape, numbers.Integral) and not isinstance(shape, (bool, np.bool_)):
        shape = (shape,)
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"{name} must be a tuple of non-negative integers, got {shape!r}") from None
    for d in dims:
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, numbers.Integral):
            raise TypeError(f"{name} must be a tuple of non-negative integers, got {shape!r}")
        if d < 0:
            raise ValueError(f"{name} must contain non-negative integers, got {shape!r}")
    return torch.Size(int(d) for d in dims)


# ----------------------------------------------------------------------------------
# soft rounding
# ----------------------------------------------------------------------------------


def soft_round(y, alpha, eps=DEFAULT_EPS):
    r"""Differentiable approximation of ``round`` with sharpness ``alpha``.

    .. math::

        s_\alpha(y) = m + \frac{\tanh(\alpha r)}{2 \tanh(\alpha / 2)},
        \qquad m = \lfloor y \rfloor + \tfrac12, \quad r = y - m,

    (Agustsson & Theis 2020, Sec. 4.1; :ref:`soft-rounding-function`: the encoder rounds
    with a soft rounding function whose sharpness may grow during training).  ``s_alpha``
    is continuous, increasing, maps every integer to itself, satisfies
    ``s_alpha(y + 1) = s_alpha(y) + 1``, tends to the identity as ``alpha -> 0`` and
    to ``round`` as ``alpha -> inf``.

    Parameters
    ----------
    y : torch.Tensor
        Floating tensor of finite inputs.
    alpha : float or torch.Tensor
        Non-negative finite sharpness, a number or a tensor broadcastable to
        ``y`` (it may require grad).
    eps : float, optional
        For ``alpha < eps`` the second-order expansion
        ``y + alpha**2 r (1/12 - r**2/3)`` is used instead of the closed form
        (error O(alpha**4)); it equals ``y`` exactly at ``alpha = 0`` and keeps
        values and gradients free of 0/0.

    Returns
    -------
    torch.Tensor
        ``s_alpha(y)``, same shape and dtype as ``y``.  Values and gradients (with
        respect to ``y`` and ``alpha``) are finite for every finite input, including
        integers and half-integers and ``alpha`` up to at least ``1e6`` in float32
        and float64.  Half precisions are computed in float32 and cast back (a
        gradient ``alpha / 2`` above 65504 then overflows in float16).

    Raises
    ------
    TypeError
        If ``y`` is not a floating tensor or ``alpha`` is not a number/tensor.
    ValueError
        If ``y`` or ``alpha`` contain NaN/inf, ``alpha`` is negative or does not
        broadcast to ``y``.

    References
    ----------
    E. Agustsson and L. Theis, "Universally Quantized Neural Compression",
    NeurIPS 2020, arXiv:2006.09952.
    """
    y = _check_tensor(y, "y")
    alpha = _check_alpha(alpha, y)
    eps = _check_eps(eps)
    if y.dtype in _HALF_DTYPES:  # compute half precisions in float32
        return soft_round(y.float(), alpha, eps).to(y.dtype)
    m = torch.floor(y) + 0.5
    r = y - m
    # Closed form with alpha bounded away from zero so that the unused branch of
    # torch.where never produces NaN gradients.
    a = torch.clamp(alpha, min=eps)
    closed = m + torch.tanh(a * r) / (2.0 * torch.tanh(a / 2.0))
    series = y + alpha * alpha * r * (1.0 / 12.0 - r * r / 3.0)
    return torch.where(alpha < eps, series, closed)


def _atanh_2rt(r, a):
    """``atanh(2 r tanh(a / 2))`` for ``r`` in ``[-1/2, 1/2]`` and ``a > 0``, stably.

    ``1 -+ x`` with ``x = 2 r tanh(a/2)`` are formed as
    ``(1 -+ 2r) +- 4 r sigmoid(-a)`` (because ``1 - tanh(a/2) = 2 sigmoid(-a)``), so
    they keep full relative precision even where ``tanh(a/2)`` rounds to 1.  For
    ``|x| <= 1/2`` plain ``atanh`` is accurate; otherwise
    ``atanh(x) = (log(1 + x) - log(1 - x)) / 2``.  The one case where ``1 -+ x``
    underflows (``r = -+1/2`` exactly with a large ``a``) uses its exact value
    ``log(2 sigmoid(-a))``; there the true derivative (about ``e**a / (2a)``)
    overflows and the gradient with respect to ``r`` is returned as zero.  This
    replaces the clamp of the ``atanh`` argument used by tensorflow-compression
    and keeps values and gradients finite everywhere.
    """
    sig = torch.sigmoid(-a)
    x = 2.0 * r * torch.tanh(a / 2.0)
    one_minus = (1.0 - 2.0 * r) + 4.0 * r * sig
    one_plus = (1.0 + 2.0 * r) - 4.0 * r * sig
    limit = _LN2 + F.logsigmoid(-a)  # log(1 - tanh(a/2)) = log(2 sigmoid(-a))
    tiny = math.sqrt(torch.finfo(r.dtype).tiny)
    ok_minus = one_minus >= tiny
    ok_plus = one_plus >= tiny
    log_minus = torch.where(ok_minus, torch.log(torch.where(ok_minus, one_minus, 1.0)), limit)
    log_plus = torch.where(ok_plus, torch.log(torch.where(ok_plus, one_plus, 1.0)), limit)
    small = x.abs() <= 0.5
    near_zero = torch.atanh(torch.where(small, x, 0.0))
    far = 0.5 * (log_plus - log_minus)
    return torch.where(small, near_zero, far)


def soft_round_inverse(y, alpha, eps=DEFAULT_EPS):
    r"""Inverse of :func:`soft_round`.

    .. math::

        s_\alpha^{-1}(y) = m + \frac{\operatorname{atanh}\big(2 r \tanh(\alpha/2)\big)}{\alpha},
        \qquad m = \lfloor y \rfloor + \tfrac12, \quad r = y - m

    (Agustsson & Theis 2020, Sec. 4.1).  The ``atanh`` is evaluated with
    ``1 -+ 2 r tanh(alpha/2)`` formed from ``sigmoid(-alpha)``, so it never
    overflows at the interval boundaries (integers), where the exact limit is
    used; the offset is finally clamped to ``[-1/2, 1/2]``.

    Parameters
    ----------
    y : torch.Tensor
        Floating tensor of finite inputs.
    alpha : float or torch.Tensor
        Non-negative finite sharpness, broadcastable to ``y``.
    eps : float, optional
        Below this ``alpha`` the expansion ``y - alpha**2 r (1/12 - r**2/3)`` is used.

    Returns
    -------
    torch.Tensor
        ``s_alpha^{-1}(y)`` with finite values and gradients.  For large ``alpha``
        the function is nearly a step onto the half-integers with steep parts next
        to the integers (which are fixed points); ``soft_round_inverse(soft_round(y))``
        recovers ``y`` wherever ``soft_round`` is not numerically flat.

    Raises
    ------
    TypeError, ValueError
        As :func:`soft_round`.

    References
    ----------
    E. Agustsson and L. Theis, "Universally Quantized Neural Compression",
    NeurIPS 2020, arXiv:2006.09952.
    """
    y = _check_tensor(y, "y")
    alpha = _check_alpha(alpha, y)
    eps = _check_eps(eps)
    if y.dtype in _HALF_DTYPES:  # compute half precisions in float32
        return soft_round_inverse(y.float(), alpha, eps).to(y.dtype)
    m = torch.floor(y) + 0.5
    r = torch.clamp(y - m, -0.5, 0.5)
    a = torch.clamp(alpha, min=eps)
    offset = torch.clamp(_atanh_2rt(r, a) / a, -0.5, 0.5)
    closed = m + offset
    series = y - alpha * alpha * r * (1.0 / 12.0 - r * r / 3.0)
    return torch.where(alpha < eps, series, closed)


def soft_round_conditional_mean(z, alpha, eps=DEFAULT_EPS):
    r"""Reconstruction ``E[Y | s_alpha(Y) + U = z]`` with ``U ~ U[-1/2, 1/2)``.

    Given ``z``, ``s_alpha(Y) = z - U`` lies in ``(z - 1/2, z + 1/2]``, i.e. ``Y``
    lies in ``(s^{-1}(z - 1/2), s^{-1}(z + 1/2)] = (s^{-1}(z - 1/2), s^{-1}(z - 1/2) + 1]``
    (``s^{-1}(w + 1) = s^{-1}(w) + 1``).
    Treating the density of ``Y`` as flat over this unit interval gives

    .. math:: E[Y \mid s_\alpha(Y) + U = z] = s_\alpha^{-1}(z - \tfrac12) + \tfrac12

    (Agustsson & Theis 2020, Sec. 4.1; :ref:`soft-rounding-mean`: the decoder applies
    a reconstruction defined by the expected value of the soft-rounded noisy
    input).  It is non-decreasing in ``z``; ``alpha -> 0`` gives ``z`` and large
    ``alpha`` gives (nearly) ``round(z)``, the conditional mean under hard rounding.

    Parameters
    ----------
    z : torch.Tensor
        Floating tensor of finite noisy soft-rounded values.
    alpha : float or torch.Tensor
        Non-negative finite sharpness, broadcastable to ``z``.
    eps : float, optional
        Threshold of the small-``alpha`` expansion, see :func:`soft_round_inverse`.

    Returns
    -------
    torch.Tensor
        The reconstruction, with finite values and gradients.

    References
    ----------
    E. Agustsson and L. Theis, "Universally Quantized Neural Compression",
    NeurIPS 2020, arXiv:2006.09952.
    """
    z = _check_tensor(z, "z")
    alpha = _check_alpha(alpha, z)
    if z.dtype in _HALF_DTYPES:  # compute half precisions in float32
        return soft_round_conditional_mean(z.float(), alpha, eps).to(z.dtype)
    return soft_round_inverse(z - 0.5, alpha, eps) + 0.5


# ----------------------------------------------------------------------------------
# shared dither and the logistic marginal
# ----------------------------------------------------------------------------------


def _shared_dither(seed, shape):
    """Shared dither ``U ~ U[-1/2, 1/2)`` (float64 numpy array of ``shape``) for ``seed``.

    Encoder and decoder recompute the same values from the seed: numpy's
    counter-based Philox generator keyed by the seed, 53-bit uniforms in
    ``[0, 1)`` minus ``1/2`` (exact, so ``U`` lies in ``[-1/2, 1/2)``).

    This is the single point of change for the shared randomness of this module:
    the library may later swap it for :func:`rcc.random.shared_uniform`
    (:ref:`randomness-counter`), e.g. ``shared_uniform(seed, 0, 1, np.arange(n)).reshape(shape)``;
    doing so changes the bitstreams but nothing else.
    """
    seed = _check_seed(seed)
    generator = np.random.Generator(np.random.Philox(key=seed))
    return np.asarray(generator.random(size=tuple(shape)) - 0.5, dtype=np.float64)


def _log1mexp_np(d):
    """``log(1 - exp(d))`` for ``d <= 0`` (Maechler 2012)."""
    with np.errstate(divide="ignore"):
        return np.where(d > -_LN2, np.log(-np.expm1(d)), np.log1p(-np.exp(d)))


def _logistic_log_mass_np(lo, hi, loc, scale):
    """``log(F(hi) - F(lo))`` for the logistic ``F`` (float64, vectorised, stable).

    Works in the lower tail by reflection so that no large probabilities are
    subtracted: ``F(b) - F(a) = sigmoid(b') - sigmoid(a')`` with ``a' < b'`` and
    ``a' + b' <= 0``.
    """
    a = (lo - loc) / scale
    b = (hi - loc) / scale
    flip = (a + b) > 0
    a2 = np.where(flip, -b, a)
    b2 = np.where(flip, -a, b)
    log_b = -np.logaddexp(0.0, -b2)
    log_a = -np.logaddexp(0.0, -a2)
    return log_b + _log1mexp_np(np.minimum(log_a - log_b, 0.0))


def _logistic_log_mass_torch(lo, hi, loc, scale):
    """Torch version of :func:`_logistic_log_mass_np` with finite gradients."""
    a = (lo - loc) / scale
    b = (hi - loc) / scale
    flip = (a + b) > 0
    a2 = torch.where(flip, -b, a)
    b2 = torch.where(flip, -a, b)
    log_b = F.logsigmoid(b2)
    log_a = F.logsigmoid(a2)
    tiny = math.sqrt(torch.finfo(log_b.dtype).tiny)
    d = torch.clamp(log_a - log_b, max=-tiny)
    near = d > -_LN2
    log1mexp = torch.where(
        near,
        torch.log(-torch.expm1(torch.where(near, d, -1.0))),
        torch.log1p(-torch.exp(torch.where(near, -1.0, d))),
    )
    return log_b + log1mexp


# dtype codes of the one-byte bitstream header
_DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}
_CODE_DTYPES = {v: k for k, v in _DTYPE_CODES.items()}


# ----------------------------------------------------------------------------------
# the channel
# ----------------------------------------------------------------------------------


class UniformNoiseChannel(nn.Module):
    r"""Additive uniform-noise channel, realised at test time by universal quantisation.

    Training mode (``module.train()``), Agustsson & Theis (2020),
    :ref:`uq-channel`: ``forward(y)`` returns ``y + U`` with fresh ``U ~ U[-1/2, 1/2)``, which is
    differentiable in ``y`` (identity gradient).  With a sharpness ``alpha`` the
    soft-rounding mode (:ref:`soft-rounding`) is used instead:
    ``z = s_alpha(y) + U`` and, if ``conditional_mean``, the output is
    ``E[Y | s_alpha(Y) + U = z]`` (:func:`soft_round_conditional_mean`).

    Test mode (``module.eval()``), :ref:`uq-channel`: with a dither ``U``
    shared through an integer ``seed``, the sender transmits
    ``K = round(v - U)`` (``v = y`` or ``s_alpha(y)``) and the receiver outputs
    ``K + U`` (followed by the same reconstruction in the ``alpha`` mode).  Since
    ``K + U - v ~ U[-1/2, 1/2)`` independently of ``v``, the test-time output has
    exactly the distribution of the training-time output.  ``forward(y, seed)``
    equals ``dequantize(quantize(y, seed), seed)``.

    ``K`` is entropy coded given ``U`` (:meth:`compress`) with
    ``P(K = k | U = u) = F(k + u + 1/2) - F(k + u - 1/2)``, where ``F`` is a
    per-channel ``Logistic(loc, scale)`` marginal of ``v`` whose parameters are
    learnable; with an ideal entropy coder this costs
    ``H[K | U] = I(V; V + U)`` bits.  The same density of ``v + U`` gives the
    differentiable training rate :meth:`bits`.

    Parameters
    ----------
    num_channels : int, optional
        Number of channels of the marginal (``y.shape[channel_dim]`` must equal it
        unless it is 1, in which case one marginal is shared by all elements).
    channel_dim : int, optional
        Axis of ``y`` holding the channels (default 1, as in ``(N, C, H, W)``).
    alpha : float or None, optional
        Soft-rounding sharpness; ``None`` (default) for plain additive noise.  Can be
        changed later through the ``alpha`` attribute (e.g. annealed upwards, Agustsson & Theis 2020).
    conditional_mean : bool, optional
        In the ``alpha`` mode, apply ``E[Y | s_alpha(Y) + U = z]`` to the noisy value
        (default ``True``); otherwise return ``z`` itself.
    loc, scale : float or array_like, optional
        Initial logistic parameters, scalars or one value per channel
        (defaults 0 and 1).  ``scale`` must be positive.
    learnable : bool, optional
        Register ``loc`` and ``log_scale`` as parameters (default) or buffers.
    generator : torch.Generator or None, optional
        Generator for the training noise.
    tail_mass : float, optional
        The entropy coder's alphabet covers ``k + u`` within the central
        ``1 - tail_mass`` of the marginal; other values are sent through an escape
        symbol followed by an Elias-gamma style code of the overshoot.
    max_halfwidth : int, optional
        Upper bound on the half-width of the coded alphabet (memory guard).

    References
    ----------
    E. Agustsson and L. Theis, "Universally Quantized Neural Compression",
    NeurIPS 2020, arXiv:2006.09952.  J. Ziv, "On universal quantization",
    IEEE Trans. IT 31(3), 1985.
    """

    def __init__(
        self,
        num_channels=1,
        *,
        channel_dim=1,
        alpha=None,
        conditional_mean=True,
        loc=0.0,
        scale=1.0,
        learnable=True,
        generator=None,
        tail_mass=1e-9,
        max_halfwidth=4096,
    ):
        super().__init__()
        if isinstance(num_channels, (bool, np.bool_)) or not isinstance(num_channels, numbers.Integral):
            raise TypeError(f"num_channels must be a positive integer, got {num_channels!r}")
        if num_channels < 1:
            raise ValueError(f"num_channels must be a positive integer, got {num_channels}")
        if isinstance(channel_dim, (bool, np.bool_)) or not isinstance(channel_dim, numbers.Integral):
            raise TypeError(f"channel_dim must be an integer, got {channel_dim!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        if isinstance(tail_mass, (bool, np.bool_)) or not isinstance(tail_mass, numbers.Real):
            raise TypeError(f"tail_mass must be a real number, got {tail_mass!r}")
        if not (0.0 < float(tail_mass) < 1.0):
            raise ValueError(f"tail_mass must be in (0, 1), got {tail_mass}")
        if isinstance(max_halfwidth, (bool, np.bool_)) or not isinstance(max_halfwidth, numbers.Integral):
            raise TypeError(f"max_halfwidth must be a positive integer, got {max_halfwidth!r}")
        if not (1 <= max_halfwidth <= 2**20):
            raise ValueError(f"max_halfwidth must be in [1, 2**20], got {max_halfwidth}")
        self.num_channels = int(num_channels)
        self.channel_dim = int(channel_dim)
        self.conditional_mean = bool(conditional_mean)
        self.generator = generator
        self.tail_mass = float(tail_mass)
        self.max_halfwidth = int(max_halfwidth)
        self.alpha = alpha

        loc_t = self._initial_param(loc, "loc")
        scale_t = self._initial_param(scale, "scale")
        if bool((scale_t <= 0).any()):
            raise ValueError("scale must be positive")
        log_scale_t = torch.log(scale_t)
        if learnable:
            self.loc = nn.Parameter(loc_t)
            self.log_scale = nn.Parameter(log_scale_t)
        else:
            self.register_buffer("loc", loc_t)
            self.register_buffer("log_scale", log_scale_t)

    # -- configuration ---------------------------------------------------------

    def _initial_param(self, value, name):
        if isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name} must be a real number or an array of them, got bool")
        try:
            arr = torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=torch.get_default_dtype())
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a real number or an array of them, got {value!r}") from None
        if not bool(torch.isfinite(arr).all()):
            raise ValueError(f"{name} must be finite")
        if arr.ndim == 0:
            arr = arr.expand(self.num_channels)
        if arr.ndim != 1 or arr.shape[0] != self.num_channels:
            raise ValueError(
                f"{name} must be a scalar or have shape ({self.num_channels},), got {tuple(arr.shape)}"
            )
        return arr.clone()

    @property
    def alpha(self):
        """Soft-rounding sharpness (``None`` for plain additive noise)."""
        return self._alpha

    @alpha.setter
    def alpha(self, value):
        if value is not None:
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
                raise TypeError(f"alpha must be a non-negative float or None, got {value!r}")
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"alpha must be finite, got {value}")
            if value < 0:
                raise ValueError(f"alpha must be non-negative, got {value}")
        self._alpha = value

    @property
    def scale(self):
        """Per-channel logistic scale ``exp(log_scale)``."""
        return torch.exp(self.log_scale)

    def extra_repr(self):
        return (
            f"num_channels={self.num_channels}, channel_dim={self.channel_dim}, "
            f"alpha={self.alpha}, conditional_mean={self.conditional_mean}"
        )

    # -- helpers ---------------------------------------------------------------

    def _check_layout(self, shape, name):
        """Check that ``shape`` has ``num_channels`` entries along ``channel_dim``."""
        if self.num_channels == 1:
            return
        ndim = len(shape)
        if not -ndim <= self.channel_dim < ndim:
            raise ValueError(
                f"{name} of shape {tuple(shape)} has no axis {self.channel_dim} "
                f"(channel_dim) for the {self.num_channels} channels"
            )
        if shape[self.channel_dim] != self.num_channels:
            raise ValueError(
                f"{name} of shape {tuple(shape)} has {shape[self.channel_dim]} entries along "
                f"channel_dim={self.channel_dim}, expected num_channels={self.num_channels}"
            )

    def _param_view(self, param, ndim):
        """``param`` (shape ``(C,)``) reshaped to broadcast against an ``ndim`` tensor."""
        if self.num_channels == 1:
            return param.reshape(())
        view = [1] * ndim
        view[self.channel_dim] = self.num_channels
        return param.reshape(view)

    def _params_np(self, shape):
        """float64 numpy ``loc`` and ``scale`` broadcast to ``shape``, flattened."""
        loc = self.loc.detach().to(device="cpu", dtype=torch.float64)
        scale = torch.exp(self.log_scale.detach().to(device="cpu", dtype=torch.float64))
        ndim = len(shape)
        loc = self._param_view(loc, ndim).expand(shape).reshape(-1).numpy()
        scale = self._param_view(scale, ndim).expand(shape).reshape(-1).numpy()
        return np.ascontiguousarray(loc), np.ascontiguousarray(scale)

    def _soft(self, y):
        return y if self._alpha is None else soft_round(y, self._alpha)

    def _reconstruct(self, z):
        if self._alpha is not None and self.conditional_mean:
            return soft_round_conditional_mean(z, self._alpha)
        return z

    # -- training-time rate ------------------------------------------------------

    def bits(self, z):
        r"""Information content ``-log2 p(z)`` of the noisy values, elementwise.

        ``p(z) = F(z + 1/2) - F(z - 1/2)`` is the density of ``V + U`` (the logistic
        marginal convolved with the unit box, Agustsson & Theis 2020); at test time, for
        ``z = K + U``, it equals ``P(K = k | U = u)``, so the training rate and the
        coded rate are the same function.  Differentiable in ``z`` and in the
        marginal's parameters.

        Parameters
        ----------
        z : torch.Tensor
            Noisy values ``v + U`` (``v = y`` or ``s_alpha(y)``).

        Returns
        -------
        torch.Tensor
            Bits per element, same shape as ``z``.
        """
        z = _check_tensor(z, "z")
        self._check_layout(z.shape, "z")
        loc = self._param_view(self.loc, z.ndim)
        scale = self._param_view(torch.exp(self.log_scale), z.ndim)
        return -_logistic_log_mass_torch(z - 0.5, z + 0.5, loc, scale) / _LN2

    # -- forward ----------------------------------------------------------------

    def forward(self, y, seed=None, *, return_bits=False):
        """Pass ``y`` through the channel.

        Parameters
        ----------
        y : torch.Tensor
            Floating tensor of finite values.
        seed : int, optional
            Shared seed.  Required in eval mode, where the output is
            ``dequantize(quantize(y, seed), seed)`` (no gradient).  In training mode
            it is optional: if given, the noise is the shared dither of ``seed``
            (reproducible), otherwise fresh noise from ``generator``.
        return_bits : bool, optional
            Also return :meth:`bits` of the noisy value ``z`` (elementwise).

        Returns
        -------
        torch.Tensor or (torch.Tensor, torch.Tensor)
            The channel output (and the bits).
        """
        y = _check_tensor(y, "y")
        self._check_layout(y.shape, "y")
        if self.training:
            if seed is None:
                noise = torch.rand(y.shape, generator=self.generator, dtype=y.dtype, device=y.device)
                noise = noise - 0.5
            else:
                noise = torch.from_numpy(_shared_dither(seed, y.shape)).to(dtype=y.dtype, device=y.device)
            z = self._soft(y) + noise
        else:
            if seed is None:
                raise ValueError("seed is required in eval mode (the dither is shared through it)")
            k = self.quantize(y, seed)
            z = self._dequantize_raw(k, seed, y.dtype, y.device)
        out = self._reconstruct(z)
        if return_bits:
            return out, self.bits(z)
        return out

    # -- universal quantisation --------------------------------------------------

    def quantize(self, y, seed):
        """Integer message ``K = round(v - U)`` with the shared dither ``U`` of ``seed``.

        ``v = y``, or ``s_alpha(y)`` in the soft-rounding mode.  The subtraction and
        rounding are done in float64.

        Parameters
        ----------
        y : torch.Tensor
            Floating tensor of finite values with ``|v| < 2**52``.
        seed : int
            Shared seed in ``[0, 2**64)``.

        Returns
        -------
        torch.Tensor
            ``int64`` tensor of ``y``'s shape (on ``y``'s device).
        """
        y = _check_tensor(y, "y")
        self._check_layout(y.shape, "y")
        seed = _check_seed(seed)
        with torch.no_grad():
            v = self._soft(y).detach().to(device="cpu", dtype=torch.float64)
        if v.numel() and float(v.abs().max()) >= _MAX_ABS_QUANT:
            raise ValueError("y is too large to quantize exactly (|y| must be < 2**52)")
        u = torch.from_numpy(_shared_dither(seed, y.shape))
        k = torch.round(v - u).to(torch.int64)
        return k.to(y.device)

    def _dequantize_raw(self, k, seed, dtype, device):
        u = torch.from_numpy(_shared_dither(seed, k.shape))
        z = k.detach().to(device="cpu", dtype=torch.float64) + u
        return z.to(dtype=dtype, device=device)

    def dequantize(self, k, seed, *, dtype=None, device=None):
        """Receiver side: ``K + U`` (then the reconstruction in the ``alpha`` mode).

        Parameters
        ----------
        k : torch.Tensor
            Integer tensor from :meth:`quantize`.
        seed : int
            The seed used by :meth:`quantize`.
        dtype : torch.dtype, optional
            Floating output dtype (default ``torch.get_default_dtype()``);
            ``K + U`` is formed in float64 and then cast.
        device : torch.device, optional
            Output device (default ``k``'s).

        Returns
        -------
        torch.Tensor
            The reconstruction, same shape as ``k``.
        """
        if not isinstance(k, torch.Tensor):
            raise TypeError(f"k must be a torch.Tensor, got {type(k).__name__}")
        if k.is_floating_point() or k.is_complex() or k.dtype == torch.bool:
            raise TypeError(f"k must have an integer dtype, got {k.dtype}")
        self._check_layout(k.shape, "k")
        seed = _check_seed(seed)
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        device = k.device if device is None else device
        return self._reconstruct(self._dequantize_raw(k, seed, dtype, device))

    # -- entropy coding -----------------------------------------------------------

    def _halfwidth(self, scale_np):
        if scale_np.size == 0:
            return 1
        spread = float(scale_np.max()) * math.log(2.0 / self.tail_mass)
        return int(min(self.max_halfwidth, math.ceil(spread) + 1))

    def _coding_layout(self, shape, seed):
        """Everything both coder sides derive from (shape, seed, parameters)."""
        u = _shared_dither(seed, shape).reshape(-1)
        loc, scale = self._params_np(shape)
        half = self._halfwidth(scale)
        center = np.round(loc - u)  # window centre: k + u close to loc
        rows = max(1, (2**21) // (2 * half + 2))
        return u, loc, scale, half, center, rows

    @staticmethod
    def _probabilities(u, loc, scale, center, half):
        """Rows ``[P(k = c - H), ..., P(k = c + H), P(escape)]`` in float64.

        Cell masses are differences of the logistic CDF at the cell edges, taken
        from the lower tail (``F``) below ``loc`` and from the upper tail
        (``1 - F``) above it, so that small masses keep their relative precision.
        """
        from scipy.special import expit

        offsets = np.arange(-half - 0.5, half + 1.0, dtype=np.float64)  # 2H + 2 edges
        z = (center[:, None] + u[:, None] - loc[:, None] + offsets[None, :]) / scale[:, None]
        lower = expit(z)
        upper = expit(-z)
        below = (z[:, :-1] + z[:, 1:]) < 0
        cells = np.where(below, lower[:, 1:] - lower[:, :-1], upper[:, :-1] - upper[:, 1:])
        tails = lower[:, :1] + upper[:, -1:]
        return np.concatenate([np.maximum(cells, 0.0), tails], axis=1)

    def ideal_bits(self, y, seed):
        """Ideal information content ``sum -log2 P(K = k | U = u)`` of ``quantize(y, seed)``.

        Compare with the measured ``8 * len(compress(y, seed))``.
        """
        k = self.quantize(y, seed).cpu().to(torch.float64).reshape(-1).numpy()
        u = _shared_dither(seed, y.shape).reshape(-1)
        loc, scale = self._params_np(y.shape)
        mid = k + u
        log_mass = _logistic_log_mass_np(mid - 0.5, mid + 0.5, loc, scale)
        return float(-log_mass.sum() / _LN2)

    def _stream_check(self, header, seed, shape, payload):
        """CRC32 of the header byte, the seed, the shape, the parameters and the payload."""
        crc = zlib.crc32(b"rcc.torch.UniformNoiseChannel" + bytes(header))
        crc = zlib.crc32(int(seed).to_bytes(8, "little") + repr(tuple(int(n) for n in shape)).encode(), crc)
        for name, value in sorted(self.state_dict().items()):
            arr = np.ascontiguousarray(value.detach().cpu().to(torch.float64).numpy())
            crc = zlib.crc32(name.encode() + repr(arr.shape).encode() + arr.tobytes(), crc)
        crc = zlib.crc32(repr((self.tail_mass, self.max_halfwidth)).encode(), crc)
        return zlib.crc32(payload, crc)

    def compress(self, y, seed, *, return_stats=False):
        """Entropy code ``K = quantize(y, seed)`` given the shared dither.

        A ``constriction`` range coder (``stream.queue.RangeEncoder``) codes each
        ``K`` with a ``Categorical`` over the window ``c +- H`` around the
        marginal's location (``c = round(loc - u)``, ``H`` covering all but
        ``tail_mass`` of the marginal) plus one escape symbol; escaped values are
        followed by their side (1 bit) and an Elias-gamma style code of the distance
        ``d >= 1`` beyond the window (6 bits for the length, then the bits of ``d``).
        The bitstream is a header byte (format version, dtype), a CRC32 of the
        header, the seed, the shape, the module's parameters and the payload, then
        the range coder's little-endian 32-bit words (trailing zero bytes dropped).
        The receiver needs the same module parameters, the seed and the shape.

        Parameters
        ----------
        y : torch.Tensor
            Floating tensor of finite values.
        seed : int
            Shared seed.
        return_stats : bool, optional
            Also return ``{"ideal_bits", "measured_bits", "num_symbols",
            "num_escapes"}`` where ``measured_bits = 8 * len(data)``.

        Returns
        -------
        bytes or (bytes, dict)
        """
        import constriction

        k = self.quantize(y, seed).cpu().reshape(-1).numpy()
        seed = _check_seed(seed)
        if y.dtype not in _DTYPE_CODES:
            raise TypeError(f"y must be float16, bfloat16, float32 or float64 to compress, got {y.dtype}")
        u, loc, scale, half, center, rows = self._coding_layout(y.shape, seed)
        rel = k - center.astype(np.int64)
        family = constriction.stream.model.Categorical(perfect=False)
        encoder = constriction.stream.queue.RangeEncoder()
        n = k.size
        escape = 2 * half + 1
        num_escapes = 0
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            probs = self._probabilities(u[start:stop], loc[start:stop], scale[start:stop],
                                        center[start:stop], half)
            r = rel[start:stop]
            outside = np.abs(r) > half
            symbols = np.where(outside, escape, r + half).astype(np.int32)
            encoder.encode(symbols, family, probs)
            for value in r[outside]:
                _encode_escape(encoder, int(value), half)
                num_escapes += 1
        payload = _words_to_bytes(encoder.get_compressed(), "<")  # little-endian words: the v2 layout
        header = bytes([(_NOISE_FORMAT_VERSION << 4) | _DTYPE_CODES[y.dtype]])
        check = self._stream_check(header, seed, y.shape, payload)
        data = header + check.to_bytes(4, "little") + payload
        if not return_stats:
            return data
        stats = {
            "ideal_bits": self.ideal_bits(y, seed),
            "measured_bits": 8 * len(data),
            "num_symbols": int(n),
            "num_escapes": num_escapes,
        }
        return data, stats

    def decompress(self, data, seed, shape, *, device=None):
        """Decode :meth:`compress` output; bit-for-bit equal to the eval-mode ``forward``.

        Parameters
        ----------
        data : bytes
            The bitstream.
        seed : int
            The seed used by the sender.
        shape : tuple of int
            Shape of the coded tensor.
        device : torch.device, optional
            Output device (default CPU).

        Returns
        -------
        torch.Tensor
            ``dequantize(K, seed)`` in the sender's dtype.
        """
        import constriction

        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, got {type(data).__name__}")
        data = bytes(data)
        seed = _check_seed(seed)
        shape = _check_shape(shape)
        self._check_layout(shape, "shape")
        if len(data) < 5 or data[0] >> 4 != _NOISE_FORMAT_VERSION or data[0] & 0x0C:
            raise ValueError("data is not a UniformNoiseChannel bitstream of format "
                             f"{_NOISE_FORMAT_VERSION} (bad length or header byte)")
        payload = data[5:]
        if int.from_bytes(data[1:5], "little") != self._stream_check(data[:1], seed, shape, payload):
            raise ValueError("UniformNoiseChannel checksum mismatch: the data is corrupted, or the seed, the shape "
                             "or the module's parameters differ from the sender's")
        dtype = _CODE_DTYPES[data[0] & 0x03]
        words = _bytes_to_words(payload, "<")
        u, loc, scale, half, center, rows = self._coding_layout(shape, seed)
        n = u.size
        family = constriction.stream.model.Categorical(perfect=False)
        decoder = constriction.stream.queue.RangeDecoder(words)
        escape = 2 * half + 1
        rel = np.empty(n, dtype=np.int64)
        try:
            for start in range(0, n, rows):
                stop = min(n, start + rows)
                probs = self._probabilities(u[start:stop], loc[start:stop], scale[start:stop],
                                            center[start:stop], half)
                symbols = np.asarray(decoder.decode(family, probs), dtype=np.int64)
                r = symbols - half
                for i in np.flatnonzero(symbols == escape):
                    r[i] = _decode_escape(decoder, half)
                rel[start:stop] = r
            k = torch.from_numpy(rel + center.astype(np.int64)).reshape(shape)
        except (AssertionError, ArithmeticError, LookupError, RuntimeError, ValueError) as exc:
            # constriction reports data its models cannot produce with AssertionError
            raise ValueError(
                "data cannot be decoded with this seed, shape and marginal: it is corrupted or was "
                f"written with other ones ({exc})"
            ) from None
        device = torch.device("cpu") if device is None else device
        return self._reconstruct(self._dequantize_raw(k, seed, dtype, device))


#: Format of UniformNoiseChannel's bitstream (the header byte's high nibble).
_NOISE_FORMAT_VERSION = 2


# ----------------------------------------------------------------------------------
# escape codes for values outside the coded window
# ----------------------------------------------------------------------------------

_CHUNK = 16


def _encode_escape(encoder, rel, half):
    """Side (1 bit), then ``d = |rel| - half >= 1`` Elias-gamma style."""
    import constriction

    uniform = constriction.stream.model.Uniform
    side = 1 if rel > 0 else 0
    d = abs(rel) - half
    nbits = d.bit_length()  # 1 .. 64
    encoder.encode(side, uniform(2))
    encoder.encode(nbits - 1, uniform(64))
    rest = nbits - 1  # bits below the leading one
    while rest > 0:
        width = min(_CHUNK, rest)
        rest -= width
        encoder.encode((d >> rest) & ((1 << width) - 1), uniform(1 << width))


def _decode_escape(decoder, half):
    import constriction

    uniform = constriction.stream.model.Uniform
    side = int(decoder.decode(uniform(2)))
    nbits = int(decoder.decode(uniform(64))) + 1
    d = 1
    rest = nbits - 1
    while rest > 0:
        width = min(_CHUNK, rest)
        rest -= width
        d = (d << width) | int(decoder.decode(uniform(1 << width)))
    magnitude = d + half
    return magnitude if side else -magnitude


# ----------------------------------------------------------------------------------
# reverse channel coding of diagonal-Gaussian posteriors (docs/hybrid.rst, docs/blocks.rst)
# ----------------------------------------------------------------------------------

#: Calibration picks the widths ``M <= (1 - _FIT_MARGIN) / L`` (``L`` = length of a
#: truncated support under the coding prior's CDF), a hair below the largest, so that
#: the posteriors that set them fit under the encoder's own floating-point check too.
_FIT_MARGIN = 1e-9
#: Widths are capped at the largest width rcc.entropy.TabulatedFactorCode codes.
_MAX_WIDTH = 2**16
#: Format of RCCChannel's batch stream (1, without header checksums, is no longer read).
_FORMAT_VERSION = 2
#: The prior of the latents (the KL's); the coding transform is N(0, prior_scales[j]**2).
_PRIOR = Normal(0.0, 1.0)
_HAS_FALLBACK = 0x08
#: Format of RCCChannel's per-item streams, and their header: 2 bits version, 2 bits dtype,
#: 1 bit fallback flag and an 11-bit check.
_ITEM_FORMAT_VERSION = 1
_ITEM_HAS_FALLBACK = 0x08
_ITEM_CHECK_BITS = 11
#: Item i of per-item streams draws its randomness from _derive_seed(seed, _ITEM_SEED_TAG + i).
_ITEM_SEED_TAG = 3
#: The buffers the decoder reads; a stream's check covers their CRC32.
_DECODER_BUFFERS = ("latent_shape_buffer", "widths", "prior_scales", "wide_prior_scale", "block_dims",
                    "index_code_json", "fallback_index_kl_bits", "factor_tables")
_MASK64 = (1 << 64) - 1
#: Tags of the seeds derived for the two message streams of a bitstream.
_STREAM_JOINT = 1
_STREAM_FALLBACK = 2


#: Fallback dimensions whose race would examine more candidates than this (log2) raise.
_FALLBACK_LOG2_CANDIDATES = 24
#: Weight of the N(0, 1) prior's cell masses in a fitted factor table (a floor on every cell).
_FACTOR_PRIOR_WEIGHT = 1e-3
#: A fitted factor table has at least this many cells (a multiple of the width), so that
#: the density it interpolates follows the marginal within a unit cell at small widths.
_FACTOR_TABLE_CELLS = 256


#: Candidate kernel bandwidths of the fitted factor tables, in units of each
#: dimension's aggregate standard deviation (chosen by two-fold cross-validation).
_FACTOR_BANDWIDTHS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8)


def _cell_mass_sum(mu, sd, edges):
    """``sum_i P(cell | N(mu_i, sd_i**2))`` over items for the cells between ``edges``."""
    from scipy import special

    cells = edges.size - 1
    total = np.zeros(cells)
    chunk = max(1, (1 << 20) // (cells + 1))
    for start in range(0, mu.size, chunk):
        m = mu[start:start + chunk, None]
        s = sd[start:start + chunk, None]
        total += np.diff(special.ndtr((edges[None, :] - m) / s), axis=1).sum(axis=0)
    return total


def _factor_table_lengths(widths):
    """Cells of each dimension's factor table: 1 for width 1, else the smallest multiple
    of the width that is at least ``_FACTOR_TABLE_CELLS``."""
    widths = np.asarray(widths, dtype=np.int64)
    return np.where(widths == 1, 1, widths * -(-_FACTOR_TABLE_CELLS // widths))


def _fit_factor_tables(mean64, std64, widths, prior_scales):
    """Cell masses of the (smoothed) aggregate posterior on each dimension's transformed axis.

    Unit cell ``i`` of dimension ``j`` is ``[i, i + 1)`` of ``z' = M_j * F_j(z)``, ``F_j``
    the CDF of ``N(0, prior_scales[j]**2)``; it is split into ``ceil(_FACTOR_TABLE_CELLS /
    M_j)`` equal sub-cells.  A sub-cell's mass is the mean over items of the mass of the
    posterior widened by a kernel ``N(0, h**2)`` (a kernel density estimate of the
    aggregate: the raw mixture of narrow posteriors over-fits the calibration items), mixed
    with weight ``_FACTOR_PRIOR_WEIGHT`` with the ``N(0, 1)`` prior's.  ``h`` is chosen per
    dimension from ``_FACTOR_BANDWIDTHS`` by two-fold cross-validation of the code length
    (even items against odd items and back).  Returns the tables concatenated (lengths
    :func:`_factor_table_lengths`).
    """
    from scipy import special

    tables = []
    n = mean64.shape[0]
    for j, (width, cells) in enumerate(zip(np.asarray(widths).tolist(), _factor_table_lengths(widths).tolist())):
        if width == 1:
            tables.append(np.ones(1))
            continue
        edges = prior_scales[j] * special.ndtri(np.arange(cells + 1) / cells)  # -inf .. +inf
        prior_mass = np.diff(special.ndtr(edges))
        mu, sd = mean64[:, j], std64[:, j]
        spread = float(np.sqrt(np.mean(mu**2 + sd**2) - np.mean(mu) ** 2))
        halves = (slice(0, None, 2), slice(1, None, 2))

        def table(mass, count):
            return (1.0 - _FACTOR_PRIOR_WEIGHT) * mass / max(count, 1) + _FACTOR_PRIOR_WEIGHT * prior_mass

        best, best_h = np.inf, 0.0
        exact = [_cell_mass_sum(mu[h], sd[h], edges) for h in halves]
        for bandwidth in _FACTOR_BANDWIDTHS if n >= 2 else (0.0,):
            wide = np.sqrt(sd**2 + (bandwidth * spread) ** 2)
            fitted = [np.maximum(table(_cell_mass_sum(mu[h], wide[h], edges), mu[h].size), 1e-300)
                      for h in halves]
            # Code length of each half's exact cell masses under the other half's table.
            cost = -(exact[0] @ np.log2(fitted[1]) + exact[1] @ np.log2(fitted[0]))
            if cost < best - 1e-9:
                best, best_h = cost, bandwidth
        wide = np.sqrt(sd**2 + (best_h * spread) ** 2)
        tables.append(np.maximum(table(_cell_mass_sum(mu, wide, edges), n), 1e-300))
    return np.concatenate(tables)


def _derive_seed(seed, tag):
    """Seed of stream ``tag`` of ``seed``: one splitmix64 step (bijective per tag)."""
    z = (int(seed) + 0x9E3779B97F4A7C15 * (int(tag) + 1)) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _gaussian_kl_bits_torch(mean, log_scale):
    """``D_KL[N(mean, exp(log_scale)**2) || N(0, 1)]`` in bits, elementwise, differentiable."""
    return (0.5 * (torch.expm1(2.0 * log_scale) + mean * mean) - log_scale) / _LN2


def _gaussian_kl_bits_np(mean, log_scale):
    """float64 numpy version of :func:`_gaussian_kl_bits_torch`."""
    return (0.5 * (np.expm1(2.0 * log_scale) + mean * mean) - log_scale) / _LN2


def _gaussian_kl_to_prior_bits_np(mean, log_scale, prior_scale):
    """``D_KL[N(mean, exp(log_scale)**2) || N(0, prior_scale**2)]`` in bits (float64)."""
    variance_ratio = np.exp(2.0 * log_scale) / prior_scale**2
    kl = np.log(prior_scale) - log_scale + 0.5 * (variance_ratio + mean * mean / prior_scale**2 - 1.0)
    return kl / _LN2


# -- message coding: every bitstream of RCCChannel goes through rcc.entropy --------


def _encode_message_stream(enc, seed, index_code, width, factor_code=None, factor_context=None):
    """Bytes of the messages ``(enc.index, enc.factor)`` (:func:`rcc.entropy.encode_messages`)."""
    from . import entropy

    return entropy.encode_messages(enc, seed=seed, index_code=index_code, width=width, factor_code=factor_code,
                                   factor_context=factor_context)


def _decode_message_stream(data, count, seed, index_code, width, factor_code=None, factor_context=None):
    """``(index, factor)`` of ``count`` messages (:func:`rcc.entropy.decode_messages`)."""
    from . import entropy

    return entropy.decode_messages(data, count=count, seed=seed, index_code=index_code, width=width,
                                   factor_code=factor_code, factor_context=factor_context)


class RCCChannel(nn.Module):
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
    * every block costs about 2.5 bits above its KL (the entropy of the index
      beyond ``D``), so fewer, larger blocks are cheaper but slower;
    * the index code of the blocks (one for all blocks: the layout balances them)
      is fitted on the calibration messages: a histogram over ``log2`` buckets of
      the index (:class:`BucketIndexCode`, default), ``rcc.entropy``'s
      :class:`~rcc.entropy.EmpiricalIndexCode`, or a Zipf code for the mean block
      (``"zipf"``, no calibration encodings needed).

    Exact fallback.  At compress time a block of an item is coded jointly only if all
    its dimensions fit their widths and the race's expected number of candidates
    ``prod_j max w_j`` is at most ``2**max_log2_candidates``.  Otherwise that block is
    coded *dimension by dimension with width 1* (a plain race against the coding
    prior, which every truncated posterior fits) with a Zipf index code, and its
    position is listed in the bitstream's header.  Both paths sample the posterior
    exactly and the choice depends on the posterior only (not on the shared
    randomness), so the output is unbiased; the fallback only costs more bits.
    Posteriors so far from the coding prior (e.g. ``exp(log_scale)`` well above
    ``sigma_j`` or ``|mean| >~ 5 sigma_j``) that even one dimension would need more
    than ``2**24`` candidates raise ``ValueError``.

    Parameters
    ----------
    latent_shape : int or tuple of int
        Shape of one item's latent (the trailing axes of ``mean``); its
        ``num_latents = prod(latent_shape)`` entries are the coded dimensions.
    block_budget_bits : float, optional
        Target KL carried by the index of one block, ``sum_{j in block} D_j``
        (default 12).
    blocks : "auto" or int, optional
        ``"auto"`` (default) derives the number of blocks from ``block_budget_bits``;
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
    >>> bool(kl < 8 * len(data) / 64 < kl + 6)  # a block's index overhead, and ~22 header bytes
    True
    """

    def __init__(
        self,
        latent_shape,
        *,
        block_budget_bits=12.0,
        blocks="auto",
        coverage=0.999,
        tail_mass=1e-4,
        max_log2_candidates=20.0,
        index_code="bucket",
        coding_prior_scale=None,
        factor_code="fitted",
        generator=None,
    ):
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
            from .coding import DEFAULT_TRANSFORM_SCALE

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
    def num_latents(self):
        """Number of coded dimensions per item, ``prod(latent_shape)``."""
        return int(math.prod(self.latent_shape))

    @property
    def is_calibrated(self):
        """Whether :meth:`calibrate` has run (or a calibrated state was loaded)."""
        return bool(self.block_dims.numel()) and bool((self.widths > 0).all())

    @property
    def num_blocks(self):
        """Number of blocks per item (0 before calibration)."""
        return int(self.block_dims.shape[0])

    @property
    def block_size(self):
        """Dimensions per block, padding included (0 before calibration)."""
        return int(self.block_dims.shape[1])

    def extra_repr(self):
        state = (
            f"num_blocks={self.num_blocks}, block_size={self.block_size}"
            if self.is_calibrated
            else "uncalibrated"
        )
        return f"latent_shape={tuple(self.latent_shape)}, {state}, tail_mass={self.tail_mass}"

    @classmethod
    def from_state_dict(cls, state_dict, **kwargs):
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
        std64 = np.exp(log_scale64)
        if std64.size and not (np.all(std64 > 0) and np.all(np.isfinite(std64))):
            raise ValueError("log_scale must lie in about [-700, 700] (exp(log_scale) under/overflows float64)")
        return np.ascontiguousarray(mean64), np.ascontiguousarray(std64), log_scale64

    # -- training-time rate ----------------------------------------------------------

    def kl_bits(self, mean, log_scale):
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

    def forward(self, mean, log_scale, seed=None, *, return_data=False):
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

    def calibrate(self, mean, log_scale, *, seed=0, progress=False):
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
        layout; finally (unless ``index_code="zipf"``) the calibration posteriors are
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

        def widths_and_index_kl(prior_scale):
            length = _hybrid_bounds(Normal(mean64, std64), _PRIOR, 1, self.tail_mass, Normal(0.0, prior_scale))[2]
            reference = np.quantile(length, self.coverage, axis=0, method="higher")
            widths = np.clip(np.floor((1.0 - _FIT_MARGIN) / reference), 1, _MAX_WIDTH).astype(np.int64)
            kl_to_prior = _gaussian_kl_to_prior_bits_np(mean64, log_scale64, prior_scale).mean(axis=0)
            return widths, np.maximum(kl_to_prior - np.log2(widths), 0.0)

        widths, index_kl = widths_and_index_kl(1.0)
        prior_scales = np.ones(d)
        wide = self.coding_prior_scale
        if wide != 1.0:
            wide_widths, wide_index_kl = widths_and_index_kl(wide)
            # N(0, 1) only where it carries no factor and its index costs no more than the wide
            # transform's index and factor (the factor about log2 M - D[N(0, 1) || N(0, wide^2)]).
            divergence = (math.log(wide) + 0.5 / wide**2 - 0.5) / _LN2
            wide_factor_bits = np.maximum(np.log2(wide_widths) - divergence, 0.0)
            unit = (widths == 1) & (index_kl <= wide_index_kl + wide_factor_bits)
            widths = np.where(unit, widths, wide_widths)
            index_kl = np.where(unit, index_kl, wide_index_kl)
            prior_scales = np.where(unit, 1.0, wide)
        # KL a width-1 race carries per dimension (the fallback's index code).
        fallback_kl = np.mean([
            _gaussian_kl_to_prior_bits_np(mean64[:, j], log_scale64[:, j], prior_scales[j]).mean() for j in range(d)
        ])
        if self.blocks == "auto":
            num_blocks = int(min(d, max(1, math.ceil(float(index_kl.sum()) / self.block_budget_bits - 1e-9))))
        else:
            num_blocks = self.blocks
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
        from .entropy import EmpiricalIndexCode, ZipfIndexCode

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
        from .entropy import ZipfIndexCode

        key = (self.index_code_json.detach().cpu().numpy().tobytes(), float(self.fallback_index_kl_bits))
        if self._codes is None or self._codes[0] != key:
            block_code = _code_from_buffer(self.index_code_json)
            fallback_code = ZipfIndexCode(max(0.0, key[1]))
            self._codes = (key, (block_code, fallback_code))
        return self._codes[1]

    def _factor_code(self):
        """Code of the decoding factors: fitted tables, or the library's default code of the N(0, 1)
        marginal on the coding transform's axis."""
        from .entropy import TabulatedFactorCode, default_factor_code
        from .targets import Normal

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

    def _plan(self, mean64, std64):
        """Per item-block targets, widths and the joint/fallback decision."""
        layout = self._layout()
        pad, safe = layout["pad"], layout["safe"]
        block_widths, block_scales = layout["block_widths"], layout["block_scales"]
        n = mean64.shape[0]
        mu = np.where(pad, 0.0, mean64[:, safe])  # (n, blocks, block_size)
        sd = np.where(pad, 1.0, std64[:, safe])
        if n:
            # The encoder's own arithmetic: a block goes to the joint race only if
            # rcc.encode_sample will find that it fits and that its race is affordable.
            fits, log2_candidates, _ = _hybrid_bounds(
                Product(Normal(mu, sd)), _PRIOR, np.broadcast_to(block_widths, mu.shape), self.tail_mass,
                Normal(0.0, block_scales))
            joint = fits & (log2_candidates <= self.max_log2_candidates)
        else:
            joint = np.zeros((0, self.num_blocks), dtype=bool)
        flat_joint = joint.reshape(-1)
        return {
            **layout,
            "items": n,
            "mu": mu.reshape(n * self.num_blocks, self.block_size),
            "sd": sd.reshape(n * self.num_blocks, self.block_size),
            "joint": joint,
            "positions_joint": np.flatnonzero(flat_joint),
            "positions_fallback": np.flatnonzero(~flat_joint),
        }

    def _encode_joint(self, plan, positions, seed, progress=False):
        from .coding import encode_sample
        from .targets import Normal, Product

        target = Product(Normal(plan["mu"][positions], plan["sd"][positions]))
        blocks = positions % self.num_blocks
        transform = Normal(0.0, plan["block_scales"][blocks])
        # The race examines about w_max <= 2**max_log2_candidates candidates on average with a
        # light (exponential) tail: a cap 256 times higher is never reached in practice, where
        # the library's default 2**24 would be, now and then, for max_log2_candidates near 23.
        cap = 2 ** (math.ceil(self.max_log2_candidates) + 8)
        return encode_sample(target, seed, prior=_PRIOR, width=plan["block_widths"][blocks],
                             tail_mass=self.tail_mass, max_candidates=cap, progress=progress, transform=transform)

    def _fallback_targets(self, plan, positions):
        """Flat (item-block, dimension) selection of the fallback blocks' real dimensions."""
        keep = ~plan["pad"][positions % self.num_blocks]
        return keep

    def _encode_fallback(self, plan, positions, seed, progress=False):
        from .coding import encode_sample
        from .targets import Normal

        keep = self._fallback_targets(plan, positions)
        mu = plan["mu"][positions][keep]
        sd = plan["sd"][positions][keep]
        scales = plan["block_scales"][positions % self.num_blocks][keep]
        message = ("a posterior is too far from the coding prior to be coded exactly even dimension by "
                   f"dimension (mean up to {float(np.max(np.abs(mu), initial=0.0)):.3g}, "
                   f"std up to {float(np.max(sd, initial=0.0)):.3g})")
        log2_candidates = (_hybrid_bounds(Normal(mu, sd), _PRIOR, 1, self.tail_mass, Normal(0.0, scales))[1]
                           if mu.size else np.zeros(0))
        if log2_candidates.size and float(np.max(log2_candidates)) > _FALLBACK_LOG2_CANDIDATES:
            raise ValueError(f"{message}: its race would examine about 2**{float(np.max(log2_candidates)):.1f} "
                             f"candidates, more than 2**{_FALLBACK_LOG2_CANDIDATES}")
        try:
            # The cap sits far above the bound just checked: a race's count has a light
            # tail, so it is never reached, where a cap at the bound would be now and then.
            return encode_sample(Normal(mu, sd), seed, prior=_PRIOR, width=1, tail_mass=self.tail_mass,
                                 max_candidates=2 ** (_FALLBACK_LOG2_CANDIDATES + 8), progress=progress,
                                 transform=Normal(0.0, scales))
        except ValueError as exc:
            raise ValueError(f"{message}: {exc}") from exc

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
        from .coding import kl_divergence_bits
        from .targets import Normal, Product

        if mean64.shape[0] == 0:
            return np.zeros(0)
        kl = kl_divergence_bits(Product(Normal(mean64, std64)), tail_mass=self.tail_mass)
        return np.asarray(kl, dtype=np.float64).reshape(-1)

    def _state_fingerprint(self):
        """CRC32 of every buffer the decoder reads (a stream checks it: a receiver with another state fails)."""
        crc = zlib.crc32(b"rcc.torch.RCCChannel")
        for name in _DECODER_BUFFERS:
            arr = np.ascontiguousarray(getattr(self, name).detach().cpu().numpy())
            crc = zlib.crc32(repr((name, arr.dtype.str, arr.shape)).encode() + arr.tobytes(), crc)
        return crc

    def _header_check(self, header, seed, batch_shape):
        """CRC32 of the batch stream's header bytes and of what the receiver must share."""
        crc = zlib.crc32(bytes(header), zlib.crc32(b"rcc.torch.RCCChannel.stream"))
        crc = zlib.crc32(int(seed).to_bytes(8, "little") + repr(tuple(batch_shape)).encode(), crc)
        return zlib.crc32(self._state_fingerprint().to_bytes(4, "little"), crc)

    @staticmethod
    def _item_check(flags, seed, item, payload, fingerprint):
        """The per-item check: the low ``_ITEM_CHECK_BITS`` bits of a CRC32 of everything the item depends on."""
        crc = zlib.crc32(b"rcc.torch.RCCChannel.item" + bytes([flags]))
        crc = zlib.crc32(int(seed).to_bytes(8, "little") + int(item).to_bytes(8, "little")
                         + fingerprint.to_bytes(4, "little"), crc)
        return zlib.crc32(payload, crc) & ((1 << _ITEM_CHECK_BITS) - 1)

    def compress(self, mean, log_scale, seed, *, return_stats=False, progress=False, per_item=False):
        """Code exact samples of the posteriors into bytes: one stream for the batch, or one per item.

        Every item-block is coded by hybrid coding (``rcc.encode_sample``) with the
        calibrated widths, or by the exact per-dimension fallback (class docstring);
        all messages are coded by :mod:`rcc.entropy`.

        Batch stream (``per_item=False``, the default): one header byte (format
        version, fallback flag, dtype); if there are fallback blocks, their count and
        positions (LEB128 varints, gaps) and the length of the joint message stream;
        a CRC32 of these header bytes, the seed, the batch shape and the channel's
        state; then the joint message stream (:func:`rcc.entropy.encode_messages`,
        seed derived from ``seed``), then the fallback message stream (another
        derived seed).  Each message stream checks itself, so every byte is covered
        by a checksum.  The headers take about 22 bytes in all, so code many items
        per call.

        Per-item streams (``per_item=True``): a list of ``bytes``, one per item (flat C
        order of ``batch_shape``), each decodable on its own.  Item ``i`` draws its
        shared randomness from a seed derived from ``(seed, i)`` and its bytes are a
        2-byte header (format version, dtype, fallback flag and an 11-bit check of
        the item's bytes, seed, position and the channel's state) followed by one
        range-coded payload (which blocks fall back, if any; the joint messages; the
        fallback messages).  Everything shared lives in the ``state_dict``.  The
        receiver also re-encodes what it decoded and requires the same bytes, so a
        damaged payload is rejected even where the short check would pass it.

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
            ``"candidates"`` (per item, candidates the races examined) and
            ``"fallback_blocks"`` (number of item-blocks coded dimension by
            dimension).
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
        }
        return data, item_bits_t, stats

    def _compress_batch(self, plan, dtype_code, seed, batch_shape, latents, item_bits, candidates, progress):
        """One stream for the whole batch (see :meth:`compress`); fills the per-item outputs."""
        block_code, fallback_code = self._index_codes()
        joint, fallback = plan["positions_joint"], plan["positions_fallback"]
        joint_data = b""
        fallback_data = b""
        if joint.size:
            seed_joint = _derive_seed(seed, _STREAM_JOINT)
            enc = self._encode_joint(plan, joint, seed_joint, progress)
            widths = plan["block_widths"][joint % self.num_blocks]
            factor_code, context = self._factor_code(), self._factor_context(plan, joint)
            joint_data = _encode_message_stream(enc, seed_joint, block_code, widths, factor_code, context)
            self._scatter(latents, plan, joint, np.asarray(enc.sample))
            items = joint // self.num_blocks
            np.add.at(item_bits, items, _message_bits(enc, seed_joint, block_code, widths, factor_code, context))
            np.add.at(candidates, items, np.asarray(enc.candidates, dtype=np.int64))
        if fallback.size:
            seed_fallback = _derive_seed(seed, _STREAM_FALLBACK)
            enc = self._encode_fallback(plan, fallback, seed_fallback, progress)
            fallback_data = _encode_message_stream(enc, seed_fallback, fallback_code, 1)
            keep = self._fallback_targets(plan, fallback)
            self._scatter(latents, plan, fallback, np.asarray(enc.sample), keep)
            items = np.repeat(fallback // self.num_blocks, keep.sum(axis=1))
            np.add.at(item_bits, items, _message_bits(enc, seed_fallback, fallback_code, 1))
            np.add.at(candidates, items, np.asarray(enc.candidates, dtype=np.int64))
        header = bytearray([(_FORMAT_VERSION << 4) | (_HAS_FALLBACK if fallback.size else 0) | dtype_code])
        if fallback.size:
            header += _varint(fallback.size)
            previous = -1
            for position in fallback.tolist():
                header += _varint(position - previous - 1)
                previous = position
            header += _varint(len(joint_data))
        check = self._header_check(header, seed, batch_shape).to_bytes(4, "little")
        return bytes(header) + check + joint_data + fallback_data

    def _item_symbols(self, encoder, plan, item, seed, codes, is_joint, enc_joint, enc_fallback):
        """Write item ``item``'s symbols (fallback mask, joint messages, fallback messages) to ``encoder``."""
        from . import entropy

        block_code, fallback_code, factor_code = codes
        positions = item * self.num_blocks + np.arange(self.num_blocks)
        if not is_joint.all():
            encoder.encode(np.where(is_joint, 0, 1).astype(np.int32), _constriction().stream.model.Uniform(2))
        if enc_joint is not None:
            joint = positions[is_joint]
            entropy._encode_symbols(encoder, enc_joint, _derive_seed(seed, _STREAM_JOINT), block_code,
                                    plan["block_widths"][joint % self.num_blocks], factor_code,
                                    self._factor_context(plan, joint))
        if enc_fallback is not None:
            entropy._encode_symbols(encoder, enc_fallback, _derive_seed(seed, _STREAM_FALLBACK), fallback_code, 1,
                                    entropy.UniformFactorCode(), None)

    def _compress_items(self, plan, dtype_code, seed, latents, item_bits, candidates):
        """One ``bytes`` per item (see :meth:`compress`); fills the per-item outputs."""
        from . import entropy

        block_code, fallback_code = self._index_codes()
        codes = (block_code, fallback_code, entropy._check_factor_code(self._factor_code()))
        fingerprint = self._state_fingerprint()
        out = []
        for item in range(plan["items"]):
            item_seed = _derive_seed(seed, _ITEM_SEED_TAG + item)
            positions = item * self.num_blocks + np.arange(self.num_blocks)
            is_joint = plan["joint"][item]
            joint, fallback = positions[is_joint], positions[~is_joint]
            enc_joint = enc_fallback = None
            if joint.size:
                seed_joint = _derive_seed(item_seed, _STREAM_JOINT)
                enc_joint = self._encode_joint(plan, joint, seed_joint)
                self._scatter(latents, plan, joint, np.asarray(enc_joint.sample))
                widths = plan["block_widths"][joint % self.num_blocks]
                item_bits[item] += _message_bits(enc_joint, seed_joint, block_code, widths, codes[2],
                                                 self._factor_context(plan, joint)).sum()
                candidates[item] += int(np.sum(enc_joint.candidates))
            if fallback.size:
                seed_fallback = _derive_seed(item_seed, _STREAM_FALLBACK)
                enc_fallback = self._encode_fallback(plan, fallback, seed_fallback)
                self._scatter(latents, plan, fallback, np.asarray(enc_fallback.sample),
                              self._fallback_targets(plan, fallback))
                item_bits[item] += _message_bits(enc_fallback, seed_fallback, fallback_code, 1).sum()
                candidates[item] += int(np.sum(enc_fallback.candidates))
            encoder = _constriction().stream.queue.RangeEncoder()
            self._item_symbols(encoder, plan, item, item_seed, codes, is_joint, enc_joint, enc_fallback)
            payload = entropy._words_to_bytes(encoder.get_compressed())
            flags = (_ITEM_FORMAT_VERSION << 6) | (dtype_code << 4) | (_ITEM_HAS_FALLBACK if fallback.size else 0)
            check = self._item_check(flags, seed, item, payload, fingerprint)
            out.append(bytes([flags | (check >> 8), check & 0xFF]) + payload)
        return out

    def decompress(self, data, seed, shape, *, device=None):
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
        shape = _check_shape(shape)
        k = len(self.latent_shape)
        if len(shape) < k or tuple(shape[len(shape) - k:]) != tuple(self.latent_shape):
            raise ValueError(f"shape {tuple(shape)} must end with latent_shape {tuple(self.latent_shape)}")
        self._require_calibration()
        batch_shape = tuple(shape[: len(shape) - k])
        n = math.prod(batch_shape)
        latents = np.zeros((n, self.num_latents), dtype=np.float64)
        if per_item:
            dtype = self._decompress_items(data, seed, n, latents)
        else:
            dtype = self._decompress_batch(bytes(data), seed, batch_shape, n, latents)
        out = torch.from_numpy(latents).to(dtype).reshape(shape)
        device = torch.device("cpu") if device is None else device
        return out.to(device)

    def _decompress_batch(self, data, seed, batch_shape, n, latents):
        from .coding import decode_sample
        from .targets import Normal

        if not data:
            raise ValueError("data is empty (not an RCCChannel bitstream)")
        flags = data[0]
        if flags >> 4 == 1:
            raise ValueError("data is an RCCChannel stream of format 1 (without header checksums), which this "
                             "rcc no longer reads; compress the latents again")
        if flags >> 4 != _FORMAT_VERSION or flags & 0x04:
            raise ValueError("data is not an RCCChannel bitstream (bad header byte)")
        dtype = _CODE_DTYPES[flags & 0x03]
        total = n * self.num_blocks
        pos = 1
        fallback = np.zeros(0, dtype=np.int64)
        if flags & _HAS_FALLBACK:
            count, pos = _read_varint(data, pos)
            # Each position takes at least one byte: a larger count is corrupt (checked before allocating).
            if count > total or count > len(data):
                raise ValueError("data does not match shape (more fallback blocks than item-blocks or bytes)")
            positions = []
            previous = -1
            for _ in range(count):
                gap, pos = _read_varint(data, pos)
                previous = previous + 1 + gap
                if previous >= total:
                    raise ValueError("data does not match shape (fallback position out of range)")
                positions.append(previous)
            fallback = np.asarray(positions, dtype=np.int64)
            joint_length, pos = _read_varint(data, pos)
        if len(data) < pos + 4:
            raise ValueError("data is truncated inside its header")
        if int.from_bytes(data[pos : pos + 4], "little") != self._header_check(data[:pos], seed, batch_shape):
            raise ValueError(
                "RCCChannel header checksum mismatch: the data is corrupted, or the seed, the shape or the "
                "channel's state differs from the sender's"
            )
        pos += 4
        if flags & _HAS_FALLBACK:
            if pos + joint_length > len(data):
                raise ValueError("data is truncated")
            joint_data, fallback_data = data[pos: pos + joint_length], data[pos + joint_length:]
        else:
            joint_data, fallback_data = data[pos:], b""
        is_joint = np.ones(total, dtype=bool)
        is_joint[fallback] = False
        joint = np.flatnonzero(is_joint)
        block_code, fallback_code = self._index_codes()
        plan = self._layout()
        if joint.size:
            seed_joint = _derive_seed(seed, _STREAM_JOINT)
            blocks = joint % self.num_blocks
            widths = plan["block_widths"][blocks]
            index, factor = _decode_message_stream(joint_data, joint.size, seed_joint, block_code, widths,
                                                   self._factor_code(), self._factor_context(plan, joint))
            transform = Normal(0.0, plan["block_scales"][blocks])
            sample = decode_sample(index, np.reshape(factor, widths.shape), seed_joint, prior=_PRIOR, width=widths,
                                   transform=transform)
            self._scatter(latents, plan, joint, np.asarray(sample))
        elif joint_data:
            raise ValueError("data holds a joint message stream where its header says there is none")
        if fallback.size:
            seed_fallback = _derive_seed(seed, _STREAM_FALLBACK)
            keep = self._fallback_targets(plan, fallback)
            count = int(keep.sum())
            index, factor = _decode_message_stream(fallback_data, count, seed_fallback, fallback_code, 1)
            transform = Normal(0.0, plan["block_scales"][fallback % self.num_blocks][keep])
            sample = decode_sample(index, np.reshape(factor, (count,)), seed_fallback, prior=_PRIOR, width=1,
                                   transform=transform)
            self._scatter(latents, plan, fallback, np.asarray(sample), keep)
        return dtype

    def _decompress_items(self, data, seed, n, latents):
        from . import entropy
        from .coding import decode_sample
        from .targets import Normal

        if len(data) != n:
            raise ValueError(f"got {len(data)} per-item streams for a batch of {n} items")
        block_code, fallback_code = self._index_codes()
        factor_code = entropy._check_factor_code(self._factor_code())
        codes = (block_code, fallback_code, factor_code)
        plan = self._layout()
        fingerprint = self._state_fingerprint()
        dtype_code = None
        cons = _constriction()
        blocks = np.arange(self.num_blocks)
        for item, blob in enumerate(data):
            if not isinstance(blob, (bytes, bytearray, memoryview)):
                raise TypeError(f"data[{item}] must be bytes, got {type(blob).__name__}")
            blob = bytes(blob)
            if len(blob) < 2:
                raise ValueError(f"data[{item}] is too short ({len(blob)} bytes) to be an RCCChannel item")
            flags = blob[0] & 0xF8
            if flags >> 6 != _ITEM_FORMAT_VERSION:
                raise ValueError(f"data[{item}] is not an RCCChannel item stream (format {flags >> 6})")
            payload = blob[2:]
            if ((blob[0] & 0x07) << 8 | blob[1]) != self._item_check(flags, seed, item, payload, fingerprint):
                raise ValueError(
                    f"data[{item}]: checksum mismatch: the bytes are corrupted, out of order, or the seed or the "
                    "channel's state differs from the sender's"
                )
            code = (flags >> 4) & 0x03
            if dtype_code is not None and code != dtype_code:
                raise ValueError(f"data[{item}] was written for another dtype than data[0]")
            dtype_code = code
            item_seed = _derive_seed(seed, _ITEM_SEED_TAG + item)
            positions = item * self.num_blocks + blocks
            try:
                decoder = cons.stream.queue.RangeDecoder(entropy._bytes_to_words(payload))
                is_joint = np.ones(self.num_blocks, dtype=bool)
                if flags & _ITEM_HAS_FALLBACK:
                    is_joint = np.asarray(decoder.decode(cons.stream.model.Uniform(2), self.num_blocks)) == 0
                    if is_joint.all():
                        raise ValueError("a fallback flag without fallback blocks")
                joint, fallback = positions[is_joint], positions[~is_joint]
                enc_joint = enc_fallback = None
                if joint.size:
                    seed_joint = _derive_seed(item_seed, _STREAM_JOINT)
                    widths = plan["block_widths"][joint % self.num_blocks]
                    context = self._factor_context(plan, joint)
                    entropy._check_marginal_widths(factor_code, widths, context)
                    index, factor = entropy._decode_payload(decoder, joint.size, widths, seed_joint, "hybrid",
                                                            block_code, factor_code, context)
                    enc_joint = _message_record(index, factor, widths, seed_joint)
                if fallback.size:
                    seed_fallback = _derive_seed(item_seed, _STREAM_FALLBACK)
                    count = int(self._fallback_targets(plan, fallback).sum())
                    index, factor = entropy._decode_payload(decoder, count, np.ones((count, 1), dtype=np.int64),
                                                            seed_fallback, "hybrid", fallback_code,
                                                            entropy.UniformFactorCode())
                    enc_fallback = _message_record(index, factor.reshape(count), np.ones(count, dtype=np.int64),
                                                   seed_fallback)
                # Canonical bytes: what the sender's coder writes for these symbols, and nothing else.
                encoder = cons.stream.queue.RangeEncoder()
                self._item_symbols(encoder, plan, item, item_seed, codes, is_joint, enc_joint, enc_fallback)
            except entropy._DECODE_ERRORS as exc:
                raise ValueError(f"data[{item}] is corrupted: its payload does not decode ({exc})") from None
            if entropy._words_to_bytes(encoder.get_compressed()) != payload:
                raise ValueError(f"data[{item}] is corrupted: its payload is not what the sender's coder writes")
            if enc_joint is not None:
                transform = Normal(0.0, plan["block_scales"][joint % self.num_blocks])
                sample = decode_sample(enc_joint.index, enc_joint.factor, enc_joint.seed, prior=_PRIOR,
                                       width=enc_joint.width, transform=transform)
                self._scatter(latents, plan, joint, np.asarray(sample))
            if enc_fallback is not None:
                keep = self._fallback_targets(plan, fallback)
                transform = Normal(0.0, plan["block_scales"][fallback % self.num_blocks][keep])
                sample = decode_sample(enc_fallback.index, enc_fallback.factor, enc_fallback.seed, prior=_PRIOR,
                                       width=1, transform=transform)
                self._scatter(latents, plan, fallback, np.asarray(sample), keep)
        return _CODE_DTYPES[0 if dtype_code is None else dtype_code]


def _message_record(index, factor, widths, seed):
    """Decoded messages as an :class:`rcc.EncodedSample` (for re-encoding; no samples)."""
    from .coding import EncodedSample

    zeros = np.zeros(np.shape(index))
    return EncodedSample(index=index, factor=factor, sample=zeros, candidates=zeros, width=widths, tail_mass=zeros,
                         kl_bits=zeros, method="hybrid", seed=int(seed))


def _constriction():
    import constriction

    return constriction


def _check_positive_real(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive real number, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return value


def _balanced_blocks(weights, num_blocks):
    """Partition dimensions into ``num_blocks`` blocks of ``ceil(d / num_blocks)`` slots.

    Greedy largest-first (LPT) balancing of the summed ``weights`` under the size
    limit; ties go to the lowest block, so the result is deterministic.  Returns an
    int64 array ``(num_blocks, block_size)`` of sorted dimension indices, padded
    with ``-1``.
    """
    d = weights.size
    block_size = -(-d // num_blocks)
    sums = np.zeros(num_blocks)
    members = [[] for _ in range(num_blocks)]
    for j in np.argsort(-weights, kind="stable"):
        open_blocks = [b for b in range(num_blocks) if len(members[b]) < block_size]
        b = min(open_blocks, key=lambda b: (sums[b], b))
        members[b].append(int(j))
        sums[b] += weights[j]
    out = np.full((num_blocks, block_size), -1, dtype=np.int64)
    for b, dims in enumerate(members):
        out[b, : len(dims)] = sorted(dims)
    return out


# -- index codes in the state_dict ---------------------------------------------------


def _code_to_buffer(code, device):
    """An index code as a uint8 tensor holding its versioned JSON (``code.to_dict()``)."""
    text = json.dumps(code.to_dict(), sort_keys=True, separators=(",", ":"))
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.uint8, device=device)


def _code_from_buffer(buffer):
    """Inverse of :func:`_code_to_buffer`."""
    text = bytes(buffer.detach().cpu().numpy().tobytes()).decode("utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"index_code_json buffer does not hold a valid index code: {exc}") from None
    return IndexCode.from_dict(data)


def _message_bits(enc, seed, index_code, width, factor_code=None, factor_context=None):
    """Ideal bits of each message as :func:`rcc.entropy.encode_messages` codes it."""
    from .entropy import message_bits

    bits = message_bits(enc, seed, index_code=index_code, width=width, factor_code=factor_code,
                        factor_context=factor_context)
    return np.asarray(bits.total, dtype=np.float64)
