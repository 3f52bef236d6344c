"""Soft rounding (Agustsson & Theis 2020, Sec. 4.1; :ref:`soft-rounding`).

:func:`soft_round` is a differentiable approximation of ``round`` whose sharpness
``alpha`` interpolates between the identity (``alpha -> 0``) and hard rounding
(``alpha -> inf``); :func:`soft_round_inverse` is its inverse and
:func:`soft_round_conditional_mean` the reconstruction ``E[Y | s_alpha(Y) + U = z]``
(:ref:`soft-rounding-mean`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._common import _HALF_DTYPES, _LN2, _check_alpha, _check_eps, _check_tensor

__all__ = ["soft_round", "soft_round_inverse", "soft_round_conditional_mean", "DEFAULT_EPS"]

#: Below this sharpness the soft-rounding functions use their second-order Taylor
#: expansion in ``alpha`` (exact to O(alpha**4), i.e. ~1e-12 at the threshold),
#: which is the identity at ``alpha = 0`` and avoids the 0/0 of the closed form.
DEFAULT_EPS = 1e-3


def soft_round(y: torch.Tensor, alpha: float | torch.Tensor, eps: float = DEFAULT_EPS) -> torch.Tensor:
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


def soft_round_inverse(y: torch.Tensor, alpha: float | torch.Tensor, eps: float = DEFAULT_EPS) -> torch.Tensor:
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


def soft_round_conditional_mean(z: torch.Tensor, alpha: float | torch.Tensor,
                                eps: float = DEFAULT_EPS) -> torch.Tensor:
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
