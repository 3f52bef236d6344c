"""End-to-end demo: ``python -m rcc.demo``.

A sender holds Gaussian targets ``N(mu, s^2)`` (the posteriors of a Gaussian
channel, prior ``N(0, 1)``, ``mu ~ N(0, 1 - s^2)``, so ``I(X; Z) = -log2 s``
bits).  It encodes exact samples with hybrid coding, writes real bytes, and
the receiver, holding only the bytes, the seed and the prior, decodes the
same samples bit for bit.  Throughputs are steady state (the calls repeated
after the first); the first calls are reported apart, and say whether they
compiled numba kernels (a fresh installation's first run) or loaded them from
the cache.
"""

from __future__ import annotations

import argparse
import math
import time

import numba
import numpy as np

import rcc
from rcc import compilation
from rcc.entropy import ZipfIndexCode, decode_messages, encode_messages

__all__ = ["main"]


def _median_seconds(function, repeats):
    times = []
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000, help="number of targets")
    parser.add_argument("--std", type=float, default=0.01, help="posterior std s (I = -log2 s bits)")
    parser.add_argument("--seed", type=int, default=7, help="shared seed")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls for the steady-state throughput")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    prior = rcc.Normal(0.0, 1.0)
    means = rng.normal(0.0, math.sqrt(1.0 - args.std**2), args.count)
    target = rcc.Normal(means, args.std)
    width = rcc.gaussian_width(args.std, prior)  # known to both sides: depends on s only
    information = -math.log2(args.std)

    compiled_before = compilation.compiled_kernel_count()
    start = time.perf_counter()
    enc = rcc.encode_sample(target, seed=args.seed, prior=prior, width=width)
    first_encode = time.perf_counter() - start
    code = ZipfIndexCode(float(np.mean(enc.kl_bits)) - math.log2(width))
    data = encode_messages(enc, seed=args.seed, index_code=code, width=width)

    # The receiver: bytes, seed, prior and width only.
    index, factor = decode_messages(data, count=args.count, seed=args.seed, index_code=code, width=width)
    start = time.perf_counter()
    decoded = rcc.decode_sample(index, factor, seed=args.seed, prior=prior, width=width)
    first_decode = time.perf_counter() - start
    exact = np.array_equal(decoded, enc.sample)
    compiled = compilation.compiled_kernel_count() - compiled_before

    # Steady state: the same calls again, now that the kernels are loaded.
    encode_seconds = _median_seconds(lambda: rcc.encode_sample(target, seed=args.seed, prior=prior, width=width),
                                     args.repeats)
    decode_seconds = _median_seconds(lambda: rcc.decode_sample(index, factor, seed=args.seed, prior=prior,
                                                               width=width), args.repeats)

    bits = 8.0 * len(data) / args.count
    print(f"Gaussian channel: prior N(0,1), {args.count} targets N(mu, {args.std}^2), width M = {width}")
    print(f"  I(X;Z)               {information:8.3f} bits per sample")
    print(f"  mean KL of targets   {np.mean(enc.kl_bits):8.3f} bits")
    print(f"  measured bytes       {len(data):8d} bytes = {bits:.3f} bits per sample ({bits - information:+.3f} over I)")
    print(f"  Li-El Gamal ceiling  {information + math.log2(information + 1) + 4:8.3f} bits")
    print(f"  candidates examined  {np.mean(enc.candidates):8.2f} per sample (median {np.median(enc.candidates):.0f})")
    print(f"  encode {args.count / encode_seconds:,.0f} samples/s, decode {args.count / decode_seconds:,.0f} samples/s "
          f"(steady state, median of {args.repeats} calls, {numba.get_num_threads()} thread(s))")
    first = "including compiling kernels, first run only" if compiled else "kernels loaded from the cache"
    print(f"  first calls          encode {first_encode:.2f} s, decode {first_decode:.2f} s ({first})")
    print(f"  decoded samples equal the sender's bit for bit: {exact}")
    if not exact:
        raise SystemExit("round trip failed")


if __name__ == "__main__":
    main()
