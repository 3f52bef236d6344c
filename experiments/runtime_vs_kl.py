"""Candidates examined and wall time per sample against the information I (figure 2).

Gaussian channel (prior N(0, 1), target N(mu, s^2) with s = 2^-I and
mu ~ N(0, 1 - s^2), so I(X; Z) = I bits).  For each I and method we encode a
batch of targets with :func:`rcc.encode_sample` and record how many candidates
each race examined and the wall time of the batched call:

* hybrid with the defaults: width from the std (``width=None``,
  :func:`rcc.gaussian_width`, which the receiver can recompute) and the default
  coding transform (the prior's copy 8 times wider): a flat ~3 candidates
  whatever I, with a light tail;
* hybrid, width from the std, transform through the prior itself
  (``transform="prior"``): heavy-tailed, since targets far in the prior's tail
  fill a small part of the window (about ``exp(mu^2 / 2)`` candidates, whose
  mean over mu grows like ``1 / s``), so the sample mean is dominated by rare
  targets while the median stays flat;
* hybrid, adaptive width (``width="adaptive"``): the largest width each target
  fits (the width must then be sent);
* PFR (prior proposal): ~ 2^I candidates, only where affordable;
* ORC with its default budget ``2^ceil(KL + 4)`` and the PFR stopping rule.

Writes ``runtime_vs_kl.csv`` and ``runtime_vs_kl.png``.
"""

from __future__ import annotations

import math

import numpy as np

import rcc

from .common import (
    Stopwatch,
    gaussian_channel,
    legend_below,
    series_style,
    new_figure,
    output_dir,
    progress_bar,
    run_script,
    save_figure,
    write_csv,
)

__all__ = ["METHODS", "grid", "measure", "plot", "main"]

#: (label, encode_sample keyword arguments, largest I at which it runs)
METHODS = (
    ("hybrid, defaults (width from std)", dict(method="hybrid", width=None), math.inf),
    ("hybrid, width from std, transform = prior", dict(method="hybrid", width=None, transform="prior"), math.inf),
    ("hybrid, adaptive width", dict(method="hybrid", width="adaptive"), math.inf),
    ("PFR", dict(method="pfr"), 10.0),
    ("ORC", dict(method="orc"), 10.0),
)
_MAX_CANDIDATES = 2**40
_SEED = 20240611


def grid(quick=False, tiny=False):
    """Information values, targets per hybrid point and the candidate budget of a PFR/ORC point."""
    if tiny:
        return dict(info_bits=[1.0, 4.0], count=400, prior_budget=2e5, prior_cap=8.0)
    if quick:
        return dict(info_bits=[1.0, 2.0, 4.0, 6.0, 8.0, 12.0, 16.0, 20.0], count=20_000, prior_budget=3e7,
                    prior_cap=8.0)
    return dict(info_bits=[0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 12.0, 14.0, 16.0, 18.0,
                           20.0, 24.0], count=100_000, prior_budget=3e8, prior_cap=10.0)


def measure(info_bits, count, kwargs, seed):
    """Encode ``count`` Gaussian-channel targets; return candidate statistics and timings (one CSV row)."""
    mean, std = gaussian_channel(info_bits, count, rng=np.random.default_rng([seed, int(info_bits * 100)]))
    target = rcc.Normal(mean, std)
    # Timings: the fastest of up to three identical batched calls (fewer when a call takes over a second).
    encode_seconds, decode_seconds = [], []
    while len(encode_seconds) < 3 and sum(encode_seconds) < 1.0:
        with Stopwatch() as watch:
            enc = rcc.encode_sample(target, seed, max_candidates=_MAX_CANDIDATES, **kwargs)
        encode_seconds.append(watch.seconds)
        with Stopwatch() as watch:
            sample = rcc.decode_sample(enc.index, enc.factor, seed, width=enc.width, method=kwargs["method"],
                                       transform=kwargs.get("transform"))
        decode_seconds.append(watch.seconds)
    if not np.array_equal(sample, enc.sample):
        raise RuntimeError(f"round trip failed at I={info_bits} for {kwargs}")
    candidates = np.asarray(enc.candidates, dtype=np.float64)
    return {
        "info_bits": info_bits,
        "targets": count,
        "mean_candidates": candidates.mean(),
        "median_candidates": float(np.median(candidates)),
        "p99_candidates": float(np.quantile(candidates, 0.99)),
        "max_candidates": int(candidates.max()),
        "encode_us_per_sample": 1e6 * min(encode_seconds) / count,
        "decode_us_per_sample": 1e6 * min(decode_seconds) / count,
        "timing_repeats": len(encode_seconds),
        "mean_kl_bits": float(np.mean(enc.kl_bits)),
        "mean_log2_width": float(np.mean(np.log2(enc.width))),
        "mean_index": float(np.mean(enc.index)),
    }


def plot(rows, path):
    """Two panels: candidates (mean and median) and encode wall time per sample against I."""
    fig, (ax_c, ax_t) = new_figure(2, 1, width=4.6)
    for label, _, _ in METHODS:
        sel = [r for r in rows if r["method"] == label]
        if not sel:
            continue
        info = [r["info_bits"] for r in sel]
        style = series_style(label)  # fixed colour and marker per method
        ax_c.plot(info, [r["mean_candidates"] for r in sel], ls="-", label=label, **style)
        ax_c.plot(info, [r["median_candidates"] for r in sel], ls="--", alpha=0.7, markersize=3.5, **style)
        ax_t.plot(info, [r["encode_us_per_sample"] for r in sel], ls="-", label=label, **style)
    ax_c.plot([], [], "k-", label="mean (solid)")
    ax_c.plot([], [], "k--", label="median (dashed)")
    ax_c.set_yscale("log")
    ax_c.set_xlabel("I(X; Z) (bits)")
    ax_c.set_ylabel("candidates examined per sample")
    ax_c.set_title("Race length vs information")
    ax_t.set_yscale("log")
    ax_t.set_xlabel("I(X; Z) (bits)")
    ax_t.set_ylabel("encode wall time per sample (µs)")
    ax_t.set_title("Wall time (batched encode_sample, all cores)")
    legend_below(fig, (ax_c, ax_t), ncol=3)
    return save_figure(fig, path)


def main(quick=False, *, out_dir=None, tiny=False, progress=True):
    """Run the sweep and write ``runtime_vs_kl.csv`` / ``.png``; returns a summary dict."""
    settings = grid(quick, tiny)
    out = output_dir(out_dir)
    # Warm-up: compile (or load) every kernel before anything is timed.
    for _, kwargs, _ in METHODS:
        warm = rcc.encode_sample(rcc.Normal(np.zeros(4), 0.5), 1, **kwargs)
        rcc.decode_sample(warm.index, warm.factor, 1, width=warm.width, method=kwargs["method"],
                          transform=kwargs.get("transform"))
    jobs = [(label, kwargs, info) for info in settings["info_bits"] for label, kwargs, cap in METHODS
            if info <= min(cap, settings["prior_cap"] if kwargs["method"] != "hybrid" else math.inf)]
    rows = []
    for label, kwargs, info in progress_bar(jobs, enabled=progress, desc="runtime_vs_kl"):
        count = settings["count"]
        if kwargs["method"] != "hybrid":
            # ~2^I candidates per sample: keep the total number of candidates near the budget.
            count = int(np.clip(settings["prior_budget"] / 2.0 ** (info + 2), 200, count))
        row = {"method": label}
        row.update(measure(info, count, kwargs, _SEED))
        rows.append(row)
    write_csv(out / "runtime_vs_kl.csv", rows)
    plot(rows, out / "runtime_vs_kl.png")
    top = max(settings["info_bits"])
    summary = {}
    for label, _, _ in METHODS[:3]:
        last = [r for r in rows if r["method"] == label and r["info_bits"] == top][0]
        summary[f"{label} at I={top:g}: mean / median candidates"] = (
            f"{last['mean_candidates']:.1f} / {last['median_candidates']:.0f}, "
            f"{last['encode_us_per_sample']:.2f} us per sample")
    return summary


if __name__ == "__main__":
    run_script(main, __doc__.splitlines()[0])
