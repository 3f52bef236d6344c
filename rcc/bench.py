"""Benchmarks: ``python -m rcc.bench [--quick] [--csv PATH]``.

Every number is steady state: a first block runs the calls of
``python -m rcc.warmup`` (its row says whether that compiled anything) and no
later row includes compilation.  Numbers are medians over repeats measured in
this process, and throughputs are also given as ratios against a plain-numpy
reference of the same hybrid race run in the same process on the same targets
(the first targets of each case, with the same seed and widths), so results
from different machines compare as ratios.  Nothing here is a unit test: the
test suite never times anything.

Cases (Gaussian channel: prior N(0, 1), target N(mu, s^2), mu ~ N(0, 1 - s^2)):

* batched 1-D hybrid encode and decode for std in {0.1, 0.01, 1e-4}, with the
  std-derived width and with ``width="adaptive"``, on one thread and on all;
* whole calls from Python arrays of means and stds (10^6 targets; 10^5 with
  ``--quick``), on one thread and on all, with the ratio of the two;
* the plain-numpy reference race (vectorised over candidates, one target at a
  time, on the coding transform's axis as the kernels; it uses the same shared
  randomness, so it also cross-checks the selected indices, which agree);
* single-call latency of ``encode_sample`` and ``decode_sample`` on one scalar
  target or message (hybrid, pfr, general targets), median and 90th percentile;
* d-dimensional product targets, d in {1, 2, 4, 8}, one index per block;
* bitstream encode/decode throughput (messages/s);
* time per sample against I for hybrid and pfr;
* a large encode into fresh output arrays against one reusing them (``out=``);
* peak resident memory of one large encode.
"""

from __future__ import annotations

import argparse
import csv
import math
import resource
import sys
import time

import numba
import numpy as np
from scipy import special

import rcc
from rcc import compilation, general
from rcc.random import private_exponential, private_key, shared_uniform
from rcc.warmup import warm_up

__all__ = ["main", "reference_hybrid_encode", "gaussian_channel"]


def gaussian_channel(count, std, seed=0):
    """Targets of the Gaussian channel: ``N(mu, std^2)``, ``mu ~ N(0, 1 - std^2)``."""
    rng = np.random.default_rng(seed)
    return rcc.Normal(rng.normal(0.0, math.sqrt(1.0 - std * std), count), std)


def reference_hybrid_encode(means, std, width, seed, tail_mass=rcc.DEFAULT_TAIL_MASS,
                            transform_scale=rcc.DEFAULT_TRANSFORM_SCALE, chunk=64):
    """Plain-numpy hybrid race with a Normal(0, 1) prior: indices of the winners.

    Straightforward and vectorised over ``chunk`` candidates of one target at
    a time, using scipy's ``ndtr``/``ndtri`` and the library's shared
    randomness.  It races on the axis the kernels race on: the width-``M``
    transformed axis of the coding transform ``Normal(0, transform_scale)``
    (:func:`rcc.coding_transform` of the prior; ``transform_scale=1`` is
    ``transform="prior"``), with log weights ``log q - log c - log M``, so
    its indices can be compared with the numba kernels'.  ``width`` is one
    width or one per target (e.g. ``enc.width`` of an adaptive encode).
    """
    key = private_key(seed)
    half = -special.ndtri(0.5 * tail_mass)
    log_norm = math.log1p(-tail_mass)
    indices = np.empty(len(means), dtype=np.int64)
    widths = np.broadcast_to(np.asarray(width, dtype=np.int64), (len(means),))
    scale = float(transform_scale)
    for i, mean in enumerate(means):
        width = int(widths[i])
        low, high = mean - half * std, mean + half * std
        start, stop = width * special.ndtr(low / scale), width * special.ndtr(high / scale)
        centre = min(max(0.5 * (start + stop), 0.5), width - 0.5)
        # log q(z) - log c(z) - log M with q the truncated N(mean, std^2) and c = N(0, scale^2).
        const = math.log(scale) - math.log(std) - log_norm - math.log(width)
        # Closed-form maximum of the quadratic log ratio on [low, high] (concave: std < scale).
        stationary = min(max(mean / (1.0 - (std / scale) ** 2), low), high)
        log_ratio = lambda z: const - 0.5 * ((z - mean) / std) ** 2 + 0.5 * (z / scale) ** 2  # noqa: E731
        log_w_max = max(log_ratio(stationary), log_ratio(low), log_ratio(high)) + 1e-9
        best, best_n, arrival, first = np.inf, 0, 0.0, 1
        while True:
            n = np.arange(first, first + chunk)
            u = shared_uniform(seed, i, n, 0)
            k = np.floor(centre - u + 0.5)
            z = scale * special.ndtri((k + u) / width)
            with np.errstate(invalid="ignore"):
                lw = np.where((z >= low) & (z <= high), log_ratio(z), -np.inf)
            arrivals = arrival + np.cumsum(private_exponential(key, i, n))
            stop_here = np.log(arrivals) - log_w_max >= np.minimum.accumulate(
                np.concatenate([[best], np.log(arrivals) - lw])
            )[:-1]
            scores = np.log(arrivals) - lw
            if stop_here.any():
                last = int(np.argmax(stop_here))
                scores = scores[:last]
            if scores.size and scores.min() < best:
                best, best_n = float(scores.min()), int(first + np.argmin(scores))
            if stop_here.any():
                break
            arrival, first = arrivals[-1], first + chunk
        indices[i] = best_n
    return indices


def _median_seconds(function, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _latencies(call, calls):
    """Seconds per call of ``call(seed)`` for seeds ``0 .. calls - 1`` (each call timed alone)."""
    latencies = np.empty(calls)
    for seed in range(calls):
        begin = time.perf_counter_ns()
        call(seed)
        latencies[seed] = (time.perf_counter_ns() - begin) * 1e-9
    return latencies


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _Table:
    def __init__(self):
        self.rows = []

    def add(self, case, value, unit, ratio="", note=""):
        self.rows.append({"case": case, "value": value, "unit": unit, "ratio": ratio, "note": note})
        ratio_text = f"{ratio:8.1f}x" if ratio != "" else " " * 9
        print(f"{case:58s} {value:14,.1f} {unit:11s} {ratio_text} {note}", flush=True)

    def write(self, path):
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["case", "value", "unit", "ratio", "note"])
            writer.writeheader()
            writer.writerows(self.rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description="rcc benchmarks (ratios against a numpy reference)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--csv", default=None, help="write the table to this CSV file")
    args = parser.parse_args(argv)
    quick = args.quick
    repeats = 3 if quick else 5
    sizes = [10**5] if quick else [10**5, 10**6]
    threads_all = numba.get_num_threads()
    table = _Table()
    print(f"rcc {rcc.__version__}, numba {numba.__version__}, {threads_all} thread(s), Python {sys.version.split()[0]}")
    print(f"{'case':58s} {'value':>14s} {'unit':11s} {'vs numpy':>9s}")

    # Warm up: compile (first run only) or load every kernel, so that no row below includes compilation.
    compiled_before = compilation.compiled_kernel_count()
    start = time.perf_counter()
    warm_up()
    seconds = time.perf_counter() - start
    compiled = compilation.compiled_kernel_count() - compiled_before
    table.add("warm-up: python -m rcc.warmup's calls (not in any row below)", seconds, "s",
              note=f"compiled {compiled} kernel(s) (first run)" if compiled else "loaded from the cache, no compilation")

    reference_count = 200 if quick else 1000
    references = {}  # (std, width name) -> samples/s of the numpy reference on the same targets

    def reference_rate(target, std, width_name, width_arg, seed):
        """The numpy reference on the first targets of ``target`` (same seed and widths as the kernel)."""
        if (std, width_name) not in references:
            head = rcc.Normal(target.mean[:reference_count], std)
            ours = rcc.encode_sample(head, seed=seed, width=width_arg, num_threads=1)
            begin = time.perf_counter()
            index = reference_hybrid_encode(head.mean, std, ours.width, seed=seed)
            rate = reference_count / (time.perf_counter() - begin)
            references[std, width_name] = rate
            table.add(f"numpy reference hybrid encode, std {std:g}, {width_name}, 1 thr", rate, "samples/s", 1.0,
                      f"first {reference_count} targets of the rows below; indices agree with the kernel "
                      f"for {np.mean(index == ours.index):.2%}")
        return references[std, width_name]

    for count in sizes:
        for std in (0.1, 0.01, 1e-4):
            target = gaussian_channel(count, std, seed=count)
            for width_name, width_arg in (("std width", None), ("adaptive", "adaptive")):
                reference = reference_rate(target, std, width_name, width_arg, seed=2)
                for threads in sorted({1, threads_all}):
                    holder = {}

                    def encode():
                        holder["enc"] = rcc.encode_sample(target, seed=2, width=width_arg, num_threads=threads)

                    seconds = _median_seconds(encode, repeats)
                    enc = holder["enc"]
                    rate = count / seconds
                    table.add(f"hybrid encode {count:.0e} targets, std {std:g}, {width_name}, {threads} thr",
                              rate, "samples/s", rate / reference,
                              f"mean candidates {np.mean(enc.candidates):.2f}")
                    if width_name == "std width":
                        seconds = _median_seconds(
                            lambda: rcc.decode_sample(enc.index, enc.factor, seed=2, width=enc.width,
                                                      num_threads=threads), repeats)
                        table.add(f"hybrid decode {count:.0e} targets, std {std:g}, {threads} thr",
                                  count / seconds, "samples/s")

    # Whole calls from Python arrays (target construction included), one
    # thread against all; ratios against the reference on the first targets.
    count = sizes[-1]
    rng = np.random.default_rng(12)
    std = 0.01
    means = rng.normal(0.0, math.sqrt(1.0 - std * std), count)
    stds = np.full(count, std)
    for width_name, width_arg in (("std width", None), ("adaptive", "adaptive")):
        rates = {}
        references.pop((std, width_name), None)  # other targets: measure the reference on these
        reference = reference_rate(rcc.Normal(means, std), std, width_name, width_arg, seed=2)
        for threads in sorted({1, threads_all}):
            seconds = _median_seconds(
                lambda: rcc.encode_sample(rcc.Normal(means, stds), seed=2, width=width_arg, num_threads=threads),
                repeats)
            rates[threads] = count / seconds
            table.add(f"whole call from arrays, {count:.0e} targets, std {std:g}, {width_name}, {threads} thr",
                      rates[threads], "samples/s", rates[threads] / reference)
        if threads_all > 1:
            table.add(f"  {threads_all} threads / 1 thread, {width_name}", rates[threads_all] / rates[1], "x")

    # Single-call latency: one scalar target or message per call, as a caller
    # coding one value at a time sees it (argument checks included).
    calls = 2000 if quick else 20000
    scalar = rcc.Normal(0.3, 0.01)
    enc = rcc.encode_sample(scalar, seed=1)
    laplace = general.Laplace(0.3, 0.05)
    mixture = general.GaussianMixture(0.3, -0.1, 0.02, 0.1, 0.03)
    beta = general.ScaledBeta(2.0, 5.0, -0.2, 0.3)
    pfr_target = rcc.Normal(0.3, 0.2)
    explicit_prior, other_prior = rcc.Normal(0.0, 1.0), rcc.Normal(0.2, 2.0)
    for case, call in (
        ("encode_sample, scalar Normal(0.3, 0.01), hybrid", lambda seed: rcc.encode_sample(scalar, seed=seed)),
        ("encode_sample, scalar Normal(0.3, 0.01), hybrid, prior and tail_mass passed",
         lambda seed: rcc.encode_sample(scalar, seed=seed, prior=explicit_prior, tail_mass=rcc.DEFAULT_TAIL_MASS)),
        ("encode_sample, scalar Normal(0.3, 0.01), hybrid, prior Normal(0.2, 2), tail_mass 1e-4",
         lambda seed: rcc.encode_sample(scalar, seed=seed, prior=other_prior, tail_mass=1e-4)),
        ("decode_sample, one hybrid message", lambda seed: rcc.decode_sample(enc.index, enc.factor, seed=seed,
                                                                             width=enc.width)),
        ("encode_sample, scalar Normal(0.3, 0.2), pfr",
         lambda seed: rcc.encode_sample(pfr_target, seed=seed, method="pfr")),
        ("decode_sample, one pfr message", lambda seed: rcc.decode_sample(3, 0, seed=seed, method="pfr")),
        ("encode_sample, scalar Laplace(0.3, 0.05), hybrid", lambda seed: rcc.encode_sample(laplace, seed=seed)),
        ("encode_sample, scalar Laplace(0.3, 0.05), pfr",
         lambda seed: rcc.encode_sample(laplace, seed=seed, method="pfr")),
        ("encode_sample, scalar GaussianMixture, hybrid", lambda seed: rcc.encode_sample(mixture, seed=seed)),
        ("encode_sample, scalar ScaledBeta(2, 5), hybrid", lambda seed: rcc.encode_sample(beta, seed=seed)),
    ):
        latencies = _latencies(call, calls)
        table.add(f"single call: {case} (median)", np.median(latencies) * 1e6, "us",
                  note=f"90th percentile {np.percentile(latencies, 90) * 1e6:.1f} us")

    # Product targets: one index per block of d dimensions.  The race's
    # candidate count is the product of the per-dimension w_max (about 3 each
    # with adaptive widths), so blocks trade candidates for index overhead.
    for d in (1, 2, 4, 8):
        blocks = (40_000 if quick else 200_000) // d
        rng = np.random.default_rng(d)
        std = 0.1
        means = rng.normal(0.0, math.sqrt(1 - std * std), (blocks, d))
        target = rcc.Product(rcc.Normal(means, std))
        holder = {}
        seconds = _median_seconds(
            lambda: holder.update(enc=rcc.encode_sample(target, seed=4, width="adaptive")), repeats)
        enc = holder["enc"]
        table.add(f"product target d={d}, std {std}, adaptive, one index per block", blocks * d / seconds,
                  "dims/s", note=f"mean candidates per block {np.mean(enc.candidates):.1f}")

    # Bitstreams.
    from rcc.entropy import ZipfIndexCode, decode_messages, encode_messages, index_kl_bits_gaussian_channel

    count = 10**5
    # Std 0.01, and a std whose default width is about 2**20 (the factor code's O(1) block path).
    for std in (0.01, 2.0**-18.6):
        target = gaussian_channel(count, std, seed=9)
        width = rcc.gaussian_width(std)
        enc = rcc.encode_sample(target, seed=6, width=width)
        code = ZipfIndexCode(index_kl_bits_gaussian_channel(-math.log2(std)))
        holder = {}
        seconds = _median_seconds(
            lambda: holder.update(data=encode_messages(enc, seed=6, index_code=code, width=width)), repeats)
        data = holder["data"]
        table.add(f"bitstream encode (Zipf index + prior-marginal factor), M = 2**{math.log2(width):.1f}",
                  count / seconds, "messages/s",
                  note=f"{8 * len(data) / count:.3f} bits/message, I = {-math.log2(std):.3f}")
        seconds = _median_seconds(lambda: decode_messages(data, count=count, seed=6, index_code=code, width=width),
                                  repeats)
        table.add(f"bitstream decode, M = 2**{math.log2(width):.1f}", count / seconds, "messages/s")

    # Time per sample against I: hybrid flat, pfr growing like 2^I.
    for information in (1, 4, 8, 12, 16):
        std = 2.0 ** -information
        count = 20_000
        target = gaussian_channel(count, std, seed=information)
        for width_name, width_arg in (("std width", None), ("adaptive", "adaptive")):
            seconds = _median_seconds(lambda: rcc.encode_sample(target, seed=1, width=width_arg), repeats)
            table.add(f"hybrid ({width_name}) time per sample at I = {information} bits", seconds / count * 1e9, "ns")
        if information <= 8:
            small = gaussian_channel(2000, std, seed=information)
            seconds = _median_seconds(
                lambda: rcc.encode_sample(small, seed=1, method="pfr", max_candidates=2**30), 1)
            table.add(f"pfr time per sample at I = {information} bits", seconds / 2000 * 1e9, "ns")

    # Exact tree samplers (untruncated targets) at I = 8 bits on one thread, with the hybrid coder's
    # batched encode of the same targets in this process as the reference.
    std = 2.0**-8
    count = 20_000 if quick else 200_000
    target = gaussian_channel(count, std, seed=8)
    hybrid_rate = count / _median_seconds(lambda: rcc.encode_sample(target, seed=3, num_threads=1), repeats)
    for method, share in (("grc-dyadic", 1), ("grc-sample", 1), ("gprs-dyadic", 50)):
        part = gaussian_channel(count // share, std, seed=8)  # GPRS evaluates its stretch function per element
        holder = {}
        seconds = _median_seconds(lambda: holder.update(enc=rcc.encode_sample(
            part, seed=3, method=method, tail_mass=0.0, num_threads=1)), repeats)
        rate = (count // share) / seconds
        table.add(f"tree sampler {method} encode at I = 8 bits, 1 thr", rate, "samples/s",
                  note=f"{rate / hybrid_rate:.3f} x hybrid's batched encode of the same targets "
                       f"({hybrid_rate:.3g}/s); mean steps {np.mean(holder['enc'].candidates):.2f}")
        if method == "grc-dyadic":
            enc = holder["enc"]
            seconds = _median_seconds(lambda: rcc.decode_sample(enc.index, enc.factor, seed=3, method=method,
                                                                num_threads=1), repeats)
            table.add(f"tree sampler {method} decode at I = 8 bits, 1 thr", count / seconds, "samples/s")

    # Fresh output memory against caller-owned arrays (encode_sample(out=...)), one thread: the
    # difference is the page faults of fresh memory, which grow with the batch.
    count = 2 * 10**6 if quick else 4 * 10**6
    target = gaussian_channel(count, 0.01, seed=13)
    fresh_seconds = _median_seconds(lambda: rcc.encode_sample(target, seed=5, num_threads=1), repeats)
    buffer = rcc.encode_sample(target, seed=6, num_threads=1)
    reused_seconds = _median_seconds(lambda: rcc.encode_sample(target, seed=5, num_threads=1, out=buffer), repeats)
    table.add(f"encode {count:.0e} targets, fresh output arrays, 1 thr", count / fresh_seconds, "samples/s")
    table.add(f"encode {count:.0e} targets, out= reusing the arrays, 1 thr", count / reused_seconds, "samples/s",
              note=f"{fresh_seconds / reused_seconds:.2f} x the fresh-output rate")

    # Peak memory of one large call.
    big = 10**6 if quick else 10**7
    before = _peak_rss_mb()
    target = gaussian_channel(big, 0.01, seed=11)
    start = time.perf_counter()
    enc = rcc.encode_sample(target, seed=1, progress=not quick)
    seconds = time.perf_counter() - start
    table.add(f"encode {big:.0e} targets in one call", big / seconds, "samples/s",
              note=f"peak RSS {_peak_rss_mb():.0f} MB (was {before:.0f} MB before the targets)")
    if args.csv:
        table.write(args.csv)
        print(f"wrote {args.csv}")


if __name__ == "__main__":
    main()
