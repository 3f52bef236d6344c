"""The additive uniform-noise channel, realised at test time by universal quantisation.

:class:`UniformNoiseChannel` (Ziv 1985; Zamir & Feder 1992; Agustsson & Theis 2020;
:ref:`uq-channel`) adds ``U ~ U[-1/2, 1/2)`` in training and transmits
``K = round(y - U)`` with a shared dither at test time, entropy coded under a learnable
logistic marginal with a ``constriction`` range coder.
"""

from __future__ import annotations

from typing import Any, Sequence

import math
import numbers
import zlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..entropy import _bytes_to_words, _words_to_bytes
from ..entropy._checks import _libm
from ._common import _CODE_DTYPES, _DTYPE_CODES, _LN2, _check_seed, _check_shape, _check_tensor
from .soft_round import soft_round, soft_round_conditional_mean

__all__ = ["UniformNoiseChannel"]

# Values whose magnitude reaches this cannot be quantised exactly in float64.
_MAX_ABS_QUANT = 2.0**52


#: Format of UniformNoiseChannel's bitstream (the header byte's high nibble).
_NOISE_FORMAT_VERSION = 2


_CHUNK = 16


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

    num_channels: int
    channel_dim: int
    conditional_mean: bool
    generator: torch.Generator | None
    # Parameters of the logistic marginal (nn.Parameter when learnable, else buffers).
    loc: torch.Tensor
    log_scale: torch.Tensor

    def __init__(
        self,
        num_channels: int = 1,
        *,
        channel_dim: int = 1,
        alpha: float | torch.Tensor | None = None,
        conditional_mean: bool = True,
        loc: float | Sequence[float] = 0.0,
        scale: float | Sequence[float] = 1.0,
        learnable: bool = True,
        generator: torch.Generator | None = None,
        tail_mass: float = 1e-9,
        max_halfwidth: int = 4096,
    ) -> None:
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
        # The C library's double log per element, rounded once to the parameter's dtype:
        # torch's float32 log is not correctly rounded on every CPU, its vectorised float64
        # log rounds differently on different CPUs, and the streams must not depend on either.
        log_scale_t = torch.from_numpy(_libm(math.log, scale_t.to(torch.float64).numpy())).to(scale_t.dtype)
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
    def alpha(self) -> float | torch.Tensor | None:
        """Soft-rounding sharpness (``None`` for plain additive noise)."""
        return self._alpha

    @alpha.setter
    def alpha(self, value: float | torch.Tensor | None) -> None:
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
    def scale(self) -> torch.Tensor:
        """Per-channel logistic scale ``exp(log_scale)``."""
        return torch.exp(self.log_scale)

    def extra_repr(self) -> str:
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
        # exp per channel with the C library's double exp: torch's vectorised exp differs
        # between CPUs in the last bit, and both coder sides must derive the same scale.
        log_scale = self.log_scale.detach().to(device="cpu", dtype=torch.float64)
        scale = torch.from_numpy(_libm(math.exp, log_scale.numpy()))
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

    def bits(self, z: torch.Tensor) -> torch.Tensor:
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

    def forward(self, y: torch.Tensor, seed: int | None = None, *, return_bits: bool = False) -> Any:
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

    def quantize(self, y: torch.Tensor, seed: int) -> torch.Tensor:
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

    def dequantize(self, k: torch.Tensor, seed: int, *, dtype: torch.dtype | None = None,
                   device: torch.device | str | None = None) -> torch.Tensor:
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

    def ideal_bits(self, y: torch.Tensor, seed: int) -> float:
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

    def compress(self, y: torch.Tensor, seed: int, *, return_stats: bool = False) -> Any:
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

    def decompress(self, data: bytes, seed: int, shape: Sequence[int] | int, *,
                   device: torch.device | str | None = None) -> torch.Tensor:
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
