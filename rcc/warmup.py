"""Compile every numba kernel ahead of time: ``python -m rcc.warmup``.

rcc's kernels compile on their first call and are cached on disk
(``cache=True``, in ``__pycache__`` beside the sources, or under
``NUMBA_CACHE_DIR``), so a fresh installation pays the compilation once, on
whichever call comes first.  This command pays it up front by calling the
public API once on small inputs of every kind that selects a different kernel
(scalar and batch, serial and threaded, hybrid and prior-proposal, product,
general targets, message coding, the exact tree samplers), so later processes
only load machine code.
Running it again is quick: everything loads from the cache.
"""

from __future__ import annotations

import argparse
import sys
import time

import numba
import numpy as np

import rcc
from rcc import axis_kernels, coding, compilation, general, kernels, samplers
from rcc import random as shared_random
from rcc.samplers import general_masses, general_search
from rcc.samplers import kernels as sampler_kernels
from rcc.targets import general as general_targets

__all__ = ["main", "warm_up", "specialisations"]

_MODULES = (shared_random, axis_kernels, kernels, general_targets, general, sampler_kernels, general_masses,
            general_search)


def _dispatchers():
    """(module name, function name, dispatcher) of every numba kernel defined by rcc's kernel modules."""
    for module in _MODULES:
        for name, value in vars(module).items():
            dispatcher = getattr(value, "dispatcher", value)  # general's fixed-signature kernels wrap theirs
            if isinstance(dispatcher, numba.core.registry.CPUDispatcher) and \
                    dispatcher.py_func.__module__ == module.__name__:
                yield module.__name__, name, dispatcher


def specialisations():
    """``{"module.kernel": number of compiled versions}`` for the kernels this process has compiled or loaded."""
    return {f"{module}.{name}": len(dispatcher.signatures) for module, name, dispatcher in _dispatchers()
            if dispatcher.signatures}


def warm_up(tree_samplers=True):
    """Call every kernel once through the public API (compiling it, or loading it from the cache).

    ``tree_samplers=False`` leaves out the exact tree samplers (A* coding, GPRS, greedy
    rejection coding), about 75 s of a fresh installation's 110 s of compilation.
    """
    prior = rcc.Normal(0.0, 1.0)
    big = max(coding._SERIAL_BELOW, 1)  # batches this large take the threaded kernels
    rng = np.random.default_rng(0)
    for count in (4, big):
        target = rcc.Normal(rng.normal(0.0, 0.9, count), 0.05)
        for method in ("hybrid", "pfr", "orc"):
            enc = rcc.encode_sample(target, seed=1, prior=prior, method=method, num_candidates=8 if method == "orc" else None)
            rcc.decode_sample(enc.index, enc.factor, seed=1, prior=prior, width=enc.width, method=method)
        rcc.kl_divergence_bits(target, prior=prior)
        rcc.coding._hybrid_bounds(target, prior, None, rcc.DEFAULT_TAIL_MASS)
        blocks = rcc.Product(rcc.Normal(rng.normal(0.0, 0.9, (count, 2)), 0.1))
        enc = rcc.encode_sample(blocks, seed=1, width="adaptive")
        rcc.decode_sample(enc.index, enc.factor, seed=1, width=enc.width)
    enc = rcc.encode_sample(rcc.Normal(0.3, 0.01), seed=1)
    rcc.decode_sample(enc.index, enc.factor, seed=1, width=enc.width)
    rcc.encode_sample(rcc.Normal(0.3, 0.2), seed=1, method="pfr", rng=1)
    rcc.encode_sample(rcc.Normal(0.3, 0.2), seed=1, method="orc", num_candidates=8)
    rcc.gaussian_width(np.array([0.01, 0.1]))
    rcc.random.shared_uniform(1, [0, 1], [1, 2])
    rcc.random.private_exponential(1, [0, 1], [1, 2])

    # Message coding.
    target = rcc.Normal(rng.normal(0.0, 0.9, 64), 0.01)
    width = rcc.gaussian_width(0.01)
    enc = rcc.encode_sample(target, seed=2, width=width)
    code = rcc.ZipfIndexCode(max(0.0, float(np.mean(enc.kl_bits)) - np.log2(width)))
    data = rcc.encode_messages(enc, seed=2, index_code=code, width=width)
    rcc.decode_messages(data, count=64, seed=2, index_code=code, width=width)

    # General targets: the fixed-signature kernels and the ready-made log densities.
    for target in (general.Laplace(0.2, 0.1), general.GaussianMixture(0.3, -0.5, 0.2, 0.5, 0.3),
                   general.ScaledBeta(2.0, 3.0, -1.0, 1.0)):
        for method in ("hybrid", "pfr"):
            enc = rcc.encode_sample(target, seed=3, method=method)
            rcc.decode_sample(enc.index, enc.factor, seed=3, width=enc.width, method=method)
        target.logpdf(0.1)
    for count in (4, general._SERIAL_BELOW):  # the serial and the threaded kernel
        batch = general.Laplace(np.linspace(-0.5, 0.5, count), 0.1)
        enc = rcc.encode_sample(batch, seed=3)
        rcc.decode_sample(enc.index, enc.factor, seed=3, width=enc.width)

    # The exact tree samplers: every method, on a Gaussian target and on a general one.
    for method in samplers.SAMPLER_METHODS if tree_samplers else ():
        for target in (rcc.Normal(np.array([0.1, -0.3]), 0.3), general.ScaledBeta(2.0, 3.0, -1.0, 1.0)):
            enc = rcc.encode_sample(target, seed=4, method=method, rng=1)
            rcc.decode_sample(enc.index, enc.factor, seed=4, method=method)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Compile (or load from numba's cache) every rcc kernel.")
    parser.add_argument("--without-tree-samplers", action="store_true",
                        help="leave out the kernels of the exact tree samplers (method='astar', 'gprs', 'grc-...'): "
                             "about 75 s of the 110 s a fresh installation compiles")
    args = parser.parse_args(argv)
    print("rcc: warming up the kernels (each compiles once, then loads from the cache)...", file=sys.stderr,
          flush=True)
    start = time.perf_counter()
    before = compilation.compiled_kernel_count()
    warm_up(tree_samplers=not args.without_tree_samplers)
    seconds = time.perf_counter() - start
    compiled = compilation.compiled_kernel_count() - before
    print(f"rcc: {compiled} kernel(s) compiled, the rest loaded from the cache, in {seconds:.1f} s"
          f" (numba cache: {numba.config.CACHE_DIR or 'beside the sources, in __pycache__'})", file=sys.stderr)


if __name__ == "__main__":
    main()
