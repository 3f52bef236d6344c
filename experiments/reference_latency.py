"""One call each way, side by side with the authors' C++ reference of hybrid coding.

Theis & Yosri (2022) published a C++ implementation of hybrid coding with a
pybind11 module, ``hybrid_rcc`` (https://github.com/google-research/hybrid_rcc).
When that module imports, this script times, in one process and on the same
targets, its Gaussian hybrid sampler (``sample_gaussian_hybrid`` with the PFR
race) and decoder (``decode_gaussian_hybrid``) against :func:`rcc.encode_sample`
and :func:`rcc.decode_sample`:

* targets ``N(0.3, s^2)`` for a few stds ``s`` (so a few KL values), prior
  ``N(0, 1)``, tail mass ``1e-4`` on both sides (the reference's ``eps``);
  rcc uses its defaults otherwise (the width of :func:`rcc.gaussian_width`);
* a scalar call (one target; a length-1 vector for the reference) and a
  small batch of ``BATCH`` targets with means drawn from ``N(0, 1 - s^2)``:
  one call for rcc, a Python loop of scalar calls for the reference, which
  has no batched entry point (its vectors are one multivariate target with
  one index, a different problem);
* every call timed alone with :func:`time.perf_counter_ns`, the two
  implementations interleaved call by call (alternating which goes first) so
  that the machine's load falls on both alike, seeds ``0, 1, ...`` for both;
  a warm-up of ``warmup`` calls of each is run first and not recorded;
  medians and 90th percentiles, and the ratio reference / rcc of the medians
  (above 1: rcc is faster).

It also checks each decoder against its own encoder on ``checks`` seeds per
target: how often the decoded sample equals the encoded one bit for bit,
separately for messages that select the first candidate (the reference's
index ``N = 0``, rcc's ``N = 1``) and a later one, and a
Kolmogorov-Smirnov test of each encoder's samples against the (truncated)
target; once with seeds from 0 and once with seeds from ``2**31``.

The machine's load average is written with the results: on a shared machine
the timings measure the contention as much as either implementation.

Writes ``reference_latency.csv`` (latencies) and ``reference_decode.csv``
(decoder agreement and KS).  Without the reference module it prints how to
build it and writes nothing.

    python -m experiments.reference_latency            # into paper_figures/
    python -m experiments.reference_latency --quick    # into paper_figures/quick/
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import time

import numpy as np

__all__ = [
    "REFERENCE_URL",
    "BATCH",
    "STDS",
    "SEED_CHECK_HIGH",
    "load_reference",
    "build_instructions",
    "latency_summary",
    "decode_agreement",
    "interleaved_latencies",
    "main",
]

#: The authors' repository.
REFERENCE_URL = "https://github.com/google-research/hybrid_rcc"
#: Name of the reference's Python extension module.
REFERENCE_MODULE = "hybrid_rcc"
#: Targets per small-batch call.
BATCH = 16
#: Standard deviations of the targets N(MEAN, s^2) under the prior N(0, 1).
STDS = (0.1, 0.01, 0.001)
MEAN = 0.3
TAIL_MASS = 1e-4
#: Upper bound on the reference's candidates (its ``N_max``): large enough never to bind here.
REFERENCE_MAX_CANDIDATES = 10**7
#: First seed of the second decoder check (seeds that do not fit a signed 32-bit int).
SEED_CHECK_HIGH = 2**31


def load_reference(name=REFERENCE_MODULE):
    """The reference's extension module, or ``None`` when it does not import."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def build_instructions():
    """How to build the reference so that this script finds it (printed when it is missing)."""
    return (
        f"The C++ reference module '{REFERENCE_MODULE}' is not importable, so nothing was measured.\n"
        f"To build it (outside this repository): get {REFERENCE_URL},\n"
        "Eigen 3.4.0 headers (3.4.1 does not compile it), pcg-cpp headers (https://github.com/imneme/pcg-cpp)\n"
        "and pybind11's headers (pip install pybind11), then compile its four .cc files into one extension:\n"
        "  g++ -O3 -shared -fPIC -std=c++17 -fvisibility=hidden -DNDEBUG -Isrc -I<eigen-3.4.0> -I<pcg-cpp> \\\n"
        "      -I<pybind11>/include $(python3-config --includes) $(find src -name '*.cc') \\\n"
        "      -o hybrid_rcc$(python3-config --extension-suffix)\n"
        "where <pcg-cpp> is the folder holding include/pcg_random.hpp\n"
        "(pip install git+https://github.com/google-research/hybrid_rcc does the same where wget works),\n"
        "and rerun with the folder holding the built module on PYTHONPATH. "
        "See paper_figures/README.md, section 13, 'Against the authors' C++ reference'."
    )


def latency_summary(seconds):
    """Median and 90th percentile, in microseconds, of per-call times given in seconds."""
    seconds = np.asarray(seconds, dtype=float)
    if seconds.ndim != 1 or seconds.size == 0:
        raise ValueError(f"seconds must be a non-empty 1-D array of call times, got shape {seconds.shape}")
    return {"median_us": float(np.median(seconds) * 1e6), "p90_us": float(np.percentile(seconds, 90) * 1e6)}


def decode_agreement(decoded, encoded, index, first_index):
    """Count bit-for-bit agreement of decoded with encoded samples, for the first candidate and the later ones.

    ``first_index`` is the index of the first candidate: 0 for the reference,
    1 for rcc.  Returns a dict with the number of messages and of exact
    agreements in each group (``first_messages``, ``first_exact``,
    ``later_messages``, ``later_exact``).
    """
    decoded = np.asarray(decoded, dtype=float)
    encoded = np.asarray(encoded, dtype=float)
    index = np.asarray(index)
    if not decoded.shape == encoded.shape == index.shape:
        raise ValueError(f"decoded, encoded and index must have one shape, got {decoded.shape}, "
                         f"{encoded.shape} and {index.shape}")
    if np.any(index < first_index):
        raise ValueError(f"index must be at least first_index={first_index}, got {index.min()}")
    exact = decoded == encoded  # NaN never agrees
    first = index == first_index
    return {"first_messages": int(first.sum()), "first_exact": int((exact & first).sum()),
            "later_messages": int((~first).sum()), "later_exact": int((exact & ~first).sum())}


def interleaved_latencies(ours, reference, calls, warmup):
    """Per-call seconds of ``ours(seed)`` and ``reference(seed)``, timed alone and interleaved.

    Both get seeds ``0 .. warmup + calls - 1``; the first ``warmup`` calls of
    each are run but not recorded.  The order alternates from one seed to the
    next so that neither always runs right after the other.
    """
    out_ours, out_reference = np.empty(calls), np.empty(calls)
    clock = time.perf_counter_ns
    for seed in range(warmup + calls):
        pair = ((ours, out_ours), (reference, out_reference))
        for call, out in (pair if seed % 2 == 0 else pair[::-1]):
            begin = clock()
            call(seed)
            elapsed = clock() - begin
            if seed >= warmup:
                out[seed - warmup] = elapsed * 1e-9
    return out_ours, out_reference


def _truncated_target(mean, std):
    from scipy import stats

    half = -stats.norm.ppf(TAIL_MASS / 2.0)
    return stats.truncnorm(-half, half, loc=mean, scale=std)


def _reference_calls(ref):
    """The reference's scalar encode ``(mean, std, seed) -> message`` and decode ``message -> sample``."""
    algorithm = ref.SamplingAlgorithm.PFR
    prior_mean, prior_std = np.zeros(1), np.ones(1)

    def encode(m, s, seed):
        return ref.sample_gaussian_hybrid(m, s, prior_mean, prior_std, algorithm, TAIL_MASS, seed,
                                          REFERENCE_MAX_CANDIDATES, False)

    def decode(message):
        return ref.decode_gaussian_hybrid(message, prior_mean, prior_std)

    return encode, decode


def _measure_case(ref, std, calls, warmup, checks, rng):
    import rcc

    prior = rcc.Normal(0.0, 1.0)
    kl = float(rcc.kl_divergence_bits(rcc.Normal(MEAN, std), prior))
    ref_encode, ref_decode = _reference_calls(ref)
    rows = []

    def row(operation, per_call, ours_times, ref_times, **extra):
        o, r = latency_summary(ours_times), latency_summary(ref_times)
        rows.append({"std": std, "kl_bits": round(kl, 3), "operation": operation, "targets_per_call": per_call,
                     "calls": calls, "ours_median_us": round(o["median_us"], 3), "ours_p90_us": round(o["p90_us"], 3),
                     "reference_median_us": round(r["median_us"], 3), "reference_p90_us": round(r["p90_us"], 3),
                     "ratio_reference_over_ours": round(r["median_us"] / o["median_us"], 3), **extra})

    # Scalar calls.
    target = rcc.Normal(MEAN, std)
    m, s = np.array([MEAN]), np.array([std])
    total = warmup + calls
    ours_enc = [rcc.encode_sample(target, seed=seed, prior=prior, tail_mass=TAIL_MASS) for seed in range(total)]
    ref_enc = [ref_encode(m, s, seed) for seed in range(total)]
    ours_times, ref_times = interleaved_latencies(
        lambda seed: rcc.encode_sample(target, seed=seed, prior=prior, tail_mass=TAIL_MASS),
        lambda seed: ref_encode(m, s, seed), calls, warmup)
    row("encode, scalar", 1, ours_times, ref_times,
        ours_mean_candidates=round(float(np.mean([e.candidates for e in ours_enc])), 3),
        reference_mean_candidates=round(float(np.mean([e.total_number_samples for e in ref_enc])), 3),
        ours_width=int(ours_enc[0].width), reference_width=int(ref_enc[0].box_dimensions[0]))
    ours_times, ref_times = interleaved_latencies(
        lambda seed: rcc.decode_sample(ours_enc[seed].index, ours_enc[seed].factor, seed=seed, prior=prior,
                                       width=ours_enc[seed].width),
        lambda seed: ref_decode(ref_enc[seed]), calls, warmup)
    row("decode, scalar", 1, ours_times, ref_times)

    # Small batches: one call of rcc against a loop of the reference's scalar calls.
    means = np.clip(rng.normal(0.0, math.sqrt(1.0 - std * std), BATCH), -4.0, 4.0)
    batch = rcc.Normal(means, std)
    singles = [(np.array([mu]), np.array([std])) for mu in means]
    ours_batches = [rcc.encode_sample(batch, seed=seed, prior=prior, tail_mass=TAIL_MASS) for seed in range(total)]
    ref_batches = [[ref_encode(mu, sd, seed * BATCH + i) for i, (mu, sd) in enumerate(singles)]
                   for seed in range(total)]
    ours_times, ref_times = interleaved_latencies(
        lambda seed: rcc.encode_sample(batch, seed=seed, prior=prior, tail_mass=TAIL_MASS),
        lambda seed: [ref_encode(mu, sd, seed * BATCH + i) for i, (mu, sd) in enumerate(singles)], calls, warmup)
    row(f"encode, batch of {BATCH}", BATCH, ours_times, ref_times)
    ours_times, ref_times = interleaved_latencies(
        lambda seed: rcc.decode_sample(ours_batches[seed].index, ours_batches[seed].factor, seed=seed,
                                       prior=prior, width=ours_batches[seed].width),
        lambda seed: [ref_decode(message) for message in ref_batches[seed]], calls, warmup)
    row(f"decode, batch of {BATCH}", BATCH, ours_times, ref_times)

    # Each decoder against its own encoder, and each encoder's samples against the target.
    from scipy import stats

    truncated = _truncated_target(MEAN, std)
    checked = []
    # Seeds from 2**31 too: the reference takes a 64-bit seed but keeps it in its message as a 32-bit int.
    for seed_from in (0, SEED_CHECK_HIGH):
        seeds = range(seed_from, seed_from + checks)
        for name in ("rcc", "reference"):
            if name == "rcc":
                encoded = [rcc.encode_sample(target, seed=seed, prior=prior, tail_mass=TAIL_MASS) for seed in seeds]
                samples = np.array([float(e.sample) for e in encoded])
                index, first_index = np.array([int(e.index) for e in encoded]), 1
                decoded = np.array([float(rcc.decode_sample(e.index, e.factor, seed=seed, prior=prior,
                                                            width=e.width)) for seed, e in zip(seeds, encoded)])
            else:
                encoded = [ref_encode(m, s, seed) for seed in seeds]
                samples = np.array([e.sample_opt[0] for e in encoded])
                index, first_index = np.array([e.sample_index for e in encoded]), 0
                decoded = np.array([ref_decode(e)[0] for e in encoded])
            agreement = decode_agreement(decoded, samples, index, first_index)
            first_fraction = agreement["first_exact"] / max(agreement["first_messages"], 1)
            later_fraction = agreement["later_exact"] / max(agreement["later_messages"], 1)
            ks = stats.kstest(samples, truncated.cdf)
            checked.append({"implementation": name, "std": std, "kl_bits": round(kl, 3), "seed_from": seed_from,
                            "messages": checks, **agreement,
                            "first_exact_fraction": round(first_fraction, 4),
                            "later_exact_fraction": round(later_fraction, 4),
                            "ks_statistic": round(float(ks.statistic), 4), "ks_pvalue": float(f"{ks.pvalue:.3g}")})
    return rows, checked


def main(quick=False, *, out_dir=None, tiny=False, progress=True, reference=None):
    """Measure rcc against the C++ reference; returns a summary dict.

    Parameters
    ----------
    quick, tiny : bool
        Fewer timed calls and checks (``tiny``, for tests, also only the first std).
    out_dir : path, optional
        Folder for the CSVs (``paper_figures/`` by default).
    progress : bool
        Print one line per target as it is measured.
    reference : module, optional
        The reference's extension module; imported as ``hybrid_rcc`` by default.
        When it is not importable nothing is measured or written and the
        summary says so.
    """
    ref = load_reference() if reference is None else reference
    if ref is None:
        print(build_instructions())
        return {"reference": "not importable: nothing measured", "build": REFERENCE_URL}

    import rcc

    from .common import output_dir, write_csv

    calls, warmup, checks = (200, 20, 200) if tiny else (2000, 200, 1000) if quick else (10000, 500, 4000)
    load_before = os.getloadavg()
    rng = np.random.default_rng(11)
    rows, checked = [], []
    for std in STDS[:1] if tiny else STDS:
        case_rows, case_checks = _measure_case(ref, std, calls, warmup, checks, rng)
        rows += case_rows
        checked += case_checks
        if progress:
            for r in case_rows:
                print(f"  std {std:g} (KL {r['kl_bits']:.2f} bits), {r['operation']}: rcc {r['ours_median_us']:.1f} us "
                      f"(p90 {r['ours_p90_us']:.1f}), reference {r['reference_median_us']:.1f} us "
                      f"(p90 {r['reference_p90_us']:.1f}): reference / rcc = {r['ratio_reference_over_ours']:.2f}",
                      flush=True)
            for c in case_checks:
                print(f"  std {std:g}, seeds from {c['seed_from']}, {c['implementation']} decodes its own messages "
                      "exactly: "
                      f"first candidate {c['first_exact']}/{c['first_messages']}, "
                      f"later ones {c['later_exact']}/{c['later_messages']}; "
                      f"KS of its samples against the target p = {c['ks_pvalue']:.3g}", flush=True)
    load_after = os.getloadavg()
    machine = {"load_avg_1min_before": round(load_before[0], 2), "load_avg_1min_after": round(load_after[0], 2),
               "cpus": os.cpu_count(), "rcc_version": getattr(rcc, "__version__", "")}
    out = output_dir(out_dir)
    write_csv(out / "reference_latency.csv", [{**r, **machine} for r in rows])
    write_csv(out / "reference_decode.csv", checked)
    scalar = [r for r in rows if r["targets_per_call"] == 1]
    reference_checks = [c for c in checked if c["implementation"] == "reference" and c["seed_from"] == 0]
    high_seeds = [c for c in checked if c["implementation"] == "reference" and c["seed_from"] == SEED_CHECK_HIGH]
    return {
        "encode scalar, reference / rcc (median over targets)": round(float(np.median(
            [r["ratio_reference_over_ours"] for r in scalar if r["operation"].startswith("encode")])), 2),
        "decode scalar, reference / rcc (median over targets)": round(float(np.median(
            [r["ratio_reference_over_ours"] for r in scalar if r["operation"].startswith("decode")])), 2),
        "reference decodes N > 0 exactly": f"{sum(c['later_exact'] for c in reference_checks)}"
                                           f"/{sum(c['later_messages'] for c in reference_checks)}",
        "reference decodes exactly, seeds from 2**31":
            f"{sum(c['first_exact'] + c['later_exact'] for c in high_seeds)}/{sum(c['messages'] for c in high_seeds)}",
        "reference KS p-values": " ".join(f"{c['ks_pvalue']:.2g}" for c in reference_checks),
        "load average (1 min) before/after": f"{load_before[0]:.2f}/{load_after[0]:.2f}",
    }


def _cli(argv=None):
    from .common import add_output_arguments, chosen_output_dir, output_dir

    parser = add_output_arguments(argparse.ArgumentParser(
        description="Single-call latency against the authors' C++ reference of hybrid coding."))
    args = parser.parse_args(argv)
    ref = load_reference()
    out = None if ref is None else output_dir(chosen_output_dir(args))
    summary = main(args.quick, out_dir=out, progress=not args.no_progress, reference=ref)
    for key, value in summary.items():
        print(f"{key}: {value}")
    if out is not None:
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(_cli())
