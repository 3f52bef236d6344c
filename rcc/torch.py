"""PyTorch adapter: soft rounding and the universally quantised uniform-noise channel.

This module implements, for PyTorch models, the training/test pair of Agustsson &
Theis (2020), "Universally quantized neural compression" (NeurIPS 2020,
arXiv:2006.09952), which is also the subject of claims 1-15 of the patent text in
``shared/seeds/003_*.txt``:

* **Soft rounding** (claims 1-3 and 13): a differentiable approximation
  :func:`soft_round` of ``round`` whose sharpness ``alpha`` interpolates between the
  identity (``alpha -> 0``) and hard rounding (``alpha -> inf``), its inverse
  :func:`soft_round_inverse` and the reconstruction
  :func:`soft_round_conditional_mean` ``E[Y | s_alpha(Y) + U = z]`` (claim 13).
* **Universal quantisation** (claims 6-8, DESIGN.md section 2.4):
  :class:`UniformNoiseChannel` adds ``U ~ U[-1/2, 1/2)`` during training and, at
  test time, transmits ``K = round(y - U)`` with a dither ``U`` shared through a
  seed, so that the receiver's ``K + U`` has *exactly* the distribution of the
  training-time ``y + U``.  ``K`` is entropy coded given ``U`` with
  ``P(K = k | U = u) = F(k + u + 1/2) - F(k + u - 1/2)`` for a per-channel
  logistic marginal ``F`` (learnable), using a ``constriction`` range coder.

The module is called ``rcc.torch``; inside it ``import torch`` is the real PyTorch
(absolute imports).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "soft_round",
    "soft_round_inverse",
    "soft_round_conditional_mean",
    "UniformNoiseChannel",
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

    (Agustsson & Theis 2020, Sec. 4.1; patent claims 1-3: the encoder rounds with a
    soft rounding function whose sharpness may grow during training).  ``s_alpha``
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

    (Agustsson & Theis 2020, Sec. 4.1; patent claim 13: the decoder applies "a
    reconstruction defined by the expected value" of the soft-rounded noisy
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
    the library may later swap it for :func:`rcc.random.shared_uniform` (DESIGN.md
    section 2.1), e.g. ``shared_uniform(seed, 0, 1, np.arange(n)).reshape(shape)``;
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

    Training mode (``module.train()``), Agustsson & Theis (2020) and patent claims
    6-8: ``forward(y)`` returns ``y + U`` with fresh ``U ~ U[-1/2, 1/2)``, which is
    differentiable in ``y`` (identity gradient).  With a sharpness ``alpha`` the
    soft-rounding mode of claims 1-3 and 13 is used instead:
    ``z = s_alpha(y) + U`` and, if ``conditional_mean``, the output is
    ``E[Y | s_alpha(Y) + U = z]`` (:func:`soft_round_conditional_mean`).

    Test mode (``module.eval()``), DESIGN.md section 2.4: with a dither ``U``
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
        changed later through the ``alpha`` attribute (e.g. annealed upwards, claim 2).
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
        marginal convolved with the unit box, patent claim 12); at test time, for
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

    def compress(self, y, seed, *, return_stats=False):
        """Entropy code ``K = quantize(y, seed)`` given the shared dither.

        A ``constriction`` range coder (``stream.queue.RangeEncoder``) codes each
        ``K`` with a ``Categorical`` over the window ``c +- H`` around the
        marginal's location (``c = round(loc - u)``, ``H`` covering all but
        ``tail_mass`` of the marginal) plus one escape symbol; escaped values are
        followed by their side (1 bit) and an Elias-gamma style code of the distance
        ``d >= 1`` beyond the window (6 bits for the length, then the bits of ``d``).
        The bitstream is a one-byte dtype header followed by little-endian 32-bit
        words.  The receiver needs the same module parameters, the seed and the
        shape.

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
        words = encoder.get_compressed().astype("<u4", copy=False)
        data = bytes([_DTYPE_CODES[y.dtype]]) + words.tobytes()
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
        if len(data) < 1 or (len(data) - 1) % 4 != 0 or data[0] not in _CODE_DTYPES:
            raise ValueError("data is not a UniformNoiseChannel bitstream (bad length or header)")
        seed = _check_seed(seed)
        shape = _check_shape(shape)
        self._check_layout(shape, "shape")
        dtype = _CODE_DTYPES[data[0]]
        words = np.frombuffer(data, dtype="<u4", offset=1).astype(np.uint32)
        u, loc, scale, half, center, rows = self._coding_layout(shape, seed)
        n = u.size
        family = constriction.stream.model.Categorical(perfect=False)
        decoder = constriction.stream.queue.RangeDecoder(words)
        escape = 2 * half + 1
        rel = np.empty(n, dtype=np.int64)
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
        device = torch.device("cpu") if device is None else device
        return self._reconstruct(self._dequantize_raw(k, seed, dtype, device))


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
