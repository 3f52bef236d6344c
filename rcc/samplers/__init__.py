"""Exact samplers on a shared tree of nested intervals: A* coding, GPRS and greedy rejection coding.

The mathematics is explained in :ref:`samplers`.

The sender and the receiver share one Poisson process per batch element on
``(0, inf) x R`` with intensity ``dt x P`` (``P`` the prior).  Its points are
built on the prior's CDF axis ``u = F_p(z)``, where the prior is uniform on
``(0, 1)``, as a binary tree of nested intervals (Maddison et al. 2014,
"A* sampling", Section 3):

* node 1 (the root) is the interval ``(0, 1)``; node ``h`` has the children
  ``2h`` (left) and ``2h + 1`` (right), so a node is named by its *heap index*
  ``h`` and its depth is ``floor(log2 h)``;
* the point of node ``h`` with interval ``(a, b)`` is at
  ``u_h = a + (b - a) V_h``, ``V_h = U(seed, stream, h) + 1/2`` from the shared
  counter-based generator (:mod:`rcc.random`): O(1) access to any node;
* its arrival time is ``T_h = T_parent + E_h / (b - a)`` (``T_1 = E_1``) with
  ``E_h`` a *private* Exp(1) variate of the sender;
* a node splits at its own point (``"sample"`` splits: AS* coding, GPRS "sac",
  GRCS; from depth :data:`SAMPLE_SPLIT_DEPTH` on, at the midpoint, see
  :ref:`samplers-depth`) or at its interval's midpoint (``"dyadic"`` splits:
  AD*, dyadic GPRS, GRCD).  Positions are kept as pairs ``(u, 1 - u)`` so that intervals deep in
  the prior's upper tail keep full precision.

The receiver needs only the heap index: it walks from the root to node ``h``
(``depth`` shared uniforms for sample splits, none for dyadic splits) and
returns ``z = F_p^{-1}(u_h)``, bit for bit the sender's sample.

Selection rules (both exact for the untruncated target):

``"astar"`` / ``"astar-dyadic"``
    A* coding (Flamich, Markou & Hernandez-Lobato 2022, Algorithm 2): the
    point minimising ``T_h / r(z_h)``, ``r = dq/dp``, found by branch and
    bound with the bound ``T_h / sup_{node} r`` and a priority queue.
``"gprs"``
    Global greedy Poisson rejection sampling (Flamich 2023, Algorithm 3):
    the first point of the *unsplit* process (the prior-proposal candidates
    of ``method="pfr"``, decoded by the same code) under the graph of
    ``sigma(r(z))``; the message is the candidate's index ``N``.
``"gprs-sac"`` / ``"gprs-dyadic"``
    Branch-and-bound GPRS (Flamich 2023, Algorithm 5 and Appendix F): the
    earliest tree point under the same graph.
``"grc-sample"`` / ``"grc-dyadic"``
    Greedy rejection coding, GRCS and GRCD (Flamich, Markou &
    Hernandez-Lobato 2023, Algorithm 1): one path down the tree; at each node
    the point is accepted with the greedy probability of the residual target
    mass, else the search moves into a child chosen (with the sender's
    private coins) in proportion to the child's residual mass.  No arrival
    times; exact for any target of the supported families.

``sigma`` is GPRS's stretch function ``sigma(h) = int_0^h d eta / (w_Q(eta) -
eta w_P(eta))`` with ``w_P(eta) = P(r >= eta)`` and ``w_Q(eta) = Q(r >=
eta)`` (Flamich 2023, Section 3).  For the targets here ``log r`` is a
quadratic on the target's support (on each side of the mode for a Laplace
target: convex there), so superlevel sets are at most four intervals with
closed-form masses; the integral is taken by 8-point
Gauss-Legendre rules on the variable ``s = -log(1 - eta / r_max)`` with
breakpoints where a superlevel set meets the support's ends and a geometric
grid near ``s = 0`` (relative error about 1e-11 against adaptive quadrature;
the accept test ``t < sigma`` is therefore exact up to that error).  A* coding
needs no ``sigma``: its bound, the supremum of the quadratic over an interval,
is exact.

For a density ratio that is unimodal (every Normal narrower than a Normal
prior, every target under a Uniform prior, truncated ones included) a
sibling that does not hold the mode can never beat the best point found so
far once the node splits at its own point, so the sample-split searches
follow one path and take ``O(D_KL)`` steps; the dyadic ones keep a few
nodes in their queue.

Modules: :mod:`rcc.samplers.kernels` (the numba kernels),
:mod:`rcc.samplers.general_search` (A* coding of general targets),
:mod:`rcc.samplers.general_masses` (GPRS and greedy rejection coding of general targets),
:mod:`rcc.samplers.core` (encode and decode), :mod:`rcc.samplers.messages`
(messages to bytes; its names are also reachable from this package).

Messages: ``index`` is the heap index ``h >= 1`` of the selected node (its
depth is ``floor(log2 h)``, its path the binary digits below the leading one;
the candidate index ``N`` for ``"gprs"``); ``factor`` is 0.  Write heap indices
to bytes with :func:`encode_tree_messages` and a :class:`TreeIndexCode`, which
codes the depth with fitted probabilities and each step of the path with the
left child's share of the prior mass (known to both sides from the seed), so
a message costs about ``-log2 P(node)`` bits; or, index-only like PFR's
streams, with :func:`encode_index_messages` and any :class:`rcc.IndexCode`
(:func:`heap_index_code` fits a :class:`rcc.BucketIndexCode`: uniform path bits).

Limits: one dimension per element; Normal, TruncatedNormal, Uniform and
Laplace targets under Normal and Uniform priors (a Normal at least as wide as
a Normal prior needs a bounded support; an ``rcc.Laplace`` is always
truncated, by its own ``tail_mass``, because its ratio to a Normal prior is
unbounded); other general targets (``rcc.GeneralTarget`` with a stated
mode, Lipschitz or concavity bound) with A* coding, its node bounds taken
from that certificate (:mod:`rcc.samplers.general_search`), and with GPRS and
greedy rejection coding when their ratio to the prior is unimodal by what they
state, with masses from a per-target quadrature table
(:mod:`rcc.samplers.general_masses`); searches deeper than ``MAX_DEPTH``
levels raise (sample splits turn into midpoint splits below
``SAMPLE_SPLIT_DEPTH`` levels, so that every target up to about 40 bits of KL fits).
"""

from __future__ import annotations

from .core import decode_tree_sample, encode_tree_sample, log_ratio_max, stretch_function
from .kernels import MAX_DEPTH, SAMPLE_SPLIT_DEPTH, SAMPLER_METHODS, left_fractions

__all__ = [
    "SAMPLER_METHODS",
    "MAX_DEPTH",
    "SAMPLE_SPLIT_DEPTH",
    "encode_tree_sample",
    "decode_tree_sample",
    "heap_index_code",
    "left_fractions",
    "TreeIndexCode",
    "encode_tree_messages",
    "decode_tree_messages",
    "encode_index_messages",
    "decode_index_messages",
    "stretch_function",
    "log_ratio_max",
]

_MESSAGE_NAMES = ("heap_index_code", "TreeIndexCode", "encode_tree_messages", "decode_tree_messages",
                  "encode_index_messages", "decode_index_messages")


def __getattr__(name):
    # The message coding sits a layer above the samplers (it uses rcc.entropy): loaded on first use, so that
    # rcc.coding can dispatch to the samplers without pulling in the entropy coders.
    if name in _MESSAGE_NAMES:
        from . import messages

        return getattr(messages, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_MESSAGE_NAMES))
